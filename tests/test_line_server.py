"""The native line protocol end to end: real sockets to a real server on 127.0.0.1."""

import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
from conftest import JsonClient, LineClient, ThreadLimit, unref

from threadchat.app.server import Server
from threadchat.transports import tcp

Connect = Callable[..., LineClient]


def test_message_reaches_every_other_user_not_the_sender(connect: Connect) -> None:
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    alice.send("hello everyone")
    assert unref(bob.expect("alice:")) == "alice: hello everyone"
    assert unref(carol.expect("alice:")) == "alice: hello everyone"
    # The sender sees the others joining, but never its own line.
    assert not [line for line in alice.quiet() if "hello everyone" in line]


def test_many_users_all_receive(connect: Connect) -> None:
    users = [connect(f"user{i}") for i in range(20)]
    users[0].send("ping all")
    for other in users[1:]:
        other.expect("user0: ping all")


def test_rooms_are_isolated_and_room_shown_when_in_several(connect: Connect) -> None:
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    alice.send("/join dev")
    alice.expect("--- in dev: alice")
    bob.send("/join dev")
    bob.expect("--- in dev:")
    alice.expect("--> bob joined dev")
    bob.send("dev talk")
    # alice is in lobby and dev, so she is shown which room the line came from.
    assert unref(alice.expect("bob:")) == "[dev] bob: dev talk"
    carol.send("lobby talk")
    assert unref(alice.expect("carol:")) == "[lobby] carol: lobby talk"
    assert not [line for line in carol.quiet() if "dev talk" in line]


def test_private_message_reaches_only_its_target(connect: Connect) -> None:
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    alice.send("/msg BOB psst")
    assert unref(bob.expect("psst")) == "[private] alice: psst"
    assert not [line for line in carol.quiet() if "psst" in line]
    alice.send("/msg nobody hi")
    assert alice.expect("!!!") == "!!! there is nobody called nobody"


def test_names_are_unique_case_insensitively_and_retry_keeps_connection(connect: Connect) -> None:
    connect("Alice")
    second = connect()
    second.send("alice")
    assert second.expect("!!!") == "!!! the name alice is taken"
    second.expect("choose another name")
    second.send("bad name!")
    assert "a name starts with" in second.expect("!!!")
    second.send("alice2")
    second.expect("--- welcome")


