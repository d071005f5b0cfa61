"""Hypothesis strategies for hostile input, shared by the property tests (tests/test_props_*.py).

Random text rarely holds what breaks a chat server, so every strategy here mixes plain
random values with the few characters and words that matter: line ends (CR, LF, CR LF),
NUL, ESC and other controls, lone surrogates (legal in JSON's \\ud800, not in UTF-8), the
separators of IRC (space, ':', '@', ';', '\\', ',') and the start of a JSON object.
"""

import dataclasses
import enum
import itertools
import sys
import types
import typing
from typing import Any

from hypothesis import strategies as st

from threadchat.core import events
from threadchat.core.history import MAX_REF, Ref
from threadchat.core.live import MessageExtra
from threadchat.core.modes import (
    MemberStatus,
    ModeChange,
    RoomFlag,
    RoomList,
    RoomSetting,
    UserFlag,
)
from threadchat.protocols.native import requests

# What forges a line, breaks a terminal or cannot be encoded; none may reach another user.
FORBIDDEN = ("\r", "\n", "\0")
SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")

_SPECIAL_CHARS = [
    *FORBIDDEN,
    *SURROGATES,
    "\x1b",
    "\x01",
    "\x7f",
    "\x85",
    "\t",
    " ",
    ":",
    "@",
    "#",
    ";",
    "=",
    "\\",
    ",",
    "!",
    "+",
    "~",
    "{",
    '"',
    "/",
    "é",
    "\u2028",
    "\ufeff",
    "a",
    "Z",
    "0",
]


def _lone_surrogates_only(text: str) -> str:
    """`text` with each surrogate pair made the one character it stands for: JSON's
    \\ud800\\udc00 is U+10000 once read, so a str holding the pair is no one's input."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


# Text as a user or a client could put in any field: mostly the special characters above.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(_SPECIAL_CHARS), max_size=40),
    st.lists(
        st.sampled_from(["lobby", "#lobby", "olivia", "mallory", "\r\n", "\n", "\0", "x y"]),
        max_size=6,
    ).map("".join),
).map(_lone_surrogates_only)
# The same, but encodable as UTF-8 (what a serialiser may be asked to write).
utf8_text = hostile_text.map(
    lambda text: text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
)
# Text that the hub lets through: no CR, LF, NUL or lone surrogate.
sendable_text = utf8_text.map(lambda text: text.translate({ord(c): None for c in FORBIDDEN}))

_SPECIAL_BYTES = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\0",
    b" ",
    b":",
    b"@",
    b"{",
    b"}",
    b'"',
    b"\\",
    b"\xff",
    b"\xc3",
    b"\xa9",
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate: invalid UTF-8
    b"/join ",
    b"/msg olivia ",
    b"PRIVMSG #lobby :",
    b"@a=b\\n;c ",
    b'{"type":"say","text":"',
    b"\\u0000",
    b"\\ud800",
    b"x" * 300,
]
# Bytes as they could arrive on a socket.
hostile_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(_SPECIAL_BYTES), max_size=30).map(b"".join),
)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut into consecutive reads, empty ones included (as a transport may feed).

    Cuts fall anywhere, and more often where they matter: right after a CR (is the next
    read's LF the same line end?) and twice in one place (an empty read)."""
    after_cr = [i + 1 for i, byte in enumerate(data) if byte == ord("\r")]
    anywhere = st.integers(0, len(data))
    points = st.one_of(anywhere, st.sampled_from(after_cr)) if after_cr else anywhere
    cuts = draw(st.lists(points, max_size=8))
    cuts += draw(st.lists(st.sampled_from(cuts), max_size=2)) if cuts else []
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# Events as the hub makes them, with every text field hostile: what a codec may be handed.
_MODES: list[Any] = [*MemberStatus, *RoomFlag, *RoomList, *RoomSetting, *UserFlag]


def mode_changes(text: st.SearchStrategy[str] = hostile_text) -> st.SearchStrategy[ModeChange]:
    """A mode change whose argument is drawn from `text`, as every other text field is."""
    return st.builds(ModeChange, mode=st.sampled_from(_MODES), add=st.booleans(),
                     arg=st.none() | text)  # fmt: skip


# Times the server's clock gives: from 1970 to 2100.
timestamps = st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)


def _strategy_for(hint: Any, text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    if hint is str:
        return text
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(0, 2**31)
    if hint is float:
        return timestamps
    if hint is object:  # a ref: the client's, echoed in replies
        return st.none() | st.integers(-(2**63), 2**63) | text
    if hint is ModeChange:
        return mode_changes(text)
    if hint is events.RoomInfo:
        return st.builds(events.RoomInfo, name=text, members=st.integers(0, 10**6), topic=text)
    if hint is Ref:
        return ref_positions
    if hint is events.TopicInfo:  # a renamed room's topic
        return instances(events.TopicInfo, text)
    if hint is MessageExtra:
        return instances(MessageExtra, text)
    if hint is events.Event:  # a history page's messages
        stored = st.one_of(
            instances(events.RoomMessage, text), instances(events.PrivateMessage, text)
        )
        return stored.map(lambda message: dataclasses.replace(message, history=True))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_strategy_for(arg, text) for arg in args))
    if hint is type(None):
        return st.none()
    if origin is frozenset:
        return st.frozensets(_strategy_for(args[0], text), max_size=4)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_strategy_for(args[0], text), max_size=4).map(tuple)
        return st.tuples(*(_strategy_for(arg, text) for arg in args))
    raise NotImplementedError(f"no strategy for {hint!r}")


