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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from threadchat.core import events, live
from threadchat.core.hub import Echo, HubError
from threadchat.core.modes import MemberStatus
from threadchat.protocols.irc import modes as irc_modes
from threadchat.protocols.irc import sasl as irc_accounts
from threadchat.protocols.irc.codec import (
    CONCAT_TAG,
    MULTILINE_BATCH,
    MULTILINE_CAP,
    REACT_TAG,
    REPLY_TAG,
    TYPING_TAG,
    UNREACT_TAG,
    chat_messages,
)
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


@dataclass(eq=False)
class MultilineBatch:
    """A draft/multiline batch being received: its reference, target, the client tags of
    its BATCH line, its label (labeled-response: the answer to the batch, its echo, comes
    at its end), the text so far and where lines were joined to the previous one
    (`draft/multiline-concat`, offsets in the text). `failed` once a limit was passed (the
    rest of the batch is dropped)."""

    ref: str
    target: str
    tags: events.ClientTags
    label: str | None = None
    command: str = ""
    text: str = ""
    lines: int = 0
    concat_at: list[int] = field(default_factory=list)
    failed: bool = False


def on_batch(session: IrcSession, message: Message) -> None:
    """BATCH +ref draft/multiline TARGET opens a multiline message; BATCH -ref sends it as
    one message (IRCv3 multiline); refusals are FAIL BATCH with the spec's codes."""
    ref = message.params[0]
    if ref.startswith("+"):
        if len(message.params) < 3 or message.params[1] != MULTILINE_BATCH:
            session.fail("BATCH", "MULTILINE_INVALID", "Only draft/multiline batches are taken")
            return
        if MULTILINE_CAP not in session.caps:
            session.fail("BATCH", "MULTILINE_INVALID", "Enable draft/multiline first")
            return
        label = message.tags.get("label") if "labeled-response" in session.caps else None
        session.multiline = MultilineBatch(
            ref[1:], message.params[2], client_tags(message), label or None
        )
        return
    batch = session.multiline
    if not ref.startswith("-") or batch is None or ref[1:] != batch.ref:
        session.fail("BATCH", "MULTILINE_INVALID", "No such batch is open")
        return
    session.multiline = None
    if batch.failed:
        return
    if batch.label is not None:
        # The label of the opening BATCH line labels the response to the whole batch: its
        # echo (a batch, labeled on its opening line) or its error.
        session.labeled(batch.label, _send_batch, batch, session)
    else:
        _send_batch(batch, session)


def _send_batch(batch: MultilineBatch, session: IrcSession) -> None:
    if not batch.text.strip():
        session.fail("BATCH", "MULTILINE_INVALID", "Invalid multiline batch with blank lines only")
        return
    notice = batch.command == "NOTICE"
    echo = session.echo if "echo-message" in session.caps else None
    tags = batch.tags
    if batch.concat_at:
        # The lines as sent ride with the message (see codec.CONCAT_TAG).
        tags = (*tags, (CONCAT_TAG, ",".join(map(str, batch.concat_at))))
    try:
        _deliver(session, batch.target, batch.text, _kind(notice), notice, echo, tags)
    except HubError as problem:
        if not notice:
            session.hub_error(problem, nick=batch.target, channel=batch.target)


def _kind(notice: bool) -> str:
    return events.NOTICE if notice else events.TEXT


def _in_batch(session: IrcSession, message: Message) -> None:
    """A PRIVMSG or NOTICE line of the open multiline batch."""
    batch = session.multiline
    if batch is None or message.tags.get("batch") != batch.ref:
        session.fail(message.command, "MULTILINE_INVALID", "That batch is not open")
        return
    if batch.failed:
        return
    target = message.params[0] if message.params else ""
    text = message.params[1] if len(message.params) > 1 else ""
    concat = CONCAT_TAG in message.tags
    problem: tuple[str, ...] | None = None
    if target != batch.target:
        problem = ("MULTILINE_INVALID_TARGET", batch.target, target, "Invalid multiline target")
    elif batch.command and batch.command != message.command:
        problem = ("MULTILINE_INVALID", "Invalid multiline batch: PRIVMSG and NOTICE mixed")
    elif concat and not text:
        problem = ("MULTILINE_INVALID", "Invalid multiline batch with concatenated blank line")
    joined = batch.text + ("" if concat or not batch.lines else "\n") + text
    if problem is None and batch.lines + 1 > live.MULTILINE_MAX_LINES:
        problem = (
            "MULTILINE_MAX_LINES",
            str(live.MULTILINE_MAX_LINES),
            "Multiline batch max-lines exceeded",
        )
    if problem is None and len(joined.encode()) > live.MULTILINE_MAX_BYTES:
        problem = (
            "MULTILINE_MAX_BYTES",
            str(live.MULTILINE_MAX_BYTES),
            "Multiline batch max-bytes exceeded",
        )
    if problem is not None:
        batch.failed = True
        if batch.label is not None:  # the batch's response, labeled as its opening line
            session.labeled(batch.label, session.fail, "BATCH", *problem)
        else:
            session.fail("BATCH", *problem)
        return
    if concat and batch.lines:
        batch.concat_at.append(len(batch.text))
    batch.command = message.command
    batch.text = joined
    batch.lines += 1


