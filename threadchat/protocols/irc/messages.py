"""PRIVMSG, NOTICE and TAGMSG: messages to channels, to people and to NickServ.

PRIVMSGs of one read share one store commit (see `Hub.pipeline`), like the native
protocol's lines. `PRIVMSG` with CTCP ACTION becomes a hub action (`/me`), so native users see
`* nick text`; other text passes through unchanged (IRC formatting codes and CTCP reach IRC
peers intact), the hub refusing only CR, LF and NUL.

Client-only tags (`+name=value`, IRCv3 message-tags) ride with the message as the hub's
client tags: recipients with message-tags get them, the others the bare line. TAGMSG carries
client tags alone, to the same targets on the same terms, and only to clients with
message-tags (the others would not know the command).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from threadchat.core import events
from threadchat.core.hub import Echo, HubError
from threadchat.core.modes import MemberStatus
from threadchat.protocols.irc import modes as irc_modes
from threadchat.protocols.irc import sasl as irc_accounts
from threadchat.protocols.irc.codec import chat_messages
from threadchat.protocols.irc.limits import MAX_TARGETS
from threadchat.protocols.irc.wire import (
    Formatter,
    Message,
    Numeric,
    channel_to_room,
    split_targets,
)

if TYPE_CHECKING:
    from threadchat.protocols.irc.session import IrcSession

# ISUPPORT STATUSMSG: the marks a channel target may start with.
STATUSMSG = "".join(irc_modes.STATUS_PREFIXES.values())
# Widest audience last: a VOICE message reaches the operators as well.
_STATUS_ORDER = (MemberStatus.VOICE, MemberStatus.OPERATOR)


def on_message(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    notice = message.command == "NOTICE"
    if not message.params or not message.params[0]:
        if not notice:
            session.error(Numeric.ERR_NORECIPIENT)
        return
    if len(message.params) < 2 or not message.params[1]:
        if not notice:
            session.error(Numeric.ERR_NOTEXTTOSEND)
        return
    text, kind = message.params[1], events.NOTICE if notice else events.TEXT
    # The checks below skip their calls for the usual message (one target, no CTCP, no
    # tags): this runs for every message.
    if text.startswith("\x01") and not notice:
        action = ctcp_action(text)
        if action is not None:
            text, kind = action, events.ACTION
    to = message.params[0]
    targets = split_targets(to) if "," in to else [to]
    for target in targets[MAX_TARGETS:]:
        session.numeric("407", target, "Too many targets")
    echo = session.echo if "echo-message" in session.codec.caps else None
    tags = client_tags(message) if message.tags else ()
    for target in targets[:MAX_TARGETS]:
        try:
            _deliver(session, target, text, kind, notice, echo, tags)
        except HubError as problem:
            if not notice:  # RFC: never answer a NOTICE automatically
                session.hub_error(problem, nick=target, channel=target)


def client_tags(message: Message) -> events.ClientTags:
    """The client-only tags (`+name`) of a client's line, in the order it sent them."""
    if not message.tags:
        return ()
    return tuple((k, v) for k, v in message.tags.items() if k.startswith("+"))


def _deliver(
    session: IrcSession,
    target: str,
    text: str,
    kind: str,
    notice: bool,
    echo: Echo | None,
    tags: events.ClientTags = (),
) -> None:
    user = session.user
    assert user is not None
    hub = session.hub
    status = None
    marks = target[: len(target) - len(target.lstrip(STATUSMSG))]
    if marks and target[len(marks) :].startswith("#"):
        # STATUSMSG: `@#room` reaches its operators, `+#room` its voiced members too; of
        # several marks the widest audience counts.
        status = min((irc_modes.PREFIX_STATUSES[mark] for mark in marks), key=_STATUS_ORDER.index)
        target = target[len(marks) :]
    if target.startswith("#"):
        room = channel_to_room(target)
        if room is None:
            raise HubError("no_such_room", target)
        try:
            if status is not None:
                hub.say_to_status(
                    user, room, text, status, kind, echo, origin=session.transport, tags=tags
                )
            else:
                hub.say(user, room, text, kind, echo, origin=session.transport, tags=tags)
        except HubError as problem:
            if problem.code == "not_in_room":
                raise HubError("moderated", problem.message) from problem
            raise
        return
    if irc_accounts.is_nickserv(target) and hub.find_user(target) is None:
        hub.pipeline.complete()  # its replies and login must not overtake queued messages
        if echo is not None:
            lines = chat_messages(session.mask, target, text, kind, user.account)
            for line in lines:
                session.send_bytes(Formatter(line, time=time.time()).encode(session.caps))
        irc_accounts.nickserv(session, text)
        return
    recipient = hub.send_private(
        user, target, text, kind, echo, origin=session.transport, tags=tags
    )
    if recipient.away and not notice:
        session.numeric(Numeric.RPL_AWAY, recipient.nick, recipient.away)


def on_tagmsg(session: IrcSession, message: Message) -> None:
    """Client tags alone (typing notices, reactions) to channels and people."""
    user = session.user
    assert user is not None
    if "message-tags" not in session.caps:
        session.error(Numeric.ERR_UNKNOWNCOMMAND, "TAGMSG")
        return
    tags = client_tags(message)
    echo = session.echo if "echo-message" in session.caps else None
    targets = split_targets(message.params[0])
    for target in targets[MAX_TARGETS:]:
        session.numeric("407", target, "Too many targets")
    for target in targets[:MAX_TARGETS]:
        try:
            if target.startswith("#"):
                room = channel_to_room(target)
                if room is None:
                    raise HubError("no_such_room", target)
                try:
                    session.hub.send_tags(
                        user, tags, room=room, echo=echo, origin=session.transport
                    )
                except HubError as problem:
                    if problem.code == "not_in_room":
                        raise HubError("moderated", problem.message) from problem
                    raise
            else:
                session.hub.send_tags(
                    user, tags, target=target, echo=echo, origin=session.transport
                )
        except HubError as problem:
            session.hub_error(problem, nick=target, channel=target)


def ctcp_action(text: str) -> str | None:
    """The text of a CTCP ACTION (`\\x01ACTION waves\\x01`), or None for other text."""
    if not text.startswith("\x01ACTION"):
        return None
    body = text[len("\x01ACTION") :]
    if body.endswith("\x01"):
        body = body[:-1]
    if body and not body.startswith(" "):
        return None  # e.g. "\x01ACTIONS": some other CTCP
    return body[1:] if body else ""
