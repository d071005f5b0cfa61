"""Runs of stored room messages relayed as one chunk per member (Hub.relay_room_run).

The history relay thread hands the hub every message that was committed together; the hub
joins a run of messages to one room into one chunk per codec group. These tests check what
each member must still see: every message once, in order, and never their own.
"""

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import WAIT, JsonClient, LineClient

from threadchat.app.server import Server
from threadchat.core import events
from threadchat.core.hub import RoomRelay


def json_client(server: Server, name: str) -> JsonClient:
    client = JsonClient(server.listener("line").port)
    client.send_json(type="hello", name=name)
    client.expect_event("who", room="lobby")
    return client


def text_client(server: Server, name: str) -> LineClient:
    client = LineClient(server.listener("line").port)
    client.send(name)
    client.expect("--- in lobby:")
    return client


def texts_until(client: JsonClient, marker: str) -> list[tuple[str, str]]:
    """(sender, text) of every message `client` receives up to and without `marker`."""
    seen: list[tuple[str, str]] = []
    while True:
        event = client.read_event()
        if event["type"] != "message":
            continue
        if event["text"] == marker:
            return seen
        seen.append((event["from"], event["text"]))


def test_a_run_reaches_every_member_in_order_and_no_sender_gets_its_own(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    alice, bob, carol = (json_client(server, n) for n in ("alice", "bob", "carol"))
    dave = text_client(server, "dave")  # text mode: served one by one, not through a group
    hub = server.hub
    sender = {name: hub.find_user(name) for name in ("alice", "bob")}
    order = [("alice", "a1"), ("bob", "b1"), ("alice", "a2"), ("bob", "b2"), ("alice", "a3")]
    run = [
        (RoomRelay(hub, sender[name], "lobby", text, events.TEXT, None), {"id": i, "ts": 1.0})
        for i, (name, text) in enumerate(order, start=1)
    ]
    hub.relay_room_run(run)
    carol.send_json(type="say", room="lobby", text="marker")
    assert texts_until(alice, "marker") == [m for m in order if m[0] == "bob"]
    assert texts_until(bob, "marker") == [m for m in order if m[0] == "alice"]
    for name, text in order:
        dave.expect(f"{name}: {text}")
    dave.expect("carol: marker")
    # carol spoke last; what she received before is the whole run, in its order.
    carol_seen: list[tuple[str, str]] = []
    while len(carol_seen) < len(order):
        event = carol.read_event()
        if event["type"] == "message":
            carol_seen.append((event["from"], event["text"]))
    assert carol_seen == order


def test_a_message_whose_sender_left_is_skipped_and_the_rest_of_the_run_goes_out(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    alice, bob, carol = (json_client(server, n) for n in ("alice", "bob", "carol"))
    hub = server.hub
    a, b = hub.find_user("alice"), hub.find_user("bob")
    bob.send_json(type="leave", room="lobby", ref="left")
    bob.expect_event("ok", ref="left")
    run = [
        (RoomRelay(hub, a, "lobby", "a1", events.TEXT, None), {}),
        (RoomRelay(hub, b, "lobby", "from outside", events.TEXT, None), {}),
        (RoomRelay(hub, a, "lobby", "a2", events.TEXT, None), {}),
    ]
    hub.relay_room_run(run)
    alice.send_json(type="say", room="lobby", text="marker")
    assert texts_until(carol, "marker") == [("alice", "a1"), ("alice", "a2")]


def test_bursts_committed_together_keep_each_senders_order(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    alice, bob, carol = (json_client(server, n) for n in ("alice", "bob", "carol"))
    count = 20
    store = server.store
    assert store is not None
    # Another writer holds the database, so both bursts wait for the same commits and reach
    # the relay thread together: their messages then form mixed runs.
    blocker = sqlite3.connect(Path(server.config.data_dir) / "threadchat.db", timeout=WAIT)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        for client, name in ((alice, "alice"), (bob, "bob")):
            lines = "".join(
                f'{{"type":"say","room":"lobby","text":"{name}-{i}"}}\n' for i in range(count)
            )
            client.send_raw(lines.encode())
        # The writer is stuck on the first burst's write; wait until the second one queues
        # behind it (bounded: if it never does, the runs are merely shorter).
        deadline = time.monotonic() + WAIT
        while store._queue.qsize() < 1 and time.monotonic() < deadline:
            threading.Event().wait(0.01)
    finally:
        blocker.rollback()
        blocker.close()
    bob_texts = [f"bob-{i}" for i in range(count)]
    alice_texts = [f"alice-{i}" for i in range(count)]
    seen: list[tuple[str, str]] = []
    while len(seen) < 2 * count:
        event = carol.read_event()
        if event["type"] == "message":
            seen.append((event["from"], event["text"]))
    assert [text for who, text in seen if who == "alice"] == alice_texts
    assert [text for who, text in seen if who == "bob"] == bob_texts
    carol.send_json(type="say", room="lobby", text="marker")
    assert texts_until(alice, "marker") == [("bob", t) for t in bob_texts]
    assert texts_until(bob, "marker") == [("alice", t) for t in alice_texts]


def test_without_history_a_burst_is_relayed_in_order_once_and_acknowledged_after(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(history=False)
    alice, bob, carol = (json_client(server, n) for n in ("alice", "bob", "carol"))
    count = 30
    lines = "".join(
        f'{{"type":"say","room":"lobby","text":"a-{i}","ref":{i}}}\n' for i in range(count)
    )
    alice.send_raw(lines.encode())
    expected = [("alice", f"a-{i}") for i in range(count)]
    seen: list[tuple[str, str]] = []
    while len(seen) < count:
        event = bob.read_event()
        if event["type"] == "message":
            seen.append((event["from"], event["text"]))
    assert seen == expected
    oks = []
    while len(oks) < count:
        event = alice.read_event()
        assert event["type"] != "message", "a sender got its own message back"
        if event["type"] == "ok":
            oks.append(event["ref"])
    assert oks == list(range(count))
    carol.send_json(type="say", room="lobby", text="marker")
    assert texts_until(alice, "marker") == []


def test_without_history_a_refused_line_in_a_burst_is_answered_and_the_rest_delivered(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(history=False)
    alice, bob = json_client(server, "alice"), json_client(server, "bob")
    burst = (
        '{"type":"say","room":"lobby","text":"first"}\n'
        '{"type":"say","room":"elsewhere","text":"nowhere","ref":"x"}\n'
        '{"type":"say","room":"lobby","text":"second"}\n'
    )
    alice.send_raw(burst.encode())
    assert alice.expect_event("error", ref="x")["code"] == "no_such_room"
    bob.expect_event("message", text="first")
    bob.expect_event("message", text="second")
