"""IRC over TCP: irssi, weechat, HexChat and IRC libraries on the same hub as everyone else.

One reader thread per connection, like every transport (see `transports/native.py`). The
sans-I/O parts (framing, parsing, registration and CAP negotiation, per-capability encoding)
live in `protocols/irc.py`; this module carries out commands against the hub and turns hub
events into IRC lines.

Mapping to the hub:
- IRC channel `#name` is room `name` (rooms are ASCII `[A-Za-z0-9_.-]`, so `#café` is refused
  with 403). Nicknames are one namespace with the native protocol; private messages cross.
- Sources: an IRC user is `nick!~ident@ip` (the `~` says the ident was not verified); a native
  user is `nick!nick@ip` (native clients have no ident), so bans on `*!*@ip` work for both
  kinds. A QUIT carries the mask the user had (the hub has forgotten them when it is encoded).
- History (`irc_history.py`): `draft/chathistory` and replay on JOIN when the server keeps
  history. PRIVMSGs of one recv share one store commit, like the native protocol's lines.
- Text passes through unchanged except that the hub refuses CR, LF and NUL: IRC formatting
  codes (bold \\x02, colour \\x03, ...) and CTCP reach IRC peers intact; the native text mode
  replaces control characters when it prints, and JSON clients receive them as sent.
  `PRIVMSG` with CTCP ACTION becomes a hub action (`/me`), so native users see `* nick text`.
- Flood control slows down reading (our policy for every protocol) instead of disconnecting,
  so `Excess Flood` is never sent; an overflowing send queue ends the link with
  `SendQ exceeded`.
"""

from __future__ import annotations

import fnmatch
import hmac
import logging
import re
import socket
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from threadchat import __version__
from threadchat.core import events, names
from threadchat.core.events import Event
from threadchat.core.hub import MAX_BANS, Echo, HubError, RoomState, User
from threadchat.core.modes import MemberStatus, UserFlag
from threadchat.protocols import utctime
from threadchat.protocols.irc import modes as irc_modes
from threadchat.protocols.irc.wire import (
    CHANNELLEN,
    MAX_LINE_BYTES,
    NICKLEN,
    BufferOverflow,
    Formatter,
    IrcLineReader,
    LineTooLong,
    MalformedLine,
    Message,
    MessageReceived,
    Numeric,
    Registration,
    channel_to_room,
    escape_tag_value,
    fits_line,
    is_valid_nick,
    isupport,
    pack_words,
    reply,
    reply_with_text,
    split_targets,
)
from threadchat.transports.irc import chathistory as irc_history
from threadchat.transports.irc import sasl as irc_accounts
from threadchat.transports.outbox import Outbox
from threadchat.transports.tcp import TcpConnection

if TYPE_CHECKING:
    from threadchat.transports.host import Host

log = logging.getLogger(__name__)

VERSION = f"threadchat-{__version__}"
STARTED = time.time()

# Capabilities we offer. `sasl` (PLAIN) is added per connection when the server has accounts
# (irc_accounts.py), `draft/chathistory` when it keeps history (irc_history.py): announcing
# either without it would make clients wait for what never comes.
OFFERED_CAPS: dict[str, str | None] = {
    "cap-notify": None,
    "multi-prefix": None,
    "server-time": None,
    "message-tags": None,
    "echo-message": None,
    "away-notify": None,
    "account-tag": None,
    "extended-join": None,
    "userhost-in-names": None,
    "batch": None,
}
# Capabilities that change how a fanned-out event is encoded beyond tags (tags are covered by
# Formatter.variant); part of codec_key so recipients that differ only here share bytes.
_SHAPE_CAPS = ("extended-join", "away-notify")

# Channels one user may be in (CHANLIMIT): every join costs fan-out work on each message.
MAX_CHANNELS = 50
# Targets per PRIVMSG/NOTICE (TARGMAX): enough for real use, too few to spam efficiently.
MAX_TARGETS = 4
# Mode changes with a parameter per MODE command (MODES), as most servers allow.
MAX_MODES = 6
# Length limits we announce and enforce; they keep every reply that repeats them in 512 bytes.
KEYLEN = 23
AWAYLEN = 200
KICKLEN = 300
USERLEN = 10
REALNAME_MAX = 100
BANMASK_MAX = 100

_IDENT_BAD = re.compile(r"[^A-Za-z0-9._-]")


def ident_host(user: User) -> tuple[str, str]:
    """The username and host IRC users see for `user` (of any protocol)."""
    first = user.connections[0] if user.connections else None  # the first one decides
    if isinstance(first, IrcConnection):
        return user.username, user.host
    return user.nick, _safe_host(user.host or "unknown")


def realname_of(user: User) -> str:
    """The realname IRC users see; native clients give none."""
    first = user.connections[0] if user.connections else None
    if user.realname or isinstance(first, IrcConnection):
        return user.realname
    return "threadchat native user"


def source_of(user: User, nick: str | None = None) -> str:
    ident, host = ident_host(user)
    return f"{nick or user.nick}!{ident}@{host}"


def _irc_mask(mask: str) -> str:
    """A hub mask (`User.mask`) as an IRC source: the host made safe like `ident_host` does."""
    prefix, at, host = mask.rpartition("@")
    return f"{prefix}{at}{_safe_host(host)}" if at else mask


def _safe_host(host: str) -> str:
    # "::1" would start a trailing parameter in WHO replies; IRC servers write "0::1".
    return "0" + host if host.startswith(":") else host


@dataclass(frozen=True, slots=True)
class Command:
    """A row of the command table: the dispatcher checks registration and parameter count."""

    handler: Callable[[IrcConnection, Message], None]
    before_registration: bool = False
    min_params: int = 0


