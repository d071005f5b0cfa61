"""The storage interface of threadchat: what the hub may rely on, whatever the backend.

The interface is deliberately narrow (append, history queries, rooms, accounts, retention) so
that a second backend (PostgreSQL, shared by several server nodes) can implement it without
knowing anything about SQLite. Every method is safe to call from any thread.

Times are integers: milliseconds since the Unix epoch, UTC. Message ids are integers assigned by
the store, unique and increasing in commit order, never reused (not even after a purge).
Rooms and accounts are keyed by `threadchat.core.names.fold` (IRC's ascii casemapping).
History positions and queries (`Ref`, `HistoryQuery`) and `StoreError` are the core's
(`core/history.py`, `core/errors.py`): protocols use them without knowing the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from threadchat.core.errors import StoreError
from threadchat.core.history import HistoryQuery
from threadchat.core.search import SearchQuery


class AccountExistsError(StoreError):
    """create_account() was given a name that is already registered (case-insensitively)."""


class NewMessage(NamedTuple):
    """A message to store (see `Store.append`); a tuple because one is built per message."""

    sender: str
    text: str
    room: str | None = None
    target: str | None = None
    sender_account: str | None = None
    target_account: str | None = None
    action: bool = False
    # The id of the room message this one replies to.
    reply_to: int | None = None


# What a write gives back per message: (id, ts in milliseconds since the epoch).
Stamp = tuple[int, int]


class PartlyStored(StoreError):
    """Some messages of one `append_many` were stored and others not (a message the database
    cannot take, such as text that is not valid Unicode): `outcomes` holds, in order, each
    message's stamp or the StoreError saying why that one was not stored."""

    def __init__(self, outcomes: list[Stamp | StoreError]) -> None:
        failed = [o for o in outcomes if isinstance(o, StoreError)]
        super().__init__(f"{len(failed)} of {len(outcomes)} messages not stored: {failed[0]}")
        self.outcomes = outcomes


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as committed. Exactly one of `room` and `target` is set.

    For a room message `room` is the room name as the sender spelled it. For a private message
    `target` is the recipient's nick and `target_account` its account (None if not logged in).
    """

    id: int
    ts: int
    sender: str
    sender_account: str | None
    text: str
    action: bool
    room: str | None = None
    target: str | None = None
    target_account: str | None = None
    # The message it replies to: its id, and (when it is still there) its sender and text.
    reply_to: int | None = None
    reply_sender: str = ""
    reply_text: str = ""
    # Edited: `text` is the latest. Deleted: a tombstone, `text` is empty.
    edited: bool = False
    deleted: bool = False
    # (reaction, (nick, ...)) in the order each reaction was first given.
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def is_private(self) -> bool:
        return self.room is None


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """The persistent state of a room. `name` keeps its spelling; it is keyed by fold(name).

    `modes` holds the room's flags as single letters (of "tnmi"; older records may also
    hold k and l), an encoding `services/moderation.py` translates; `key` and `limit` are
    the room's key and member limit. `operators` and `voiced` are account names; `bans` are
    masks or accounts, stored verbatim (matching them is the hub's business).
    """

    name: str
    created_ts: int
    topic: str = ""
    topic_by: str | None = None
    topic_ts: int | None = None
    owner: str | None = None
    operators: frozenset[str] = field(default_factory=frozenset)
    voiced: frozenset[str] = field(default_factory=frozenset)
    modes: frozenset[str] = field(default_factory=frozenset)
    key: str | None = None
    limit: int | None = None
    bans: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class AlwaysOnRecord:
    """An always-on account: its nick, when its last connection went (ms; None while one
    is connected) and the newest message id relayed then, and the rooms it is in (names as
    spelled)."""

    account: str
    nick: str
    last_seen_ts: int | None
    last_seen_id: int | None
    rooms: tuple[str, ...]


@runtime_checkable
class Store(Protocol):
    """What the hub needs from persistent storage. All methods are thread-safe.

    Write methods return only once the change is durably committed (see the backend for the
    exact durability guarantee) and raise StoreError if it was not.
    """

    # --- messages -------------------------------------------------------------------------
    def append(
        self,
        *,
        sender: str,
        text: str,
        room: str | None = None,
        target: str | None = None,
        sender_account: str | None = None,
        target_account: str | None = None,
        action: bool = False,
        timeout: float | None = None,
    ) -> StoredMessage:
        """Commit one room message (`room` given) or private message (`target` given).

        Returns the stored message with its id and ts. Raises StoreError if the commit failed
        or was not confirmed within `timeout` seconds (None: the backend's default).
        """
        ...

    # Called in the writer thread after each group commit, once its Futures are settled.
    after_commit: Callable[[], None] | None
    # Seconds between the starts of two group commits of messages at least (0, the default:
    # commit as soon as a write is queued). Writes queued meanwhile share the next commit, and
    # so its `after_commit` relay round: see `--relay-interval` in docs/architecture.md. A
    # commit that starts with another kind of write is not held back.
    commit_interval: float

    def append_many(
        self,
        messages: Sequence[NewMessage],
        then: Callable[[Future[list[Stamp]]], None] | None = None,
    ) -> Future[list[Stamp]]:
        """Queue the writes of `messages` without waiting: the Future completes with their
        (id, ts) in order once all are committed (in one transaction), or fails with
        StoreError: PartlyStored when only some could not be stored (the others are
        committed; it says which), any other StoreError when none was stored. `then`, if
        given, is called with it in the writer thread as it does (before `after_commit`).
        Raises ValueError for a message with neither or both of room and target, StoreError
        when the store is closed or too far behind. Lets a reader thread put a burst of lines
        into one group commit."""
        ...

    def room_history(self, room: str, query: HistoryQuery) -> list[StoredMessage]:
        """Messages of `room` (case-insensitive) selected by `query`, oldest first."""
        ...

    def private_history(
        self, asker_account: str, peer_account: str, query: HistoryQuery
    ) -> list[StoredMessage]:
        """Private messages between the two accounts (either direction), oldest first.

        Only the two members of a pair can read it: the pair is always {asker, peer}, so the
        caller must pass the account of whoever asks. Messages where either side had no
        account are never returned.
        """
        ...

    def conversation_targets(
        self, rooms: Sequence[str], account: str | None, after_ts: int, before_ts: int, limit: int
    ) -> list[tuple[str, bool, int]]:
        """The conversations whose latest message is strictly between the two times (ms):
        of `rooms`, and the private conversations of `account` (None: none), as (room name
        or the peer's account, whether it is a room, the time of that latest message),
        oldest first, at most `limit`."""
        ...

    def message(self, msgid: int) -> StoredMessage | None:
        """The message `msgid` (a tombstone too, marked deleted), or None."""
        ...

    def delete_message(self, msgid: int) -> bool:
        """Make the message a tombstone (text emptied, marked deleted), waiting for the
        commit; False when there is no such message."""
        ...

    def edit_message(self, msgid: int, text: str) -> bool:
        """Replace the message's text and mark it edited, waiting for the commit; False when
        there is no such (undeleted) message."""
        ...

    def set_reaction(
        self, msgid: int, reactor_key: str, reactor: str, reaction: str, on: bool
    ) -> bool:
        """Add (`on`) or remove one person's reaction to a message, waiting for the commit;
        whether anything changed."""
        ...

    def search(
        self, query: SearchQuery, rooms: Sequence[str], account: str | None
    ) -> list[StoredMessage]:
        """Messages matching `query` (its FTS5 expression and filters), newest first, only
        of `rooms` and of the private conversations of `account` (None: no private ones):
        the caller decides what the asker may read, the store never widens it."""
        ...

    def set_read_marker(self, account: str, target: str, read_ts: int) -> int:
        """Move the account's read marker of `target` (a room, or "@" + a peer's account)
        forward to `read_ts` (ms); a marker never moves back. Returns the marker's time."""
        ...

    def read_markers(self, account: str) -> dict[str, int]:
        """The account's read markers: folded target -> time (ms)."""
        ...

    def save_always_on(self, account: str, nick: str, rooms: Sequence[str]) -> Future[None]:
        """Make the account always-on with its nick and rooms (replacing what was kept)."""
        ...

    # The always-on writes are queued like `delete_room_messages`: the Future completes once
    # committed (the hub asks for them under its lock, so they must not wait).
    def always_on_room(self, account: str, room: str, *, joined: bool) -> Future[None]:
        """An always-on account joined (or left) `room`."""
        ...

    def always_on_seen(
        self, account: str, last_seen_ts: int | None, last_seen_id: int | None
    ) -> Future[None]:
        """When the always-on account's last connection went, and the newest message id
        relayed then (None: one is connected)."""
        ...

    def delete_always_on(self, account: str) -> Future[None]:
        """The account is always-on no longer."""
        ...

    def load_always_on(self) -> list[AlwaysOnRecord]:
        """Every always-on account."""
        ...

    def purge_older_than(self, cutoff_ts: int) -> int:
        """Delete messages with ts < cutoff_ts; return how many were deleted."""
        ...

    def delete_room_messages(self, room: str) -> Future[int]:
        """Queue the deletion of every message of `room` (case-insensitive) without waiting:
        it runs in write order, after every write queued before it, and the Future completes
        with how many were deleted once that is committed (or fails with StoreError). Raises
        StoreError when the store is closed or too far behind."""
        ...

    def rename_room_messages(self, old: str, new: str) -> Future[int]:
        """Queue moving every message of the room `old` to the room `new` (a renamed room
        keeps its history), in write order as `delete_room_messages`; the Future completes
        with how many moved. Raises StoreError when the store is closed or too far behind."""
        ...

    def purge_rooms_not_kept(self, keep: Iterable[str] = ()) -> int:
        """Delete the messages of every room that is not stored as a room (see `save_room`)
        and whose folded name is not in `keep`; return how many were deleted."""
        ...

    # --- rooms ----------------------------------------------------------------------------
    def load_rooms(self) -> list[RoomRecord]:
        """Every persisted room."""
        ...

    def save_room(self, room: RoomRecord) -> None:
        """Insert or replace the room keyed by fold(room.name)."""
        ...

    def delete_room(self, name: str) -> bool:
        """Forget a room; True if it existed."""
        ...

    # --- accounts -------------------------------------------------------------------------
    def create_account(self, name: str, password: str) -> None:
        """Register an account; AccountExistsError if the name is taken (case-insensitively)."""
        ...

    def verify_password(self, name: str, password: str) -> bool:
        """True iff the account exists and the password matches."""
        ...

    def change_password(self, name: str, old_password: str, new_password: str) -> bool:
        """Replace the password if `old_password` is right; False otherwise."""
        ...

    def account_exists(self, name: str) -> bool: ...

    # --- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Commit pending writes, stop background threads, release files. Idempotent."""
        ...
