"""Properties of the native line framing and text mode (protocols/lineends.py,
protocols/native/line.py) for any bytes, cut into reads in any way."""

import dataclasses
import re

from hostile_input import FORBIDDEN, any_event, chunked, hostile_bytes, hostile_text
from hypothesis import given
from hypothesis import strategies as st

from threadchat.protocols.lineends import LineEnds
from threadchat.protocols.native import requests
from threadchat.protocols.native.line import (
    MAX_UNTERMINATED,
    LineFramer,
    LineProtocol,
    parse_first_line,
    parse_text_command,
)


def normalized(data: bytes) -> bytes:
    """What the line ends of `data` mean, read at once: CR LF, LF and a lone CR each end a line."""
    return re.sub(rb"\r\n?", b"\n", data)


@given(st.data(), hostile_bytes)
def test_line_ends_mean_the_same_however_the_stream_is_cut(data: st.DataObject, raw: bytes) -> None:
    ends = LineEnds()
    reads = data.draw(chunked(raw))
    assert b"".join(ends.normalize(read) for read in reads) == normalized(raw)


def test_an_empty_read_between_cr_and_lf_does_not_make_an_empty_line() -> None:
    # Found by the property above: an empty read forgot the CR that ended the last one, so its
    # LF then ended a second, empty line.
    ends = LineEnds()
    assert [ends.normalize(read) for read in (b"one\r", b"", b"\ntwo\n")] == [
        b"one\n",
        b"",
        b"two\n",
    ]


def framed(raw: bytes, max_line: int) -> list[bytes | None]:
    """The framer's contract, for a stream read at once: each complete line, or None when it
    is over `max_line` bytes; None for an unfinished line that is already over the limit."""
    *complete, rest = normalized(raw).split(b"\n")
    lines: list[bytes | None] = [line if len(line) <= max_line else None for line in complete]
    if len(rest) > max_line:
        lines.append(None)
    return lines


@given(st.data(), hostile_bytes, st.integers(1, 64))
def test_the_framer_gives_each_line_once_or_drops_it_whole(
    data: st.DataObject, raw: bytes, max_line: int
) -> None:
    assert len(raw) < MAX_UNTERMINATED  # longer streams may be cut off (fatal): below
    framer = LineFramer(max_line)
    lines = []
    for read in data.draw(chunked(raw)):
        lines += framer.feed(read)
    assert lines == framed(raw, max_line)
    assert not framer.fatal


@given(st.integers(1, 8), st.sampled_from([b"x", b"\r", b"ab\r\ncd"]))
def test_a_stream_without_a_line_end_for_64_kib_is_fatal(reads: int, head: bytes) -> None:
    framer = LineFramer(100)
    framer.feed(head)
    size = MAX_UNTERMINATED // reads + 1
    for _ in range(reads):
        framer.feed(b"y" * size)
    assert framer.fatal
    assert framer.feed(b"\nmore\n") == []


# Every way a line can be refused; each becomes an error reply to its sender alone.
INVALID_CODES = {
    "line_too_long",
    "bad_encoding",
    "bad_json",
    "bad_request",
    "unknown_type",
    "unknown_command",
}


@given(st.data(), hostile_bytes, st.booleans())
def test_any_bytes_give_requests_and_never_an_exception(
    data: st.DataObject, raw: bytes, json_first: bool
) -> None:
    protocol = LineProtocol(max_line=64)
    if json_first:
        list(protocol.receive_data(b'{"type":"hello","name":"x"}\n'))
    for read in data.draw(chunked(raw)):
        for request in protocol.receive_data(read):
            assert isinstance(request, requests.Request)
            # As the transport does: the first accepted line registers the user.
            protocol.registered = True
            if isinstance(request, requests.Invalid):
                assert request.code in INVALID_CODES


def string_fields(request: requests.Request) -> list[str]:
    values = [getattr(request, field.name) for field in dataclasses.fields(request)]
    return [value for value in values if isinstance(value, str)]


@given(hostile_text)
def test_a_text_mode_line_is_a_request_whose_fields_come_from_that_line(line: str) -> None:
    # One line in, one request out: no field can hold a line end that the line did not.
    for request in (parse_text_command(line), parse_first_line(line)):
        assert isinstance(request, requests.Request)
        for value in string_fields(request):
            for forbidden in FORBIDDEN:
                if forbidden not in line:
                    assert forbidden not in value


@given(any_event(), st.booleans())
def test_text_mode_shows_any_event_as_whole_printable_lines(event: object, several: bool) -> None:
    # Whatever another protocol let through, a terminal behind nc gets no control character:
    # no escape sequence, no CR that would overwrite a line, no NUL.
    data = LineProtocol().encode(event, several)  # type: ignore[arg-type]
    if data is None:
        return
    assert data.endswith(b"\n")
    text = data.decode("utf-8")
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]", text)
