"""Sans-I/O IRC protocol: message parsing and serialisation, line framing, registration.

Follows the Modern IRC client protocol (modern.ircdocs.horse) and IRCv3 message-tags and
capability negotiation (CAP LS 302); RFC 1459/2812 where those are silent. Nothing here touches
a socket or a thread: the transport feeds bytes into :class:`IrcLineReader`, hands parsed
:class:`Message` objects to :class:`Registration` (and later to the hub), and writes the bytes
returned by :meth:`Message.to_bytes` or :class:`Formatter`.

Incoming bytes are decoded as UTF-8; a line that is not valid UTF-8 is decoded as latin-1
instead, so every byte maps to a character, and flagged (`MessageReceived.latin1`): the
session refuses such lines (ISUPPORT UTF8ONLY). Outgoing text is always UTF-8.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from threadchat.core.names import fold
from threadchat.protocols import utctime
from threadchat.protocols.lineends import LineEnds

__all__ = [
    "CAP_LS_VERSION_MULTILINE",
    "CHANNELLEN",
    "CHANNEL_PREFIX",
    "ISUPPORT_MAX_TOKENS",
    "MAX_CLIENT_TAG_DATA",
    "MAX_LINE_BYTES",
    "MAX_TAGS_BYTES",
    "MAX_UNTERMINATED_BYTES",
    "NICKLEN",
    "NUMERIC_TEXT",
    "PRE_REGISTRATION_COMMANDS",
    "TAG_CAPABILITY",
    "BufferOverflow",
    "Formatter",
    "IrcLineReader",
    "IrcParseError",
    "LineEvent",
    "LineTooLong",
    "MalformedLine",
    "Message",
    "MessageReceived",
    "Numeric",
    "Registration",
    "RegistrationStep",
    "casefold",
    "channel_to_room",
    "decode_line",
    "escape_tag_value",
    "fits_line",
    "format_server_time",
    "is_valid_channel",
    "is_valid_nick",
    "is_valid_room",
    "isupport",
    "pack_words",
    "parse",
    "reply",
    "reply_with_text",
    "room_to_channel",
    "serialize",
    "split_targets",
    "unescape_tag_value",
]

# --- limits ---------------------------------------------------------------------------------

# The classic IRC line limit, counted without the tags section but including the CRLF. Clients
# size their messages for it; accepting more would let one client emit lines that other
# servers and clients truncate.
MAX_LINE_BYTES = 512
# IRCv3 message-tags: the tags section (leading '@' and trailing space included) of a line
# may take up to 8191 bytes; of these a client may send 4094 bytes of tag data (without the
# '@' and the space), the rest being the server's to add. A client line with more gets 417.
MAX_TAGS_BYTES = 8191
MAX_CLIENT_TAG_DATA = 4094
# A peer that sends this much without any newline is not speaking IRC (or is trying to make us
# buffer without bound); we give up on the connection instead of discarding forever.
MAX_UNTERMINATED_BYTES = 64 * 1024
# Nickname length we advertise (NICKLEN) and enforce; matches the project-wide limit.
NICKLEN = 30
# Channel name length including the '#', advertised as CHANNELLEN; rooms are at most 49 chars.
CHANNELLEN = 50
# Modern IRC: RPL_ISUPPORT carries at most 13 tokens per line so old clients can parse it.
ISUPPORT_MAX_TOKENS = 13
# The only channel type we support (CHANTYPES=#).
CHANNEL_PREFIX = "#"
# CAP LS version from which values and multi-line replies may be sent (IRCv3 CAP 302).
CAP_LS_VERSION_MULTILINE = 302

# Commands a client may send before registration completes; anything else gets 451.
PRE_REGISTRATION_COMMANDS = frozenset(
    {"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT", "AUTHENTICATE"}
)

# CR, LF and NUL may not appear in a line or in a parameter. Tested with three `in` scans (C,
# memchr): `frozenset.isdisjoint` hashed every character of the line, 7,600 instructions per
# chat line parsed (callgrind), about 4 % of a message's work at fan-out C=100.


class IrcParseError(ValueError):
    """A line that is not a well-formed IRC message."""


# --- tag escaping -----------------------------------------------------------------------------

_TAG_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPE_TABLE = str.maketrans(_TAG_ESCAPES)
_TAG_KEY_RE = re.compile(r"\+?(?:[A-Za-z0-9][A-Za-z0-9.-]*/)?[A-Za-z0-9-]+", re.ASCII)


def escape_tag_value(value: str) -> str:
    r"""Escape a tag value for the wire (IRCv3 message-tags).

    >>> escape_tag_value("a;b c\\d\r\n")
    'a\\:b\\sc\\\\d\\r\\n'
    """
    return value.translate(_TAG_ESCAPE_TABLE)


def unescape_tag_value(raw: str) -> str:
    r"""Undo :func:`escape_tag_value`.

    An unknown escape drops the backslash and a trailing lone backslash is dropped, as
    IRCv3 requires.

    >>> unescape_tag_value("a\\:b\\sc\\\\d")
    'a;b c\\d'
    >>> unescape_tag_value("\\b")
    'b'
    >>> unescape_tag_value("end\\")
    'end'
    """
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            if i + 1 < len(raw):
                nxt = raw[i + 1]
                out.append(_TAG_UNESCAPES.get(nxt, nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


# --- Message --------------------------------------------------------------------------------

_COMMAND_RE = re.compile(r"[A-Za-z]+|[0-9]{3}", re.ASCII)


@dataclass(slots=True)
class Message:
    """One IRC message.

    ``command`` is upper-cased on construction (numerics stay 3-digit strings); ``tags`` maps a
    key to its unescaped value, ``None`` meaning "no value" (an empty value parses as ``None``
    too, since IRCv3 makes the two equivalent). Construction does not validate; serialisation
    does, so a Message built from untrusted text can never inject a second line.
    """

    command: str
    params: list[str] = field(default_factory=list)
    source: str | None = None
    tags: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # str() turns a Numeric member into its plain "001" value.
        self.command = str(self.command).upper()
        self.params = list(self.params)

    @classmethod
    def make(
        cls,
        command: str,
        *params: str,
        source: str | None = None,
        tags: Mapping[str, str | None] | None = None,
    ) -> Message:
        """Convenience constructor: ``Message.make("PRIVMSG", "#dev", "hi", source="n!u@h")``."""
        return cls(command, list(params), source, dict(tags or {}))

    def to_bytes(self) -> bytes:
        """Serialise to exactly one UTF-8 line ending in CRLF. See :func:`serialize`."""
        return serialize(self)

    def to_line(self) -> str:
        """The wire form as text, without the CRLF."""
        return _format(self)


def _check_text(what: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{what} contains CR, LF or NUL: {value!r}")


def _format(msg: Message) -> str:
    parts: list[str] = []
    if msg.tags:
        items: list[str] = []
        for key, value in msg.tags.items():
            if not _TAG_KEY_RE.fullmatch(key):
                raise ValueError(f"invalid tag key: {key!r}")
            if value is None or value == "":
                items.append(key)
            else:
                # CR and LF have IRCv3 escapes, so they are safe inside a value; NUL has none.
                if "\0" in value:
                    raise ValueError(f"tag {key!r} value contains NUL")
                items.append(f"{key}={escape_tag_value(value)}")
        parts.append("@" + ";".join(items))
    if msg.source is not None:
        _check_text("source", msg.source)
        if not msg.source or " " in msg.source:
            raise ValueError(f"invalid source: {msg.source!r}")
        parts.append(":" + msg.source)
    if not _COMMAND_RE.fullmatch(msg.command):
        raise ValueError(f"invalid command: {msg.command!r}")
    parts.append(msg.command)
    last = len(msg.params) - 1
    for i, param in enumerate(msg.params):
        _check_text("parameter", param)
        if i < last:
            if not param or param.startswith(":") or " " in param:
                raise ValueError(f"non-final parameter must be a single non-empty word: {param!r}")
            parts.append(param)
        elif not param or param.startswith(":") or " " in param:
            parts.append(":" + param)
        else:
            parts.append(param)
    return " ".join(parts)


def serialize(msg: Message) -> bytes:
    r"""Serialise ``msg`` to one UTF-8 line ending in CRLF.

    The final parameter gets a ':' only when it needs one (empty, starts with ':', or contains
    a space). Raises ValueError for anything that would break framing: CR, LF or NUL in a
    parameter or source, NUL in a tag value, a space or leading ':' in a non-final parameter,
    an empty non-final parameter, a malformed command or tag key. Line length is not checked
    here (see :func:`fits_line`).

    >>> serialize(Message.make("PRIVMSG", "#dev", "hello"))
    b'PRIVMSG #dev hello\r\n'
    >>> serialize(Message.make("PRIVMSG", "#dev", "hello world", source="a!u@h"))
    b':a!u@h PRIVMSG #dev :hello world\r\n'
    >>> serialize(Message.make("TOPIC", "#dev", ""))
    b'TOPIC #dev :\r\n'
    >>> serialize(Message.make("PRIVMSG", "#dev", ":)"))
    b'PRIVMSG #dev ::)\r\n'
    >>> serialize(Message.make("TAGMSG", "#dev", tags={"+typing": "active", "a": "b c"}))
    b'@+typing=active;a=b\\sc TAGMSG #dev\r\n'
    >>> serialize(Message.make("PRIVMSG", "#dev", "hi\r\nQUIT"))
    Traceback (most recent call last):
    ...
    ValueError: parameter contains CR, LF or NUL: 'hi\r\nQUIT'
    >>> serialize(Message.make("KICK", "#dev bob", "x"))
    Traceback (most recent call last):
    ...
    ValueError: non-final parameter must be a single non-empty word: '#dev bob'
    """
    return (_format(msg) + "\r\n").encode("utf-8")


def fits_line(msg: Message, limit: int = MAX_LINE_BYTES) -> bool:
    """True if ``msg`` without its tags, CRLF included, is at most ``limit`` bytes."""
    without_tags = Message(msg.command, msg.params, msg.source)
    return len(serialize(without_tags)) <= limit


def decode_line(raw: bytes) -> tuple[str, bool]:
    """Decode one line as UTF-8, or as latin-1 if it is not valid UTF-8.

    Returns the text and whether the latin-1 fallback was used.
    """
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("latin-1"), True


def _parse_tags(raw: str) -> dict[str, str | None]:
    if not raw:
        raise IrcParseError("empty tags section")
    tags: dict[str, str | None] = {}
    for item in raw.split(";"):
        if not item:
            # A stray ';' (e.g. trailing) carries no tag; tolerate it rather than reject.
            continue
        key, sep, value = item.partition("=")
        if not _TAG_KEY_RE.fullmatch(key):
            raise IrcParseError(f"invalid tag key: {key!r}")
        # Duplicate keys: the last one wins, as IRCv3 specifies. A value that unescapes to
        # nothing (a lone backslash) is no value, like an empty one.
        tags[key] = (unescape_tag_value(value) or None) if sep else None
    if not tags:
        raise IrcParseError("empty tags section")
    return tags


def parse(line: bytes | str) -> Message:
    r"""Parse one IRC line (a trailing CRLF or LF is optional).

    Bytes are decoded as UTF-8 with a latin-1 fallback. Raises :class:`IrcParseError` for an
    empty line, a line with only tags or only a source, a malformed tag or command, or a CR, LF
    or NUL inside the line.

    >>> m = parse(b"@time=2026-01-01T00:00:00.000Z;+x :nick!u@h PRIVMSG #dev :hi there\r\n")
    >>> m.command, m.params, m.source
    ('PRIVMSG', ['#dev', 'hi there'], 'nick!u@h')
    >>> m.tags
    {'time': '2026-01-01T00:00:00.000Z', '+x': None}
    >>> parse("privmsg  #dev   ::)").params
    ['#dev', ':)']
    >>> parse("TOPIC #dev :").params
    ['#dev', '']
    >>> parse("@a=b\\sc\\:d PING x").tags
    {'a': 'b c;d'}
    >>> parse("@a=b")
    Traceback (most recent call last):
    ...
    threadchat.protocols.irc.wire.IrcParseError: no command
    """
    if isinstance(line, bytes):
        text, _ = decode_line(line)
    else:
        text = line
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    if "\r" in text or "\n" in text or "\0" in text:
        raise IrcParseError("line contains CR, LF or NUL")
    if text and text[0] not in " @:" and "  " not in text:
        # The usual client line (no tags, no source, single spaces) split at C speed: the
        # first " :" starts the trailing parameter, as no middle one can begin with ':'.
        head, colon, trailing = text.partition(" :")
        if colon or not head.endswith(" "):
            params = head.split(" ")
            command = params.pop(0)
            if not _COMMAND_RE.fullmatch(command):
                raise IrcParseError(f"invalid command: {command!r}")
            if colon:
                params.append(trailing)
            return Message(command, params)

    pos = 0
    n = len(text)

    def word() -> str:
        nonlocal pos
        end = text.find(" ", pos)
        if end < 0:
            end = n
        result = text[pos:end]
        pos = end
        return result

    def skip_spaces() -> None:
        nonlocal pos
        while pos < n and text[pos] == " ":
            pos += 1

    skip_spaces()
    tags: dict[str, str | None] = {}
    if pos < n and text[pos] == "@":
        pos += 1
        tags = _parse_tags(word())
        skip_spaces()
    source: str | None = None
    if pos < n and text[pos] == ":":
        pos += 1
        source = word()
        if not source:
            raise IrcParseError("empty source")
        skip_spaces()
    if pos >= n:
        raise IrcParseError("no command" if (tags or source) else "empty line")
    command = word()
    if not _COMMAND_RE.fullmatch(command):
        raise IrcParseError(f"invalid command: {command!r}")
    params: list[str] = []
    while True:
        skip_spaces()
        if pos >= n:
            break
        if text[pos] == ":":
            params.append(text[pos + 1 :])
            break
        params.append(word())
    return Message(command, params, source, tags)


# --- line framing ---------------------------------------------------------------------------


@dataclass(slots=True)
class MessageReceived:
    """A complete, well-formed line. ``latin1`` is True if the UTF-8 decode fell back.

    Not frozen, unlike the other events: one is made per message, and a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__`` (about three times the cost).
    """

    message: Message
    latin1: bool = False


@dataclass(frozen=True, slots=True)
class MalformedLine:
    """A complete line that is not a valid IRC message; servers usually ignore these."""

    line: str
    reason: str


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line broke the length limits and was dropped; answer 417 and keep the connection.

    ``length`` is the line's size in bytes as counted for the limit, with a two-byte CR LF end
    whatever end it had (informational).
    """

    length: int


