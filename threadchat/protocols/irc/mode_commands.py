"""MODE: user modes and channel modes, read and changed.

The letters, their parsing and their formatting are `modes.py`'s (IRC's view of the core's
modes); this module carries out the command against the hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadchat.core import names
from threadchat.core.hub import HubError, RoomState
from threadchat.protocols.irc import modes as irc_modes
from threadchat.protocols.irc.limits import BANMASK_MAX, KEYLEN, MAX_MODES
from threadchat.protocols.irc.wire import Message, Numeric, channel_to_room

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession


def on_mode(session: IrcSession, message: Message) -> None:
    target = message.params[0]
    if target.startswith("#"):
        _channel_mode(session, target, message.params[1:])
    else:
        _user_mode(session, target, message.params[1:])


def _user_mode(session: IrcSession, target: str, args: list[str]) -> None:
    assert session.user is not None
    if names.fold(target) != session.user.key:
        if session.hub.find_user(target) is None:
            session.error(Numeric.ERR_NOSUCHNICK, target)
        else:
            session.error(Numeric.ERR_USERSDONTMATCH)
        return
    if not args or not args[0]:
        session.numeric(Numeric.RPL_UMODEIS, irc_modes.user_mode_is(session.user.flags))
        return
    changes, unknown = irc_modes.parse_user_modes(args[0])
    if unknown:
        session.error(Numeric.ERR_UMODEUNKNOWNFLAG)
    session.hub.set_user_modes(session.user, changes)


def _channel_mode(session: IrcSession, channel: str, args: list[str]) -> None:
    assert session.user is not None
    room = channel_to_room(channel)
    try:
        if room is None:
            raise HubError("no_such_room", channel)
        state = session.hub.room_state(room)
    except HubError as problem:
        session.hub_error(problem, channel=channel)
        return
    channel = "#" + state.name
    if not args or not args[0]:
        _send_channel_modes(session, state)
        return
    parsed = irc_modes.parse_channel_modes(
        args[0],
        args[1:],
        max_with_parameter=MAX_MODES,
        key_max=KEYLEN,
        mask_max=BANMASK_MAX,
        bad_word=_bad_word,
    )
    for letter in parsed.unknown:
        session.error(Numeric.ERR_UNKNOWNMODE, letter)
    changes = parsed.changes
    for which in parsed.lists:
        entry_numeric, end_numeric = irc_modes.ROOM_LIST_NUMERICS[which]
        for entry in state.entries(which):
            session.numeric(entry_numeric, channel, entry)
        session.numeric(end_numeric, channel, irc_modes.ROOM_LIST_ENDS[which])
    if not changes:
        return
    try:
        session.hub.set_room_modes(session.user, state.name, changes)
    except HubError as problem:
        # The hub's messages name the nick: "there is nobody called X", "X is not in R".
        words = problem.message.split()
        nick = words[-1] if problem.code == "no_such_nick" else words[0]
        session.hub_error(problem, nick=nick, channel=channel)


def _send_channel_modes(session: IrcSession, state: RoomState) -> None:
    channel = "#" + state.name
    member = any(user is session.user for user, _ in state.members)
    params = irc_modes.channel_mode_is(state.flags, state.password, state.limit, show_key=member)
    session.numeric(Numeric.RPL_CHANNELMODEIS, channel, *params)
    session.numeric(Numeric.RPL_CREATIONTIME, channel, str(int(state.created)))


def _bad_word(word: str) -> bool:
    return word.startswith(":") or any(c in word for c in " ,\x07") or bool(names.text_error(word))
