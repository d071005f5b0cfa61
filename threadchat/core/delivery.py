"""Delivery: enqueue to many recipients first, then write each recipient once.

Outboxes that receive data are marked dirty in one shared list. Flushing is combined across
sender threads: whichever thread wins a non-blocking try of the flush lock sends every dirty
outbox with one `send` each, including data other senders queued meanwhile; a thread that
loses the try simply goes on, since the winner re-checks the list after releasing the lock.
Under load, many messages from many senders thus reach each recipient in one write.

A reader thread wraps everything it does for one `recv()` in `batch()`, so flushing happens
once at the end of the batch, after the hub lock has been released: no socket I/O ever
happens under the hub lock, and a burst of N lines costs one write per recipient, not N.
"""

import logging
import threading
from collections.abc import Iterable
from typing import Protocol

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> None: ...


_local = threading.local()
# Targets waiting for a flush. A set, so a target marked many times is flushed once; never
# replaced, so set.add and set.pop (atomic under the GIL) need no lock of ours.
_dirty: set[Flushable] = set()
_flush_lock = threading.Lock()


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
        while True:
            self.wake.wait()
            self.wake.clear()
            try:
                flush_dirty()
            except Exception:
                # The only flusher: if it died, handed-off deliveries would never be sent.
                log.exception("flusher: flushing failed")


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
    if not getattr(_local, "open", False):
        flush_dirty()


def mark_all_dirty(targets: Iterable[Flushable]) -> None:
    """Mark many targets at C speed; only for callers inside a batch (the hub's fan-out)."""
    _dirty.update(targets)


def flush_dirty() -> None:
    """Flush every dirty target, unless another thread is doing it right now."""
    while _dirty:
        if not _flush_lock.acquire(blocking=False):
            return
        try:
            # One round: what is dirty now. Targets marked meanwhile are the next round's,
            # so their data rides along with everything queued until then.
            for _ in range(len(_dirty)):
                try:
                    target = _dirty.pop()
                except KeyError:
                    break
                target.flush()
        finally:
            _flush_lock.release()