@dataclass(frozen=True, slots=True)
class BufferOverflow:
    """Fatal: too much data without a newline. Close the connection; the reader is dead."""

    pending: int


LineEvent = MessageReceived | MalformedLine | LineTooLong | BufferOverflow


class IrcLineReader:
    """Split a byte stream into IRC lines and parse them.

    Lines end at CR LF, LF or a lone CR (see `lineends`). Empty lines (or spaces only) are
    ignored silently (Modern IRC), unless they are over the length limit like any other.
    A line whose tag data (between the '@' and the first space) exceeds ``max_tag_data`` bytes
    or whose remainder (plus CRLF) exceeds ``max_line`` bytes yields :class:`LineTooLong` and
    is dropped (IRCv3 message-tags, Modern IRC: the client gets 417 and nobody else
    anything); its bytes are discarded as they arrive, so memory stays bounded by roughly
    ``max_line + max_tags`` plus one read.
    More than ``max_unterminated`` bytes without any line end yields :class:`BufferOverflow`,
    after which the reader returns no further events.
    """

    def __init__(
        self,
        *,
        max_line: int = MAX_LINE_BYTES,
        max_tag_data: int = MAX_CLIENT_TAG_DATA,
        max_unterminated: int = MAX_UNTERMINATED_BYTES,
    ) -> None:
        self.max_line = max_line
        # The tags section as counted on the wire: the data, the '@' and the space.
        self.max_tags = max_tag_data + 2
        self.max_unterminated = max_unterminated
        self._buf = bytearray()
        # Bytes of the current (unterminated, already too long) line that were thrown away.
        self._discarded = 0
        self._discarding = False
        self._dead = False
        self._ends = LineEnds()

    @property
    def closed(self) -> bool:
        """True after a :class:`BufferOverflow`; all further data is ignored."""
        return self._dead

    @property
    def pending(self) -> int:
        """Bytes received since the last line end (including discarded ones)."""
        return self._discarded + len(self._buf)

    def receive_data(self, data: bytes) -> list[LineEvent]:
        """Feed received bytes; return the events for every line completed by them."""
        if self._dead:
            return []
        events: list[LineEvent] = []
        buf = self._buf
        buf += self._ends.normalize(data)
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            raw = bytes(buf[start:nl])
            start = nl + 1
            if self._discarding:
                events.append(LineTooLong(self._discarded + len(raw) + 2))
                self._discarding = False
                self._discarded = 0
                continue
            event = self._line_event(raw)
            if event is not None:
                events.append(event)
        del buf[:start]
        if self.pending > self.max_unterminated:
            events.append(BufferOverflow(self.pending))
            self._dead = True
            buf.clear()
            return events
        if len(buf) > self.max_line + self.max_tags:
            # Whatever follows, this line is already too long: stop storing it.
            self._discarding = True
            self._discarded += len(buf)
            buf.clear()
        return events

    def _line_event(self, raw: bytes) -> LineEvent | None:
        # Length first, whatever the line holds: a line discarded while it arrived (see
        # `receive_data`) is too long unseen, so one read at once must be too, blank or not.
        tags_len = 0
        body = raw
        if raw.startswith(b"@"):
            space = raw.find(b" ")
            tags_len = len(raw) + 1 if space < 0 else space + 1
            body = raw[tags_len:]
        if tags_len > self.max_tags or len(body) + 2 > self.max_line:
            return LineTooLong(len(raw) + 2)
        if not raw.strip(b" "):
            return None
        text, latin1 = decode_line(raw)
        try:
            return MessageReceived(parse(text), latin1)
        except IrcParseError as exc:
            return MalformedLine(text, str(exc))