def instances(cls: type, text: st.SearchStrategy[str] = hostile_text) -> st.SearchStrategy[Any]:
    """Any instance of the dataclass `cls`, every field drawn from its type (text: `text`)."""
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: _strategy_for(hints[f.name], text)
        for f in dataclasses.fields(cls)
        if f.name != "id"  # the hub's counter
    }
    return st.builds(cls, **fields)


def _subclasses(cls: type) -> list[type]:
    """The subclasses of `cls` that their module defines: `dataclass(slots=True)` makes a new
    class and leaves the first one behind among the subclasses, until it is collected."""
    found = []
    for sub in cls.__subclasses__():
        if getattr(sys.modules[sub.__module__], sub.__name__, None) is sub:
            found.append(sub)
        found += _subclasses(sub)
    return found


EVENT_CLASSES = sorted(_subclasses(events.Event), key=lambda cls: cls.__name__)


def any_event(text: st.SearchStrategy[str] = hostile_text) -> st.SearchStrategy[events.Event]:
    """An event of any kind the hub has, with text fields from `text`."""
    return st.one_of(*(instances(cls, text) for cls in EVENT_CLASSES))


# Message ids a client can name in JSON.
msgids = st.integers(1, MAX_REF)

# History positions a client can write in JSON: ids up to the limit, times up to year 9999
# (what RFC 3339 can spell).
ref_positions = st.one_of(
    st.integers(0, MAX_REF).map(Ref.msgid),
    st.integers(0, 253_402_300_799_999).map(Ref.at),
)

# Every request a native client can send as JSON (text mode's `/history more` has no JSON).
_JSON_REQUEST_CLASSES = [
    cls for cls in _subclasses(requests.Request) if cls is not requests.Invalid
]


def _request(cls: type, text: st.SearchStrategy[str]) -> st.SearchStrategy[requests.Request]:
    base = instances(cls, text)
    if cls is requests.Hello:
        return base.map(lambda hello: dataclasses.replace(hello, first_line=None))
    if cls is requests.HistoryRequest:
        return base.map(lambda history: dataclasses.replace(history, more=False))
    if cls is requests.ClientPing:  # the token is echoed: one that cannot be is refused
        return base.map(lambda ping: dataclasses.replace(ping, token=_utf8(ping.token)))
    if cls is requests.Moderate:
        actions = st.sampled_from(requests.MODERATION_ACTIONS)
        return st.builds(dataclasses.replace, base, action=actions)
    # JSON names a message by its msgid; text mode's `#a3f` references have no JSON form.
    if cls is requests.Say:
        statuses = st.sampled_from([None, "operator", "voice"])
        return st.builds(dataclasses.replace, base, reply_to=st.none() | msgids, status=statuses)
    if cls is requests.SendPrivate:
        return st.builds(dataclasses.replace, base, reply_to=st.none() | msgids)
    if cls in (requests.React, requests.DeleteMessage, requests.EditMessage):
        return st.builds(dataclasses.replace, base, message=msgids)
    # Times a client can write in JSON (RFC 3339, years 1970 to 9999), limits it can ask.
    times = st.none() | st.integers(0, 253_402_300_799_999)
    if cls is requests.Search:
        limits = st.none() | st.integers(0, 2**31)
        return st.builds(dataclasses.replace, base, before_ms=times, after_ms=times, limit=limits)
    if cls is requests.MarkRead:
        return st.builds(dataclasses.replace, base, read_ms=times)
    if cls is requests.MetadataRequest:
        operations = st.sampled_from(requests.METADATA_OPERATIONS)
        built = st.builds(dataclasses.replace, base, operation=operations)
        # A `set` names its key: the parser refuses one without.
        return built.map(lambda r: dataclasses.replace(r, key=r.key or "k"))
    return base


def _json_ref(request: requests.Request) -> requests.Request:
    # A ref is a string or an integer in JSON; anything else is refused before parsing.
    # Every reply echoes it too: a string that cannot be written back is refused.
    ref = getattr(request, "ref", None)
    if isinstance(ref, str):
        return dataclasses.replace(request, ref=_utf8(ref))
    if isinstance(ref, int | None) and not isinstance(ref, bool):
        return request
    return dataclasses.replace(request, ref=None)


def _utf8(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def json_requests(text: st.SearchStrategy[str] = hostile_text) -> st.SearchStrategy[Any]:
    """Any request a native client can send as JSON (text mode's `/history more` has none),
    its text fields drawn from `text`."""
    return st.one_of(*(_request(cls, text) for cls in _JSON_REQUEST_CLASSES)).map(_json_ref)


# Keys the native JSON schema knows, to build objects that reach deep into the parser.
JSON_KEYS = [
    "type",
    "ref",
    "name",
    "password",
    "text",
    "room",
    "action",
    "to",
    "reason",
    "topic",
    "token",
    "message",
    "with",
    "before",
    "after",
    "limit",
    "old",
    "new",
    "on",
    "target",
    "read",
    "from",
    "around",
    "status",
    "op",
    "key",
    "value",
    "keys",
]
JSON_TYPES = [
    "search",
    "read",
    "always_on",
    "metadata",
    "hello",
    "say",
    "msg",
    "join",
    "leave",
    "nick",
    "topic",
    "rooms",
    "who",
    "help",
    "ping",
    "pong",
    "quit",
    "invite",
    "away",
    "whois",
    "history",
    "register",
    "login",
    "password",
    "topiclock",
    *requests.MODERATION_ACTIONS,
]
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)
# A JSON object shaped like a request: a known type, known keys, any values.
json_request_objects = st.builds(
    lambda kind, body: {"type": kind, **body},
    st.sampled_from(JSON_TYPES) | json_values,
    st.dictionaries(st.sampled_from(JSON_KEYS), json_values | hostile_text, max_size=6),
)
