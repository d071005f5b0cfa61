"""WebSocket framing, sans-I/O, with websockets' `ServerProtocol`: the handshake's answer,
frames in, frames out.

`accept` turns a checked upgrade request (see `endpoint.py`) into a `WebSocketLink` and the
bytes of the 101 response, or a refusal that the endpoint answers in HTTP. A link is owned by
its reader thread: `receive_data` returns whole messages, the peer's close, or our close for a
broken frame, plus the frames to send back (pongs and the close reply, which the library
writes itself).

Frames the server sends on its own (messages, pings, a close from another thread) come from
`frame_text`, `frame_binary`, `ping_frame` and `close_frame`, which share no state: the hub
encodes a room message once for every WebSocket recipient, on whichever thread relays it.
Server frames are never masked and no extension (permessage-deflate) is offered, so equal
messages are equal bytes for every client (compression would make them differ per client,
and hold a compressor's memory per idle connection).

Why websockets and not wsproto (both sans-I/O): measured on the fan-out benchmark, see
docs/architecture.md and docs/performance.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import h11
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

# The library logs every frame at debug level, and frames carry passwords (a JSON login, an
# IRC AUTHENTICATE): its logger stays at INFO whatever --log-level says, so its errors are
# logged but never what a client sent.
LIBRARY_LOG = logging.getLogger(__name__ + ".library")
LIBRARY_LOG.setLevel(logging.INFO)

# Close codes (RFC 6455, 7.4.1).
NORMAL = int(CloseCode.NORMAL_CLOSURE)
GOING_AWAY = int(CloseCode.GOING_AWAY)
POLICY_VIOLATION = int(CloseCode.POLICY_VIOLATION)
MESSAGE_TOO_BIG = int(CloseCode.MESSAGE_TOO_BIG)
INVALID_DATA = int(CloseCode.INVALID_DATA)
# A close frame's reason fits in 123 bytes (a control frame carries at most 125).
MAX_CLOSE_REASON = 123


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
    return Frame(Opcode.TEXT, payload.encode()).serialize(mask=False)


def frame_binary(payload: bytes) -> bytes:
    return Frame(Opcode.BINARY, payload).serialize(mask=False)


def payloads(data: bytes) -> list[bytes]:
    """The payloads of whole frames this server made (`frame_text`, `frame_binary`: never
    masked), in order: what a labeled IRC command's response was, before its label is added
    (see `transports/web.py`). ValueError when `data` ends inside a frame."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    found: list[bytes] = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as parsed:
            found.append(bytes(parsed.value.data))
        except EOFError:
            raise ValueError("data ends inside a frame") from None
        else:
            raise ValueError("data ends inside a frame")
    return found


def ping_frame(payload: bytes) -> bytes:
    return Frame(Opcode.PING, payload).serialize(mask=False)


def close_frame(code: int, reason: str) -> bytes:
    reason = reason.encode()[:MAX_CLOSE_REASON].decode("utf-8", "ignore")
    return Frame(Opcode.CLOSE, Close(code, reason).serialize()).serialize(mask=False)


# -- the link (its reader thread only) ---------------------------------------------------------


def accept(
    request: h11.Request, subprotocol: str | None, max_message: int
) -> tuple[WebSocketLink, bytes] | Refused:
    """Answer a handshake request: the link and the 101 response, or why not."""
    protocol = ServerProtocol(
        # Chosen already (endpoint.choose_subprotocol), among those the client offered.
        select_subprotocol=lambda _, offered: subprotocol,  # type: ignore[arg-type,return-value]
        max_size=max_message,
        logger=LIBRARY_LOG,
    )
    # RFC 6455 asks for HTTP/1.1 at least, and both libraries speak 1.1 alone: h11 parses
    # any HTTP/1.x request but will not write one out again in another version.
    if request.http_version != b"1.1":
        version = request.http_version.decode("latin-1")
        return Refused(505, f"a WebSocket handshake is HTTP/1.1, not HTTP/{version}")
    # The library reads the request itself: h11 writes it out again for it.
    try:
        written = h11.Connection(h11.CLIENT).send(request) or b""
    except h11.LocalProtocolError as problem:
        return Refused(400, f"bad WebSocket handshake: {problem}")
    protocol.receive_data(written)
    parsed = protocol.events_received()
    if len(parsed) != 1 or not isinstance(parsed[0], Request):
        return Refused(400, "bad WebSocket handshake")
    response = protocol.accept(parsed[0])
    if response.status_code != 101:
        body = response.body.decode("utf-8", "replace").strip()
        return Refused(response.status_code, f"bad WebSocket handshake: {body}")
    protocol.send_response(response)
    return WebSocketLink(protocol), b"".join(protocol.data_to_send())