def on_message(session: IrcSession, message: Message) -> None:
    assert session.user is not None
    if "batch" in message.tags and session.multiline is not None:
        _in_batch(session, message)
        return
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
        reply_to, plain_tags = _reply_of(tags)
        try:
            if status is not None:
                # Not stored, so a +draft/reply on it stays a plain client tag.
                hub.say_to_status(
                    user, room, text, status, kind, echo, origin=session.transport, tags=tags
                )
                return
            if reply_to is not None:
                try:
                    hub.say(
                        user,
                        room,
                        text,
                        kind,
                        echo,
                        origin=session.transport,
                        tags=plain_tags,
                        reply_to=reply_to,
                    )
                    return
                except HubError as problem:
                    if problem.code not in ("unknown_message", "not_in_room"):
                        raise
                    # +draft/reply is a client tag: a reply to a message this server does
                    # not know (another network's, one gone from history) still goes out,
                    # with the tag as the client sent it, as any client tag does.
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
    reply_to, plain_tags = _reply_of(tags) if tags else (None, tags)
    recipient = None
    if reply_to is not None:
        try:
            recipient = hub.send_private(
                user,
                target,
                text,
                kind,
                echo,
                origin=session.transport,
                tags=plain_tags,
                reply_to=reply_to,
            )
        except HubError as problem:
            if problem.code not in ("unknown_message", "not_in_room"):
                raise
            # As in a channel: a reply to a message this server does not know keeps its tag.
    if recipient is None:
        recipient = hub.send_private(
            user, target, text, kind, echo, origin=session.transport, tags=tags
        )
    if recipient.away and not notice:
        session.numeric(Numeric.RPL_AWAY, recipient.nick, recipient.away)


def _reply_of(tags: events.ClientTags) -> tuple[int | None, events.ClientTags]:
    """The msgid a +draft/reply tag names (the hub keeps replies itself), and the other tags."""
    value = dict(tags).get(REPLY_TAG)
    if value is None or not value.isdigit() or not 0 < int(value) <= 2**62:
        return None, tags
    return int(value), tuple(t for t in tags if t[0] != REPLY_TAG)


def _live_tagmsg(
    session: IrcSession, room: str | None, target: str, tags: events.ClientTags
) -> bool:
    """A reaction (+draft/react or +draft/unreact with +draft/reply) or a typing notice
    (+typing) to a channel (`room`) or to a nick (`room` None: a private conversation), which
    the hub handles itself; False for other tags."""
    user = session.user
    assert user is not None
    named = dict(tags)
    reaction = named.get(REACT_TAG) or named.get(UNREACT_TAG)
    to = target if room is None else None
    msgid = named.get(REPLY_TAG)
    if reaction and msgid is not None:
        if not msgid.isdigit() or not 0 < int(msgid) <= 2**62:
            session.fail("TAGMSG", "UNKNOWN_MSGID", target, msgid, "No such message")
            return True
        on = REACT_TAG in named and bool(named.get(REACT_TAG))
        echo = session.echo if "echo-message" in session.caps else None
        try:
            session.hub.react(
                user,
                int(msgid),
                reaction,
                on=on,
                room=room,
                to=to,
                echo=echo,
                origin=session.transport,
            )
        except HubError as problem:
            live_failure(session, "TAGMSG", target, msgid, problem)
        return True
    state = named.get(TYPING_TAG)
    if state is not None:
        try:
            echo = session.echo if "echo-message" in session.caps else None
            session.hub.typing(user, room, state, echo=echo, to=to)
        except HubError as problem:
            live_failure(session, "TAGMSG", target, "*", problem)
        return True
    return False


