"""OPER, KILL and WALLOPS: server operators."""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from threadchat.core.hub import HubError
from threadchat.protocols.irc.wire import Message, Numeric

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

log = logging.getLogger(__name__)


def on_oper(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    name, password = message.params[0], message.params[1]
    for entry in session.config.oper:
        oper_name, _, oper_password = entry.partition(":")
        if oper_name == name:
            if hmac.compare_digest(password.encode(), oper_password.encode()):
                session.error(Numeric.RPL_YOUREOPER)
                session.hub.grant_server_operator(session.user)
                log.info("%s: %s is now a server operator", session.label, session.user.nick)
            else:
                session.error(Numeric.ERR_PASSWDMISMATCH)
            return
    session.error(Numeric.ERR_NOOPERHOST)


def on_kill(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    nick, comment = message.params[0], message.params[1]
    try:
        victim = session.hub.kill(session.user, nick, comment)
    except HubError as problem:
        session.hub_error(problem, nick=nick)
        return
    # Let the victim's ERROR line leave before its socket is shut down.
    session.flush_now()
    for conn in victim.connections:
        abort = getattr(conn, "abort", None)
        if abort is not None:
            abort(f"Killed ({session.user.nick} ({comment}))")


def on_wallops(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    session.hub.wallops(session.user, message.params[0])