# --- names ----------------------------------------------------------------------------------

_NICK_RE = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*", re.ASCII)
_ROOM_RE = re.compile(r"[A-Za-z0-9_.-]{1,49}", re.ASCII)
# Space, comma, BEL and ':' are excluded explicitly by the IRC specs; other control
# characters (and DEL) are excluded because they confuse clients and logs.
_CHANNEL_BAD_RE = re.compile(r"[\x00-\x20\x7f,:]")


# Nick and channel names compare with the ``ascii`` casemapping the server advertises (only
# A-Z change); written once, in threadchat.core.names, for every protocol and the store.
casefold = fold


def is_valid_nick(nick: str) -> bool:
    """True if ``nick`` is a valid nickname of at most :data:`NICKLEN` characters.

    >>> [is_valid_nick(n) for n in ("alice", "[bot]", "a-1", "1abc", "-x", "a b", "")]
    [True, True, True, False, False, False, False]
    """
    return len(nick) <= NICKLEN and _NICK_RE.fullmatch(nick) is not None


def is_valid_channel(name: str) -> bool:
    """True if ``name`` is '#' followed by 1..49 characters without space, comma, ':' or controls.

    >>> [is_valid_channel(c) for c in ("#dev", "#", "dev", "#a,b", "#a b", "#a\\x07")]
    [True, False, False, False, False, False]
    """
    return (
        name.startswith(CHANNEL_PREFIX)
        and 2 <= len(name) <= CHANNELLEN
        and _CHANNEL_BAD_RE.search(name, 1) is None
    )


