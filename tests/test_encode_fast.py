"""The fast encoders of chat messages give exactly the bytes of the general paths they bypass.

Property-style: many generated inputs, a fixed seed so a failure reproduces, and the general
path (kept as a private function) as the reference.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import encode_bench
from threadchat.core import events
from threadchat.core.hub import User
from threadchat.protocols import utctime
from threadchat.protocols.irc import wire as irc_protocol
from threadchat.protocols.irc.codec import chat_line, chat_messages
from threadchat.protocols.irc.wire import Formatter
from threadchat.protocols.native import jsonlines

SEED = 20261125


def _timestamps(rng: random.Random, count: int) -> Iterator[float]:
    """Times that stress the rounding: random, near now, on and around ms/us boundaries."""
    fractions = (0.0, 0.0005, 0.0015, 0.1234565, 0.9994999, 0.9995, 0.9999994, 0.9999995, 0.9999999)
    for _ in range(count):
        yield rng.uniform(0, 253402300798)
        now = rng.uniform(1.7e9, 1.9e9)
        yield now
        yield math.nextafter(now, 0.0)
        yield math.nextafter(now, math.inf)
        # Below the last fast second, so that adding a fraction stays under the limit.
        second = rng.randrange(0, 253402300798)
        yield float(second)
        yield from (second + f for f in fractions)
        # Exactly half a microsecond (representable for small seconds): half-even rounding.
        yield rng.randrange(0, 2**20) + (rng.randrange(10**6) + 0.5) / 1e6
        yield rng.randrange(0, 2**31) + rng.randrange(10**6) / 1e6


EDGE_TIMES: list[float] = [
    0.0,
    5e-324,
    4.999e-7,
    5e-7,
    1.5e-6,
    0.0005,
    0.9999995,
    86399.9999995,
    951782399.9995,  # 2000-02-28T23:59:59: a leap day follows
    2**31 - 0.0000005,
    1e10 + 0.9999995,
    253402300798.9999,
    math.nextafter(253402300799.0, 0.0),  # the last float the fast path takes
]


def _reference_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def test_millis_matches_datetime_over_many_times() -> None:
    rng = random.Random(SEED)
    checked = 0
    for ts in [*EDGE_TIMES, *_timestamps(rng, 4000)]:
        fast = utctime.millis(ts)
        assert fast is not None, ts
        assert fast == _reference_iso(ts), ts
        assert fast == jsonlines._timestamp_general(ts), ts
        assert fast == irc_protocol._format_server_time_general(ts), ts
        checked += 1
    assert checked > 50_000


@pytest.mark.parametrize("ts", [0, 1, 1_795_608_000, 253402300798])
def test_millis_of_whole_seconds_as_int(ts: int) -> None:
    assert utctime.millis(ts) == _reference_iso(ts)


@pytest.mark.parametrize(
    "ts", [-0.5, -1.0, -86400.25, 253402300799.0, 253402300799.5, 1e12, math.nan, math.inf, True]
)
def test_times_outside_the_fast_range_still_format(ts: float) -> None:
    assert utctime.millis(ts) is None
    for fast, general in (
        (jsonlines.timestamp, jsonlines._timestamp_general),
        (irc_protocol.format_server_time, irc_protocol._format_server_time_general),
    ):
        try:
            expected: str | type[Exception] = general(ts)
        except (ValueError, OverflowError, OSError) as problem:
            expected = type(problem)
        if isinstance(expected, str):
            assert fast(ts) == expected
        else:
            with pytest.raises(expected):
                fast(ts)


def test_format_server_time_still_takes_datetimes() -> None:
    moment = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    assert irc_protocol.format_server_time(moment) == "2026-11-25T12:00:00.123Z"
    assert irc_protocol.format_server_time(moment.replace(tzinfo=None)) == (
        "2026-11-25T12:00:00.123Z"
    )


def test_the_second_cache_follows_the_time() -> None:
    # The same second, another second, then back: a stale cached prefix would show.
    assert utctime.millis(1_795_608_000.5) == "2026-11-25T12:00:00.500Z"
    assert utctime.millis(1_795_608_000.25) == "2026-11-25T12:00:00.250Z"
    assert utctime.millis(1_795_608_061.0) == "2026-11-25T12:01:01.000Z"
    assert utctime.millis(1_795_608_000.75) == "2026-11-25T12:00:00.750Z"


# -- JSON --------------------------------------------------------------------------------------

# Letters, spaces, what JSON escapes ('"', '\\', controls), what it passes through with
# ensure_ascii=False (accents, CJK, emoji, U+2028, combining marks, RTL), and IRC specials.
ALPHABET = (
    list("abcXYZ019 _-.:;#!@~")
    + list('"\\/\t\x01\x1f\x7f')
    + list("éßü中文😀👍🏽\u2028\u2029\u0301\u05d0\ufeff\x00")
)
KINDS = (events.TEXT, events.ACTION, events.NOTICE)


# IRC cannot carry NUL (nor CR or LF): those are added to a few texts only, so that most
# messages are ones the fast path must encode itself.
IRC_ALPHABET = [c for c in ALPHABET if c != "\x00"]


def _text(rng: random.Random, longest: int = 40, alphabet: list[str] = ALPHABET) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(longest + 1)))


def _chat_events(rng: random.Random, count: int) -> Iterator[events.Event]:
    times = _timestamps(rng, count)
    for _ in range(count):
        common = {
            "text": _text(rng, rng.choice((5, 40, 600))),
            "kind": rng.choice(KINDS),
            "account": rng.choice((None, "", _text(rng, 12))),
            "history": rng.random() < 0.3,
            "id": rng.choice((0, 1, rng.randrange(10**6), rng.randrange(2**62))),
            "ts": next(times),
        }
        if rng.random() < 0.5:
            yield events.RoomMessage(room=_text(rng, 12), sender=_text(rng, 12), **common)
        else:
            yield events.PrivateMessage(sender=_text(rng, 12), target=_text(rng, 12), **common)


def test_json_chat_lines_match_the_general_encoder() -> None:
    rng = random.Random(SEED)
    fast_taken = 0
    for event in _chat_events(rng, 5000):
        expected = jsonlines._encode_event_general(event)
        assert jsonlines.encode_event(event) == expected, event
        fast_taken += jsonlines._chat_line(event) == expected  # type: ignore[arg-type]
    # The shortcut, not the fallback, produced them: a fast path always refusing would pass above.
    assert fast_taken == 5000


@pytest.mark.parametrize(
    "event",
    [
        events.RoomMessage(room="r", sender="s", text="x", id=True),  # bool: JSON says true
        events.RoomMessage(room="r", sender="s", text="x", kind=None),  # type: ignore[arg-type]
        events.RoomMessage(room="r", sender=None, text="x"),  # type: ignore[arg-type]
        events.PrivateMessage(sender="s", target="t", text=7),  # type: ignore[arg-type]
        events.PrivateMessage(sender="s", target="t", text="x", ts=-1.5),
        events.PrivateMessage(sender="s", target="t", text="x", ts=1_795_608_000),
        events.RoomMessage(room="r", sender="s", text="x", history=1),  # type: ignore[arg-type]
    ],
)
def test_json_unusual_chat_events_fall_back_to_the_same_bytes(event: events.Event) -> None:
    assert jsonlines.encode_event(event) == jsonlines._encode_event_general(event)


def test_json_lone_surrogate_fails_as_before() -> None:
    event = events.RoomMessage(room="r", sender="s", text="bad \ud800 half")
    with pytest.raises(UnicodeEncodeError) as general:
        jsonlines._encode_event_general(event)
    with pytest.raises(UnicodeEncodeError) as fast:
        jsonlines.encode_event(event)
    assert str(fast.value) == str(general.value)


def test_json_other_events_are_unchanged() -> None:
    rng = random.Random(SEED)
    messages = tuple(_chat_events(rng, 5))
    page = events.HistoryPage(room="r", peer=None, messages=messages, more=True, ref=3)
    for event in (page, events.Joined(room="r", nick="n"), events.Ok(ref="x")):
        assert jsonlines.encode_event(event) == jsonlines._encode_event_general(event)


# -- IRC ---------------------------------------------------------------------------------------

# Every combination of the capabilities that change a chat line, plus two that do not.
TAG_CAPS = ("message-tags", "server-time", "account-tag", "batch", "echo-message")
CAP_SETS = [
    frozenset(c for bit, c in enumerate(TAG_CAPS) if mask >> bit & 1)
    for mask in range(2 ** len(TAG_CAPS))
]


def _outcome(encode: Callable[[events.Event], bytes | None], event: events.Event) -> object:
    """The bytes, or the exception, an encoder gives: both must match."""
    try:
        return encode(event)
    except Exception as problem:
        return (type(problem), str(problem))


def _irc_events(
    rng: random.Random, hubs: list[encode_bench.EncodeHub], count: int
) -> Iterator[events.Event]:
    nicks = ["alice", "Bob", "c_d", "x" * 30, "wéird"] * 4 + ["sp ace", ":colon", "", "nul\x00"]
    for hub in hubs:
        # Known IRC and native users (whose hosts are made safe), the rest unknown to the hub.
        owner = encode_bench.irc_connection(hub, frozenset())
        hub.users["alice"] = User(
            nick="alice", connections=(owner,), username="~al", host="10.0.0.1"
        )
        hub.users["bob"] = User(nick="Bob", connections=(object(),), host="::1")  # type: ignore[arg-type]
    times = _timestamps(rng, count)
    for _ in range(count):
        length = rng.choice((0, 1, 10, 40, 120, rng.randrange(380, 520), 700))
        text = _text(rng, length, IRC_ALPHABET)
        if rng.random() < 0.05:
            text += rng.choice(("\r", "\n", "\x00", "\ud800"))
        common = {
            "sender": rng.choice(nicks),
            "text": text,
            "kind": rng.choice(KINDS),
            "account": rng.choice((None, "", "alice", "a;b c\\d", "ünï", "nul\x00")),
            "history": rng.random() < 0.3,
            "id": rng.choice((1, rng.randrange(10**6), rng.randrange(2**62))),
            "ts": next(times)
            if rng.random() < 0.95
            else rng.choice((0.0, -1.5, 1e13, 1_795_608_000)),
        }
        if rng.random() < 0.5:
            room = rng.choice(("dev", "a.b-c_d", "dev", "ç", "sp ace", ""))
            yield events.RoomMessage(room=room, **common)
        else:
            target = rng.choice(("bob", "alice", "bob", "alice", ":x", "", "sp ace", "nul\x00"))
            yield events.PrivateMessage(target=target, **common)


# About 15 CPU-seconds on a quiet machine: the suite's 60 s per-test timeout is too tight when
# the two cores are shared, and a timeout here says nothing about the encoders.
@pytest.mark.timeout(240)
def test_irc_chat_lines_match_the_general_encoder_for_every_cap_set() -> None:
    rng = random.Random(SEED)
    hubs = [encode_bench.EncodeHub(keeps_history=True), encode_bench.EncodeHub(keeps_history=False)]
    conns = [encode_bench.irc_connection(hub, caps) for hub in hubs for caps in CAP_SETS]
    compared = fast = 0
    # 500 events x 64 connections: about 15 CPU-seconds (1,200 took over a minute on a busy
    # machine, past the suite's per-test timeout).
    for event in _irc_events(rng, hubs, 500):
        for conn in conns:
            assert _outcome(conn.encode, event) == _outcome(conn._encode_general, event), (
                event,
                conn.caps,
            )
            compared += 1
            fast += _outcome(conn._encode_chat, event) is not None
    assert compared == 500 * 64
    # Most of them were the fast path's own work, not the fallback's.
    assert fast > compared // 3


def test_irc_usual_messages_take_the_fast_path() -> None:
    # A fast path that always declined would pass the test above: check it answers itself.
    rng = random.Random(SEED)
    hub = encode_bench.EncodeHub(keeps_history=True)
    hub.users["alice"] = User(nick="alice", connections=(object(),), host="10.0.0.1")  # type: ignore[arg-type]
    for caps in CAP_SETS:
        conn = encode_bench.irc_connection(hub, caps)
        for _ in range(200):
            text = "".join(rng.choice("abc 😀:;\\é") for _ in range(rng.randrange(1, 120)))
            event = events.RoomMessage(
                room="dev",
                sender=rng.choice(("alice", "ghost")),
                text=text,
                kind=rng.choice(KINDS),
                account=rng.choice((None, "alice", "a;b c")),
                history=rng.random() < 0.5,
                ts=rng.uniform(1.7e9, 1.9e9),
            )
            fast = conn._encode_chat(event)
            assert fast is not None
            assert fast == conn._encode_general(event)


def test_irc_lines_past_512_bytes_stay_whole() -> None:
    # A message is never split (Modern IRC allows relaying it intact): around and past 512
    # bytes the fast path still answers, with the general path's one line. Multi-byte
    # characters make the byte count differ from the length.
    hub = encode_bench.EncodeHub(keeps_history=True)
    conns = [encode_bench.irc_connection(hub, caps) for caps in CAP_SETS]
    for size in (*range(420, 500, 7), 1500, 4000):
        for pad in ("a", "é", "😀"):
            for kind in KINDS:
                text = "x" * size + pad * 3
                event = events.PrivateMessage(sender="alice", target="bob", text=text, kind=kind)
                for conn in conns:
                    data = conn.encode(event)
                    assert data == conn._encode_general(event)
                    assert data is not None and data.count(b"\r\n") == 1
                    assert conn._encode_chat(event) == data


@pytest.mark.parametrize("msgid", [None, "", "42", "a;b c\\d", "x\x00y"])
@pytest.mark.parametrize("when", [None, 0.0, 1_795_608_000.1234, -5.0])
def test_chat_line_matches_chat_messages_and_formatter(msgid: str | None, when: float) -> None:
    # chat_line on its own, with tag values the transport never gives it (msgids are numbers).
    for caps in CAP_SETS:
        tags = ("account-tag" in caps, "message-tags" in caps, "server-time" in caps)
        for kind in KINDS:
            args = ("n!u@h", "#dev", "hi there", kind, "acc;ount", msgid)
            line = chat_line(*args, when, tags)  # type: ignore[arg-type]
            try:
                expected: object = b"".join(
                    Formatter(m, time=when).encode(caps) for m in chat_messages(*args)
                )
            except ValueError:
                expected = None  # the transport logs it and sends nothing
            if line is not None:
                assert line == expected
            else:
                # Declined only for what the general path must do: refuse, or format the time.
                assert expected is None or (tags[2] and when is not None and when < 0)


@pytest.mark.skipif(
    not Path("/usr/share/zoneinfo/right/UTC").exists() or not hasattr(time, "tzset"),
    reason="no leap-second time zone here",
)
def test_millis_under_a_leap_second_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # With TZ=right/UTC, gmtime counts leap seconds and says :60 for one; datetime says :59.
    monkeypatch.setenv("TZ", "right/UTC")
    time.tzset()
    try:
        for ts in (1483228825.5, 1483228826.25, 1483228827.75, 1795608000.5):
            assert utctime.millis(ts) == _reference_iso(ts), ts
    finally:
        monkeypatch.undo()
        time.tzset()


def test_encode_bench_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "encode.jsonl"
    monkeypatch.setattr(encode_bench, "RESULTS", results)
    monkeypatch.setattr("sys.argv", ["encode_bench", "--number", "50", "--repeat", "1"])
    encode_bench.main()
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["case"] for r in rows] == [name for name, *_ in encode_bench.cases()]
    assert all(r["fast_us"] > 0 and r["before_us"] > 0 for r in rows)
    # The swapped-in datetime formatting was put back.
    assert jsonlines.timestamp is not jsonlines._timestamp_general
