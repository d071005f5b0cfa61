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
not flush itself: it hands the round to the flusher thread (`handed_off`). Its rounds are
spaced by the store (`Store.commit_interval`, `--relay-interval`): what several commits would
have sent in several rounds goes in one, one `send` per recipient.

A reader's batch flushes at its end only when the thread marked something itself (a reply;
with history off, its read's run of messages). With history on a reader's messages are
relayed by the store writer, and a reader that flushed whatever was dirty at the end of every
read would take the relay's rounds off the flusher into the reader threads. A flush asked
for outside a batch (`mark_dirty`, `flush_dirty`) is immediate: its caller may close the
connection right after (a close frame, a last error line).
"""

import logging
import threading
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
    re-checks the list after releasing the lock)."""
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
    one call per class (the outbox's is one loop without a Python call per outbox)."""
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
