"""The terminal client: rendering and command translation in memory, the program end to end."""

import contextlib
import json
import os
import pty
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import WAIT, JsonClient

from threadchat.app.server import Server
from threadchat.client import render
from threadchat.client.chat import ChatClient, holds_password
from threadchat.client.transport import AddressError, parse_address
from threadchat.core.history import Ref
from threadchat.protocols.native import jsonlines, requests

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TS = "2026-11-25T12:34:56.789Z"
LOCAL_HHMM = datetime(2026, 11, 25, 12, 34, 56, tzinfo=UTC).astimezone().strftime("%H:%M")
EVIL = "\x1b]0;owned\x07\x1b[2J\x9b31m\x00\r\n"


def plain(event: dict[str, Any], me: str | None = "alice", room: str | None = "lobby") -> list[str]:
    lines = render.render_event(event, me=me, current_room=room, now=NOW)
    return [render.to_plain(line) for line in lines]


# -- render ------------------------------------------------------------------------------------


def test_message_shows_local_time_name_and_text() -> None:
    event = {"type": "message", "room": "lobby", "from": "bob", "text": "hi", "ts": TS}
    assert plain(event) == [f"{LOCAL_HHMM} <bob> hi"]


def test_message_in_another_room_names_the_room() -> None:
    event = {"type": "message", "room": "dev", "from": "bob", "text": "hi", "ts": TS}
    assert plain(event) == [f"{LOCAL_HHMM} [dev] <bob> hi"]
    assert plain(event, room="DEV") == [f"{LOCAL_HHMM} <bob> hi"]


def test_actions_notices_and_private_messages() -> None:
    base = {"type": "message", "room": "lobby", "from": "bob", "text": "waves", "ts": TS}
    assert plain({**base, "action": True}) == [f"{LOCAL_HHMM} * bob waves"]
    assert plain({**base, "notice": True}) == [f"{LOCAL_HHMM} -bob- waves"]
    private = {"type": "private", "from": "bob", "to": "alice", "text": "psst", "ts": TS}
    assert plain(private) == [f"{LOCAL_HHMM} [private] <bob> psst"]
    mine = {**private, "from": "Alice", "to": "bob"}
    assert plain(mine) == [f"{LOCAL_HHMM} [private to bob] <Alice> psst"]


def test_room_and_server_events() -> None:
    cases = [
        ({"type": "join", "room": "dev", "name": "bob"}, ["--> bob joined dev"]),
        (
            {"type": "leave", "room": "dev", "name": "bob", "reason": "bye"},
            ["<-- bob left dev (bye)"],
        ),
        ({"type": "quit", "name": "bob", "reason": ""}, ["<-- bob quit"]),
        ({"type": "nick", "old": "bob", "new": "rob"}, ["--- bob is now known as rob"]),
        ({"type": "topic", "room": "dev", "topic": "", "by": ""}, ["--- dev has no topic"]),
        (
            {"type": "topic", "room": "dev", "topic": "tests", "by": "bob"},
            ["--- topic of dev: tests (set by bob)"],
        ),
        ({"type": "who", "room": "dev", "members": ["a", "b"]}, ["--- in dev: a, b"]),
        (
            {"type": "rooms", "rooms": [{"name": "dev", "members": 1, "topic": "x"}]},
            ["--- dev (1 member): x"],
        ),
        ({"type": "rooms", "rooms": []}, ["--- there are no rooms; /join ROOM creates one"]),
        ({"type": "notice", "text": "one\ntwo"}, ["--- one", "--- two"]),
        ({"type": "error", "code": "x", "message": "no"}, ["!!! no"]),
        ({"type": "ok", "ref": 1}, []),
        ({"type": "ping", "token": "t"}, []),
        ({"type": "future-thing"}, []),
    ]
    for event, expected in cases:
        assert plain({**event, "ts": TS}) == [f"{LOCAL_HHMM} {line}" for line in expected]


def test_missing_or_bad_timestamp_uses_now() -> None:
    hhmm = NOW.astimezone().strftime("%H:%M")
    assert plain({"type": "notice", "text": "x"}) == [f"{hhmm} --- x"]
    assert plain({"type": "notice", "text": "x", "ts": "yesterday"}) == [f"{hhmm} --- x"]


