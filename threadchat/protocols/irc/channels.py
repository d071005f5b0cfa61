"""JOIN, PART, TOPIC, NAMES, LIST, KICK and INVITE.

IRC channel `#name` is room `name` (rooms are ASCII `[A-Za-z0-9_.-]`, so `#café` is refused
with 403). A JOIN answers with the topic, the member list and, when the server keeps history,
a replay of the room's last messages (see `chathistory.replay_on_join`).

What a non-member sees is the hub's rule: a secret (`+s`) or private (`+p`) channel is absent
from their LIST and NAMES, and its NAMES shows `@` (secret) or `*` (private) to members;
invisible users are left out of a non-member's NAMES. LIST takes the ELIST filters (see
`ListFilter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from threadchat.core import events, names
from threadchat.core.hub import Arrival, HubError, RoomState, User
from threadchat.core.modes import MemberStatus, RoomFlag
from threadchat.protocols.irc import chathistory as irc_history
from threadchat.protocols.irc import devices as irc_devices
from threadchat.protocols.irc import modes as irc_modes
from threadchat.protocols.irc.codec import source_of
from threadchat.protocols.irc.limits import KICKLEN, MAX_CHANNELS
from threadchat.protocols.irc.wire import (
    Message,
    Numeric,
    channel_to_room,
    pack_words,
    reply,
    split_targets,
)

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession


def on_join(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    if message.params[0] == "0":
        for room in session.hub.user_rooms(session.user):
            session.hub.leave(session.user, room[0], "Left all channels")
        return
    channels = split_targets(message.params[0])
    keys = message.params[1].split(",") if len(message.params) > 1 else []
    if not channels:
        session.error(Numeric.ERR_NEEDMOREPARAMS, "JOIN")
    for i, channel in enumerate(channels):
        room = channel_to_room(channel)
        if room is None:
            session.error(Numeric.ERR_NOSUCHCHANNEL, channel)
            continue
        if len(session.user.rooms) >= MAX_CHANNELS:
            session.error(Numeric.ERR_TOOMANYCHANNELS, channel)
            continue
        key = keys[i] if i < len(keys) and keys[i] else None
        try:
            joined = session.hub.join(session.user, room, key)
        except HubError as problem:
            if problem.code != "already_in_room":
                session.hub_error(problem, channel=channel)
            continue
        try:
            arrival = session.hub.arrival(session.user, joined.name)
        except HubError:
            continue  # kicked (or the room gone) already: the client was told so
        if arrival.topic.topic:
            _send_topic(session, arrival.topic)
        _after_join(session, arrival)
        irc_history.replay_on_join(session, joined.name)


def show_rooms(session: IrcSession) -> None:
    """Show a connection attached to a person already here (another device of the account)
    the channels the person is in: a JOIN, the topic and the names of each, as joining does."""
    user = session.user
    assert user is not None
    for arrival in session.hub.arrivals(user):
        joined = events.Joined(
            room=arrival.room, nick=user.nick, account=user.account, realname=user.realname
        )
        session.send(*session.event_messages(joined))
        if arrival.topic.topic:
            _send_topic(session, arrival.topic)
        _after_join(session, arrival)


def _after_join(session: IrcSession, arrival: Arrival) -> None:
    """The names (unless no-implicit-names) and the read marker (draft/read-marker: before
    RPL_ENDOFNAMES) a JOIN is followed by."""
    if "no-implicit-names" in session.caps:
        irc_devices.send_marker(session, arrival.room)
        return
    _send_name_list(
        session,
        arrival.room,
        arrival.members or (),
        arrival.flags,
        before_end=lambda: irc_devices.send_marker(session, arrival.room),
    )


def on_part(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    reason = message.params[1] if len(message.params) > 1 else ""
    for channel in split_targets(message.params[0]):
        room = channel_to_room(channel)
        try:
            if room is None:
                raise HubError("no_such_room", channel)
            session.hub.leave(session.user, room, reason)
        except HubError as problem:
            session.hub_error(problem, channel=channel)


def on_topic(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    channel = message.params[0]
    room = channel_to_room(channel)
    try:
        if room is None:
            raise HubError("no_such_room", channel)
        if len(message.params) == 1:
            _send_topic(session, session.hub.topic(room), empty_too=True)
            return
        session.hub.set_topic(session.user, room, message.params[1][: names.TOPIC_MAX])
    except HubError as problem:
        session.hub_error(problem, channel=channel)


def _send_topic(session: IrcSession, info: events.TopicInfo, empty_too: bool = False) -> None:
    channel = "#" + info.room
    if not info.topic:
        if empty_too:
            session.error(Numeric.RPL_NOTOPIC, channel)
        return
    session.numeric(Numeric.RPL_TOPIC, channel, info.topic)
    session.numeric(Numeric.RPL_TOPICWHOTIME, channel, info.by or "*", str(int(info.set_at)))


def on_names(session: IrcSession, message: Message) -> None:
    if not message.params or not message.params[0]:
        session.error(Numeric.RPL_ENDOFNAMES, "*")
        return
    for channel in split_targets(message.params[0]):
        room = channel_to_room(channel)
        if room is None:
            session.error(Numeric.RPL_ENDOFNAMES, channel)
            continue
        _send_names(session, room, channel)


def _send_names(session: IrcSession, room: str, channel: str) -> None:
    try:
        # A secret room is, to a non-member, as if it did not exist: only the end numeric.
        state = session.hub.room_state(room, viewer=session.user)
    except HubError:
        session.error(Numeric.RPL_ENDOFNAMES, channel)
        return
    _send_name_list(session, state.name, state.members, state.flags)


def channel_symbol(flags: Iterable[RoomFlag]) -> str:
    """RPL_NAMREPLY's channel symbol: `@` secret, `*` private, `=` public."""
    held = set(flags)
    if RoomFlag.SECRET in held:
        return "@"
    return "*" if RoomFlag.PRIVATE in held else "="


