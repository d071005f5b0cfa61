"""INFO, VERSION, TIME, ADMIN, LUSERS and MOTD: what the server says about itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from threadchat.protocols.irc.registration import VERSION, send_isupport, send_lusers, send_motd
from threadchat.protocols.irc.wire import Message, Numeric

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession


def on_info(session: IrcSession, message: Message) -> None:
    for line in (
        f"{VERSION}: a threaded chat server",
        "IRC and the native protocol share one hub: #room here is room elsewhere.",
    ):
        session.numeric(Numeric.RPL_INFO, line)
    session.error(Numeric.RPL_ENDOFINFO)


def on_version(session: IrcSession, message: Message) -> None:
    session.numeric(Numeric.RPL_VERSION, VERSION, session.server_name, "threadchat IRC transport")
    send_isupport(session)


def on_time(session: IrcSession, message: Message) -> None:
    now = datetime.now(UTC).strftime("%A %B %d %Y -- %H:%M:%S UTC")
    session.numeric(Numeric.RPL_TIME, session.server_name, now)


def on_admin(session: IrcSession, message: Message) -> None:
    server_name = session.server_name
    session.numeric(Numeric.RPL_ADMINME, server_name, "Administrative info")
    session.numeric(Numeric.RPL_ADMINLOC1, f"{server_name}, a threadchat server")
    session.numeric(Numeric.RPL_ADMINLOC2, "Run by its operators (see OPER)")
    session.numeric(Numeric.RPL_ADMINEMAIL, "no e-mail configured")


def on_links(session: IrcSession, message: Message) -> None:
    """LINKS: a network of one server lists itself, 0 hops away, with its description."""
    server_name = session.server_name
    info = f"0 {session.config.server_info}"
    session.numeric(Numeric.RPL_LINKS, server_name, server_name, info)
    session.error(Numeric.RPL_ENDOFLINKS, "*")


def on_lusers(session: IrcSession, message: Message) -> None:
    send_lusers(session)


def on_motd(session: IrcSession, message: Message) -> None:
    send_motd(session)
