"""WebSocket framing, sans-I/O, with wsproto: the handshake's answer, frames in, frames out.

`accept` turns a checked upgrade request (see `endpoint.py`) into a `WebSocketLink` and the
bytes of the 101 response, or a refusal that the endpoint answers in HTTP. A link is owned by
its reader thread: `receive_data` returns whole messages, the peer's close, or our close for a
broken frame, plus the control frames to send back (pongs, the close reply).

Frames the server sends on its own (messages, pings, a close from another thread) come from
`frame_text`, `frame_binary`, `ping_frame` and `close_frame`, which share no state: the hub
encodes a room message once for every WebSocket recipient, on whichever thread relays it.
Server frames are never masked and no extension (permessage-deflate) is offered, so equal
messages are equal bytes for every client (compression would make them differ per client,
and hold a compressor's memory per idle connection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import h11
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason, FrameProtocol
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

# Close codes (RFC 6455, 7.4.1).
NORMAL = int(CloseReason.NORMAL_CLOSURE)
GOING_AWAY = int(CloseReason.GOING_AWAY)
POLICY_VIOLATION = int(CloseReason.POLICY_VIOLATION)
MESSAGE_TOO_BIG = int(CloseReason.MESSAGE_TOO_BIG)
INTERNAL_ERROR = int(CloseReason.INTERNAL_ERROR)

LIBRARY = "wsproto"
# Pieces of a fragmented message kept apart before they are joined (memory per piece).
MAX_PARTS = 64


@dataclass(frozen=True, slots=True)
class MessageIn:
    """One whole message: str from a text frame, bytes from a binary one."""

    payload: str | bytes


@dataclass(frozen=True, slots=True)
class CloseIn:
    """The end of the link: the peer closed (`peer`), or broke the protocol and we close."""

    code: int
    reason: str
    peer: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """The WebSocket library refused the handshake: answer in HTTP with this status."""

    status: int
    text: str
    headers: Sequence[tuple[bytes, bytes]] = ()


# -- frames the server sends on its own (no state: any thread) ---------------------------------


def frame_text(payload: str) -> bytes:
    return bytes(FrameProtocol(False, []).send_data(payload))


def frame_binary(payload: bytes) -> bytes:
    return bytes(FrameProtocol(False, []).send_data(payload))


def ping_frame(payload: bytes) -> bytes:
    return bytes(FrameProtocol(False, []).ping(payload))


def close_frame(code: int, reason: str) -> bytes:
    return bytes(FrameProtocol(False, []).close(code, reason))


# -- the link (its reader thread only) ---------------------------------------------------------


def accept(
    request: h11.Request, subprotocol: str | None, trailing: bytes, max_message: int
) -> tuple[WebSocketLink, bytes] | Refused:
    """Answer a handshake request: the link and the 101 response, or why not."""
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.initiate_upgrade_connection(request.headers, request.target)
        list(handshake.events())  # the Request event: our checks were made before
        response = handshake.send(AcceptConnection(subprotocol=subprotocol))
    except (RemoteProtocolError, LocalProtocolError) as problem:
        hint = getattr(problem, "event_hint", None)
        if isinstance(hint, RejectConnection):
            return Refused(hint.status_code, f"bad WebSocket handshake: {problem}", hint.headers)
        return Refused(400, f"bad WebSocket handshake: {problem}")
    connection = handshake.connection
    assert connection is not None
    link = WebSocketLink(connection, max_message)
    return link, response


class WebSocketLink:
    __slots__ = ("_conn", "_parts", "_size", "max_message")

    def __init__(self, connection: Connection, max_message: int) -> None:
        self._conn = connection
        self.max_message = max_message
        # The frames so far of a fragmented message, and its size.
        self._parts: list[str | bytes] = []
        self._size = 0

    def receive_data(self, data: bytes) -> tuple[list[MessageIn | CloseIn], bytes]:
        """Whole messages (a close last, if any) and the bytes to send back."""
        items: list[MessageIn | CloseIn] = []
        replies = b""
        try:
            self._conn.receive_data(data)
        except LocalProtocolError:
            return items, replies  # closed already: nothing more is read
        for event in self._conn.events():
            if isinstance(event, TextMessage | BytesMessage):
                # Each piece costs at least a byte, so empty fragments cannot go on forever.
                self._size += len(event.data) + 1
                if self._size > self.max_message:
                    reason = f"message over {self.max_message} bytes"
                    replies += self._close(MESSAGE_TOO_BIG, reason)
                    items.append(CloseIn(MESSAGE_TOO_BIG, reason, peer=False))
                    break
                if not event.message_finished:
                    if event.data:
                        self._parts.append(event.data)
                    if len(self._parts) > MAX_PARTS:
                        self._parts = [type(event.data)().join(self._parts)]  # type: ignore[arg-type]
                    continue
                payload = event.data
                if self._parts:
                    self._parts.append(payload)
                    payload = type(payload)().join(self._parts)  # type: ignore[arg-type]
                    self._parts = []
                self._size = 0
                items.append(MessageIn(payload))
            elif isinstance(event, Ping):
                replies += self._conn.send(event.response())
            elif isinstance(event, CloseConnection):
                code, reason = int(event.code), event.reason or ""
                if self._conn.state is ConnectionState.REMOTE_CLOSING:
                    replies += self._conn.send(event.response())
                    items.append(CloseIn(code, reason, peer=True))
                elif self._conn.state is ConnectionState.OPEN:
                    # wsproto's verdict on a broken frame (bad opcode, invalid UTF-8, ...).
                    replies += self._close(code, reason)
                    items.append(CloseIn(code, reason, peer=False))
                else:
                    items.append(CloseIn(code, reason, peer=True))  # the answer to our close
                break
            # Pong: any input already counts as a sign of life (TcpConnection.last_input).
        return items, replies

    def _close(self, code: int, reason: str) -> bytes:
        try:
            return self._conn.send(CloseConnection(code=code, reason=reason))
        except LocalProtocolError:
            return b""