def test_controls_from_the_wire_never_reach_the_terminal() -> None:
    events = [
        {"type": "message", "room": EVIL, "from": EVIL, "text": EVIL, "action": True},
        {"type": "private", "from": EVIL, "to": EVIL, "text": EVIL},
        {"type": "join", "room": EVIL, "name": EVIL},
        {"type": "leave", "room": EVIL, "name": EVIL, "reason": EVIL},
        {"type": "quit", "name": EVIL, "reason": EVIL},
        {"type": "nick", "old": EVIL, "new": EVIL},
        {"type": "topic", "room": EVIL, "topic": EVIL, "by": EVIL},
        {"type": "who", "room": EVIL, "members": [EVIL, 3, None]},
        {"type": "rooms", "rooms": [{"name": EVIL, "members": EVIL, "topic": EVIL}, "x"]},
        {"type": "welcome", "name": EVIL, "server": EVIL},
        {"type": "notice", "text": EVIL},
        {"type": "error", "message": EVIL},
    ]
    for event in events:
        lines = render.render_event({**event, "ts": EVIL}, me=EVIL, current_room=None, now=NOW)
        assert lines, event
        for line in lines:
            text = render.to_plain(line)
            assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]", text), (event, text)
            assert "owned" in text or event["type"] in ("who", "rooms", "error", "notice")
            # In colour, the only escapes are the client's own colour codes.
            coloured = re.sub(r"\x1b\[[0-9;]*m", "", render.to_ansi(line))
            assert coloured == text


def test_non_text_fields_do_not_break_rendering() -> None:
    event = {"type": "message", "room": ["x"], "from": {"a": 1}, "text": None, "action": "yes"}
    assert plain(event) == [f"{NOW.astimezone():%H:%M} [] <> "]


def test_name_colours_are_stable_and_case_insensitive() -> None:
    assert render.nick_style("Alice") == render.nick_style("alice")
    styles = {render.nick_style(f"user{i}") for i in range(50)}
    assert len(styles) > 5
    # Not salted per process: a known value.
    assert (
        render.nick_style("alice")
        == render.nick_style("ALICE")
        == "nick:" + str(__import__("zlib").crc32(b"alice") % len(render.NICK_COLOURS))
    )
    line = render.render_event(
        {"type": "join", "room": "x", "name": "bob"}, me=None, current_room=None, now=NOW
    )[0]
    code = render.NICK_COLOURS[int(render.nick_style("bob").split(":")[1])]
    assert f"\x1b[{code}mbob\x1b[0m" in render.to_ansi(line)


