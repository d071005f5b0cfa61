"""WHO, WHOIS, WHOWAS, ISON, USERHOST and AWAY: what IRC users learn about each other.

Users of every protocol appear here: an IRC user as `nick!~ident@ip`, any other as
`nick!nick@ip` (see `codec.ident_host`).
"""

from __future__ import annotations

import fnmatch
import time
from typing import TYPE_CHECKING

from threadchat.core import names
from threadchat.core.hub import HubError, User
from threadchat.core.modes import MemberStatus, UserFlag
from threadchat.protocols.irc import modes as irc_modes
from threadchat.protocols.irc.codec import ident_host, realname_of, speaks_irc
from threadchat.protocols.irc.limits import AWAYLEN
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


def on_who(session: IrcSession, message: Message) -> None:
    mask = message.params[0] if message.params and message.params[0] else "*"
    room = channel_to_room(mask)
    if room is not None:
        try:
            state = session.hub.room_state(room)
        except HubError:
            state = None
        if state is not None:
            for user, statuses in state.members:
                _who_reply(session, "#" + state.name, user, statuses)
    else:
        pattern = names.fold(mask)
        for user in session.hub.users():
            if fnmatch.fnmatchcase(names.fold(user.nick), pattern) or pattern == "0":
                _who_reply(session, "*", user, ())
    session.error(Numeric.RPL_ENDOFWHO, mask)


def _who_reply(
    session: IrcSession, channel: str, user: User, statuses: tuple[MemberStatus, ...]
) -> None:
    ident, host = ident_host(user)
    oper = "*" if UserFlag.SERVER_OPERATOR in user.flags else ""
    flags = ("G" if user.away else "H") + oper
    flags += irc_modes.status_prefix(statuses, "multi-prefix" in session.caps)
    session.numeric(
        Numeric.RPL_WHOREPLY,
        channel,
        ident,
        host,
        session.server_name,
        user.nick,
        flags,
        f"0 {realname_of(user)}",
    )


def on_whois(session: IrcSession, message: Message) -> None:
    if not message.params or not message.params[-1]:
        session.error(Numeric.ERR_NONICKNAMEGIVEN)
        return
    nick = split_targets(message.params[-1])[0]
    user = session.hub.find_user(nick)
    if user is None:
        session.error(Numeric.ERR_NOSUCHNICK, nick)
        session.error(Numeric.RPL_ENDOFWHOIS, nick)
        return
    ident, host = ident_host(user)
    session.numeric(Numeric.RPL_WHOISUSER, user.nick, ident, host, "*", realname_of(user))
    rooms = session.hub.user_rooms(user)
    if rooms:
        multi = "multi-prefix" in session.caps
        words = [irc_modes.status_prefix(held, multi) + "#" + name for name, held in rooms]

        def build(text: str, more: bool) -> Message:
            return reply(
                session.server_name, Numeric.RPL_WHOISCHANNELS, session.nick, user.nick, text
            )

        session.send(*pack_words(words, build))
    kind = "IRC" if speaks_irc(user) else "native protocol"
    session.numeric(Numeric.RPL_WHOISSERVER, user.nick, session.server_name, f"threadchat ({kind})")
    if user.away:
        session.numeric(Numeric.RPL_AWAY, user.nick, user.away)
    if UserFlag.SERVER_OPERATOR in user.flags:
        session.numeric(Numeric.RPL_WHOISOPERATOR, user.nick, "is an IRC operator")
    if user.account:
        session.numeric(Numeric.RPL_WHOISACCOUNT, user.nick, user.account, "is logged in as")
    idle = str(max(0, int(time.time() - user.last_active)))
    session.numeric(
        Numeric.RPL_WHOISIDLE,
        user.nick,
        idle,
        str(int(user.signon)),
        "seconds idle, signon time",
    )
    session.error(Numeric.RPL_ENDOFWHOIS, user.nick)


def on_whowas(session: IrcSession, message: Message) -> None:
    # No history of departed users is kept (yet); clients wait for the end numeric.
    nick = message.params[0]
    session.numeric("406", nick, "There was no such nickname")
    session.numeric("369", nick, "End of WHOWAS")


def on_ison(session: IrcSession, message: Message) -> None:
    wanted = " ".join(message.params).split()
    present = [u.nick for u in map(session.hub.find_user, wanted) if u is not None]
    session.numeric(Numeric.RPL_ISON, " ".join(present))


def on_userhost(session: IrcSession, message: Message) -> None:
    replies = []
    for nick in " ".join(message.params).split()[:5]:
        user = session.hub.find_user(nick)
        if user is not None:
            ident, host = ident_host(user)
            oper = "*" if UserFlag.SERVER_OPERATOR in user.flags else ""
            away = "-" if user.away else "+"
            replies.append(f"{user.nick}{oper}={away}{ident}@{host}")
    session.numeric(Numeric.RPL_USERHOST, " ".join(replies))


def on_away(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    text = message.params[0][:AWAYLEN] if message.params else ""
    session.hub.set_away(session.user, text or None)
    session.error(Numeric.RPL_NOWAWAY if text else Numeric.RPL_UNAWAY)
