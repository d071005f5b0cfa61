"""What an IRC session needs of its transport, shared by IRC over TCP and over WebSocket.

Labeled-response needs the lines one command caused, to label them together: `begin_capture`
diverts them from the connection's outbox until `end_capture` hands them over.
"""

import threading
from collections.abc import Callable

from threadchat.transports.tcp import TcpConnection


class IrcTransportSide(TcpConnection):
    """The reader-thread side an `IrcSession` calls (flushing, counting, capturing)."""

    # What a labeled command sent this connection (see `begin_capture`); set per instance by
    # `__init__` of the concrete connection, before any command is read.
    _captured: list[bytes]

    def unframe(self, data: bytes) -> bytes:
        """A hub delivery as IRC lines (over TCP it already is)."""
        return data

    def flush_now(self) -> None:
        """Flush what this thread queued so far (to every recipient), then keep batching."""
        self._batch.__exit__(None, None, None)
        self._batch.__enter__()

    def connection_count(self) -> int:
        return self.server.connection_count()

    def begin_capture(self, *, deliveries: bool) -> Callable[[bytes], None]:
        reader = threading.get_ident()
        captured: list[bytes] = []
        self._captured = captured
        if not deliveries:
            return captured.append
        put = self.outbox.put
        unframe = self.unframe

        def capture(data: bytes) -> None:
            # The hub delivers to this connection from every thread; only what this reader
            # thread causes while the command runs is its response.
            if threading.get_ident() == reader:
                captured.append(unframe(data))
            else:
                put(data)

        # The hub reads `send_bytes` at each delivery (state events: JOIN, NICK, MODE, ...).
        self.send_bytes = capture
        # The session's own sends are all part of the response, whatever thread makes them
        # (an echo comes from the thread that relays the stored message).
        return captured.append

    def end_capture(self) -> list[bytes]:
        self.send_bytes = self.outbox.put
        captured, self._captured = self._captured, []
        return captured
