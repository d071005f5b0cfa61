"""UDP users under real load: many TCP clients fanning out on the same hub, on real sockets."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from conftest import WAIT, JsonClient
from test_udp import UdpClient

from bench.attack_canary import Drain
from threadchat.app.server import Server

# TCP members of the busy room: a reader thread each on the server, as in the soak.
MEMBERS = 300
# Of them, those sending to the room as fast as the server takes it (no flood control in
# tests): each message is fanned out to every member under the hub lock.
FLOODERS = 40
UDP_USERS = 20
MESSAGES = 5
# The UDP clients give up after this long without an acknowledgement (10 s by default): the
# server acknowledges without waiting for the hub lock, so a shorter wait must do.
GIVE_UP_AFTER = 4.0


def json_member(port: int, name: str, room: str) -> socket.socket:
    """A JSON client in `room` only (out of the lobby, whose churn is not the point)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    requests = [
        {"type": "hello", "name": name},
        {"type": "join", "room": room},
        {"type": "leave", "room": "lobby"},
    ]
    sock.sendall(b"".join(json.dumps(request).encode() + b"\n" for request in requests))
    return sock


def flood(port: int, name: str, stop: threading.Event, sent: list[int]) -> None:
    line = (json.dumps({"type": "say", "room": "busy", "text": "x" * 100}) + "\n").encode()
    with json_member(port, name, "busy") as sock:
        sock.settimeout(WAIT)
        sock.shutdown(socket.SHUT_RD)
        count = 0
        while not stop.is_set():
            try:
                sock.sendall(line * 10)
            except OSError:
                break
            count += 10
        sent.append(count)


@contextlib.contextmanager
def busy_room(server: Server) -> Iterator[Callable[[], int]]:
    """MEMBERS TCP clients in a room, FLOODERS of them sending to it without pause; yields
    a function that tells how many bytes the members have received so far."""
    port = server.listener("line").port
    members = [json_member(port, f"member{n}", "busy") for n in range(MEMBERS - FLOODERS)]
    drain = Drain(members)
    stop = threading.Event()
    sent: list[int] = []
    flooders = [
        threading.Thread(target=flood, args=(port, f"flooder{n}", stop, sent))
        for n in range(FLOODERS)
    ]
    for thread in flooders:
        thread.start()
    try:
        yield lambda: drain.received
    finally:
        stop.set()
        for thread in flooders:
            thread.join(WAIT)
        drain.close()
        for sock in members:
            sock.close()


def udp_visit(port: int, name: str, failures: queue.Queue[str]) -> list[str]:
    """Log in, join, send MESSAGES messages each acknowledged with ok, leave; the texts."""
    client = UdpClient(port, name, channel_options={"give_up_after": GIVE_UP_AFTER})
    texts = [f"{name} says {k}" for k in range(MESSAGES)]
    try:
        client.expect_event("welcome", timeout=WAIT * 4, name=name)
        client.send(type="join", room="quiet", ref="join")
        client.expect_event("ok", timeout=WAIT * 4, ref="join")
        for k, text in enumerate(texts):
            client.send(type="say", room="quiet", text=text, ref=k)
        for k in range(MESSAGES):
            client.expect_event("ok", timeout=WAIT * 4, ref=k)
    except AssertionError as problem:
        failures.put(f"{name}: {problem}"[:300])
    finally:
        try:
            gone = client.disconnected.get_nowait()
        except queue.Empty:
            gone = None
        if gone is not None:
            failures.put(f"{name}: {gone}")
        client.close()
    return texts


def test_udp_users_get_through_while_many_tcp_clients_fan_out(
    server: Server, connect_json: Callable[..., JsonClient]
) -> None:
    """20 UDP users log in, join a room, send 5 messages each and leave, while 300 TCP
    clients share a room into which 40 of them send without pause: no UDP session fails,
    every message is acknowledged with ok and heard, in order, by a member of its room.

    At this size it passes on the receive thread that handled requests itself too (the
    1,000-client soak is what showed that one failing; `test_udp.py`'s hub-lock test is the
    one that tells them apart): it guards the hand-over to the workers under load."""
    assert server.udp is not None
    watcher = connect_json("watcher")
    watcher.send_json(type="join", room="quiet", ref="j")
    watcher.expect_event("ok", ref="j")
    watcher.send_json(type="leave", room="lobby", ref="l")
    watcher.expect_event("ok", ref="l")
    failures: queue.Queue[str] = queue.Queue()
    sent: dict[str, list[str]] = {}

    def visit(name: str) -> None:
        sent[name] = udp_visit(server.udp.port, name, failures)  # type: ignore[union-attr]

    visitors = [threading.Thread(target=visit, args=(f"udp{n}",)) for n in range(UDP_USERS)]
    with busy_room(server) as received:
        deadline = time.monotonic() + WAIT * 4
        while received() < 100_000:  # the flood is under way before the UDP users come
            assert time.monotonic() < deadline, "the busy room got next to nothing"
            time.sleep(0.05)
        for thread in visitors:
            thread.start()
        for thread in visitors:
            thread.join(WAIT * 12)
    assert not any(thread.is_alive() for thread in visitors)
    assert list(failures.queue) == []
    heard: dict[str, list[str]] = {}
    expected = UDP_USERS * MESSAGES
    while sum(map(len, heard.values())) < expected:
        event: dict[str, Any] = watcher.expect_event("message", timeout=WAIT * 2)
        heard.setdefault(event["from"], []).append(event["text"])
    assert heard == sent
