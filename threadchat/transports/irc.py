"""IRC over TCP: irssi, weechat, HexChat and IRC libraries on the same hub as everyone else.

A thin transport: one reader thread per connection, like every TCP transport (see
`transports/tcp.py`), feeding what it reads to the sans-I/O `IrcSession`
(`protocols/irc/`), which parses, registers, runs the commands and encodes hub events. This
class is that session's `IrcTransport` and the hub's `Connection` for its user: it queues
bytes, paces floods, flushes, and closes the link when the session says so.

Flood control slows down reading (our policy for every protocol) instead of disconnecting, so
`Excess Flood` is never sent; an overflowing send queue ends the link with `SendQ exceeded`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Hashable
from typing import TYPE_CHECKING

from threadchat.core.hub import User
from threadchat.protocols.irc.codec import safe_host
from threadchat.protocols.irc.replies import closing_link
from threadchat.protocols.irc.session import IrcSession
from threadchat.transports.irc_side import IrcTransportSide
from threadchat.transports.outbox import Outbox

if TYPE_CHECKING:
    from threadchat.transports.host import Host

log = logging.getLogger(__name__)


class IrcConnection(IrcTransportSide):
    kind = "irc"

    @classmethod
    def refusal(cls, address: tuple, text: str) -> bytes:
        return closing_link(safe_host(str(address[0])), text).to_bytes()

    def __init__(self, server: Host, sock: socket.socket, address: tuple) -> None:
        super().__init__(server, sock, address)
        # With TLS on, every TCP listener speaks it (transports/tls.py).
        secure = server.tls_context is not None
        session = IrcSession(
            server.hub, server.config, self, safe_host(str(address[0])), tls=secure
        )
        self.session = session
        # The hub encodes once per codec group: bound straight to the codec, no call between.
        self.encode = session.codec.encode
        # What a labeled command sent this connection (see `begin_capture`).
        self._captured: list[bytes] = []

    @property
    def user(self) -> User | None:
        """The hub user once the session has registered."""
        return self.session.user

    # -- the hub's side (any thread, hub lock held) ----------------------------------------

    def codec_key(self) -> Hashable:
        # Once per recipient of a state event; changes with the capabilities (the session
        # then tells the hub). A method, not a bound attribute: one less object per link.
        return self.session.codec.key

    def direct_queue(self) -> tuple[list[bytes], Outbox]:
        return self.outbox.direct()

    # -- the reader thread -----------------------------------------------------------------

    def handle_data(self, data: bytes) -> bool:
        reason = self.session.receive_data(data)
        if reason is None:
            return True
        self.server.hub.pipeline.complete()
        self.close_after_flush(reason)
        return False

    def partial_line(self) -> int:
        return self.session.pending

    def on_line_timeout(self, limit: float) -> str:
        super().on_line_timeout(limit)
        return self.session.line_timeout(limit)

    def on_flood(self) -> None:
        self.session.flood_notice()

    def _on_overflow(self) -> None:
        log.warning("%s: SendQ exceeded (%d bytes), cutting off", self.label, self.outbox.limit)
        self.abort("SendQ exceeded")

    def on_close(self, reason: str) -> None:
        # The user's last messages go out before the others see them leave.
        self.server.hub.pipeline.complete()
        self.session.closed(reason)

    def release(self) -> None:
        self.session.release()

    # -- the shared lifecycle (timed by TcpConnection.tick) ---------------------------------

    @property
    def registered(self) -> bool:
        return self.session.user is not None

    def on_name_timeout(self, limit: float) -> str:
        return self.session.registration_timeout(limit)

    def pings_apply(self) -> bool:
        return True

    def send_ping(self) -> None:
        self.session.ping()

    def on_ping_timeout(self, waited: float) -> str:
        return self.session.ping_timeout(waited)
