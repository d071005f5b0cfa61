"""Replies shared by the command handlers: hub refusals as numerics, the closing ERROR."""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadchat.core.hub import HubError
from threadchat.protocols.irc.wire import Message, Numeric

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

# Hub refusals as IRC numerics; the subject (nick or channel) is added by the caller.
HUB_NUMERICS: dict[str, Numeric] = {
    "no_such_room": Numeric.ERR_NOSUCHCHANNEL,
    "invalid_room": Numeric.ERR_NOSUCHCHANNEL,
    "no_such_nick": Numeric.ERR_NOSUCHNICK,
    "not_in_room": Numeric.ERR_NOTONCHANNEL,
    "not_operator": Numeric.ERR_CHANOPRIVSNEEDED,
    "banned": Numeric.ERR_BANNEDFROMCHAN,
    "invite_only": Numeric.ERR_INVITEONLYCHAN,
    "bad_room_key": Numeric.ERR_BADCHANNELKEY,
    "room_full": Numeric.ERR_CHANNELISFULL,
    "moderated": Numeric.ERR_CANNOTSENDTOCHAN,
    "no_ctcp": Numeric.ERR_CANNOTSENDTOCHAN,
    "name_in_use": Numeric.ERR_NICKNAMEINUSE,
    "name_registered": Numeric.ERR_NICKNAMEINUSE,
    "invalid_name": Numeric.ERR_ERRONEUSNICKNAME,
    "not_privileged": Numeric.ERR_NOPRIVILEGES,
}


def hub_error(
    session: IrcSession, problem: HubError, *, nick: str = "*", channel: str = "*"
) -> None:
    """Answer a hub refusal with its numeric, naming the nick or channel it concerns."""
    numeric = HUB_NUMERICS.get(problem.code)
    if problem.code == "user_not_in_room":
        session.error(Numeric.ERR_USERNOTINCHANNEL, nick, channel)
    elif problem.code == "user_in_room":
        session.error(Numeric.ERR_USERONCHANNEL, nick, channel)
    elif problem.code in ("no_such_nick", "name_in_use", "invalid_name", "name_registered"):
        if problem.code == "name_registered":
            session.notice(f"*** {problem.message}")
        session.error(HUB_NUMERICS[problem.code], nick)
    elif numeric is Numeric.ERR_NOPRIVILEGES:
        session.error(numeric)
    elif numeric is not None:
        session.error(numeric, channel)
    else:
        session.numeric(Numeric.ERR_UNKNOWNERROR, "*", problem.message)


def closing_link(host: str, reason: str) -> Message:
    """The ERROR line that ends a link."""
    return Message("ERROR", [f"Closing Link: {host} ({reason})"])