# Yesterday (relative to NOW) and the local forms the client shows for it.
OLD_TS = "2026-11-24T08:15:00.000Z"
OLD_LOCAL = datetime(2026, 11, 24, 8, 15, tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def stored(text: str, msgid: int, ts: str = OLD_TS, **fields: Any) -> dict[str, Any]:
    event = {"type": "message", "room": "dev", "from": "bob", "text": text, "action": False}
    return {**event, "id": msgid, "ts": ts, "history": True, **fields}


def test_history_messages_show_their_own_date_and_are_marked_and_dimmed() -> None:
    assert plain(stored("old news", 7)) == [f"{OLD_LOCAL} (history) [dev] <bob> old news"]
    today = plain(stored("earlier", 8, ts=TS), room="dev")
    assert today == [f"{LOCAL_HHMM} (history) <bob> earlier"]
    private = stored("psst", 9, type="private", to="alice")
    assert plain(private) == [f"{OLD_LOCAL} (history) [private] <bob> psst"]
    line = render.render_event(stored("x", 1), me="alice", current_room="dev", now=NOW)[0]
    code = render.NICK_COLOURS[int(render.nick_style("bob").split(":")[1])]
    coloured = render.to_ansi(line)
    assert f"\x1b[2;{code}mbob\x1b[0m" in coloured  # dimmed, still in bob's colour
    assert re.sub(r"\x1b\[2(;[0-9]+)?m[^\x1b]*\x1b\[0m", "", coloured) == ""  # all dimmed
    # A live message is not marked.
    assert "(history)" not in plain({**stored("x", 1), "history": False})[0]


def test_history_page_is_shown_oldest_first_with_a_hint_when_more_exist() -> None:
    page = {
        "type": "history",
        "room": "dev",
        "messages": [stored("second", 12), stored("first", 11)],
        "more": True,
        "ts": TS,
    }
    assert plain(page) == [
        f"{LOCAL_HHMM} --- history of dev:",
        f"{OLD_LOCAL} (history) [dev] <bob> first",
        f"{OLD_LOCAL} (history) [dev] <bob> second",
        f"{LOCAL_HHMM} --- /history more shows older messages",
    ]
    last = {**page, "more": False, "messages": [stored("only", 3)]}
    assert plain(last)[-1].endswith("<bob> only")
    empty = {"type": "history", "with": "bob", "messages": [], "more": False, "ts": TS}
    assert plain(empty) == [f"{LOCAL_HHMM} --- no (more) history in your conversation with bob"]


def test_accounts_moderation_and_other_events() -> None:
    cases = [
        ({"type": "logged_in", "account": "alice"}, ["--- you are logged in as alice"]),
        (
            {"type": "mode", "room": "dev", "by": "alice", "changes": "+o", "args": ["bob"]},
            ["--- alice made bob an operator in dev"],
        ),
        (
            {
                "type": "mode",
                "room": "dev",
                "by": "alice",
                "changes": "+b-o",
                "args": ["~a:x", "y"],
            },
            ["--- alice banned ~a:x, took operator status from y in dev"],
        ),
        (
            {"type": "mode", "room": "dev", "by": "alice", "changes": "-t", "args": []},
            ["--- alice unlocked the topic in dev"],
        ),
        (
            {"type": "mode", "room": "dev", "by": "alice", "changes": "+k", "args": ["key"]},
            ["--- alice sets mode +k key on dev"],
        ),
        (
            {"type": "mode", "name": "alice", "by": "alice", "changes": "+i", "args": []},
            ["--- alice sets mode +i on alice"],
        ),
        (
            {"type": "moderation", "room": "dev", "by": "alice", "action": "mute", "target": "b"},
            ["--- alice muted b in dev"],
        ),
        ({"type": "away", "name": "bob", "away": "lunch"}, ["--- bob is away: lunch"]),
        ({"type": "away", "name": "bob", "away": None}, ["--- bob is back"]),
        (
            {"type": "invite", "room": "dev", "name": "alice", "by": "bob"},
            ["--- bob invites you to dev (/join dev)"],
        ),
        ({"type": "wallops", "from": "root", "text": "reboot"}, ["--- wallops from root: reboot"]),
        (
            {"type": "error", "code": "not_saved", "message": "message not saved: disk full"},
            ["!!! message not saved: disk full"],
        ),
    ]
    for event, expected in cases:
        assert plain({**event, "ts": TS}) == [f"{LOCAL_HHMM} {line}" for line in expected]


def test_controls_in_the_new_events_never_reach_the_terminal() -> None:
    events = [
        stored(EVIL, 1, ts=EVIL, room=EVIL, **{"from": EVIL}),
        {"type": "history", "room": EVIL, "messages": [stored(EVIL, 2, room=EVIL)], "more": True},
        {"type": "history", "with": EVIL, "messages": [EVIL, None], "more": EVIL},
        {"type": "logged_in", "account": EVIL},
        {"type": "mode", "room": EVIL, "by": EVIL, "changes": EVIL, "args": [EVIL, 1]},
        {"type": "mode", "room": EVIL, "by": EVIL, "changes": "+o", "args": [EVIL]},
        {"type": "mode", "name": EVIL, "by": EVIL, "changes": EVIL, "args": EVIL},
        {"type": "moderation", "room": EVIL, "by": EVIL, "action": EVIL, "target": EVIL},
        {"type": "away", "name": EVIL, "away": EVIL},
        {"type": "invite", "room": EVIL, "name": EVIL, "by": EVIL},
        {"type": "wallops", "from": EVIL, "text": EVIL},
    ]
    for event in events:
        lines = render.render_event({"ts": EVIL, **event}, me=EVIL, current_room=None, now=NOW)
        assert lines, event
        for line in lines:
            text = render.to_plain(line)
            assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]", text), (event, text)
            coloured = re.sub(r"\x1b\[[0-9;]*m", "", render.to_ansi(line))
            assert coloured == text


# -- request_to_dict, addresses ------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        requests.Hello(name="alice", ref=1),
        requests.Say(text="hi", room="dev", action=True),
        requests.Say(text="hi"),
        requests.SendPrivate(target="bob", text="psst", ref="r"),
        requests.JoinRoom(room="dev"),
        requests.LeaveRoom(room="dev", reason="bye"),
        requests.LeaveRoom(),
        requests.ChangeNick(name="rob"),
        requests.Topic(room="dev"),
        requests.Topic(room="dev", topic="t"),
        requests.ListRooms(),
        requests.Who(room="dev"),
        requests.Help(),
        requests.ClientPing(token="x"),
        requests.ClientPong(token="x"),
        requests.QuitRequest(reason="bye"),
        requests.Hello(name="alice", password="secret-pw"),
        requests.HistoryRequest(room="dev", limit=20, ref=3),
        requests.HistoryRequest(peer="bob", before=Ref.msgid(41)),
        requests.HistoryRequest(after=Ref.at(1_790_000_000_000), before=Ref.at(1_790_000_001_000)),
        requests.Register(password="secret-pw"),
        requests.Login(name="alice", password="secret-pw"),
        requests.ChangePassword(old="secret-pw", new="better-pw"),
        requests.Moderate(action="kick", target="bob", room="dev", reason="spam"),
        requests.Moderate(action="ban", target="~a:bob"),
        requests.TopicLock(locked=False, room="dev"),
        requests.TopicLock(locked=True),
    ],
)
def test_request_to_dict_is_the_inverse_of_parse_request(request_: requests.Request) -> None:
    body = jsonlines.request_to_dict(request_)
    assert body is not None
    assert jsonlines.parse_request(json.loads(json.dumps(body))) == request_


