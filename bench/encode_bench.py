"""Micro-benchmark of encoding one relayed chat message: general path against fast path.

Fan-out encodes each room message once per codec group (JSON, and each IRC capability set), so
these microseconds are paid per message under the GIL. Three columns per case:

- before: the general encoder with times formatted by datetime, i.e. the code before the fast
  paths (`jsonlines.timestamp` and `irc.format_server_time` swapped back for the run);
- general: the general encoder as it is now (fast time formatting only);
- fast: what `encode_event` / `IrcCodec.encode` now do for a message.

Single thread, no sockets; the minimum of several repeats is kept, which filters out most of
the noise of a busy machine. Prints a table and appends one JSON line per case to
bench/results/encode.jsonl.

    python -m bench.encode_bench [--number 20000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from threadchat.core import events
from threadchat.core.hub import User
from threadchat.protocols.irc import wire as irc_protocol
from threadchat.protocols.irc.codec import IrcCodec
from threadchat.protocols.native import jsonlines

RESULTS = Path(__file__).resolve().parent / "results" / "encode.jsonl"
TEXT = "a typical chat line of about sixty characters, give or take."
# Capability sets of typical IRC clients: none (old clients, nc), server-time only, and what
# weechat or irssi with IRCv3 enable.
IRC_CAP_SETS: list[tuple[str, frozenset[str]]] = [
    ("irc no caps", frozenset()),
    ("irc server-time", frozenset({"server-time"})),
    ("irc all tags", frozenset({"server-time", "message-tags", "account-tag", "batch"})),
]


class EncodeHub:
    """What encoding asks of the hub: who a nick is, and whether history is kept (then
    messages carry a msgid)."""

    def __init__(self, keeps_history: bool = True) -> None:
        self.history = object() if keeps_history else None
        self.users: dict[str, User] = {}

    def user_unlocked(self, nick: str) -> User | None:
        return self.users.get(nick.lower())

    def codec_changed(self, user: User) -> None:
        pass


def irc_connection(hub: EncodeHub, caps: frozenset[str]) -> IrcCodec:
    """What an IRC connection encodes with (no socket, no session: encoding needs neither)."""
    codec = IrcCodec(hub, server_name="threadchat", host="127.0.0.1", label="bench")
    codec.caps = caps
    return codec


@contextmanager
def datetime_times() -> Iterator[None]:
    """Format times the way they were formatted before the fast paths (through datetime)."""
    saved = jsonlines.timestamp, irc_protocol.format_server_time
    jsonlines.timestamp = jsonlines._timestamp_general
    irc_protocol.format_server_time = irc_protocol._format_server_time_general
    try:
        yield
    finally:
        jsonlines.timestamp, irc_protocol.format_server_time = saved


def per_call_us(encode: Callable[[events.Event], object], cases: list[events.Event],
                number: int, repeat: int) -> float:  # fmt: skip
    """Microseconds per encode, cycling through `cases` (minimum over `repeat` runs)."""
    rounds = max(1, number // len(cases))

    def run() -> None:
        for _ in range(rounds):
            for event in cases:
                encode(event)

    best = min(timeit.repeat(run, number=1, repeat=repeat))
    return best / (rounds * len(cases)) * 1e6


def room_message(**fields: object) -> events.RoomMessage:
    return events.RoomMessage(room="bench", sender="user7", text=TEXT, account="user7", **fields)  # type: ignore[arg-type]


def cases() -> list[tuple[str, Callable[[events.Event], object], Callable, list[events.Event]]]:
    """(name, general encoder, fast encoder, events) for every measured case."""
    live = [room_message()]
    # History replay: stored messages of distinct seconds, so no formatted second is reused.
    replay = [room_message(history=True, ts=1_795_608_000.0 + 61.123 * n) for n in range(500)]
    out: list[tuple[str, Callable[[events.Event], object], Callable, list[events.Event]]] = [
        ("json message", jsonlines._encode_event_general, jsonlines.encode_event, live),
        ("json replay", jsonlines._encode_event_general, jsonlines.encode_event, replay),
    ]
    hub = EncodeHub()
    sender = irc_connection(hub, frozenset())
    user7 = User(nick="user7", connections=(sender,), username="~u7", host="10.0.0.7")  # type: ignore[arg-type]
    hub.users["user7"] = user7
    for name, caps in IRC_CAP_SETS:
        conn = irc_connection(hub, caps)
        out.append((name, conn._encode_general, conn.encode, live))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="encodes per repeat")
    parser.add_argument("--repeat", type=int, default=7, help="repeats; the fastest is kept")
    args = parser.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    header = f"{'case':<18}{'before us':>11}{'general us':>12}{'fast us':>10}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    with RESULTS.open("a") as out:
        for name, general, fast, events_ in cases():
            for event in events_:
                assert fast(event) == general(event), f"{name}: fast path differs"
            with datetime_times():
                before = per_call_us(general, events_, args.number, args.repeat)
            now = per_call_us(general, events_, args.number, args.repeat)
            quick = per_call_us(fast, events_, args.number, args.repeat)
            r = {
                "bench": "encode",
                "case": name,
                "bytes": len(fast(events_[0]) or b""),
                "before_us": round(before, 3),
                "general_us": round(now, 3),
                "fast_us": round(quick, 3),
                "speedup": round(before / quick, 2),
                "number": args.number,
                "repeat": args.repeat,
                "python": platform.python_version(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            out.write(json.dumps(r) + "\n")
            out.flush()
            print(
                f"{name:<18}{r['before_us']:>11}{r['general_us']:>12}{r['fast_us']:>10}"
                f"{r['speedup']:>9}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
