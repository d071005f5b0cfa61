"""The native line protocol over TCP (text mode for people and nc, JSON mode for programs)."""

import logging
import secrets
import socket
from collections.abc import Hashable
from typing import TYPE_CHECKING

from threadchat.core import events
from threadchat.core.events import Event
from threadchat.core.hub import encode_contained
from threadchat.protocols.native.line import JSON_MODE, LineProtocol
from threadchat.protocols.native.session import NativeSession, SessionEnded
from threadchat.transports.outbox import Outbox
from threadchat.transports.tcp import TcpConnection

if TYPE_CHECKING:
    from threadchat.transports.host import Host

log = logging.getLogger(__name__)


class LineConnection(TcpConnection):
    kind = "line"

    @classmethod
    def refusal(cls, address: tuple, text: str) -> bytes:
        # No line has shown the mode yet, so text, as before any first line (see
        # LineProtocol.encode).
        return LineProtocol().encode(events.Error(code="server_busy", message=text)) or b""

    def __init__(self, server: "Host", sock: socket.socket, address: tuple) -> None:
        super().__init__(server, sock, address)
        self.protocol = LineProtocol(server.config.max_line)
        self.session = NativeSession(
            server.hub,
            self,
            self.reply,
            label=self.label,
            host=str(address[0]),
            on_registered=self._on_registered,
        )

    # -- the hub's side (any thread, hub lock held) ----------------------------------------

    def codec_key(self) -> Hashable:
        # Called once per delivery: the common JSON case must stay one comparison.
        if self.protocol.mode == JSON_MODE:
            return JSON_MODE
        return self.protocol.codec_key(self.session.several_rooms)

    def direct_queue(self) -> tuple[list[bytes], Outbox] | None:
        # Text mode's codec depends on how many rooms the user is in: served one by one.
        return self.outbox.direct() if self.protocol.mode == JSON_MODE else None

    def encode(self, event: Event) -> bytes | None:
        return self.protocol.encode(event, self.session.several_rooms)

    # -- the reader thread -----------------------------------------------------------------

    def reply(self, event: Event) -> None:
        data = encode_contained(self.encode, event)
        if data:
            self.send_bytes(data)

    def _on_registered(self) -> None:
        self.protocol.registered = True
        self.session.reads_as_shown = self.protocol.mode != JSON_MODE

    def handle_data(self, data: bytes) -> bool:
        for request in self.protocol.receive_data(data):
            if self.protocol.registered:
                self.throttle()  # a flood pause completes what is queued first
            try:
                self.session.handle_pipelined(request)
            except SessionEnded as ended:
                self.server.hub.pipeline.complete()
                self.close_after_flush(ended.reason)
                return False
        if self.protocol.fatal:
            self.server.hub.pipeline.complete()
            log.warning("%s: no newline in 64 KiB, closing", self.label)
            self.reply(events.Error(code="line_too_long", message="no newline in 64 KiB: closing"))
            self.close_after_flush("protocol error")
            return False
        return True

    def partial_line(self) -> int:
        return self.protocol.pending

    def on_line_timeout(self, limit: float) -> str:
        reason = super().on_line_timeout(limit)
        self.reply(
            events.Error(
                code="line_timeout", message=f"no line end within {limit:g} s of a line's start"
            )
        )
        return reason

    def on_flood(self) -> None:
        config = self.server.config
        self.reply(
            events.Notice(
                text=f"flood control: over {config.flood_burst} lines at once or "
                f"{config.flood_rate:g} lines/s, your lines are now read more slowly"
            )
        )

    def on_close(self, reason: str) -> None:
        # The user's last messages go out before the others see them leave.
        self.server.hub.pipeline.complete()
        if self.session.user is not None:
            self.server.hub.detach(self.session.user, self.session.conn, reason)

    # -- the shared lifecycle (timed by TcpConnection.tick) ---------------------------------

    def release(self) -> None:
        self.session.release()

    @property
    def registered(self) -> bool:
        return self.session.user is not None

    def on_name_timeout(self, limit: float) -> str:
        log.info("%s: no name within %gs, closing", self.label, limit)
        self.reply(events.Error(code="timeout", message="no name given in time"))
        return "timed out"

    def pings_apply(self) -> bool:
        # Text mode has no pings: a person behind nc cannot answer one (TCP keepalive serves).
        return self.protocol.mode == JSON_MODE

    def send_ping(self) -> None:
        self.reply(events.Ping(token=secrets.token_hex(4)))