# Hub refusals as IRC numerics; the subject (nick or channel) is added by the caller.
_HUB_NUMERICS: dict[str, Numeric] = {
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
    "name_in_use": Numeric.ERR_NICKNAMEINUSE,
    "name_registered": Numeric.ERR_NICKNAMEINUSE,
    "invalid_name": Numeric.ERR_ERRONEUSNICKNAME,
    "not_privileged": Numeric.ERR_NOPRIVILEGES,
}


class IrcConnection(TcpConnection):
    kind = "irc"

    @classmethod
    def refusal(cls, address: tuple, text: str) -> bytes:
        host = _safe_host(str(address[0]))
        return Message("ERROR", [f"Closing Link: {host} ({text})"]).to_bytes()

    def __init__(self, server: Host, sock: socket.socket, address: tuple) -> None:
        super().__init__(server, sock, address)
        self.hub = server.hub
        self.server_name = server.config.server_name
        self.reader = IrcLineReader()
        offered = OFFERED_CAPS
        if self.hub.accounts is not None:
            offered = {**offered, "sasl": irc_accounts.MECHANISMS}
        if self.hub.history is not None:
            offered = {**offered, irc_history.CAPABILITY: None}
        self.reg = Registration(self.server_name, offered)
        # Accounts (irc_accounts.py): logged in by SASL before registration; and at it.
        self.sasl_account: str | None = None
        self.registered_account: str | None = None
        # Replaced, never mutated: fan-out on other threads reads it without a lock.
        self.caps = frozenset()
        self.user: User | None = None
        self.host = _safe_host(str(address[0]))
        self._ping_sent_at: float | None = None
        self._closing: str | None = None

    # -- the hub's side (any thread, hub lock held) ----------------------------------------

    @property
    def caps(self) -> frozenset[str]:
        return self._caps

    @caps.setter
    def caps(self, value: frozenset[str]) -> None:
        self._caps = frozenset(value)
        # Computed when capabilities change, not per delivery (codec_key runs once per recipient).
        shape = tuple(c in self._caps for c in _SHAPE_CAPS)
        self._codec_key = ("irc", Formatter.variant(self._caps), *shape)
        self._chat_tags = (
            "account-tag" in self._caps,
            "message-tags" in self._caps,
            "server-time" in self._caps,
        )
        user = getattr(self, "user", None)
        if user is not None:
            self.hub.codec_changed(user)

    def direct_queue(self) -> tuple[list[bytes], Outbox]:
        return self.outbox.direct()

    def codec_key(self) -> Hashable:
        return self._codec_key

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
        source = self._source(event.sender)
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
        messages = self.event_messages(event)
        if not messages:
            return None
        try:
            return b"".join(Formatter(m, time=event.ts).encode(self.caps) for m in messages)
        except ValueError:
            log.exception("%s: cannot encode %r", self.label, event)
            return None

    def _source(self, nick: str) -> str:
        user = self.hub.user_unlocked(nick)
        if user is None:
            return f"{nick}!{nick}@{self.server_name}"
        return source_of(user, nick)

    def _msgid(self, event: events.RoomMessage | events.PrivateMessage) -> str | None:
        # Only a stored message's id is a msgid: CHATHISTORY takes it back as a reference.
        # (A message whose write failed goes out with an event id; it is not in history.)
        if event.kind == events.NOTICE or (self.hub.history is None and not event.history):
            return None
        return str(event.id)

    def event_messages(self, event: Event) -> list[Message]:
        """The IRC lines for one hub event as this connection sees it (without time tags)."""
        match event:
            case events.RoomMessage():
                source, channel = self._source(event.sender), "#" + event.room
                return chat_messages(
                    source, channel, event.text, event.kind, event.account, self._msgid(event)
                )
            case events.PrivateMessage():
                source = self._source(event.sender)
                return chat_messages(
                    source, event.target, event.text, event.kind, event.account, self._msgid(event)
                )
            case events.Joined():
                params = ["#" + event.room]
                if "extended-join" in self.caps:
                    params += [event.account or "*", event.realname]
                return [Message("JOIN", params, self._source(event.nick))]
            case events.Left():
                params = ["#" + event.room] + ([event.reason] if event.reason else [])
                return [Message("PART", params, self._source(event.nick))]
            case events.Kicked():
                params = ["#" + event.room, event.nick, event.reason or event.by]
                return [Message("KICK", params, self._source(event.by))]
            case events.Quit():
                source = _irc_mask(event.mask) if event.mask else self._source(event.nick)
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
                params = [event.nick, "#" + event.room]
                return [Message("INVITE", params, self._source(event.by))]
            case events.Wallops():
                return [Message("WALLOPS", [event.text], self._source(event.sender))]
            case events.Killed():
                text = f"Closing Link: {self.host} (Killed ({event.by} ({event.reason})))"
                return [Message("ERROR", [text])]
            case events.ServerNotice():
                text = event.text.replace("\n", " ")
                return [Message("NOTICE", ["*", text], self.server_name)]
        return []

    # -- sending from the reader thread ----------------------------------------------------

    @property
    def nick(self) -> str:
        return self.user.nick if self.user is not None else "*"

    @property
    def mask(self) -> str:
        assert self.user is not None
        return source_of(self.user)

    def send(self, *messages: Message) -> None:
        for message in messages:
            try:
                self.send_bytes(message.to_bytes())
            except ValueError:
                # A reply built from a client's own words; never worth the connection.
                log.warning("%s: unsendable reply %r", self.label, message)

    def numeric(self, numeric: Numeric | str, *params: str) -> None:
        self.send(reply(self.server_name, numeric, self.nick, *params))

    def error(self, numeric: Numeric, *params: str) -> None:
        self.send(reply_with_text(self.server_name, numeric, self.nick, *params))

    def notice(self, text: str) -> None:
        self.send(Message("NOTICE", [self.nick, text], self.server_name))

    def hub_error(self, problem: HubError, *, nick: str = "*", channel: str = "*") -> None:
        """Answer a hub refusal with its numeric, naming the nick or channel it concerns."""
        numeric = _HUB_NUMERICS.get(problem.code)
        if problem.code == "user_not_in_room":
            self.error(Numeric.ERR_USERNOTINCHANNEL, nick, channel)
        elif problem.code == "user_in_room":
            self.error(Numeric.ERR_USERONCHANNEL, nick, channel)
        elif problem.code in ("no_such_nick", "name_in_use", "invalid_name", "name_registered"):
            if problem.code == "name_registered":
                self.notice(f"*** {problem.message}")
            self.error(_HUB_NUMERICS[problem.code], nick)
        elif numeric is Numeric.ERR_NOPRIVILEGES:
            self.error(numeric)
        elif numeric is not None:
            self.error(numeric, channel)
        else:
            self.numeric(Numeric.ERR_UNKNOWNERROR, "*", problem.message)

    def close_link(self, reason: str, quit_reason: str | None = None) -> None:
        """Say ERROR, flush, and end the connection (the reader loop stops)."""
        self.send(Message("ERROR", [f"Closing Link: {self.host} ({reason})"]))
        self._closing = quit_reason or reason

    # -- the reader thread -----------------------------------------------------------------

    def handle_data(self, data: bytes) -> bool:
        self._ping_sent_at = None
        for item in self.reader.receive_data(data):
            if not (isinstance(item, MessageReceived) and item.message.command == "PRIVMSG"):
                # Nothing may overtake queued messages: no other command (a PART, a NOTICE,
                # which is relayed at once, a CHATHISTORY that should see them) and no reply.
                self.hub.pipeline.complete()
            match item:
                case MessageReceived(message=message):
                    if self.user is not None:
                        self.throttle()  # a flood pause completes what is queued first
                    self.dispatch(message)
                case LineTooLong():
                    self.error(Numeric.ERR_INPUTTOOLONG)
                case MalformedLine(line=line, reason=reason):
                    self._malformed(line, reason)
                case BufferOverflow():
                    self.close_link("Input buffer exceeded: no newline in 64 KiB")
            if self._closing is not None:
                self.hub.pipeline.complete()
                self.close_after_flush(self._closing)
                return False
        return True

    def _malformed(self, line: str, reason: str) -> None:
        words = [w for w in line.split(" ") if w and w[0] not in "@:"]
        word = words[0] if words else "*"
        if reason.startswith("invalid command") and not names.text_error(word):
            self.error(Numeric.ERR_UNKNOWNCOMMAND, word)
        else:
            self.numeric(Numeric.ERR_UNKNOWNERROR, "*", f"Malformed line: {reason}")

    def dispatch(self, message: Message) -> None:
        command = COMMANDS.get(message.command)
        if command is None:
            if self.user is None:
                self.error(Numeric.ERR_NOTREGISTERED)
            else:
                self.error(Numeric.ERR_UNKNOWNCOMMAND, message.command)
            return
        if self.user is None and not command.before_registration:
            self.error(Numeric.ERR_NOTREGISTERED)
            return
        if len(message.params) < command.min_params:
            self.error(Numeric.ERR_NEEDMOREPARAMS, message.command)
            return
        try:
            command.handler(self, message)
        except HubError as problem:
            # Handlers catch the refusals they can name precisely; this is the rest.
            subject = message.params[0] if message.params else "*"
            self.hub_error(problem, nick=subject, channel=subject)

    def on_flood(self) -> None:
        config = self.server.config
        self.notice(
            f"*** Flood control: more than {config.flood_burst} lines at once or "
            f"{config.flood_rate:g} lines/s; your lines are now read more slowly"
        )

    def _on_overflow(self) -> None:
        log.warning("%s: SendQ exceeded (%d bytes), cutting off", self.label, self.outbox.limit)
        self.abort("SendQ exceeded")

    def on_close(self, reason: str) -> None:
        # The user's last messages go out before the others see them leave.
        self.hub.pipeline.complete()
        if self.user is not None:
            reason = {"EOF": "Connection closed"}.get(reason, reason)
            self.hub.detach(self.user, self, reason)

    def tick(self, now: float) -> None:
        config = self.server.config
        if self.user is None:
            if now - self.connected_at > config.name_timeout:
                log.info("%s: not registered within %gs", self.label, config.name_timeout)
                self.send(Message("ERROR", [f"Closing Link: {self.host} (Registration timeout)"]))
                self.abort("Registration timeout")
            return
        if config.ping_interval <= 0:
            return
        if self._ping_sent_at is not None:
            waited = now - self._ping_sent_at
            if waited > config.ping_timeout:
                reason = f"Ping timeout: {int(waited)} seconds"
                self.send(Message("ERROR", [f"Closing Link: {self.host} ({reason})"]))
                self.abort(reason)
        elif now - self.last_input > config.ping_interval:
            self._ping_sent_at = now
            self.send(Message("PING", [self.server_name]))

    def flush_now(self) -> None:
        """Flush what this thread queued so far (to every recipient), then keep batching."""
        self._batch.__exit__(None, None, None)
        self._batch.__enter__()

    # -- registration ----------------------------------------------------------------------

    def on_registration(self, message: Message) -> None:
        step = self.reg.handle(message)
        self.send(*step.replies)
        if step.cap_changes:
            self.caps = self.reg.enabled
        if step.nick_to_check and not self.hub.nick_available(step.nick_to_check):
            self.send(*self.reg.reject_nick(step.nick_to_check))
            return
        if step.ready:
            self._register()

    def _register(self) -> None:
        config = self.server.config
        if config.irc_password is not None:
            given = (self.reg.password or "").encode()
            if not hmac.compare_digest(given, config.irc_password.encode()):
                self.error(Numeric.ERR_PASSWDMISMATCH)
                self.close_link("Bad password")
                return
        nick = self.reg.nick
        assert nick is not None
        ident = "~" + (_IDENT_BAD.sub("", self.reg.username or "")[: USERLEN - 1] or "user")
        realname = (self.reg.realname or "")[:REALNAME_MAX]
        account = irc_accounts.account_for_registration(self, nick)
        identity = {"account": account} if account is not None else {}
        try:
            # IRC clients build nick lists from JOIN, PART and QUIT: they get them everywhere.
            user = self.hub.register(
                self,
                nick,
                keeps_member_list=True,
                username=ident,
                realname=realname,
                host=self.host,
                **identity,
            )
        except HubError as problem:
            if problem.code == "name_registered":
                self.notice(f"*** {problem.message}")
            numeric = _HUB_NUMERICS.get(problem.code, Numeric.ERR_ERRONEUSNICKNAME)
            self.send(*self.reg.reject_nick(nick, numeric))
            return
        self.user = user
        self.registered_account = account
        irc_accounts.after_registration(self)
        self.reg.complete(nick)
        log.info("%s: registered as %s (irc)", self.label, nick)
        self._welcome()

    def _welcome(self) -> None:
        created = datetime.fromtimestamp(STARTED, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        welcome = f"Welcome to the {self.server_name} IRC network, {self.mask}"
        self.numeric(Numeric.RPL_WELCOME, welcome)
        self.numeric(Numeric.RPL_YOURHOST, f"Your host is {self.server_name}, running {VERSION}")
        self.numeric(Numeric.RPL_CREATED, f"This server was created {created}")
        self.numeric(
            Numeric.RPL_MYINFO,
            self.server_name,
            VERSION,
            irc_modes.USER_MODES,
            irc_modes.CHANNEL_MODES,
            irc_modes.CHANNEL_MODES_WITH_PARAMETER,
        )
        self._isupport()
        self._lusers()
        self._motd()

    def _isupport(self) -> None:
        tokens: dict[str, str | None] = {
            "AWAYLEN": str(AWAYLEN),
            "CASEMAPPING": names.CASEMAPPING,
            "CHANLIMIT": f"#:{MAX_CHANNELS}",
            "CHANMODES": irc_modes.CHANMODES,
            "CHANNELLEN": str(CHANNELLEN),
            "CHANTYPES": "#",
            "KEYLEN": str(KEYLEN),
            "KICKLEN": str(KICKLEN),
            "MAXLIST": f"b:{MAX_BANS}",
            "MAXTARGETS": str(MAX_TARGETS),
            "MODES": str(MAX_MODES),
            "NETWORK": self.server_name,
            "NICKLEN": str(NICKLEN),
            "PREFIX": irc_modes.PREFIX,
            "TARGMAX": f"PRIVMSG:{MAX_TARGETS},NOTICE:{MAX_TARGETS},JOIN:,PART:,KICK:1,WHOIS:1",
            "TOPICLEN": str(names.TOPIC_MAX),
            "USERLEN": str(USERLEN),
        }
        if self.hub.history is not None:
            tokens.update(irc_history.isupport_tokens())
        self.send(*isupport(self.server_name, self.nick, tokens))

    # -- commands ------------------------------------------------------------------------------
    # Handlers run on the reader thread inside its delivery batch; `self.user` is set for
    # every handler not marked before_registration.

    def on_nick(self, message: Message) -> None:
        if self.user is None:
            self.on_registration(message)
            return
        if not message.params or not message.params[0]:
            self.error(Numeric.ERR_NONICKNAMEGIVEN)
            return
        new = message.params[0]
        if not is_valid_nick(new):
            self.error(Numeric.ERR_ERRONEUSNICKNAME, new)
            return
        try:
            self.hub.change_nick(self.user, new)
        except HubError as problem:
            self.hub_error(problem, nick=new)
            return
        self.reg.nick = self.user.nick

    def on_ping(self, message: Message) -> None:
        self.send(Message("PONG", [self.server_name, message.params[0]], self.server_name))

    def on_pong(self, message: Message) -> None:
        pass  # any input already counts as an answer

    def on_quit(self, message: Message) -> None:
        text = message.params[0] if message.params and message.params[0] else ""
        reason = f"Quit: {text}" if text else "Client Quit"
        self.close_link(reason)

    def on_join(self, message: Message) -> None:
        assert self.user is not None
        if message.params[0] == "0":
            for room in self.hub.user_rooms(self.user):
                self.hub.leave(self.user, room[0], "Left all channels")
            return
        channels = split_targets(message.params[0])
        keys = message.params[1].split(",") if len(message.params) > 1 else []
        if not channels:
            self.error(Numeric.ERR_NEEDMOREPARAMS, "JOIN")
        for i, channel in enumerate(channels):
            room = channel_to_room(channel)
            if room is None:
                self.error(Numeric.ERR_NOSUCHCHANNEL, channel)
                continue
            if len(self.user.rooms) >= MAX_CHANNELS:
                self.error(Numeric.ERR_TOOMANYCHANNELS, channel)
                continue
            key = keys[i] if i < len(keys) and keys[i] else None
            try:
                joined = self.hub.join(self.user, room, key)
            except HubError as problem:
                if problem.code != "already_in_room":
                    self.hub_error(problem, channel=channel)
                continue
            try:
                arrival = self.hub.arrival(self.user, joined.name)
            except HubError:
                continue  # kicked (or the room gone) already: the client was told so
            if arrival.topic.topic:
                self._send_topic(arrival.topic)
            self._send_name_list(arrival.room, arrival.members or ())
            irc_history.replay_on_join(self, joined.name)

    def on_part(self, message: Message) -> None:
        assert self.user is not None
        reason = message.params[1] if len(message.params) > 1 else ""
        for channel in split_targets(message.params[0]):
            room = channel_to_room(channel)
            try:
                if room is None:
                    raise HubError("no_such_room", channel)
                self.hub.leave(self.user, room, reason)
            except HubError as problem:
                self.hub_error(problem, channel=channel)

    def on_message(self, message: Message) -> None:
        assert self.user is not None
        notice = message.command == "NOTICE"
        if not message.params or not message.params[0]:
            if not notice:
                self.error(Numeric.ERR_NORECIPIENT)
            return
        if len(message.params) < 2 or not message.params[1]:
            if not notice:
                self.error(Numeric.ERR_NOTEXTTOSEND)
            return
        text, kind = message.params[1], events.NOTICE if notice else events.TEXT
        action = _ctcp_action(text)
        if action is not None and not notice:
            text, kind = action, events.ACTION
        targets = split_targets(message.params[0])
        for target in targets[MAX_TARGETS:]:
            self.numeric("407", target, "Too many targets")
        echo = self._echo if "echo-message" in self.caps else None
        for target in targets[:MAX_TARGETS]:
            try:
                self._deliver(target, text, kind, notice, echo)
            except HubError as problem:
                if not notice:  # RFC: never answer a NOTICE automatically
                    self.hub_error(problem, nick=target, channel=target)

    def _echo(self, event: Event) -> None:
        # Called by the hub right after the relay: the echo carries the stored msgid and time,
        # and with pipelining it comes in order with everything else this user is sent.
        data = self.encode(event)
        if data:
            self.send_bytes(data)

    def _deliver(self, target: str, text: str, kind: str, notice: bool, echo: Echo | None) -> None:
        assert self.user is not None
        if target.startswith("#"):
            room = channel_to_room(target)
            if room is None:
                raise HubError("no_such_room", target)
            try:
                self.hub.say(self.user, room, text, kind, echo)
            except HubError as problem:
                if problem.code == "not_in_room":
                    raise HubError("moderated", problem.message) from problem
                raise
            return
        if irc_accounts.is_nickserv(target) and self.hub.find_user(target) is None:
            self.hub.pipeline.complete()  # its replies and login must not overtake queued messages
            if echo is not None:
                lines = chat_messages(self.mask, target, text, kind, self.user.account)
                for line in lines:
                    self.send_bytes(Formatter(line, time=time.time()).encode(self.caps))
            irc_accounts.nickserv(self, text)
            return
        recipient = self.hub.send_private(self.user, target, text, kind, echo)
        if recipient.away and not notice:
            self.numeric(Numeric.RPL_AWAY, recipient.nick, recipient.away)

    def on_tagmsg(self, message: Message) -> None:
        # Client-only tags (typing notifications, reactions) are accepted and not relayed yet:
        # relaying needs a hub event that carries tags.
        if "message-tags" not in self.caps:
            self.error(Numeric.ERR_UNKNOWNCOMMAND, "TAGMSG")

    def on_topic(self, message: Message) -> None:
        assert self.user is not None
        channel = message.params[0]
        room = channel_to_room(channel)
        try:
            if room is None:
                raise HubError("no_such_room", channel)
            if len(message.params) == 1:
                self._send_topic(self.hub.topic(room), empty_too=True)
                return
            self.hub.set_topic(self.user, room, message.params[1][: names.TOPIC_MAX])
        except HubError as problem:
            self.hub_error(problem, channel=channel)

    def _send_topic(self, info: events.TopicInfo, empty_too: bool = False) -> None:
        channel = "#" + info.room
        if not info.topic:
            if empty_too:
                self.error(Numeric.RPL_NOTOPIC, channel)
            return
        self.numeric(Numeric.RPL_TOPIC, channel, info.topic)
        self.numeric(Numeric.RPL_TOPICWHOTIME, channel, info.by or "*", str(int(info.set_at)))

    def on_names(self, message: Message) -> None:
        if not message.params or not message.params[0]:
            self.error(Numeric.RPL_ENDOFNAMES, "*")
            return
        for channel in split_targets(message.params[0]):
            room = channel_to_room(channel)
            if room is None or self.hub.get_room(room) is None:
                self.error(Numeric.RPL_ENDOFNAMES, channel)
                continue
            self._send_names(room)

    def _send_names(self, room: str) -> None:
        try:
            state = self.hub.room_state(room)
        except HubError:
            self.error(Numeric.RPL_ENDOFNAMES, "#" + room)
            return
        self._send_name_list(state.name, state.members)

    def _send_name_list(
        self, room: str, members: Iterable[tuple[User, tuple[MemberStatus, ...]]]
    ) -> None:
        channel = "#" + room
        multi = "multi-prefix" in self.caps
        full = "userhost-in-names" in self.caps
        entries = [
            irc_modes.status_prefix(statuses, multi) + (source_of(user) if full else user.nick)
            for user, statuses in members
        ]

        def build(text: str, more: bool) -> Message:
            return reply(self.server_name, Numeric.RPL_NAMREPLY, self.nick, "=", channel, text)

        self.send(*pack_words(entries, build))
        self.error(Numeric.RPL_ENDOFNAMES, channel)

    def on_list(self, message: Message) -> None:
        wanted = None
        if message.params and message.params[0]:
            wanted = {names.fold(c) for c in split_targets(message.params[0])}
        self.numeric(Numeric.RPL_LISTSTART, "Channel", "Users  Name")
        for state in self.hub.room_states():
            channel = "#" + state.name
            if wanted is None or names.fold(channel) in wanted:
                self.numeric(Numeric.RPL_LIST, channel, str(len(state.members)), state.topic)
        self.error(Numeric.RPL_LISTEND)

    def on_who(self, message: Message) -> None:
        mask = message.params[0] if message.params and message.params[0] else "*"
        room = channel_to_room(mask)
        if room is not None:
            try:
                state = self.hub.room_state(room)
            except HubError:
                state = None
            if state is not None:
                for user, statuses in state.members:
                    self._who_reply("#" + state.name, user, statuses)
        else:
            pattern = names.fold(mask)
            for user in self.hub.users():
                if fnmatch.fnmatchcase(names.fold(user.nick), pattern) or pattern == "0":
                    self._who_reply("*", user, ())
        self.error(Numeric.RPL_ENDOFWHO, mask)

    def _who_reply(self, channel: str, user: User, statuses: tuple[MemberStatus, ...]) -> None:
        ident, host = ident_host(user)
        oper = "*" if UserFlag.SERVER_OPERATOR in user.flags else ""
        flags = ("G" if user.away else "H") + oper
        flags += irc_modes.status_prefix(statuses, "multi-prefix" in self.caps)
        self.numeric(
            Numeric.RPL_WHOREPLY,
            channel,
            ident,
            host,
            self.server_name,
            user.nick,
            flags,
            f"0 {realname_of(user)}",
        )

    def on_whois(self, message: Message) -> None:
        if not message.params or not message.params[-1]:
            self.error(Numeric.ERR_NONICKNAMEGIVEN)
            return
        nick = split_targets(message.params[-1])[0]
        user = self.hub.find_user(nick)
        if user is None:
            self.error(Numeric.ERR_NOSUCHNICK, nick)
            self.error(Numeric.RPL_ENDOFWHOIS, nick)
            return
        ident, host = ident_host(user)
        self.numeric(Numeric.RPL_WHOISUSER, user.nick, ident, host, "*", realname_of(user))
        rooms = self.hub.user_rooms(user)
        if rooms:
            multi = "multi-prefix" in self.caps
            words = [irc_modes.status_prefix(held, multi) + "#" + name for name, held in rooms]

            def build(text: str, more: bool) -> Message:
                return reply(
                    self.server_name, Numeric.RPL_WHOISCHANNELS, self.nick, user.nick, text
                )

            self.send(*pack_words(words, build))
        first = user.connections[0] if user.connections else None
        kind = "IRC" if isinstance(first, IrcConnection) else "native protocol"
        self.numeric(Numeric.RPL_WHOISSERVER, user.nick, self.server_name, f"threadchat ({kind})")
        if user.away:
            self.numeric(Numeric.RPL_AWAY, user.nick, user.away)
        if UserFlag.SERVER_OPERATOR in user.flags:
            self.numeric(Numeric.RPL_WHOISOPERATOR, user.nick, "is an IRC operator")
        if user.account:
            self.numeric(Numeric.RPL_WHOISACCOUNT, user.nick, user.account, "is logged in as")
        idle = str(max(0, int(time.time() - user.last_active)))
        self.numeric(
            Numeric.RPL_WHOISIDLE,
            user.nick,
            idle,
            str(int(user.signon)),
            "seconds idle, signon time",
        )
        self.error(Numeric.RPL_ENDOFWHOIS, user.nick)

    def on_whowas(self, message: Message) -> None:
        # No history of departed users is kept (yet); clients wait for the end numeric.
        nick = message.params[0]
        self.numeric("406", nick, "There was no such nickname")
        self.numeric("369", nick, "End of WHOWAS")

    def on_ison(self, message: Message) -> None:
        wanted = " ".join(message.params).split()
        present = [u.nick for u in map(self.hub.find_user, wanted) if u is not None]
        self.numeric(Numeric.RPL_ISON, " ".join(present))

    def on_userhost(self, message: Message) -> None:
        replies = []
        for nick in " ".join(message.params).split()[:5]:
            user = self.hub.find_user(nick)
            if user is not None:
                ident, host = ident_host(user)
                oper = "*" if UserFlag.SERVER_OPERATOR in user.flags else ""
                away = "-" if user.away else "+"
                replies.append(f"{user.nick}{oper}={away}{ident}@{host}")
        self.numeric(Numeric.RPL_USERHOST, " ".join(replies))

    def on_away(self, message: Message) -> None:
        assert self.user is not None
        text = message.params[0][:AWAYLEN] if message.params else ""
        self.hub.set_away(self.user, text or None)
        self.error(Numeric.RPL_NOWAWAY if text else Numeric.RPL_UNAWAY)

    def on_mode(self, message: Message) -> None:
        target = message.params[0]
        if target.startswith("#"):
            self._channel_mode(target, message.params[1:])
        else:
            self._user_mode(target, message.params[1:])

    def _user_mode(self, target: str, args: list[str]) -> None:
        assert self.user is not None
        if names.fold(target) != self.user.key:
            if self.hub.find_user(target) is None:
                self.error(Numeric.ERR_NOSUCHNICK, target)
            else:
                self.error(Numeric.ERR_USERSDONTMATCH)
            return
        if not args or not args[0]:
            self.numeric(Numeric.RPL_UMODEIS, irc_modes.user_mode_is(self.user.flags))
            return
        changes, unknown = irc_modes.parse_user_modes(args[0])
        if unknown:
            self.error(Numeric.ERR_UMODEUNKNOWNFLAG)
        self.hub.set_user_modes(self.user, changes)

    def _channel_mode(self, channel: str, args: list[str]) -> None:
        assert self.user is not None
        room = channel_to_room(channel)
        try:
            if room is None:
                raise HubError("no_such_room", channel)
            state = self.hub.room_state(room)
        except HubError as problem:
            self.hub_error(problem, channel=channel)
            return
        channel = "#" + state.name
        if not args or not args[0]:
            self._send_channel_modes(state)
            return
        parsed = irc_modes.parse_channel_modes(
            args[0],
            args[1:],
            max_with_parameter=MAX_MODES,
            key_max=KEYLEN,
            mask_max=BANMASK_MAX,
            bad_word=_bad_word,
        )
        for letter in parsed.unknown:
            self.error(Numeric.ERR_UNKNOWNMODE, letter)
        changes = parsed.changes
        if parsed.list_bans:
            for ban in state.bans:
                self.numeric(Numeric.RPL_BANLIST, channel, ban)
            self.error(Numeric.RPL_ENDOFBANLIST, channel)
        if not changes:
            return
        try:
            self.hub.set_room_modes(self.user, state.name, changes)
        except HubError as problem:
            # The hub's messages name the nick: "there is nobody called X", "X is not in R".
            words = problem.message.split()
            nick = words[-1] if problem.code == "no_such_nick" else words[0]
            self.hub_error(problem, nick=nick, channel=channel)

    def _send_channel_modes(self, state: RoomState) -> None:
        channel = "#" + state.name
        member = any(user is self.user for user, _ in state.members)
        params = irc_modes.channel_mode_is(
            state.flags, state.password, state.limit, show_key=member
        )
        self.numeric(Numeric.RPL_CHANNELMODEIS, channel, *params)
        self.numeric(Numeric.RPL_CREATIONTIME, channel, str(int(state.created)))

    def on_kick(self, message: Message) -> None:
        assert self.user is not None
        channel = message.params[0]
        reason = (message.params[2] if len(message.params) > 2 else "")[:KICKLEN]
        room = channel_to_room(channel)
        for nick in split_targets(message.params[1])[:1]:
            try:
                if room is None:
                    raise HubError("no_such_room", channel)
                self.hub.kick(self.user, room, nick, reason)
            except HubError as problem:
                self.hub_error(problem, nick=nick, channel=channel)

    def on_invite(self, message: Message) -> None:
        assert self.user is not None
        nick, channel = message.params[0], message.params[1]
        room = channel_to_room(channel)
        try:
            if room is None:
                raise HubError("no_such_room", channel)
            target = self.hub.invite(self.user, nick, room)
        except HubError as problem:
            self.hub_error(problem, nick=nick, channel=channel)
            return
        self.numeric(Numeric.RPL_INVITING, target.nick, channel)
        if target.away:
            self.numeric(Numeric.RPL_AWAY, target.nick, target.away)

    def on_oper(self, message: Message) -> None:
        assert self.user is not None
        name, password = message.params[0], message.params[1]
        for entry in self.server.config.oper:
            oper_name, _, oper_password = entry.partition(":")
            if oper_name == name:
                if hmac.compare_digest(password.encode(), oper_password.encode()):
                    self.error(Numeric.RPL_YOUREOPER)
                    self.hub.grant_server_operator(self.user)
                    log.info("%s: %s is now a server operator", self.label, self.user.nick)
                else:
                    self.error(Numeric.ERR_PASSWDMISMATCH)
                return
        self.error(Numeric.ERR_NOOPERHOST)

    def on_kill(self, message: Message) -> None:
        assert self.user is not None
        nick, comment = message.params[0], message.params[1]
        try:
            victim = self.hub.kill(self.user, nick, comment)
        except HubError as problem:
            self.hub_error(problem, nick=nick)
            return
        # Let the victim's ERROR line leave before its socket is shut down.
        self.flush_now()
        for conn in victim.connections:
            abort = getattr(conn, "abort", None)
            if abort is not None:
                abort(f"Killed ({self.user.nick} ({comment}))")

    def on_wallops(self, message: Message) -> None:
        assert self.user is not None
        self.hub.wallops(self.user, message.params[0])

    def on_info(self, message: Message) -> None:
        for line in (
            f"{VERSION}: a threaded chat server",
            "IRC and the native protocol share one hub: #room here is room elsewhere.",
        ):
            self.numeric(Numeric.RPL_INFO, line)
        self.error(Numeric.RPL_ENDOFINFO)

    def on_version(self, message: Message) -> None:
        self.numeric(Numeric.RPL_VERSION, VERSION, self.server_name, "threadchat IRC transport")
        self._isupport()

    def on_time(self, message: Message) -> None:
        now = datetime.now(UTC).strftime("%A %B %d %Y -- %H:%M:%S UTC")
        self.numeric(Numeric.RPL_TIME, self.server_name, now)

    def on_admin(self, message: Message) -> None:
        self.numeric(Numeric.RPL_ADMINME, self.server_name, "Administrative info")
        self.numeric(Numeric.RPL_ADMINLOC1, f"{self.server_name}, a threadchat server")
        self.numeric(Numeric.RPL_ADMINLOC2, "Run by its operators (see OPER)")
        self.numeric(Numeric.RPL_ADMINEMAIL, "no e-mail configured")

    def on_help(self, message: Message) -> None:
        subject = message.params[0].upper() if message.params and message.params[0] else "*"
        lines = [
            f"threadchat speaks IRC; commands: {' '.join(sorted(COMMANDS))}",
            "Channels are rooms of the native protocol: #dev is room dev.",
        ]
        self.numeric("704", subject, lines[0])
        for line in lines[1:]:
            self.numeric("705", subject, line)
        self.numeric("706", subject, "End of /HELP")

    def on_lusers(self, message: Message | None = None) -> None:
        self._lusers()

    def _lusers(self) -> None:
        users, opers, rooms = self.hub.counts()
        unknown = max(0, len(self.server.connections()) - users)
        self.numeric(
            Numeric.RPL_LUSERCLIENT, f"There are {users} users and 0 invisible on 1 servers"
        )
        self.numeric(Numeric.RPL_LUSEROP, str(opers), "operator(s) online")
        self.numeric(Numeric.RPL_LUSERUNKNOWN, str(unknown), "unknown connection(s)")
        self.numeric(Numeric.RPL_LUSERCHANNELS, str(rooms), "channels formed")
        self.numeric(Numeric.RPL_LUSERME, f"I have {users} clients and 0 servers")

    def on_motd(self, message: Message | None = None) -> None:
        self._motd()

    def _motd(self) -> None:
        text = self.server.config.motd
        if not text:
            self.error(Numeric.ERR_NOMOTD)
            return
        self.numeric(Numeric.RPL_MOTDSTART, f"- {self.server_name} Message of the day - ")
        for line in text.splitlines():
            self.numeric(Numeric.RPL_MOTD, f"- {line}")
        self.error(Numeric.RPL_ENDOFMOTD)


def chat_messages(
    source: str,
    target: str,
    text: str,
    kind: str,
    account: str | None,
    msgid: str | None = None,
) -> list[Message]:
    """PRIVMSG/NOTICE lines for one hub message, split so each fits IRC's 512 bytes.

    Native clients may send longer lines than IRC allows; they are split at character
    boundaries rather than truncated (every part carries the message's msgid).
    """
    command = "NOTICE" if kind == events.NOTICE else "PRIVMSG"
    tags: dict[str, str | None] = {"account": account} if account else {}
    if msgid is not None:
        tags["msgid"] = msgid

    def build(body: str) -> Message:
        wrapped = f"\x01ACTION {body}\x01" if kind == events.ACTION else body
        return Message(command, [target, wrapped], source, dict(tags))

    message = build(text)
    if fits_line(message):
        return [message]
    room = 512 - len(build("").to_bytes()) - 1
    return [build(chunk) for chunk in _utf8_chunks(text, max(room, 16))]


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
    """The bytes of `chat_messages` then `Formatter.encode` when that is one line, or None.

    `tags` says which tags the recipient gets: (account-tag, message-tags, server-time), the
    capabilities `Formatter` checks for account, msgid and time. None leaves the message to
    the general path: it must be split, would not serialise (CR, LF or NUL, a bad source or
    target, NUL in a tag), or has a time that `utctime` does not format.
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
    if len(data) + 2 > MAX_LINE_BYTES:
        return None
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


def _utf8_chunks(text: str, size: int) -> Iterable[str]:
    chunk: list[str] = []
    used = 0
    for ch in text:
        n = len(ch.encode())
        if used + n > size:
            yield "".join(chunk)
            chunk, used = [], 0
        chunk.append(ch)
        used += n
    if chunk:
        yield "".join(chunk)


def _ctcp_action(text: str) -> str | None:
    """The text of a CTCP ACTION (`\\x01ACTION waves\\x01`), or None for other text."""
    if not text.startswith("\x01ACTION"):
        return None
    body = text[len("\x01ACTION") :]
    if body.endswith("\x01"):
        body = body[:-1]
    if body and not body.startswith(" "):
        return None  # e.g. "\x01ACTIONS": some other CTCP
    return body[1:] if body else ""


def _bad_word(word: str) -> bool:
    return word.startswith(":") or any(c in word for c in " ,\x07") or bool(names.text_error(word))


COMMANDS: dict[str, Command] = {
    "CAP": Command(IrcConnection.on_registration, True),
    "PASS": Command(IrcConnection.on_registration, True),
    "AUTHENTICATE": Command(irc_accounts.on_authenticate, True, 1),  # type: ignore[arg-type]
    "USER": Command(IrcConnection.on_registration, True),
    "NICK": Command(IrcConnection.on_nick, True),
    "PING": Command(IrcConnection.on_ping, True, 1),
    "PONG": Command(IrcConnection.on_pong, True),
    "QUIT": Command(IrcConnection.on_quit, True),
    "JOIN": Command(IrcConnection.on_join, min_params=1),
    "PART": Command(IrcConnection.on_part, min_params=1),
    "PRIVMSG": Command(IrcConnection.on_message),
    "NOTICE": Command(IrcConnection.on_message),
    "TAGMSG": Command(IrcConnection.on_tagmsg, min_params=1),
    "CHATHISTORY": Command(irc_history.on_chathistory, min_params=1),  # type: ignore[arg-type]
    "TOPIC": Command(IrcConnection.on_topic, min_params=1),
    "NAMES": Command(IrcConnection.on_names),
    "LIST": Command(IrcConnection.on_list),
    "WHO": Command(IrcConnection.on_who),
    "WHOIS": Command(IrcConnection.on_whois),
    "WHOWAS": Command(IrcConnection.on_whowas, min_params=1),
    "ISON": Command(IrcConnection.on_ison, min_params=1),
    "USERHOST": Command(IrcConnection.on_userhost, min_params=1),
    "AWAY": Command(IrcConnection.on_away),
    "MODE": Command(IrcConnection.on_mode, min_params=1),
    "KICK": Command(IrcConnection.on_kick, min_params=2),
    "INVITE": Command(IrcConnection.on_invite, min_params=2),
    "OPER": Command(IrcConnection.on_oper, min_params=2),
    "KILL": Command(IrcConnection.on_kill, min_params=2),
    "WALLOPS": Command(IrcConnection.on_wallops, min_params=1),
    "INFO": Command(IrcConnection.on_info),
    "VERSION": Command(IrcConnection.on_version),
    "TIME": Command(IrcConnection.on_time),
    "ADMIN": Command(IrcConnection.on_admin),
    "HELP": Command(IrcConnection.on_help),
    "LUSERS": Command(IrcConnection.on_lusers),
    "MOTD": Command(IrcConnection.on_motd),
}
