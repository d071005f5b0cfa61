"""The services the hub and the protocols use, as interfaces the core defines itself.

The hub runs without any of them (memory only); the wiring plugs in implementations from
`threadchat.services` when there is a store. Neither the core nor any protocol or transport
imports those: they know only these Protocols, reached through the hub (`hub.history`,
`hub.accounts`, `hub.moderation`, `hub.pipeline`), so the dependency points down, from
services to core, and protocols and services stay independent of each other.

The hooks the hub calls may run with the hub lock held, so none of those may block on I/O:
each only queues work (history), checks memory (accounts, moderation), or is called after
the lock is released where the docstring says so. The methods protocols call (logins, history
pages, moderation requests) run in a reader thread without the hub lock.
"""

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from threadchat.core import delivery, events
from threadchat.core.events import Event

if TYPE_CHECKING:  # the hub's own model; ports.py is imported by hub.py itself
    from threadchat.core.history import HistoryQuery, Replay
    from threadchat.core.hub import Hub, ModeChange, Room, RoomRelay, User
    from threadchat.core.search import SearchQuery

# Called with a stored message's id and time ({"id": ..., "ts": ...}) to relay it.
Relay = Callable[[dict[str, Any]], None]


class History(Protocol):
    """Stores each message before it is relayed, and reads it back
    (see services.history.MessageLog)."""

    def submit(
        self,
        user: "User",
        text: str,
        kind: str,
        relay: Relay,
        *,
        room: str | None = None,
        target: "User | None" = None,
        reply_to: int | None = None,
    ) -> None:
        """Commit the message, then call `relay` with its stamp (maybe later, pipelined).
        `reply_to`: the id of the message it answers, of the same room or private
        conversation (checked by the hub)."""
        ...

    # The four below are called without the hub lock, by the reader thread of the user who
    # asked: they wait for the store (a lookup reads; the others wait for their commit).

    def lookup(self, msgid: int) -> "events.RoomMessage | events.PrivateMessage | None":
        """The stored message `msgid` (of a room, or private: then with both accounts) as
        an event marked history (a deleted one with `extra.deleted`), or None (no such
        message). Raises StoreError."""
        ...

    def delete(self, msgid: int) -> bool:
        """Make the message a tombstone: no text, marked deleted; False when there was no
        such message left to delete. Raises StoreError."""
        ...

    def edit(self, msgid: int, text: str) -> bool:
        """Replace the message's text and mark it edited; False when there is no such
        (undeleted) message. Raises StoreError."""
        ...

    def react(self, msgid: int, identity: str, nick: str, reaction: str, on: bool) -> bool:
        """Store (`on`) or remove the reaction of the person `identity` (shown as `nick`);
        whether that changed anything. Raises StoreError."""
        ...

    def room_created(self, room: str) -> None:
        """A room was created; it starts with no history (hub lock held: only queues)."""
        ...

    def room_ended(self, room: str) -> None:
        """A room that is not kept ended; its history ends with it (hub lock held)."""
        ...

    def room_renamed(self, old: str, new: str) -> None:
        """The room `old` is now called `new`; its history goes with it (hub lock held:
        only queues, and reads of `new` wait for it)."""
        ...

    def replay(self, room: str) -> "Replay | None":
        """The room's last messages for someone who just joined it, as many as the server
        replays on join; None when it replays none (or they cannot be read: logged). Use
        `Hub.replay`, which also decides to whom."""
        ...

    def read(
        self,
        query: "HistoryQuery",
        *,
        room: str | None = None,
        asker_account: str | None = None,
        peer: str | None = None,
    ) -> list[Event]:
        """Messages of `room`, or of the private conversation between the accounts
        `asker_account` and `peer`, selected by `query`, oldest first, as events marked
        `history`. Access checks are the caller's (`Hub.read_history`); raises StoreError."""
        ...

    def targets(
        self, rooms: Sequence[str], account: str | None, after_ms: int, before_ms: int, limit: int
    ) -> list[tuple[str, bool, int]]:
        """The conversations whose latest message is strictly between the two times: of
        `rooms`, and the private ones of `account`, as (room name or peer account, is a
        room, latest time in ms), oldest first, at most `limit`. Raises StoreError."""
        ...

    def search(
        self, query: "SearchQuery", rooms: Sequence[str], account: str | None
    ) -> list[Event]:
        """Messages matching `query` of `rooms` and of `account`'s private conversations,
        newest first, marked `history`. Access is the caller's (`Hub.search`); called
        without the hub lock; raises StoreError."""
        ...

    def set_read_marker(self, account: str, target: str, read_ms: int) -> int:
        """Move the account's read marker of `target` (a room, or "@" + a peer account)
        forward to `read_ms`; returns the marker after that. Called without the hub lock
        (it waits for the disk); raises StoreError."""
        ...

    def read_markers(self, account: str) -> dict[str, int]:
        """The account's read markers: folded target -> ms. Raises StoreError."""
        ...


