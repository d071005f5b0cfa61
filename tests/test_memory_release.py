"""A connection that ends is freed by reference counting, at once: it leaves no reference
cycle for the garbage collector to find later.

`threadchat serve` runs the cycle collector rarely (docs/architecture.md, "Garbage
collection"), so whatever a closed connection left in a cycle (its socket object, outbox,
session, thread object and buffers) stayed in memory until a full collection: in the
1,000-client soak, 189,000 unreachable objects were found when one was forced, and RSS did
not come back to its baseline. Each test takes one protocol through a whole visit (log in,
join, talk, leave) with the collector off, and checks by weak references that the
connection's objects are gone once it has left.
"""

import contextlib
import gc
import json
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import WAIT, IrcClient, JsonClient, LineClient
from test_tls import ca, hello, tls_client, tls_server, trusting  # noqa: F401  (fixtures)
from test_udp import UdpClient, udp_clients  # noqa: F401  (a fixture)
from test_web import expect_irc, expect_json, web_clients  # noqa: F401  (a fixture)

from threadchat.app.server import Server


def _watch(server: Server, nick: str) -> list[weakref.ref]:
    """Weak references to `nick`'s connection objects and what each holds of its protocol
    (session, language, outbox, framing): all must die with the visit."""
    user = server.hub.find_user(nick)
    assert user is not None and user.connections
    watched = []
    for conn in user.connections:
        watched.append(weakref.ref(conn))
        for part in ("session", "language", "outbox", "protocol"):
            held = getattr(conn, part, None)
            if held is not None:
                with contextlib.suppress(TypeError):  # a class with __slots__ only
                    watched.append(weakref.ref(held))
    return watched


def _assert_freed(server: Server, nick: str, watched: list[weakref.ref]) -> None:
    """Nothing of `watched` is still alive once `nick` has left and the reader thread ended."""
    deadline = time.monotonic() + WAIT
    while server.hub.find_user(nick) is not None or any(
        t.name.startswith(("line-reader", "irc-reader", "web-reader"))
        for t in threading.enumerate()
    ):
        assert time.monotonic() < deadline, f"{nick} or a reader thread still there"
        time.sleep(0.01)
    # Late references (a commit's acknowledgement, a relay round) are let go within moments.
    while any(ref() is not None for ref in watched) and time.monotonic() < deadline:
        time.sleep(0.01)
    left = [type(ref()).__qualname__ for ref in watched if ref() is not None]
    assert left == [], left


@pytest.fixture
def collector_off() -> Iterator[None]:
    """With the collector off only reference counting frees what a visit leaves."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_text_mode_visit_leaves_no_cycle(server: Server, collector_off: None) -> None:
    client = LineClient(server.listener("line").port)
    client.send("alice")
    client.expect("--- in lobby:")
    watched = _watch(server, "alice")
    # What she says in the lobby stays among its recent messages after she has gone (for
    # replies and reactions); the person it names must not be kept alive by it.
    watched.append(weakref.ref(server.hub.find_user("alice")))  # type: ignore[arg-type]
    client.send("hello, lobby")
    client.send("/join den")
    client.expect("--- in den")
    client.send("hello")
    client.send("/quit")
    client.read_until_closed()
    client.close()
    _assert_freed(server, "alice", watched)


def test_a_json_visit_leaves_no_cycle(server: Server, collector_off: None) -> None:
    client = JsonClient(server.listener("line").port)
    client.send_json(type="hello", name="bob")
    client.expect_event("who", room="lobby")
    watched = _watch(server, "bob")
    client.send_json(type="join", room="den")
    client.expect_event("who", room="den")
    client.send_json(type="say", room="den", text="hi", ref="1")
    client.expect_event("ok", ref="1")
    client.close()
    _assert_freed(server, "bob", watched)


def test_an_irc_visit_leaves_no_cycle(server: Server, collector_off: None) -> None:
    client = IrcClient(server.listener("irc").port)
    client.register("carol", ("message-tags", "echo-message"))
    watched = _watch(server, "carol")
    client.send("JOIN #den")
    client.expect(lambda line: " 366 " in line)
    client.send("PRIVMSG #den :yo")
    client.expect("PRIVMSG #den")
    client.send("QUIT :bye")
    client.read_until_closed()
    client.close()
    _assert_freed(server, "carol", watched)


def test_a_udp_visit_leaves_no_cycle(
    server: Server,
    collector_off: None,
    udp_clients: Callable[..., UdpClient],  # noqa: F811
) -> None:
    client = udp_clients(server, "dave")
    client.expect_event("who", room="lobby")
    watched = _watch(server, "dave")
    client.send(type="join", room="den")
    client.expect_event("who", room="den")
    client.send(type="say", room="den", text="hi", ref="1")
    client.expect_event("ok", ref="1")
    client.send(type="quit")
    client.close()
    _assert_freed(server, "dave", watched)


@pytest.mark.parametrize("subprotocol", ["threadchat.json", "text.ircv3.net"])
def test_a_websocket_visit_leaves_no_cycle(
    server: Server,
    collector_off: None,
    web_clients: Callable[..., Any],  # noqa: F811
    subprotocol: str,
) -> None:
    ws = web_clients(subprotocol)
    if subprotocol == "threadchat.json":
        ws.send(json.dumps({"type": "hello", "name": "erin"}))
        expect_json(ws, "who", room="lobby")
        watched = _watch(server, "erin")
        ws.send(json.dumps({"type": "say", "room": "lobby", "text": "hi", "ref": "1"}))
        expect_json(ws, "ok", ref="1")
    else:
        ws.send("NICK erin")
        ws.send("USER erin 0 * :Erin")
        expect_irc(ws, lambda line: " 001 " in line)
        watched = _watch(server, "erin")
        ws.send("JOIN #den")
        expect_irc(ws, lambda line: " 366 " in line)
        ws.send("PRIVMSG #den :yo")
    # The library's protocol object, which its own frame parser holds while it runs.
    conn = server.hub.find_user("erin").connections[0]  # type: ignore[union-attr]
    watched.append(weakref.ref(conn.link._protocol))
    del conn
    ws.close()
    _assert_freed(server, "erin", watched)


@pytest.mark.parametrize("listener", ["line", "irc"])
def test_a_connection_that_never_logs_in_leaves_no_cycle(
    server: Server, collector_off: None, listener: str
) -> None:
    client = LineClient(server.listener(listener).port)
    deadline = time.monotonic() + WAIT
    while not server.connections():
        assert time.monotonic() < deadline, "the connection was not accepted"
        time.sleep(0.01)
    [conn] = server.connections()
    watched = [weakref.ref(conn), weakref.ref(conn.outbox)]
    del conn
    client.close()
    _assert_freed(server, "nobody", watched)


def test_a_json_visit_over_tls_leaves_no_cycle(
    tls_server: Server,  # noqa: F811
    ca: trustme.CA,  # noqa: F811
    tmp_path: Path,
    collector_off: None,
) -> None:
    client = hello(tls_client(tls_server.listener("line").port, trusting(ca, tmp_path)), "fay")
    watched = _watch(tls_server, "fay")
    client.send_json(type="say", room="lobby", text="hi", ref="1")
    client.expect_event("ok", ref="1")
    client.close()
    _assert_freed(tls_server, "fay", watched)
