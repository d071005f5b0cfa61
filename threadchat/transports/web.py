"""The web port: the chat page over HTTP, and the hub over WebSocket at `/ws`.

One reader thread per connection, like every TCP transport (`transports/tcp.py`), and no other
thread: pings are WebSocket pings sent through the shared lifecycle (`TcpConnection.tick`),
which browsers answer by themselves. A connection starts in HTTP (`protocols/web/endpoint.py`,
h11): it may fetch the page's files, kept alive between requests; a WebSocket handshake at
`/ws` that passes the checks (origin, subprotocol) turns it into a WebSocket
(`protocols/web/websocket.py`, websockets' sans-I/O protocol), which then carries one of two
languages, chosen by the subprotocol:

- `threadchat.json` (or none): the native JSON events and requests of docs/protocol.md, one
  per text message, carried out by the native session (`protocols/native`);
- `text.ircv3.net` / `binary.ircv3.net`: IRC, one line per message without CR LF, carried out
  by the IRC session (`protocols/irc`), as the IRCv3 WebSocket specification says.

The protocol packages stay independent: this module composes them.
"""

from __future__ import annotations

import functools
import logging
import secrets
import socket
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING

from threadchat.config import Config
from threadchat.core import events
from threadchat.core.events import Event
from threadchat.core.hub import User, encode_contained
from threadchat.protocols.irc.codec import safe_host
from threadchat.protocols.irc.session import IrcSession
from threadchat.protocols.native import jsonlines
from threadchat.protocols.native.session import NativeSession, SessionEnded
from threadchat.protocols.web import websocket
from threadchat.protocols.web.endpoint import (
    IRC_BINARY_SUBPROTOCOL,
    IRC_TEXT_SUBPROTOCOL,
    HttpEndpoint,
    OriginPolicy,
    Upgrade,
)
from threadchat.protocols.web.static import StaticFiles
from threadchat.protocols.web.websocket import CloseIn, MessageIn, Refused, WebSocketLink
from threadchat.transports.irc_side import IrcTransportSide
from threadchat.transports.outbox import Outbox

if TYPE_CHECKING:
    from threadchat.transports.host import Host

log = logging.getLogger(__name__)

# A message (or frame) over this many bytes ends the link with 1009 "message too big": the
# same bound as a line protocol's 64 KiB without a newline. Messages longer than a line of
# the language (--max-line for JSON, IRC's own limit) are refused one by one, as on TCP.
MAX_MESSAGE = 64 * 1024
JSON_CODEC = ("websocket", "json")


@functools.lru_cache(maxsize=4)
def _site(folder: Path | None) -> StaticFiles:
    return StaticFiles.load(folder)


@functools.lru_cache(maxsize=64)
def _origins(origins: tuple[str, ...]) -> OriginPolicy:
    return OriginPolicy.from_settings(origins)


def check_settings(config: Config) -> None:
    """Load the page and read --web-origin once at start; ValueError says what is wrong."""
    site = _site(None)
    if not len(site):
        log.warning("the web port serves no page: the package's web folder is empty")
    _origins(tuple(config.web_origin))


class JsonOverWebSocket:
    """The native JSON protocol, one event or request per text message."""

    __slots__ = ("conn", "session")

    def __init__(self, conn: WebConnection) -> None:
        self.conn = conn
        self.session = NativeSession(
            conn.server.hub, conn, self.reply, label=conn.label, host=str(conn.address[0])
        )

    @property
    def user(self) -> User | None:
        return self.session.user

    def codec_key(self) -> Hashable:
        return JSON_CODEC

    def encode(self, event: Event) -> bytes | None:
        line = jsonlines.encode_event(event)
        if line is None:
            return None
        return websocket.frame_text(line[:-1].decode())

    def reply(self, event: Event) -> None:
        data = encode_contained(self.encode, event)
        if data:
            self.conn.send_bytes(data)

    def handle(self, payload: str | bytes) -> str | None:
        """Carry out one message; the reason to close, or None."""
        limit = self.conn.server.config.max_line
        if isinstance(payload, bytes):
            try:
                payload = payload.decode()
            except UnicodeDecodeError:
                self.reply(events.Error(code="bad_encoding", message="message dropped: not UTF-8"))
                return None
        if len(payload) > limit // 4 and len(payload.encode()) > limit:
            message = f"message dropped: over {limit} bytes"
            self.reply(events.Error(code="line_too_long", message=message))
            return None
        if self.session.user is not None:
            self.conn.throttle()  # a flood pause completes what is queued first
        try:
            self.session.handle_pipelined(jsonlines.parse_line(payload))
        except SessionEnded as ended:
            return ended.reason
        return None

    def on_flood(self) -> None:
        config = self.conn.server.config
        self.reply(
            events.Notice(
                text=f"flood control: over {config.flood_burst} messages at once or "
                f"{config.flood_rate:g} messages/s, your messages are now read more slowly"
            )
        )

    def on_name_timeout(self, limit: float) -> str:
        log.info("%s: no name within %gs, closing", self.conn.label, limit)
        self.reply(events.Error(code="timeout", message="no name given in time"))
        return "timed out"

    def closed(self, reason: str) -> None:
        if self.session.user is not None:
            self.conn.server.hub.detach(self.session.user, self.conn, reason)


