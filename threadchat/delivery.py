"""Delivery batches: enqueue to many recipients first, then write each recipient once.

A reader thread wraps everything it does for one `recv()` in `batch()`. Outboxes that receive
data meanwhile are only scheduled; when the outermost batch ends (after the hub lock has been
released) each scheduled outbox is flushed once. A burst of N lines therefore costs one write
per recipient instead of N, and no socket I/O ever happens under the hub lock.
"""

import threading
from typing import Protocol


class Flushable(Protocol):
    def flush(self) -> None: ...


_local = threading.local()


class batch:
    """Defer flushes scheduled on this thread until the outermost batch exits (re-entrant)."""

    __slots__ = ("_outer",)

    def __enter__(self) -> None:
        self._outer = getattr(_local, "pending", None) is None
        if self._outer:
            _local.pending = {}

    def __exit__(self, *exc: object) -> None:
        if not self._outer:
            return
        pending: dict[int, Flushable] = _local.pending
        _local.pending = None
        for target in pending.values():
            target.flush()


def schedule_flush(target: Flushable) -> None:
    """Flush `target` at the end of this thread's batch, or now when no batch is open."""
    pending: dict[int, Flushable] | None = getattr(_local, "pending", None)
    if pending is None:
        target.flush()
    else:
        pending[id(target)] = target