def is_valid_room(room: str) -> bool:
    """True if ``room`` is a hub room name: ASCII ``[A-Za-z0-9_.-]{1,49}``."""
    return _ROOM_RE.fullmatch(room) is not None


# Called for every message to a channel: a cache hit is one C call instead of two Python
# calls and a regex match. Bounded, so a client cycling names costs only the cache's churn.
@functools.lru_cache(maxsize=1024)
def channel_to_room(channel: str) -> str | None:
    """Map "#dev" to room "dev"; None if the channel has no room equivalent.

    >>> channel_to_room("#dev"), channel_to_room("dev"), channel_to_room("#caf\\u00e9")
    ('dev', None, None)
    """
    if not channel.startswith(CHANNEL_PREFIX):
        return None
    room = channel[1:]
    return room if is_valid_room(room) else None


def room_to_channel(room: str) -> str:
    """Map room "dev" to "#dev". Raises ValueError for a name that is not a valid room."""
    if not is_valid_room(room):
        raise ValueError(f"invalid room name: {room!r}")
    return CHANNEL_PREFIX + room


def split_targets(targets: str) -> list[str]:
    """Split a comma-separated target list, dropping empty entries.

    >>> split_targets("a,#b,,c")
    ['a', '#b', 'c']
    """
    return [t for t in targets.split(",") if t]


# --- numerics -------------------------------------------------------------------------------


class Numeric(StrEnum):
    """Numeric replies we send, by their Modern IRC names; values are 3-digit strings."""

    RPL_WELCOME = "001"
    RPL_YOURHOST = "002"
    RPL_CREATED = "003"
    RPL_MYINFO = "004"
    RPL_ISUPPORT = "005"
    RPL_UMODEIS = "221"
    RPL_LUSERCLIENT = "251"
    RPL_LUSEROP = "252"
    RPL_LUSERUNKNOWN = "253"
    RPL_LUSERCHANNELS = "254"
    RPL_LUSERME = "255"
    RPL_ADMINME = "256"
    RPL_ADMINLOC1 = "257"
    RPL_ADMINLOC2 = "258"
    RPL_ADMINEMAIL = "259"
    RPL_LOCALUSERS = "265"
    RPL_GLOBALUSERS = "266"
    RPL_AWAY = "301"
    RPL_USERHOST = "302"
    RPL_ISON = "303"
    RPL_UNAWAY = "305"
    RPL_NOWAWAY = "306"
    RPL_WHOISUSER = "311"
    RPL_WHOISSERVER = "312"
    RPL_WHOISOPERATOR = "313"
    RPL_WHOWASUSER = "314"
    RPL_ENDOFWHO = "315"
    RPL_WHOISIDLE = "317"
    RPL_ENDOFWHOIS = "318"
    RPL_WHOISCHANNELS = "319"
    RPL_LISTSTART = "321"
    RPL_LIST = "322"
    RPL_LISTEND = "323"
    RPL_CHANNELMODEIS = "324"
    RPL_CREATIONTIME = "329"
    RPL_WHOISACCOUNT = "330"
    RPL_NOTOPIC = "331"
    RPL_TOPIC = "332"
    RPL_TOPICWHOTIME = "333"
    # Your pending invitations (INVITE alone); 346/347 below list a channel's +I entries.
    RPL_INVITELIST_OWN = "336"
    RPL_ENDOFINVITELIST_OWN = "337"
    RPL_INVITING = "341"
    RPL_INVITELIST = "346"
    RPL_ENDOFINVITELIST = "347"
    RPL_EXCEPTLIST = "348"
    RPL_ENDOFEXCEPTLIST = "349"
    RPL_VERSION = "351"
    RPL_WHOREPLY = "352"
    RPL_NAMREPLY = "353"
    RPL_LINKS = "364"
    RPL_ENDOFLINKS = "365"
    RPL_ENDOFNAMES = "366"
    RPL_BANLIST = "367"
    RPL_ENDOFBANLIST = "368"
    RPL_ENDOFWHOWAS = "369"
    RPL_INFO = "371"
    RPL_MOTD = "372"
    RPL_ENDOFINFO = "374"
    RPL_MOTDSTART = "375"
    RPL_ENDOFMOTD = "376"
    RPL_YOUREOPER = "381"
    RPL_TIME = "391"
    ERR_UNKNOWNERROR = "400"
    ERR_NOSUCHNICK = "401"
    ERR_NOSUCHSERVER = "402"
    ERR_NOSUCHCHANNEL = "403"
    ERR_CANNOTSENDTOCHAN = "404"
    ERR_TOOMANYCHANNELS = "405"
    ERR_WASNOSUCHNICK = "406"
    ERR_NOORIGIN = "409"
    ERR_INVALIDCAPCMD = "410"
    ERR_NORECIPIENT = "411"
    ERR_NOTEXTTOSEND = "412"
    ERR_INPUTTOOLONG = "417"
    ERR_UNKNOWNCOMMAND = "421"
    ERR_NOMOTD = "422"
    ERR_NONICKNAMEGIVEN = "431"
    ERR_ERRONEUSNICKNAME = "432"
    ERR_NICKNAMEINUSE = "433"
    ERR_USERNOTINCHANNEL = "441"
    ERR_NOTONCHANNEL = "442"
    ERR_USERONCHANNEL = "443"
    ERR_NOTREGISTERED = "451"
    ERR_NEEDMOREPARAMS = "461"
    ERR_ALREADYREGISTERED = "462"
    ERR_PASSWDMISMATCH = "464"
    ERR_KEYSET = "467"
    ERR_CHANNELISFULL = "471"
    ERR_UNKNOWNMODE = "472"
    ERR_INVITEONLYCHAN = "473"
    ERR_BANNEDFROMCHAN = "474"
    ERR_BADCHANNELKEY = "475"
    ERR_BADCHANMASK = "476"
    ERR_NOPRIVILEGES = "481"
    ERR_CHANOPRIVSNEEDED = "482"
    ERR_NOOPERHOST = "491"
    ERR_UMODEUNKNOWNFLAG = "501"
    ERR_USERSDONTMATCH = "502"
    ERR_HELPNOTFOUND = "524"
    RPL_STARTTLS = "670"
    RPL_HELPSTART = "704"
    RPL_HELPTXT = "705"
    RPL_ENDOFHELP = "706"
    ERR_STARTTLS = "691"
    RPL_LOGGEDIN = "900"
    RPL_LOGGEDOUT = "901"
    ERR_NICKLOCKED = "902"
    RPL_SASLSUCCESS = "903"
    ERR_SASLFAIL = "904"
    ERR_SASLTOOLONG = "905"
    ERR_SASLABORTED = "906"
    ERR_SASLALREADY = "907"
    RPL_SASLMECHS = "908"
    # IRCv3 (bot mode, WHOX, MONITOR)
    RPL_WHOISBOT = "335"
    RPL_WHOSPCRPL = "354"
    RPL_MONONLINE = "730"
    RPL_MONOFFLINE = "731"
    RPL_MONLIST = "732"
    RPL_ENDOFMONLIST = "733"
    ERR_MONLISTFULL = "734"


