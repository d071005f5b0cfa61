"""A canary pair: two JSON clients in a room of their own, one saying a message every 0.3 s
and the other waiting to hear it, to measure what an attack elsewhere costs everyone else.

Used by the attack benchmarks (bench/connect_flood_bench.py, bench/attack_canary.py) and by
the fault tests (tests/test_faults.py). `round_trips` holds every round trip in seconds;
`lost` counts messages not heard within TIMEOUT_S.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

TIMEOUT_S = 10.0
CANARY_PERIOD = 0.3


class Canary:
    """Two JSON clients in a room of their own; one says, the other must hear it."""

    def __init__(self, port: int, room: str = "canary") -> None:
        self.room = room
        self.speaker = self._client(port, f"{room}-a", room)
        self.listener = self._client(port, f"{room}-b", room)
        self.buffer = b""
        self.round_trips: list[float] = []
        self.lost = 0
        self.stop = threading.Event()

    @staticmethod
    def _client(port: int, name: str, room: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        # Out of the lobby, where an attack's traffic would fill a speaker that never reads.
        for request in (
            {"type": "hello", "name": name},
            {"type": "join", "room": room},
            {"type": "leave", "room": "lobby"},
        ):
            sock.sendall((json.dumps(request) + "\n").encode())
        return sock

    def _heard(self, text: str, deadline: float) -> bool:
        while True:
            while b"\n" in self.buffer:
                line, _, self.buffer = self.buffer.partition(b"\n")
                event = json.loads(line)
                if event.get("type") == "message" and event.get("text") == text:
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.listener.settimeout(remaining)
            try:
                chunk = self.listener.recv(65536)
            except TimeoutError:
                return False
            if not chunk:
                return False
            self.buffer += chunk

    def run(self) -> None:
        time.sleep(0.5)  # both are in the room (their joins went first on each socket)
        n = 0
        while not self.stop.is_set():
            n += 1
            text = f"canary {n}"
            sent = time.monotonic()
            request = {"type": "say", "room": self.room, "text": text}
            self.speaker.sendall((json.dumps(request) + "\n").encode())
            if self._heard(text, sent + TIMEOUT_S):
                self.round_trips.append(time.monotonic() - sent)
            else:
                self.lost += 1
            self.stop.wait(max(0.0, CANARY_PERIOD - (time.monotonic() - sent)))

    def wait_for_round_trips(self, count: int) -> None:
        """Until `count` messages were sent and heard or lost (bounded by their timeouts)."""
        deadline = time.monotonic() + TIMEOUT_S * 2
        while len(self.round_trips) + self.lost < count and time.monotonic() < deadline:
            time.sleep(0.02)

    @property
    def worst_ms(self) -> float:
        return round(max(self.round_trips, default=0.0) * 1000, 1)

    def close(self) -> None:
        self.speaker.close()
        self.listener.close()


@contextmanager
def canary_running(port: int, room: str = "canary") -> Iterator[Canary]:
    """A canary pair exchanging messages for the duration of the block (then closed)."""
    canary = Canary(port, room)
    thread = threading.Thread(target=canary.run, name="canary", daemon=True)
    thread.start()
    try:
        # A first round trip before the attack, and one more after it: a stall at either end
        # shows, however short the attack.
        canary.wait_for_round_trips(1)
        yield canary
        canary.wait_for_round_trips(len(canary.round_trips) + canary.lost + 1)
    finally:
        canary.stop.set()
        thread.join(TIMEOUT_S * 2)
        canary.close()
