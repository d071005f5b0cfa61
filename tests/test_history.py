"""History: every message committed before it is relayed, replay on join, paging, retention."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import WAIT, JsonClient, LineClient, unref, writer_held
from store_backends import (
    Backend,
    PostgresBackend,
)
from test_irc import IrcClient

from threadchat.app.server import Server, StartupError
from threadchat.config import Config
from threadchat.core import events
from threadchat.core.events import Event
from threadchat.core.history import HistoryQuery, Ref
from threadchat.services import history
from threadchat.services.history import Retention

PASSWORD = "correct-horse"
# Legal in a JSON string, but not encodable as UTF-8: the store cannot take it.
LONE_SURROGATE = "hi \ud800"


def text_client(server: Server, name: str) -> LineClient:
    client = LineClient(server.listener("line").port)
    client.send(name)
    client.expect("--- in lobby:")
    return client


def json_client(server: Server, name: str, **hello: object) -> JsonClient:
    client = JsonClient(server.listener("line").port)
    client.send_json(type="hello", name=name, **hello)
    client.expect_event("who", room="lobby")
    return client


def answers(client: JsonClient, refs: set[object]) -> dict[object, list[dict]]:
    """Every `ok` and `error` the client gets for `refs`, by ref, until each has one and a
    later request is answered too (so that an `ok` following an error would be seen)."""
    got: dict[object, list[dict]] = {}
    while not refs <= got.keys():
        event = client.read_event()
        if event["type"] in ("ok", "error") and event.get("ref") in refs:
            got.setdefault(event["ref"], []).append(event)
    client.send_json(type="ping", token="fence", ref="fence")
    while (event := client.read_event())["type"] != "ok" or event.get("ref") != "fence":
        if event["type"] in ("ok", "error") and event.get("ref") in refs:
            got[event["ref"]].append(event)
    return got


def stored_texts(server: Server, room: str) -> list[str]:
    assert server.store is not None
    return [m.text for m in server.store.room_history(room, HistoryQuery.latest(500))]


def test_relayed_message_carries_its_stored_id_and_time(make_server: Callable[..., Server]) -> None:
    server = make_server()
    alice, bob = json_client(server, "alice"), json_client(server, "bob")
    alice.send_json(type="say", room="lobby", text="first", ref=1)
    alice.expect_event("ok", ref=1)
    live = bob.expect_event("message", text="first")
    assert "history" not in live
    bob.send_json(type="history", room="lobby", ref="h")
    page = bob.expect_event("history", ref="h")
    assert [m["text"] for m in page["messages"]] == ["first"]
    stored = page["messages"][0]
    assert stored["id"] == live["id"] and stored["ts"] == live["ts"]
    assert stored["history"] is True and stored["from"] == "alice"
    assert page["more"] is False


def test_join_replays_the_last_messages_marked_as_history(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(history_on_join=3)
    alice = json_client(server, "alice")
    for i in range(5):
        alice.send_json(type="say", room="lobby", text=f"line {i}")
    alice.send_json(type="say", room="lobby", text="waves", action=True, ref="last")
    alice.expect_event("ok", ref="last")  # lines are handled in order: all are stored now
    bob = json_client(server, "bob")  # the join itself (expect_event) is before the replay
    replay = [bob.read_event() for _ in range(3)]
    assert [e["text"] for e in replay] == ["line 3", "line 4", "waves"]
    assert all(e["history"] and e["from"] == "alice" for e in replay)
    assert replay[2]["action"] is True
    carol = LineClient(server.listener("line").port)
    carol.send("carol")
    line = carol.expect("(history)")
    assert unref(line).endswith("alice: line 3") and line.startswith("(history) [")


def test_text_history_command_and_paging(make_server: Callable[..., Server]) -> None:
    server = make_server(history_on_join=0)
    alice = text_client(server, "alice")
    bob = text_client(server, "bob")
    for i in range(7):
        alice.send(f"m{i}")
    bob.expect("alice: m6")
    bob.send("/history 3")
    assert bob.expect("--- history of lobby:")
    assert [unref(bob.read_line()).rsplit(" ", 1)[1] for _ in range(3)] == ["m4", "m5", "m6"]
    bob.expect("/history more")
    bob.send("/history more")
    bob.expect("--- history of lobby:")
    assert [unref(bob.read_line()).rsplit(" ", 1)[1] for _ in range(3)] == ["m1", "m2", "m3"]
    bob.send("/history more")
    bob.expect("--- history of lobby:")
    assert unref(bob.read_line()).endswith("m0")
    bob.send("/history more")
    bob.expect("--- no (more) history in lobby")
    bob.send("/history lots")
    bob.expect("usage: /history")


def test_json_history_before_after_and_limits(make_server: Callable[..., Server]) -> None:
    server = make_server(history_on_join=0)
    alice = json_client(server, "alice")
    ids = []
    for i in range(10):
        alice.send_json(type="say", room="lobby", text=f"m{i}", ref=i)
        alice.expect_event("ok", ref=i)
    alice.send_json(type="history", limit=100)
    ids = [m["id"] for m in alice.expect_event("history")["messages"]]
    assert len(ids) == 10
    alice.send_json(type="history", before=ids[5], limit=2)
    assert [m["text"] for m in alice.expect_event("history")["messages"]] == ["m3", "m4"]
    alice.send_json(type="history", after=ids[5], limit=2)
    assert [m["text"] for m in alice.expect_event("history")["messages"]] == ["m6", "m7"]
    alice.send_json(type="history", after=ids[1], before=ids[4])
    assert [m["text"] for m in alice.expect_event("history")["messages"]] == ["m2", "m3"]
    alice.send_json(type="history", before="2000-01-01T00:00:00Z")
    assert alice.expect_event("history")["messages"] == []
    alice.send_json(type="history", after="2000-01-01T00:00:00.000+00:00", limit=1)
    assert [m["text"] for m in alice.expect_event("history")["messages"]] == ["m0"]
    # A huge limit is clamped, not an error and not a huge reply.
    alice.send_json(type="history", limit=10**12, ref="big")
    assert len(alice.expect_event("history", ref="big")["messages"]) == 10
    for bad in ("yesterday", "2026-13-45T00:00:00Z", 1.5, True, -1, 2**80):
        alice.send_json(type="history", before=bad, ref="bad")
        error = alice.expect_event("error", ref="bad")
        assert error["code"] == "bad_request" and "before" in error["message"]
    for bad_limit in (-5, "10", 2.5):
        alice.send_json(type="history", limit=bad_limit, ref="lim")
        assert alice.expect_event("error", ref="lim")["code"] == "bad_request"


def test_history_of_a_room_needs_membership(make_server: Callable[..., Server]) -> None:
    server = make_server()
    alice, bob = json_client(server, "alice"), json_client(server, "bob")
    alice.send_json(type="join", room="secret")
    alice.expect_event("who", room="secret")
    alice.send_json(type="say", room="secret", text="only for members", ref=1)
    alice.expect_event("ok", ref=1)
    bob.send_json(type="history", room="secret", ref=2)
    assert bob.expect_event("error", ref=2)["code"] == "not_in_room"
    bob.send_json(type="history", room="nosuchroom", ref=3)
    assert bob.expect_event("error", ref=3)["code"] == "not_in_room"


def test_sql_metacharacters_are_just_text(make_server: Callable[..., Server]) -> None:
    server = make_server()
    nasty = "'; DROP TABLE messages; -- \" OR 1=1 %_ \\ \U0001f600"
    alice = json_client(server, "alice")
    bob = json_client(server, "bob")
    alice.send_json(type="join", room="x.-_y")
    alice.expect_event("who", room="x.-_y")
    alice.send_json(type="say", room="x.-_y", text=nasty, ref=1)
    alice.expect_event("ok", ref=1)
    alice.send_json(type="say", room="lobby", text=nasty, ref=2)
    bob.expect_event("message", text=nasty)
    alice.send_json(type="history", room="x.-_y")
    assert [m["text"] for m in alice.expect_event("history")["messages"]] == [nasty]
    alice.send_json(type="history", room="lobby", ref=3)
    assert alice.expect_event("history", ref=3)["messages"][-1]["text"] == nasty
    alice.send_json(type="join", room="a'; DROP TABLE rooms; --", ref=4)
    assert alice.expect_event("error", ref=4)["code"] == "invalid_room"


def test_restart_with_the_same_data_directory_keeps_the_history_of_kept_rooms(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    first = make_server(data_dir=str(tmp_path))
    alice = json_client(first, "alice")
    alice.send_json(type="register", password=PASSWORD, ref="reg")
    alice.expect_event("logged_in", ref="reg")
    alice.send_json(type="join", room="club")  # made by an account: kept
    alice.expect_event("who", room="club")
    for i in range(3):
        alice.send_json(type="say", room="club", text=f"before restart {i}", ref=i)
        alice.expect_event("ok", ref=i)
    # The lobby was made by alice as a guest: it is kept anyway, as the server's own room.
    alice.send_json(type="say", room="lobby", text="in the lobby", ref="lobby")
    alice.expect_event("ok", ref="lobby")
    guest = json_client(first, "guest")
    guest.send_json(type="join", room="cafe")  # made by a guest: ends with the run
    guest.expect_event("who", room="cafe")
    guest.send_json(type="say", room="cafe", text="in a guest's room", ref="cafe")
    guest.expect_event("ok", ref="cafe")
    alice.close()
    guest.close()
    first.stop()
    second = make_server(data_dir=str(tmp_path))
    bob = json_client(second, "bob")
    bob.send_json(type="history", room="lobby", ref="h")
    assert [m["text"] for m in bob.expect_event("history", ref="h")["messages"]] == ["in the lobby"]
    bob.send_json(type="join", room="cafe")
    bob.expect_event("who", room="cafe")
    bob.send_json(type="history", room="cafe", ref="c")
    assert bob.expect_event("history", ref="c")["messages"] == []
    bob.send_json(type="join", room="club")
    bob.expect_event("who", room="club")
    replay = [bob.read_event() for _ in range(3)]
    assert [e["text"] for e in replay] == [f"before restart {i}" for i in range(3)]


def test_no_history_relays_without_storing(make_server: Callable[..., Server]) -> None:
    server = make_server(history=False)
    alice, bob = json_client(server, "alice"), json_client(server, "bob")
    alice.send_json(type="say", room="lobby", text="ephemeral")
    assert bob.expect_event("message", text="ephemeral")
    bob.send_json(type="history", ref=1)
    assert bob.expect_event("error", ref=1)["code"] == "history_off"
    assert server.store is not None
    assert server.store.room_history("lobby", HistoryQuery.latest(10)) == []


def test_a_failing_store_keeps_live_chat_and_tells_the_sender(
    make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server()
    alice, bob = json_client(server, "alice"), json_client(server, "bob")
    assert server.hub.history is not None

    def disk_full(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    # The store's writer really fails the write (and goes on serving).
    monkeypatch.setattr(server.hub.history.store, "_insert_rows", disk_full)
    alice.send_json(type="say", room="lobby", text="still delivered", ref=1)
    # An `ok` means stored: the answer is the error, with the ref, and no `ok`.
    [error] = answers(alice, {1})[1]
    assert error["type"] == "error" and error["code"] == "not_saved"
    assert error["message"].startswith("message not saved")
    assert "disk" not in error["message"]  # details go to the operator's log, not to users
    assert bob.expect_event("message", text="still delivered")
    # Without a ref there is nothing to answer, but the sender is still told.
    alice.send_json(type="say", room="lobby", text="no ref")
    assert "ref" not in alice.expect_event("error", code="not_saved")


def test_a_data_directory_that_is_a_file_stops_the_start(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("I am a file")
    server = Server(Config(data_dir=str(not_a_dir)), ephemeral_ports=True)
    with pytest.raises(StartupError, match="not a directory"):
        server.start()
    server.stop()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "threadchat",
            "serve",
            "--line-port",
            "0",
            "--data-dir",
            str(not_a_dir),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "not a directory" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_data_directory_stops_the_start(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        server = Server(Config(data_dir=str(read_only)), ephemeral_ports=True)
        with pytest.raises(StartupError, match="not writable"):
            server.start()
        server.stop()
    finally:
        read_only.chmod(0o700)


def test_retention_purges_old_messages_and_stops(backend: Backend) -> None:
    store = backend.open()
    try:
        store.append(sender="alice", text="old", room="lobby")
        stopping = threading.Event()
        time.sleep(0.01)  # the message must be older than the (tiny) retention age
        retention = Retention(store, days=0.001 / 86400, stopping=stopping, interval=60)
        retention.start()
        deadline = time.monotonic() + WAIT
        while store.room_history("lobby", HistoryQuery.latest(5)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.room_history("lobby", HistoryQuery.latest(5)) == []
        stopping.set()
        retention.join(WAIT)
        assert not retention.is_alive()
    finally:
        store.close()


# -- kill -9 of a server subprocess ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_subprocess(port: int, backend: Backend) -> subprocess.Popen[bytes]:
    where = ["--data-dir", backend.location]
    if isinstance(backend, PostgresBackend):
        where = ["--database-url", backend.url]
    process = subprocess.Popen(
        [sys.executable, "-m", "threadchat", "serve", "--line-port", str(port),
         *where, "--flood-rate", "0", "--history-on-join", "0", "--web-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise AssertionError("server subprocess exited at start") from None
            time.sleep(0.05)
    process.kill()
    raise AssertionError("server subprocess did not start listening")


def test_kill_9_loses_no_message_that_anyone_received(backend: Backend) -> None:
    # With PostgreSQL too: what a node relayed is in the database the other nodes read.
    port = _free_port()
    server = _start_subprocess(port, backend)
    received: set[str] = set()
    received_lock = threading.Lock()
    senders = 4
    stop = threading.Event()
    clients = []
    try:
        listener = JsonClient(port)
        listener.send_json(type="hello", name="listener")
        listener.expect_event("who", room="lobby")
        for n in range(senders):
            client = JsonClient(port)
            client.send_json(type="hello", name=f"sender{n}")
            client.expect_event("who", room="lobby")
            clients.append(client)

        def send(client: JsonClient, n: int) -> None:
            # Sender 0 writes ten lines at a time: they arrive in one read and are committed
            # together (pipelined); the others one line at a time.
            per_write = 10 if n == 0 else 1
            i = 0
            while not stop.is_set():
                lines = [
                    json.dumps({"type": "say", "room": "lobby", "text": f"s{n}-{i + k}"})
                    for k in range(per_write)
                ]
                try:
                    client.send(*lines)
                except OSError:
                    return
                i += per_write
                time.sleep(0.001)

        def listen() -> None:
            while True:
                try:
                    event = listener.read_event(timeout=WAIT)
                except (OSError, EOFError, TimeoutError, json.JSONDecodeError):
                    return
                if event["type"] == "message":
                    with received_lock:
                        received.add(event["text"])

        threads = [threading.Thread(target=send, args=(c, n)) for n, c in enumerate(clients)]
        reader = threading.Thread(target=listen)
        for thread in [*threads, reader]:
            thread.start()
        deadline = time.monotonic() + WAIT
        while len(received) < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        server.wait(WAIT)
        stop.set()
        for thread in [*threads, reader]:
            thread.join(WAIT)
    finally:
        stop.set()
        if server.poll() is None:
            server.kill()
            server.wait(WAIT)
    assert len(received) >= 2000
    store = backend.open()
    try:
        stored: set[str] = set()
        last = None
        while True:
            query = HistoryQuery.latest(500) if last is None else HistoryQuery.before(last, 500)
            page = store.room_history("lobby", query)
            if not page:
                break
            stored.update(m.text for m in page)
            last = Ref.msgid(page[0].id)
    finally:
        store.close()
    missing = received - stored
    assert not missing, f"{len(missing)} received messages missing after kill -9"


def test_lines_of_one_write_are_relayed_in_order_with_other_requests(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    watcher = json_client(server, "watcher")
    chatty = LineClient(server.listener("line").port)
    chatty.send("chatty")
    watcher.expect_event("join", name="chatty")
    # One write: messages, a leave, a message to nowhere, a quit. Queued messages must go
    # out before the leave is seen, and all of them stored.
    chatty.send("one", "two", "/leave lobby", "three", "/join lobby", "four", "/quit bye")
    seen = []
    while not seen or seen[-1] != ("quit", "bye"):
        event = watcher.read_event()
        if event["type"] in ("message", "leave", "join", "quit"):
            seen.append((event["type"], event.get("text") or event.get("reason") or event["name"]))
    assert seen == [
        ("message", "one"),
        ("message", "two"),
        ("leave", "chatty"),
        ("join", "chatty"),
        ("message", "four"),
        ("quit", "bye"),
    ]
    assert server.store is not None
    stored = server.store.room_history("lobby", HistoryQuery.latest(10))
    assert [m.text for m in stored] == ["one", "two", "four"]


def test_retention_runs_only_when_configured_and_stops_with_the_server(
    make_server: Callable[..., Server],
) -> None:
    forever = make_server()
    assert forever.wiring is not None and forever.wiring.retention is None
    server = make_server(history_days=30)
    assert server.wiring is not None
    retention = server.wiring.retention
    assert retention is not None and retention.is_alive()
    server.stop()
    assert not retention.is_alive()


def test_ok_for_a_message_waits_until_it_is_stored(
    server: Server, connect_json: Callable[..., JsonClient]
) -> None:
    import sqlite3

    alice = connect_json("alice")
    # Another writer holds the database: the server cannot commit until it lets go.
    blocker = sqlite3.connect(Path(server.config.data_dir) / "threadchat.db", timeout=WAIT)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        alice.send_json(type="say", room="lobby", text="durable", ref="m1")
        assert [line for line in alice.quiet(0.5) if '"ok"' in line] == []
    finally:
        blocker.rollback()
        blocker.close()
    assert alice.expect_event("ok", ref="m1")["ref"] == "m1"


# -- a message that is not stored ------------------------------------------------------------


def test_a_message_the_store_cannot_take_fails_alone_in_its_commit_round(
    make_server: Callable[..., Server],
) -> None:
    # Straight at the history service, whatever the protocols let through: one message the
    # store refuses must not take the rest of its commit round with it.
    server = make_server()
    clients = [json_client(server, "alice"), json_client(server, "bob")]  # keep them connected
    hub, service = server.hub, server.hub.history
    alice, bob = hub.find_user("alice"), hub.find_user("bob")
    assert service is not None and alice is not None and bob is not None
    relayed: dict[str, dict] = {}
    answered: dict[str, list[Event]] = {}

    def send(user: object, text: str, ref: str) -> None:
        def relay(stamp: dict) -> None:
            relayed[ref] = stamp

        with history.acknowledged(ref, answered.setdefault(ref, []).append):
            service.submit(user, text, events.TEXT, relay, room="lobby")  # type: ignore[arg-type]

    assert server.store is not None
    with writer_held(server.store):  # both readers' batches then share one commit
        with history.pipelined():
            send(alice, "a-1", "a-1")
            send(alice, LONE_SURROGATE, "bad")
            send(alice, "a-2", "a-2")
        with history.pipelined():
            send(bob, "b-1", "b-1")
    history.complete()
    assert relayed.keys() == {"a-1", "bad", "a-2", "b-1"}
    assert relayed["bad"] == {}  # relayed anyway, with ordinary event ids
    assert all("id" in relayed[ref] for ref in ("a-1", "a-2", "b-1"))
    outcomes = {
        ref: [(type(e).__name__, getattr(e, "code", None), e.ref) for e in got]  # type: ignore[attr-defined]
        for ref, got in answered.items()
    }
    assert outcomes == {
        "a-1": [("Ok", None, "a-1")],
        "bad": [("Error", "not_saved", "bad")],
        "a-2": [("Ok", None, "a-2")],
        "b-1": [("Ok", None, "b-1")],
    }
    assert stored_texts(server, "lobby") == ["a-1", "a-2", "b-1"]
    for client in clients:
        client.close()


def test_a_message_that_cannot_be_stored_loses_nobody_elses(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    alice = json_client(server, "alice")
    bob, carol = json_client(server, "bob"), json_client(server, "carol")
    for client in (bob, carol):
        client.send_json(type="join", room="dev")
        client.expect_event("who", room="dev")
        client.send_json(type="leave", room="lobby", ref="left")
        client.expect_event("ok", ref="left")
    alice_refs: dict[str, bool] = {}  # ref: whether the message can be stored
    for i in range(400):
        bob.send_json(type="say", room="dev", text=f"b{i}", ref=f"b{i}")
        if i % 8 == 0:
            good = i % 16 == 0
            alice.send_json(type="say", text=f"a{i}" if good else LONE_SURROGATE, ref=f"a{i}")
            alice_refs[f"a{i}"] = good
    assert [carol.expect_event("message")["text"] for _ in range(400)] == [
        f"b{i}" for i in range(400)
    ]
    for ref, events_for_ref in answers(bob, {f"b{i}" for i in range(400)}).items():
        assert [e["type"] for e in events_for_ref] == ["ok"], ref
    for ref, events_for_ref in answers(alice, set(alice_refs)).items():
        # Refused at input or not stored: either way an error with its ref, and no ok.
        assert [e["type"] for e in events_for_ref] == ["ok" if alice_refs[ref] else "error"]
    assert stored_texts(server, "dev") == [f"b{i}" for i in range(400)]
    assert stored_texts(server, "lobby") == [ref for ref, good in alice_refs.items() if good]


# -- a room that is not kept takes its history with it ---------------------------------------


def irc_guest(server: Server, nick: str) -> IrcClient:
    client = IrcClient(server.listener("irc").port)
    client.register(nick)
    return client


def assert_no_history(client: JsonClient, room: str) -> None:
    """`client` just joined `room`: no replay came, and /history shows nothing."""
    client.send_json(type="history", room=room, ref="h")
    while (event := client.read_event())["type"] != "history":
        assert event["type"] != "message", event
    assert event["messages"] == []


def test_a_keyed_guest_room_takes_its_history_with_it(make_server: Callable[..., Server]) -> None:
    server = make_server()
    first, second = irc_guest(server, "first"), irc_guest(server, "second")
    first.send("JOIN #secret")
    first.expect_msg("366")
    first.send("MODE #secret +k hunter2")
    first.expect_msg("MODE")
    second.send("JOIN #secret hunter2")
    second.expect_msg("366")
    first.send("PRIVMSG #secret :SECRET-1 the merger closes friday")
    second.expect_msg("PRIVMSG")
    second.send("PRIVMSG #secret :SECRET-2 tell nobody")
    first.expect_msg("PRIVMSG")
    first.send("PART #secret")
    second.expect_msg("PART")
    second.send("PART #secret")
    second.expect_msg("PART")
    newcomer = json_client(server, "newcomer")
    newcomer.send_json(type="join", room="secret")
    newcomer.expect_event("who", room="secret")
    assert_no_history(newcomer, "secret")
    assert stored_texts(server, "secret") == []


def test_messages_still_queued_when_a_room_ends_are_not_shown_to_the_next(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    owner, talker = json_client(server, "owner"), json_client(server, "talker")
    for client in (owner, talker):
        client.send_json(type="join", room="secret")
        client.expect_event("who", room="secret")
    assert server.store is not None
    with writer_held(server.store):
        # The message waits in the store's queue while its room ends: its sender is kicked
        # and the last member leaves.
        talker.send_json(type="say", room="secret", text="SECRET-1 still queued", ref="q")
        owner.send_json(type="kick", room="secret", name="talker", ref="kick")
        owner.expect_event("ok", ref="kick")
        owner.send_json(type="leave", room="secret", ref="left")
        owner.expect_event("ok", ref="left")
        newcomer = json_client(server, "newcomer")
        newcomer.send_json(type="join", room="secret")
    newcomer.expect_event("who", room="secret")
    assert_no_history(newcomer, "secret")
    assert stored_texts(server, "secret") == []

    # A message checked against the old room but not yet queued when it ends (still in its
    # reader's batch) is not stored into, or relayed to, the next room of the name.
    newcomer.send_json(type="leave", room="secret", ref="left")
    newcomer.expect_event("ok", ref="left")
    talker.send_json(type="join", room="secret")
    talker.expect_event("who", room="secret")
    speaker = server.hub.find_user("talker")
    assert speaker is not None
    with history.pipelined():
        server.hub.say(speaker, "secret", "SECRET-2 checked, then the room ends")
        talker.send_json(type="leave", room="secret", ref="gone")
        talker.expect_event("ok", ref="gone")
        owner.send_json(type="join", room="secret")
        owner.expect_event("who", room="secret")
    history.complete()
    assert talker.expect_event("error", code="no_such_room")
    assert_no_history(owner, "secret")
    assert stored_texts(server, "secret") == []


def test_a_new_room_shows_nothing_an_ended_one_left(make_server: Callable[..., Server]) -> None:
    # Left over by a room that ended while its deletion could not run (the purge at start
    # failed, say): a room made anew deletes it before its first replay.
    server = make_server()
    assert server.store is not None
    server.store.append(sender="ghost", text="SECRET-1 left over", room="attic")
    guest = json_client(server, "guest")
    guest.send_json(type="join", room="attic")
    guest.expect_event("who", room="attic")
    assert_no_history(guest, "attic")
    assert stored_texts(server, "attic") == []


def test_a_kept_room_keeps_its_history(make_server: Callable[..., Server]) -> None:
    server = make_server()
    alice = json_client(server, "alice")
    alice.send_json(type="register", password=PASSWORD, ref="reg")
    alice.expect_event("logged_in", ref="reg")
    alice.send_json(type="join", room="club")
    alice.expect_event("who", room="club")
    alice.send_json(type="say", room="club", text="for later", ref=1)
    alice.expect_event("ok", ref=1)
    alice.send_json(type="leave", room="club", ref=2)
    alice.expect_event("ok", ref=2)
    guest = json_client(server, "guest")
    guest.send_json(type="join", room="club")
    guest.expect_event("who", room="club")
    replay = guest.expect_event("message", room="club")
    assert replay["text"] == "for later" and replay["history"] is True