class IrcOverWebSocket:
    """IRC, one line per message (IRCv3 WebSocket): text frames (always valid UTF-8) for
    `text.ircv3.net`, binary frames for `binary.ircv3.net`; the client may send either."""

    __slots__ = ("binary", "conn", "session")

    def __init__(self, conn: WebConnection, *, binary: bool) -> None:
        self.conn = conn
        self.binary = binary
        self.session = IrcSession(
            conn.server.hub,
            conn.server.config,
            conn,
            safe_host(str(conn.address[0])),
            send_bytes=self.send_lines,
        )

    @property
    def user(self) -> User | None:
        return self.session.user

    def codec_key(self) -> Hashable:
        return ("websocket", self.binary, self.session.codec.key)

    def frames(self, data: bytes) -> bytes:
        """IRC lines (each ending in CR LF) as one frame each, without the CR LF."""
        lines = data.split(b"\r\n")
        lines.pop()  # what follows the last CR LF: nothing
        if self.binary:
            return b"".join(websocket.frame_binary(line) for line in lines)
        # Our lines are UTF-8 already; "replace" only guards the rule of text frames.
        return b"".join(websocket.frame_text(line.decode("utf-8", "replace")) for line in lines)

    def encode(self, event: Event) -> bytes | None:
        data = self.session.codec.encode(event)
        return self.frames(data) if data else None

    def send_lines(self, data: bytes) -> None:
        self.conn.send_bytes(self.frames(data))

    def handle(self, payload: str | bytes) -> str | None:
        raw = payload.encode() if isinstance(payload, str) else payload
        # One line per message, without CR LF; a client that adds one anyway is understood.
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        return self.session.receive_data(raw + b"\r\n")

    def on_flood(self) -> None:
        self.session.flood_notice()

    def on_name_timeout(self, limit: float) -> str:
        return self.session.registration_timeout(limit)

    def closed(self, reason: str) -> None:
        self.session.closed(reason)