def test_request_to_dict_has_nothing_for_invalid_or_text_mode_only() -> None:
    assert jsonlines.request_to_dict(requests.Invalid("x", "y")) is None
    assert jsonlines.request_to_dict(requests.HistoryRequest(more=True)) is None


def test_parse_address() -> None:
    assert parse_address("") == ("127.0.0.1", 7000)
    assert parse_address("example.org") == ("example.org", 7000)
    assert parse_address("localhost:7001") == ("localhost", 7001)
    assert parse_address(":7002") == ("127.0.0.1", 7002)
    assert parse_address("[::1]:7003") == ("::1", 7003)
    assert parse_address("[::1]") == ("::1", 7000)
    for bad in ("host:port", "host:0", "host:70000", "[::1", "[::1]x"):
        with pytest.raises(AddressError):
            parse_address(bad)


# -- ChatClient in memory ------------------------------------------------------------------


class Harness:
    """A ChatClient whose requests are recorded and whose ok/error replies come back at once."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.shown: list[str] = []
        self.refuse = refuse or {}
        self.client = ChatClient(self.send, self.show, clock=lambda: NOW)

    def send(self, obj: dict[str, Any]) -> bool:
        self.sent.append(obj)
        if "ref" in obj:
            if obj["type"] in self.refuse:
                reply = {"type": "error", "code": "x", "message": self.refuse[obj["type"]]}
                self.client.handle_event({**reply, "ref": obj["ref"]})
            else:
                self.echo_server(obj)
                self.client.handle_event({"type": "ok", "ref": obj["ref"]})
        return True

    def echo_server(self, obj: dict[str, Any]) -> None:
        me = self.client.me
        if obj["type"] == "join":
            self.client.handle_event({"type": "join", "room": obj["room"], "name": me})
        elif obj["type"] == "leave":
            self.client.handle_event({"type": "leave", "room": obj["room"], "name": me})
        elif obj["type"] == "nick":
            self.client.handle_event({"type": "nick", "old": me, "new": obj["name"]})

    def show(self, lines: list[render.Line]) -> None:
        self.shown += [render.to_plain(line)[6:] for line in lines]  # without "HH:MM "

    def register(self, name: str = "alice") -> None:
        self.client.handle_event({"type": "welcome", "name": name, "server": "s"})
        self.client.handle_event({"type": "join", "room": "lobby", "name": name})
        self.sent.clear()
        self.shown.clear()

    def types(self, *lines: str) -> None:
        for line in lines:
            self.client.handle_input(line)


def test_plain_lines_go_to_the_current_room_and_are_shown() -> None:
    h = Harness()
    h.register()
    assert h.client.prompt_text() == "[lobby] alice> "
    h.types("hello", "//slash", "/me waves", "   ")
    assert h.sent == [
        {"type": "say", "room": "lobby", "text": "hello", "action": False},
        {"type": "say", "room": "lobby", "text": "/slash", "action": False},
        {"type": "say", "room": "lobby", "text": "waves", "action": True},
    ]
    assert h.shown == ["<alice> hello", "<alice> /slash", "* alice waves"]


def test_join_leave_and_nick_follow_the_server() -> None:
    h = Harness()
    h.register()
    h.types("/join #dev", "here")
    assert h.client.current_room == "dev"
    assert h.sent[-1] == {"type": "say", "room": "dev", "text": "here", "action": False}
    h.types("/leave", "back")
    assert h.sent[-2] == {"type": "leave", "room": "dev", "reason": "", "ref": 2}
    assert h.sent[-1]["room"] == "lobby"
    h.types("/nick rob")
    assert h.client.me == "rob"
    assert h.client.prompt_text() == "[lobby] rob> "


def test_commands_are_translated() -> None:
    h = Harness()
    h.register()
    h.types("/rooms", "/who", "/who #dev", "/topic", "/topic #dev new topic", "/help")
    assert h.sent == [
        {"type": "rooms"},
        {"type": "who", "room": "lobby"},
        {"type": "who", "room": "dev"},
        {"type": "topic", "room": "lobby"},
        {"type": "topic", "room": "dev", "topic": "new topic"},
        {"type": "help"},
    ]
    assert h.client.handle_input("/quit later") is False
    assert h.sent[-1] == {"type": "quit", "reason": "later"}
    assert h.client.quitting


def test_private_message_is_shown_once_accepted() -> None:
    h = Harness()
    h.register()
    h.types("/msg bob psst")
    assert h.sent[-1] == {"type": "msg", "to": "bob", "text": "psst", "action": False, "ref": 1}
    assert h.shown == ["[private to bob] <alice> psst"]
    h = Harness(refuse={"msg": "there is nobody called bob"})
    h.register()
    h.types("/msg bob psst")
    assert h.shown == ["!!! there is nobody called bob"]


def test_bad_commands_and_no_room_are_answered_locally() -> None:
    h = Harness()
    h.register()
    h.types("/frobnicate", "/msg", "/leave")
    assert h.shown[:2] == [
        "!!! unknown command /frobnicate; try /help",
        "!!! usage: /msg NICK text",
    ]
    sent = len(h.sent)
    h.types("anyone?")
    assert len(h.sent) == sent
    assert h.shown[-1] == "!!! you are in no room; /join ROOM first"


def test_ping_is_answered_and_not_shown() -> None:
    h = Harness()
    h.register()
    h.client.handle_event({"type": "ping", "token": "abc"})
    assert h.sent == [{"type": "pong", "token": "abc"}]
    assert h.shown == []


def test_disconnect_reason_is_the_last_notice_only_if_it_came_last() -> None:
    h = Harness()
    h.register()
    h.client.handle_event({"type": "notice", "text": "going down"})
    assert h.client.reason() == "going down"
    h.client.handle_event({"type": "join", "room": "lobby", "name": "bob"})
    assert h.client.reason() == "connection closed by server"
    h.client.handle_event({"type": "error", "code": "flood", "message": "slow\x1b[2J"})
    assert h.client.reason() == "slow\N{REPLACEMENT CHARACTER}[2J"


def test_history_commands_are_translated_and_more_continues_from_the_oldest_shown() -> None:
    h = Harness()
    h.register()
    h.types("/history more")
    assert h.sent == [] and h.shown == ["!!! nothing to continue; /history first"]
    h.types("/history", "/history #dev 5", "/history @bob")
    assert h.sent == [
        {"type": "history", "room": "lobby", "ref": 1},
        {"type": "history", "room": "dev", "limit": 5, "ref": 2},
        {"type": "history", "with": "bob", "ref": 3},
    ]
    # The page answering "/history #dev 5" (its ref) sets where "more" goes on.
    page = {"type": "history", "room": "Dev", "more": True, "ref": 2}
    h.client.handle_event({**page, "messages": [stored("a", 40), stored("b", 44)]})
    h.types("/history more")
    assert h.sent[-1] == {"type": "history", "room": "Dev", "before": 40, "limit": 5, "ref": 4}
    h.client.handle_event({**page, "messages": [stored("c", 30)], "ref": 4})
    h.types("/history more")
    assert h.sent[-1] == {"type": "history", "room": "Dev", "before": 30, "limit": 5, "ref": 5}
    # A private conversation continues as one.
    h.client.handle_event(
        {
            "type": "history",
            "with": "bob",
            "more": True,
            "ref": 3,
            "messages": [stored("p", 9, type="private", to="alice")],
        }
    )
    h.types("/history more")
    assert h.sent[-1] == {"type": "history", "with": "bob", "before": 9, "ref": 6}


def test_account_commands_send_passwords_and_never_show_them() -> None:
    h = Harness()
    h.register()
    h.types("/register pw-one-two", "/login alice pw-one-two", "/password pw-one-two pw-three")
    assert h.sent == [
        {"type": "register", "password": "pw-one-two"},
        {"type": "login", "name": "alice", "password": "pw-one-two"},
        {"type": "password", "old": "pw-one-two", "new": "pw-three"},
    ]
    h.types("/register two words", "/login alice")
    assert h.shown == [
        "!!! usage: /register PASSWORD (one word)",
        "!!! usage: /login NAME PASSWORD",
    ]
    assert not any("pw-" in line or "words" in line for line in h.shown)
    assert holds_password("  /LOGIN a b") and holds_password("/password a b")
    assert holds_password("/register")  # the bare command still counts
    assert not holds_password("login a b") and not holds_password("//register x")
    h.client.handle_event({"type": "logged_in", "account": "alice"})
    assert h.client.account == "alice"


def test_moderation_commands_default_to_the_current_room() -> None:
    h = Harness()
    h.register()
    h.types(
        "/op bob",
        "/deop #dev bob",
        "/kick bob flooding the room",
        "/ban ~a:bob",
        "/unban bob!*@*",
        "/mute bob",
        "/unmute #dev bob",
        "/topiclock on",
        "/topiclock #dev off",
    )
    assert h.sent == [
        {"type": "op", "name": "bob", "room": "lobby"},
        {"type": "deop", "name": "bob", "room": "dev"},
        {"type": "kick", "name": "bob", "room": "lobby", "reason": "flooding the room"},
        {"type": "ban", "name": "~a:bob", "room": "lobby"},
        {"type": "unban", "name": "bob!*@*", "room": "lobby"},
        {"type": "mute", "name": "bob", "room": "lobby"},
        {"type": "unmute", "name": "bob", "room": "dev"},
        {"type": "topiclock", "on": True, "room": "lobby"},
        {"type": "topiclock", "on": False, "room": "dev"},
    ]
    h.types("/topiclock maybe")
    assert h.shown == ["!!! usage: /topiclock [#ROOM] on|off"]


# -- the program end to end ----------------------------------------------------------------


class ClientProcess:
    """`threadchat connect` as a subprocess with piped stdin/stdout/stderr."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "threadchat", "connect", *args],
            env={**os.environ, **env} if env is not None else None,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines))
        self.proc.stdin.flush()

    def expect(self, text: str, timeout: float = WAIT) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line with {text!r}; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"output ended without {text!r}; saw {self.seen}")
            self.seen.append(line)
            if text in line:
                return line

    def finish(self, timeout: float = WAIT) -> tuple[int, str]:
        """Close stdin, wait for the exit; (exit code, stderr)."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout)
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


RunClient = Callable[..., ClientProcess]


@pytest.fixture
def run_client() -> Iterator[Callable[..., ClientProcess]]:
    started: list[ClientProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ClientProcess:
        client = ClientProcess(*args, env=env)
        started.append(client)
        return client

    yield start
    for client in started:
        client.kill()


def address(server: Server) -> str:
    return f"127.0.0.1:{server.listener('line').port}"


def test_messages_both_ways(
    server: Server,
    connect_json: Callable[..., JsonClient],
    run_client: Callable[..., ClientProcess],
) -> None:
    bob = connect_json("bob")
    alice = run_client(address(server), "--name", "alice")
    alice.expect("in lobby:")
    bob.expect_event("join", room="lobby", name="alice")
    alice.send("hello bob")
    bob.expect_event("message", room="lobby", text="hello bob")
    assert alice.expect("<alice> hello bob")
    bob.send_json(type="say", room="lobby", text="hi alice")
    alice.expect("<bob> hi alice")
    bob.send_json(type="say", room="lobby", text="waves", action=True)
    alice.expect("* bob waves")
    code, _ = alice.finish()
    assert code == 0
    bob.expect_event("quit", name="alice")


def test_join_switches_the_room_plain_lines_go_to(
    server: Server,
    connect_json: Callable[..., JsonClient],
    run_client: Callable[..., ClientProcess],
) -> None:
    bob = connect_json("bob")
    bob.send_json(type="join", room="dev")
    bob.expect_event("who", room="dev")
    alice = run_client(address(server), "--name", "alice")
    alice.expect("in lobby:")
    alice.send("/join dev", "in dev now", "/join ops")
    bob.expect_event("join", room="dev", name="alice")
    bob.expect_event("message", room="dev", text="in dev now")
    alice.expect("in ops: alice")
    bob.send_json(type="say", room="dev", text="not current")
    alice.expect("[dev] <bob> not current")
    alice.send("/leave", "back in dev")
    bob.expect_event("message", room="dev", text="back in dev")
    assert alice.finish()[0] == 0


def test_private_messages(
    server: Server,
    connect_json: Callable[..., JsonClient],
    run_client: Callable[..., ClientProcess],
) -> None:
    bob = connect_json("bob")
    alice = run_client(address(server), "--name", "alice")
    alice.expect("in lobby:")
    alice.send("/msg bob psst", "/msg nobody hello?")
    bob.expect_event("private", to="bob", text="psst")
    alice.expect("[private to bob] <alice> psst")
    alice.expect("!!! there is nobody called nobody")
    bob.send_json(type="msg", to="alice", text="yes?")
    alice.expect("[private] <bob> yes?")
    assert alice.finish()[0] == 0


def test_name_from_the_first_stdin_line(
    server: Server,
    connect_json: Callable[..., JsonClient],
    run_client: Callable[..., ClientProcess],
) -> None:
    bob = connect_json("bob")
    carol = run_client(address(server))
    carol.send("carol", "hi")
    bob.expect_event("message", room="lobby", text="hi")
    carol.expect("welcome to")
    assert carol.finish()[0] == 0


def test_refused_name_exits_non_zero(
    server: Server,
    connect_json: Callable[..., JsonClient],
    run_client: Callable[..., ClientProcess],
) -> None:
    connect_json("bob")
    second = run_client(address(server), "--name", "BOB")
    code, err = second.finish()
    assert code != 0
    assert "bob" in err.lower() and "threadchat:" in err
    invalid = run_client(address(server), "--name", "no spaces")
    code, err = invalid.finish()
    assert code != 0 and "name" in err


def test_server_stop_is_reported(
    make_server: Callable[..., Server], run_client: Callable[..., ClientProcess]
) -> None:
    server = make_server()
    alice = run_client(address(server), "--name", "alice")
    alice.expect("in lobby:")
    server.stop()
    alice.proc.wait(WAIT)
    code, err = alice.finish()
    assert code == 1
    assert "the server is shutting down" in err


def test_unreachable_server_exits_non_zero(run_client: Callable[..., ClientProcess]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, err = run_client(f"127.0.0.1:{port}", "--name", "alice").finish()
    assert code == 1 and "cannot connect" in err


class FakeServer:
    """One scripted connection: for what a real server never sends (controls, pings, resets)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT)
        self.port = self.listener.getsockname()[1]
        self.conn: JsonClient | None = None

    def accept(self) -> JsonClient:
        sock, _ = self.listener.accept()
        client = JsonClient.__new__(JsonClient)
        client.sock, client.buffer = sock, b""
        self.conn = client
        return client

    def send(self, **event: Any) -> None:
        assert self.conn is not None
        self.conn.send(json.dumps({"id": 1, "ts": TS, **event}))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.close()