def _send_name_list(
    session: IrcSession,
    room: str,
    members: Iterable[tuple[User, tuple[MemberStatus, ...]]],
    flags: Iterable[RoomFlag] = (),
    before_end: Callable[[], None] | None = None,
) -> None:
    channel = "#" + room
    symbol = channel_symbol(flags)
    multi = "multi-prefix" in session.caps
    full = "userhost-in-names" in session.caps
    entries = [
        irc_modes.status_prefix(statuses, multi) + (source_of(user) if full else user.nick)
        for user, statuses in members
    ]

    def build(text: str, more: bool) -> Message:
        return reply(session.server_name, Numeric.RPL_NAMREPLY, session.nick, symbol, channel, text)

    session.send(*pack_words(entries, build))
    if before_end is not None:
        before_end()
    session.error(Numeric.RPL_ENDOFNAMES, channel)


def on_list(session: IrcSession, message: Message) -> None:
    wanted = ListFilter.parse(message.params[0] if message.params else "")
    session.numeric(Numeric.RPL_LISTSTART, "Channel", "Users  Name")
    now = time.time()
    # Secret and private rooms are left out unless the asker is in them (the hub's rule).
    for state in session.hub.room_states(viewer=session.user):
        if wanted.matches(state, now):
            channel = "#" + state.name
            session.numeric(Numeric.RPL_LIST, channel, str(len(state.members)), state.topic)
    session.error(Numeric.RPL_LISTEND)


@dataclass
class ListFilter:
    """LIST's argument: comma-separated terms, every one of which a channel must pass.

    `#name` or a glob (`#c*n2`, `*an1`) is a mask (the channel passes if it matches one of
    them, when any is given); `!mask` excludes; `>N`/`<N` want more/fewer than N users;
    `C>N`/`C<N` a channel created more/less than N minutes ago; `T>N`/`T<N` a topic set
    more/less than N minutes ago (Modern IRC's ELIST). A term that cannot be read is ignored.
    """

    masks: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    # (what: "U", "C" or "T"; more: True for '>'; the number)
    bounds: list[tuple[str, bool, int]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> ListFilter:
        wanted = cls()
        for term in split_targets(text):
            what, rest = ("U", term) if term[0] in "<>" else (term[0].upper(), term[1:])
            if what in "UCT" and rest[:1] in ("<", ">"):
                number = rest[1:]
                if number.isascii() and number.isdigit():
                    wanted.bounds.append((what, rest[0] == ">", int(number)))
                continue
            if term.startswith("!"):
                wanted.excluded.append(names.fold(term[1:]))
            else:
                wanted.masks.append(names.fold(term))
        return wanted

    def matches(self, state: RoomState, now: float) -> bool:
        channel = names.fold("#" + state.name)
        if self.masks and not any(names.glob_match(m, channel) for m in self.masks):
            return False
        if any(names.glob_match(m, channel) for m in self.excluded):
            return False
        for what, more, number in self.bounds:
            if what == "U":
                value = len(state.members)
            elif what == "C":
                value = (now - state.created) / 60
            elif not state.topic:
                return False  # no topic: no topic time to compare
            else:
                value = (now - state.topic_at) / 60
            if (value <= number) if more else (value >= number):
                return False
        return True


def on_kick(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    channel = message.params[0]
    reason = (message.params[2] if len(message.params) > 2 else "")[:KICKLEN]
    room = channel_to_room(channel)
    for nick in split_targets(message.params[1])[:1]:
        try:
            if room is None:
                raise HubError("no_such_room", channel)
            session.hub.kick(session.user, room, nick, reason)
        except HubError as problem:
            session.hub_error(problem, nick=nick, channel=channel)


def on_invite(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    nick, channel = message.params[0], message.params[1]
    room = channel_to_room(channel)
    try:
        if room is None:
            raise HubError("no_such_room", channel)
        target = session.hub.invite(session.user, nick, room)
    except HubError as problem:
        session.hub_error(problem, nick=nick, channel=channel)
        return
    session.numeric(Numeric.RPL_INVITING, target.nick, channel)
    if target.away:
        session.numeric(Numeric.RPL_AWAY, target.nick, target.away)
