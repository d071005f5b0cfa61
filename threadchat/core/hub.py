"""The hub: users, rooms and routing, shared by every protocol and transport.

Threads: any number of transport threads call the hub at once. One lock guards all hub state.
Events are *enqueued* to recipients while the lock is held (so every recipient sees a room's
events in one order, and a join is seen before the joiner's first message), but nothing under
the lock touches a socket: `Connection.send_bytes` only appends to a bounded outbox, and the
flush happens when the caller's delivery batch ends (see `delivery.py`).

The one place where events leave the hub is `Hub._deliver` (with `_fan_out_groups`, its fast
form for room messages). With several nodes (`ports.Bus`), what a local user does is also
published once per room for the other nodes, and what they publish comes back in through
`Hub.apply_remote`, which applies it to this node's copy of the state (the remote users are
`User`s with no connection here, `User.node` naming their node) and hands it to the same
fan-out, so it is encoded once per codec for the local members like any local event.

A person (`User`) is separate from their connections: a user holds one or more, and every
event the hub delivers to a user reaches each of them. Only what a connection sends itself
is kept from it (its own room message); the person's other connections get it too.
"""

import dataclasses
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, compress, islice, repeat
from operator import attrgetter, ne
from typing import Any, Protocol

from threadchat.core import delivery, events, live, metadata, names, ports
from threadchat.core import history as history_types
from threadchat.core import search as search_types
from threadchat.core.errors import HeldElsewhere, HubError, StoreError
from threadchat.core.events import Event
from threadchat.core.modes import (
    DEFAULT_ROOM_FLAGS,
    HIDDEN_ROOM_FLAGS,
    SELF_SET_USER_FLAGS,
    MemberStatus,
    ModeChange,
    RoomFlag,
    RoomList,
    RoomSetting,
    UserFlag,
    member_status,
)

log = logging.getLogger(__name__)

# Called with a message event once it has been relayed (see Hub.say).
Echo = Callable[[Event], None]

DEFAULT_ROOM = "lobby"
# Conversations an always-on person's catch-up looks at, at most.
MISSED_CONVERSATIONS = 500
# The away message of an always-on person with no connection left (see Hub.detach).
ALWAYS_ON_AWAY = "always-on: no device connected"
# How many nicks one user may watch (IRC MONITOR, see Hub.watch).
WATCH_MAX = 100
# How old the operator and invisible counts in LUSERS may be (see Hub.counts); the hub's own
# flag changes make them be counted anew at once.
OPER_COUNT_MAX_AGE = 1.0
# Departed nicknames remembered for WHOWAS (see Hub.whowas): enough for the recent past of a
# busy server, bounded so that a stream of quits cannot grow memory.
WHOWAS_MAX = 2048
# A guest's read markers kept at most (the oldest set goes first): a guest could otherwise
# grow memory by marking ever new nicks.
GUEST_MARKERS_MAX = 256
# Rooms renamed on other nodes whose old names are still found (`Hub._room_of_remote`).
RENAMES_REMEMBERED = 1024
# Checked for every message (Room.can_speak). Python 3.11 looks up an Enum member as a class
# attribute in about 90 ns, a module global in about 15 ns (measured with timeit).
_MODERATED = RoomFlag.MODERATED


class Connection(Protocol):
    """What the hub needs from the transport side of one user."""

    def codec_key(self) -> Hashable:
        """Recipients with equal keys get identical bytes for the same event."""
        ...

    def encode(self, event: Event) -> bytes | None:
        """The bytes for `event`, or None when this connection shows nothing for it."""
        ...

    def send_bytes(self, data: bytes) -> None:
        """Queue bytes for the peer; never blocks."""
        ...

    def direct_queue(self) -> "tuple[list[bytes], delivery.Flushable] | None":
        """(list to append bytes to, object to flush) when this connection's codec key is
        fixed, for the hub's fast fan-out; None to be served through send_bytes.
        A connection whose codec key changes later must call `Hub.codec_changed`."""
        ...


@dataclass(eq=False)
class User:
    """A person on the server: nick, identity, rooms, away, modes, and the connections they
    are on now (`Hub.register` makes the first, `Hub.attach` adds more, `Hub.detach` takes
    them off; the last one's detach is the person's quit). `connections` is replaced, never
    changed in place, under the hub lock, so the fan-out may read it without the lock."""

    nick: str
    connections: tuple[Connection, ...]
    username: str = ""
    realname: str = ""
    host: str = ""
    account: str | None = None
    away: str | None = None
    # Server-wide flags (server operator, invisible, wallops), whatever the protocol.
    flags: set[UserFlag] = field(default_factory=set)
    signon: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    rooms: dict[str, "Room"] = field(default_factory=dict)
    # The client builds its member lists from join, leave and quit lines (IRC does): it gets
    # them even in quiet rooms, and the full list on joining one (see Hub._audience).
    keeps_member_list: bool = False
    # Nicks this user watches (IRC MONITOR), folded -> as given; see `Hub.watch`.
    watching: dict[str, str] = field(default_factory=dict)
    # Whether they also want away, real name and account changes of the people they watch
    # when sharing no room with them (IRCv3 extended-monitor).
    watch_details: bool = False
    # Always-on (an account's choice, `Hub.set_always_on`): the person stays in their rooms
    # while no connection is left, shown away; `gone_ms` is when the last one went (ms),
    # where a returning connection's catch-up starts; None while one is connected.
    always_on: bool = False
    gone_ms: int | None = None
    # The newest message id relayed when the last connection went (`Hub.relayed_id`): the
    # catch-up is of the messages after it.
    gone_id: int = 0
    # Metadata the person set on themselves (core/metadata.py), and the keys whose changes
    # they want to hear of.
    metadata: dict[str, str] = field(default_factory=dict)
    metadata_subs: set[str] = field(default_factory=set)
    # The node this person is connected to when it is another one (several nodes, see
    # `Hub.apply_remote`): here they have no connection and nothing they do starts here.
    node: str | None = None
    # Their last private messages, sent or received (at least live.RECENT_PER_ROOM), by id:
    # (the message, its sender, its recipient). What replies, reactions, edits, deletions
    # and short references find without the store, as `Room.recent` for a room; only the
    # two people of a conversation hold its messages here.
    recent_private: "dict[int, PrivateEntry]" = field(default_factory=dict)
    # A guest's read markers (store key -> ms), kept in memory for as long as they are
    # connected (an account's are stored); None until the first (see `Hub.mark_read`).
    guest_markers: dict[str, int] | None = None
    # How a room's recent messages name their sender (`Room.recent`): weakly, so that a
    # person who has left is not kept in memory by what they said. Made once per person.
    as_sender: "weakref.ref[User]" = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.as_sender = weakref.ref(self)

    @property
    def key(self) -> str:
        return names.fold(self.nick)

    @property
    def mask(self) -> str:
        return f"{self.nick}!{self.username or self.nick}@{self.host or 'unknown'}"


@dataclass(eq=False)
class Room:
    name: str
    created: float = field(default_factory=time.time)
    topic: str = ""
    topic_by: str = ""
    topic_at: float = 0.0
    owner: str | None = None
    # Sets of folded nicknames.
    operators: set[str] = field(default_factory=set)
    voiced: set[str] = field(default_factory=set)
    invited: set[str] = field(default_factory=set)
    flags: set[RoomFlag] = field(default_factory=lambda: set(DEFAULT_ROOM_FLAGS))
    password: str | None = None
    limit: int | None = None
    bans: list[str] = field(default_factory=list)
    # Entries that a ban does not keep out; entries that may join while invite-only.
    ban_exceptions: list[str] = field(default_factory=list)
    invite_exceptions: list[str] = field(default_factory=list)
    members: dict[str, User] = field(default_factory=dict)
    # The members whose clients keep member lists (`User.keeps_member_list`), kept beside
    # `members`: what a quiet room announces arrivals to, without a scan of all its members
    # per arrival (a lobby of 10,000 filled up quadratically).
    keepers: dict[str, User] = field(default_factory=dict)
    # The members grouped for fast fan-out (see Hub._fan_out_groups); None when out of date.
    groups: "list[_CodecGroup] | None" = None
    # Kept (and stored) while empty: rooms created by a logged-in user (see moderation.py).
    persistent: bool = False
    # Metadata its operators set (core/metadata.py); held in memory only.
    metadata: dict[str, str] = field(default_factory=dict)
    # The name it had before its last rename (see `Hub.rename_room`), for clients that
    # keep a current room by name.
    renamed_from: str | None = None
    # The last messages (live.RECENT_PER_ROOM), by id, with the person who sent them (weakly,
    # `User.as_sender`: None once they have left): what replies, reactions, edits, deletions
    # and short references find without the store.
    recent: "dict[int, tuple[events.RoomMessage, weakref.ref[User]]]" = field(default_factory=dict)

    @property
    def key(self) -> str:
        return names.fold(self.name)

    def is_banned(self, user: User) -> bool:
        if not any(entry_matches(ban, user) for ban in self.bans):
            return False
        return not any(entry_matches(entry, user) for entry in self.ban_exceptions)

    def entries(self, which: RoomList) -> list[str]:
        """The room's list of `which` (bans, ban exceptions or invite exceptions)."""
        if which is RoomList.BAN:
            return self.bans
        if which is RoomList.BAN_EXCEPTION:
            return self.ban_exceptions
        return self.invite_exceptions

    def hidden_from(self, user: User | None) -> bool:
        """A secret or private room is seen only by its members and server operators: room
        lists, member lists and user lookups of every protocol leave it out for the rest."""
        if not self.flags & HIDDEN_ROOM_FLAGS or user is None:
            return False
        return user.key not in self.members and UserFlag.SERVER_OPERATOR not in user.flags

    def can_speak(self, user: User) -> bool:
        if _MODERATED not in self.flags:
            return True
        return user.key in self.operators or user.key in self.voiced


class RoomRelay:
    """A room message waiting for its commit (see `history.pipelined`), relayed once stored:
    alone by calling it with the stored id and time, or in a run of queued messages by
    `relay_many` (`Hub.relay_room_run`). `origin` is the connection it came from, the one
    connection of the room that does not get it (left out: the sender's only one)."""

    __slots__ = (
        "echo",
        "extra",
        "hub",
        "kind",
        "origin",
        "relay_many",
        "room_name",
        "tags",
        "text",
        "user",
    )

    def __init__(
        self,
        hub: "Hub",
        user: User,
        room_name: str,
        text: str,
        kind: str,
        echo: Echo | None,
        origin: Connection | None = None,
        tags: events.ClientTags = (),
        extra: live.MessageExtra | None = None,
    ) -> None:
        self.hub = hub
        self.tags = tags
        self.extra = extra
        self.user = user
        self.origin = origin if origin is not None else _origin(user, None)
        self.room_name = room_name
        self.text = text
        self.kind = kind
        self.echo = echo
        # An echoed message goes alone: its echo must follow its own fan-out at once.
        self.relay_many = hub.relay_room_run if echo is None else None

    def __call__(self, stamp: dict[str, Any]) -> None:
        self.hub._relay_room(
            self.user,
            self.origin,
            self.room_name,
            self.text,
            self.kind,
            stamp,
            self.echo,
            self.tags,
            self.extra,
        )


