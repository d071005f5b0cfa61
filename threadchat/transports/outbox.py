"""A connection's bounded outbound queue.

Any thread may `put` bytes (it never blocks). `flush` tries one non-blocking send from the
calling thread; whatever the kernel does not take is handed to a writer thread that is started
only when such a backlog exists and exits as soon as it has drained it. So a fast reader costs
no extra thread, and a slow reader never stalls the sender, whose thread moves on at once.
(A writer that lingered after draining was measured: every later put then had to wake it,
a thread switch per delivery, which cut fan-out throughput several times over.)

Past `limit` queued bytes the outbox gives up: it drops its data and calls `on_overflow`,
which cuts the connection off ("send queue exceeded") instead of letting it grow without end.

Exactly one thread writes to the socket at a time: whoever holds `_writing`.
"""

import logging
import socket
import threading
from collections.abc import Callable

from threadchat import delivery

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, sock: socket.socket, limit: int, on_overflow: Callable[[], None]) -> None:
        self._sock = sock
        self.limit = limit
        self._on_overflow = on_overflow
        self._lock = threading.Lock()
        # For the writer thread and wait_empty only; the hot paths take the bare lock.
        self._cond = threading.Condition(self._lock)
        self._chunks: list[bytes] = []
        # Bytes queued or handed to the kernel-send in progress, counted against `limit`.
        self._queued = 0
        self._writing = False
        self._writer: threading.Thread | None = None
        self._closed = False
        self._overflow_reported = False
        self._dirty = False
        self.overflowed = False

    @property
    def queued(self) -> int:
        return self._queued

    def put(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            if self._queued + len(data) > self.limit:
                self._closed = self.overflowed = True
                self._chunks.clear()
                self._cond.notify_all()
            else:
                self._chunks.append(data)
                self._queued += len(data)
                if self._writer is not None:
                    self._cond.notify()
                    return
            if self._dirty:
                return
            self._dirty = True
        delivery.mark_dirty(self)

    def flush(self) -> None:
        """Send what is queued without blocking; leave any rest to the writer thread."""
        with self._lock:
            self._dirty = False
            if self.overflowed and not self._overflow_reported:
                self._overflow_reported = True
                report = True
            else:
                report = False
                if self._writing or not self._chunks or self._closed:
                    return
                self._writing = True
                data = self._take()
        if report:
            self._on_overflow()
            return
        try:
            sent = self._sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._fail()
            return
        with self._lock:
            self._queued -= sent
            if sent < len(data):
                self._chunks.insert(0, data[sent:])
            if not self._chunks or self._closed:
                self._writing = False
                self._cond.notify_all()
                return
            # A backlog: the writer thread owns `_writing` from here on.
            self._writer = threading.Thread(target=self._drain, name="writer", daemon=True)
            self._writer.start()

    def _take(self) -> bytes:
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        return data

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._chunks or self._closed:
                    self._writing = False
                    self._writer = None
                    self._cond.notify_all()
                    return
                data = self._take()
            try:
                self._sock.sendall(data)
            except OSError:
                self._fail()
                return
            with self._cond:
                self._queued -= len(data)
                if not self._chunks:
                    self._cond.notify_all()

    def _fail(self) -> None:
        # The peer is gone; its reader thread sees that too and ends the session.
        with self._cond:
            self._closed = True
            self._writing = False
            self._writer = None
            self._chunks.clear()
            self._cond.notify_all()

    def wait_empty(self, timeout: float) -> bool:
        """Wait until everything queued has been handed to the kernel (or the outbox closed)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or (not self._chunks and not self._writing), timeout
            )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._chunks.clear()
            self._cond.notify_all()