class Accounts(Protocol):
    """Registered names, logins and passwords (see services.accounts.AccountService).

    Refusals are `AuthError` (core/errors.py), which never says whether an account exists."""

    @property
    def grace_period(self) -> float:
        """Seconds a guest may keep a registered name in grace mode before being renamed."""
        ...

    def check_name(self, nick: str, account: str | None) -> None:
        """May someone logged in to `account` (None: a guest) take `nick`? Raises HubError."""
        ...

    def is_registered(self, name: str) -> bool: ...

    def in_grace(self, nick: str) -> bool:
        """Is a guest holding the registered `nick` for now (grace mode), to be renamed?"""
        ...

    def authenticate(self, name: str, password: str, host: str) -> str:
        """Check a login from `host`; the account name, or AuthError (rate-limited)."""
        ...

    def register(self, name: str, password: str) -> None:
        """Create the account `name`; raises AuthError."""
        ...

    def change_password(self, account: str, old: str, new: str, host: str) -> None:
        """Replace the password when `old` is right; raises AuthError."""
        ...

    def logged_in(self, hub: "Hub", user: "User", account: str) -> None:
        """Mark `user` as logged in to `account` (takes the hub lock itself)."""
        ...

    def tick(self, hub: "Hub") -> None:
        """Rename guests whose grace period ran out (about once a second)."""
        ...


class Moderation(Protocol):
    """Keeps rooms of account owners, grants and mutes (services.moderation.RoomKeeper)."""

    def created(self, user: "User", room: "Room") -> None:
        """`user` created `room` (hub lock held): decide whether it is kept, and by whom."""
        ...

    def joining(self, user: "User", room: "Room") -> None:
        """`user` is joining `room` (hub lock held): apply the grants their account holds."""
        ...

    def is_muted(self, user: "User", room: "Room") -> bool: ...

    def mode_applied(self, room: "Room", change: "ModeChange") -> None:
        """A mode change was applied (hub lock held): keep grants in step."""
        ...

    def save(self, room: "Room") -> None:
        """Store the room's state if it is kept (called without the hub lock)."""
        ...

    def renamed(self, old: str, room: "Room", *, stored: bool = True) -> None:
        """`room` was called `old` (hub lock held): its grants follow it, and (`stored`) the
        stored record under the old name goes at the next `save`; another node's rename
        (`stored=False`) was stored by that node."""
        ...

    def logged_in(self, user: "User") -> None:
        """After a login: the account's grants in the rooms the user is already in."""
        ...

    def moderate(self, actor: "User", room: str, action: str, target: str, reason: str) -> None:
        """op, deop, kick, ban, unban, mute or unmute `target` in `room`; raises HubError."""
        ...

    def topic_lock(self, actor: "User", room: str, locked: bool) -> None:
        """Only operators may set the topic (`locked`), or anyone in the room."""
        ...


