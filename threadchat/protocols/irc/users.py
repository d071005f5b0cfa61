"""WHO, WHOIS, WHOWAS, ISON, USERHOST and AWAY: what IRC users learn about each other.

Users of every protocol appear here: an IRC user as `nick!~ident@ip`, any other as
`nick!nick@ip` (see `codec.ident_host`). What may be seen is the hub's rule: an invisible
user (`+i`) is found by a WHO only by people who share a room with them, and a secret or
private room's members are listed, and the room named in a WHOIS, only to its members.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from threadchat.core import events, names
from threadchat.core.hub import HubError, User
from threadchat.core.modes import MemberStatus, UserFlag
from threadchat.protocols.irc import metadata as irc_metadata
from threadchat.protocols.irc import modes as irc_modes
from threadchat.protocols.irc.codec import ident_host, realname_of, safe_host, speaks_irc
from threadchat.protocols.irc.limits import AWAYLEN, REALNAME_MAX
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


# WHOX (`WHO mask %fields[,token]`): the fields a 354 reply may carry, in the order it
# carries them whatever order they were asked in.
WHOX_FIELDS = "tcuihsnfdlaor"


@dataclass(frozen=True, slots=True)
class WhoxRequest:
    fields: str
    token: str


def parse_whox(word: str) -> WhoxRequest | None:
    """`%cnuf,42` -> the fields (known letters, in reply order) and the token; None for an
    ordinary WHO (no `%`)."""
    if not word.startswith("%"):
        return None
    letters, _, token = word[1:].partition(",")
    fields = "".join(f for f in WHOX_FIELDS if f in letters)
    # The token comes back only when asked for with `t`: 1 to 3 digits.
    if "t" in fields and not (token.isdigit() and len(token) <= 3):
        token = "0"
    return WhoxRequest(fields, token)


def on_who(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    mask = message.params[0] if message.params and message.params[0] else "*"
    whox = parse_whox(message.params[1]) if len(message.params) > 1 else None
    room = channel_to_room(mask)
    if room is not None:
        try:
            state = session.hub.room_state(room, viewer=session.user)
        except HubError:
            state = None  # no such room, or a secret one the asker is not in
        if state is not None:
            for user, statuses in state.members:
                _who_reply(session, "#" + state.name, user, statuses, whox)
    else:
        pattern = names.fold(mask)
        if pattern != "0" and not any(c in pattern for c in "*?"):
            # A plain nick names one person: invisibility hides from searches, not from that.
            found = session.hub.find_user(mask)
            matches = [found] if found is not None else []
        else:
            matches = [
                user
                for user in session.hub.visible_users(session.user)
                if pattern == "0" or names.glob_match(pattern, names.fold(user.nick))
            ]
        for user in matches:
            _who_reply(session, "*", user, (), whox)
    session.error(Numeric.RPL_ENDOFWHO, mask)


def _who_reply(
    session: IrcSession,
    channel: str,
    user: User,
    statuses: tuple[MemberStatus, ...],
    whox: WhoxRequest | None = None,
) -> None:
    ident, host = ident_host(user)
    oper = "*" if UserFlag.SERVER_OPERATOR in user.flags else ""
    flags = ("G" if user.away else "H") + oper
    flags += "B" if UserFlag.BOT in user.flags else ""
    flags += irc_modes.status_prefix(statuses, "multi-prefix" in session.caps)
    if whox is not None:
        values = {
            "t": whox.token,
            "c": channel,
            "u": ident,
            "i": host if _is_ip(host) else "255.255.255.255",
            "h": host,
            "s": session.server_name,
            "n": user.nick,
            "f": flags,
            "d": "0",
            "l": str(max(0, int(time.time() - user.last_active))),
            "a": user.account or "0",
            "o": "n/a",
            "r": realname_of(user),
        }
        session.numeric(Numeric.RPL_WHOSPCRPL, *(values[f] for f in whox.fields))
        return
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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
    rooms = session.hub.user_rooms(user, viewer=session.user)
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
    if UserFlag.BOT in user.flags:
        session.numeric(Numeric.RPL_WHOISBOT, user.nick, "is a bot")
    if user.account:
        session.numeric(Numeric.RPL_WHOISACCOUNT, user.nick, user.account, "is logged in as")
    irc_metadata.whois_lines(session, user.nick)
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
    """`WHOWAS nick[,nick...] [count]`: who had each nick, newest first (the hub keeps the
    last departures, by quit or nick change); a positive count limits the entries per nick,
    zero or a negative one (or none) shows them all."""
    count = 0
    if len(message.params) > 1:
        try:
            count = int(message.params[1])
        except ValueError:
            count = 0
    for nick in split_targets(message.params[0]) or ["*"]:
        found = session.hub.whowas(nick, count) if nick != "*" else []
        if not found:
            session.error(Numeric.ERR_WASNOSUCHNICK, nick)
        for past in found:
            ident, host = _past_ident_host(past)
            realname = past.realname or ("" if past.username else "threadchat native user")
            session.numeric(Numeric.RPL_WHOWASUSER, past.nick, ident, host, "*", realname)
            left = datetime.fromtimestamp(past.left_at, UTC).strftime("%a %b %d %H:%M:%S %Y UTC")
            session.numeric(Numeric.RPL_WHOISSERVER, past.nick, session.server_name, left)
        session.error(Numeric.RPL_ENDOFWHOWAS, nick)


def _past_ident_host(past: events.PastUser) -> tuple[str, str]:
    # As `codec.ident_host` shows a user who is here: other protocols' users have no ident.
    if past.username:
        return past.username, past.host
    return past.nick, safe_host(past.host or "unknown")


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


def on_setname(session: IrcSession, message: Message) -> None:
    """SETNAME (IRCv3 setname): change one's real name; those who see the user and asked
    for `setname` get a SETNAME line, the user included."""
    assert session.user is not None
    realname = message.params[0] if message.params else ""
    if not realname or len(realname) > REALNAME_MAX:
        why = "Real name is empty" if not realname else f"Real name is longer than {REALNAME_MAX}"
        session.fail("SETNAME", "INVALID_REALNAME", why)
        return
    try:
        session.hub.set_realname(session.user, realname)
    except HubError as problem:
        session.fail("SETNAME", "INVALID_REALNAME", problem.message)
