"""Always-on accounts kept across restarts: the hub's `core.ports.AlwaysOn` on the store.

The hub calls these under its lock, so each only queues its write on the store's writer
(in write order, after whatever was queued before) and logs a failure; `load` reads what
was kept, for the wiring to put the accounts back in their rooms at start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from threadchat.core import names
from threadchat.core.errors import StoreError
from threadchat.store.base import AlwaysOnRecord, Store

log = logging.getLogger(__name__)


class AlwaysOnKeeper:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        # Folded names of the always-on accounts (read without the store, under the hub lock).
        self._accounts: set[str] = set()

    def load(self) -> list[AlwaysOnRecord]:
        records = self.store.load_always_on()
        with self._lock:
            self._accounts = {names.fold(record.account) for record in records}
        return records

    def is_always_on(self, account: str) -> bool:
        with self._lock:
            return names.fold(account) in self._accounts

    def enable(self, account: str, nick: str, rooms: Sequence[str]) -> None:
        with self._lock:
            self._accounts.add(names.fold(account))
        self._queue("always-on kept", lambda: self.store.save_always_on(account, nick, rooms))

    def disable(self, account: str) -> None:
        with self._lock:
            self._accounts.discard(names.fold(account))
        self._queue("always-on ended", lambda: self.store.delete_always_on(account))

    def joined(self, account: str, room: str) -> None:
        self._queue("always-on join", lambda: self.store.always_on_room(account, room, joined=True))

    def left(self, account: str, room: str) -> None:
        self._queue(
            "always-on leave", lambda: self.store.always_on_room(account, room, joined=False)
        )

    def seen(self, account: str, gone_ms: int | None, gone_id: int | None) -> None:
        self._queue(
            "always-on last seen", lambda: self.store.always_on_seen(account, gone_ms, gone_id)
        )

    def _queue(self, what: str, write: Callable[[], Future[None]]) -> None:
        try:
            future = write()
        except StoreError as problem:
            log.error("%s not stored: %s", what, problem)
            return
        future.add_done_callback(lambda done: _log_failure(what, done))


def _log_failure(what: str, done: Future[None]) -> None:
    problem = done.exception()
    if problem is not None:
        log.error("%s not stored: %s", what, problem)