class AlwaysOn(Protocol):
    """Keeps always-on accounts and their rooms across restarts (see
    services.presence.AlwaysOnKeeper). Every method but `load` only queues a write, so the
    hub may call them with its lock held."""

    def is_always_on(self, account: str) -> bool:
        """Whether the account asked to be always-on (memory only)."""
        ...

    def enable(self, account: str, nick: str, rooms: Sequence[str]) -> None: ...

    def disable(self, account: str) -> None: ...

    def joined(self, account: str, room: str) -> None: ...

    def left(self, account: str, room: str) -> None: ...

    def seen(self, account: str, gone_ms: int | None, gone_id: int | None) -> None:
        """The account's last connection went at `gone_ms`, when the newest message
        relayed was `gone_id` (None: one is connected)."""
        ...

    def load(self) -> "list[Any]":
        """The kept accounts as `store.base.AlwaysOnRecord`s (account, nick, last_seen_ts,
        last_seen_id, rooms), for the wiring to restore at start. Raises StoreError."""
        ...


class Pipeline(Protocol):
    """The pipelined read, the same for every transport (services.history's functions).

    A reader handles all requests of one read inside `reading`: their messages share one
    store commit and are relayed after it while the reader goes on. Anything that must not
    overtake them calls `complete` first. All state is the calling thread's own."""

    def reading(self, flush: delivery.batch | None = None) -> AbstractContextManager[None]:
        """The scope of one read: what it sends is flushed once at its end (`flush`, a
        delivery batch of the caller's, else a fresh one) and its messages are pipelined."""
        ...

    def complete(self) -> None:
        """Relay this thread's queued messages and wait until that is done, in order."""
        ...

    def acknowledged(
        self, ref: object, reply: Callable[[Event], None]
    ) -> AbstractContextManager[None]:
        """Answer the request with `ref` whose message is sent within this block once the
        message's fate is known: `ok` when it is stored, else an error with the ref."""
        ...

    def then(self, callback: Callable[[], None]) -> None:
        """Run `callback` after this thread's queued messages are relayed (now if none)."""
        ...

    def defer(self, relay: "RoomRelay") -> bool:
        """Without history: queue a room message to be relayed with the rest of this read;
        False when the thread is not reading (the hub then relays it at once)."""
        ...


class _Acknowledging:
    __slots__ = ("ref", "reply")

    def __init__(self, ref: object, reply: Callable[[Event], None]) -> None:
        self.ref = ref
        self.reply = reply

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.reply(events.Ok(ref=self.ref))


class Unpipelined:
    """The pipeline of a hub the wiring gave none (memory-only hubs in tools and tests):
    every message is relayed at once, so each read only batches its sends."""

    def reading(self, flush: delivery.batch | None = None) -> AbstractContextManager[None]:
        return flush if flush is not None else delivery.batch()

    def complete(self) -> None:
        return None

    def acknowledged(
        self, ref: object, reply: Callable[[Event], None]
    ) -> AbstractContextManager[None]:
        return contextlib.nullcontext() if ref is None else _Acknowledging(ref, reply)

    def then(self, callback: Callable[[], None]) -> None:
        callback()

    def defer(self, relay: "RoomRelay") -> bool:
        return False


UNPIPELINED: Pipeline = Unpipelined()


class Bus(Protocol):
    """The link between the nodes of one chat (services.cluster.RedisBus): what the hub
    sends the other nodes, and who owns which nick. The hub decides what a remote event
    is (plain data, see `Hub.publish_*` and `Hub.apply_remote`); the bus only carries it,
    in order per room, and calls `Hub.apply_remote` for what other nodes sent.

    `publish` and `release_nick` only queue (the hub lock may be held); `claim_nick` asks
    the bus's store and is called without the hub lock."""

    node: str

    def claim_nick(self, nick: str) -> bool:
        """Take `nick` (case-insensitive) for this node; False when another user has it."""
        ...

    def release_nick(self, nick: str) -> None:
        """Give `nick` up (queued)."""
        ...

    def publish(self, kind: str, shard: str, data: dict[str, Any]) -> None:
        """Queue an event for every other node, ordered with the others of `shard` (a folded
        room name, or a folded nick for events of a user)."""
        ...

    def catch_up(self, shard: str) -> None:
        """Wait (briefly, without the hub lock) until this node has applied every event of
        `shard` that other nodes published before now, and, when `Hub.wants_room_state`,
        take the room's state as the other nodes keep it: a join then sees the room as it
        is (topic, modes, bans, statuses, members)."""
        ...
