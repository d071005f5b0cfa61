"""The command table: IRC command name -> handler, and the dispatcher that checks each line.

Handlers are functions of (session, message), grouped by topic in their own modules:
registration (`registration.py`), messages, channels, channel and user modes
(`mode_commands.py`), users, operators, server information, SASL (`sasl.py`) and history
(`chathistory.py`). They run on the reader thread inside its delivery batch; `session.user`
is set for every handler not marked `before_registration`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from threadchat.core.hub import HubError
from threadchat.protocols.irc import (
    channels,
    messages,
    mode_commands,
    operators,
    registration,
    server_info,
    users,
)
from threadchat.protocols.irc import chathistory as irc_history
from threadchat.protocols.irc import devices as irc_devices
from threadchat.protocols.irc import metadata as irc_metadata
from threadchat.protocols.irc import monitor as irc_monitor
from threadchat.protocols.irc import sasl as irc_accounts
from threadchat.protocols.irc.help_topics import HELP_TOPICS
from threadchat.protocols.irc.wire import Message, Numeric

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession


@dataclass(frozen=True, slots=True)
class Command:
    """A row of the command table: the dispatcher checks registration and parameter count."""

    handler: Callable[[IrcSession, Message], None]
    before_registration: bool = False
    min_params: int = 0


def dispatch(session: IrcSession, message: Message) -> None:
    command = COMMANDS.get(message.command)
    if command is None:
        if session.user is None:
            session.error(Numeric.ERR_NOTREGISTERED)
        else:
            session.error(Numeric.ERR_UNKNOWNCOMMAND, message.command)
        return
    if session.user is None and not command.before_registration:
        session.error(Numeric.ERR_NOTREGISTERED)
        return
    if len(message.params) < command.min_params:
        session.error(Numeric.ERR_NEEDMOREPARAMS, message.command)
        return
    try:
        command.handler(session, message)
    except HubError as problem:
        # Handlers catch the refusals they can name precisely; this is the rest.
        subject = message.params[0] if message.params else "*"
        session.hub_error(problem, nick=subject, channel=subject)


# -- the link itself --------------------------------------------------------------------------


def on_ping(session: IrcSession, message: Message) -> None:
    server_name = session.server_name
    session.send(Message("PONG", [server_name, message.params[0]], server_name))


def on_pong(session: IrcSession, message: Message) -> None:
    pass  # any input already counts as an answer


def on_quit(session: IrcSession, message: Message) -> None:
    text = message.params[0] if message.params and message.params[0] else ""
    reason = f"Quit: {text}" if text else "Client Quit"
    session.close_link(reason)


def on_help(session: IrcSession, message: Message) -> None:
    """HELP (and HELPOP) [topic]: 704, 705 lines, 706; an unknown topic gets 524."""
    asked = message.params[0] if message.params and message.params[0] else ""
    if asked:
        topic = HELP_TOPICS.get(asked.upper())
        if topic is None:
            session.error(Numeric.ERR_HELPNOTFOUND, asked)
            return
        subject, lines = asked, list(topic)
    else:
        subject = "*"
        lines = [
            f"threadchat speaks IRC; commands: {' '.join(sorted(COMMANDS))}",
            "Channels are rooms of the native protocol: #dev is room dev.",
            "HELP <command> tells more about one of them.",
        ]
    session.numeric(Numeric.RPL_HELPSTART, subject, lines[0])
    for line in lines[1:]:
        session.numeric(Numeric.RPL_HELPTXT, subject, line)
    session.numeric(Numeric.RPL_ENDOFHELP, subject, "End of /HELP")


COMMANDS: dict[str, Command] = {
    "CAP": Command(registration.on_registration, True),
    "PASS": Command(registration.on_registration, True),
    "AUTHENTICATE": Command(irc_accounts.on_authenticate, True, 1),
    "USER": Command(registration.on_registration, True),
    "NICK": Command(registration.on_nick, True),
    "PING": Command(on_ping, True, 1),
    "PONG": Command(on_pong, True),
    "QUIT": Command(on_quit, True),
    "JOIN": Command(channels.on_join, min_params=1),
    "PART": Command(channels.on_part, min_params=1),
    "PRIVMSG": Command(messages.on_message),
    "NOTICE": Command(messages.on_message),
    "TAGMSG": Command(messages.on_tagmsg, min_params=1),
    "BATCH": Command(messages.on_batch, min_params=1),
    "REDACT": Command(messages.on_redact, min_params=2),
    "CHATHISTORY": Command(irc_history.on_chathistory, min_params=1),
    "MARKREAD": Command(irc_devices.on_markread),
    "SEARCH": Command(irc_devices.on_search, min_params=1),
    "TOPIC": Command(channels.on_topic, min_params=1),
    "NAMES": Command(channels.on_names),
    "LIST": Command(channels.on_list),
    "WHO": Command(users.on_who),
    "WHOIS": Command(users.on_whois),
    "WHOWAS": Command(users.on_whowas, min_params=1),
    "ISON": Command(users.on_ison, min_params=1),
    "USERHOST": Command(users.on_userhost, min_params=1),
    "AWAY": Command(users.on_away),
    "MODE": Command(mode_commands.on_mode, min_params=1),
    "KICK": Command(channels.on_kick, min_params=2),
    "INVITE": Command(channels.on_invite),
    "RENAME": Command(channels.on_rename, min_params=2),
    "OPER": Command(operators.on_oper, min_params=2),
    "KILL": Command(operators.on_kill, min_params=2),
    "WALLOPS": Command(operators.on_wallops, min_params=1),
    "INFO": Command(server_info.on_info),
    "VERSION": Command(server_info.on_version),
    "TIME": Command(server_info.on_time),
    "ADMIN": Command(server_info.on_admin),
    "HELP": Command(on_help),
    "HELPOP": Command(on_help),
    "LUSERS": Command(server_info.on_lusers),
    "LINKS": Command(server_info.on_links),
    "MOTD": Command(server_info.on_motd),
    "MONITOR": Command(irc_monitor.on_monitor, min_params=1),
    "SETNAME": Command(users.on_setname, min_params=1),
    "REGISTER": Command(irc_accounts.on_register, True, 3),
    "VERIFY": Command(irc_accounts.on_verify, True, 2),
    "METADATA": Command(irc_metadata.on_metadata, True, 2),
}
