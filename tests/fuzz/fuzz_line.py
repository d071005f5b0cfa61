"""Fuzz the native line framing and text mode: protocols/lineends.py, protocols/native/line.py.

Checks, for any bytes cut into any reads: the parser gives requests and nothing else; line
ends mean the same however the stream is cut; the framer gives each line once or drops it
whole, exactly as for the stream read at once. Run: python tests/fuzz/run.py line
"""

import re
import sys

import atheris
from budget import libfuzzer_argv


def cut(stream: bytes, size: int) -> list[bytes]:
    """`stream` in reads of `size` bytes, an empty read after each (a transport may feed one)."""
    if not size:
        return [stream]
    return [part for i in range(0, len(stream), size) for part in (stream[i : i + size], b"")]


# Only our code (and the libraries it parses with) is instrumented: instrumenting all it
# imports, the standard library included, multiplied the harness's start-up.
with atheris.instrument_imports(include=["threadchat"]):
    from threadchat.protocols.lineends import LineEnds
    from threadchat.protocols.native import requests
    from threadchat.protocols.native.line import (
        MAX_UNTERMINATED,
        LineFramer,
        LineProtocol,
        parse_first_line,
        parse_text_command,
    )


def test_one_input(data: bytes) -> None:
    # Byte 0: the line limit; byte 1: the read size (0: one read); then the stream.
    max_line = data[0] % 128 + 1 if data else 16
    whole = data[2:]
    reads = cut(whole, data[1] % 32 if len(data) > 1 else 0)

    ends = LineEnds()
    normalized = b"".join(ends.normalize(read) for read in reads)
    assert normalized == re.sub(rb"\r\n?", b"\n", whole), "line ends depend on the reads"

    if len(whole) < MAX_UNTERMINATED:
        framer, lines = LineFramer(max_line), []
        for read in reads:
            lines += framer.feed(read)
        *complete, rest = normalized.split(b"\n")
        expected = [line if len(line) <= max_line else None for line in complete]
        expected += [None] if len(rest) > max_line else []
        assert lines == expected, "the framer lost, split or joined a line"

    protocol = LineProtocol(max_line)
    for read in reads:
        for request in protocol.receive_data(read):
            assert isinstance(request, requests.Request)
            protocol.registered = True
    for line in whole.decode("utf-8", "replace").splitlines():
        assert isinstance(parse_text_command(line), requests.Request)
        assert isinstance(parse_first_line(line), requests.Request)


if __name__ == "__main__":
    atheris.Setup(libfuzzer_argv(sys.argv), test_one_input)
    atheris.Fuzz()
