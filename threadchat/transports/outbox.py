"""A connection's bounded outbound queue.

Any thread may `put` bytes; it never blocks and takes no lock: `put` is a `list.append`, which
the GIL makes atomic, plus marking the outbox dirty. This matters because `put` runs once per
recipient of every message, under the hub lock: a per-outbox lock there was measured to
convoy the reader threads (a lock holder preempted by the GIL stalls the whole fan-out).

`flush` (run by whichever thread flushes dirty outboxes, see `delivery.py`; `flush_many` does
the same for a whole round in one loop) sends everything queued with one non-blocking `send`.
Whatever the kernel does not take is handed to a writer thread, started only when such a
backlog exists and ending as soon as it has drained it. So a fast reader costs no extra
thread, and a slow reader never stalls the sender.
(A writer that lingered after draining was measured too: every later put then had to wake it,
a thread switch per delivery, which cut fan-out throughput several times over.)

Past `limit` queued bytes the outbox gives up: it drops its data and calls `on_overflow`,
which cuts the connection off ("send queue exceeded") instead of letting it grow without end.
The bound is checked when flushing, so it can be exceeded by at most what arrives between two
flushes of this outbox.

Exactly one thread writes to the socket at a time: the flushing thread (one at a time, see
`delivery.py`) while `_writing` is False, the writer thread while it is True.
"""

import logging
import socket
import threading
from collections.abc import Callable

from threadchat.core import delivery

log = logging.getLogger(__name__)

_NO_WAIT = socket.MSG_DONTWAIT


def _closed_outboxes_do_not_overflow() -> None:
    pass


