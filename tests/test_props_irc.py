"""Properties of IRC's wire format and codec (protocols/irc/wire.py, codec.py): any bytes give
messages or a parse error, a message serialises to one line that parses back to it, and the
codec writes every hub event as whole, parseable lines."""

import re

from hostile_input import any_event, chunked, hostile_bytes, hostile_text, instances, sendable_text
from hypothesis import given
from hypothesis import strategies as st

from threadchat.core import events
from threadchat.core.hub import Hub
from threadchat.protocols.irc import wire
from threadchat.protocols.irc.codec import IrcCodec
from threadchat.protocols.irc.wire import (
    IrcLineReader,
    IrcParseError,
    LineTooLong,
    MalformedLine,
    Message,
    MessageReceived,
)

_NO_FRAMING = st.characters(exclude_characters="\r\n\0", exclude_categories=["Cs"])
_WORD = st.characters(exclude_characters="\r\n\0 ", exclude_categories=["Cs"])
tag_keys = st.from_regex(r"\A\+?([A-Za-z0-9][A-Za-z0-9.-]{0,8}/)?[A-Za-z0-9-]{1,10}\Z")
tag_values = st.none() | st.text(
    st.characters(exclude_characters="\0", exclude_categories=["Cs"]), min_size=1, max_size=20
)
# Any message the serialiser accepts, in the form the parser gives back: the command upper
# case, a tag without a value as None.
messages = st.builds(
    lambda command, middle, trailing, source, tags: Message(
        command, [*middle, *trailing], source, tags
    ),
    st.from_regex(r"\A([A-Za-z]{1,12}|[0-9]{3})\Z"),
    st.lists(
        st.text(_WORD, min_size=1, max_size=12).filter(lambda word: not word.startswith(":")),
        max_size=4,
    ),
    st.lists(st.text(_NO_FRAMING, max_size=40), max_size=1),
    st.none() | st.text(_WORD, min_size=1, max_size=30),
    st.dictionaries(tag_keys, tag_values, max_size=3),
)


@given(hostile_bytes)
def test_any_line_parses_or_is_refused_with_a_parse_error(raw: bytes) -> None:
    try:
        message = wire.parse(raw)
    except IrcParseError:
        return
    for text in (*message.params, message.source or "", message.command):
        assert not set(text) & set("\r\n\0")


@given(messages)
def test_a_message_serialises_to_one_line_that_parses_back_to_it(message: Message) -> None:
    line = wire.serialize(message)
    assert line.endswith(b"\r\n")
    assert not re.search(rb"[\r\n\0]", line[:-2])
    assert wire.parse(line) == message


@given(
    st.builds(
        Message,
        st.text(max_size=6) | st.sampled_from(["PRIVMSG", "001"]),
        st.lists(hostile_text, max_size=4),
        st.none() | hostile_text,
        st.dictionaries(hostile_text | tag_keys, st.none() | hostile_text, max_size=3),
    )
)
def test_a_message_from_untrusted_text_is_one_line_or_refused(message: Message) -> None:
    # What the serialiser cannot write as one line it refuses: never a second line.
    try:
        line = wire.serialize(message)
    except ValueError:
        return
    assert not re.search(rb"[\r\n\0]", line[:-2])
    assert wire.parse(line).params == message.params


@given(hostile_bytes)
def test_a_parsed_line_serialises_back_to_what_it_meant(raw: bytes) -> None:
    try:
        message = wire.parse(raw)
    except IrcParseError:
        return
    assert wire.parse(wire.serialize(message)) == message


@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_tag_values_survive_escaping(value: str) -> None:
    assert wire.unescape_tag_value(wire.escape_tag_value(value)) == value


def line_events(reader: IrcLineReader, reads: list[bytes]) -> list[object]:
    found: list[object] = []
    for read in reads:
        found += reader.receive_data(read)
    return found


@given(st.data(), hostile_bytes)
def test_the_reader_gives_the_same_lines_however_the_stream_is_cut(
    data: st.DataObject, raw: bytes
) -> None:
    whole = line_events(IrcLineReader(max_line=40, max_tag_data=28), [raw])
    cut = line_events(IrcLineReader(max_line=40, max_tag_data=28), data.draw(chunked(raw)))
    assert cut == whole
    for event in whole:
        assert isinstance(event, MessageReceived | MalformedLine | LineTooLong)