# Human-readable trailing text for numerics whose last parameter is a fixed sentence.
NUMERIC_TEXT: dict[Numeric, str] = {
    Numeric.RPL_ISUPPORT: "are supported by this server",
    Numeric.RPL_UNAWAY: "You are no longer marked as being away",
    Numeric.RPL_NOWAWAY: "You have been marked as being away",
    Numeric.RPL_ENDOFWHO: "End of WHO list",
    Numeric.RPL_ENDOFWHOIS: "End of /WHOIS list",
    Numeric.RPL_LISTEND: "End of /LIST",
    Numeric.RPL_NOTOPIC: "No topic is set",
    Numeric.RPL_ENDOFNAMES: "End of /NAMES list",
    Numeric.RPL_ENDOFBANLIST: "End of channel ban list",
    Numeric.RPL_ENDOFINVITELIST: "End of channel invite exception list",
    Numeric.RPL_ENDOFINVITELIST_OWN: "End of /INVITE list",
    Numeric.RPL_ENDOFLINKS: "End of /LINKS list",
    Numeric.RPL_ENDOFEXCEPTLIST: "End of channel exception list",
    Numeric.RPL_ENDOFWHOWAS: "End of WHOWAS",
    Numeric.ERR_WASNOSUCHNICK: "There was no such nickname",
    Numeric.ERR_HELPNOTFOUND: "No help available on this topic",
    Numeric.RPL_ENDOFINFO: "End of INFO list",
    Numeric.RPL_ENDOFMOTD: "End of /MOTD command",
    Numeric.RPL_YOUREOPER: "You are now an IRC operator",
    Numeric.ERR_UNKNOWNERROR: "Unknown error",
    Numeric.ERR_NOSUCHNICK: "No such nick/channel",
    Numeric.ERR_NOSUCHSERVER: "No such server",
    Numeric.ERR_NOSUCHCHANNEL: "No such channel",
    Numeric.ERR_CANNOTSENDTOCHAN: "Cannot send to channel",
    Numeric.ERR_TOOMANYCHANNELS: "You have joined too many channels",
    Numeric.ERR_NOORIGIN: "No origin specified",
    Numeric.ERR_INVALIDCAPCMD: "Invalid CAP command",
    Numeric.ERR_NORECIPIENT: "No recipient given",
    Numeric.ERR_NOTEXTTOSEND: "No text to send",
    Numeric.ERR_INPUTTOOLONG: "Input line was too long",
    Numeric.ERR_UNKNOWNCOMMAND: "Unknown command",
    Numeric.ERR_NOMOTD: "MOTD File is missing",
    Numeric.ERR_NONICKNAMEGIVEN: "No nickname given",
    Numeric.ERR_ERRONEUSNICKNAME: "Erroneous nickname",
    Numeric.ERR_NICKNAMEINUSE: "Nickname is already in use",
    Numeric.ERR_USERNOTINCHANNEL: "They aren't on that channel",
    Numeric.ERR_NOTONCHANNEL: "You're not on that channel",
    Numeric.ERR_USERONCHANNEL: "is already on channel",
    Numeric.ERR_NOTREGISTERED: "You have not registered",
    Numeric.ERR_NEEDMOREPARAMS: "Not enough parameters",
    Numeric.ERR_ALREADYREGISTERED: "You may not reregister",
    Numeric.ERR_PASSWDMISMATCH: "Password incorrect",
    Numeric.ERR_KEYSET: "Channel key already set",
    Numeric.ERR_CHANNELISFULL: "Cannot join channel (+l)",
    Numeric.ERR_UNKNOWNMODE: "is unknown mode char to me",
    Numeric.ERR_INVITEONLYCHAN: "Cannot join channel (+i)",
    Numeric.ERR_BANNEDFROMCHAN: "Cannot join channel (+b)",
    Numeric.ERR_BADCHANNELKEY: "Cannot join channel (+k)",
    Numeric.ERR_BADCHANMASK: "Bad Channel Mask",
    Numeric.ERR_NOPRIVILEGES: "Permission Denied- You're not an IRC operator",
    Numeric.ERR_CHANOPRIVSNEEDED: "You're not channel operator",
    Numeric.ERR_NOOPERHOST: "No O-lines for your host",
    Numeric.ERR_UMODEUNKNOWNFLAG: "Unknown MODE flag",
    Numeric.ERR_USERSDONTMATCH: "Cant change mode for other users",
    Numeric.RPL_STARTTLS: "STARTTLS successful, proceed with TLS handshake",
    Numeric.ERR_STARTTLS: "STARTTLS failed",
    Numeric.RPL_LOGGEDOUT: "You are now logged out",
    Numeric.ERR_NICKLOCKED: "You must use a nick assigned to you",
    Numeric.RPL_SASLSUCCESS: "SASL authentication successful",
    Numeric.ERR_SASLFAIL: "SASL authentication failed",
    Numeric.ERR_SASLTOOLONG: "SASL message too long",
    Numeric.ERR_SASLABORTED: "SASL authentication aborted",
    Numeric.ERR_SASLALREADY: "You have already authenticated using SASL",
    Numeric.RPL_SASLMECHS: "are available SASL mechanisms",
    Numeric.RPL_ENDOFMONLIST: "End of MONITOR list",
    Numeric.ERR_MONLISTFULL: "Monitor list is full.",
}


