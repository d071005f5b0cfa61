"""The sans-I/O parts of the native protocol, driven in memory."""

import doctest
import json

from threadchat.core import events
from threadchat.core.flood import TokenBucket
from threadchat.protocols import lineends
from threadchat.protocols.native import jsonlines, line, requests
from threadchat.protocols.native.line import MAX_UNTERMINATED, LineFramer, LineProtocol, render_text


def test_doctests() -> None:
    for module in (line, lineends):
        result = doctest.testmod(module)
        assert result.attempted > 0
        assert result.failed == 0


def test_framer_splits_lf_and_crlf_across_reads() -> None:
    framer = LineFramer(max_line=10)
    assert framer.feed(b"one\r\ntw") == [b"one"]
    assert framer.feed(b"o\nthree\n") == [b"two", b"three"]


def test_framer_ends_lines_at_a_lone_cr() -> None:
    framer = LineFramer(max_line=10)
    assert framer.feed(b"one\rtwo\r") == [b"one", b"two"]
    # CR LF split across two reads is one line end, not a line and an empty one.
    assert framer.feed(b"\nthree\r\nfour\n\r") == [b"three", b"four", b""]
    assert framer.feed(b"five\r\r\n") == [b"five", b""]


def test_framer_ends_an_overlong_line_at_a_lone_cr() -> None:
    framer = LineFramer(max_line=4)
    assert framer.feed(b"12345") == [None]
    assert framer.feed(b"6\rok\r") == [b"ok"]
    assert not framer.fatal


def test_framer_drops_overlong_line_once_and_recovers() -> None:
    framer = LineFramer(max_line=4)
    assert framer.feed(b"12345") == [None]
    assert framer.feed(b"678") == []
    assert framer.feed(b"9\nok\n") == [b"ok"]
    assert not framer.fatal


def test_framer_is_fatal_after_64k_without_newline() -> None:
    framer = LineFramer(max_line=4096)
    for _ in range(MAX_UNTERMINATED // 4096):
        framer.feed(b"x" * 4096)
    assert not framer.fatal
    framer.feed(b"x")
    assert framer.fatal


def test_first_line_picks_json_mode() -> None:
    protocol = LineProtocol()
    [hello] = protocol.receive_data(b'{"type":"hello","name":"bot","ref":1}\n')
    assert hello == requests.Hello(name="bot", ref=1)
    assert protocol.mode == "json"
    data = protocol.encode(events.RoomMessage(room="lobby", sender="a", text="hi", id=5, ts=0.0))
    assert data is not None
    assert json.loads(data) == {
        "type": "message",
        "room": "lobby",
        "from": "a",
        "text": "hi",
        "action": False,
        "msgid": 5,
        "id": 5,
        "ts": "1970-01-01T00:00:00.000Z",
    }


def test_text_rendering_strips_control_characters_from_other_protocols() -> None:
    protocol = LineProtocol()
    list(protocol.receive_data(b"alice\n"))
    message = events.RoomMessage(room="lobby", sender="ircuser", text="\x1b[31mred", id=0xA3F)
    assert protocol.encode(message) == "ircuser: \ufffd[31mred  #a3f\n".encode()


def test_room_shown_only_for_users_in_several_rooms() -> None:
    message = events.RoomMessage(room="dev", sender="bob", text="hi", id=0x1A3F)
    assert render_text(message, several_rooms=False) == "bob: hi  #a3f"
    assert render_text(message, several_rooms=True) == "[dev] bob: hi  #a3f"


def test_json_requests_are_validated() -> None:
    assert jsonlines.parse_line("[1]") == requests.Invalid(
        "bad_request", "each line must be a JSON object"
    )
    assert jsonlines.parse_line('{"type":"join"}').code == "bad_request"  # type: ignore[attr-defined]
    assert jsonlines.parse_line('{"type":"say","text":"x","ref":true}').code == "bad_request"  # type: ignore[attr-defined]
    deep = "[" * 5000 + "]" * 5000
    assert jsonlines.parse_line(deep).code == "bad_json"  # type: ignore[attr-defined]


def test_token_bucket_allows_burst_then_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.delay() for _ in range(3)] == [0, 0, 0]
    assert bucket.delay() == 0.1
    now[0] = 1.0
    assert bucket.delay() == 0
    assert not TokenBucket(rate=0, burst=3).enabled


def test_token_bucket_clock_going_backwards_costs_nothing() -> None:
    now = [5.0]
    bucket = TokenBucket(rate=10, burst=1, clock=lambda: now[0])
    now[0] = 4.0
    assert bucket.delay() == 0
    assert bucket.allow(now=4.0, cost=0.5) is False


def test_text_mode_names_every_mode_of_the_core_in_words() -> None:
    # Each mode the core knows has its own words in text mode (a new one must be given
    # some); none is shown by its bare core name or fails to render.
    from threadchat.core.modes import (
        MemberStatus,
        ModeChange,
        RoomFlag,
        RoomList,
        RoomSetting,
        UserFlag,
    )

    for kind in (RoomFlag, RoomSetting, RoomList, MemberStatus, UserFlag):
        for mode in kind:
            for add in (True, False):
                room = None if kind is UserFlag else "dev"
                event = events.ModeChanged(
                    by="alice", changes=(ModeChange(add, mode, "bob"),), room=room
                )
                text = render_text(event, several_rooms=False)
                assert text is not None and text.startswith("--- ")
                assert f"set {mode.value.replace('_', ' ')}" not in text, (mode, text)