def test_hostile_server_output_is_neutralised_and_pings_answered(
    fake_server: FakeServer, run_client: Callable[..., ClientProcess]
) -> None:
    alice = run_client(f"127.0.0.1:{fake_server.port}", "--name", "alice")
    conn = fake_server.accept()
    hello = conn.read_event()
    assert hello["type"] == "hello" and hello["name"] == "alice"
    fake_server.send(type="welcome", name="alice", server="fake")
    fake_server.send(type="join", room=EVIL, name="alice")
    fake_server.send(type="ok", ref=hello["ref"])
    fake_server.send(type="message", room=EVIL, text=EVIL + "end", **{"from": EVIL})
    conn.send("not json \x1b[2J", "[1, 2]")
    fake_server.send(type="ping", token="tok")
    assert conn.read_event() == {"type": "pong", "token": "tok"}
    line = alice.expect("end")
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "".join(alice.seen))
    assert "owned" in line
    alice.send("typed")
    said = conn.read_event()
    assert said["type"] == "say" and said["text"] == "typed"
    assert said["room"] == EVIL  # the real room name goes back to the server unchanged
    fake_server.send(type="error", code="flood", message="too fast")
    conn.close()
    alice.proc.wait(WAIT)  # before finish() closes stdin, which would be a clean quit
    code, err = alice.finish()
    assert code == 1 and "too fast" in err


