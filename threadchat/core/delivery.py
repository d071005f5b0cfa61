"""Delivery: enqueue to many recipients first, then write each recipient once.

Outboxes that receive data are marked dirty in one shared list. Flushing is combined across
sender threads: whichever thread wins a non-blocking try of the flush lock sends every dirty
outbox with one `send` each, including data other senders queued meanwhile; a thread that
loses the try simply goes on, since the winner re-checks the list after releasing the lock.
Under load, many messages from many senders thus reach each recipient in one write.

A reader thread wraps everything it does for one `recv()` in `batch()`, so flushing happens
once at the end of the batch, after the hub lock has been released: no socket I/O ever
happens under the hub lock, and a burst of N lines costs one write per recipient, not N.

The history relay (the store writer's, with history on: every room message takes it) does
not flush itself: it hands the round to the flusher thread (`handed_off`), and the flusher's
rounds are spaced in time: one starts at most once per `flush_interval` (2 ms by default),
with everything relayed until then. At fixed rates the kernel's work for a `send` on loopback
(4 to 5.5 us of system time per call on this machine under load, whatever its size up to a
few KiB, against 0.5 us of user time) was most of a delivery's CPU, and one `send` per
message per recipient was what the server did; ngircd's loop makes 0.33 writes per delivery
at 1,500 messages/s to 100 clients. The bound on what this adds to a relayed message's
latency is the interval: a message after a quiet spell is flushed at once, one within the
interval after the last round waits for the interval's end, at most 2 ms.

A reader's batch flushes at its end only when the thread marked something itself: with
history on, a reader's messages are relayed by the writer, and a reader flushing at the end
of every read would flush the relayed data that waits for the flusher's turn, a round per
message again. A flush asked for outside a batch (`mark_dirty`, `flush_dirty`) is immediate:
its caller may close the connection right after (a close frame, a last error line).
"""

import logging
import threading
import time
from collections.abc import Iterable
from typing import Protocol

log = logging.getLogger(__name__)


class Flushable(Protocol):
    """A target of delivery. Its class may also offer `flush_many(targets)`, a static method
    that flushes many of its instances at once (see `_flush_round`)."""

    def flush(self) -> None: ...


_local = threading.local()
# Targets waiting for a flush. A set, so a target marked many times is flushed once; never
# replaced, so set.add and set.pop (atomic under the GIL) need no lock of ours.
_dirty: set[Flushable] = set()
_flush_lock = threading.Lock()
# Seconds between the starts of two flush rounds at least (see the module docstring); the
# server sets it from its configuration, 0 flushes at once.
flush_interval = 0.002
# When the next round may start (time.monotonic()); written by the round's flushing thread.
_next_round = 0.0


class batch:  # lower case: used as a context manager, it reads like a function
    """Defer flushing on this thread until the outermost batch exits (re-entrant)."""

    __slots__ = ("_outer",)

    def __enter__(self) -> None:
        self._outer = not getattr(_local, "open", False)
        if self._outer:
            _local.open = True

    def __exit__(self, *exc: object) -> None:
        if self._outer:
            _local.open = False
            if getattr(_local, "marked", False):
                _local.marked = False
                flush_dirty()


class handed_off(batch):
    """Like `batch`, but at its end the flusher thread flushes, not this one.

    For the history relay (in the store's writer thread): a flush round makes one `send` per
    recipient, and after each the thread must win the GIL back from the readers; measured,
    that was most of a relay thread's time, time it did not spend relaying the next commit.
    Handed off, the two overlap.
    """

    __slots__ = ()

    def __exit__(self, *exc: object) -> None:
        if self._outer:
            _local.open = False
            _local.marked = False
            if _dirty:
                flusher = _flusher()
                if flusher is None:
                    flush_dirty()  # slower for this thread, but nothing is left unsent
                else:
                    flusher.wake.set()


class _Flusher(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="flusher", daemon=True)
        self.wake = threading.Event()

    def run(self) -> None:
        global _next_round
        while True:
            self.wake.wait()
            self.wake.clear()
            # Wait for the round's turn: what is relayed until then rides along.
            delay = _next_round - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            _next_round = time.monotonic() + flush_interval
            try:
                # One round, not `flush_dirty`'s loop: what is relayed during it waits for
                # the next turn. A reader flushing right now re-checks when it is done.
                if _flush_lock.acquire(blocking=False):
                    try:
                        _flush_round()
                    finally:
                        _flush_lock.release()
            except Exception:
                # The only flusher: if it died, handed-off deliveries would never be sent.
                log.exception("flusher: flushing failed")
            if _dirty:
                self.wake.set()


_flusher_thread: _Flusher | None = None
_flusher_lock = threading.Lock()
# Whether a failure to start the flusher was logged already.
_flusher_failed = False


def _flusher() -> _Flusher | None:
    """The flusher thread, started on first use; None while no thread can be started (a pids
    limit), and then tried again next time."""
    global _flusher_thread, _flusher_failed
    if _flusher_thread is None:
        with _flusher_lock:
            if _flusher_thread is None:
                flusher = _Flusher()
                try:
                    flusher.start()
                except RuntimeError as problem:
                    if not _flusher_failed:  # it is tried again on every hand-off
                        _flusher_failed = True
                        log.warning("no flusher thread (%s): flushing inline", problem)
                    return None
                _flusher_thread = flusher
    return _flusher_thread


def mark_dirty(target: Flushable) -> None:
    """Have `target` flushed: at the end of this thread's batch, or now when none is open."""
    _dirty.add(target)
    if getattr(_local, "open", False):
        _local.marked = True
    else:
        flush_dirty()


def mark_all_dirty(targets: Iterable[Flushable]) -> None:
    """Mark many targets at C speed; only for callers inside a batch (the hub's fan-out)."""
    _dirty.update(targets)
    _local.marked = True


def flush_dirty() -> None:
    """Flush every dirty target now, unless another thread is doing it right now (which
    re-checks when it is done, see `_Flusher.run`)."""
    while _dirty:
        if not _flush_lock.acquire(blocking=False):
            return
        try:
            _flush_round()
        finally:
            _flush_lock.release()


def _flush_round() -> None:
    """One round (flush lock held): what is dirty now. Targets marked meanwhile are the next
    round's, so their data rides along with everything queued until then.

    Taken as a snapshot and removed with `difference_update`, both at C speed: a target
    marked again in between is removed too, but it is flushed right after, which sends what
    was queued before its mark. Targets whose class has a `flush_many` are flushed by it, in
    one call per class (the outbox's sends every recipient's data at C speed)."""
    targets = list(_dirty)
    _dirty.difference_update(targets)
    kinds = set(map(type, targets))
    for kind in kinds:
        group = targets if len(kinds) == 1 else [t for t in targets if type(t) is kind]
        flush_many = getattr(kind, "flush_many", None)
        if flush_many is not None:
            flush_many(group)
        else:
            for target in group:
                target.flush()
