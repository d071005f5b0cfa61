"""Fuzz IRC's wire format: protocols/irc/wire.py (the line reader, parser and serialiser).

Checks, for any bytes cut into any reads: the reader gives line events and nothing else, the
same however the stream is cut; every message it parses serialises to one line (no CR, LF
or NUL inside) that parses back to the same message. Run: python tests/fuzz/run.py irc
"""

import re
import sys

import atheris
from budget import libfuzzer_argv

# Only our code (and the libraries it parses with) is instrumented: instrumenting all it
# imports, the standard library included, multiplied the harness's start-up.
with atheris.instrument_imports(include=["threadchat"]):
    from threadchat.protocols.irc import wire


def test_one_input(data: bytes) -> None:
    # Byte 0: the read size; then the stream.
    size = data[0] % 32 + 1 if data else 1
    stream = data[1:]
    reads = [stream[i : i + size] for i in range(0, len(stream), size)]

    # Small limits, so that over-long lines and tags are reached by short inputs.
    whole = wire.IrcLineReader(max_line=64, max_tag_data=46).receive_data(stream)
    reader = wire.IrcLineReader(max_line=64, max_tag_data=46)
    cut = [event for read in reads for event in reader.receive_data(read)]
    assert cut == whole, "the reader's lines depend on the reads"

    for event in wire.IrcLineReader().receive_data(stream):
        if isinstance(event, wire.MessageReceived):
            line = wire.serialize(event.message)
            assert not re.search(rb"[\r\n\0]", line[:-2]), f"two lines: {line!r}"
            assert wire.parse(line) == event.message, f"{event.message!r} changed on the wire"
        else:
            assert isinstance(event, wire.MalformedLine | wire.LineTooLong | wire.BufferOverflow)


if __name__ == "__main__":
    atheris.Setup(libfuzzer_argv(sys.argv), test_one_input)
    atheris.Fuzz()
