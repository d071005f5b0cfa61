"""Room moderation and persistence: owners, operators, bans, mutes, topic lock.

`RoomKeeper` is the hub's `moderation` service.

Persistence: a room created by a logged-in user is owned by that account and persists (kept
while empty, stored on every change, loaded at start); a room created by a guest vanishes when
its last member leaves, as before. What is stored: topic, owner, modes, key, limit, bans, and
the *accounts* that are operators or voiced (nicks are not identities: a guest may use any
free nick, so only an account can carry a grant across sessions).

Rights: `Hub.may_moderate` (the owner account, the room's operators and server operators;
admins listed in the configuration become server operators when they log in) may
op/deop/kick/ban/unban/mute/unmute and lock the topic.

Bans: a `nick!user@host` glob, or `~a:ACCOUNT` for an account; what a typed name means is
`Hub.ban_entry` and the matching `hub.entry_matches`, the same for IRC MODE +b. Mutes: the
same kinds of entries in a per-room set; a muted user cannot speak in the room (stored with
the bans as `~q:ENTRY`, so the store needs no new table).

Overlap: IRC MODE changes the same Room fields through `Hub.set_room_modes` (the same
`ModeChange` data), and IRC KICK is `Hub.kick`; `op`, `kick`, `ban` here are the native
protocol's way in.

Storage encoding: the store keeps a room's flags as one letter each (`_STORED_LETTERS`, the
letters existing databases hold); this module alone translates, both ways.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from threadchat.core import delivery, events, names
from threadchat.core.errors import StoreError
from threadchat.core.hub import (
    DEFAULT_ROOM,
    MAX_BANS,
    Hub,
    HubError,
    Room,
    User,
    _mode_event,
    entry_matches,
)
from threadchat.core.modes import MemberStatus, ModeChange, RoomFlag, RoomList
from threadchat.store.base import RoomRecord, Store

log = logging.getLogger(__name__)

MUTE_PREFIX = "~q:"
# Ban and invitation exceptions are kept with the bans too, marked by these.
LIST_PREFIXES: dict[RoomList, str] = {
    RoomList.BAN_EXCEPTION: "~e:",
    RoomList.INVITE_EXCEPTION: "~I:",
}
# How the store writes each room flag (RoomRecord.modes): the letters of databases written
# before flags were data. Unknown letters in a record (k and l were once listed, their values
# are stored apart) are ignored on loading.
_STORED_LETTERS: dict[RoomFlag, str] = {
    RoomFlag.TOPIC_LOCKED: "t",
    RoomFlag.MEMBERS_ONLY: "n",
    RoomFlag.MODERATED: "m",
    RoomFlag.INVITE_ONLY: "i",
    RoomFlag.SECRET: "s",
    RoomFlag.PRIVATE: "p",
    RoomFlag.NO_CTCP: "C",
}
_FLAG_OF_LETTER = {letter: flag for flag, letter in _STORED_LETTERS.items()}


def stored_flags(letters: frozenset[str]) -> set[RoomFlag]:
    """A room record's stored letters as room flags."""
    return {_FLAG_OF_LETTER[letter] for letter in letters if letter in _FLAG_OF_LETTER}


def flag_letters(flags: set[RoomFlag] | frozenset[RoomFlag]) -> frozenset[str]:
    """Room flags as the letters the store keeps."""
    return frozenset(_STORED_LETTERS[flag] for flag in flags)


# Stored entries that are not bans (mutes, exceptions).
_MARKED = (MUTE_PREFIX, *LIST_PREFIXES.values())


def _listed(stored: frozenset[str], which: RoomList) -> list[str]:
    """The entries of the list `which` among a record's stored bans."""
    prefix = LIST_PREFIXES[which]
    return sorted(entry[len(prefix) :] for entry in stored if entry.startswith(prefix))


@dataclass
class Grants:
    """Per-room state that belongs to accounts rather than to connected nicks."""

    operators: set[str] = field(default_factory=set)  # folded account names
    voiced: set[str] = field(default_factory=set)
    muted: set[str] = field(default_factory=set)  # masks or ~a:account entries


