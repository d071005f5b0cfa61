"""What a transport sees of the server: the one small interface between them.

Transports never import the wiring (`threadchat.app`); the server satisfies this Protocol,
and so may any other host (a test harness, a benchmark's stand-in).
"""

import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from threadchat.config import Config
from threadchat.core.admission import Admission
from threadchat.core.hub import Hub

if TYPE_CHECKING:  # the connection base class lives beside this interface
    from threadchat.transports.tcp import TcpConnection


class Host(Protocol):
    config: Config
    hub: Hub
    # Who may connect: every listener asks it before taking a client on (`admit`), and
    # releases what it admitted once the client is gone.
    admission: Admission
    # Set once shutdown begins: acceptors and readers stop taking new work.
    stopping: threading.Event
    # Set when TLS is configured: every TCP listener then wraps its connections.
    tls_context: ssl.SSLContext | None
    # Starts a connection's reader thread (a seam tests use to make it fail).
    start_reader: Callable[[threading.Thread], None]

    def adopt(self, conn: "TcpConnection") -> None:
        """Register a new connection and start its reader; raises if that fails (the caller
        still owns the socket). Once stopping, it discards the connection instead."""
        ...

    def forget(self, conn: "TcpConnection") -> None:
        """A connection ended: drop it from the registry."""
        ...

    def connections(self) -> "list[TcpConnection]":
        """The live connections (a copy: for shutdown and housekeeping)."""
        ...

    def connection_count(self) -> int:
        """How many connections are live (LUSERS, at every registration: no copy)."""
        ...
