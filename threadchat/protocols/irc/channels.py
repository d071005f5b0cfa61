"""JOIN, PART, TOPIC, NAMES, LIST, KICK and INVITE.

IRC channel `#name` is room `name` (rooms are ASCII `[A-Za-z0-9_.-]`, so `#café` is refused
with 403). A JOIN answers with the topic, the member list and, when the server keeps history,
a replay of the room's last messages (see `chathistory.replay_on_join`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from threadchat.core import events, names
from threadchat.core.hub import HubError, User
from threadchat.core.modes import MemberStatus
from threadchat.protocols.irc import chathistory as irc_history
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
        if "no-implicit-names" not in session.caps:
            _send_name_list(session, arrival.room, arrival.members or ())
        irc_history.replay_on_join(session, joined.name)


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
        if room is None or session.hub.get_room(room) is None:
            session.error(Numeric.RPL_ENDOFNAMES, channel)
            continue
        _send_names(session, room)


def _send_names(session: IrcSession, room: str) -> None:
    try:
        state = session.hub.room_state(room)
    except HubError:
        session.error(Numeric.RPL_ENDOFNAMES, "#" + room)
        return
    _send_name_list(session, state.name, state.members)


def _send_name_list(
    session: IrcSession, room: str, members: Iterable[tuple[User, tuple[MemberStatus, ...]]]
) -> None:
    channel = "#" + room
    multi = "multi-prefix" in session.caps
    full = "userhost-in-names" in session.caps
    entries = [
        irc_modes.status_prefix(statuses, multi) + (source_of(user) if full else user.nick)
        for user, statuses in members
    ]

    def build(text: str, more: bool) -> Message:
        return reply(session.server_name, Numeric.RPL_NAMREPLY, session.nick, "=", channel, text)

    session.send(*pack_words(entries, build))
    session.error(Numeric.RPL_ENDOFNAMES, channel)


def on_list(session: IrcSession, message: Message) -> None:
    wanted = None
    if message.params and message.params[0]:
        wanted = {names.fold(c) for c in split_targets(message.params[0])}
    session.numeric(Numeric.RPL_LISTSTART, "Channel", "Users  Name")
    for state in session.hub.room_states():
        channel = "#" + state.name
        if wanted is None or names.fold(channel) in wanted:
            session.numeric(Numeric.RPL_LIST, channel, str(len(state.members)), state.topic)
    session.error(Numeric.RPL_LISTEND)


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