def reply_line(
    server_name: str, numeric: Numeric | str, target: str, params: Sequence[str]
) -> bytes:
    r"""``reply(server_name, numeric, target, *params).to_bytes()`` without building a Message.

    The server's own replies are most of what a registration sends (its welcome burst is 15
    of them), and the general path (a Message, `serialize`'s checks parameter by parameter)
    was the largest part of a registration's CPU after the 005 lines were packed once. The
    same rules and the same refusals (ValueError), checked on the finished line at once.

    >>> reply_line("irc.local", Numeric.RPL_WELCOME, "alice", ["Welcome, alice"])
    b':irc.local 001 alice :Welcome, alice\r\n'
    """
    words = [target, *params]
    last = words.pop()
    for word in words:
        if not word or word[0] == ":" or " " in word:
            raise ValueError(f"non-final parameter must be a single non-empty word: {word!r}")
    if not last or last[0] == ":" or " " in last:
        last = ":" + last
    if not server_name or " " in server_name:
        raise ValueError(f"invalid source: {server_name!r}")
    # A Numeric member is a valid command by construction; anything else is checked.
    if isinstance(numeric, Numeric):
        command = numeric.value
    else:
        command = str(numeric).upper()
        if not _COMMAND_RE.fullmatch(command):
            raise ValueError(f"invalid command: {command!r}")
    words.append(last)
    line = f":{server_name} {command} {' '.join(words)}"
    if "\r" in line or "\n" in line or "\0" in line:
        raise ValueError(f"parameter contains CR, LF or NUL: {line!r}")
    return (line + "\r\n").encode("utf-8")


def reply(server_name: str, numeric: Numeric | str, target: str, *params: str) -> Message:
    r"""Build ``:server_name <numeric> <target> <params...>``.

    ``target`` is the client's nick, or "*" before it has one.

    >>> reply("irc.local", Numeric.RPL_WELCOME, "alice", "Welcome, alice").to_bytes()
    b':irc.local 001 alice :Welcome, alice\r\n'
    """
    return Message(numeric, [target, *params], server_name)


def reply_with_text(server_name: str, numeric: Numeric, target: str, *params: str) -> Message:
    r"""Like :func:`reply`, appending the numeric's standard text from :data:`NUMERIC_TEXT`.

    >>> reply_with_text("irc.local", Numeric.ERR_NOSUCHNICK, "alice", "bob").to_bytes()
    b':irc.local 401 alice bob :No such nick/channel\r\n'
    """
    return reply(server_name, numeric, target, *params, NUMERIC_TEXT[numeric])


def pack_words(
    words: Iterable[str],
    build: Callable[[str, bool], Message],
    limit: int = MAX_LINE_BYTES,
) -> list[Message]:
    """Pack space-separated ``words`` into as few messages as fit ``limit`` bytes each.

    ``build(text, more)`` makes the message carrying ``text``; ``more`` is True for every
    message but the last (CAP uses it for the '*' continuation marker). Lines are sized with
    ``more=True`` so the final line, which drops the marker, fits too. Always returns at least
    one message (with empty text if there are no words). A single word too long for a line is
    sent alone on an over-long line rather than dropped.
    """
    chunks: list[str] = []
    current: list[str] = []
    for word in words:
        candidate = " ".join([*current, word])
        if current and not fits_line(build(candidate, True), limit):
            chunks.append(" ".join(current))
            current = [word]
        else:
            current.append(word)
    chunks.append(" ".join(current))
    last = len(chunks) - 1
    return [build(chunk, i < last) for i, chunk in enumerate(chunks)]


def _isupport_escape(value: str) -> str:
    # ISUPPORT values escape backslash, space and '=' as \xHH.
    return value.replace("\\", "\\x5C").replace(" ", "\\x20").replace("=", "\\x3D")


def isupport(
    server_name: str,
    target: str,
    tokens: Mapping[str, str | None] | Iterable[str],
) -> list[Message]:
    r"""Build RPL_ISUPPORT (005) lines, at most 13 tokens each and within the line limit.

    ``tokens`` is either preformatted strings ("CHANTYPES=#") or a mapping of name to value
    (None for a bare token; values are escaped as ISUPPORT requires).

    >>> [m.to_bytes() for m in isupport("s", "nick", {"CASEMAPPING": "ascii", "SAFELIST": None})]
    [b':s 005 nick CASEMAPPING=ascii SAFELIST :are supported by this server\r\n']
    """
    if isinstance(tokens, Mapping):
        items = [k if v is None else f"{k}={_isupport_escape(v)}" for k, v in tokens.items()]
    else:
        items = list(tokens)
    text = NUMERIC_TEXT[Numeric.RPL_ISUPPORT]
    lines: list[Message] = []
    current: list[str] = []
    for token in items:
        candidate = reply(server_name, Numeric.RPL_ISUPPORT, target, *current, token, text)
        if current and (len(current) >= ISUPPORT_MAX_TOKENS or not fits_line(candidate)):
            lines.append(reply(server_name, Numeric.RPL_ISUPPORT, target, *current, text))
            current = []
        current.append(token)
    if current:
        lines.append(reply(server_name, Numeric.RPL_ISUPPORT, target, *current, text))
    return lines