def test_registration_waits_for_the_hello_answer() -> None:
    h = Harness()
    h.client.hello("bob")
    ref = h.sent[-1]["ref"]
    h.client.handle_event({"type": "error", "code": "name_in_use", "message": "taken", "ref": ref})
    assert h.client.wait_registered(0) == ("refused", "taken")
    h.client.hello("alice")
    ref = h.sent[-1]["ref"]
    h.client.handle_event({"type": "welcome", "name": "alice", "server": "s"})
    assert h.client.wait_registered(0) == ("closed", "no answer from the server")
    h.client.handle_event({"type": "join", "room": "lobby", "name": "alice"})
    h.client.handle_event({"type": "ok", "ref": ref})
    assert h.client.wait_registered(0) == ("registered", "alice")
    assert h.client.current_room == "lobby"


def test_history_on_join_and_history_command(
    server: Server,
    connect_json: Callable[..., JsonClient],
    run_client: Callable[..., ClientProcess],
) -> None:
    bob = connect_json("bob")
    for n in range(3):
        bob.send_json(type="say", room="lobby", text=f"stored {n}", ref=n)
        bob.expect_event("ok", ref=n)  # acknowledged once committed
    alice = run_client(address(server), "--name", "alice")
    alice.expect("in lobby:")
    for n in range(3):
        assert "(history) <bob>" in alice.expect(f"stored {n}")
    alice.send("/history 2")
    alice.expect("--- history of lobby:")
    assert alice.expect("stored 1").endswith("(history) [lobby] <bob> stored 1")
    alice.expect("stored 2")
    alice.expect("--- /history more shows older messages")
    alice.send("/history more")
    alice.expect("--- history of lobby:")
    alice.expect("stored 0")
    alice.send("/history more")
    alice.expect("--- no (more) history in lobby")
    alice.send("/history #elsewhere")
    alice.expect("!!! join elsewhere to read its history")
    assert alice.finish()[0] == 0