class WebConnection(IrcTransportSide):
    kind = "web"

    @classmethod
    def refusal(cls, address: tuple, text: str) -> bytes:
        body = text.encode() + b"\n"
        return (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )

    def __init__(self, server: Host, sock: socket.socket, address: tuple) -> None:
        super().__init__(server, sock, address)
        # Made by the reader thread on the first bytes (see `handle_data`).
        self.http: HttpEndpoint | None = None
        self.link: WebSocketLink | None = None
        self.language: JsonOverWebSocket | IrcOverWebSocket | None = None
        self._close_sent = False
        # What a labeled IRC command sent this connection (see `begin_capture`).
        self._captured: list[bytes] = []

    @property
    def user(self) -> User | None:
        return self.language.user if self.language is not None else None

    # -- the hub's side (any thread, hub lock held) ----------------------------------------

    def codec_key(self) -> Hashable:
        language = self.language
        return language.codec_key() if language is not None else None

    def encode(self, event: Event) -> bytes | None:
        language = self.language
        return language.encode(event) if language is not None else None

    def direct_queue(self) -> tuple[list[bytes], Outbox] | None:
        return self.outbox.direct() if self.language is not None else None

    def abort(self, reason: str) -> None:
        # A WebSocket peer is told in its own terms why the link ends (the reader thread
        # tells it itself, see `_close_link`).
        if self.link is not None and threading.current_thread() is not self.thread:
            code = websocket.GOING_AWAY if reason == "server shutdown" else None
            self._send_close(code or websocket.POLICY_VIOLATION, reason)
        super().abort(reason)

    # -- what the IRC session needs of its transport (the rest: IrcTransportSide) -----------

    def unframe(self, data: bytes) -> bytes:
        """For IRC labeled-response: what the hub delivers comes framed already (encoded once
        for every WebSocket recipient alike), so its frames are read back into lines, to be
        labeled and framed again with the rest of the response."""
        return b"".join(payload + b"\r\n" for payload in websocket.payloads(data))

    # -- the reader thread -----------------------------------------------------------------

    def handle_data(self, data: bytes) -> bool:
        if self.link is not None:
            return self._handle_frames(data)
        if self.http is None:
            # Here, not in __init__ (the acceptor thread): what HTTP allocates and frees is
            # then all done by one thread (measured: less memory kept per connection).
            origins = _origins(tuple(self.server.config.web_origin))
            self.http = HttpEndpoint(_site(None), origins, self.label)
        step = self.http.receive_data(data)
        if step.send:
            self.send_bytes(step.send)
        if step.upgrade is not None:
            return self._upgrade(step.upgrade)
        if step.close is not None:
            self.close_after_flush(step.close)
            return False
        return True

    def _upgrade(self, upgrade: Upgrade) -> bool:
        assert self.http is not None
        result = websocket.accept(upgrade.request, upgrade.subprotocol, MAX_MESSAGE)
        if isinstance(result, Refused):
            log.warning("%s: WebSocket handshake refused (%d): %s",
                        self.label, result.status, result.text)  # fmt: skip
            self.send_bytes(self.http.refuse(result.status, result.text, result.headers))
            self.close_after_flush("bad WebSocket handshake")
            return False
        self.link, response = result
        self.send_bytes(response)
        self.http = None  # HTTP is over on this connection: its state is dropped
        subprotocol = upgrade.subprotocol
        if subprotocol in (IRC_TEXT_SUBPROTOCOL, IRC_BINARY_SUBPROTOCOL):
            binary = subprotocol == IRC_BINARY_SUBPROTOCOL
            self.language = IrcOverWebSocket(self, binary=binary)
        else:
            self.language = JsonOverWebSocket(self)
        log.debug("%s: WebSocket open (%s)", self.label, subprotocol or "no subprotocol: JSON")
        if upgrade.trailing:
            return self._handle_frames(upgrade.trailing)
        return True

    def _handle_frames(self, data: bytes) -> bool:
        assert self.link is not None and self.language is not None
        items, replies = self.link.receive_data(data)
        for item in items:
            if isinstance(item, MessageIn):
                reason = self.language.handle(item.payload)
                if reason is not None:
                    self._close_link(websocket.NORMAL, reason, replies)
                    return False
                continue
            assert isinstance(item, CloseIn)
            self._close_sent = True  # the link's replies hold the close frame
            if item.peer:
                reason = f"closed ({item.code}{': ' + item.reason if item.reason else ''})"
                reason = "EOF" if item.code in (1000, 1001, 1005) else reason
            else:
                log.warning("%s: WebSocket closed with %d: %s", self.label, item.code, item.reason)
                reason = f"WebSocket error: {item.reason}"
            self._close_link(None, reason, replies)
            return False
        if replies:
            self.send_bytes(replies)
        return True

    def _close_link(self, code: int | None, reason: str, replies: bytes) -> None:
        """End the link after what is queued: `replies` (and a close frame with `code`)."""
        self.server.hub.pipeline.complete()
        if replies:
            self.send_bytes(replies)
        if code is not None:
            self._send_close(code, reason)
        self.close_after_flush(reason)

    def _send_close(self, code: int, reason: str) -> None:
        if not self._close_sent:
            self._close_sent = True
            self.send_bytes(websocket.close_frame(code, reason))

    def on_flood(self) -> None:
        if self.language is not None:
            self.language.on_flood()

    def on_close(self, reason: str) -> None:
        # The user's last messages go out before the others see them leave.
        self.server.hub.pipeline.complete()
        if self.language is not None:
            self.language.closed(reason)

    def release(self) -> None:
        # Connection, language and session hold each other: let go of the language, whose
        # session lets go of us, so that reference counting frees them all. A late encode
        # (a fan-out that took this connection before it left) finds no language and sends
        # nothing, as before one was chosen.
        language, self.language = self.language, None
        if language is not None:
            language.session.release()
        if self.link is not None:
            self.link.release()

    # -- the shared lifecycle (timed by TcpConnection.tick) ---------------------------------

    @property
    def registered(self) -> bool:
        # Until then the name timeout runs: for a WebSocket, the time to give a name; for
        # plain HTTP, how long an idle kept-alive connection (or a slow request) may last.
        return self.language is not None and self.language.user is not None

    def on_name_timeout(self, limit: float) -> str:
        if self.language is None:
            log.debug("%s: HTTP connection idle for %gs, closing", self.label, limit)
            return "idle HTTP connection"
        reason = self.language.on_name_timeout(limit)
        self._send_close(websocket.POLICY_VIOLATION, "no name given in time")
        return reason

    def partial_line(self) -> int:
        # A WebSocket message (all its frames) must complete within --line-timeout of its
        # first byte, as a line must on TCP. Over HTTP the name timeout bounds a slow request.
        return self.link.held if self.link is not None else 0

    def on_line_timeout(self, limit: float) -> str:
        log.info("%s: no WebSocket message completed within %gs of its first byte, closing",
                 self.label, limit)  # fmt: skip
        reason = "line timeout"
        if isinstance(self.language, JsonOverWebSocket):
            message = f"no message end within {limit:g} s of a message's start"
            self.language.reply(events.Error(code="line_timeout", message=message))
        elif isinstance(self.language, IrcOverWebSocket):
            reason = self.language.session.line_timeout(limit)
        self._send_close(websocket.POLICY_VIOLATION, f"message not completed within {limit:g} s")
        return reason

    def pings_apply(self) -> bool:
        return self.link is not None

    def send_ping(self) -> None:
        self.send_bytes(websocket.ping_frame(secrets.token_hex(4).encode()))

    def on_ping_timeout(self, waited: float) -> str:
        log.info("%s: no answer to a ping within %ds, closing", self.label, int(waited))
        return f"ping timeout: {int(waited)} seconds"
