"""Fuzz a real hub through real sessions: what one user sends never harms another.

mallory (tests/memory_hub.py) speaks text mode, JSON mode, IRC, or UDP's JSON objects, as
the first byte chooses; the rest is what she sends, cut into reads. Checks: no session
raises; no CR, LF, NUL or lone surrogate reaches the three observers (one per protocol) in
any field of any event, and every line they receive is whole. Run: python tests/fuzz/run.py hub
"""

import os
import sys

import atheris
from budget import libfuzzer_argv

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Only our code (and the libraries it parses with) is instrumented: instrumenting all it
# imports, the standard library included, multiplied the harness's start-up.
with atheris.instrument_imports(include=["threadchat", "memory_hub"]):
    from memory_hub import attack, check_everyone_is_safe, open_room

PROTOCOLS = ("text", "json", "irc", "udp")


def test_one_input(data: bytes) -> None:
    # Byte 0: mallory's protocol and read size; then what she sends.
    choice = data[0] if data else 0
    protocol = PROTOCOLS[choice % len(PROTOCOLS)]
    stream = data[1:]
    if protocol == "udp":
        reads = stream.split(b"\n")  # one JSON object per datagram
    else:
        size = choice // len(PROTOCOLS) or len(stream) or 1
        reads = [stream[i : i + size] for i in range(0, len(stream), size)]
    room = open_room("json" if protocol == "udp" else protocol)
    attack(room, protocol, reads)
    check_everyone_is_safe(room)


if __name__ == "__main__":
    atheris.Setup(libfuzzer_argv(sys.argv), test_one_input)
    atheris.Fuzz()