def test_register_then_login_from_another_connection(
    server: Server,
    connect_json: Callable[..., JsonClient],
    run_client: Callable[..., ClientProcess],
) -> None:
    watcher = connect_json("watcher")
    alice = run_client(address(server), "--name", "alice")
    alice.expect("in lobby:")
    alice.send("/register sesame-open-42")
    alice.expect("--- you are logged in as alice")
    alice.send("/login alice wrong-password")
    alice.expect("!!! invalid account name or password")
    code, _ = alice.finish()
    assert code == 0
    assert not any("sesame" in line or "wrong-password" in line for line in alice.seen)
    watcher.expect_event("quit", name="alice")

    # The name is registered now: a guest cannot take it, the account owner logs in to it.
    guest = run_client(address(server), "--name", "guest1")
    guest.expect("in lobby:")
    guest.send("/nick alice")
    guest.expect("!!! ")
    guest.send("/login alice sesame-open-42")
    guest.expect("--- you are logged in as alice")
    guest.expect("--- guest1 is now known as alice")
    guest.send("hello as alice")
    watcher.expect_event("message", room="lobby", text="hello as alice", **{"from": "alice"})
    assert guest.finish()[0] == 0
    assert not any("sesame" in line for line in guest.seen)


def watch_alice_register(connect_json: Callable[..., JsonClient]) -> JsonClient:
    """Register the name alice (password sesame-open-42) and leave; return a member who saw
    it go, to watch what alice does next."""
    watcher = connect_json("watcher")
    owner = connect_json("alice")
    owner.send_json(type="register", password="sesame-open-42", ref=1)
    owner.expect_event("logged_in", ref=1)
    owner.close()
    watcher.expect_event("quit", name="alice")
    return watcher