class WebSocketLink:
    __slots__ = ("_parts", "_protocol", "_text", "held")

    def __init__(self, protocol: ServerProtocol) -> None:
        self._protocol = protocol
        # The frames so far of a fragmented message (the library bounds its size: max_size).
        self._parts: list[bytes] = []
        self._text = False
        # Bytes received of a message not yet complete (0: none), for the transport's
        # --line-timeout: it grows while the message does, and drops when one completes.
        self.held = 0

    def release(self) -> None:
        """The connection has ended: let the library's protocol object go with it. Its frame
        parser is a generator that holds it; left suspended, the two form a cycle that only
        the rarely run garbage collector frees (docs/architecture.md, "Garbage collection").
        `parser`, `parser_exc` and `select_subprotocol` are that object's own attributes."""
        parser = getattr(self._protocol, "parser", None)
        if parser is not None:
            parser.close()
        # The error that ended the parser (an abrupt end of the stream, say) keeps the
        # parser's frames, which hold the protocol, in its traceback: the same cycle.
        problem = getattr(self._protocol, "parser_exc", None)
        if problem is not None:
            problem.__traceback__ = None
        # The subprotocol chooser we gave it is stored on the protocol object as a method
        # bound to that object: a cycle of its own.
        vars(self._protocol).pop("select_subprotocol", None)

    def _unfinished(self) -> int:
        """Bytes held of a message not yet complete: its fragments, and a partial frame in
        the library's buffer (0 when no frame or message is under way)."""
        reader = getattr(self._protocol, "reader", None)
        buffered = len(reader.buffer) if reader is not None else 0
        return buffered + sum(len(part) for part in self._parts)

    def receive_data(self, data: bytes) -> tuple[list[MessageIn | CloseIn], bytes]:
        """Whole messages (a close last, if any) and the bytes to send back."""
        protocol = self._protocol
        items: list[MessageIn | CloseIn] = []
        if protocol.state is not State.OPEN:
            return items, b""  # closing already: nothing more is read
        protocol.receive_data(data)
        completed = False
        for frame in protocol.events_received():
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                self._text = opcode is Opcode.TEXT
            elif opcode is not Opcode.CONT:
                continue  # ping, pong, close: the library answers them
            if not frame.fin:
                if frame.data:  # empty fragments would only grow the list
                    self._parts.append(frame.data)
                continue
            completed = True
            payload = bytes(frame.data)
            if self._parts:
                self._parts.append(payload)
                payload = b"".join(self._parts)
                self._parts = []
            if not self._text:
                items.append(MessageIn(payload))
                continue
            try:
                items.append(MessageIn(payload.decode()))
            except UnicodeDecodeError:
                protocol.fail(INVALID_DATA, "invalid UTF-8 in a text message")
                break
        unfinished = self._unfinished()
        if not unfinished:
            self.held = 0
        elif completed:
            # What follows the completed message began a new one in this data.
            self.held = unfinished
        else:
            # Still the same message (control frames in between do not end it).
            self.held += len(data)
        if protocol.state is not State.OPEN:
            received, sent = protocol.close_rcvd, protocol.close_sent
            if received is not None and protocol.close_rcvd_then_sent:
                items.append(CloseIn(int(received.code), received.reason, peer=True))
            elif sent is not None:
                # The library's verdict on a broken frame (1002), too big a message (1009), ...
                items.append(CloseIn(int(sent.code), sent.reason, peer=False))
            else:
                items.append(CloseIn(MESSAGE_TOO_BIG, "", peer=False))
        return items, b"".join(protocol.data_to_send())
