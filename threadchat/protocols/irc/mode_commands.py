"""MODE: user modes (i, w, o) and channel modes (b, k, l, i, m, n, t, o, v)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadchat.core import names
from threadchat.core.hub import HubError, ModeChange, RoomState
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
        session.numeric(Numeric.RPL_UMODEIS, "+" + "".join(sorted(session.user.modes)))
        return
    changes, unknown, add = [], False, True
    for letter in args[0]:
        if letter in "+-":
            add = letter == "+"
        elif letter in "iwo":
            changes.append(ModeChange(add, letter))
        else:
            unknown = True
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
    changes, list_bans = _parse_channel_modes(session, args[0], args[1:])
    if list_bans:
        for ban in state.bans:
            session.numeric(Numeric.RPL_BANLIST, channel, ban)
        session.error(Numeric.RPL_ENDOFBANLIST, channel)
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
    letters = "".join(sorted(state.modes))
    params: list[str] = []
    member = any(user is session.user for user, _ in state.members)
    if state.password is not None:
        letters += "k"
        params.append(state.password if member else "*")
    if state.limit is not None:
        letters += "l"
        params.append(str(state.limit))
    session.numeric(Numeric.RPL_CHANNELMODEIS, channel, "+" + letters, *params)
    session.numeric(Numeric.RPL_CREATIONTIME, channel, str(int(state.created)))


def _parse_channel_modes(
    session: IrcSession, text: str, args: list[str]
) -> tuple[list[ModeChange], bool]:
    """Mode letters and their arguments as ModeChanges; True if the ban list was asked."""
    changes: list[ModeChange] = []
    list_bans = False
    add = True
    queue = list(args)
    with_arg = 0
    for letter in text:
        if letter in "+-":
            add = letter == "+"
            continue
        if letter in "imnt":
            changes.append(ModeChange(add, letter))
            continue
        if letter not in "bklov":
            session.error(Numeric.ERR_UNKNOWNMODE, letter)
            continue
        needs_arg = letter in "bkov" or (letter == "l" and add)
        if not needs_arg:
            changes.append(ModeChange(add, letter))
            continue
        if not queue:
            if letter == "b":
                list_bans = True
            elif letter == "k" and not add:
                changes.append(ModeChange(False, "k"))
            continue
        arg = queue.pop(0)
        with_arg += 1
        if with_arg > MAX_MODES:
            break
        if letter == "k" and (not arg or len(arg) > KEYLEN or _bad_word(arg)):
            continue
        if letter == "b" and (len(arg) > BANMASK_MAX or _bad_word(arg)):
            continue
        changes.append(ModeChange(add, letter, arg))
    return changes, list_bans


def _bad_word(word: str) -> bool:
    return word.startswith(":") or any(c in word for c in " ,\x07") or bool(names.text_error(word))