class Outbox:
    def __init__(self, sock: socket.socket, limit: int, on_overflow: Callable[[], None]) -> None:
        self._sock = sock
        self.limit = limit
        self._on_overflow = on_overflow
        # Appended to without a lock (see the module docstring); only the head is ever removed,
        # with `del chunks[:n]` for the n chunks taken, so concurrent appends are never lost.
        self._chunks: list[bytes] = []
        self._dirty = False
        self._lock = threading.Lock()
        # Notified whenever the outbox may have become empty (for wait_empty). Made by the
        # first wait_empty, under the lock: most connections never wait, and a Condition
        # (with its deque) was about 700 bytes of every idle connection.
        self._drained: threading.Condition | None = None
        self._writing = False
        # True while flush has taken data and not yet handed it to the kernel (no lock).
        self._sending = False
        # True once somebody has waited in wait_empty: flush then notifies the Condition.
        self._awaited = False
        # Bytes taken from the queue by the writer thread and not yet confirmed sent.
        self._in_flight = 0
        self._closed = False
        self.overflowed = False
        # Whether `flush_many` may send for this outbox on its fast path: a plain socket (not
        # TLS), no writer thread draining a backlog, not closed. Kept in step with `_writing`
        # and `_closed` wherever they change, so that it is one attribute to read.
        self._direct = type(sock) is socket.socket

    def put(self, data: bytes) -> None:
        self._chunks.append(data)
        if not self._dirty:
            self._dirty = True
            delivery.mark_dirty(self)

    def direct(self) -> tuple[list[bytes], "Outbox"]:
        """The queue itself and this outbox, for the hub's fast fan-out: appending to the list
        and marking the outbox dirty (delivery.mark_all_dirty) is exactly what `put` does."""
        return self._chunks, self

    @property
    def queued(self) -> int:
        """Bytes waiting to be sent (queued, or handed to a blocked writer thread)."""
        return self._in_flight + sum(map(len, self._chunks))

    def _take(self) -> bytes:
        chunks = self._chunks
        count = len(chunks)
        data = chunks[0] if count == 1 else b"".join(chunks[:count])
        del chunks[:count]
        return data

    def flush(self) -> None:
        """Send what is queued without blocking; leave any rest to a writer thread.

        Called only by `delivery.flush_dirty`, one thread at a time, and only flush starts a
        writer thread: so while `_writing` is False no other thread sends on this socket, and
        the common case (the kernel takes it all) needs no lock. Measured at C=1000 and 200
        messages/s, where one flush per delivery is most of the server's work: the two lock
        blocks and the Condition notify of the locked path were a fifth of the time.
        """
        self._dirty = False
        if self._writing or self._closed:
            self._flush_locked()
            return
        if not self._chunks:
            return
        # Seen by wait_empty: the data taken below is not yet with the kernel.
        self._sending = True
        data = self._take()
        if len(data) > self.limit:
            with self._lock:
                self._sending = False
                self._overflow()
            return
        try:
            sent = self._sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._sending = False
            self._fail()
            return
        if sent == len(data):
            self._sending = False
            # wait_empty sets _awaited before it tests its condition: a waiter is either
            # woken here or finds _sending already False.
            if self._awaited:
                with self._lock:
                    self._notify_drained()
            return
        self._hand_to_writer(data[sent:])

    @staticmethod
    def flush_many(boxes: "list[Outbox]") -> None:
        """`flush` of a round's outboxes (`delivery.flush_dirty`, flush lock held), with the
        usual case (a plain socket, no writer thread, not closed) in one loop: no Python call
        per outbox but the `send`. What is rare is left to `flush`."""
        for box in boxes:
            if not box._direct:
                box.flush()
                continue
            box._dirty = False
            chunks = box._chunks
            count = len(chunks)
            if not count:
                continue
            # Seen by wait_empty: the data taken below is not yet with the kernel.
            box._sending = True
            data = chunks[0] if count == 1 else b"".join(chunks[:count])
            del chunks[:count]
            if len(data) > box.limit:
                with box._lock:
                    box._sending = False
                    box._overflow()
                continue
            try:
                sent = box._sock.send(data, _NO_WAIT)
            except BlockingIOError:
                sent = 0
            except OSError:
                box._sending = False
                box._fail()
                continue
            if sent != len(data):
                box._hand_to_writer(data[sent:])
                continue
            box._sending = False
            # wait_empty sets _awaited before it tests its condition: a waiter is either
            # woken here or finds _sending already False.
            if box._awaited:
                with box._lock:
                    box._notify_drained()

    def _flush_locked(self) -> None:
        """Flush while a writer thread drains a backlog, or after the outbox was closed."""
        with self._lock:
            if self._closed:
                self._chunks.clear()
                return
            if self._writing:
                # A writer thread is draining a backlog; it picks up the new chunks itself.
                if self.queued > self.limit:
                    self._overflow()
                return

    def _hand_to_writer(self, rest: bytes) -> None:
        with self._lock:
            self._sending = False
            if self._closed:
                self._notify_drained()
                return
            self._in_flight = len(rest)
            if self.queued > self.limit:
                self._overflow()
                return
            # A backlog: the writer thread owns `_writing` from here on.
            self._writing = True
            self._direct = False
            writer = threading.Thread(target=self._drain, args=(rest,), name="writer", daemon=True)
            try:
                writer.start()
            except RuntimeError as problem:
                # No thread to be had (a pids limit). Sending the backlog here would stall
                # every other recipient behind this one, and raising would end the connection
                # of whoever is flushing: this client is given up on, like one that overflows.
                self._writing = False
                self._direct = type(self._sock) is socket.socket
                self._in_flight = 0
                log.warning("no writer thread for a %d-byte backlog (%s)", len(rest), problem)
                self._overflow()

    def _drain(self, data: bytes) -> None:
        while True:
            try:
                self._sock.sendall(data)
            except OSError:
                self._fail()
                return
            with self._lock:
                self._in_flight = 0
                if self._closed or not self._chunks:
                    # Checked under the lock that flush() takes before it looks at _writing,
                    # so a chunk appended now is sent by the flush its put scheduled.
                    self._writing = False
                    self._direct = type(self._sock) is socket.socket and not self._closed
                    self._notify_drained()
                    return
            data = self._take()
            self._in_flight = len(data)

    def _overflow(self) -> None:
        """Give up on this client (outbox lock held): drop its data, cut it off."""
        self._closed = self.overflowed = True
        self._direct = False
        self._chunks.clear()
        self._notify_drained()
        # Only shuts the socket down and records the reason; safe under our lock.
        self._on_overflow()

    def _fail(self) -> None:
        # The peer is gone; its reader thread sees that too and ends the session.
        with self._lock:
            self._closed = True
            self._direct = False
            self._writing = False
            self._in_flight = 0
            self._chunks.clear()
            self._notify_drained()

    def _notify_drained(self) -> None:
        """Wake whoever waits in wait_empty (lock held); nobody has, while there is no
        Condition."""
        if self._drained is not None:
            self._drained.notify_all()

    def wait_empty(self, timeout: float) -> bool:
        """Wait until everything queued has been handed to the kernel (or the outbox closed)."""
        delivery.flush_dirty()
        with self._lock:
            if self._drained is None:
                self._drained = threading.Condition(self._lock)
            drained = self._drained
            self._awaited = True
            return drained.wait_for(
                lambda: (
                    self._closed or (not self._chunks and not self._writing and not self._sending)
                ),
                timeout,
            )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._direct = False
            self._chunks.clear()
            self._notify_drained()
            # The callback is a method of the connection, which holds this outbox: a cycle
            # that only the (rarely run) garbage collector would free. A closed outbox never
            # overflows, so let go of it and let reference counting free both.
            self._on_overflow = _closed_outboxes_do_not_overflow
