"""PROTOTYPE for the comparison of issue 13: `websocket.py`'s interface over websockets'
sans-I/O `ServerProtocol` instead of wsproto. Same functions, same types."""

from __future__ import annotations

import h11
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from threadchat.protocols.web.websocket import (
    GOING_AWAY,
    INTERNAL_ERROR,
    MESSAGE_TOO_BIG,
    NORMAL,
    POLICY_VIOLATION,
    CloseIn,
    MessageIn,
    Refused,
)

__all__ = ["GOING_AWAY", "INTERNAL_ERROR", "NORMAL", "POLICY_VIOLATION"]
LIBRARY = "websockets"
INVALID_DATA = int(CloseCode.INVALID_DATA)


def frame_text(payload: str) -> bytes:
    return Frame(Opcode.TEXT, payload.encode()).serialize(mask=False)


def frame_binary(payload: bytes) -> bytes:
    return Frame(Opcode.BINARY, payload).serialize(mask=False)


def ping_frame(payload: bytes) -> bytes:
    return Frame(Opcode.PING, payload).serialize(mask=False)


def close_frame(code: int, reason: str) -> bytes:
    reason = reason.encode()[:123].decode("utf-8", "ignore")
    return Frame(Opcode.CLOSE, Close(code, reason).serialize()).serialize(mask=False)


def accept(
    request: h11.Request, subprotocol: str | None, trailing: bytes, max_message: int
) -> tuple[WebSocketLink, bytes] | Refused:
    protocol = ServerProtocol(
        select_subprotocol=lambda _, offered: subprotocol,  # type: ignore[arg-type,return-value]
        max_size=max_message,
    )
    # The library parses the request itself (as wsproto's handshake does): h11 writes it
    # out again for it.
    protocol.receive_data(h11.Connection(h11.CLIENT).send(request) or b"")
    [parsed] = protocol.events_received()
    assert isinstance(parsed, Request)
    response = protocol.accept(parsed)
    if response.status_code != 101:
        body = response.body.decode("utf-8", "replace").strip()
        return Refused(response.status_code, f"bad WebSocket handshake: {body}")
    protocol.send_response(response)
    data = b"".join(protocol.data_to_send())
    return WebSocketLink(protocol, max_message), data


class WebSocketLink:
    __slots__ = ("_parts", "_protocol", "_size", "_text", "max_message")

    def __init__(self, protocol: ServerProtocol, max_message: int) -> None:
        self._protocol = protocol
        self.max_message = max_message
        self._parts: list[bytes] = []
        self._text = False
        self._size = 0

    def receive_data(self, data: bytes) -> tuple[list[MessageIn | CloseIn], bytes]:
        protocol = self._protocol
        items: list[MessageIn | CloseIn] = []
        if protocol.state is not State.OPEN:
            return items, b""
        protocol.receive_data(data)
        for frame in protocol.events_received():
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                self._text = opcode is Opcode.TEXT
            elif opcode is not Opcode.CONT:
                continue  # control frames: answered by the library
            if not frame.fin:
                self._parts.append(frame.data)
                continue
            payload = bytes(frame.data)
            if self._parts:
                self._parts.append(payload)
                payload = b"".join(self._parts)
                self._parts = []
            if self._text:
                try:
                    items.append(MessageIn(payload.decode()))
                except UnicodeDecodeError:
                    protocol.fail(INVALID_DATA, "invalid UTF-8 in a text message")
                    break
            else:
                items.append(MessageIn(payload))
        if protocol.state is not State.OPEN:
            received = protocol.close_rcvd
            if received is not None and protocol.close_rcvd_then_sent:
                items.append(CloseIn(int(received.code), received.reason, peer=True))
            else:
                sent = protocol.close_sent
                code = int(sent.code) if sent is not None else MESSAGE_TOO_BIG
                items.append(CloseIn(code, sent.reason if sent else "", peer=False))
        return items, b"".join(protocol.data_to_send())