# --- registration and capability negotiation ------------------------------------------------


@dataclass(slots=True)
class RegistrationStep:
    """What :meth:`Registration.handle` decided.

    ``replies``: messages to send now, in order.
    ``handled``: False if the command is not registration's business; the caller handles it.
    ``nick_to_check``: a syntactically valid nick the client asked for before registration;
    the caller may check it with the hub now and answer via :meth:`Registration.reject_nick`.
    ``ready``: NICK and USER are known and CAP negotiation is not in progress. The caller must
    now claim :attr:`Registration.nick` with the hub atomically, then call
    :meth:`Registration.complete` (success) or :meth:`Registration.reject_nick` (taken).
    ``cap_changes``: capabilities enabled (name) or disabled ("-name") by an ACKed REQ.
    """

    replies: list[Message] = field(default_factory=list)
    handled: bool = True
    nick_to_check: str | None = None
    ready: bool = False
    cap_changes: list[str] = field(default_factory=list)


class Registration:
    """Connection registration (PASS/NICK/USER) and IRCv3 capability negotiation.

    ``offered`` maps each capability the server offers to its value (None for none), e.g.
    ``{"server-time": None, "sasl": "PLAIN"}``; the caller decides what works. Feed every
    client message to :meth:`handle` until :attr:`registered`; afterwards CAP still goes here
    (LS/LIST/REQ work after registration too) while NICK and other commands do not.
    """

    def __init__(self, server_name: str, offered: Mapping[str, str | None]) -> None:
        self.server_name = server_name
        # Not copied when it is a dict: the caller shares one among its connections, and
        # this class only ever replaces it (`set_offered`), never changes it in place.
        self._offered: dict[str, str | None] = offered if type(offered) is dict else dict(offered)
        self._enabled: set[str] = set()
        self.cap_version = 0
        self.negotiating = False
        self.password: str | None = None
        self.nick: str | None = None
        # The last valid nick asked for, even if it was then refused as taken.
        self.last_nick: str | None = None
        self.username: str | None = None
        self.realname: str | None = None
        self.registered = False

    # -- state

    @property
    def enabled(self) -> frozenset[str]:
        """Capabilities the client has enabled."""
        return frozenset(self._enabled)

    @property
    def offered(self) -> Mapping[str, str | None]:
        return dict(self._offered)

    @property
    def target(self) -> str:
        """The client's name for numerics/CAP replies: its nick once known, else "*"."""
        return self.nick if self.registered and self.nick else "*"

    def _is_ready(self) -> bool:
        return (
            not self.registered
            and not self.negotiating
            and self.nick is not None
            and self.username is not None
        )

    def _error(self, numeric: Numeric, *params: str) -> Message:
        return reply_with_text(self.server_name, numeric, self.target, *params)

    # -- transitions driven by the caller

    def complete(self, nick: str | None = None) -> None:
        """Mark registration done; the hub accepted ``nick`` (default: the requested nick)."""
        if nick is not None:
            self.nick = nick
        if self.nick is None:
            raise ValueError("cannot complete registration without a nick")
        self.registered = True
        self.negotiating = False

    def reject_nick(self, nick: str, numeric: Numeric = Numeric.ERR_NICKNAMEINUSE) -> list[Message]:
        """The hub refused ``nick`` (433 by default, or 432): forget it and return the reply.

        Registration becomes ready again when the client sends another acceptable NICK.
        """
        if not self.registered and self.nick is not None and casefold(self.nick) == casefold(nick):
            self.nick = None
        return [self._error(numeric, nick)]

    def set_offered(self, offered: Mapping[str, str | None]) -> list[Message]:
        """Change the offered capabilities; returns CAP NEW/DEL for a cap-notify client.

        Capabilities no longer offered are disabled.
        """
        new = {k: v for k, v in offered.items() if self._offered.get(k, ...) != v}
        gone = [k for k in self._offered if k not in offered]
        self._offered = dict(offered)
        self._enabled.intersection_update(self._offered.keys() | {"cap-notify"})
        if "cap-notify" not in self._enabled:
            return []
        out: list[Message] = []
        if gone:
            out += self._cap_lines("DEL", gone)
        if new:
            out += self._cap_lines("NEW", [self._cap_word(k, v) for k, v in new.items()])
        return out

    # -- incoming messages

    def handle(self, msg: Message) -> RegistrationStep:
        """Process one client message; see :class:`RegistrationStep` for the result."""
        match msg.command:
            case "CAP":
                return self._cap(msg)
            case "PASS":
                return self._pass(msg)
            case "USER":
                return self._user(msg)
            case "NICK" if not self.registered:
                return self._nick(msg)
            case _:
                return RegistrationStep(handled=False)

    def _step(
        self,
        replies: list[Message] | None = None,
        *,
        nick_to_check: str | None = None,
        cap_changes: list[str] | None = None,
    ) -> RegistrationStep:
        return RegistrationStep(
            replies or [],
            nick_to_check=nick_to_check,
            ready=self._is_ready(),
            cap_changes=cap_changes or [],
        )

    def _pass(self, msg: Message) -> RegistrationStep:
        if self.registered:
            return RegistrationStep([self._error(Numeric.ERR_ALREADYREGISTERED)])
        if not msg.params or not msg.params[0]:
            return RegistrationStep([self._error(Numeric.ERR_NEEDMOREPARAMS, "PASS")])
        self.password = msg.params[0]
        return RegistrationStep()

    def _user(self, msg: Message) -> RegistrationStep:
        if self.registered:
            return RegistrationStep([self._error(Numeric.ERR_ALREADYREGISTERED)])
        # Modern IRC: the username and the realname must not be empty (461, not registered).
        if len(msg.params) < 4 or not msg.params[0] or not msg.params[3]:
            return RegistrationStep([self._error(Numeric.ERR_NEEDMOREPARAMS, "USER")])
        self.username = msg.params[0]
        self.realname = msg.params[3]
        return self._step()

    def _nick(self, msg: Message) -> RegistrationStep:
        if not msg.params or not msg.params[0]:
            return RegistrationStep([self._error(Numeric.ERR_NONICKNAMEGIVEN)])
        nick = msg.params[0]
        if not is_valid_nick(nick):
            return RegistrationStep([self._error(Numeric.ERR_ERRONEUSNICKNAME, nick)])
        self.nick = self.last_nick = nick
        return self._step(nick_to_check=nick)

    # -- CAP

    def _cap_word(self, name: str, value: str | None) -> str:
        if value and self.cap_version >= CAP_LS_VERSION_MULTILINE:
            return f"{name}={value}"
        return name

    def _cap_lines(self, sub: str, words: list[str]) -> list[Message]:
        # Only LS and LIST define the '*' continuation marker; NEW/DEL lines stand alone.
        multiline = self.cap_version >= CAP_LS_VERSION_MULTILINE and sub in ("LS", "LIST")
        target = self.target

        def build(text: str, more: bool) -> Message:
            if more and multiline:
                return Message("CAP", [target, sub, "*", text], self.server_name)
            return Message("CAP", [target, sub, text], self.server_name)

        return pack_words(words, build)

    def _cap(self, msg: Message) -> RegistrationStep:
        if not msg.params:
            return RegistrationStep([self._error(Numeric.ERR_NEEDMOREPARAMS, "CAP")])
        sub = msg.params[0].upper()
        args = msg.params[1:]
        match sub:
            case "LS":
                if not self.registered:
                    self.negotiating = True
                version = args[0] if args else ""
                if version.isdigit() and int(version) > self.cap_version:
                    self.cap_version = int(version)
                if self.cap_version >= CAP_LS_VERSION_MULTILINE:
                    # CAP 302 implicitly enables cap-notify.
                    self._enabled.add("cap-notify")
                words = [self._cap_word(k, v) for k, v in self._offered.items()]
                return self._step(self._cap_lines("LS", words))
            case "LIST":
                return self._step(self._cap_lines("LIST", sorted(self._enabled)))
            case "REQ":
                if not self.registered:
                    self.negotiating = True
                return self._cap_req(args[0] if args else "")
            case "END":
                self.negotiating = False
                return self._step()
            case _:
                return self._step([self._error(Numeric.ERR_INVALIDCAPCMD, msg.params[0])])

    def _cap_req(self, request: str) -> RegistrationStep:
        names = request.split()
        changes: list[str] = []
        ok = True
        for word in names:
            remove = word.startswith("-")
            name = word[1:] if remove else word
            known = name in self._offered or name == "cap-notify"
            sticky = (
                name == "cap-notify" and remove and self.cap_version >= CAP_LS_VERSION_MULTILINE
            )
            if not known or sticky:
                ok = False
                break
            changes.append(word)
        text = " ".join(names)
        if not ok:
            return self._step([Message("CAP", [self.target, "NAK", text], self.server_name)])
        for word in changes:
            if word.startswith("-"):
                self._enabled.discard(word[1:])
            else:
                self._enabled.add(word)
        ack = Message("CAP", [self.target, "ACK", text], self.server_name)
        return self._step([ack], cap_changes=changes)


