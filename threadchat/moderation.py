"""Room moderation and persistence: owners, operators, bans, mutes, topic lock.

`RoomKeeper` is the hub's `moderation` service.

Persistence: a room created by a logged-in user is owned by that account and persists (kept
while empty, stored on every change, loaded at start); a room created by a guest vanishes when
its last member leaves, as before. What is stored: topic, owner, modes, key, limit, bans, and
the *accounts* that are operators or voiced (nicks are not identities: a guest may use any
free nick, so only an account can carry a grant across sessions).

Rights: the owner account, the room's operators and server operators (admins listed in the
configuration get user mode "o" when they log in) may op/deop/kick/ban/unban/mute/unmute and
lock the topic.

Bans: a `nick!user@host` glob, or `~a:ACCOUNT` for an account (matched in Room.is_banned).
`/ban NAME` bans the account NAME when someone is logged in to it or it is registered,
otherwise the mask NAME!*@*. Mutes: the same kinds of entries in a per-room set; a muted user
cannot speak in the room (stored with the bans as `~q:ENTRY`, so the store needs no new table).

Overlap: the IRC transport maps MODE +o/-o/+b/-b/+t/-t and KICK onto these same Room fields;
`op`, `kick`, `ban` here are the native protocol's way in.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from threadchat import delivery, events, names
from threadchat.hub import Hub, HubError, Room, User
from threadchat.store.base import RoomRecord, Store, StoreError

if TYPE_CHECKING:
    from threadchat import requests
    from threadchat.session import NativeSession

log = logging.getLogger(__name__)

MUTE_PREFIX = "~q:"
ACCOUNT_PREFIX = "~a:"
# Modes the store keeps (see RoomRecord); others (none today) live only while the room does.
STORED_MODES = frozenset("tnmikl")
# Bans and mutes per room at most: each join checks every ban, so the list must stay short.
MAX_BANS = 100


@dataclass
class Grants:
    """Per-room state that belongs to accounts rather than to connected nicks."""

    operators: set[str] = field(default_factory=set)  # folded account names
    voiced: set[str] = field(default_factory=set)
    muted: set[str] = field(default_factory=set)  # masks or ~a:account entries


def entry_matches(entry: str, user: User) -> bool:
    """Whether a ban or mute entry (mask or ~a:account) matches `user`."""
    entry = names.fold(entry)
    if entry.startswith(ACCOUNT_PREFIX):
        return user.account is not None and entry[3:] == names.fold(user.account)
    return fnmatch.fnmatchcase(names.fold(user.mask), entry)


class RoomKeeper:
    """Moderation rules and room persistence. Methods marked "lock held" run under the hub
    lock and do no I/O; `save` and the request handlers take it themselves."""

    def __init__(self, hub: Hub, store: Store) -> None:
        self.hub = hub
        self.store = store
        self._grants: dict[str, Grants] = {}  # by folded room name; hub lock guards it
        # Serialises snapshot + write, so an older snapshot never overwrites a newer one.
        self._save_lock = threading.Lock()

    # -- persistence ------------------------------------------------------------------------

    def load(self) -> int:
        """Put every stored room into the hub (at start); return how many."""
        records = self.store.load_rooms()
        for record in records:
            room = Room(
                name=record.name,
                created=record.created_ts / 1000,
                topic=record.topic,
                topic_by=record.topic_by or "",
                topic_at=(record.topic_ts or 0) / 1000,
                owner=record.owner,
                modes=set(record.modes),
                password=record.key,
                limit=record.limit,
                bans=sorted(b for b in record.bans if not b.startswith(MUTE_PREFIX)),
                persistent=True,
            )
            self._grants[room.key] = Grants(
                operators={names.fold(a) for a in record.operators},
                voiced={names.fold(a) for a in record.voiced},
                muted={b[len(MUTE_PREFIX) :] for b in record.bans if b.startswith(MUTE_PREFIX)},
            )
            self.hub.restore_room(room)
        return len(records)

    def _record(self, room: Room) -> RoomRecord:
        grants = self._grants.get(room.key, Grants())
        return RoomRecord(
            name=room.name,
            created_ts=int(room.created * 1000),
            topic=room.topic,
            topic_by=room.topic_by or None,
            topic_ts=int(room.topic_at * 1000) if room.topic_at else None,
            owner=room.owner,
            operators=frozenset(grants.operators),
            voiced=frozenset(grants.voiced),
            modes=frozenset(room.modes & STORED_MODES),
            key=room.password,
            limit=room.limit,
            bans=frozenset(room.bans) | {MUTE_PREFIX + m for m in grants.muted},
        )

    def save(self, room: Room) -> None:
        """Store the room's current state if it persists (called without the hub lock)."""
        with self._save_lock:
            with self.hub.locked():
                if not room.persistent:
                    return
                record = self._record(room)
            try:
                self.store.save_room(record)
            except StoreError as problem:
                log.error("cannot save room %s: %s", room.name, problem)

    # -- hooks the hub calls (lock held) ----------------------------------------------------

    def created(self, user: User, room: Room) -> None:
        if user.account is not None:
            room.owner = user.account
            room.persistent = True
            self._grants[room.key] = Grants()

    def joining(self, user: User, room: Room) -> None:
        """Give a joining user the operator or voice status their account holds here."""
        self._apply_grants(user, room)

    def _apply_grants(self, user: User, room: Room) -> None:
        if user.account is None:
            return
        account = names.fold(user.account)
        grants = self._grants.get(room.key)
        if (room.owner and names.fold(room.owner) == account) or (
            grants is not None and account in grants.operators
        ):
            room.operators.add(user.key)
        if grants is not None and account in grants.voiced:
            room.voiced.add(user.key)

    def is_muted(self, user: User, room: Room) -> bool:
        grants = self._grants.get(room.key)
        if grants is None or not grants.muted or self._may_moderate(user, room):
            return False
        return any(entry_matches(entry, user) for entry in grants.muted)

    def logged_in(self, user: User) -> None:
        """After a login: the account's grants in the rooms the user is already in."""
        with self.hub.locked():
            for room in user.rooms.values():
                self._apply_grants(user, room)

    # -- rights -----------------------------------------------------------------------------

    def _may_moderate(self, user: User, room: Room) -> bool:
        if user.key in room.operators or "o" in user.modes:
            return True
        return bool(
            user.account and room.owner and names.fold(room.owner) == names.fold(user.account)
        )

    def _room_for(self, user: User, room_name: str) -> Room:
        room = self.hub.get_room(room_name)
        if room is None:
            raise HubError("no_such_room", f"there is no room {room_name}")
        if not self._may_moderate(user, room):
            raise HubError("not_operator", f"only operators of {room.name} can do that")
        return room

    def _entry_for(self, target: str) -> str:
        """A ban or mute entry for what the moderator typed (no lock held: may query)."""
        if any(c in target for c in "!@*?") or target.startswith(ACCOUNT_PREFIX):
            return target
        online = self.hub.find_user(target)
        if online is not None and online.account is not None:
            return ACCOUNT_PREFIX + online.account
        accounts = self.hub.accounts
        if online is None and accounts is not None and accounts.is_registered(target):
            return ACCOUNT_PREFIX + target
        return f"{target}!*@*"

    # -- actions ----------------------------------------------------------------------------

    def moderate(self, actor: User, room_name: str, action: str, target: str, reason: str) -> None:
        """Carry out one moderation action; raises HubError when it is not allowed."""
        room = self._room_for(actor, room_name)
        entry = self._entry_for(target) if action in ("ban", "unban", "mute", "unmute") else ""
        shown = target
        with delivery.batch(), self.hub.locked():
            grants = self._grants.setdefault(room.key, Grants())
            match action:
                case "op" | "deop":
                    member = self._member(room, target)
                    group = room.operators
                    if action == "op":
                        group.add(member.key)
                    else:
                        group.discard(member.key)
                    if member.account is not None and room.persistent:
                        accounts = grants.operators
                        change = accounts.add if action == "op" else accounts.discard
                        change(names.fold(member.account))
                    shown = member.nick
                case "kick":
                    member = self._member(room, target)
                    kicked = events.Kicked(
                        room=room.name, nick=member.nick, by=actor.nick, reason=reason
                    )
                    self.hub._fan_out(kicked, list(room.members.values()))
                    self.hub._remove_member(room, member)
                    return
                case "ban" | "mute":
                    entries = room.bans if action == "ban" else grants.muted
                    if len(entries) >= MAX_BANS:
                        raise HubError("too_many", f"{room.name} has {MAX_BANS} entries")
                    if action == "ban" and entry not in room.bans:
                        room.bans.append(entry)
                    elif action == "mute":
                        grants.muted.add(entry)
                    shown = entry
                case "unban":
                    if entry not in room.bans and target not in room.bans:
                        raise HubError("no_such_ban", f"{target} is not banned here")
                    room.bans[:] = [b for b in room.bans if b not in (entry, target)]
                    shown = entry
                case "unmute":
                    if entry not in grants.muted and target not in grants.muted:
                        raise HubError("no_such_mute", f"{target} is not muted here")
                    grants.muted.difference_update({entry, target})
                    shown = entry
                case _:
                    raise HubError("bad_request", f"unknown action {action}")
            event = events.Moderated(room=room.name, by=actor.nick, action=action, target=shown)
            self.hub._fan_out(event, list(room.members.values()))
        self.save(room)

    def topic_lock(self, actor: User, room_name: str, locked: bool) -> None:
        room = self._room_for(actor, room_name)
        with delivery.batch(), self.hub.locked():
            if locked:
                room.modes.add("t")
            else:
                room.modes.discard("t")
            action = "topiclock" if locked else "topicunlock"
            event = events.Moderated(room=room.name, by=actor.nick, action=action)
            self.hub._fan_out(event, list(room.members.values()))
        self.save(room)

    @staticmethod
    def _member(room: Room, nick: str) -> User:
        member = room.members.get(names.fold(nick))
        if member is None:
            raise HubError("no_such_nick", f"{nick} is not in {room.name}")
        return member


# -- the native session's side ----------------------------------------------------------------


def _keeper(session: NativeSession) -> RoomKeeper:
    keeper = session.hub.moderation
    if keeper is None:
        raise HubError("moderation_off", "this server has no moderation")
    return keeper


def handle_moderate(session: NativeSession, request: requests.Moderate) -> bool:
    assert session.user is not None
    room = request.room or session.current_room
    if room is None:
        raise HubError("no_room", "you are in no room; /join ROOM first")
    _keeper(session).moderate(session.user, room, request.action, request.target, request.reason)
    return False


def handle_topic_lock(session: NativeSession, request: requests.TopicLock) -> bool:
    assert session.user is not None
    room = request.room or session.current_room
    if room is None:
        raise HubError("no_room", "you are in no room; /join ROOM first")
    _keeper(session).topic_lock(session.user, room, request.locked)
    return False


__all__ = ["RoomKeeper", "entry_matches", "handle_moderate", "handle_topic_lock"]