@given(st.integers(1, 8))
def test_the_reader_gives_up_on_64_kib_without_a_line_end(reads: int) -> None:
    reader = IrcLineReader()
    found = line_events(reader, [b"y" * (wire.MAX_UNTERMINATED_BYTES // reads + 1)] * reads)
    assert isinstance(found[-1], wire.BufferOverflow)
    assert reader.closed and reader.receive_data(b"PING x\r\n") == []


CAPS = ["server-time", "message-tags", "account-tag", "extended-join", "away-notify"]


def codec(caps: frozenset[str]) -> IrcCodec:
    irc = IrcCodec(Hub(), "threadchat", "10.0.0.1", "test")
    irc.caps = caps
    return irc


def lines_of(data: bytes) -> list[Message]:
    assert data.endswith(b"\r\n")
    raw_lines = data[:-2].split(b"\r\n")
    for raw in raw_lines:
        assert not re.search(rb"[\r\n\0]", raw)
    return [wire.parse(raw) for raw in raw_lines]


@given(any_event(), st.frozensets(st.sampled_from(CAPS)))
def test_the_codec_writes_any_event_as_whole_lines_or_not_at_all(
    event: events.Event, caps: frozenset[str]
) -> None:
    # Fields the hub would refuse included: the codec never raises and never splits a field
    # into a line of its own (what it cannot write, it logs and leaves out).
    data = codec(caps).encode(event)
    if data:
        lines_of(data)


nicks = st.from_regex(r"\A[a-z][a-z0-9]{0,11}\Z")
messages_in_rooms = st.builds(
    events.RoomMessage,
    room=st.from_regex(r"\A[a-z0-9_.-]{1,20}\Z"),
    sender=nicks,
    text=sendable_text | st.text(_NO_FRAMING, min_size=400, max_size=1500),
    kind=st.sampled_from([events.TEXT, events.ACTION, events.NOTICE]),
    account=st.none() | nicks,
)


@given(messages_in_rooms, st.frozensets(st.sampled_from(CAPS)))
def test_a_message_of_any_length_is_one_line_that_parses_back_to_it(
    message: events.RoomMessage, caps: frozenset[str]
) -> None:
    # Never split (Modern IRC allows longer lines from a server; native lines may be long).
    irc = codec(caps)
    data = irc.encode(message)
    assert data is not None
    (line,) = lines_of(data)
    assert line.command == ("NOTICE" if message.kind == events.NOTICE else "PRIVMSG")
    assert line.params[0] == "#" + message.room
    text = line.params[1]
    if message.kind == events.ACTION:
        assert text.startswith("\x01ACTION ") and text.endswith("\x01")
        text = text[len("\x01ACTION ") : -1]
    assert text == message.text
    # The shortcut for messages writes exactly what the general path does.
    assert data == irc._encode_general(message)


@given(instances(events.PrivateMessage, sendable_text), st.frozensets(st.sampled_from(CAPS)))
def test_the_chat_shortcut_matches_the_general_path(
    message: events.PrivateMessage, caps: frozenset[str]
) -> None:
    irc = codec(caps)
    shortcut = irc._encode_chat(message)
    if shortcut is not None:
        assert shortcut == irc._encode_general(message)


def test_a_long_blank_line_is_too_long_however_it_arrives() -> None:
    # Found by the property above: a line of spaces only was ignored when it came in one
    # read, but was a LineTooLong when a read ended in it (then it is dropped unseen).
    line = b" " * 100 + b"\r\n"
    whole = IrcLineReader(max_line=40, max_tag_data=28).receive_data(line)
    reader = IrcLineReader(max_line=40, max_tag_data=28)
    cut = reader.receive_data(line[:80]) + reader.receive_data(line[80:])
    assert whole == cut == [LineTooLong(102)]
    assert IrcLineReader().receive_data(b"   \r\n\r\n") == []


def test_a_tag_value_of_a_lone_backslash_is_no_value() -> None:
    # Found by fuzz_irc: `@label=\` unescaped to "" where an empty value parses as None, so
    # the message was not the one its own serialisation parses back to.
    message = wire.parse(b"@label=\\;+x=\\ PING a\r\n")
    assert message.tags == {"label": None, "+x": None}
    assert wire.parse(wire.serialize(message)) == message


@given(
    st.text(_WORD, min_size=0, max_size=12),
    st.sampled_from([*wire.Numeric, "privmsg", "9x9"]),
    st.text(max_size=12),
    st.lists(st.text(max_size=20), max_size=5),
)
def test_the_reply_shortcut_matches_the_general_path(
    server_name: str, numeric: str, target: str, params: list[str]
) -> None:
    # The welcome burst goes through `reply_line`; it must write what `reply` would, and
    # refuse (ValueError) whatever `reply` refuses: a CR, LF or NUL in any word, a space or
    # a leading ':' in a word before the last, an empty word before the last.
    try:
        expected: bytes | None = wire.reply(server_name, numeric, target, *params).to_bytes()
    except ValueError:
        expected = None
    try:
        shortcut: bytes | None = wire.reply_line(server_name, numeric, target, params)
    except ValueError:
        shortcut = None
    assert shortcut == expected
