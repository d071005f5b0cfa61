"""Benchmarks of issue 15: full-text search over a large history, and an always-on catch-up.

    python -m bench.devices_bench search [--messages 1000000] [--repeat 50]
    python -m bench.devices_bench catchup [--messages 10000]

`search` fills a fresh store with generated messages (words drawn from a Zipf-like
vocabulary, 20 rooms, 200 senders), indexed 10,000 at a time as the store's writer does,
then times each kind of query the protocols offer (a common word, a rare word, a phrase, a
prefix, filters by room and author, a user in 3 of the 20 rooms), giving p50 and p99 per
kind, and the index's size on disk (dbstat). `catchup` starts a real server, makes an
account always-on, takes its last connection away, has another client send N messages to
its room, then reconnects it over IRC and times the catch-up to its last line.

Each run appends one JSON line to bench/results/devices.jsonl. Insert throughput with and
without the index is `python -m bench.store_bench --fts both`.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import platform
import random
import socket
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from threadchat.core.search import build_search
from threadchat.store.sqlite import DB_FILENAME, SQLiteStore, _index_statements

RESULTS = Path(__file__).resolve().parent / "results" / "devices.jsonl"
ROOMS = [f"room{i}" for i in range(20)]
SENDERS = [f"user{i}" for i in range(200)]
VOCABULARY = 20_000
SEED = 15


def _words(rng: random.Random) -> list[str]:
    """A vocabulary whose word n is drawn about 1/n as often (chat text is like that)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(words, key=lambda w: rng.random())


def fill(directory: str, count: int, rng: random.Random) -> list[str]:
    """`count` generated messages in a store at `directory` (schema and triggers migrated as
    the server does); returns the vocabulary, most frequent first."""
    SQLiteStore(directory).close()  # creates the schema, FTS5 table and triggers
    vocabulary = _words(rng)
    weights = list(itertools.accumulate(1 / (n + 1) for n in range(VOCABULARY)))
    db = sqlite3.connect(Path(directory) / DB_FILENAME)
    now = int(time.time() * 1000) - count
    batch = 10_000
    for start in range(0, count, batch):
        rows = []
        for n in range(start, min(count, start + batch)):
            room = ROOMS[n % len(ROOMS)]
            text = " ".join(rng.choices(vocabulary, cum_weights=weights, k=rng.randint(5, 14)))
            rows.append((now + n, room, room, SENDERS[rng.randrange(len(SENDERS))], text))
        with db:
            db.executemany(
                "INSERT INTO messages (ts, room_key, room, sender, text) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        with db:  # as the store's writer does after its commits
            _index_statements(db)
    db.close()
    return vocabulary


def index_bytes(directory: str) -> int:
    db = sqlite3.connect(Path(directory) / DB_FILENAME)
    try:
        (size,) = db.execute(
            "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'messages_fts%'"
        ).fetchone()
    finally:
        db.close()
    return int(size or 0)


def run_search(count: int, repeat: int) -> dict[str, Any]:
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        vocabulary = fill(tmp, count, rng)
        filled = time.perf_counter() - began
        size = index_bytes(tmp)
        db_size = (Path(tmp) / DB_FILENAME).stat().st_size
        common, middle, rare = vocabulary[0], vocabulary[200], vocabulary[15_000]
        kinds: dict[str, tuple[str, dict[str, Any], list[str]]] = {
            "common word": (common, {}, ROOMS),
            "rare word": (rare, {}, ROOMS),
            "two words": (f"{middle} {vocabulary[300]}", {}, ROOMS),
            "phrase": (f'"{vocabulary[0]} {vocabulary[1]}"', {}, ROOMS),
            "prefix": (vocabulary[50][:3] + "*", {}, ROOMS),
            "in one room": (middle, {"room": "room7"}, ROOMS),
            "from one author": (middle, {"sender": "user42"}, ROOMS),
            "member of 3 rooms": (rare, {}, ROOMS[:3]),
            "rare, from one author": (rare, {"sender": "user42"}, ROOMS),
        }
        per_kind: dict[str, dict[str, float]] = {}
        with SQLiteStore(tmp) as store:
            for kind, (words, filters, rooms) in kinds.items():
                query = build_search(words, limit=20, **filters)
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    found = store.search(query, rooms, None)
                    times.append(time.perf_counter() - t0)
                cuts = statistics.quantiles(times, n=100)
                per_kind[kind] = {
                    "p50_ms": round(cuts[49] * 1000, 3),
                    "p99_ms": round(cuts[98] * 1000, 3),
                    "results": len(found),
                }
    return {
        "bench": "search",
        "messages": count,
        "repeat": repeat,
        "fill_s": round(filled, 1),
        "index_mib": round(size / 2**20, 1),
        "db_mib": round(db_size / 2**20, 1),
        "queries": per_kind,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _Line:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buffer = b""

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\r\n" for line in lines).encode())

    def until(self, needle: bytes) -> None:
        while needle not in self.buffer:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(needle)
            self.buffer += chunk
            # Keep only a tail that may hold the start of the needle.
            if needle not in self.buffer:
                self.buffer = self.buffer[-len(needle) :]


def run_catchup(count: int) -> dict[str, Any]:
    from threadchat.app.server import Server  # the server only for this run
    from threadchat.config import Config

    password = "catch-up-password"
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(flood_rate=0, log_level="warning", data_dir=tmp, udp_port=0)
        server = Server(config, ephemeral_ports=True)
        server.start()
        try:
            line = server.listener("line").port
            irc = server.listener("irc").port
            alice = _Line(line)
            alice.send(json.dumps({"type": "hello", "name": "alice"}))
            alice.send(json.dumps({"type": "register", "password": password, "ref": "r"}))
            alice.send(json.dumps({"type": "always_on", "on": True, "ref": "a"}))
            alice.send(json.dumps({"type": "ping", "token": "set", "ref": "p"}))
            alice.until(b'"token":"set"')
            alice.sock.close()
            bob = _Line(line)
            bob.send(json.dumps({"type": "hello", "name": "bob"}))
            for n in range(count):
                bob.send(json.dumps({"type": "say", "room": "lobby", "text": f"missed {n}"}))
            bob.send(json.dumps({"type": "say", "room": "lobby", "text": "the last", "ref": "e"}))
            bob.until(b'"ref":"e"')
            phone = _Line(irc)
            token = base64.b64encode(f"alice\0alice\0{password}".encode()).decode()
            began = time.perf_counter()
            phone.send(
                "CAP LS 302",
                "CAP REQ :sasl batch server-time message-tags",
                "NICK alice",
                "USER alice 0 * :Alice",
                "AUTHENTICATE PLAIN",
                f"AUTHENTICATE {token}",
                "CAP END",
            )
            phone.until(b":the last\r\n")
            elapsed = time.perf_counter() - began
        finally:
            server.stop()
    return {
        "bench": "always_on_catchup",
        "messages": count + 1,
        "seconds_to_last": round(elapsed, 3),
        "msgs_per_s": round((count + 1) / elapsed, 1),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("search", "catchup"))
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=50, help="runs of each search query")
    parser.add_argument("--note", default="", help="recorded with the result (e.g. 'loaded')")
    args = parser.parse_args()
    if args.what == "search":
        result = run_search(args.messages or 1_000_000, args.repeat)
    else:
        result = run_catchup(args.messages or 10_000)
    if args.note:
        result["note"] = args.note
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
