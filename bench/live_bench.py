"""Issue 14's two measurements: a typing storm, and history pages with reactions and edits.

typing: U JSON users in one room (quiet-room size raised above U, so typing is relayed), a
few of them saying timed messages. The same run measures the other users' message latency
and the server's CPU time first with nobody typing, then with every user sending a typing
notice as often as the server lets them (one per 3 s, each refusal answered). Latency is from
the send to the receipt by one listener; the server runs in this process, its CPU is read
per thread (the server's threads only, not the clients').

history: a store with N room messages; the p99 of a 50-message page (the latest, and pages
back from random points) on plain messages, then after reactions on half of them and edits
of a tenth (every reacted message with 1-3 reactions), so the page query must join them.
Issue 14 asks the second p99 to stay within 1.2 times the first.

history-count: the same pages, their work counted instead of timed (valgrind's callgrind:
the instructions of a process reading N pages less those of one reading none, per page), so
the two kinds of page compare on a loaded machine; it says nothing of the p99's tail.

Each appends one JSON line per run to bench/results/live.jsonl. Timed figures need a quiet
machine.

    python -m bench.live_bench typing [--users 200] [--seconds 10]
    python -m bench.live_bench history [--messages 100000] [--pages 2000]
    python -m bench.live_bench history-count [--messages 100000] [--pages 400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from threadchat.app.server import Server
from threadchat.config import Config
from threadchat.core.history import HistoryQuery, Ref
from threadchat.store.base import NewMessage
from threadchat.store.schema import summarize_reactions
from threadchat.store.sqlite import SQLiteStore

RESULTS = Path(__file__).resolve().parent / "results" / "live.jsonl"
TIMEOUT = 60.0
TYPING_EVERY = 3.0


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu(bench_threads: list[threading.Thread]) -> float:
    """The process's CPU seconds less those of the benchmark's own (client) threads: the
    server's share, its threads that ended included."""
    return time.process_time() - sum(_thread_cpu(t.native_id or 0) for t in bench_threads)


