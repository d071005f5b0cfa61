"""MONITOR (IRCv3): be told when nicks come online or go offline.

The watch list and the presence events are the core's (`Hub.watch`, `events.Presence`), so
a native user can be watched like anyone; this module only speaks IRC: `MONITOR + nicks`,
`- nicks`, `C` (clear), `L` (list) and `S` (status), answered with 730-734. Later changes
reach the watcher as 730/731 lines (`codec`); with `extended-monitor` also the away, real
name and account changes of the people watched (`User.watch_details`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadchat.core.hub import WATCH_MAX, User
from threadchat.protocols.irc.codec import source_of
from threadchat.protocols.irc.wire import Message, Numeric, is_valid_nick, pack_words, reply

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

ISUPPORT_TOKEN = {"MONITOR": str(WATCH_MAX)}


def on_monitor(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    hub, user = session.hub, session.user
    sub = message.params[0].upper()
    targets = [t for t in (message.params[1] if len(message.params) > 1 else "").split(",") if t]
    match sub:
        case "+":
            if not targets:
                session.error(Numeric.ERR_NEEDMOREPARAMS, "MONITOR")
                return
            wanted = [t for t in targets if is_valid_nick(t)]
            online, offline, refused = hub.watch(user, wanted)
            _send_status(session, online, offline)
            if refused:
                session.numeric(
                    Numeric.ERR_MONLISTFULL,
                    str(WATCH_MAX),
                    ",".join(refused),
                    "Monitor list is full.",
                )
        case "-":
            if not targets:
                session.error(Numeric.ERR_NEEDMOREPARAMS, "MONITOR")
                return
            hub.unwatch(user, targets)
        case "C":
            hub.unwatch(user)
        case "L":
            _send_list(session, Numeric.RPL_MONLIST, list(user.watching.values()))
            session.error(Numeric.RPL_ENDOFMONLIST)
        case "S":
            _send_status(session, *hub.watch_status(user))
        case _:
            session.fail("MONITOR", "INVALID_PARAMS", sub, "Unknown MONITOR subcommand")


def _send_status(session: IrcSession, online: list[User], offline: list[str]) -> None:
    if online:
        _send_list(session, Numeric.RPL_MONONLINE, [source_of(u) for u in online])
    if offline:
        _send_list(session, Numeric.RPL_MONOFFLINE, offline)


def _send_list(session: IrcSession, numeric: Numeric, words: list[str]) -> None:
    """One or more `numeric` lines of comma-separated `words`, each within 512 bytes."""
    if not words:
        return

    def build(text: str, more: bool) -> Message:
        return reply(session.server_name, numeric, session.nick, text.replace(" ", ","))

    session.send(*pack_words(words, build))