class Hub:
    def __init__(self, server_name: str = "threadchat", *, quiet_room_size: int = 200) -> None:
        self.server_name = server_name
        # Rooms with more members than this do not announce joins, parts and quits (IRC's
        # "auditorium" idea): in a lobby of N people each arrival would cost N lines, so
        # N arrivals cost N^2, which is what made 15,000 connections crawl when measured.
        self.quiet_room_size = quiet_room_size
        self._lock = threading.Lock()
        self._opers = 0
        self._invisible = 0
        self._opers_counted_at = float("-inf")
        # The most users at once since start (LUSERS).
        self._max_users = 0
        # Who had a nickname before: newest last (see `whowas`).
        self._departed: deque[events.PastUser] = deque(maxlen=WHOWAS_MAX)
        self._users: dict[str, User] = {}
        self._rooms: dict[str, Room] = {}
        # (folded nick, room key) -> (monotonic time, state) of the last typing notice relayed.
        # A private conversation's key is (folded nick, "", the peer's folded nick).
        self._typing: dict[tuple[str, ...], tuple[float, str]] = {}
        # Folded nick -> the users watching it (User.watching), online or not.
        self._watchers: dict[str, set[User]] = {}
        # Services the server plugs in when it has a store; None keeps the hub memory-only.
        # history: commits each message before it is relayed. accounts: guards registered
        # names. moderation: keeps rooms of account owners, mutes, grants on join.
        self.history: ports.History | None = None
        self.accounts: ports.Accounts | None = None
        self.moderation: ports.Moderation | None = None
        # Without history: queues a room message with the others of the reader's current
        # read, to be relayed as one run at its end (`history.defer`); False when the thread
        # is not in a read. The server plugs it in; None relays each message at once.
        self.defer_relay: Callable[[RoomRelay], bool] | None = None
        # The pipelined read every transport reads within (see `use_pipeline`).
        self.pipeline: ports.Pipeline = ports.UNPIPELINED
        # --multiclient: a logged-in account may be on several connections at once (sign_on).
        self.multiclient = True
        # Keeps always-on accounts and their rooms across restarts; None: always-on is off.
        self.always_on: ports.AlwaysOn | None = None
        # --always-on-expiry in seconds: how long an always-on person stays with no connection.
        self.always_on_expiry = 30 * 86400.0
        # Always-on people with no connection now (what `expire_always_on` looks through).
        self._unconnected: set[User] = set()
        # The newest stored message id relayed so far (relays go in id order): what a
        # connection had been sent when it went, where an always-on catch-up starts.
        self.relayed_id = 0
        # The other nodes of the chat (services.cluster); None: this node is the whole chat.
        self.bus: ports.Bus | None = None
        # Rooms renamed by another node, folded old name -> folded new name: their events
        # still on the old name's stream find them (`_room_of_remote`). Bounded.
        self._renamed_rooms: dict[str, str] = {}

    # -- users -----------------------------------------------------------------------------

    def register(
        self, conn: Connection, nick: str, *, keeps_member_list: bool = False, **identity: str
    ) -> User:
        """Claim `nick` for a new person whose first connection is `conn`; raises
        HubError('invalid_name' | 'name_in_use').

        `keeps_member_list`: see `User.keeps_member_list`."""
        _check_nick(nick)
        for value in identity.values():
            check_text(value)
        if self.accounts is not None:
            self.accounts.check_name(nick, identity.get("account"))
        user = User(nick=nick, connections=(conn,), keeps_member_list=keeps_member_list, **identity)
        keeper = self.always_on
        if user.account is not None and keeper is not None and keeper.is_always_on(user.account):
            user.always_on = True
        bus = self.bus
        # A nick is unique across nodes: claimed in the bus's store first (outside the lock).
        if bus is not None and not bus.claim_nick(nick):
            raise HubError("name_in_use", f"the name {nick} is taken")
        with delivery.batch(), self._lock:
            if user.key in self._users:
                if bus is not None:
                    bus.release_nick(nick)
                raise HubError("name_in_use", f"the name {nick} is taken")
            if user.always_on and keeper is not None and user.account is not None:
                keeper.enable(user.account, user.nick, ())  # a new person: no rooms yet
            self._users[user.key] = user
            self._max_users = max(self._max_users, len(self._users))
            if user.key in self._watchers:
                self._tell_watchers(user, online=True)
            if bus is not None:
                bus.publish("user", node_shard(bus.node), self._user_record(user))
        log.info("%s registered", nick)
        return user

    def nick_available(self, nick: str, account: str | None = None) -> bool:
        """Whether `nick` is free, or (with `account`) held by that account's person, whom a
        new connection logged in to it would join (`sign_on`)."""
        with self._lock:
            held = self._users.get(names.fold(nick))
        return held is None or self._may_attach(held, account)

    def held_elsewhere(self, nick: str, account: str | None) -> str | None:
        """Why a connection logged in to `account` cannot have `nick`, when the account's
        person holds it on another node (None otherwise): that node's name, to connect to."""
        with self._lock:
            held = self._users.get(names.fold(nick))
            return None if held is None else _held_elsewhere(held, account)

    def _may_attach(self, person: User, account: str | None) -> bool:
        """The multiclient rule: a connection logged in to `account` joins the person of that
        account; a guest never shares a nick."""
        return (
            (self.multiclient or not person.connections)
            # A person of another node: its devices attach there (docs/architecture.md,
            # "Several nodes as one chat"); here the nick is taken.
            and person.node is None
            and account is not None
            and person.account is not None
            and names.fold(person.account) == names.fold(account)
        )

    def sign_on(
        self, conn: Connection, nick: str, *, keeps_member_list: bool = False, **identity: str
    ) -> "SignOn":
        """A new connection's registration, for every protocol: with `--multiclient`, a
        connection logged in to the account of the person holding `nick` is attached to that
        person (one account on several devices), and so is one returning to an always-on
        person with no connection left (even without `--multiclient`); anyone else
        registers a new person as with `register`. Raises HubError as `register`."""
        account = identity.get("account")
        with self._lock:
            held = self._users.get(names.fold(nick))
        if held is not None and self._may_attach(held, account):
            try:
                missed_since = self.attach(held, conn)
            except HubError:
                pass  # they left meanwhile: register anew
            else:
                return SignOn(held, True, missed_since)
        if held is not None:
            reason = _held_elsewhere(held, account)
            if reason is not None:
                raise HeldElsewhere(reason)
        user = self.register(conn, nick, keeps_member_list=keeps_member_list, **identity)
        return SignOn(user, False, None)

    def join_person(self, user: User, conn: Connection, account: str) -> "Move | None":
        """A connection of `user` just logged in to `account` (after registering, as a guest
        or another account): with `--multiclient`, and when a person of that account is here,
        the connection moves to that person, as if it had signed on to it (`sign_on`), and
        `user` loses it (their quit when it was their last). None when there is no such
        person (the caller logs `user` in as usual)."""
        folded = names.fold(account)
        with delivery.batch(), self._lock:
            people = [
                u
                for u in self._users.values()
                if u is not user and u.account is not None and names.fold(u.account) == folded
            ]
            # The one under the account's own name first, else any (one account, one person
            # by the rule of sign_on; more only if nick changes made them so).
            people.sort(key=lambda u: u.key != folded)
            if not people or not self._may_attach(people[0], account):
                return None
            person = people[0]
            rooms = [room.name for room in user.rooms.values()]
            remaining = tuple(c for c in user.connections if c is not conn)
            user.connections = remaining
            if remaining:
                self._regroup(user)
            else:
                self._remove_user(user, f"continued as {person.nick} on another device")
        missed_since = self.attach(person, conn)
        return Move(person=person, old_nick=user.nick, old_rooms=rooms, missed_since=missed_since)

    def arrivals(self, user: User) -> "list[Arrival]":
        """What a connection attached to `user` is shown of the rooms the person is in: for
        each, what a join shows (`arrival`), in the order they were joined."""
        with self._lock:
            rooms = [room.name for room in user.rooms.values()]
        shown = []
        for name in rooms:
            try:
                shown.append(self.arrival(user, name))
            except HubError:
                continue  # left meanwhile
        return shown

    def attach(self, user: User, conn: Connection) -> tuple[int, int] | None:
        """Add `conn` to a registered person: from now on it receives everything the person
        receives, and sees what their other connections send. Nobody else sees anything,
        unless the person is always-on and had no connection left: then they are back (no
        longer away), and when their last connection went is returned (ms, and the newest
        message id relayed then), from which the new connection catches up (`missed`).
        Who may attach is `sign_on`'s rule. Raises HubError('no_such_nick') when the person
        has left."""
        missed_since = None
        with delivery.batch(), self._lock:
            if self._users.get(user.key) is not user:
                raise HubError("no_such_nick", f"there is nobody called {user.nick}")
            if any(c is conn for c in user.connections):
                return None
            user.connections = (*user.connections, conn)
            self._regroup(user)
            if len(user.connections) == 1 and user.gone_ms is not None:
                missed_since, user.gone_ms = (user.gone_ms, user.gone_id), None
                self._unconnected.discard(user)
                if user.away == ALWAYS_ON_AWAY:
                    user.away = None
                    event = events.AwayChanged(nick=user.nick, away=None)
                    self._fan_out(event, self._told_of_changes(user))
                if self.always_on is not None and user.account is not None:
                    self.always_on.seen(user.account, None, None)
        log.info("%s: another connection (%d now)", user.nick, len(user.connections))
        return missed_since

    def detach(self, user: User, conn: Connection, reason: str) -> bool:
        """Take `conn` off its person (it closed). While the person has another connection
        nobody sees anything: they stay in their rooms. The last one's detach is their quit,
        as `unregister`. Returns whether the person left."""
        reason = names.sendable(reason)
        with delivery.batch(), self._lock:
            remaining = tuple(c for c in user.connections if c is not conn)
            if len(remaining) == len(user.connections):
                return False  # not attached (any more)
            user.connections = remaining
            if remaining:
                self._regroup(user)
                left = False
            elif user.always_on and self._users.get(user.key) is user:
                self._stay_always_on(user)
                left = False
            else:
                left = self._remove_user(user, reason)
        if left:
            log.info("%s quit (%s)", user.nick, reason)
        return left

    def _stay_always_on(self, user: User) -> None:
        """The last connection of an always-on person went: they stay in their rooms, away
        (hub lock held)."""
        self._regroup(user)
        user.gone_ms = time.time_ns() // 1_000_000
        user.gone_id = self.relayed_id
        self._unconnected.add(user)
        if self.always_on is not None and user.account is not None:
            self.always_on.seen(user.account, user.gone_ms, user.gone_id)
        if user.away is None:
            user.away = ALWAYS_ON_AWAY
            event = events.AwayChanged(nick=user.nick, away=ALWAYS_ON_AWAY)
            self._fan_out(event, self._told_of_changes(user))
        log.info("%s: no connection left; always-on, stays", user.nick)

    def set_always_on(self, user: User, on: bool) -> None:
        """Make the account stay in its rooms while no device is connected (`on`), or not;
        kept across restarts. Raises HubError always_on_off, not_logged_in."""
        keeper = self.always_on
        if keeper is None:
            raise HubError("always_on_off", "this server keeps no always-on accounts")
        if user.account is None:
            raise HubError("not_logged_in", "log in to stay always-on")
        with self._lock:
            user.always_on = on
            if on:
                keeper.enable(user.account, user.nick, [r.name for r in user.rooms.values()])
            else:
                keeper.disable(user.account)

    def restore_always_on(self, records: "Iterable[Any]", now_ms: int | None = None) -> int:
        """Put the always-on accounts kept by the last run back in their rooms, with no
        connection (at start, before any listener). Records (`store.base.AlwaysOnRecord`)
        past `always_on_expiry` end instead. With several nodes sharing the store, each
        account is restored by one node only, the one that claims its nick first (the
        others learn it from the bus). Returns how many were restored."""
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        keeper = self.always_on
        bus = self.bus
        claimed = []
        for record in records:
            gone = record.last_seen_ts if record.last_seen_ts is not None else now_ms
            if now_ms - gone > self.always_on_expiry * 1000:
                if keeper is not None:
                    keeper.disable(record.account)
                continue
            if names.nick_error(record.nick):
                continue
            # Claimed outside the lock, as `register` does: a Redis round trip each.
            if bus is not None and not bus.claim_nick(record.nick):
                continue
            claimed.append((record, gone))
        restored = 0
        with self._lock:
            for record, gone in claimed:
                if names.fold(record.nick) in self._users:
                    if bus is not None:
                        bus.release_nick(record.nick)
                    continue
                user = User(
                    nick=record.nick,
                    connections=(),
                    account=record.account,
                    away=ALWAYS_ON_AWAY,
                    always_on=True,
                    gone_ms=gone,
                    gone_id=record.last_seen_id or 0,
                    host="always-on",
                )
                self._users[user.key] = user
                self._unconnected.add(user)
                for name in record.rooms:
                    key = names.fold(name)
                    room = self._rooms.get(key)
                    if room is None:
                        room = self._rooms[key] = Room(name=name)
                    room.members[user.key] = user
                    if user.keeps_member_list:
                        room.keepers[user.key] = user
                    room.groups = None
                    user.rooms[key] = room
                if bus is not None:
                    bus.publish("user", node_shard(bus.node), self._user_record(user))
                restored += 1
        return restored

    def expire_always_on(self, now_ms: int | None = None) -> list[str]:
        """End always-on for those without a connection for longer than `always_on_expiry`:
        they quit. Called by the housekeeper; returns their nicks."""
        if not self._unconnected:
            return []  # the usual case, every second: no lock taken
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        limit = self.always_on_expiry * 1000
        ended = []
        with delivery.batch(), self._lock:
            for user in list(self._unconnected):
                if user.connections or user.gone_ms is None or now_ms - user.gone_ms <= limit:
                    continue
                user.always_on = False
                if self.always_on is not None and user.account is not None:
                    self.always_on.disable(user.account)
                self._remove_user(user, "always-on expired")
                ended.append(user.nick)
        return ended

    def missed(
        self, user: User, since: tuple[int, int], page: int = history_types.MAX_HISTORY_LIMIT
    ) -> Iterator[Event]:
        """What an always-on person missed while no connection was left (`since`, as
        `attach` returns it): the messages of their rooms and private conversations after
        the newest one relayed when their last connection went, oldest first per
        conversation, marked `history`, read page by page. Nothing without history; a
        conversation that cannot be read is logged and skipped."""
        if self.history is None:
            return
        since_ms, since_id = since
        now = time.time_ns() // 1_000_000 + 1
        try:
            # Conversations active since then (a second early: clocks step, ids do not).
            targets = self.history_targets(user, since_ms - 1000, now, MISSED_CONVERSATIONS)
        except HubError:
            return
        for target, is_room, _latest in targets:
            ref = history_types.Ref.msgid(since_id)
            while True:
                query = history_types.HistoryQuery.after(ref, page)
                scope = {"room": target} if is_room else {"peer": target}
                try:
                    _shown, found = self.read_history(user, query, **scope)
                except HubError as problem:
                    log.info("%s: catch-up of %s skipped: %s", user.nick, target, problem.message)
                    break
                yield from found
                # Send each page before reading the next: a long catch-up must not pile up
                # past the connection's send queue (--sendq) before its first write.
                delivery.flush_dirty()
                if len(found) < query.limit:
                    break
                ref = history_types.Ref.msgid(found[-1].id)

    def unregister(self, user: User, reason: str) -> None:
        """Remove `user`, with every connection, from every room and the server; the rooms'
        members see the quit.

        A quit cannot be refused, so a reason no protocol could carry is mended instead."""
        reason = names.sendable(reason)
        with delivery.batch(), self._lock:
            left = self._remove_user(user, reason)
            user.connections = ()
        if left:
            log.info("%s quit (%s)", user.nick, reason)

    def _remove_user(self, user: User, reason: str) -> bool:
        """Take the person off the server and out of their rooms, and tell the rooms'
        members; False when they had left already (hub lock held)."""
        if self._users.get(user.key) is not user:
            return False
        del self._users[user.key]
        self._unconnected.discard(user)
        self._remember(user, user.nick)
        if user.flags:
            self._opers_counted_at = float("-inf")
        peers = self._peers(user, announced_only=True)
        for room in list(user.rooms.values()):
            self._remove_member(room, user)
        self._fan_out(events.Quit(nick=user.nick, reason=reason, mask=user.mask), peers)
        if user.key in self._watchers:
            self._tell_watchers(user, online=False)
        self._unwatch(user, list(user.watching))
        if self.bus is not None and user.node is None:
            self.bus.publish("quit", node_shard(self.bus.node), {"nick": user.nick,
                                                                  "reason": reason})  # fmt: skip
            self.bus.release_nick(user.nick)
        return True

    def _remember(self, user: User, nick: str) -> None:
        """Keep who had `nick` for WHOWAS (hub lock held)."""
        self._departed.append(
            events.PastUser(
                nick=nick,
                username=user.username,
                host=user.host,
                realname=user.realname,
                account=user.account,
                left_at=time.time(),
            )
        )

    def whowas(self, mask: str, count: int = 0) -> list[events.PastUser]:
        """Who had a nickname matching `mask` (a nick, or a glob such as `*ck2`) and left it
        by quitting or changing nick, newest first; at most `count` of them when it is
        positive, every one remembered otherwise (the last `WHOWAS_MAX` departures)."""
        pattern = names.fold(mask)
        glob = any(c in pattern for c in "*?")
        found: list[events.PastUser] = []
        with self._lock:
            for past in reversed(self._departed):
                folded = names.fold(past.nick)
                if folded == pattern or (glob and names.glob_match(pattern, folded)):
                    found.append(past)
                    if 0 < count <= len(found):
                        break
        return found

    def _regroup(self, user: User) -> None:
        """`user`'s connections changed: their rooms' fan-out groups are out of date."""
        for room in user.rooms.values():
            room.groups = None

    def change_nick(self, user: User, new: str) -> None:
        _check_nick(new)
        if self.accounts is not None and names.fold(new) != user.key:
            self.accounts.check_name(new, user.account)
        bus = self.bus if names.fold(new) != user.key else None
        if bus is not None and not bus.claim_nick(new):
            raise HubError("name_in_use", f"the name {new} is taken")
        with delivery.batch(), self._lock:
            new_key = names.fold(new)
            holder = self._users.get(new_key)
            if holder is not None and holder is not user:
                if bus is not None:
                    bus.release_nick(new)
                raise HubError("name_in_use", f"the name {new} is taken")
            old = user.nick
            if old == new:
                return
            if self.bus is not None:
                self.bus.publish("nick", node_shard(self.bus.node), {"old": old, "new": new})
                if bus is not None:
                    self.bus.release_nick(old)
            self._rename(user, new)

    def _rename(self, user: User, new: str) -> None:
        """Give `user` the nick `new` and tell them and their peers (lock held, checked)."""
        old_key, new_key = user.key, names.fold(new)
        old = user.nick
        # A change of case only is no change of presence.
        renamed = old_key != new_key
        del self._users[old_key]
        if renamed and old_key in self._watchers:
            self._tell_watchers(user, online=False)
        if renamed:
            self._remember(user, old)
        user.nick = new
        self._users[new_key] = user
        if renamed and new_key in self._watchers:
            self._tell_watchers(user, online=True)
        for room in user.rooms.values():
            del room.members[old_key]
            room.members[new_key] = user
            if room.keepers.pop(old_key, None) is not None:
                room.keepers[new_key] = user
            for group in (room.operators, room.voiced):
                if old_key in group:
                    group.discard(old_key)
                    group.add(new_key)
        self._fan_out(events.NickChanged(old=old, new=new), [user, *self._peers(user)])
        if user.always_on and self.always_on is not None and user.account is not None:
            self.always_on.enable(user.account, new, [r.name for r in user.rooms.values()])

    # -- presence (IRC MONITOR; any protocol may offer it) ---------------------------------

    def watch(self, user: User, nicks: Iterable[str]) -> tuple[list[User], list[str], list[str]]:
        """Add `nicks` to `user`'s watch list: from now on they are told (`Presence`) when
        one comes online or goes offline. Returns (those online, those offline, those not
        added because the list holds `WATCH_MAX` nicks)."""
        online: list[User] = []
        offline: list[str] = []
        refused: list[str] = []
        with self._lock:
            for nick in nicks:
                key = names.fold(nick)
                if key not in user.watching:
                    if len(user.watching) >= WATCH_MAX:
                        refused.append(nick)
                        continue
                    user.watching[key] = nick
                    self._watchers.setdefault(key, set()).add(user)
                present = self._users.get(key)
                if present is None:
                    offline.append(nick)
                else:
                    online.append(present)
        return online, offline, refused

    def unwatch(self, user: User, nicks: Iterable[str] | None = None) -> None:
        """Take `nicks` (None: every nick) off `user`'s watch list."""
        with self._lock:
            keys = list(user.watching) if nicks is None else [names.fold(n) for n in nicks]
            self._unwatch(user, keys)

    def watch_status(self, user: User) -> tuple[list[User], list[str]]:
        """(who on `user`'s watch list is online, the nicks of those who are not)."""
        online: list[User] = []
        offline: list[str] = []
        with self._lock:
            for key, nick in user.watching.items():
                present = self._users.get(key)
                if present is None:
                    offline.append(nick)
                else:
                    online.append(present)
        return online, offline

    def _unwatch(self, user: User, keys: Iterable[str]) -> None:
        for key in keys:
            if user.watching.pop(key, None) is None:
                continue
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(user)
                if not watchers:
                    del self._watchers[key]

    def _tell_watchers(self, user: User, *, online: bool) -> None:
        """Tell whoever watches `user`'s nick that it came online or went (hub lock held).
        One event per watcher: each is addressed to its recipient."""
        mask = user.mask if online else ""
        for watcher in self._watchers.get(user.key, ()):
            if watcher is not user:
                event = events.Presence(
                    watcher=watcher.nick, nick=user.nick, online=online, mask=mask
                )
                self._fan_out(event, [watcher])

    def _told_of_changes(self, user: User) -> list[User]:
        """Who sees `user`'s away, real name and account changes: their peers, and the
        people watching them who asked for such details (hub lock held)."""
        told = self._peers(user)
        watchers = self._watchers.get(user.key)
        if watchers:
            seen = {id(u) for u in told}
            told += [w for w in watchers if w.watch_details and id(w) not in seen and w is not user]
        return told

    def set_realname(self, user: User, realname: str) -> None:
        """Change `user`'s real name; they and the people who see them are told."""
        check_text(realname)
        if not realname:
            raise HubError("invalid_realname", "a real name cannot be empty")
        if len(realname) > names.REALNAME_MAX:
            raise HubError("too_long", f"a real name is at most {names.REALNAME_MAX} characters")
        with delivery.batch(), self._lock:
            user.realname = realname
            event = events.RealnameChanged(nick=user.nick, realname=realname)
            self._fan_out(event, [user, *self._told_of_changes(user)])
            if self.bus is not None and user.node is None:
                self.bus.publish("user", node_shard(self.bus.node),
                                 self._user_record(user, rooms=False))  # fmt: skip

    def set_account(self, user: User, account: str | None) -> None:
        """`user` is now logged in to `account` (None: logged out); their peers are told.
        Who may log in to what is the account service's rule (it calls this)."""
        with delivery.batch(), self._lock:
            if user.account == account:
                return
            user.account = account
            event = events.AccountChanged(nick=user.nick, account=account)
            self._fan_out(event, self._told_of_changes(user))
            # An account that asked to be always-on is so however it logs in.
            keeper = self.always_on
            user.always_on = bool(account and keeper and keeper.is_always_on(account))
            if user.always_on and keeper is not None and account is not None:
                keeper.enable(account, user.nick, [r.name for r in user.rooms.values()])
            if self.bus is not None and user.node is None:
                self.bus.publish("user", node_shard(self.bus.node),
                                 self._user_record(user, rooms=False))  # fmt: skip

    def find_user(self, nick: str) -> User | None:
        with self._lock:
            return self._users.get(names.fold(nick))

    def users(self) -> list[User]:
        with self._lock:
            return list(self._users.values())

    def user_count(self) -> int:
        with self._lock:
            return len(self._users)

    # -- rooms -----------------------------------------------------------------------------

    def join(self, user: User, room_name: str, password: str | None = None) -> Room:
        """Put `user` in the room (created on first join, with the user as its operator)."""
        _check_room(room_name)
        created = False
        if self.bus is not None:
            self.bus.catch_up(names.fold(room_name))
        with delivery.batch(), self._lock:
            key = names.fold(room_name)
            room = self._rooms.get(key)
            if room is not None and key in user.rooms:
                raise HubError("already_in_room", f"you are already in {room.name}")
            if room is None:
                room = Room(name=room_name, owner=user.account or user.nick)
                room.operators.add(user.key)
                self._rooms[key] = room
                created = True
                if self.history is not None:
                    # A new room has no history, whatever an ended one of the name left.
                    self.history.room_created(room.name)
                if self.moderation is not None:
                    self.moderation.created(user, room)
            else:
                self._check_may_join(user, room, password)
                if self.moderation is not None:
                    self.moderation.joining(user, room)
            room.invited.discard(user.key)
            room.members[user.key] = user
            if user.keeps_member_list:
                room.keepers[user.key] = user
            room.groups = None
            user.rooms[key] = room
            if user.always_on and self.always_on is not None and user.account is not None:
                self.always_on.joined(user.account, room.name)
            joined = events.Joined(
                room=room.name,
                nick=user.nick,
                account=user.account,
                realname=user.realname,
                away=user.away,
            )
            if user.away is None:
                self._fan_out(joined, self._audience(room, user))
            else:
                # The arrival carries the away message for the others (IRC's away-notify);
                # the joiner knows it is away and is not told so again.
                self._fan_out(replace(joined, away=None), (user,))
                others = [m for m in self._audience(room, user) if m is not user]
                self._fan_out(joined, others)
            if self.bus is not None:
                record = self._user_record(user, rooms=False)
                record.update(room=room.name, op=user.key in room.operators, owner=room.owner)
                if created:
                    # A new room: its state in Redis is this one, whatever an ended room of
                    # the name left there.
                    record["room_state"] = _room_record(room)
                # The joiner's presence key, with this room, set before the event (a node
                # starting finds one or the other).
                record["presence"] = self._user_record(user)
                self.bus.publish("join", key, record)
        if created and room.persistent and self.moderation is not None:
            self.moderation.save(room)
        return room

    def arrival(self, user: User, room_name: str) -> "Arrival":
        """What `user` is shown on joining the room, whatever their protocol: its topic and
        its members, or in a quiet room only the count (unless `user.keeps_member_list`)."""
        with self._lock:
            room = self._member_room(user, room_name)
            topic = events.TopicInfo(
                room=room.name, topic=room.topic, by=room.topic_by, set_at=room.topic_at
            )
            members = None
            if user.keeps_member_list or not self._is_quiet(room):
                members = tuple((u, _status(room, u)) for u in room.members.values())
            return Arrival(
                room=room.name,
                topic=topic,
                members=members,
                count=len(room.members),
                flags=frozenset(room.flags),
            )

    def _check_may_join(self, user: User, room: Room, password: str | None) -> None:
        if UserFlag.SERVER_OPERATOR in user.flags:
            return  # server operators may override a room's settings
        if room.is_banned(user):
            raise HubError("banned", f"you are banned from {room.name}")
        if (
            RoomFlag.INVITE_ONLY in room.flags
            and user.key not in room.invited
            and not any(entry_matches(entry, user) for entry in room.invite_exceptions)
        ):
            raise HubError("invite_only", f"{room.name} is invite only")
        if room.password is not None and password != room.password:
            raise HubError("bad_room_key", f"{room.name} needs the right key")
        # An invitation lets one in past the limit, as past invite-only (Modern IRC).
        if (
            room.limit is not None
            and len(room.members) >= room.limit
            and user.key not in room.invited
        ):
            raise HubError("room_full", f"{room.name} is full")

    def leave(self, user: User, room_name: str, reason: str = "") -> None:
        check_text(reason)
        with delivery.batch(), self._lock:
            room = self._member_room(user, room_name)
            self._fan_out(
                events.Left(room=room.name, nick=user.nick, reason=reason),
                self._audience(room, user),
            )
            self._remove_member(room, user)
            if self.bus is not None:
                record = {"room": room.name, "nick": user.nick, "reason": reason,
                          "presence": self._user_record(user)}  # fmt: skip
                self.bus.publish("leave", room.key, record)
            if user.always_on and self.always_on is not None and user.account is not None:
                self.always_on.left(user.account, room.name)

    def say(
        self,
        user: User,
        room_name: str,
        text: str,
        kind: str = events.TEXT,
        echo: Echo | None = None,
        *,
        origin: Connection | None = None,
        tags: events.ClientTags = (),
        reply_to: int | None = None,
    ) -> None:
        """Send to every connection of every member of the room except `origin`, the
        connection it came from (the sender's other connections get it).

        `origin` may be left out while the sender has one connection (it is that one).
        With a history service the message is committed first and relayed with its stored id
        and time; the commit happens outside the lock, as it waits for the disk. `echo`, if
        given, is called with the relayed event right after its fan-out (IRC echo-message:
        the sender's copy then carries the stored id and time, in order with the relay).
        `tags`: the client tags the message carries (relayed, not stored). `reply_to`: the
        id of a message of the same room this one answers (stored; raises HubError
        unknown_message, not_in_room). Text may hold line breaks (see `check_message`).
        """
        # One call for the usual one-line message: this runs for every message.
        if "\n" in text:
            check_message(text)
        else:
            check_text(text)
        extra = None if reply_to is None else self._reply_extra(user, room_name, reply_to)
        if origin is None:
            try:
                (origin,) = user.connections  # the usual case, without a call per message
            except ValueError:
                origin = _origin(user, None)
        if self.history is None:
            if echo is None and self.defer_relay is not None:
                with self._lock:
                    self._room_to_say(user, room_name, text, kind)  # a refusal is told at once
                # Only queued here, nothing delivered: no delivery batch of its own needed.
                relay = RoomRelay(self, user, room_name, text, kind, None, origin, tags, extra)
                if self.defer_relay(relay):
                    return
            with delivery.batch():  # the fan-out comes after `_relay_room`'s own batch
                self._relay_room(user, origin, room_name, text, kind, {}, echo, tags, extra)
            return
        with delivery.batch():
            with self._lock:
                name = self._room_to_say(user, room_name, text, kind).name

            relay = RoomRelay(self, user, room_name, text, kind, echo, origin, tags, extra)
            if reply_to is None:
                self.history.submit(user, text, kind, relay, room=name)
            else:
                self.history.submit(user, text, kind, relay, room=name, reply_to=reply_to)

    def say_to_status(
        self,
        user: User,
        room_name: str,
        text: str,
        status: MemberStatus,
        kind: str = events.TEXT,
        echo: Echo | None = None,
        *,
        origin: Connection | None = None,
        tags: events.ClientTags = (),
    ) -> None:
        """A room message that only the members holding `status` or a higher one get (the
        operators for OPERATOR; operators and voiced members for VOICE): IRC's STATUSMSG.
        Whoever may speak in the room may send one, as `say`. It is not stored: history is
        read by every member, who would find there what was not meant for them."""
        if "\n" in text:
            check_message(text)  # an IRC multiline batch to `@#room`
        else:
            check_text(text)
        origin = _origin(user, origin)
        with delivery.batch(), self._lock:
            room = self._room_to_say(user, room_name, text, kind)
            user.last_active = time.time()
            event = replace(_room_message(room, user, text, kind, {}, tags), status=status)
            allowed = room.operators if status is MemberStatus.OPERATOR else None
            recipients = [
                m
                for key, m in room.members.items()
                if key in (allowed if allowed is not None else room.operators | room.voiced)
            ]
            self._deliver(event, [c for m in recipients for c in m.connections if c is not origin])
        if echo is not None:
            echo(event)

    def _relay_room(
        self,
        user: User,
        origin: Connection | None,
        room_name: str,
        text: str,
        kind: str,
        stamp: dict[str, Any],
        echo: Echo | None = None,
        tags: events.ClientTags = (),
        extra: live.MessageExtra | None = None,
    ) -> None:
        with delivery.batch(), self._lock:
            room = self._room_to_speak(user, room_name)
            user.last_active = time.time()
            self.relayed_id = max(self.relayed_id, stamp.get("id", 0))
            event = _room_message(room, user, text, kind, stamp, tags, extra)
            if stamp or self.history is None:
                self._remember_message(room, event, user)
            groups = _codec_groups(room)
            if self.bus is not None:
                # Under the lock: the other nodes get a room's messages in the hub's order.
                self.bus.publish("msg", room.key, _message_record(event))
        # Encoding and fan-out run after the hub lock is released: the lock then covers only
        # the checks above (a few microseconds), where holding it through the fan-out was
        # measured to keep readers queueing on it and handing the GIL back and forth.
        # Each group's appends are one C-level loop, which no other Python thread can
        # interleave, so the members of a group still see the room's messages in one order.
        self._fan_out_groups([(event, origin, _mine(user, origin))], groups)
        if echo is not None:
            echo(event)

    def relay_room_run(self, queued: "Sequence[tuple[RoomRelay, dict[str, Any]]]") -> None:
        """Relay room messages, in order, as few fan-outs as possible (after a commit, or at
        the end of a read without history).

        One hub-lock acquisition checks them all; then each run of consecutive messages to
        one room is encoded and joined per codec group and queued as one chunk per member,
        so a member's cost is paid once per run instead of once per message. A message whose
        sender may no longer speak there (kicked, muted, gone) is skipped, as in `say`.
        """
        runs: list[tuple[list[_CodecGroup], list[_Outgoing]]] = []
        last_room: Room | None = None
        # Under the lock nothing changes, so one check per sender and room name is enough.
        checked: dict[tuple[int, str], Room | None] = {}
        # Without history every message's id is its event id; with it, a message not stored
        # (its write failed: an empty stamp) has no msgid and is not remembered.
        history_off = self.history is None
        with delivery.batch():
            with self._lock:
                now = time.time()
                for relay, stamp in queued:
                    user = relay.user
                    key = (id(user), relay.room_name)
                    if key in checked:
                        room = checked[key]
                    else:
                        try:
                            room = checked[key] = self._room_to_speak(user, relay.room_name)
                        except HubError as problem:
                            log.debug(
                                "%s: queued messages not relayed: %s", user.nick, problem.message
                            )
                            room = checked[key] = None
                        user.last_active = now
                    if room is None:
                        continue
                    self.relayed_id = max(self.relayed_id, stamp.get("id", 0))
                    event = _room_message(
                        room, user, relay.text, relay.kind, stamp, relay.tags, relay.extra
                    )
                    if stamp or history_off:
                        self._remember_message(room, event, user)
                    if self.bus is not None:
                        self.bus.publish("msg", room.key, _message_record(event))
                    if room is not last_room:
                        runs.append((_codec_groups(room), []))
                        last_room = room
                    runs[-1][1].append((event, relay.origin, _mine(user, relay.origin)))
            for groups, messages in runs:
                self._fan_out_groups(messages, groups)

    def _room_to_say(self, user: User, room_name: str, text: str, kind: str) -> Room:
        """`_room_to_speak`, and the room's rule on what may be said: no CTCP request (a
        text or notice starting with \x01; an action is not one) where they are blocked."""
        room = self._room_to_speak(user, room_name)
        if RoomFlag.NO_CTCP in room.flags and kind != events.ACTION and text.startswith("\x01"):
            raise HubError("no_ctcp", f"{room.name} does not take CTCP requests")
        return room

    def _room_to_speak(self, user: User, room_name: str) -> Room:
        """The room `user` may speak in now; raises HubError saying why not (lock held)."""
        room = self._rooms.get(names.fold(room_name))
        if room is None:
            raise HubError("no_such_room", f"there is no room {room_name}")
        member = user.key in room.members
        if not member and RoomFlag.MEMBERS_ONLY in room.flags:
            raise HubError("not_in_room", f"you are not in {room.name}")
        if not room.can_speak(user) and UserFlag.SERVER_OPERATOR not in user.flags:
            raise HubError("moderated", f"{room.name} is moderated and you have no voice")
        if self.moderation is not None and self.moderation.is_muted(user, room):
            raise HubError("muted", f"you are muted in {room.name}")
        return room

    def send_private(
        self,
        user: User,
        target: str,
        text: str,
        kind: str = events.TEXT,
        echo: Echo | None = None,
        *,
        origin: Connection | None = None,
        tags: events.ClientTags = (),
        reply_to: int | None = None,
    ) -> User:
        """Send to one user only (each of their connections, and the sender's other
        connections); returns the recipient (whose `away` a caller may report).

        `echo`, `origin` and `tags` as for `say`. `reply_to`: the id of a message of this
        same conversation that this one answers (stored; raises HubError unknown_message,
        not_in_room: a message of another conversation)."""
        check_message(text)
        origin = _origin(user, origin)
        stamp: dict[str, Any] = {"tags": tags} if tags else {}
        with delivery.batch():
            first = self.find_user(target)
            if first is None:
                raise HubError("no_such_nick", f"there is nobody called {target}")
            if reply_to is not None:
                stamp["extra"] = self._private_reply_extra(user, first, reply_to)
            if self.history is None:
                return self._relay_private(user, origin, target, text, kind, stamp, echo)

            def relay(stored: dict[str, Any]) -> None:
                self._relay_private(user, origin, target, text, kind, {**stored, **stamp}, echo)

            if reply_to is None:
                self.history.submit(user, text, kind, relay, target=first)
            else:
                self.history.submit(user, text, kind, relay, target=first, reply_to=reply_to)
            return first

    def _relay_private(
        self,
        user: User,
        origin: Connection | None,
        target: str,
        text: str,
        kind: str,
        stamp: dict[str, Any],
        echo: Echo | None = None,
    ) -> User:
        with delivery.batch(), self._lock:
            recipient = self._users.get(names.fold(target))
            if recipient is None:
                raise HubError("no_such_nick", f"there is nobody called {target}")
            user.last_active = time.time()
            self.relayed_id = max(self.relayed_id, stamp.get("id", 0))
            event = events.PrivateMessage(
                sender=user.nick,
                target=recipient.nick,
                text=text,
                kind=kind,
                account=user.account,
                target_account=recipient.account,
                **stamp,
            )
            if kind != events.NOTICE and ("id" in stamp or self.history is None):
                # Stored (or, without history, named by its event id): it may be replied
                # to, reacted to, edited and deleted.
                _remember_private(user, event, user, recipient)
                if recipient is not user:
                    _remember_private(recipient, event, user, recipient)
            if recipient.node is not None and self.bus is not None:
                self.bus.publish("pm", node_shard(recipient.node), _message_record(event))
            self._deliver(event, recipient.connections)
            if recipient is not user and len(user.connections) > 1:
                # What a person sends, each of their devices shows (as their own), but the
                # one it came from.
                self._deliver(_own_copy(event), _mine(user, origin))
        if echo is not None:
            echo(event)
        return recipient

    def send_tags(
        self,
        user: User,
        tags: events.ClientTags,
        *,
        room: str | None = None,
        target: str = "",
        echo: Echo | None = None,
        origin: Connection | None = None,
    ) -> None:
        """Relay client tags without text (a typing notice, a reaction) to a room, on the
        terms of `say` (who may speak there), or to the user `target`, on those of
        `send_private`; never stored. Raises HubError as they do.

        Tag values may hold CR and LF (IRCv3 escapes them on the wire); a protocol that
        shows tags must escape them, as IRC does."""
        origin = _origin(user, origin)
        with delivery.batch(), self._lock:
            if room is not None:
                joined = self._room_to_speak(user, room)
                event = events.TagMessage(
                    sender=user.nick, tags=tags, room=joined.name, account=user.account
                )
                connections = [
                    c for m in joined.members.values() for c in m.connections if c is not origin
                ]
                if self.bus is not None:
                    self.bus.publish("tags", joined.key, _tags_event_record(event))
            else:
                recipient = self._users.get(names.fold(target))
                if recipient is None:
                    raise HubError("no_such_nick", f"there is nobody called {target}")
                event = events.TagMessage(
                    sender=user.nick, tags=tags, target=recipient.nick, account=user.account
                )
                connections = list(recipient.connections)
                if recipient is not user:
                    connections += [c for c in user.connections if c is not origin]
                if recipient.node is not None and self.bus is not None:
                    self.bus.publish("tags", node_shard(recipient.node), _tags_event_record(event))
            self._deliver(event, connections)
        if echo is not None:
            echo(event)

    # -- messages that live on: replies, reactions, edits, deletions, typing (core/live.py) --

    def _remember_message(self, room: Room, event: events.RoomMessage, user: User) -> None:
        """Keep a relayed room message among the room's recent ones (hub lock held)."""
        if event.kind == events.NOTICE:
            return  # never stored, never named
        recent = room.recent
        recent[event.id] = (event, user.as_sender)
        if len(recent) > 2 * live.RECENT_PER_ROOM:
            # Trimmed in one step per RECENT_PER_ROOM messages: taking the oldest out one at a
            # time makes a dict walk the dead slots at its front on every `next(iter())`.
            room.recent = dict(islice(recent.items(), live.RECENT_PER_ROOM, None))

    def find_ref(self, user: User, ref: str) -> int:
        """The message id a reference typed in text mode names (`#a3f`, see core/live.py):
        the newest recent message of `user`'s rooms whose id ends in those hex digits, else
        the reference read as a whole id. Raises HubError unknown_message."""
        parsed = live.parse_ref(ref)
        if parsed is None:
            raise HubError("unknown_message", f"{ref} is not a message reference (#a3f)")
        value, digits = parsed
        mask = (1 << (4 * digits)) - 1
        best = -1
        with self._lock:
            for recent in chain((room.recent for room in user.rooms.values()),
                                (user.recent_private,)):  # fmt: skip
                for msgid in reversed(recent):
                    if msgid & mask == value:
                        best = max(best, msgid)
                        break
        return best if best >= 0 else value

    def last_message_of(self, user: User, room_name: str) -> int:
        """The id of `user`'s newest recent message in the room (text mode's `/edit text`
        and `/delete` without a reference). Raises HubError unknown_message, not_in_room."""
        with self._lock:
            room = self._member_room(user, room_name)
            for msgid in reversed(room.recent):
                event, sender = room.recent[msgid]
                if sender() is user and not (event.extra is not None and event.extra.deleted):
                    return msgid
        raise HubError("unknown_message", f"you have said nothing lately in {room.name}")

    def _message_for(
        self,
        user: User,
        msgid: int,
        room_name: str | None = None,
        *,
        peer: str | None = None,
    ) -> "_Found":
        """The message `msgid` that `user` acts on: a message of one of their rooms, or of
        one of their private conversations; from the recent ones, else from history. Called
        without the hub lock (history may be read); `msgid` 0 names none. `room_name`: it
        must be in that room (a room `user` is not in is refused first); `peer`: in `user`'s
        conversation with that person. Raises HubError unknown_message (also for a deleted
        one, and for a private message of a conversation `user` is not in: whether it
        exists is not theirs to know), not_in_room (`user` is not in `room_name` or in its
        room, or it is not in `room_name` or the conversation with `peer`),
        history_failed."""
        unknown = HubError("unknown_message", f"there is no message {live.full_ref(msgid)}")
        with self._lock:
            # A room one is not in (or that does not exist) is refused before any message is
            # looked for: what it holds is none of their business.
            if room_name is not None and names.fold(room_name) not in user.rooms:
                raise HubError("not_in_room", f"you are not in {room_name}")
            # Only the rooms `user` is in: a message elsewhere is refused as not_in_room from
            # history below (or unknown without history), whoever else remembers it.
            for room in user.rooms.values():
                entry = room.recent.get(msgid)
                if entry is None:
                    continue
                event, sender = entry
                if event.extra is not None and event.extra.deleted:
                    raise unknown
                self._check_message_room(user, room, room_name, peer)
                return _Found(event, sender(), room)
            private = user.recent_private.get(msgid)
            if private is not None:
                event, sender, recipient = private
                if event.extra is not None and event.extra.deleted:
                    raise unknown
                return self._private_found(
                    user, event, sender, (sender, recipient), room_name, peer
                )
        history = self.history
        if history is None or not 0 < msgid <= history_types.MAX_REF:
            raise unknown
        try:
            stored = history.lookup(msgid)
        except StoreError as problem:
            log.error("message lookup failed: %s", problem)
            raise HubError("history_failed", "history cannot be read right now") from None
        if stored is None or (stored.extra is not None and stored.extra.deleted):
            raise unknown
        if isinstance(stored, events.PrivateMessage):
            accounts = {names.fold(a) for a in (stored.account, stored.target_account) if a}
            if user.account is None or names.fold(user.account) not in accounts:
                raise unknown
            with self._lock:
                people = tuple(
                    u
                    for u in self._users.values()
                    if u.account is not None and names.fold(u.account) in accounts
                )
                return self._private_found(user, stored, None, people, room_name, peer)
        with self._lock:
            room = self._rooms.get(names.fold(stored.room))
            if room is None:
                raise HubError("not_in_room", f"you are not in {stored.room}")
            self._check_message_room(user, room, room_name, peer)
            return _Found(stored, None, room)

    @staticmethod
    def _check_message_room(
        user: User, room: Room, room_name: str | None, peer: str | None = None
    ) -> None:
        if peer is not None:
            raise HubError("not_in_room", f"that message is not in a conversation with {peer}")
        if room_name is not None and names.fold(room_name) != room.key:
            raise HubError("not_in_room", f"that message is not in {room_name}")
        if user.key not in room.members:
            raise HubError("not_in_room", f"you are not in {room.name}")

    @staticmethod
    def _private_found(
        user: User,
        event: events.PrivateMessage,
        sender: User | None,
        people: tuple[User, ...],
        room_name: str | None,
        peer: str | None,
    ) -> "_Found":
        """A private message of `user`'s as found (hub lock held): `people` are the persons
        of its conversation here (its sender and recipient while recent, else those of
        either account), of which the others than `user`'s side make the other side."""
        if room_name is not None:
            raise HubError("not_in_room", f"that message is not in {room_name}")
        if sender is not None:
            recipient = people[1]
            others: tuple[User, ...] = (recipient if sender is user else sender,)
            other_nick = others[0].nick
        else:
            mine = names.fold(user.account or "")
            sent = event.account is not None and names.fold(event.account) == mine
            other_account = event.target_account if sent else event.account
            other_nick = event.target if sent else event.sender
            if event.account == event.target_account or other_account is None:
                others = (user,)
            else:
                others = tuple(
                    p
                    for p in people
                    if p.account is not None and names.fold(p.account) == names.fold(other_account)
                )
                if others:
                    other_nick = others[0].nick
        if peer is not None:
            # The other side by any name it is known by: now, or when the message was sent.
            called = {names.fold(n) for n in (other_nick, *(p.nick for p in others))}
            called.add(names.fold(event.target if event.sender == user.nick else event.sender))
            if names.fold(peer) not in called:
                raise HubError("not_in_room", f"that message is not in a conversation with {peer}")
        return _Found(event, sender, None, tuple(dict.fromkeys((user, *people))), other_nick)

    def reply(
        self,
        user: User,
        msgid: int,
        text: str,
        kind: str = events.TEXT,
        *,
        origin: Connection | None = None,
    ) -> None:
        """Answer the message `msgid` where it was said: in its room (as `say` with
        `reply_to`), or in its private conversation, to the other person (as
        `send_private`). Raises HubError as they do."""
        found = self._message_for(user, msgid)
        if found.room is not None:
            self.say(user, found.room.name, text, kind, origin=origin, reply_to=msgid)
        else:
            self.send_private(user, found.peer, text, kind, origin=origin, reply_to=msgid)

    def _reply_extra(self, user: User, room_name: str, reply_to: int) -> live.MessageExtra:
        """What a reply carries of the message it answers, which must be in the same room."""
        return _reply_of(self._message_for(user, reply_to, room_name).event)

    def _private_reply_extra(self, user: User, peer: User, reply_to: int) -> live.MessageExtra:
        """What a private reply carries of the message it answers, which must be in the
        same conversation (of `user` with `peer`)."""
        return _reply_of(self._message_for(user, reply_to, peer=peer.nick).event)

    @staticmethod
    def _is_author(
        user: User, event: events.RoomMessage | events.PrivateMessage, sender: User | None
    ) -> bool:
        """Whether `user` wrote `event`: the same account; for a guest's message, the very
        person who sent it (known only while it is recent: a guest's nick proves nothing)."""
        if event.account is not None:
            return user.account is not None and names.fold(user.account) == names.fold(
                event.account
            )
        return sender is user

    def _update_recent(self, room: Room, msgid: int, **changes: Any) -> None:
        """Change a recent message as an edit or deletion did (hub lock held)."""
        entry = room.recent.get(msgid)
        if entry is None:
            return
        event, sender = entry
        room.recent[msgid] = (_changed(event, changes), sender)

    @staticmethod
    def _update_private(people: Iterable[User], msgid: int, **changes: Any) -> None:
        """Change a recent private message, in the recent messages of each of the people of
        its conversation, as an edit, deletion or reaction did (hub lock held)."""
        for person in people:
            entry = person.recent_private.get(msgid)
            if entry is not None:
                event, sender, recipient = entry
                person.recent_private[msgid] = (_changed(event, changes), sender, recipient)

    def _publish_live(self, room: Room, event: events.Event) -> None:
        """Tell the other nodes of a reaction, deletion, edit or typing notice (hub lock
        held): on the room's stream, so they apply it after the message it is about."""
        if self.bus is not None:
            record = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
            del record["id"], record["ts"]
            self.bus.publish(_LIVE_KINDS_OF_EVENTS[type(event)], room.key, record)

    def _apply_remote_live(self, kind: str, room: Room, data: dict[str, Any]) -> None:
        """What `_publish_live` told this node (hub lock held): the room's recent copy
        changes as it did there, and the local members are shown the same event. The
        store, shared, was written by the node where it happened."""
        event = _LIVE_EVENTS[kind](**{**data, "room": room.name})
        match event:
            case events.Reaction():
                entry = room.recent.get(event.msgid)
                if entry is not None:
                    extra = entry[0].extra or live.MessageExtra()
                    reactions, _ = live.with_reaction(
                        extra.reactions, event.reaction, event.sender, event.on
                    )
                    self._update_recent(room, event.msgid, reactions=reactions)
            case events.MessageDeleted():
                self._update_recent(room, event.msgid, text="", deleted=True)
            case events.MessageEdited():
                self._update_recent(room, event.msgid, text=event.text, edited=True)
        self._fan_out(event, room.members.values())

    def _tell_live(self, found: "_Found", event: Event, origin: Connection | None = None) -> None:
        """Show a reaction, deletion or edit to those who see the message (hub lock held):
        a room's members (and the other nodes), or the two people of a private
        conversation, on each of their connections but `origin` (the one it came from,
        when its client is answered otherwise: IRC's echo-message)."""
        people = found.room.members.values() if found.room is not None else found.people
        if origin is None:
            self._fan_out(event, people)
        else:
            connections = chain.from_iterable(map(_CONNECTIONS, people))
            self._deliver(event, [c for c in connections if c is not origin])
        if found.room is not None:
            self._publish_live(found.room, event)
        else:
            self._publish_private_live(found.people, event)

    def _publish_private_live(self, people: Iterable[User], event: Event) -> None:
        """Tell the nodes of the people of a private conversation who are on another node
        of a reaction, deletion, edit or typing notice (hub lock held): on the stream of
        each one's node, where their private messages go, so it comes after the message."""
        if self.bus is None:
            return
        record = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        del record["id"], record["ts"]
        for person in people:
            if person.node is not None:
                kind = _LIVE_KINDS_OF_EVENTS[type(event)]
                self.bus.publish(kind, node_shard(person.node), {**record, "to": person.nick})

    def _apply_remote_private_live(self, kind: str, data: dict[str, Any]) -> None:
        """What `_publish_private_live` told this node (hub lock held): the person it names
        is shown the event, and their recent copy of the message changes as it did there."""
        fields = dict(data)
        person = self._users.get(names.fold(fields.pop("to", "")))
        if person is None or person.node is not None:
            return
        event = _LIVE_EVENTS[kind](**fields)
        match event:
            case events.Reaction():
                entry = person.recent_private.get(event.msgid)
                if entry is not None:
                    extra = entry[0].extra or live.MessageExtra()
                    reactions, _ = live.with_reaction(
                        extra.reactions, event.reaction, event.sender, event.on
                    )
                    self._update_private((person,), event.msgid, reactions=reactions)
            case events.MessageDeleted():
                self._update_private((person,), event.msgid, text="", deleted=True)
            case events.MessageEdited():
                self._update_private((person,), event.msgid, text=event.text, edited=True)
        self._fan_out(event, [person])

    def react(
        self,
        user: User,
        msgid: int,
        reaction: str,
        *,
        on: bool = True,
        room: str | None = None,
        to: str | None = None,
        echo: Echo | None = None,
        origin: Connection | None = None,
    ) -> bool:
        """Add (`on`) or take back `user`'s `reaction` to a message: in a room whoever may
        speak there may react, in a private conversation either of its two people; those
        who see the message see a Reaction event, but the connection it came from
        (`origin`, when given), which gets it through `echo` (IRC echo-message) if at all,
        after the others, as a message is echoed. Returns False (nothing relayed) when that
        changes nothing. `room` or `to` (a nick), when given, is the conversation the client
        believes the message is in (not_in_room when it is not). Raises HubError
        unknown_message, not_in_room, too_long, bad_request, moderated, muted,
        history_failed."""
        check_text(reaction, strict=True)
        if not reaction.strip() or " " in reaction:
            raise HubError("bad_request", "a reaction is one word or emoji")
        if len(reaction.encode()) > live.REACTION_MAX_BYTES:
            raise HubError("too_long", f"a reaction is at most {live.REACTION_MAX_BYTES} bytes")
        found = self._message_for(user, msgid, room, peer=to)
        joined, event = found.room, found.event
        if joined is not None:
            with self._lock:
                self._room_to_speak(user, joined.name)
        who = user.nick
        changed = True
        if self.history is not None:
            identity = f"a:{names.fold(user.account)}" if user.account else f"n:{user.key}"
            try:
                changed = self.history.react(msgid, identity, who, reaction, on)
            except StoreError as problem:
                log.error("reaction not stored: %s", problem)
                raise HubError("history_failed", "the reaction could not be stored") from None
        with delivery.batch(), self._lock:
            recent = _recent_of(found, user, msgid)
            if recent is not None:
                extra = recent.extra or live.MessageExtra()
                reactions, changed_here = live.with_reaction(extra.reactions, reaction, who, on)
                if self.history is None:
                    changed = changed_here
                if joined is not None:
                    self._update_recent(joined, msgid, reactions=reactions)
                else:
                    self._update_private(found.people, msgid, reactions=reactions)
            if not changed:
                return False
            notice = events.Reaction(
                room=joined.name if joined is not None else None,
                target=found.peer,
                sender=who,
                msgid=event.id,
                reaction=reaction,
                on=on,
                account=user.account,
            )
            self._tell_live(found, notice, origin)
        if echo is not None:
            echo(notice)
        return True

    def delete_message(
        self,
        user: User,
        msgid: int,
        reason: str = "",
        *,
        room: str | None = None,
        to: str | None = None,
    ) -> None:
        """Delete a message: in a room its author or one who may moderate the room may, in
        a private conversation its author only. History keeps a tombstone (no text, marked
        deleted); those who see the message see MessageDeleted. `room` and `to` as for
        `react`. Raises HubError unknown_message, not_in_room, not_yours, history_failed."""
        check_text(reason)
        found = self._message_for(user, msgid, room, peer=to)
        joined, event = found.room, found.event
        with self._lock:
            if not self._is_author(user, event, found.sender) and (
                joined is None or not self.may_moderate(user, joined)
            ):
                why = "and you are no operator" if joined is not None else "to delete"
                raise HubError("not_yours", f"{live.full_ref(msgid)} is not yours {why}")
        # Deleted meanwhile by someone else (or purged): unknown_message.
        self._store_change(msgid, "deletion", lambda history: history.delete(msgid))
        with delivery.batch(), self._lock:
            if joined is not None:
                self._update_recent(joined, msgid, text="", deleted=True)
            else:
                self._update_private(found.people, msgid, text="", deleted=True)
            gone = events.MessageDeleted(
                room=joined.name if joined is not None else None,
                target=found.peer,
                msgid=event.id,
                by=user.nick,
                sender=event.sender,
                reason=reason,
                account=user.account,
            )
            self._tell_live(found, gone)

    def _store_change(self, msgid: int, what: str, change: Callable[[ports.History], bool]) -> None:
        """Store a change to message `msgid` (outside the lock: it waits for the disk).
        HubError history_failed when the store fails, unknown_message when the message is
        gone meanwhile (change gives False); nothing to do without history."""
        if self.history is None:
            return
        try:
            changed = change(self.history)
        except StoreError as problem:
            log.error("%s not stored: %s", what, problem)
            raise HubError("history_failed", f"the {what} could not be stored") from None
        if not changed:
            raise HubError("unknown_message", f"there is no message {live.full_ref(msgid)}")

    def edit_message(
        self, user: User, msgid: int, text: str, *, room: str | None = None, to: str | None = None
    ) -> None:
        """Replace the text of `user`'s own message, in a room or a private conversation
        (nobody edits another's words). History keeps the latest text, marked edited; those
        who see the message see MessageEdited. `room` and `to` as for `react`. Raises
        HubError unknown_message, not_in_room, not_yours, too_long, bad_request, moderated,
        muted, history_failed."""
        check_message(text)
        if not text.strip():
            raise HubError("bad_request", "an edit needs text (delete the message instead)")
        found = self._message_for(user, msgid, room, peer=to)
        joined, event = found.room, found.event
        with self._lock:
            if not self._is_author(user, event, found.sender):
                raise HubError("not_yours", f"{live.full_ref(msgid)} is not yours to edit")
            if joined is not None:
                self._room_to_speak(user, joined.name)
        self._store_change(msgid, "edit", lambda history: history.edit(msgid, text))
        with delivery.batch(), self._lock:
            if joined is not None:
                self._update_recent(joined, msgid, text=text, edited=True)
            else:
                self._update_private(found.people, msgid, text=text, edited=True)
            edited = events.MessageEdited(
                room=joined.name if joined is not None else None,
                target=found.peer,
                msgid=event.id,
                sender=user.nick,
                text=text,
                account=user.account,
            )
            self._tell_live(found, edited)

    def typing(
        self,
        user: User,
        room_name: str | None,
        state: str,
        *,
        echo: Echo | None = None,
        to: str | None = None,
    ) -> None:
        """Tell the room's other members, or the person `to` (a private conversation; then
        `room_name` is None), that `user` is typing (`state` active, paused or done); never
        stored. At most one notice per user and conversation every live.TYPING_INTERVAL
        seconds (a `done` once more after another state); nothing is sent in a quiet room.
        Raises HubError bad_request, too_often, not_in_room, no_such_nick and as `say`
        does."""
        if state not in live.TYPING_STATES:
            raise HubError("bad_request", f"typing is one of {', '.join(live.TYPING_STATES)}")
        now = time.monotonic()
        with delivery.batch(), self._lock:
            room: Room | None = None
            recipient: User | None = None
            if to is not None:
                recipient = self._users.get(names.fold(to))
                if recipient is None:
                    raise HubError("no_such_nick", f"there is nobody called {to}")
                # A private conversation's key: "" and the peer, which no room key is.
                key: tuple[str, ...] = (user.key, "", recipient.key)
            else:
                assert room_name is not None
                room = self._room_to_speak(user, room_name)
                if user.key not in room.members:
                    raise HubError("not_in_room", f"you are not in {room.name}")
                key = (user.key, room.key)
            last = self._typing.get(key)
            # A `done` passes once after another state: whoever stops is not shown typing.
            recent = last is not None and now - last[0] < live.TYPING_INTERVAL
            if recent and (state != "done" or last is None or last[1] == "done"):
                raise HubError("too_often", "one typing notice every 3 seconds at most")
            if len(self._typing) > 4 * live.RECENT_PER_ROOM:
                cutoff = now - live.TYPING_INTERVAL
                self._typing = {k: v for k, v in self._typing.items() if v[0] >= cutoff}
            self._typing[key] = (now, state)
            if recipient is not None:
                notice = events.Typing(
                    target=recipient.nick, sender=user.nick, state=state, account=user.account
                )
                if recipient is not user:
                    self._fan_out(notice, [recipient])
                    self._publish_private_live((recipient,), notice)
            else:
                assert room is not None
                if self._is_quiet(room):
                    return
                notice = events.Typing(
                    room=room.name, sender=user.nick, state=state, account=user.account
                )
                self._fan_out(notice, [m for m in room.members.values() if m is not user])
                self._publish_live(room, notice)
        if echo is not None:  # IRC echo-message: the sender's copy, as for any TAGMSG
            echo(notice)

    def set_topic(self, user: User, room_name: str, topic: str) -> None:
        check_text(topic)
        if len(topic) > names.TOPIC_MAX:
            raise HubError("too_long", f"a topic is at most {names.TOPIC_MAX} characters")
        with delivery.batch(), self._lock:
            room = self._rooms.get(names.fold(room_name))
            if room is None:
                raise HubError("no_such_room", f"there is no room {room_name}")
            if user.key not in room.members and UserFlag.SERVER_OPERATOR not in user.flags:
                raise HubError("not_in_room", f"you are not in {room.name}")
            if RoomFlag.TOPIC_LOCKED in room.flags and not self.may_moderate(user, room):
                raise HubError("not_operator", f"only operators of {room.name} set its topic")
            room.topic, room.topic_by, room.topic_at = topic, user.nick, time.time()
            self._fan_out(
                events.TopicChanged(room=room.name, topic=topic, by=user.nick),
                room.members.values(),
            )
            if self.bus is not None:
                self.bus.publish("topic", room.key, {"room": room.name, "topic": topic,
                                 "by": user.nick, "room_state": _room_record(room)})  # fmt: skip
        if room.persistent and self.moderation is not None:
            self.moderation.save(room)

    def topic(self, room_name: str) -> events.TopicInfo:
        with self._lock:
            room = self._rooms.get(names.fold(room_name))
            if room is None:
                raise HubError("no_such_room", f"there is no room {room_name}")
            return events.TopicInfo(
                room=room.name, topic=room.topic, by=room.topic_by, set_at=room.topic_at
            )

    def room_list(self, viewer: User | None = None) -> tuple[events.RoomInfo, ...]:
        """Every room `viewer` may see (secret and private rooms only to their members)."""
        with self._lock:
            return tuple(
                events.RoomInfo(name=r.name, members=len(r.members), topic=r.topic)
                for r in sorted(self._rooms.values(), key=lambda r: r.key)
                if not r.hidden_from(viewer)
            )

    def members(self, room_name: str, viewer: User | None = None) -> tuple[str, tuple[str, ...]]:
        """The room's display name and its members' nicknames, in joining order, as `viewer`
        may see them (see `_visible_room`)."""
        with self._lock:
            room = self._visible_room(room_name, viewer)
            shown = self._visible_members(room, viewer)
            return room.name, tuple(u.nick for u in shown)

    def member_count(self, room_name: str) -> int:
        with self._lock:
            room = self._rooms.get(names.fold(room_name))
            return len(room.members) if room is not None else 0

    def get_room(self, room_name: str) -> Room | None:
        """The live room object; read its fields only under `locked()` (they change)."""
        with self._lock:
            return self._rooms.get(names.fold(room_name))

    def restore_room(self, room: Room) -> None:
        """Add a room loaded from storage (at start, before anyone connects)."""
        with self._lock:
            self._rooms.setdefault(room.key, room)

    def locked(self) -> threading.Lock:
        """The hub lock, for protocol code that reads several room or user fields consistently.

        Never do socket I/O or call other hub methods while holding it.
        """
        return self._lock

    def broadcast_notice(self, text: str) -> None:
        """A server notice to every connected user (e.g. shutdown)."""
        with delivery.batch(), self._lock:
            self._fan_out(events.ServerNotice(text=text), list(self._users.values()))

    # -- internals (hub lock held) ---------------------------------------------------------

    def _visible_room(self, room_name: str, viewer: User | None) -> Room:
        """The room, unless it is hidden from `viewer`: a secret or private room is, to a
        non-member, as if it did not exist (raises HubError no_such_room; lock held)."""
        room = self._rooms.get(names.fold(room_name))
        if room is None or room.hidden_from(viewer):
            raise HubError("no_such_room", f"there is no room {room_name}")
        return room

    def _visible_members(self, room: Room, viewer: User | None) -> Iterable[User]:
        """The members `viewer` may see listed: all of them for a member (or a server
        operator, or the server itself with no viewer), and to anyone else only the members
        who are not invisible (lock held)."""
        if viewer is None or viewer.key in room.members or self.sees_everyone(viewer):
            return room.members.values()
        return [u for u in room.members.values() if UserFlag.INVISIBLE not in u.flags]

    @staticmethod
    def sees_everyone(viewer: User) -> bool:
        """Server operators see invisible users and hidden rooms alike."""
        return UserFlag.SERVER_OPERATOR in viewer.flags

    def may_see_user(self, viewer: User, user: User) -> bool:
        """The one visibility rule of user searches: an invisible user is found only by
        themselves, by server operators and by people who share a room with them (hub lock
        held or not: it reads only sets)."""
        if UserFlag.INVISIBLE not in user.flags or viewer is user or self.sees_everyone(viewer):
            return True
        return any(key in viewer.rooms for key in user.rooms)

    def visible_users(self, viewer: User) -> list[User]:
        """Every user `viewer` may find in a search (see `may_see_user`)."""
        with self._lock:
            return [u for u in self._users.values() if self.may_see_user(viewer, u)]

    def _member_room(self, user: User, room_name: str) -> Room:
        room = user.rooms.get(names.fold(room_name))
        if room is None:
            if names.fold(room_name) in self._rooms:
                raise HubError("not_in_room", f"you are not in {room_name}")
            raise HubError("no_such_room", f"there is no room {room_name}")
        return room

    def may_moderate(self, user: User, room: Room) -> bool:
        """The one rights rule of every protocol (hub lock held): a room's operators, its
        owner account (even without operator status) and server operators may kick, ban,
        mute, op, set modes and a locked topic, and invite to an invite-only room."""
        if user.key in room.operators or UserFlag.SERVER_OPERATOR in user.flags:
            return True
        return bool(
            user.account and room.owner and names.fold(room.owner) == names.fold(user.account)
        )

    def _remove_member(self, room: Room, user: User) -> None:
        room.members.pop(user.key, None)
        room.keepers.pop(user.key, None)
        room.groups = None
        room.operators.discard(user.key)
        room.voiced.discard(user.key)
        user.rooms.pop(room.key, None)
        if not room.members and not room.persistent:
            del self._rooms[room.key]
            room.recent = {}
            # Of several nodes, the one whose user left last ends the history.
            if self.history is not None and user.node is None:
                # Its history ends with it: a later room of the name must not show it.
                self.history.room_ended(room.name)

    def _is_quiet(self, room: Room) -> bool:
        return len(room.members) > self.quiet_room_size

    def _audience(self, room: Room, user: User) -> Iterable[User]:
        """Who sees `user` arrive or leave: every member; in a quiet (big) room only `user`
        and the members whose clients keep member lists (`User.keeps_member_list`)."""
        if self._is_quiet(room):
            keepers = room.keepers
            if user.key in keepers or room.members.get(user.key) is not user:
                return keepers.values()
            return [user, *keepers.values()]
        return room.members.values()

    def _peers(self, user: User, *, announced_only: bool = False) -> list[User]:
        """Everyone who shares a room with `user`, each once, without `user`.

        `announced_only`: in quiet rooms only those who keep member lists (see `_audience`)."""
        seen: dict[int, User] = {}
        for room in user.rooms.values():
            quiet = announced_only and self._is_quiet(room)
            for member in room.members.values():
                if not quiet or member.keeps_member_list:
                    seen[id(member)] = member
        seen.pop(id(user), None)
        return list(seen.values())

    def _fan_out(self, event: Event, recipients: Iterable[User]) -> None:
        """`_deliver` `event` to every connection of each recipient."""
        self._deliver(event, chain.from_iterable(map(_CONNECTIONS, recipients)))

    def _deliver(self, event: Event, connections: Iterable[Connection]) -> None:
        """Encode `event` once per distinct codec and queue it for each connection.

        This and `_fan_out_groups` (room messages) are the seam where delivery leaves the
        node: everything above decides *who*, these decide *how*. They only enqueue; state
        events run under the hub lock, room messages after it is released.
        """
        encoded: dict[Hashable, bytes | None] = {}
        for conn in connections:
            key = conn.codec_key()
            try:
                data = encoded[key]
            except KeyError:
                data = encoded[key] = encode_contained(conn.encode, event)
            if data:
                conn.send_bytes(data)

    def _fan_out_groups(self, messages: "Sequence[_Outgoing]", groups: "list[_CodecGroup]") -> None:
        """`_deliver` of a room's messages, each (with the connection it came from) to every
        member's connections but that one, at C speed.

        The members' connections are grouped by codec key once per membership change; then
        per group each message is encoded once, the run of messages is joined into one chunk,
        and a connection costs one list append done by `map` and one set insertion done by
        `set.update`, instead of several Python calls per message. This is the hot path of a
        busy room: it was measured as most of the server's CPU time. A sending connection in
        the run gets the chunk without its own messages, and the sender's other connections
        (one account on several devices) get the message's `own` copy in its place.
        """
        # Whether a sender in the run has other connections (rare): checked once per run.
        with_own = any(mine for _, _, mine in messages)
        for group in groups:
            if group.queues is None:
                for event, origin, mine in messages:
                    if not mine:
                        self._deliver(event, [c for c in group.connections if c is not origin])
                        continue
                    others = [c for c in group.connections if c is not origin]
                    self._deliver(event, [c for c in others if not _among(c, mine)])
                    self._deliver(_own_copy(event), [c for c in others if _among(c, mine)])
                continue
            encode = group.connections[0].encode
            try:
                pieces = [encode(event) or b"" for event, _, _ in messages]
            except Exception:
                # Rare: only then pay a guarded call per message, to skip just the bad one.
                pieces = [encode_contained(encode, event) or b"" for event, _, _ in messages]
            everyone = b"".join(pieces)
            if not everyone:
                continue
            queues, positions = group.queues, group.positions
            # Each message's origin as a position in this group (-1: not in it).
            owners = [positions.get(id(origin), -1) for _, origin, _ in messages]
            senders = set(owners)
            senders.discard(-1)
            if with_own:
                self._fan_out_with_own(messages, group, pieces, owners, everyone)
            elif not senders:
                deque(map(list.append, queues, repeat(everyone)), maxlen=0)
            elif len(messages) == 1:
                [position] = senders
                others = queues[:position] + queues[position + 1 :]
                deque(map(list.append, others, repeat(everyone)), maxlen=0)
            else:
                chunks = [everyone] * len(queues)
                for position in senders:
                    # The run without this sender's messages, selected at C speed.
                    chunks[position] = b"".join(compress(pieces, map(ne, owners, repeat(position))))
                deque(map(list.append, queues, chunks), maxlen=0)
            delivery.mark_all_dirty(group.flushables)

    @staticmethod
    def _fan_out_with_own(
        messages: "Sequence[_Outgoing]",
        group: "_CodecGroup",
        pieces: list[bytes],
        owners: list[int],
        everyone: bytes,
    ) -> None:
        """`_fan_out_groups` for a run in which a sender has several connections: each of
        those gets, in the run's order, the `own` copy of that sender's messages (none for
        the one it came from). Rare (a person on several devices sending), so plain Python."""
        assert group.queues is not None
        encode = group.connections[0].encode
        positions = group.positions
        # Position -> {message index: bytes shown there instead (b"" for its origin)}.
        special: dict[int, dict[int, bytes]] = {}
        for index, (event, _, mine) in enumerate(messages):
            if owners[index] >= 0:
                special.setdefault(owners[index], {})[index] = b""
            if not mine:
                continue
            present = [positions[id(c)] for c in mine if id(c) in positions]
            if present:
                own = encode_contained(encode, _own_copy(event)) or b""
                for position in present:
                    special.setdefault(position, {})[index] = own
        for position, queue in enumerate(group.queues):
            changed = special.get(position)
            if changed is None:
                queue.append(everyone)
                continue
            chunk = b"".join(changed.get(i, piece) for i, piece in enumerate(pieces))
            if chunk:
                queue.append(chunk)

    def codec_changed(self, user: User) -> None:
        """The codec key of one of `user`'s connections changed (e.g. IRC capabilities):
        regroup their rooms."""
        with self._lock:
            self._regroup(user)

    # -- moderation and IRC-facing operations ----------------------------------------------
    # Added for the IRC transport but protocol-neutral: any protocol may offer these.

    def user_unlocked(self, nick: str) -> User | None:
        """The user called `nick`, for encoders running under the hub lock (during fan-out)."""
        return self._users.get(names.fold(nick))

    def counts(self) -> tuple[int, int, int]:
        """(users, server operators, rooms); see `user_counts`."""
        counts = self.user_counts()
        return counts.users, counts.operators, counts.rooms

    def user_counts(self) -> "UserCounts":
        """How many users (and of them invisible ones and server operators), rooms, and the
        most users there have been at once.

        Counting flags walks every user, and IRC asks on every registration (LUSERS): with
        15,000 users arriving that was quadratic, so the walk is done at most once a second,
        or at once after the hub changed a flag (a flag set elsewhere may be a second late).
        """
        now = time.monotonic()
        with self._lock:
            if now - self._opers_counted_at > OPER_COUNT_MAX_AGE:
                opers = invisible = 0
                for u in self._users.values():
                    if u.flags:
                        opers += UserFlag.SERVER_OPERATOR in u.flags
                        invisible += UserFlag.INVISIBLE in u.flags
                self._opers, self._invisible = opers, invisible
                self._opers_counted_at = now
            return UserCounts(
                users=len(self._users),
                invisible=self._invisible,
                operators=self._opers,
                rooms=len(self._rooms),
                max_users=self._max_users,
            )

    def room_state(self, room_name: str, viewer: User | None = None) -> "RoomState":
        """A consistent snapshot of a room (raises HubError('no_such_room')), as `viewer`
        may see it: a room hidden from them does not exist, and a non-member sees only the
        members who are not invisible (see `_visible_room`, `_visible_members`)."""
        with self._lock:
            room = self._visible_room(room_name, viewer)
            return self._room_state(room, self._visible_members(room, viewer))

    def room_states(self, viewer: User | None = None) -> list["RoomState"]:
        """Every room `viewer` may see (see `room_state`), by name."""
        with self._lock:
            return [
                self._room_state(r, self._visible_members(r, viewer))
                for r in sorted(self._rooms.values(), key=lambda r: r.key)
                if not r.hidden_from(viewer)
            ]

    def user_rooms(
        self, user: User, viewer: User | None = None
    ) -> tuple[tuple[str, tuple[MemberStatus, ...]], ...]:
        """The rooms `user` is in, each with the user's statuses there, highest first;
        without the rooms hidden from `viewer`."""
        with self._lock:
            return tuple(
                (r.name, _status(r, user)) for r in user.rooms.values() if not r.hidden_from(viewer)
            )

    def set_room_modes(
        self, user: User, room_name: str, changes: Sequence[ModeChange]
    ) -> list[ModeChange]:
        """Apply room mode changes as `user`; returns those that changed something.

        A RoomFlag, KEY (the key), LIMIT (a positive number), BAN (read by `ban_entry`), or
        a MemberStatus (a member's nickname); user flags are ignored. Needs `may_moderate`.
        Raises HubError: no_such_room, not_operator, no_such_nick, user_not_in_room.
        Members see one ModeChanged event with every applied change.
        """
        for change in changes:
            if change.arg is not None:
                check_text(change.arg)
        # Outside the lock: resolving a bare name may ask the account store.
        choices = [self._mode_choices(change) for change in changes]
        with delivery.batch(), self._lock:
            room = self._rooms.get(names.fold(room_name))
            if room is None:
                raise HubError("no_such_room", f"there is no room {room_name}")
            if not self.may_moderate(user, room):
                raise HubError("not_operator", f"you are not an operator of {room.name}")
            applied = []
            for candidates in choices:
                for candidate in candidates:
                    change = self._apply_mode(room, candidate)
                    if change is not None:
                        applied.append(change)
                        break
            if applied:
                event = _mode_event(user.nick, applied, room=room.name)
                self._fan_out(event, room.members.values())
                if self.bus is not None:
                    self.bus.publish("modes", room.key, {"room": room.name, "by": user.nick,
                                     "changes": [_mode_record(c) for c in applied],
                                     "room_state": _room_record(room)})  # fmt: skip
                if self.moderation is not None:
                    for change in applied:
                        self.moderation.mode_applied(room, change)
        if applied and room.persistent and self.moderation is not None:
            self.moderation.save(room)
        return applied

    def _mode_choices(self, change: ModeChange) -> tuple[ModeChange, ...]:
        """`change` with its list entry (a ban or an exception) read as an entry; a removal,
        each entry it may mean in turn."""
        mode = change.mode
        if not isinstance(mode, RoomList) or not change.arg:
            return (change,)
        if change.add:
            return (ModeChange(True, mode, self.ban_entry(change.arg)),)
        entries = self.unban_entries(change.arg)
        return tuple(ModeChange(False, mode, entry) for entry in entries)

    def ban_entry(self, target: str) -> str:
        """The ban (or mute) entry for what a moderator typed, the same from every protocol
        (native `/ban`, JSON `ban`, IRC `MODE +b`), so that it keeps out the same people
        whatever protocol they come back on. No lock held: it may ask the account store.

        A bare name is the account it names when one is logged in under that nick or it is a
        registered account (`~a:ACCOUNT`: any nick, any host, any protocol), otherwise the
        nick (`NAME!*@*`). Anything else is a mask, completed as IRC servers do.
        """
        if target.startswith(ACCOUNT_PREFIX) or any(c in target for c in "!@*?"):
            return complete_mask(target)
        online = self.find_user(target)
        if online is not None and online.account is not None:
            return ACCOUNT_PREFIX + online.account
        if online is None and self.accounts is not None and self.accounts.is_registered(target):
            return ACCOUNT_PREFIX + target
        return complete_mask(target)

    def unban_entries(self, target: str) -> tuple[str, ...]:
        """The entries an unban of `target` may mean, most likely first: what `ban_entry`
        gives now, then the plain mask (a ban set before the name became an account)."""
        first, plain = self.ban_entry(target), complete_mask(target)
        return (first,) if first == plain else (first, plain)

    def set_user_modes(self, user: User, changes: Sequence[ModeChange]) -> list[ModeChange]:
        """Change `user`'s own flags: invisible and wallops freely; server operator may only
        be dropped (see `grant_server_operator`). Other changes are ignored."""
        with delivery.batch(), self._lock:
            applied: list[ModeChange] = []
            for change in changes:
                flag = change.mode
                if not isinstance(flag, UserFlag):
                    continue
                dropping_oper = flag is UserFlag.SERVER_OPERATOR and not change.add
                if flag not in SELF_SET_USER_FLAGS and not dropping_oper:
                    continue
                if change.add != (flag in user.flags):
                    (user.flags.add if change.add else user.flags.discard)(flag)
                    applied.append(ModeChange(change.add, flag))
                    self._opers_counted_at = float("-inf")
            if applied:
                self._fan_out(_mode_event(user.nick, applied, target=user.nick), [user])
                self._publish_user(user)
            return applied

    def grant_server_operator(self, user: User) -> None:
        """Make `user` a server operator (the caller has checked the credentials)."""
        with delivery.batch(), self._lock:
            if UserFlag.SERVER_OPERATOR not in user.flags:
                user.flags.add(UserFlag.SERVER_OPERATOR)
                self._opers_counted_at = float("-inf")
                change = ModeChange(True, UserFlag.SERVER_OPERATOR)
                self._fan_out(_mode_event(user.nick, [change], target=user.nick), [user])
                self._publish_user(user)

    def _publish_user(self, user: User) -> None:
        """Tell the other nodes a local user's whole record again (hub lock held): with its
        rooms, so that its presence key, which a node starting reads, has the change too."""
        if self.bus is not None and user.node is None:
            self.bus.publish("user", node_shard(self.bus.node), self._user_record(user))

    def kick(self, user: User, room_name: str, nick: str, reason: str = "") -> None:
        """Remove `nick` from the room as `user`, for every protocol (IRC KICK, native
        `/kick`, JSON `kick`). Who may: see `may_moderate`; the owner account and server
        operators may do it from outside the room. The target must be in the room.
        Raises HubError: no_such_room, not_in_room, not_operator, no_such_nick,
        user_not_in_room. Every member, the target included, sees one Kicked event."""
        check_text(reason)
        with delivery.batch(), self._lock:
            room = self._rooms.get(names.fold(room_name))
            if room is None:
                raise HubError("no_such_room", f"there is no room {room_name}")
            if not self.may_moderate(user, room):
                if user.key not in room.members:
                    raise HubError("not_in_room", f"you are not in {room.name}")
                raise HubError("not_operator", f"you are not an operator of {room.name}")
            target = self._users.get(names.fold(nick))
            if target is None:
                raise HubError("no_such_nick", f"there is nobody called {nick}")
            if target.key not in room.members:
                raise HubError("user_not_in_room", f"{target.nick} is not in {room.name}")
            event = events.Kicked(room=room.name, nick=target.nick, by=user.nick, reason=reason)
            self._fan_out(event, room.members.values())
            self._remove_member(room, target)
            if self.bus is not None:
                record = {"room": room.name, "nick": target.nick, "by": user.nick,
                          "reason": reason}  # fmt: skip
                if target.node is None:
                    record["presence"] = self._user_record(target)
                self.bus.publish("kick", room.key, record)
            if target.always_on and self.always_on is not None and target.account is not None:
                self.always_on.left(target.account, room.name)

    def invite(self, user: User, nick: str, room_name: str) -> User:
        """Invite `nick` to a room `user` is in; the invitee may then pass +i. Returns them."""
        with delivery.batch(), self._lock:
            target = self._users.get(names.fold(nick))
            if target is None:
                raise HubError("no_such_nick", f"there is nobody called {nick}")
            room = self._member_room(user, room_name)
            if target.key in room.members:
                raise HubError("user_in_room", f"{target.nick} is already in {room.name}")
            if RoomFlag.INVITE_ONLY in room.flags and not self.may_moderate(user, room):
                raise HubError("not_operator", f"only operators invite to {room.name}")
            room.invited.add(target.key)
            self._fan_out(events.Invited(room=room.name, nick=target.nick, by=user.nick), [target])
            if self.bus is not None:
                self.bus.publish("invite", room.key, {"room": room.name, "nick": target.nick,
                                 "by": user.nick, "room_state": _room_record(room)})  # fmt: skip
            self._tell_invited(user, room, target)
            return target

    def rename_room(self, user: User, old: str, new: str, reason: str = "") -> Room:
        """Rename the room `old` to `new` as `user` (who may moderate it), keeping everything
        it has: members, statuses, modes, lists, topic, metadata, invitations and history.
        Each member is told (`RoomRenamed`). A rename that only changes case is allowed;
        the server's default room keeps its name. Raises HubError no_such_room,
        not_in_room, not_operator, invalid_room, room_exists, cannot_rename."""
        _check_room(new)
        check_text(reason)
        with delivery.batch(), self._lock:
            room = self._rooms.get(names.fold(old))
            if room is None or room.hidden_from(user):
                raise HubError("no_such_room", f"there is no room {old}")
            old_key, new_key = room.key, names.fold(new)
            if old_key == names.fold(DEFAULT_ROOM):
                raise HubError("cannot_rename", f"{room.name} is the server's room")
            if not self.may_moderate(user, room):
                if user.key not in room.members:
                    raise HubError("not_in_room", f"you are not in {room.name}")
                raise HubError("not_operator", f"you are not an operator of {room.name}")
            if new_key != old_key and new_key in self._rooms:
                raise HubError("room_exists", f"there is a room {new} already")
            old_name = room.name
            if self.bus is not None:
                # On the streams of both names: a node reads the rename before any later
                # event of the new name, and applies it from whichever stream comes first.
                record = {"old": old_name, "new": new, "by": user.nick, "reason": reason}
                self.bus.publish("rename", old_key, record)
            self._rename_room(room, new, user.nick, reason, stored=True)
            if self.bus is not None:
                # The new name's copy carries the room's state, kept under the new name.
                self.bus.publish("rename", new_key, {**record, "room_state": _room_record(room)})
        if room.persistent and self.moderation is not None:
            self.moderation.save(room)
        return room

    def _rename_room(self, room: Room, new: str, by: str, reason: str, *, stored: bool) -> None:
        """Rename `room` and tell its members (hub lock held). `stored`: the stored history
        and record move too (the node where the rename happened does it, for all)."""
        old_key, new_key = room.key, names.fold(new)
        old_name = room.name
        room.name, room.renamed_from = new, old_name
        del self._rooms[old_key]
        self._rooms[new_key] = room
        for member in room.members.values():
            member.rooms.pop(old_key, None)
            member.rooms[new_key] = room
        if new_key != old_key:
            if self.history is not None and stored:
                self.history.room_renamed(old_name, new)
            if self.moderation is not None:
                self.moderation.renamed(old_name, room, stored=stored)
            if not stored:
                # Events of the old name still on their way (its stream may be read after
                # the new one's) find the room under its new name.
                self._renamed_rooms[old_key] = new_key
                if len(self._renamed_rooms) > RENAMES_REMEMBERED:
                    del self._renamed_rooms[next(iter(self._renamed_rooms))]
        topic = events.TopicInfo(room=new, topic=room.topic, by=room.topic_by, set_at=room.topic_at)
        shown = tuple((m.nick, _status(room, m)) for m in room.members.values())
        flags = frozenset(str(flag) for flag in room.flags)
        for member in room.members.values():
            event = events.RoomRenamed(
                old=old_name,
                new=new,
                by=by,
                reason=reason,
                member=member.nick,
                topic=topic,
                members=shown,
                flags=flags,
            )
            self._fan_out(event, [member])

    def invitations(self, user: User) -> list[str]:
        """The rooms `user` is invited to and has not joined since (IRC `INVITE` alone)."""
        with self._lock:
            return [room.name for room in self._rooms.values() if user.key in room.invited]

    def _tell_invited(self, user: User, room: Room, target: User) -> None:
        """The members who could have invited too learn of it (all in an open room)."""
        invite_only = RoomFlag.INVITE_ONLY in room.flags
        told = [
            m
            for m in room.members.values()
            if m is not user and (not invite_only or self.may_moderate(m, room))
        ]
        notice = events.Invited(room=room.name, nick=target.nick, by=user.nick, notify=True)
        self._fan_out(notice, told)

    def set_away(self, user: User, message: str | None) -> None:
        """Mark `user` away with `message`, or back with None; peers see AwayChanged."""
        if message is not None:
            check_text(message)
            if len(message) > names.AWAY_MAX:
                raise HubError(
                    "too_long", f"an away message is at most {names.AWAY_MAX} characters"
                )
        with delivery.batch(), self._lock:
            if user.away == message:
                return
            user.away = message
            event = events.AwayChanged(nick=user.nick, away=message)
            self._fan_out(event, self._told_of_changes(user))
            if self.bus is not None and user.node is None:
                self.bus.publish("user", node_shard(self.bus.node),
                                 self._user_record(user, rooms=False))  # fmt: skip

    def wallops(self, user: User, text: str) -> None:
        """A server operator's message to every user with the wallops flag."""
        check_text(text)
        with delivery.batch(), self._lock:
            if UserFlag.SERVER_OPERATOR not in user.flags:
                raise HubError("not_privileged", "only server operators send wallops")
            readers = [u for u in self._users.values() if UserFlag.WALLOPS in u.flags]
            self._fan_out(events.Wallops(sender=user.nick, text=text), readers)
            if self.bus is not None:
                self.bus.publish("wallops", node_shard(self.bus.node),
                                 {"sender": user.nick, "text": text})  # fmt: skip

    def kill(self, user: User, nick: str, reason: str) -> User:
        """Tell `nick` that server operator `user` disconnects them, and return them.

        The caller ends the victim's connection (the hub owns no sockets); the victim's
        transport then unregisters it, so everyone sees an ordinary quit.
        """
        check_text(reason)
        with delivery.batch(), self._lock:
            if UserFlag.SERVER_OPERATOR not in user.flags:
                raise HubError("not_privileged", "only server operators may kill")
            target = self._users.get(names.fold(nick))
            if target is None:
                raise HubError("no_such_nick", f"there is nobody called {nick}")
            self._fan_out(events.Killed(nick=target.nick, by=user.nick, reason=reason), [target])
            if target.node is not None and self.bus is not None:
                self.bus.publish("kill", node_shard(target.node), {"nick": target.nick,
                                 "by": user.nick, "reason": reason})  # fmt: skip
            return target

    def _room_state(self, room: Room, members: Iterable[User] | None = None) -> "RoomState":
        shown = room.members.values() if members is None else members
        return RoomState(
            name=room.name,
            created=room.created,
            topic=room.topic,
            topic_by=room.topic_by,
            topic_at=room.topic_at,
            flags=frozenset(room.flags),
            password=room.password,
            limit=room.limit,
            bans=tuple(room.bans),
            members=tuple((u, _status(room, u)) for u in shown),
            ban_exceptions=tuple(room.ban_exceptions),
            invite_exceptions=tuple(room.invite_exceptions),
        )

    def _apply_mode(self, room: Room, change: ModeChange) -> ModeChange | None:
        """Apply one change to `room`; the change as applied (what members are shown), or
        None when it changes nothing (lock held). Raises HubError for an absent member."""
        mode, add, arg = change.mode, change.add, change.arg
        if isinstance(mode, RoomFlag):
            if add == (mode in room.flags):
                return None
            (room.flags.add if add else room.flags.discard)(mode)
            return ModeChange(add, mode)
        if isinstance(mode, MemberStatus):
            target = self._users.get(names.fold(arg or ""))
            if target is None:
                raise HubError("no_such_nick", f"there is nobody called {arg}")
            if target.key not in room.members:
                raise HubError("user_not_in_room", f"{target.nick} is not in {room.name}")
            group = room.operators if mode is MemberStatus.OPERATOR else room.voiced
            if add == (target.key in group):
                return None
            (group.add if add else group.discard)(target.key)
            return ModeChange(add, mode, target.nick)
        if mode is RoomSetting.KEY:
            if add and arg:
                room.password = arg
                return ModeChange(True, mode, arg)
            if not add and room.password is not None:
                room.password = None
                return ModeChange(False, mode)
            return None
        if mode is RoomSetting.LIMIT:
            if add and arg and arg.isdigit() and int(arg) > 0:
                room.limit = int(arg)
                return ModeChange(True, mode, str(room.limit))
            if not add and room.limit is not None:
                room.limit = None
                return ModeChange(False, mode)
            return None
        if isinstance(mode, RoomList) and arg:
            entries = room.entries(mode)
            present = [b for b in entries if names.fold(b) == names.fold(arg)]
            if add and not present and len(entries) < MAX_BANS:
                entries.append(arg)
                return ModeChange(True, mode, arg)
            if not add and present:
                entries.remove(present[0])
                return ModeChange(False, mode, present[0])
        return None

    # -- several nodes: what the other nodes did (see ports.Bus) ----------------------------
    # The other nodes publish plain data (`_user_record`, `_message_record`, ...); the bus
    # hands it to `apply_remote` in order per room. It is applied without this node's checks
    # (the node of the user who acted made them) and shown to the local members through the
    # same fan-out as a local event. Remote users are `User`s with `node` set and no
    # connection, so member lists, lookups and nick checks see them as anyone else.

    def _user_record(self, user: User, *, rooms: bool = True) -> dict[str, Any]:
        """What other nodes know of a local user (lock held)."""
        record: dict[str, Any] = {
            "nick": user.nick,
            "account": user.account,
            "realname": user.realname,
            "username": user.username,
            "host": user.host,
            "away": user.away,
            # Server operator, invisible, wallops, bot: WHOIS, who sees whom, and who reads
            # wallops are the same on every node.
            "flags": sorted(flag.value for flag in user.flags),
        }
        if rooms:
            record["rooms"] = [
                [room.name, user.key in room.operators, room.owner] for room in user.rooms.values()
            ]
        return record

    def local_user_records(self) -> list[dict[str, Any]]:
        """Every local user as other nodes know them, with their rooms (for the bus's
        presence keys and a resynchronisation)."""
        with self._lock:
            return [self._user_record(u) for u in self._users.values() if u.node is None]

    def apply_remote(self, kind: str, node: str, data: dict[str, Any]) -> None:
        """Apply what node `node` published (see `ports.Bus`); unknown or stale data (a user
        or room this node no longer has) is ignored, as it may arrive after a removal."""
        if kind == "msg":
            self._remote_room_message(data)
            return
        doomed: list[tuple[User, str]] = []
        with delivery.batch(), self._lock:
            if kind == "pm":
                self._remote_private(data)
            elif kind == "tags":
                self._remote_tags(data)
            elif kind == "wallops":
                readers = [
                    u
                    for u in self._users.values()
                    if u.node is None and UserFlag.WALLOPS in u.flags
                ]
                self._fan_out(events.Wallops(sender=data["sender"], text=data["text"]), readers)
            elif kind in _LIVE_EVENTS and data.get("room") is None:
                self._apply_remote_private_live(kind, data)
            elif kind == "kill":
                victim = self._users.get(names.fold(data["nick"]))
                if victim is not None and victim.node is None:
                    killed = events.Killed(nick=victim.nick, by=data["by"], reason=data["reason"])
                    self._fan_out(killed, [victim])
                    doomed = [(victim, f"Killed ({data['by']} ({data['reason']}))")]
            elif kind == "user":
                ghost = self._ghost(node, data)
                if ghost is not None:
                    for room_name, op, owner in data.get("rooms", ()):
                        self._remote_join(ghost, room_name, op, owner)
            elif kind == "join":
                ghost = self._ghost(node, data)
                if ghost is not None:
                    self._remote_join(ghost, data["room"], data.get("op", False), data.get("owner"))
            elif kind == "rename":
                self._remote_rename(data)
            elif kind == "room":
                self._apply_room_state(data)
            elif kind == "quit":
                ghost = self._users.get(names.fold(data["nick"]))
                if ghost is not None and ghost.node == node:
                    self._remove_user(ghost, data["reason"])
            elif kind == "nick":
                ghost = self._users.get(names.fold(data["old"]))
                holder = self._users.get(names.fold(data["new"]))
                if ghost is not None and ghost.node == node and holder in (None, ghost):
                    self._rename(ghost, data["new"])
            else:
                self._remote_room_change(kind, node, data)
        # As a local KILL: the transport ends the connections (outside the hub lock).
        for victim, reason in doomed:
            for conn in victim.connections:
                abort = getattr(conn, "abort", None)
                if abort is not None:
                    abort(reason)

    def remote_node_lost(self, node: str, reason: str = "node lost") -> int:
        """Every user of `node` leaves, as if they had quit with `reason`; how many."""
        with delivery.batch(), self._lock:
            lost = [u for u in self._users.values() if u.node == node]
            for user in lost:
                self._remove_user(user, reason)
        if lost:
            log.warning("node %s lost: %d users left", node, len(lost))
        return len(lost)

    def remote_users(self) -> list[tuple[str, str]]:
        """(nick, node) of every user of another node known here."""
        with self._lock:
            return [(u.nick, u.node) for u in self._users.values() if u.node is not None]

    def remote_user_gone(self, nick: str, node: str, reason: str) -> bool:
        """A user of `node` whose quit never arrived (or was overtaken) leaves here."""
        with delivery.batch(), self._lock:
            user = self._users.get(names.fold(nick))
            if user is None or user.node != node:
                return False
            return self._remove_user(user, reason)

    def remote_nodes(self) -> set[str]:
        """The nodes that users here are on, besides this one."""
        with self._lock:
            return {u.node for u in self._users.values() if u.node is not None}

    def _ghost(self, node: str, data: dict[str, Any]) -> User | None:
        """The remote user `data` describes, made or updated (lock held); None when a
        local user has the nick (the bus's nick claims make that a passing race)."""
        key = names.fold(data["nick"])
        user = self._users.get(key)
        if user is not None and user.node is None:
            log.warning("%s of node %s: the nick is a local user's here", data["nick"], node)
            return None
        if user is None:
            user = User(nick=data["nick"], connections=(), node=node)
            self._users[key] = user
            if key in self._watchers:
                self._tell_watchers(user, online=True)
        user.node = node
        account, realname = data.get("account"), data.get("realname") or ""
        if account != user.account:
            user.account = account
            changed_account = events.AccountChanged(nick=user.nick, account=account)
            self._fan_out(changed_account, self._told_of_changes(user))
        if realname != user.realname:
            user.realname = realname
            renamed = events.RealnameChanged(nick=user.nick, realname=realname)
            self._fan_out(renamed, self._told_of_changes(user))
        user.username = data.get("username") or ""
        user.host = data.get("host") or ""
        flags = {UserFlag(v) for v in data.get("flags", ()) if v in _USER_FLAG_VALUES}
        if flags != user.flags:
            user.flags = flags
            self._opers_counted_at = float("-inf")
        away = data.get("away")
        if away != user.away:
            user.away = away
            changed = events.AwayChanged(nick=user.nick, away=away)
            self._fan_out(changed, self._told_of_changes(user))
        return user

    def local_room_records(self) -> list[tuple[str, dict[str, Any]]]:
        """(folded name, state) of every room with a member on this node: the bus keeps
        these in Redis for nodes that gain their first member of one (`wants_room_state`)."""
        with self._lock:
            rooms = {
                room.key: room
                for user in self._users.values()
                if user.node is None
                for room in user.rooms.values()
            }
            return [(key, _room_record(room)) for key, room in rooms.items()]

    def wants_room_state(self, room_name: str) -> bool:
        """Whether this node's copy of the room needs the state other nodes keep of it: it
        has members, all of them elsewhere (so no event of it started here), or the node
        has none and the room is about to get its first (`join`)."""
        with self._lock:
            room = self._room_of_remote(room_name)
            return (
                room is not None
                and bool(room.members)
                and all(m.node is not None for m in room.members.values())
            )

    def remote_room_names(self) -> list[str]:
        """The rooms this node knows only through other nodes' members."""
        with self._lock:
            return [
                room.name
                for room in self._rooms.values()
                if room.members and all(m.node is not None for m in room.members.values())
            ]

    def _apply_room_state(self, data: dict[str, Any]) -> None:
        """The room's state as the nodes with members keep it in Redis (hub lock held),
        taken when no member is here (`wants_room_state`): this node's copy becomes it.
        Nothing is shown: nobody here is in the room yet."""
        room = self._room_of_remote(data["name"])
        if room is None or not room.members or any(m.node is None for m in room.members.values()):
            return
        room.topic = data.get("topic", "")
        room.topic_by = data.get("topic_by", "")
        room.topic_at = data.get("topic_at", 0.0)
        room.owner = data.get("owner")
        room.created = data.get("created", room.created)
        room.flags = {RoomFlag(v) for v in data.get("flags", ()) if v in _ROOM_FLAG_VALUES}
        room.password = data.get("key")
        room.limit = data.get("limit")
        room.bans = list(data.get("bans", ()))
        room.ban_exceptions = list(data.get("ban_exceptions", ()))
        room.invite_exceptions = list(data.get("invite_exceptions", ()))
        members = room.members
        room.operators = {k for k in map(names.fold, data.get("operators", ())) if k in members}
        room.voiced = {k for k in map(names.fold, data.get("voiced", ())) if k in members}
        room.invited = set(map(names.fold, data.get("invited", ())))

    def _room_of_remote(self, room_name: str) -> Room | None:
        """The room an event of another node names (hub lock held): by its name, or by the
        name it had before another node renamed it."""
        key = names.fold(room_name)
        room = self._rooms.get(key)
        if room is None and key in self._renamed_rooms:
            room = self._rooms.get(self._renamed_rooms[key])
        return room

    def _remote_rename(self, data: dict[str, Any]) -> None:
        """Another node renamed a room (published on the streams of both names; the second
        copy finds nothing left to do)."""
        room = self._rooms.get(names.fold(data["old"]))
        new_key = names.fold(data["new"])
        if room is None or room.name == data["new"]:
            return
        target = self._rooms.get(new_key) if new_key != room.key else None
        if target is not None:
            if any(m.node is None for m in room.members.values()):
                log.warning("%s renamed %s: a room of that name is here", room.name, data["new"])
                return
            # Only other nodes' users under the old name (a node starting learnt some of
            # them before their nodes applied the rename): they are in the renamed room.
            for key, member in list(room.members.items()):
                member.rooms.pop(room.key, None)
                if key not in target.members:
                    target.members[key] = member
                    member.rooms[new_key] = target
                    if key in room.operators:
                        target.operators.add(key)
                    if key in room.voiced:
                        target.voiced.add(key)
            target.groups = None
            del self._rooms[room.key]
            self._renamed_rooms[room.key] = new_key
            return
        self._rename_room(room, data["new"], data["by"], data.get("reason", ""), stored=False)

    def _remote_join(self, ghost: User, room_name: str, op: bool, owner: str | None) -> None:
        room = self._room_of_remote(room_name)
        if room is None:
            room = Room(name=room_name, owner=owner)
            self._rooms[room.key] = room
        key = room.key
        if op:
            room.operators.add(ghost.key)
        if ghost.key in room.members:
            return
        room.members[ghost.key] = ghost
        if ghost.keeps_member_list:
            room.keepers[ghost.key] = ghost
        room.groups = None
        ghost.rooms[key] = room
        joined = events.Joined(
            room=room.name,
            nick=ghost.nick,
            account=ghost.account,
            realname=ghost.realname,
            away=ghost.away,
        )
        self._fan_out(joined, self._audience(room, ghost))

    def _remote_room_change(self, kind: str, node: str, data: dict[str, Any]) -> None:
        room = self._room_of_remote(data["room"])
        if room is None:
            return
        if kind == "leave":
            user = room.members.get(names.fold(data["nick"]))
            if user is not None and user.node == node:
                left = events.Left(room=room.name, nick=user.nick, reason=data["reason"])
                self._fan_out(left, self._audience(room, user))
                self._remove_member(room, user)
        elif kind == "kick":
            user = room.members.get(names.fold(data["nick"]))
            if user is not None:
                kicked = events.Kicked(
                    room=room.name, nick=user.nick, by=data["by"], reason=data["reason"]
                )
                self._fan_out(kicked, room.members.values())
                self._remove_member(room, user)
                if user.node is None:
                    self._publish_user(user)  # its presence key, without the room
        elif kind == "invite":
            target = self._users.get(names.fold(data["nick"]))
            by = self._users.get(names.fold(data["by"]))
            if target is not None and by is not None:
                room.invited.add(target.key)
                if target.node is None:
                    invited = events.Invited(room=room.name, nick=target.nick, by=by.nick)
                    self._fan_out(invited, [target])
                self._tell_invited(by, room, target)
        elif kind == "topic":
            room.topic, room.topic_by, room.topic_at = data["topic"], data["by"], time.time()
            changed = events.TopicChanged(room=room.name, topic=data["topic"], by=data["by"])
            self._fan_out(changed, room.members.values())
        elif kind == "modes":
            applied = []
            for record in data["changes"]:
                try:
                    change = self._apply_mode(room, _mode_from_record(record))
                except (HubError, KeyError, ValueError):
                    continue  # a member who left meanwhile, a mode this release lacks
                if change is not None:
                    applied.append(change)
            if applied:
                changed = _mode_event(data["by"], applied, room=room.name)
                self._fan_out(changed, room.members.values())
        elif kind in _LIVE_EVENTS:
            self._apply_remote_live(kind, room, data)
        else:
            log.warning("unknown event %r from node %s", kind, node)

    def _remote_room_message(self, data: dict[str, Any]) -> None:
        with delivery.batch():
            with self._lock:
                room = self._room_of_remote(data["room"])
                if room is None:
                    return
                sender = room.members.get(names.fold(data["sender"]))
                if sender is not None:
                    sender.last_active = time.time()
                reply = data.get("reply")
                event = events.RoomMessage(
                    room=room.name,
                    sender=data["sender"],
                    text=data["text"],
                    kind=data["kind"],
                    account=data.get("account"),
                    tags=_tags_from_record(data.get("tags")),
                    extra=live.MessageExtra(*reply) if reply else None,
                    id=data["id"],
                    ts=data["ts"],
                )
                if sender is not None and self.history is not None:
                    # Its id is the shared store's: replies, reactions, edits and
                    # deletions made on this node name it as the other node does.
                    self._remember_message(room, event, sender)
                groups = _codec_groups(room)
            # As `_relay_room`: encoded once per codec group, after the lock.
            self._fan_out_groups([(event, None, ())], groups)

    def _remote_tags(self, data: dict[str, Any]) -> None:
        """A TAGMSG of another node's user (hub lock held): to this node's members of the
        room, or to the local user it was sent to."""
        tags = _tags_from_record(data.get("tags"))
        if data.get("room") is not None:
            room = self._room_of_remote(data["room"])
            if room is None:
                return
            event = events.TagMessage(
                sender=data["sender"], tags=tags, room=room.name, account=data.get("account")
            )
            self._deliver(event, [c for m in room.members.values() for c in m.connections])
            return
        recipient = self._users.get(names.fold(data["target"]))
        if recipient is None or recipient.node is not None:
            return
        event = events.TagMessage(
            sender=data["sender"], tags=tags, target=recipient.nick, account=data.get("account")
        )
        self._deliver(event, recipient.connections)

    def _remote_private(self, data: dict[str, Any]) -> None:
        recipient = self._users.get(names.fold(data["target"]))
        if recipient is None or recipient.node is not None:
            return
        reply = data.get("reply")
        event = events.PrivateMessage(
            sender=data["sender"],
            target=recipient.nick,
            text=data["text"],
            kind=data["kind"],
            account=data.get("account"),
            tags=_tags_from_record(data.get("tags")),
            extra=live.MessageExtra(*reply) if reply else None,
            target_account=recipient.account,
            id=data["id"],
            ts=data["ts"],
        )
        sender = self._users.get(names.fold(data["sender"]))
        if sender is not None and event.kind != events.NOTICE:
            # Named by the shared store's id: the recipient may react to it, reply to it.
            _remember_private(recipient, event, sender, recipient)
        self._deliver(event, recipient.connections)

    # -- the services, as every protocol reaches them (core/ports.py) -----------------------
    # Protocols and transports import no service: what they need of history, accounts,
    # moderation and the pipelined read goes through the ports the wiring plugged in here,
    # and the rules shared by every protocol (what a join replays, who reads which history)
    # are these methods.

    def use_pipeline(self, pipeline: ports.Pipeline) -> None:
        """Plug in the pipelined read (the wiring: the history service's); without history
        it also defers room messages to the end of the read (`defer_relay`)."""
        self.pipeline = pipeline
        self.defer_relay = pipeline.defer

    def replay(
        self,
        user: User,
        room_name: str,
        *,
        marks_history: bool = True,
        fetches_history: bool = False,
    ) -> "history_types.Replay | None":
        """What `user`, who has just joined the room, is shown of its history, whatever
        their protocol: its last messages, as many as the history service replays on join.

        None without history, when the server replays none, and for a client that could not
        tell them from live messages (`marks_history` False: it would show old lines as if
        said just now) or that asks for the history it wants itself (`fetches_history`).
        The protocol only formats the result. Only a member is shown a room's history: a
        user no longer in the room (kicked right after joining) gets nothing."""
        history = self.history
        if history is None or not marks_history or fetches_history:
            return None
        with self._lock:
            joined = user.rooms.get(names.fold(room_name))
        if joined is None:
            return None
        return history.replay(joined.name)

    def read_history(
        self,
        user: User,
        query: "history_types.HistoryQuery",
        *,
        room: str | None = None,
        peer: str | None = None,
    ) -> tuple[str | None, list[Event]]:
        """Read a room's history (`room`) or `user`'s private conversation with the account
        `peer`, selected by `query` (built by `core.history.build_query`), for every
        protocol. Returns the room's name as it is shown (None for a conversation) and the
        messages, oldest first, marked `history`.

        Only members read a room's history (a ban, key or invitation that keeps someone
        out keeps them from reading it too), and only the two accounts of a conversation
        read it. Raises HubError: history_off, not_logged_in, invalid_name, not_in_room,
        history_failed (the store could not answer; logged)."""
        history = self.history
        if history is None:
            raise HubError("history_off", "this server keeps no history")
        if peer is not None:
            if user.account is None:
                raise HubError("not_logged_in", "log in to read your private conversations")
            if names.nick_error(peer):
                raise HubError("invalid_name", f"{peer} is not an account name")
            scope: dict[str, str | None] = {"asker_account": user.account, "peer": peer}
            shown = None
        else:
            assert room is not None
            with self._lock:
                joined = user.rooms.get(names.fold(room))
                shown = joined.name if joined is not None else None
            if shown is None:
                raise HubError("not_in_room", f"join {room} to read its history")
            scope = {"room": shown}
        try:
            return shown, history.read(query, **scope)
        except StoreError as problem:
            log.error("history request failed: %s", problem)
            raise HubError("history_failed", "history cannot be read right now") from None

    def search(
        self, user: User, query: "search_types.SearchQuery", *, peer: str | None = None
    ) -> list[Event]:
        """Search the history `user` may read, for every protocol: the rooms they are in
        (only members read a room's history, as in `read_history`) and their account's
        private conversations (none for a guest); a `room` filter must be one of theirs,
        and `peer` limits it to the conversation with that account. Newest first, marked
        `history`. Raises HubError history_off, not_in_room, not_logged_in, invalid_name,
        history_failed."""
        history = self.history
        if history is None:
            raise HubError("history_off", "this server keeps no history")
        if peer is not None:
            if user.account is None:
                raise HubError("not_logged_in", "log in to search your private conversations")
            if names.nick_error(peer):
                raise HubError("invalid_name", f"{peer} is not an account name")
            query = dataclasses.replace(query, room=None, peer=peer)
            return self._search(history, query, [], user.account)
        with self._lock:
            rooms = [room.name for room in user.rooms.values()]
            account = user.account
            if query.room is not None:
                joined = user.rooms.get(names.fold(query.room.lstrip("#")))
                if joined is None:
                    raise HubError("not_in_room", f"join {query.room} to search it")
                query = dataclasses.replace(query, room=joined.name)
        return self._search(history, query, rooms, account)

    @staticmethod
    def _search(
        history: ports.History,
        query: "search_types.SearchQuery",
        rooms: list[str],
        account: str | None,
    ) -> list[Event]:
        try:
            return history.search(query, rooms, account)
        except StoreError as problem:
            log.error("search failed: %s", problem)
            raise HubError("history_failed", "history cannot be searched right now") from None

    def mark_read(
        self, user: User, target: str, read_ms: int, *, origin: Connection | None = None
    ) -> events.ReadMarker:
        """Move `user`'s read marker of a room they are in (`target` a room name) or of a
        private conversation (`target` a nick) forward to `read_ms`: stored per account, or
        for a guest kept in memory while they are connected (the read-marker draft gives
        markers to every client); every connection of the person but `origin` (the one that
        asked, which the caller answers with the marker returned) is told the marker, so the
        devices agree. A marker never moves back: a time older than the kept one leaves it,
        and the answer holds the kept one. Raises HubError history_off, not_in_room,
        invalid_name, history_failed."""
        history = self.history
        if history is None:
            raise HubError("history_off", "this server keeps no history")
        shown, is_room, key, markable = self._marker_target(user, target)
        if not markable:
            raise HubError("not_in_room", f"you are not in {shown}")
        # A marker is of a message already received: never later than now.
        read_ms = max(0, min(read_ms, time.time_ns() // 1_000_000))
        account = user.account
        if account is None:
            with self._lock:
                kept = user.guest_markers
                if kept is None:
                    kept = user.guest_markers = {}
                elif key not in kept and len(kept) >= GUEST_MARKERS_MAX:
                    del kept[next(iter(kept))]
                stored = kept[key] = max(kept.get(key, 0), read_ms)
        else:
            try:
                stored = history.set_read_marker(account, key, read_ms)
            except StoreError as problem:
                log.error("read marker not stored: %s", problem)
                raise HubError("history_failed", "the read marker cannot be stored now") from None
        marker = events.ReadMarker(target=shown, room=is_room, read_ms=stored)
        if stored == read_ms:  # it moved (or was set again): the other devices are told
            with delivery.batch(), self._lock:
                self._deliver(marker, [c for c in user.connections if c is not origin])
        return marker

    def read_marker(self, user: User, target: str) -> events.ReadMarker:
        """`user`'s read marker of `target` (as for `mark_read`), read_ms 0 when none. A
        channel they are not in (or that does not exist) is answered too: the marker is
        their own, and none is kept for it unless they were in it. Raises HubError
        history_off, invalid_name, history_failed."""
        if self.history is None:
            raise HubError("history_off", "this server keeps no history")
        shown, is_room, key, _ = self._marker_target(user, target)
        markers = self._read_markers(user)
        return events.ReadMarker(target=shown, room=is_room, read_ms=markers.get(key, 0))

    def read_markers(self, user: User) -> list[events.ReadMarker]:
        """The markers of the rooms `user` is in and of their private conversations, for a
        client that has just connected (none without history)."""
        if self.history is None:
            return []
        markers = self._read_markers(user)
        with self._lock:
            rooms = {room.key: room.name for room in user.rooms.values()}
        shown = []
        for key, read_ms in sorted(markers.items()):
            if key.startswith("@"):
                shown.append(events.ReadMarker(target=key[1:], room=False, read_ms=read_ms))
            elif key in rooms:
                shown.append(events.ReadMarker(target=rooms[key], room=True, read_ms=read_ms))
        return shown

    def _read_markers(self, user: User) -> dict[str, int]:
        """The markers kept for `user`: their account's, or a guest's own (a copy)."""
        assert self.history is not None
        account = user.account
        if account is None:
            with self._lock:
                return dict(user.guest_markers or {})
        try:
            return self.history.read_markers(account)
        except StoreError as problem:
            log.error("read markers not read: %s", problem)
            raise HubError("history_failed", "read markers cannot be read now") from None

    def _marker_target(self, user: User, target: str) -> tuple[str, bool, str, bool]:
        """(the target as shown, whether a room, its key in the store, whether `user` may
        mark it). A room `user` is not in (or that does not exist) may be asked about, not
        marked."""
        room_name = target[1:] if target.startswith("#") else target
        with self._lock:
            joined = user.rooms.get(names.fold(room_name))
            if joined is not None:
                return joined.name, True, joined.key, True
            if target.startswith("#") or names.fold(room_name) in self._rooms:
                if names.room_error(room_name):
                    raise HubError("invalid_name", f"{target} is not a room name")
                return room_name, True, names.fold(room_name), False
        if names.nick_error(target):
            raise HubError("invalid_name", f"{target} is neither your room nor a name")
        return target, False, "@" + names.fold(target), True

    def history_targets(
        self, user: User, after_ms: int, before_ms: int, limit: int
    ) -> list[tuple[str, bool, int]]:
        """Which of `user`'s conversations had their latest message between two times (ms,
        either order): of the rooms they are in and their account's private conversations,
        as (room name or peer account, is a room, that time), oldest first. Raises
        HubError history_off, history_failed."""
        history = self.history
        if history is None:
            raise HubError("history_off", "this server keeps no history")
        with self._lock:
            rooms = [room.name for room in user.rooms.values()]
            account = user.account
        low, high = sorted((after_ms, before_ms))
        try:
            return history.targets(rooms, account, low, high, limit)
        except StoreError as problem:
            log.error("history targets request failed: %s", problem)
            raise HubError("history_failed", "history cannot be read right now") from None

    # -- metadata (core/metadata.py) -------------------------------------------------------

    def _metadata_holder(
        self, viewer: User, room: str | None, nick: str | None
    ) -> tuple[Room | User, str]:
        """The room or user whose metadata is asked for, and its name (hub lock held).
        A room's is read by its members and server operators only (as its history is)."""
        if room is not None:
            found = self._rooms.get(names.fold(room))
            if found is None or found.hidden_from(viewer):
                raise HubError("no_such_room", f"there is no room {room}")
            if viewer.key not in found.members and not self.sees_everyone(viewer):
                raise HubError("not_in_room", f"you are not in {found.name}")
            return found, found.name
        target = self._users.get(names.fold(nick or viewer.nick))
        if target is None:
            raise HubError("no_such_nick", f"there is nobody called {nick}")
        return target, target.nick

    def _may_change_metadata(self, user: User, holder: Room | User) -> bool:
        if isinstance(holder, Room):
            return self.may_moderate(user, holder)
        return holder is user or UserFlag.SERVER_OPERATOR in user.flags

    def metadata_of(
        self, viewer: User, *, room: str | None = None, nick: str | None = None
    ) -> tuple[str, dict[str, str]]:
        """The name of the room `room` or the user `nick` (`viewer` when neither) and a copy
        of its metadata. Raises HubError no_such_room, no_such_nick, not_in_room."""
        with self._lock:
            holder, name = self._metadata_holder(viewer, room, nick)
            return name, dict(holder.metadata)

    def set_metadata(
        self,
        user: User,
        key: str,
        value: str | None,
        *,
        room: str | None = None,
        nick: str | None = None,
        origin: Connection | None = None,
    ) -> tuple[str, str]:
        """Set (or with None or "" unset) `key` on a room (its operators may) or on a user
        (themselves, or a server operator); returns the holder's name and the key as kept.
        Subscribers of the key who share the room, or a room with the user, are told, and
        the user's other connections, but not `origin`. Raises HubError invalid_key,
        invalid_value, not_operator, not_privileged, limit_reached and those of
        `metadata_of`."""
        key = metadata.check_key(key)
        if value:
            metadata.check_value(value)
        origin = _origin(user, origin)
        with delivery.batch(), self._lock:
            holder, name = self._metadata_holder(user, room, nick)
            if not self._may_change_metadata(user, holder):
                raise HubError("not_privileged", f"you may not change the metadata of {name}")
            values = holder.metadata
            if value:
                if key not in values and len(values) >= metadata.MAX_KEYS:
                    raise HubError(
                        "limit_reached", f"{name} holds {metadata.MAX_KEYS} keys already"
                    )
                changed = values.get(key) != value
                values[key] = value
            else:
                changed = values.pop(key, None) is not None
                value = None
            if changed:
                self._tell_metadata(holder, key, value, origin)
            return name, key

    def clear_metadata(
        self,
        user: User,
        *,
        room: str | None = None,
        nick: str | None = None,
        origin: Connection | None = None,
    ) -> tuple[str, list[str]]:
        """Unset every key of a room or a user (on the terms of `set_metadata`); returns the
        holder's name and the keys that were set."""
        origin = _origin(user, origin)
        with delivery.batch(), self._lock:
            holder, name = self._metadata_holder(user, room, nick)
            if not self._may_change_metadata(user, holder):
                raise HubError("not_privileged", f"you may not change the metadata of {name}")
            cleared = list(holder.metadata)
            holder.metadata.clear()
            for key in cleared:
                self._tell_metadata(holder, key, None, origin)
            return name, cleared

    def _tell_metadata(
        self, holder: Room | User, key: str, value: str | None, origin: Connection | None
    ) -> None:
        """Tell the subscribers of `key` who see `holder` that it changed (hub lock held)."""
        if isinstance(holder, Room):
            event = events.MetadataChanged(key=key, value=value, room=holder.name)
            audience: Iterable[User] = holder.members.values()
        else:
            event = events.MetadataChanged(key=key, value=value, nick=holder.nick)
            audience = [holder, *self._peers(holder)]
        connections = [
            c for u in audience if key in u.metadata_subs for c in u.connections if c is not origin
        ]
        self._deliver(event, connections)

    def subscribe_metadata(
        self, user: User, keys: Iterable[str]
    ) -> tuple[list[str], list[str], str | None]:
        """Subscribe `user` to `keys`, in order: returns the keys subscribed (as kept, those
        subscribed before included), the invalid ones, and the first key refused for the
        limit (`metadata.MAX_SUBS`; the keys after it are not looked at), or None."""
        subscribed: list[str] = []
        invalid: list[str] = []
        with self._lock:
            for given in keys:
                key = metadata.normal_key(given)
                if key is None:
                    invalid.append(given)
                    continue
                if key not in user.metadata_subs and len(user.metadata_subs) >= metadata.MAX_SUBS:
                    return subscribed, invalid, given
                user.metadata_subs.add(key)
                subscribed.append(key)
        return subscribed, invalid, None

    def unsubscribe_metadata(self, user: User, keys: Iterable[str]) -> tuple[list[str], list[str]]:
        """Unsubscribe `user` from `keys`: returns the valid keys (subscribed or not) and the
        invalid ones."""
        removed: list[str] = []
        invalid: list[str] = []
        with self._lock:
            for given in keys:
                key = metadata.normal_key(given)
                if key is None:
                    invalid.append(given)
                else:
                    user.metadata_subs.discard(key)
                    removed.append(key)
        return removed, invalid

    def sync_metadata(
        self, viewer: User, *, room: str | None = None, nick: str | None = None
    ) -> list[tuple[str, bool, str, str]]:
        """The values of the keys `viewer` subscribed to, as (holder's name, whether it is a
        room, key, value): of the user
        `nick`, or of the room `room` and each of its members (what a client shows of a room
        it joins). Raises HubError as `metadata_of`."""
        with self._lock:
            holder, name = self._metadata_holder(viewer, room, nick)
            subs = viewer.metadata_subs
            is_room = isinstance(holder, Room)
            found = [(name, is_room, k, v) for k, v in holder.metadata.items() if k in subs]
            if isinstance(holder, Room):
                for member in holder.members.values():
                    found += [
                        (member.nick, False, k, v) for k, v in member.metadata.items() if k in subs
                    ]
            return found

    def user_info(
        self, nick: str, ref: object = None, viewer: User | None = None
    ) -> events.UserInfo:
        """What anyone may look up about the user `nick` (a whois), taken in one moment:
        their account, real name, rooms with their status there (without the rooms hidden
        from `viewer`), away message, whether they are a server operator, and how long they
        have been idle. Raises HubError no_such_nick."""
        with self._lock:
            user = self._users.get(names.fold(nick))
            if user is None:
                raise HubError("no_such_nick", f"there is nobody called {nick}")
            return events.UserInfo(
                nick=user.nick,
                account=user.account,
                realname=user.realname,
                rooms=tuple(
                    (r.name, _status(r, user))
                    for r in user.rooms.values()
                    if not r.hidden_from(viewer)
                ),
                away=user.away,
                operator=UserFlag.SERVER_OPERATOR in user.flags,
                idle=max(0, int(time.time() - user.last_active)),
                signon=user.signon,
                ref=ref,
            )


def encode_contained(encode: Callable[[Event], bytes | None], event: Event) -> bytes | None:
    """`encode(event)`, or None (logged) when the encoder fails on it.

    An event that one codec cannot encode is skipped for that codec alone: it must never
    raise into the fan-out, where it would stop delivery to the other recipients, nor into a
    reader thread, where it would end that user's connection. The hub refuses what no
    protocol could carry (see `_check_text`), so this is the last line, not the rule.
    """
    try:
        return encode(event)
    except Exception:
        log.exception("cannot encode %s; not sent to this codec", type(event).__name__)
        return None


def _check_nick(nick: str) -> None:
    problem = names.nick_error(nick)
    if problem:
        raise HubError("invalid_name", problem)


def _check_room(room: str) -> None:
    problem = names.room_error(room)
    if problem:
        raise HubError("invalid_room", problem)


def check_text(text: str, *, strict: bool = False) -> None:
    """Refuse a free-text field that no protocol could carry (see names.unsendable_error),
    or with `strict`, any control character too (names.text_error); raises HubError.

    Every free-text field entering the hub passes the lenient check, whatever protocol it
    came from; the native protocols apply the strict one first.
    """
    problem = names.text_error(text) if strict else names.unsendable_error(text)
    if problem is not None:
        code = "bad_encoding" if problem is names.SURROGATE_PROBLEM else "control_chars"
        raise HubError(code, problem)


def check_message(text: str, *, strict: bool = False) -> None:
    """`check_text` for a message's text, which may hold line breaks (a multiline message:
    at most live.MULTILINE_MAX_LINES lines and live.MULTILINE_MAX_BYTES bytes); each line
    is checked as a text field. Raises HubError (too_long for past the limits)."""
    if "\n" not in text:
        check_text(text, strict=strict)
        return
    lines = text.split("\n")
    if len(lines) > live.MULTILINE_MAX_LINES:
        raise HubError("too_long", f"a message has at most {live.MULTILINE_MAX_LINES} lines")
    if len(text.encode("utf-8", "surrogatepass")) > live.MULTILINE_MAX_BYTES:
        raise HubError(
            "too_long", f"a message with line breaks is at most {live.MULTILINE_MAX_BYTES} bytes"
        )
    if not text.strip():
        raise HubError("bad_request", "a message cannot be only blank lines")
    for line in lines:
        check_text(line, strict=strict)


# -- moderation helpers ---------------------------------------------------------------------

# A ban or mute entry starting with this names an account: `~a:bob`.
ACCOUNT_PREFIX = "~a:"
# Bans per room: enough for real moderation, small enough that every join's ban check
# (one glob match per entry, under the hub lock) stays cheap.
MAX_BANS = 100


def complete_mask(mask: str) -> str:
    """A ban mask completed as IRC servers do: nick -> nick!*@*, user@host -> *!user@host,
    nick!user -> nick!user@*; an account entry (`~a:NAME`) stays as it is."""
    if mask.startswith(ACCOUNT_PREFIX):
        return mask
    if "!" not in mask and "@" not in mask:
        return mask + "!*@*"
    if "!" not in mask:
        return "*!" + mask
    if "@" not in mask:
        return mask + "@*"
    return mask


def entry_matches(entry: str, user: User) -> bool:
    """Whether a ban or mute entry matches `user`: the one matcher of bans and mutes.

    `~a:NAME` matches whoever is logged in to account NAME, whatever nick, host or protocol;
    any other entry is a case-insensitive glob on `nick!user@host`."""
    entry = names.fold(entry)
    if entry.startswith(ACCOUNT_PREFIX):
        account = entry[len(ACCOUNT_PREFIX) :]
        return user.account is not None and account == names.fold(user.account)
    return names.glob_match(entry, names.fold(user.mask))


@dataclass(frozen=True, slots=True)
class SignOn:
    """What `Hub.sign_on` did: the person, whether the connection was attached to one
    already here, and (a returning always-on person) since when it missed messages (ms)."""

    user: User
    attached: bool
    missed_since: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Move:
    """What `Hub.join_person` did: the connection now belongs to `person`; it was
    `old_nick`, in `old_rooms`; `missed_since` as in `SignOn`."""

    person: User
    old_nick: str
    old_rooms: list[str]
    missed_since: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Arrival:
    """What a user is shown on joining a room (see `Hub.arrival`): `members` pairs each
    member with their statuses, or is None in a quiet room (only `count` then)."""

    room: str
    topic: events.TopicInfo
    members: tuple[tuple[User, tuple[MemberStatus, ...]], ...] | None
    count: int
    flags: frozenset[RoomFlag] = frozenset()


@dataclass(frozen=True, slots=True)
class RoomState:
    """A snapshot of a room; `members` pairs each user with their statuses, highest first."""

    name: str
    created: float
    topic: str
    topic_by: str
    topic_at: float
    flags: frozenset[RoomFlag]
    password: str | None
    limit: int | None
    bans: tuple[str, ...]
    members: tuple[tuple[User, tuple[MemberStatus, ...]], ...]
    ban_exceptions: tuple[str, ...] = ()
    invite_exceptions: tuple[str, ...] = ()

    def entries(self, which: RoomList) -> tuple[str, ...]:
        """The room's list of `which` (bans, ban exceptions or invite exceptions)."""
        if which is RoomList.BAN:
            return self.bans
        if which is RoomList.BAN_EXCEPTION:
            return self.ban_exceptions
        return self.invite_exceptions


@dataclass(frozen=True, slots=True)
class UserCounts:
    """What `Hub.user_counts` counts (IRC's LUSERS shows all of it)."""

    users: int
    invisible: int
    operators: int
    rooms: int
    max_users: int


def _status(room: Room, user: User) -> tuple[MemberStatus, ...]:
    return member_status(user.key in room.operators, user.key in room.voiced)


def _mode_event(
    by: str, changes: Sequence[ModeChange], *, room: str | None = None, target: str = ""
) -> events.ModeChanged:
    return events.ModeChanged(by=by, changes=tuple(changes), room=room, target=target)


@dataclass(eq=False)
class _CodecGroup:
    """Room members' connections sharing one codec key; `queues` is None for those served
    one by one. `positions`: a connection's index by its id()."""

    connections: list[Connection]
    queues: list[list[bytes]] | None = None
    flushables: list["delivery.Flushable"] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)


# A user's connections, as `map` takes it (the fan-out's loop over recipients runs in C).
_CONNECTIONS = attrgetter("connections")


def _origin(user: User, origin: Connection | None) -> Connection | None:
    """The connection a message of `user` came from: `origin`, or their only connection.

    With several connections the caller must say which one, or one of them would get its
    own message back (or another would miss it)."""
    if origin is not None:
        return origin
    connections = user.connections
    if len(connections) > 1:
        raise ValueError(f"{user.nick} has {len(connections)} connections: which one sent?")
    return connections[0] if connections else None


# A room message on its way out: (event, the connection it came from, the sender's other
# connections, which get its `own` copy; empty while the sender has one connection).
_Outgoing = tuple[Event, "Connection | None", "tuple[Connection, ...]"]


def _mine(user: User, origin: Connection | None) -> tuple[Connection, ...]:
    """`user`'s connections other than `origin`: () in the usual case of one connection."""
    connections = user.connections
    if len(connections) < 2:
        return ()
    return tuple(c for c in connections if c is not origin)


def _among(conn: Connection, connections: tuple[Connection, ...]) -> bool:
    return any(c is conn for c in connections)


def _own_copy(event: Event) -> Event:
    """The copy of a message a sender's other connections get, marked as their own."""
    return dataclasses.replace(event, own=True)  # type: ignore[type-var]


# A recent private message as `User.recent_private` keeps it: (it, its sender, its recipient).
PrivateEntry = tuple[events.PrivateMessage, User, User]


@dataclass(frozen=True, slots=True)
class _Found:
    """A message someone acts on (`Hub._message_for`): the message; the person who sent
    it, while it is recent (None when read from history); its room, or None for a private
    message, whose conversation's people here are `people` and whose other side, seen
    from the person acting, is called `peer`."""

    event: "events.RoomMessage | events.PrivateMessage"
    sender: User | None
    room: Room | None = None
    people: tuple[User, ...] = ()
    peer: str = ""


def _remember_private(
    holder: User, event: events.PrivateMessage, sender: User, recipient: User
) -> None:
    """Keep a relayed private message among `holder`'s recent ones (hub lock held)."""
    recent = holder.recent_private
    recent[event.id] = (event, sender, recipient)
    if len(recent) > 2 * live.RECENT_PER_ROOM:
        # As `Hub._remember_message`: trimmed in one step per RECENT_PER_ROOM messages.
        holder.recent_private = dict(islice(recent.items(), live.RECENT_PER_ROOM, None))


def _reply_of(parent: "events.RoomMessage | events.PrivateMessage") -> live.MessageExtra:
    """What a reply carries of the message it answers: its id, sender and first words."""
    return live.MessageExtra(
        reply_to=parent.id, reply_sender=parent.sender, reply_excerpt=live.excerpt(parent.text)
    )


def _changed(event: Any, changes: dict[str, Any]) -> Any:
    """A recent message as an edit, deletion or reaction left it: `text` replaced, the
    other changes made to its `extra`."""
    extra = event.extra or live.MessageExtra()
    marks = {name: value for name, value in changes.items() if name != "text"}
    return replace(event, text=changes.get("text", event.text), extra=replace(extra, **marks))


def _recent_of(
    found: _Found, user: User, msgid: int
) -> "events.RoomMessage | events.PrivateMessage | None":
    """The recent copy of the message `found`, as the hub keeps it now (hub lock held)."""
    if found.room is not None:
        entry = found.room.recent.get(msgid)
        return entry[0] if entry is not None else None
    for person in (user, *found.people):
        private = person.recent_private.get(msgid)
        if private is not None:
            return private[0]
    return None


def _room_message(
    room: Room,
    user: User,
    text: str,
    kind: str,
    stamp: dict[str, Any],
    tags: events.ClientTags = (),
    extra: live.MessageExtra | None = None,
) -> events.RoomMessage:
    """The event relayed for `user`'s message in `room`; `stamp` is its stored id and time."""
    if tags:
        stamp = {**stamp, "tags": tags}
    if extra is not None:
        stamp = {**stamp, "extra": extra}
    return events.RoomMessage(
        room=room.name, sender=user.nick, text=text, kind=kind, account=user.account, **stamp
    )


def _codec_groups(room: Room) -> list[_CodecGroup]:
    """The room's members grouped for fan-out, regrouped if out of date (hub lock held)."""
    groups = room.groups
    if groups is None:
        groups = room.groups = _group_by_codec(room.members.values())
    return groups


def _group_by_codec(members: Iterable[User]) -> list[_CodecGroup]:
    fast: dict[Hashable, _CodecGroup] = {}
    slow: list[Connection] = []
    for user in members:
        for conn in user.connections:
            direct = conn.direct_queue()
            if direct is None:
                slow.append(conn)
                continue
            key = conn.codec_key()
            group = fast.get(key)
            if group is None:
                group = fast[key] = _CodecGroup(connections=[], queues=[])
            assert group.queues is not None
            group.positions[id(conn)] = len(group.connections)
            group.connections.append(conn)
            group.queues.append(direct[0])
            group.flushables.append(direct[1])
    groups = list(fast.values())
    if slow:
        groups.append(_CodecGroup(connections=slow))
    return groups


def _held_elsewhere(person: User, account: str | None) -> str | None:
    """Why a device of `account` cannot join `person`, when `person` is that account's on
    another node: one person's connections all live on one node (docs/architecture.md,
    "Several devices ... across nodes")."""
    if (
        person.node is None
        or account is None
        or person.account is None
        or names.fold(person.account) != names.fold(account)
    ):
        return None
    return (
        f"{person.nick} is connected through server {person.node}: the devices of one "
        f"account share one server, so connect this one to {person.node} (or leave there first)"
    )


def node_shard(node: str) -> str:
    """The bus shard of a node's user events (presence, nick, quit; private messages and kills
    to its users): one stream, so another node applies them in the order they happened."""
    return f"node {node}"


def _message_record(event: events.RoomMessage | events.PrivateMessage) -> dict[str, Any]:
    """A relayed message as other nodes get it: with its stored id and time."""
    record: dict[str, Any] = {
        "sender": event.sender,
        "text": event.text,
        "kind": event.kind,
        "account": event.account,
        "id": event.id,
        "ts": event.ts,
    }
    if isinstance(event, events.RoomMessage):
        record["room"] = event.room
    else:
        record["target"] = event.target
    if event.tags:
        record["tags"] = [list(tag) for tag in event.tags]
    extra = getattr(event, "extra", None)
    if extra is not None and extra.reply_to is not None:
        record["reply"] = [extra.reply_to, extra.reply_sender, extra.reply_excerpt]
    return record


def _tags_event_record(event: events.TagMessage) -> dict[str, Any]:
    """A TAGMSG as other nodes get it."""
    return {
        "sender": event.sender,
        "account": event.account,
        "room": event.room,
        "target": event.target,
        "tags": [list(tag) for tag in event.tags],
    }


# What other nodes are told of (`Hub._publish_live`), by the bus's name for each.
_LIVE_EVENTS: dict[str, type[events.Event]] = {
    "react": events.Reaction,
    "delete": events.MessageDeleted,
    "edit": events.MessageEdited,
    "typing": events.Typing,
}
_LIVE_KINDS_OF_EVENTS = {kind: name for name, kind in _LIVE_EVENTS.items()}


def _tags_from_record(tags: Any) -> events.ClientTags:
    return tuple((str(name), value) for name, value in tags) if tags else ()


# The enums a mode may be of, by name, for mode changes other nodes send.
_MODE_KINDS: dict[str, Any] = {
    kind.__name__: kind for kind in (RoomFlag, MemberStatus, RoomSetting, RoomList, UserFlag)
}


_USER_FLAG_VALUES = frozenset(flag.value for flag in UserFlag)
_ROOM_FLAG_VALUES = frozenset(flag.value for flag in RoomFlag)


def _room_record(room: Room) -> dict[str, Any]:
    """A room's state as the bus keeps it in Redis for other nodes (hub lock held; see
    `Hub._apply_room_state`): topic, modes, lists, statuses, invitations."""
    members = room.members
    return {
        "name": room.name,
        "created": room.created,
        "topic": room.topic,
        "topic_by": room.topic_by,
        "topic_at": room.topic_at,
        "owner": room.owner,
        "flags": sorted(flag.value for flag in room.flags),
        "key": room.password,
        "limit": room.limit,
        "bans": list(room.bans),
        "ban_exceptions": list(room.ban_exceptions),
        "invite_exceptions": list(room.invite_exceptions),
        "operators": [members[k].nick for k in room.operators if k in members],
        "voiced": [members[k].nick for k in room.voiced if k in members],
        "invited": sorted(room.invited),
    }


def _mode_record(change: ModeChange) -> list[Any]:
    return [change.add, type(change.mode).__name__, change.mode.name, change.arg]


def _mode_from_record(record: list[Any]) -> ModeChange:
    add, kind, name, arg = record
    return ModeChange(bool(add), _MODE_KINDS[kind][name], arg)