class _User:
    def __init__(self, port: int, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.sendall(json.dumps({"type": "hello", "name": name}).encode() + b"\n")
        self.buffer = b""
        while b'"type":"welcome"' not in self.buffer:
            self.buffer += self.sock.recv(65536)

    def send(self, **obj: Any) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")


def _listen(user: _User, sent: dict[str, float], latencies: list[float], stop: threading.Event):
    user.sock.settimeout(0.2)
    buffer = b""
    while not stop.is_set():
        try:
            chunk = user.sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        now = time.perf_counter()
        for line in lines:
            if b'"type":"message"' in line:
                text = json.loads(line)["text"]
                if text in sent:
                    latencies.append(now - sent.pop(text))


def _drain(users: list[_User], stop: threading.Event) -> None:
    """Read and drop what the other users receive, so no send queue fills."""
    for user in users:
        user.sock.setblocking(False)
    while not stop.is_set():
        for user in users:
            try:
                while user.sock.recv(1 << 20):
                    pass
            except (BlockingIOError, OSError):
                pass
        time.sleep(0.01)


def _phase(
    speakers: list[_User],
    typists: list[_User],
    seconds: float,
    sent: dict[str, float],
    tag: str,
    bench_threads: list[threading.Thread],
) -> float:
    """Speakers say a message every 50 ms for `seconds`; typists send typing notices at the
    rate the server allows. Returns the server's CPU seconds used."""
    start_cpu = _server_cpu(bench_threads)
    deadline = time.monotonic() + seconds
    count = 0
    next_typing = time.monotonic()
    while time.monotonic() < deadline:
        for speaker in speakers:
            text = f"{tag}-{count}"
            sent[text] = time.perf_counter()
            speaker.send(type="say", room="lobby", text=text)
            count += 1
        if typists and time.monotonic() >= next_typing:
            for typist in typists:
                typist.send(type="typing", room="lobby", state="active")
            next_typing += TYPING_EVERY
        time.sleep(0.05)
    time.sleep(1.0)  # let the last messages arrive
    return _server_cpu(bench_threads) - start_cpu


def typing_storm(users: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = replace(
            Config(),
            flood_rate=0,
            data_dir=tmp,
            history_on_join=0,
            quiet_room_size=users + 10,
            log_level="warning",
        )
        server = Server(config, ephemeral_ports=True)
        server.start()
        try:
            port = server.listener("line").port
            listener = _User(port, "listener")
            crowd = [_User(port, f"u{n}") for n in range(users)]
            speakers = crowd[:4]
            sent: dict[str, float] = {}
            stop = threading.Event()
            results: dict[str, Any] = {}
            latencies: list[float] = []
            threads = [
                threading.Thread(target=_listen, args=(listener, sent, latencies, stop)),
                threading.Thread(target=_drain, args=(crowd, stop)),
            ]
            for thread in threads:
                thread.start()
            bench_threads = [threading.current_thread(), *threads]
            for phase, typists in (("quiet", []), ("typing", crowd)):
                latencies.clear()
                cpu = _phase(speakers, typists, seconds, sent, phase, bench_threads)
                results[phase] = {
                    "server_cpu_s": round(cpu, 3),
                    "messages": len(latencies),
                    "p50_ms": round(_p(latencies, 0.5) * 1000, 2),
                    "p99_ms": round(_p(latencies, 0.99) * 1000, 2),
                }
            stop.set()
            for thread in threads:
                thread.join(TIMEOUT)
        finally:
            server.stop()
    return {"users": users, "seconds": seconds, **results}


def _fill(data_dir: Path, messages: int) -> tuple[int, int]:
    """A store holding `messages` room messages; their first and last ids."""
    store = SQLiteStore(data_dir)
    try:
        batch = [
            NewMessage(sender=f"u{i % 50}", text=f"message {i} " + "x" * 40, room="lobby")
            for i in range(messages)
        ]
        for start in range(0, messages, 1000):
            store.append_many(batch[start : start + 1000]).result(TIMEOUT)
        [last] = store.room_history("lobby", HistoryQuery.latest(1))
        return last.id - messages + 1, last.id
    finally:
        store.close()


def _liven(db_path: Path, first_id: int, last_id: int) -> None:
    """Reactions on every other message (1 to 3 each) and an edit of every tenth, written
    in bulk as the store writes them one by one (the same rows, not the same path)."""
    now = time.time_ns() // 1000
    reactions = [
        (msgid, f"n:u{r}", ("👍", "🎉", "❤")[r], f"u{r}", now)
        for msgid in range(first_id, last_id + 1)
        if msgid % 2 == 0
        for r in range(1 + msgid % 3)
    ]
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO reactions (message_id, reactor_key, reaction, reactor, ts)"
            " VALUES (?, ?, ?, ?, ?)",
            reactions,
        )
        conn.execute("UPDATE messages SET text = 'edited ' || id, edited = 1 WHERE id % 10 = 0")
        # Each message's row holds its reactions too (schema v6), as the store's writer
        # keeps them: the same function the upgrade to v6 uses.
        summarize_reactions(conn)
    conn.close()


def history_pages(messages: int, pages: int) -> dict[str, Any]:
    rng = random.Random(14)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        first_id, last_id = _fill(data_dir, messages)
        points = [rng.randrange(first_id + 50, last_id + 1) for _ in range(pages)]

        def measure() -> tuple[dict[str, float], Path]:
            # The same pages both times: a quarter the latest page, the rest pages back
            # from random points; the store opened afresh, as after a restart.
            store = SQLiteStore(data_dir)
            times = []
            cpu = []
            try:
                for n, point in enumerate(points):
                    if n % 4 == 0:
                        query = HistoryQuery.latest(50)
                    else:
                        query = HistoryQuery.before(Ref.msgid(point), 50)
                    began, began_cpu = time.perf_counter(), time.thread_time()
                    store.room_history("lobby", query)
                    times.append(time.perf_counter() - began)
                    cpu.append(time.thread_time() - began_cpu)
                db_path = store.db_path
            finally:
                store.close()
            # Wall time is what a client waits; the thread's CPU time (SQLite runs in the
            # reading thread) is the same work without what a busy machine adds to it.
            stats = {
                "p50_ms": round(_p(times, 0.5) * 1000, 3),
                "p99_ms": round(_p(times, 0.99) * 1000, 3),
                "cpu_p50_ms": round(_p(cpu, 0.5) * 1000, 3),
                "cpu_p99_ms": round(_p(cpu, 0.99) * 1000, 3),
            }
            return stats, db_path

        plain, db_path = measure()
        _liven(db_path, first_id, last_id)
        lively, _ = measure()
    ratio = lively["p99_ms"] / plain["p99_ms"] if plain["p99_ms"] else float("nan")
    cpu_ratio = lively["cpu_p99_ms"] / plain["cpu_p99_ms"] if plain["cpu_p99_ms"] else float("nan")
    return {
        "messages": messages,
        "pages": pages,
        "plain": plain,
        "with_reactions_and_edits": lively,
        "p99_ratio": round(ratio, 3),
        "cpu_p99_ratio": round(cpu_ratio, 3),
        "p99_ratio_limit": 1.2,
    }


def _read_pages(data_dir: Path, first_id: int, last_id: int, pages: int) -> None:
    """Read `pages` pages as `history_pages` does (the same seed), after one to warm up."""
    rng = random.Random(14)
    points = [rng.randrange(first_id + 50, last_id + 1) for _ in range(pages)]
    store = SQLiteStore(data_dir)
    try:
        store.room_history("lobby", HistoryQuery.latest(50))
        for n, point in enumerate(points):
            if n % 4 == 0:
                store.room_history("lobby", HistoryQuery.latest(50))
            else:
                store.room_history("lobby", HistoryQuery.before(Ref.msgid(point), 50))
    finally:
        store.close()


def _instructions(data_dir: Path, first_id: int, last_id: int, pages: int) -> int:
    """The instructions a process executes to read `pages` pages (callgrind's total)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.live_bench",
                "read-pages",
                str(data_dir),
                str(first_id),
                str(last_id),
                str(pages),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no count from callgrind: {done.stderr[-500:]}")
    return int(found.group(1))


def history_count(messages: int, pages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        plain_dir, lively_dir = Path(tmp) / "plain", Path(tmp) / "lively"
        plain_dir.mkdir()
        first_id, last_id = _fill(plain_dir, messages)
        shutil.copytree(plain_dir, lively_dir)
        store = SQLiteStore(lively_dir)  # opened once so the copy has its own db_path
        db_path = store.db_path
        store.close()
        _liven(db_path, first_id, last_id)
        per_page = {}
        for name, where in (("plain", plain_dir), ("with_reactions_and_edits", lively_dir)):
            base = _instructions(where, first_id, last_id, 0)
            total = _instructions(where, first_id, last_id, pages)
            per_page[name] = round((total - base) / pages)
    ratio = per_page["with_reactions_and_edits"] / per_page["plain"]
    return {
        "messages": messages,
        "pages": pages,
        "instructions_per_page": per_page,
        "ratio": round(ratio, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="which", required=True)
    typing = sub.add_parser("typing")
    typing.add_argument("--users", type=int, default=200)
    typing.add_argument("--seconds", type=float, default=10.0)
    history = sub.add_parser("history")
    history.add_argument("--messages", type=int, default=100_000)
    history.add_argument("--pages", type=int, default=2000)
    count = sub.add_parser("history-count")
    count.add_argument("--messages", type=int, default=100_000)
    count.add_argument("--pages", type=int, default=400)
    # What history-count runs under callgrind (not for direct use).
    read = sub.add_parser("read-pages")
    for name in ("data_dir", "first_id", "last_id", "pages"):
        read.add_argument(name)
    args = parser.parse_args(argv)
    if args.which == "read-pages":
        _read_pages(Path(args.data_dir), int(args.first_id), int(args.last_id), int(args.pages))
        return 0
    if args.which == "typing":
        result = typing_storm(args.users, args.seconds)
    elif args.which == "history":
        result = history_pages(args.messages, args.pages)
    else:
        result = history_count(args.messages, args.pages)
    record = {
        "bench": f"live-{args.which}",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.node(),
        "result": result,
    }
    print(json.dumps(record, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