class RoomKeeper:
    """Moderation rules and room persistence. Methods marked "lock held" run under the hub
    lock and do no I/O; `save` and the request handlers take it themselves."""

    def __init__(self, hub: Hub, store: Store) -> None:
        self.hub = hub
        self.store = store
        self._grants: dict[str, Grants] = {}  # by folded room name; hub lock guards it
        # Serialises snapshot + write, so an older snapshot never overwrites a newer one.
        self._save_lock = threading.Lock()
        # Stored names of kept rooms renamed since, deleted from the store by `save`.
        self._renamed_from: list[str] = []

    # -- persistence ------------------------------------------------------------------------

    def load(self, keep: Iterable[str] = (), *, purge: bool = True) -> int:
        """Put every stored room into the hub (at start); return how many.

        The messages of rooms that are not kept are deleted first: those rooms ended with
        the last run, and their history must not pass to whoever makes a room of the name
        now (see `MessageLog.room_ended`). `keep`: rooms whose history stays all the same
        (those always-on accounts are in). `purge=False` (several nodes sharing the store):
        nothing is deleted, as the rooms of the other nodes' users live on; a room made
        anew deletes what an ended one of its name left (`MessageLog.room_created`)."""
        try:
            kept = [names.fold(DEFAULT_ROOM), *map(names.fold, keep)]
            purged = self.store.purge_rooms_not_kept(keep=kept) if purge else 0
        except StoreError as problem:
            # Starting matters more; a room made anew deletes them first anyway (see
            # `MessageLog.room_created`), and the next start tries again.
            log.error("cannot delete the messages of rooms that ended: %s", problem)
        else:
            if purged:
                log.info("deleted %d messages of rooms that ended with the last run", purged)
        records = self.store.load_rooms()
        for record in records:
            room = Room(
                name=record.name,
                created=record.created_ts / 1000,
                topic=record.topic,
                topic_by=record.topic_by or "",
                topic_at=(record.topic_ts or 0) / 1000,
                owner=record.owner,
                flags=stored_flags(record.modes),
                password=record.key,
                limit=record.limit,
                bans=sorted(b for b in record.bans if not b.startswith(_MARKED)),
                ban_exceptions=_listed(record.bans, RoomList.BAN_EXCEPTION),
                invite_exceptions=_listed(record.bans, RoomList.INVITE_EXCEPTION),
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
            modes=flag_letters(room.flags),
            key=room.password,
            limit=room.limit,
            bans=frozenset(room.bans)
            | {MUTE_PREFIX + m for m in grants.muted}
            | {LIST_PREFIXES[which] + e for which in LIST_PREFIXES for e in room.entries(which)},
        )

    def save(self, room: Room) -> None:
        """Store the room's current state if it persists (called without the hub lock)."""
        with self._save_lock:
            with self.hub.locked():
                if not room.persistent:
                    return
                record = self._record(room)
                gone, self._renamed_from = self._renamed_from, []
            try:
                self.store.save_room(record)
                for old in gone:
                    self.store.delete_room(old)
            except StoreError as problem:
                log.error("cannot save room %s: %s", room.name, problem)

    def renamed(self, old: str, room: Room, *, stored: bool = True) -> None:
        grants = self._grants.pop(names.fold(old), None)
        if grants is not None:
            self._grants[room.key] = grants
        if stored and room.persistent and names.fold(old) != room.key:
            self._renamed_from.append(old)

    # -- hooks the hub calls (lock held) ----------------------------------------------------

    def created(self, user: User, room: Room) -> None:
        if room.key == names.fold(DEFAULT_ROOM):
            # The server's own room, where everyone arrives: always kept, with its history,
            # and owned by no account (a guest who happened to arrive first owns nothing).
            room.owner = None
            room.persistent = True
            self._grants[room.key] = Grants()
        elif user.account is not None:
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
        if grants is None or not grants.muted or self.hub.may_moderate(user, room):
            return False
        return any(entry_matches(entry, user) for entry in grants.muted)

    def logged_in(self, user: User) -> None:
        """After a login: the account's grants in the rooms the user is already in."""
        with self.hub.locked():
            for room in user.rooms.values():
                self._apply_grants(user, room)

    # -- rights -----------------------------------------------------------------------------

    def _room_for(self, user: User, room_name: str) -> Room:
        room = self.hub.get_room(room_name)
        if room is None:
            raise HubError("no_such_room", f"there is no room {room_name}")
        with self.hub.locked():
            allowed = self.hub.may_moderate(user, room)
        if not allowed:
            raise HubError("not_operator", f"only operators of {room.name} can do that")
        return room

    # -- actions ----------------------------------------------------------------------------

    def moderate(self, actor: User, room_name: str, action: str, target: str, reason: str) -> None:
        """Carry out one moderation action; raises HubError when it is not allowed.

        op/deop/ban/unban are mode changes (operator status, the ban list): members see the
        same ModeChanged event an IRC MODE produces. mute/unmute are no mode and are shown as a
        Moderated event; kick is `Hub.kick`, as IRC KICK.
        """
        if action == "kick":
            self.hub.kick(actor, room_name, target, reason)
            return
        room = self._room_for(actor, room_name)
        moderated = action in ("ban", "unban", "mute", "unmute")
        entries = self.hub.unban_entries(target) if moderated else ()
        entry = self.hub.ban_entry(target) if moderated else ""
        with delivery.batch(), self.hub.locked():
            grants = self._grants.setdefault(room.key, Grants())
            match action:
                case "op" | "deop":
                    member = self._member(room, target)
                    change = ModeChange(action == "op", MemberStatus.OPERATOR, member.nick)
                    self._apply(actor, room, [change])
                case "ban":
                    if len(room.bans) >= MAX_BANS:
                        raise HubError("too_many", f"{room.name} has {MAX_BANS} bans")
                    self._apply(actor, room, [ModeChange(True, RoomList.BAN, entry)])
                case "unban":
                    for candidate in entries:
                        unban = ModeChange(False, RoomList.BAN, candidate)
                        if self._apply(actor, room, [unban]):
                            break
                    else:
                        raise HubError("no_such_ban", f"{target} is not banned here")
                case "mute" | "unmute":
                    if action == "mute":
                        if len(grants.muted) >= MAX_BANS:
                            raise HubError("too_many", f"{room.name} has {MAX_BANS} mutes")
                        grants.muted.add(entry)
                    elif grants.muted.intersection(entries):
                        grants.muted.difference_update(entries)
                    else:
                        raise HubError("no_such_mute", f"{target} is not muted here")
                    event = events.Moderated(
                        room=room.name, by=actor.nick, action=action, target=entry
                    )
                    self.hub._fan_out(event, list(room.members.values()))
                case _:
                    raise HubError("bad_request", f"unknown action {action}")
        self.save(room)

    def topic_lock(self, actor: User, room_name: str, locked: bool) -> None:
        """Turn TOPIC_LOCKED on or off: only operators set the topic."""
        room = self._room_for(actor, room_name)
        with delivery.batch(), self.hub.locked():
            self._apply(actor, room, [ModeChange(locked, RoomFlag.TOPIC_LOCKED)])
        self.save(room)

    def _apply(self, actor: User, room: Room, changes: list[ModeChange]) -> list[ModeChange]:
        """Apply mode changes the way `Hub.set_room_modes` does and show them (lock held)."""
        applied = [c for c in (self.hub._apply_mode(room, c) for c in changes) if c is not None]
        for change in applied:
            self.mode_applied(room, change)
        if applied:
            event = _mode_event(actor.nick, applied, room=room.name)
            self.hub._fan_out(event, list(room.members.values()))
        return applied

    def mode_applied(self, room: Room, change: ModeChange) -> None:
        """Keep account grants in step with a member's operator or voice status (lock held).

        Called for native moderation and for IRC MODE (Hub.set_room_modes)."""
        if not isinstance(change.mode, MemberStatus) or not room.persistent or change.arg is None:
            return
        member = room.members.get(names.fold(change.arg))
        if member is None or member.account is None:
            return
        grants = self._grants.setdefault(room.key, Grants())
        group = grants.operators if change.mode is MemberStatus.OPERATOR else grants.voiced
        (group.add if change.add else group.discard)(names.fold(member.account))

    @staticmethod
    def _member(room: Room, nick: str) -> User:
        member = room.members.get(names.fold(nick))
        if member is None:
            raise HubError("no_such_nick", f"{nick} is not in {room.name}")
        return member


__all__ = ["RoomKeeper", "entry_matches"]