# Hub refusals of the messages that live on, as IRCv3 standard replies (FAIL codes: the
# message-redaction draft's where it has one).
LIVE_FAIL_CODES = {
    "unknown_message": "UNKNOWN_MSGID",
    "not_yours": "REDACT_FORBIDDEN",
    "not_in_room": "INVALID_TARGET",
    "too_long": "INVALID_TEXT",
    "too_often": "RATE_LIMITED",
    "bad_request": "INVALID_PARAMS",
    "moderated": "CANNOT_SEND",
    "muted": "CANNOT_SEND",
    "history_failed": "TEMPORARILY_UNAVAILABLE",
}


# The hub words these for text mode, naming the message by its hex reference (`#7b`); an
# IRC client named it by its msgid, which the FAIL line already carries as a parameter.
_IRC_DESCRIPTIONS = {
    "unknown_message": "No such message",
    "not_yours": "That message is not yours",
}


# Refusals about the channel itself keep the numerics TAGMSG always had (404 and the like).
_CHANNEL_CODES = ("not_in_room", "moderated", "muted", "no_such_room", "invalid_room")


def live_failure(
    session: IrcSession, command: str, target: str, msgid: str, problem: HubError
) -> None:
    """FAIL <command> <code> <target> <msgid> :<why> for a refused reaction, deletion,
    edit or typing notice (a TAGMSG to a channel one may not send to: its numeric)."""
    if problem.code == "no_such_nick" or (
        command == "TAGMSG" and problem.code in _CHANNEL_CODES and target.startswith("#")
    ):
        code = "moderated" if problem.code == "not_in_room" else problem.code
        session.hub_error(HubError(code, problem.message), nick=target, channel=target)
        return
    code = LIVE_FAIL_CODES.get(problem.code, "FAILED")
    if command == "EDIT" and code == "REDACT_FORBIDDEN":
        code = "EDIT_FORBIDDEN"
    if code == "INVALID_TARGET":  # the draft's context: the target alone
        session.fail(command, code, target, problem.message)
        return
    why = _IRC_DESCRIPTIONS.get(problem.code, problem.message)
    session.fail(command, code, target, msgid, why)


def on_redact(session: IrcSession, message: Message) -> None:
    """REDACT <target> <msgid> [:reason] (IRCv3 message-redaction): delete a channel
    message, allowed to its author and to those who may moderate the channel, or a private
    message (the target is the other person's nick), allowed to its author."""
    user = session.user
    assert user is not None
    target, msgid = message.params[0], message.params[1]
    reason = message.params[2] if len(message.params) > 2 else ""
    room, to = None, None
    if target.startswith("#"):
        room = channel_to_room(target)
        if room is None:
            session.fail("REDACT", "INVALID_TARGET", target, "No such channel")
            return
    elif "," in target or not target:
        session.fail("REDACT", "INVALID_TARGET", target, "One channel or nick")
        return
    else:
        to = target
    # Not one of our msgids: 0, which names no message (the hub checks the channel first,
    # so a channel one is not in is INVALID_TARGET whatever the msgid).
    number = int(msgid) if msgid.isdigit() and 0 < int(msgid) <= 2**62 else 0
    try:
        session.hub.delete_message(user, number, reason, room=room, to=to)
    except HubError as problem:
        live_failure(session, "REDACT", target, msgid, problem)


def on_tagmsg(session: IrcSession, message: Message) -> None:
    """Client tags alone (typing notices, reactions) to channels and people."""
    user = session.user
    assert user is not None
    if "message-tags" not in session.caps:
        session.error(Numeric.ERR_UNKNOWNCOMMAND, "TAGMSG")
        return
    tags = client_tags(message)
    first = message.params[0]
    if first.startswith("#") and "," not in first:
        room = channel_to_room(first)
        if room is not None and _live_tagmsg(session, room, first, tags):
            return
    elif (
        first
        and "," not in first
        and first[0] not in STATUSMSG
        and _live_tagmsg(session, None, first, tags)
    ):
        return
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