def test_a_registered_name_logs_in_with_the_password_from_the_environment(
    server: Server,
    connect_json: Callable[..., JsonClient],
    run_client: Callable[..., ClientProcess],
) -> None:
    # A terminal user is asked for the password, unseen; a client without a terminal takes
    # it from THREADCHAT_PASSWORD, once. Never from stdin: a script's next line is chat.
    watcher = watch_alice_register(connect_json)

    alice = run_client(
        address(server), "--name", "alice", env={"THREADCHAT_PASSWORD": "sesame-open-42"}
    )
    alice.expect("--- you are logged in as alice")
    alice.expect("in lobby:")
    alice.send("back again")
    watcher.expect_event("message", room="lobby", text="back again", **{"from": "alice"})
    assert alice.finish()[0] == 0
    assert not any("sesame" in line for line in alice.seen)

    wrong = run_client(address(server), "--name", "alice", env={"THREADCHAT_PASSWORD": "nope-nope"})
    code, err = wrong.finish()
    assert code != 0 and "invalid account name or password" in err
    unasked = run_client(address(server), "--name", "alice")
    code, err = unasked.finish()
    assert code != 0 and "is registered" in err


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_a_registered_name_asks_for_its_password_at_a_terminal(
    server: Server, connect_json: Callable[..., JsonClient]
) -> None:
    # The terminal client in a pseudo-terminal: the prompt appears, the password is typed
    # unseen (prompt_toolkit shows stars), and the client is logged in.
    watcher = watch_alice_register(connect_json)

    pid, fd = pty.fork()
    if pid == 0:  # the child: only exec, nothing that could raise into pytest
        os.execve(
            sys.executable,
            [sys.executable, "-m", "threadchat", "connect", address(server), "--name", "alice"],
            {**os.environ, "TERM": "xterm"},
        )
    screen = b""

    def read_until(text: str) -> str:
        nonlocal screen
        deadline = time.monotonic() + WAIT
        while text not in ANSI.sub("", screen.decode(errors="replace")):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} on the terminal; saw {screen[-2000:]!r}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 65536)
                screen += data
                if b"\x1b[6n" in data:  # prompt_toolkit asks where the cursor is
                    os.write(fd, b"\x1b[1;1R")
        return text

    try:
        read_until("password for alice")
        os.write(fd, b"sesame-open-42\r")
        read_until("you are logged in as alice")
        watcher.expect_event("join", room="lobby", name="alice")
        assert b"sesame" not in screen
        os.write(fd, b"/quit\r")
        watcher.expect_event("quit", name="alice")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