# --- fan-out formatting ---------------------------------------------------------------------

# Which capability a recipient needs to receive each tag. Tags not listed need message-tags.
TAG_CAPABILITY: dict[str, str] = {
    "time": "server-time",
    "account": "account-tag",
    "batch": "batch",
    "label": "labeled-response",
    "bot": "message-tags",
}
_FORMAT_CAPS = frozenset({"message-tags", *TAG_CAPABILITY.values()})


def format_server_time(when: datetime | float) -> str:
    """Format a time as IRCv3 server-time: ``YYYY-MM-DDThh:mm:ss.sssZ`` (UTC, milliseconds).

    ``when`` is an aware datetime, a naive datetime taken as UTC, or a POSIX timestamp.

    >>> format_server_time(0.1234)
    '1970-01-01T00:00:00.123Z'
    """
    text = utctime.millis(when)  # type: ignore[arg-type]
    return _format_server_time_general(when) if text is None else text


def _format_server_time_general(when: datetime | float) -> str:
    # The reference for `utctime.millis`; still formats datetimes and times outside 1970..9999.
    if isinstance(when, datetime):
        dt = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    else:
        dt = datetime.fromtimestamp(when, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class Formatter:
    """Encode one outgoing message for recipients with different capabilities.

    The message's tags are the full set; each recipient gets only the tags its capabilities
    allow (``time`` needs server-time, ``account`` needs account-tag, ``batch`` needs batch,
    ``label`` needs labeled-response, everything else needs message-tags). If ``time`` is
    given, a ``time`` tag is added. Bytes are cached per distinct relevant capability set, so
    a fan-out to many recipients encodes each protocol variant once. ``encode`` may be called
    from several threads; a race at worst encodes a variant twice.
    """

    __slots__ = ("_cache", "_time", "message")

    def __init__(self, message: Message, *, time: datetime | float | None = None) -> None:
        self.message = message
        # Formatted only for a variant that shows it: most recipients have no server-time,
        # and formatting a time costs more than serialising the whole line.
        self._time = time
        self._cache: dict[frozenset[str], bytes] = {}
        # Serialise eagerly once so a bad message fails at the sender, not per recipient.
        self._cache[frozenset()] = self._encode(frozenset())

    @staticmethod
    def variant(caps: Set[str]) -> frozenset[str]:
        """The part of ``caps`` that affects encoding (a good cache key for callers too)."""
        return _FORMAT_CAPS.intersection(caps)

    def encode(self, caps: Set[str]) -> bytes:
        """The wire bytes for a recipient with enabled capabilities ``caps``."""
        key = self.variant(caps)
        data = self._cache.get(key)
        if data is None:
            data = self._encode(key)
            self._cache[key] = data
        return data

    def _encode(self, key: frozenset[str]) -> bytes:
        msg = self.message
        tags = {k: v for k, v in msg.tags.items() if TAG_CAPABILITY.get(k, "message-tags") in key}
        if self._time is not None and "server-time" in key:
            tags["time"] = format_server_time(self._time)
        return serialize(Message(msg.command, msg.params, msg.source, tags))
