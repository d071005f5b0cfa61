"""Hub events as IRC lines, for one connection's capabilities (sans-I/O).

The hub encodes each event once per codec key (see `Hub._fan_out_groups`), so `IrcCodec.encode`
is paid once per group, not once per recipient. Room and private messages, what fan-out encodes
most, take `chat_line`: one line straight from the event, checked byte for byte against the
general path (`Formatter`) by tests/test_encode_fast.py.

Sources: an IRC user is `nick!~ident@ip` (the `~` says the ident was not verified); a user of
another protocol is `nick!nick@ip` (those clients give no ident), so bans on `*!*@ip` work for
both kinds. A QUIT carries the mask the user had (the hub has forgotten them when it is encoded).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Protocol

from threadchat.core import events, names
from threadchat.core.events import Event
from threadchat.core.hub import User
from threadchat.core.modes import UserFlag
from threadchat.protocols import utctime
from threadchat.protocols.irc import modes as irc_modes
from threadchat.protocols.irc.wire import (
    Formatter,
    Message,
    Numeric,
    escape_tag_value,
    pack_words,
)

log = logging.getLogger(__name__)

_BOT = UserFlag.BOT  # checked for every encoded message: a module global is looked up fastest

# Capabilities that change how a fanned-out event is encoded beyond tags (tags are covered by
# Formatter.variant); part of the codec key so recipients that differ only here share bytes.
SHAPE_CAPS = (
    "extended-join",
    "away-notify",
    "setname",
    "account-notify",
    "invite-notify",
    "draft/multiline",
    "draft/message-redaction",
    "draft/read-marker",
    "draft/metadata-3",
    "draft/channel-rename",
)
# IRCv3 client tags of the messages that live on (core/live.py).
REPLY_TAG = "+draft/reply"
REACT_TAG = "+draft/react"
UNREACT_TAG = "+draft/unreact"
TYPING_TAG = "+typing"
# The tag that names the message an edit replaces: the name the IRCv3 message-edit draft
# gave "the message this acts on" (see docs/irc.md, "Edits").
EDIT_TARGET_TAG = "draft/target-msgid"
# What an edit's line starts with, for every IRC client (none has a spec to show edits).
EDIT_PREFIX = "(edit) "
MULTILINE_CAP = "draft/multiline"
MULTILINE_BATCH = "draft/multiline"
# A multiline line joined to the previous one without a line break. Among a message's client
# tags (which only IRC shows) it is the one that is not a client's: its value lists where in
# the text such lines start (character offsets, comma-separated), so that the message is
# relayed in the lines its sender used, as the multiline draft asks; never sent as such.
CONCAT_TAG = "draft/multiline-concat"
REDACTION_CAP = "draft/message-redaction"


class Directory(Protocol):
    """What encoding asks of the hub: who a nick is, and whether history is kept."""

    history: object | None

    def user_unlocked(self, nick: str) -> User | None: ...


def speaks_irc(user: User) -> bool:
    """Whether `user` registered over IRC: only IRC clients give a username (an ident, never
    empty, see `registration.ident_of`). The person's identity says it, not a connection's
    class: a person may hold several connections, and the one they registered with decides."""
    return bool(user.username)


def ident_host(user: User) -> tuple[str, str]:
    """The username and host IRC users see for `user` (of any protocol): other clients show
    their nick as username, and their host made safe."""
    if user.username:  # speaks_irc(user), inline: every encoded message comes here
        return user.username, user.host
    return user.nick, safe_host(user.host or "unknown")


def realname_of(user: User) -> str:
    """The realname IRC users see; native clients give none."""
    if user.realname or speaks_irc(user):
        return user.realname
    return "threadchat native user"


def source_of(user: User, nick: str | None = None) -> str:
    ident, host = ident_host(user)
    return f"{nick or user.nick}!{ident}@{host}"


def irc_mask(mask: str) -> str:
    """A hub mask (`User.mask`) as an IRC source: the host made safe like `ident_host` does."""
    prefix, at, host = mask.rpartition("@")
    return f"{prefix}{at}{safe_host(host)}" if at else mask


def safe_host(host: str) -> str:
    # "::1" would start a trailing parameter in WHO replies; IRC servers write "0::1".
    return "0" + host if host.startswith(":") else host


def _where(
    event: events.Reaction | events.Typing | events.MessageDeleted | events.MessageEdited,
) -> str:
    """The target of a reaction, typing notice, deletion or edit on IRC: its channel, or
    in a private conversation the other person (of the one who acted), as for a PRIVMSG."""
    return "#" + event.room if event.room is not None else event.target


def _live_target(event: events.RoomMessage | events.PrivateMessage, actor: str) -> str:
    """Where `actor`'s act on a stored message goes on IRC: its channel, or the other
    person of its private conversation."""
    if isinstance(event, events.RoomMessage):
        return "#" + event.room
    return event.target if names.fold(actor) == names.fold(event.sender) else event.sender


class IrcCodec:
    """Encodes hub events for one IRC connection: its capabilities make its codec key."""

    # One per connection: slots keep an idle connection's memory what it was in one class.
    __slots__ = ("_caps", "_chat_tags", "host", "hub", "key", "label", "server_name")

    def __init__(self, hub: Directory, server_name: str, host: str, label: str) -> None:
        self.hub = hub
        self.server_name = server_name
        # The peer's host as IRC shows it (for the ERROR of a KILL).
        self.host = host
        self.label = label
        self.caps = frozenset()

    # Replaced, never mutated: fan-out on other threads reads it without a lock.
    @property
    def caps(self) -> frozenset[str]:
        return self._caps

    @caps.setter
    def caps(self, value: frozenset[str]) -> None:
        self._caps = frozenset(value)
        # Computed when capabilities change, not per delivery (codec_key runs once per recipient).
        shape = tuple(c in self._caps for c in SHAPE_CAPS)
        # The codec key (see `codec_key`).
        self.key: Hashable = ("irc", Formatter.variant(self._caps), *shape)
        self._chat_tags = (
            "account-tag" in self._caps,
            "message-tags" in self._caps,
            "server-time" in self._caps,
        )

    def codec_key(self) -> Hashable:
        return self.key

    def encode(self, event: Event) -> bytes | None:
        cls = type(event)
        if cls is events.RoomMessage or cls is events.PrivateMessage:
            try:
                data = self._encode_chat(event)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                # e.g. a lone surrogate: the general path raises or logs as it always did.
                data = None
            if data is not None:
                return data
        return self._encode_general(event)

    def _encode_chat(self, event: events.RoomMessage | events.PrivateMessage) -> bytes | None:
        # Messages are what fan-out encodes most: one line straight from the event, without
        # Message objects, a Formatter and three serialisations (see `chat_line`).
        if event.tags and self._chat_tags[1]:
            return None  # client tags, for a client with message-tags: the general path
        if event.extra is not None or (
            type(event) is events.RoomMessage and event.status is not None
        ):
            # A reply (history: marks, reactions), or a STATUSMSG (its target has a prefix):
            # the general path.
            return None
        sender = self.hub.user_unlocked(event.sender)
        if sender is None:
            source = f"{event.sender}!{event.sender}@{self.server_name}"
        elif _BOT in sender.flags:
            return None  # the general path adds the `bot` tag
        else:
            source = source_of(sender, event.sender)
        target = "#" + event.room if isinstance(event, events.RoomMessage) else event.target
        return chat_line(
            source,
            target,
            event.text,
            event.kind,
            event.account,
            # Only a client with message-tags gets a msgid: skip making one for the others.
            self._msgid(event) if self._chat_tags[1] else None,
            event.ts,
            self._chat_tags,
        )

    def _encode_general(self, event: Event) -> bytes | None:
        # Every event, and the reference that `chat_line` must match byte for byte.
        try:
            # Inside the try: building the lines may refuse a field as well as writing them.
            messages = self.event_messages(event)
            if not messages:
                return None
            return b"".join(Formatter(m, time=event.ts).encode(self.caps) for m in messages)
        except ValueError:
            log.exception("%s: cannot encode %r", self.label, event)
            return None

    def _renamed(self, event: events.RoomRenamed) -> list[Message]:
        old, new = "#" + event.old, "#" + event.new
        if "draft/channel-rename" in self.caps:
            return [Message("RENAME", [old, new, event.reason], self._source(event.by))]
        if names.fold(event.old) == names.fold(event.new):
            return []  # only the case changed: no PART and JOIN (the specification's fallback)
        # A client without the capability sees itself leave and join the new channel, with
        # what a join shows: the topic and the names.
        me = self._source(event.member)
        lines = [Message("PART", [old, *([event.reason] if event.reason else [])], me)]
        params = [new]
        if "extended-join" in self.caps:
            user = self.hub.user_unlocked(event.member)
            params += [(user.account if user else None) or "*", realname_of(user) if user else ""]
        lines.append(Message("JOIN", params, me))
        server, nick = self.server_name, event.member
        if event.topic.topic:
            lines.append(Message(str(Numeric.RPL_TOPIC), [nick, new, event.topic.topic], server))
            setter, at = event.topic.by or "*", str(int(event.topic.set_at))
            lines.append(Message(str(Numeric.RPL_TOPICWHOTIME), [nick, new, setter, at], server))
        symbol = "@" if "secret" in event.flags else "*" if "private" in event.flags else "="
        multi, full = "multi-prefix" in self.caps, "userhost-in-names" in self.caps
        entries = [
            irc_modes.status_prefix(held, multi) + (self._source(name) if full else name)
            for name, held in event.members
        ]

        def build(text: str, more: bool) -> Message:
            return Message(str(Numeric.RPL_NAMREPLY), [nick, symbol, new, text], server)

        lines += pack_words(entries, build)
        lines.append(
            Message(str(Numeric.RPL_ENDOFNAMES), [nick, new, "End of /NAMES list"], server)
        )
        return lines

    def _is_bot(self, nick: str) -> bool:
        user = self.hub.user_unlocked(nick)
        return user is not None and _BOT in user.flags

    def _source(self, nick: str) -> str:
        user = self.hub.user_unlocked(nick)
        if user is None:
            return f"{nick}!{nick}@{self.server_name}"
        return source_of(user, nick)

    def _msgid(self, event: events.RoomMessage | events.PrivateMessage) -> str | None:
        # The message's id (core/live.py): what CHATHISTORY, +draft/reply, +draft/react and
        # REDACT name it by. Notices are neither stored nor named.
        if event.kind == events.NOTICE:
            return None
        return str(event.id)

    def _multiline(self) -> bool:
        return MULTILINE_CAP in self._caps and "batch" in self._caps

    def _reactions_in_history(
        self,
        event: events.RoomMessage | events.PrivateMessage,
        reactions: tuple[tuple[str, tuple[str, ...]], ...],
    ) -> list[Message]:
        """A stored message's reactions, replayed after it as the TAGMSGs that made them
        (ergo replays reactions as history items the same way): to its channel, or in a
        private conversation to the other person than the one who reacted."""
        tags = {REPLY_TAG: str(event.id)}
        return [
            Message(
                "TAGMSG", [_live_target(event, nick)], self._source(nick), {**tags, REACT_TAG: name}
            )
            for name, people in reactions
            for nick in people
        ]

    def _deleted_in_history(
        self, source: str, target: str, event: events.RoomMessage | events.PrivateMessage
    ) -> list[Message]:
        """A tombstone replayed from history: a REDACT of it for clients that know REDACT
        (message-redaction lets chathistory put one in a deleted message's place), a notice
        saying a message was deleted for the others."""
        if REDACTION_CAP in self.caps:
            return [Message("REDACT", [target, str(event.id)], source)]
        text = f"(a message of {event.sender} was deleted)"
        return [Message("NOTICE", [target, text], self.server_name)]

    def event_messages(self, event: Event) -> list[Message]:
        """The IRC lines for one hub event as this connection sees it (without time tags)."""
        match event:
            case events.RoomMessage():
                source, channel = self._source(event.sender), "#" + event.room
                if event.status is not None:
                    channel = irc_modes.STATUS_PREFIXES[event.status] + channel
                tags = event.tags
                extra = event.extra
                if extra is not None and extra.reply_to is not None:
                    tags = ((REPLY_TAG, str(extra.reply_to)), *tags)
                if extra is not None and extra.deleted:
                    return self._deleted_in_history(source, channel, event)
                lines = chat_messages(
                    source,
                    channel,
                    event.text,
                    event.kind,
                    event.account,
                    self._msgid(event),
                    tags,
                    bot=self._is_bot(event.sender),
                    multiline=self._multiline(),
                    batch_ref=f"ml{event.id}",
                )
                if extra is not None and extra.reactions and "message-tags" in self.caps:
                    lines += self._reactions_in_history(event, extra.reactions)
                return lines
            case events.PrivateMessage():
                source = self._source(event.sender)
                tags = event.tags
                extra = event.extra
                if extra is not None and extra.reply_to is not None:
                    tags = ((REPLY_TAG, str(extra.reply_to)), *tags)
                if extra is not None and extra.deleted:
                    return self._deleted_in_history(source, event.target, event)
                lines = chat_messages(
                    source,
                    event.target,
                    event.text,
                    event.kind,
                    event.account,
                    self._msgid(event),
                    tags,
                    bot=self._is_bot(event.sender),
                    multiline=self._multiline(),
                    batch_ref=f"ml{event.id}",
                )
                if extra is not None and extra.reactions and "message-tags" in self.caps:
                    lines += self._reactions_in_history(event, extra.reactions)
                return lines
            case events.Reaction():
                # A reaction is a TAGMSG naming its message (IRCv3 react); only clients
                # with message-tags know TAGMSG, the others are shown nothing.
                if "message-tags" not in self.caps:
                    return []
                name = REACT_TAG if event.on else UNREACT_TAG
                tags = {REPLY_TAG: str(event.msgid), name: event.reaction}
                if event.account:
                    tags["account"] = event.account
                tags["msgid"] = f"t{event.id}"
                return [Message("TAGMSG", [_where(event)], self._source(event.sender), tags)]
            case events.Typing():
                if "message-tags" not in self.caps:
                    return []
                tags = {TYPING_TAG: event.state, "msgid": f"t{event.id}"}
                if event.account:
                    tags["account"] = event.account
                return [Message("TAGMSG", [_where(event)], self._source(event.sender), tags)]
            case events.MessageDeleted():
                where = _where(event)
                if REDACTION_CAP in self.caps:
                    params = [where, str(event.msgid)] + ([event.reason] if event.reason else [])
                    return [Message("REDACT", params, self._source(event.by))]
                # The fallback the message-redaction draft suggests: a notice to the channel
                # (in a private conversation, from the one who deleted).
                whose = "their own" if event.by == event.sender else f"one of {event.sender}'s"
                reason = f": {event.reason}" if event.reason else ""
                text = f"{event.by} deleted {whose} messages (msgid {event.msgid}){reason}"
                notifier = self.server_name if event.room is not None else self._source(event.by)
                return [Message("NOTICE", [where, text], notifier)]
            case events.MessageEdited():
                # No ratified spec: a new message marked as an edit (docs/irc.md, "Edits").
                tags_edit: events.ClientTags = ((REPLY_TAG, str(event.msgid)),)
                lines = chat_messages(
                    self._source(event.sender),
                    _where(event),
                    EDIT_PREFIX + event.text,
                    events.TEXT,
                    event.account,
                    None,
                    tags_edit,
                    bot=self._is_bot(event.sender),
                    multiline=self._multiline(),
                    batch_ref=f"ed{event.id}",
                )
                lines[0].tags[EDIT_TARGET_TAG] = str(event.msgid)
                return lines
            case events.ReadMarker():
                # draft/read-marker: only a client that asked for it is told.
                if "draft/read-marker" not in self.caps:
                    return []
                target = "#" + event.target if event.room else event.target
                stamp = utctime.millis(event.read_ms / 1000) if event.read_ms else None
                when = f"timestamp={stamp}" if stamp else "*"
                return [Message("MARKREAD", [target, when], self.server_name)]
            case events.TagMessage():
                # TAGMSG is itself part of message-tags: a client without it gets nothing.
                if "message-tags" not in self.caps:
                    return []
                target = "#" + event.room if event.room is not None else event.target
                tags: dict[str, str | None] = dict(event.tags)
                if event.account:
                    tags["account"] = event.account
                # Not stored, so its id is an event's, not a message's: marked so that no
                # CHATHISTORY takes it for a stored message's msgid.
                tags["msgid"] = f"t{event.id}"
                return [Message("TAGMSG", [target], self._source(event.sender), tags)]
            case events.RoomRenamed():
                return self._renamed(event)
            case events.MetadataChanged():
                # draft/metadata-3 tells subscribers with the numerics of its replies, `*`
                # standing for the recipient.
                if "draft/metadata-3" not in self.caps:
                    return []
                holder = "#" + event.room if event.room is not None else event.nick
                if event.value is None:
                    params = ["*", holder, event.key, "Key deleted"]
                    return [Message("766", params, self.server_name)]
                params = ["*", holder, event.key, "*", event.value]
                return [Message("761", params, self.server_name)]
            case events.Joined():
                params = ["#" + event.room]
                if "extended-join" in self.caps:
                    params += [event.account or "*", event.realname]
                source = self._source(event.nick)
                joined = [Message("JOIN", params, source)]
                if event.away and "away-notify" in self.caps:
                    # away-notify: an away user's arrival says they are away.
                    joined.append(Message("AWAY", [event.away], source))
                return joined
            case events.Left():
                params = ["#" + event.room] + ([event.reason] if event.reason else [])
                return [Message("PART", params, self._source(event.nick))]
            case events.Kicked():
                params = ["#" + event.room, event.nick, event.reason or event.by]
                return [Message("KICK", params, self._source(event.by))]
            case events.Quit():
                source = irc_mask(event.mask) if event.mask else self._source(event.nick)
                return [Message("QUIT", [event.reason], source)]
            case events.NickChanged():
                user = self.hub.user_unlocked(event.new)
                source = source_of(user, event.old) if user else self._source(event.old)
                return [Message("NICK", [event.new], source)]
            case events.TopicChanged():
                params = ["#" + event.room, event.topic]
                return [Message("TOPIC", params, self._source(event.by))]
            case events.ModeChanged():
                target = "#" + event.room if event.room is not None else event.target
                params = [target, *irc_modes.format_changes(event.changes)]
                return [Message("MODE", params, self._source(event.by))]
            case events.AwayChanged():
                if "away-notify" not in self.caps:
                    return []
                params = [event.away] if event.away else []
                return [Message("AWAY", params, self._source(event.nick))]
            case events.Invited():
                if event.notify and "invite-notify" not in self.caps:
                    return []
                params = [event.nick, "#" + event.room]
                return [Message("INVITE", params, self._source(event.by))]
            case events.Presence():
                # MONITOR: RPL_MONONLINE / RPL_MONOFFLINE, addressed to the one watcher.
                if event.online:
                    return [
                        Message(
                            Numeric.RPL_MONONLINE,
                            [event.watcher, irc_mask(event.mask)],
                            self.server_name,
                        )
                    ]
                return [
                    Message(Numeric.RPL_MONOFFLINE, [event.watcher, event.nick], self.server_name)
                ]
            case events.RealnameChanged():
                if "setname" not in self.caps:
                    return []
                return [Message("SETNAME", [event.realname], self._source(event.nick))]
            case events.AccountChanged():
                if "account-notify" not in self.caps:
                    return []
                return [Message("ACCOUNT", [event.account or "*"], self._source(event.nick))]
            case events.Wallops():
                return [Message("WALLOPS", [event.text], self._source(event.sender))]
            case events.Killed():
                text = f"Closing Link: {self.host} (Killed ({event.by} ({event.reason})))"
                return [Message("ERROR", [text])]
            case events.ServerNotice():
                text = event.text.replace("\n", " ")
                return [Message("NOTICE", ["*", text], self.server_name)]
        return []


def chat_messages(
    source: str,
    target: str,
    text: str,
    kind: str,
    account: str | None,
    msgid: str | None = None,
    client_tags: events.ClientTags = (),
    *,
    bot: bool = False,
    multiline: bool = False,
    batch_ref: str = "ml",
) -> list[Message]:
    """The PRIVMSG or NOTICE line of one hub message, whole.

    A message is never split in two: once the sender's prefix is added, or when it comes
    from a native client (whose lines may be longer), it may pass IRC's 512 bytes, and it is
    relayed intact, as Modern IRC allows (the reference server, ergo, does the same). Client
    tags go first, so the server's own tags (account, msgid) win a clash of names.

    A message of several lines (line breaks, or lines a multiline sender joined with
    `draft/multiline-concat`, listed by the `CONCAT_TAG` client tag) is a `draft/multiline`
    batch for a client that has it (`multiline`; the tags ride on the BATCH line, `batch_ref`
    names it; blank lines included, joined lines tagged), and for the others one line per
    non-blank line as the sender made them, the msgid on the first only (IRCv3 multiline's
    fallback).
    """
    command = "NOTICE" if kind == events.NOTICE else "PRIVMSG"
    concat_at = ""
    if client_tags and any(name == CONCAT_TAG for name, _ in client_tags):
        concat_at = dict(client_tags)[CONCAT_TAG] or ""
        client_tags = tuple(tag for tag in client_tags if tag[0] != CONCAT_TAG)
    tags: dict[str, str | None] = dict(client_tags)
    if account:
        tags["account"] = account
    if msgid is not None:
        tags["msgid"] = msgid
    if bot:
        tags["bot"] = None  # IRCv3 bot mode: the sender is a bot (+B)
    if "\n" not in text and not concat_at:
        wrapped = f"\x01ACTION {text}\x01" if kind == events.ACTION else text
        return [Message(command, [target, wrapped], source, tags)]
    pieces = _lines_as_sent(text, concat_at)
    if kind == events.ACTION:
        pieces = [(f"\x01ACTION {line}\x01", joined) for line, joined in pieces]
    if multiline:
        inner: dict[str, str | None] = {"batch": batch_ref}
        joined_tags: dict[str, str | None] = {"batch": batch_ref, CONCAT_TAG: None}
        return [
            Message("BATCH", ["+" + batch_ref, MULTILINE_BATCH, target], source, tags),
            *(
                Message(command, [target, line], source, dict(joined_tags if joined else inner))
                for line, joined in pieces
            ),
            Message("BATCH", ["-" + batch_ref]),
        ]
    shown = [line for line, _ in pieces if line.strip()]
    first, *rest = shown or [""]
    # The tags the message carries, on each of its lines; its msgid on the first only.
    plain = {k: v for k, v in tags.items() if k != "msgid"}
    return [
        Message(command, [target, first], source, tags),
        *(Message(command, [target, line], source, dict(plain)) for line in rest),
    ]


def _lines_as_sent(text: str, concat_at: str) -> list[tuple[str, bool]]:
    """`text` cut into its lines as its sender made them: at each line break, and at each
    offset of `concat_at` (a line joined to the previous one, marked True)."""
    cuts = sorted({int(n) for n in concat_at.split(",") if n.isdigit() and 0 < int(n) < len(text)})
    pieces: list[tuple[str, bool]] = []
    start = 0
    for line in text.split("\n"):
        end = start + len(line)
        at, joined = start, False
        for cut in cuts:
            # A cut at the very start of a line follows a blank line (then "" comes first).
            if at <= cut < end:
                pieces.append((text[at:cut], joined))
                at, joined = cut, True
        pieces.append((text[at:end], joined))
        start = end + 1
    return pieces


def chat_line(
    source: str,
    target: str,
    text: str,
    kind: str,
    account: str | None,
    msgid: str | None,
    when: float | None,
    tags: tuple[bool, bool, bool],
) -> bytes | None:
    """The bytes of `chat_messages` then `Formatter.encode`, or None.

    `tags` says which tags the recipient gets: (account-tag, message-tags, server-time), the
    capabilities `Formatter` checks for account, msgid and time (client tags are not
    handled here: the caller takes the general path for them). None leaves the message to
    the general path: it would not serialise (CR, LF or NUL, a bad source or target, NUL in
    a tag), or has a time that `utctime` does not format.
    """
    if type(text) is not str or type(target) is not str or type(source) is not str:
        return None
    # Mirrors `chat_messages` and `_format`; whatever they would split or refuse goes back to them.
    command = "NOTICE" if kind == events.NOTICE else "PRIVMSG"
    final = f"\x01ACTION {text}\x01" if kind == events.ACTION else text
    if not final or final[0] == ":" or " " in final:
        final = ":" + final
    if not target or target[0] == ":" or " " in target or not source or " " in source:
        return None
    line = f":{source} {command} {target} {final}"
    if "\r" in line or "\n" in line or "\0" in line:
        return None
    data = line.encode()
    with_account, with_msgid, with_time = tags
    items: list[str] = []
    if with_account and account:
        if "\0" in account:
            return None
        items.append("account=" + escape_tag_value(account))
    if with_msgid and msgid is not None:
        if "\0" in msgid:
            return None
        if msgid.isdigit():  # what the transport gives: a stored id, nothing to escape
            items.append("msgid=" + msgid)
        else:
            items.append(("msgid=" + escape_tag_value(msgid)) if msgid else "msgid")
    if with_time and when is not None:
        stamp = utctime.millis(when)
        if stamp is None:
            return None
        items.append("time=" + stamp)  # digits, '-', ':', 'T', '.', 'Z': nothing to escape
    if not items:
        return data + b"\r\n"
    return ("@" + ";".join(items) + " ").encode() + data + b"\r\n"