def test_join_leave_nick_topic_and_quit_notices(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    alice.expect("--> bob joined lobby")
    bob.send("/nick robert")
    assert alice.expect("known as") == "--- bob is now known as robert"
    bob.send("/topic welcome all")
    # alice created lobby, so only she may set its topic (mode +t).
    assert bob.expect("!!!") == "!!! only operators of lobby set its topic"
    alice.send("/topic welcome all")
    assert bob.expect("topic") == "--- alice set the topic of lobby: welcome all"
    bob.send("/me waves")
    assert unref(alice.expect("waves")) == "* robert waves"
    bob.send("/leave lobby bye for now")
    assert alice.expect("<--") == "<-- robert left lobby (bye for now)"
    bob.send("/join lobby")
    alice.expect("--> robert joined lobby")
    bob.send("/quit see you")
    assert alice.expect("<--") == "<-- robert quit (see you)"
    bob.read_until_closed()


def test_a_name_is_free_again_as_soon_as_its_quit_closes_the_connection(
    connect: Connect, server: Server
) -> None:
    # The server leaves the hub before it closes the socket: a client that reconnects the
    # moment it sees the close must get its name back, never "name in use".
    for _ in range(20):
        bob = connect("bob")
        bob.send("/quit")
        bob.read_until_closed()
        assert server.hub.find_user("bob") is None


def test_dropped_connection_is_announced_with_reason(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    bob.close()
    assert alice.expect("<--") == "<-- bob quit (EOF)"


def test_connection_reset_mid_session_ends_that_user_only(connect: Connect) -> None:
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    bob.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bob.send_raw(b"half a line without newline")
    bob.close()
    # Linux reports an RST that lands right behind data as EOF on the next recv, so either
    # reason is the kernel's truth; what matters is that only bob is gone.
    assert alice.expect("<-- bob") in ("<-- bob quit (connection reset)", "<-- bob quit (EOF)")
    carol.send("still here")
    alice.expect("carol: still here")


def test_commands_list_rooms_who_help(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    bob.send("/join dev")
    bob.expect("--- in dev")
    alice.send("/rooms")
    assert alice.expect("--- dev") == "--- dev (1 member)"
    assert alice.expect("--- lobby") == "--- lobby (2 members)"
    alice.send("/who dev")
    assert alice.expect("--- in dev") == "--- in dev: bob"
    alice.send("/help")
    alice.expect("/msg NICK text")
    alice.send("/frobnicate")
    assert alice.expect("!!!") == "!!! unknown command /frobnicate; try /help"
    alice.send("//slash at start")
    assert unref(bob.expect("slash")) == "[lobby] alice: /slash at start"


def test_plain_line_with_no_room_gets_an_error(connect: Connect) -> None:
    alice = connect("alice")
    alice.send("/leave")
    alice.expect("<-- alice left lobby")
    alice.send("anyone?")
    assert alice.expect("!!!") == "!!! you are in no room; /join ROOM first"


# -- bad input --------------------------------------------------------------------------------


def test_overlong_line_is_dropped_with_error_connection_stays(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(max_line=100)
    port = server.listener("line").port
    alice, bob = LineClient(port), LineClient(port)
    alice.send("alice")
    alice.expect("--- in lobby")
    bob.send("bob")
    alice.expect("--> bob joined")
    alice.send("x" * 101, "short one")
    assert alice.expect("!!!") == "!!! line dropped: over 100 bytes"
    assert unref(bob.expect("alice:")) == "alice: short one"


def test_64k_without_newline_closes_connection(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    chunk = b"y" * 8192
    try:
        for _ in range(10):
            bob.send_raw(chunk)
    except OSError:
        pass  # the server may already have closed
    lines = bob.read_until_closed()
    assert "!!! no newline in 64 KiB: closing" in lines
    assert alice.expect("<-- bob") == "<-- bob quit (protocol error)"


def test_a_lone_cr_ends_a_line(connect: Connect) -> None:
    alice, bob = connect(), connect("bob")
    # Answered at once: the name is not held back until an LF that never comes.
    alice.send_raw(b"alice\r")
    alice.expect("--- in lobby")
    alice.send_raw(b"\nfirst\rsecond\r")
    assert unref(bob.expect("alice:")) == "alice: first"
    assert unref(bob.expect("alice:")) == "alice: second"
    assert not [line for line in alice.quiet() if line.startswith("!!!")]


def test_invalid_utf8_and_control_characters_are_refused(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    alice.send_raw(b"caf\xc3(\n")
    assert alice.expect("!!!") == "!!! line dropped: it is not valid UTF-8"
    alice.send("evil \x1b[2J escape")
    assert "control characters" in alice.expect("!!!")
    alice.send("nul \x00 byte")
    assert "control characters" in alice.expect("!!!")
    alice.send("fine again")
    assert unref(bob.expect("alice:")) == "alice: fine again"
    assert not [line for line in bob.quiet() if "escape" in line or "byte" in line]


def test_names_with_control_characters_or_too_long_are_refused(connect: Connect) -> None:
    client = connect()
    client.send("ev\x1bil")
    assert "control characters" in client.expect("!!!")
    client.send("x" * 31)
    assert "at most 30" in client.expect("!!!")
    client.send("ok_name")
    client.expect("--- welcome")


def test_flood_pauses_reading_and_says_so_once(make_server: Callable[..., Server]) -> None:
    server = make_server(flood_burst=5, flood_rate=50)
    port = server.listener("line").port
    flooder, listener = LineClient(port), LineClient(port)
    flooder.send("flooder")
    flooder.expect("--- in lobby")
    listener.send("listener")
    flooder.expect("--> listener joined")
    started = time.monotonic()
    flooder.send(*[f"line {i}" for i in range(30)])
    for i in range(30):
        listener.expect(f"flooder: line {i}")
    elapsed = time.monotonic() - started
    # 25 lines past the burst at 50 lines/s cannot arrive in less than about half a second.
    assert elapsed >= 0.4
    notices = [line for line in flooder.quiet() if "flood control" in line]
    assert len(notices) == 1


def test_silent_connection_without_name_is_closed(make_server: Callable[..., Server]) -> None:
    server = make_server(name_timeout=0.5)
    client = LineClient(server.listener("line").port)
    lines = client.read_until_closed()
    assert lines == ["!!! no name given in time"]


def test_idle_json_client_is_pinged_then_dropped(make_server: Callable[..., Server]) -> None:
    server = make_server(ping_interval=0.5, ping_timeout=1)
    port = server.listener("line").port
    watcher, idle = LineClient(port), JsonClient(port)
    watcher.send("watcher")
    watcher.expect("--- in lobby")
    idle.send_json(type="hello", name="idle")
    ping = idle.expect_event("ping")
    idle.send_json(type="pong", token=ping["token"])
    idle.expect_event("ping")
    # No answer this time.
    assert watcher.expect("<-- idle") == "<-- idle quit (timed out)"


# -- slow readers and shutdown ----------------------------------------------------------------


def test_client_that_never_reads_is_cut_off_while_fast_reader_gets_everything(
    make_server: Callable[..., Server],
) -> None:
    # One recv (64 KiB) can queue that much for each recipient before the batch flushes.
    server = make_server(sendq=256 * 1024)
    port = server.listener("line").port
    sender, fast, slow = LineClient(port), LineClient(port), LineClient(port, rcvbuf=4096)
    for client, name in ((sender, "sender"), (fast, "fast"), (slow, "slow")):
        client.send(name)
        client.expect("--- in lobby")
    count, per_batch = 3000, 100
    payload = "z" * 1000
    received: list[str] = []
    others: list[str] = []
    for start in range(0, count, per_batch):
        sender.send(*[f"{i} {payload}" for i in range(start, start + per_batch)])
        # Pace the sender by the fast reader, which keeps up; the slow one never reads.
        while len(received) < start + per_batch:
            line = fast.read_line()
            (received if line.startswith("sender:") else others).append(line)
    assert [int(line.split()[1]) for line in received] == list(range(count))
    others += fast.quiet()
    assert "<-- slow quit (send queue exceeded)" in others


def test_shutdown_tells_everyone_and_closes_all_sockets(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    port = server.listener("line").port
    clients = [LineClient(port) for _ in range(5)]
    for i, client in enumerate(clients):
        client.send(f"user{i}")
        client.expect("--- in lobby")
    before = set(threading.enumerate())
    server.stop()
    for client in clients:
        assert "--- the server is shutting down" in client.read_until_closed()
    leftover = [t for t in threading.enumerate() if t.is_alive() and t in before]
    assert [t.name for t in leftover if "reader" in t.name or "acceptor" in t.name] == []
    with pytest.raises(OSError):
        LineClient(port)


def test_json_mode_events_have_type_id_and_timestamp(
    connect_json: Callable[..., JsonClient],
) -> None:
    alice, bob = connect_json("alice"), connect_json("bob")
    alice.send_json(type="say", room="lobby", text="hi bob", ref="r1")
    assert alice.expect_event("ok")["ref"] == "r1"
    message = bob.expect_event("message")
    assert message["from"] == "alice" and message["text"] == "hi bob"
    assert message["room"] == "lobby" and message["action"] is False
    assert isinstance(message["id"], int) and message["ts"].endswith("Z")
    bob.send("{not json")
    assert bob.expect_event("error")["code"] == "bad_json"
    bob.send_json(type="teleport")
    assert bob.expect_event("error")["code"] == "unknown_type"
    bob.send_json(type="say", room="lobby", text=42, ref=7)
    error = bob.expect_event("error")
    assert error["code"] == "bad_request" and error["ref"] == 7
    bob.send_json(type="msg", to="alice", text="secret")
    assert alice.expect_event("private")["text"] == "secret"


def test_text_and_json_users_share_a_room(
    connect: Connect, connect_json: Callable[..., JsonClient]
) -> None:
    text_user, json_user = connect("texty"), connect_json("jason")
    text_user.expect("--> jason joined lobby")
    text_user.send("/me waves")
    event = json_user.expect_event("message")
    assert event["from"] == "texty" and event["action"] is True
    json_user.send_json(type="say", room="lobby", text="hello texty")
    assert unref(text_user.expect("jason:")) == "jason: hello texty"


def test_big_rooms_do_not_announce_arrivals_and_departures(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(quiet_room_size=2)
    port = server.listener("line").port
    alice, bob, carol = LineClient(port), LineClient(port), LineClient(port)
    alice.send("alice")
    alice.expect("--- in lobby")
    bob.send("bob")
    alice.expect("--> bob joined lobby")
    carol.send("carol")
    assert carol.expect("--> carol") == "--> carol joined lobby"
    assert carol.expect("members") == "--- lobby has 3 members; /who lists them"
    carol.send("/quit")
    carol.read_until_closed()
    bob.send("still talking")
    # The very next line alice reads is bob's: nothing of carol coming or going.
    assert unref(alice.read_line()) == "bob: still talking"
    alice.send("/who")
    assert alice.expect("--- in lobby") == "--- in lobby: alice, bob"


# -- resource limits ----------------------------------------------------------------------------


def test_at_a_thread_limit_clients_are_refused_then_served_again(
    make_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()
    limit = ThreadLimit(server)
    port = server.listener("line").port
    limit.reached.set()
    # Several, to see that the acceptor lives on after a failure and logs it only once.
    for _ in range(3):
        refused = LineClient(port)
        assert refused.read_until_closed() == [
            "!!! the server cannot take more connections right now; try again later"
        ]
        refused.close()
    limit.reached.clear()
    alice = LineClient(port)
    alice.send("alice")
    alice.expect("--- in lobby")
    server.stop()
    assert "--- the server is shutting down" in alice.read_until_closed()
    failures = [m for m in caplog.messages if "refusing new connections" in m]
    assert failures == [
        "line: cannot take on a new connection: RuntimeError: can't start new thread; "
        "refusing new connections until it works again"
    ]
    assert "line: accepting connections again (failures meanwhile: 3)" in caplog.messages


def test_accepted_sockets_have_tcp_keepalive(server: Server, connect: Connect) -> None:
    # Text mode has no ping a person could answer: a peer gone without a FIN is found only by
    # keepalive probes, which the peer's kernel answers for it.
    connect("alice")
    (conn,) = server.connections()
    sock = conn.sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    for name, value in tcp.KEEPALIVE_TIMING:
        if hasattr(socket, name):
            assert sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name)) == value
