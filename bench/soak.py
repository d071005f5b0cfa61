"""Soak: clients of every protocol connecting, joining, sending and leaving for a while, on
127.0.0.1; the server's memory, threads and open files must stay flat, and nothing it
accepted may be lost.

The server runs as `threadchat serve` in its own process (every listener on). `--clients`
worker threads each loop until `--seconds` have passed: connect over the next protocol of
text, JSON, IRC, UDP, WebSocket JSON and WebSocket IRC; join one of `--rooms` rooms (and
leave the lobby, whose churn would otherwise be most of the traffic); send
`--messages` messages at a chat pace; wait for the server to have handled them (a JSON `ok`,
an IRC PONG, a `/rooms` answer); leave. A JSON listener in every room records what it hears.

Every few seconds it samples the server's RSS, threads and open descriptors (/proc), and
how many are in the lobby (a JSON client there asks `who`): over --quiet-room-size the lobby
announces no joins and leaves, so its size decides how much churn visitors get. At the
end it checks that every message the server accepted (its fence answered) was heard in its
room; that threads and open files came back to their baseline (taken after a warm-up round,
since the first connections of each protocol load code and caches) once every client left;
and that RSS stopped growing (its peak over the last third of the run against the middle
third's). Prints
a table, appends one JSON line to bench/results/soak.jsonl, and with `--plot FILE` draws
the samples (matplotlib, the bench extra). Exit status 1 if anything was lost, a resource
did not come back or RSS kept growing, or the server logged a traceback. Visits that failed
(the server did not answer in time) are counted and shown, grouped by what went wrong;
their messages are not expected.

    python -m bench.soak [--seconds 180] [--clients 200]      # make soak (SOAK_SECONDS=...)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import platform
import queue
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from threadchat.client.udp import UdpTransport
from threadchat.config import Config
from threadchat.store.sqlite import READ_POOL_SIZE

RESULTS = Path(__file__).resolve().parent / "results" / "soak.jsonl"
TIMEOUT_S = 15.0
SAMPLE_EVERY_S = 2.0
# Between starting one client thread and the next in a client process.
RAMP_S = 0.005
# Clients per client process when --processes is not given.
CLIENTS_PER_PROCESS = 200
# Clients per room at once when --rooms is not given: the fan-out of each message stays that
# of the first soak (200 clients, 10 rooms) however many clients there are.
CLIENTS_PER_ROOM = 20
PROTOCOLS = ("text", "json", "irc", "udp", "ws-json", "ws-irc")
# Threads must come back to their baseline exactly, give or take this few (a housekeeping
# thread between two ticks).
SLACK = 2
# Descriptors too, but the store opens its pool of read connections (two files each: the
# database and its WAL) as load first needs them, and keeps them: bounded, not a leak.
FD_SLACK = SLACK + 2 * READ_POOL_SIZE
# RSS does not come back to its baseline once load has raised it: CPython keeps freed memory
# in its arenas and glibc in its per-thread arenas, for the next load. What must hold is that
# under steady churn it stops growing: its peak over the last third of the run may exceed
# its peak over the middle third by this fraction at most. A leak grows in proportion to the
# visits, and a long soak (SOAK_SECONDS=1800) makes even a small one show.
RSS_GROWTH = 0.10


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ports:
    line: int = field(default_factory=free_port)
    irc: int = field(default_factory=free_port)
    web: int = field(default_factory=free_port)
    udp: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))


def sample(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


# -- one client's visit, per protocol ---------------------------------------------------------
# Each returns once the server has handled every message it sent (the fence), so those
# messages count as accepted; raising means the visit failed (counted, and its messages are
# not expected).


class LineSocket:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.buffer = b""

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(f"{line}\r\n" for line in lines).encode())

    def until(self, check: Callable[[str], bool], stage: str = "") -> str:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            while b"\n" in self.buffer:
                raw, _, self.buffer = self.buffer.partition(b"\n")
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if check(line):
                    return line
                self.on_line(line)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to {stage}")
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no answer to {stage}") from None
            if not chunk:
                raise EOFError("closed by the server")
            self.buffer += chunk

    def on_line(self, line: str) -> None:
        if line.startswith("PING "):
            self.send("PONG " + line[5:])

    def close(self) -> None:
        self.sock.close()


def visit_text(ports: Ports, name: str, room: str, texts: list[str], pace: float) -> None:
    client = LineSocket(ports.line)
    try:
        client.send(name)
        client.until(lambda line: line.startswith("--- welcome"), "the name")
        client.send(f"/join {room}")
        client.until(lambda line: line.startswith(f"--- in {room}"), "the join")
        client.send("/leave lobby")
        for text in texts:
            client.send(text)
            time.sleep(pace)
        client.send("/who")  # answered after every line before it
        client.until(lambda line: line.startswith(f"--- in {room}:"), "the /who fence")
        client.send("/quit soak")
    finally:
        client.close()


def visit_json(ports: Ports, name: str, room: str, texts: list[str], pace: float) -> None:
    client = LineSocket(ports.line)
    try:
        client.send(json.dumps({"type": "hello", "name": name}))
        client.send(json.dumps({"type": "join", "room": room, "ref": "j"}))
        client.send(json.dumps({"type": "leave", "room": "lobby"}))
        client.until(lambda line: '"ref": "j"' in line or '"ref":"j"' in line)
        for n, text in enumerate(texts):
            client.send(json.dumps({"type": "say", "room": room, "text": text, "ref": n}))
            time.sleep(pace)
        last = len(texts) - 1
        answer = json.loads(client.until(lambda line: f'"ref": {last}' in line
                                         or f'"ref":{last}' in line))  # fmt: skip
        if answer["type"] != "ok":
            raise RuntimeError(f"refused: {answer}")
        client.send(json.dumps({"type": "quit", "reason": "soak"}))
    finally:
        client.close()


def visit_irc(ports: Ports, name: str, room: str, texts: list[str], pace: float) -> None:
    client = LineSocket(ports.irc)
    try:
        client.send(f"NICK {name}", f"USER {name} 0 * :soak")
        client.until(lambda line: " 001 " in line)
        client.send(f"JOIN #{room}")
        client.until(lambda line: " 366 " in line)
        for text in texts:
            client.send(f"PRIVMSG #{room} :{text}")
            time.sleep(pace)
        client.send("PING :fence")
        client.until(lambda line: "PONG" in line and "fence" in line)
        client.send("QUIT :soak")
    finally:
        client.close()


def visit_udp(ports: Ports, name: str, room: str, texts: list[str], pace: float) -> None:
    events: queue.Queue[dict] = queue.Queue()
    transport = UdpTransport("127.0.0.1", ports.udp)
    ended: list[str | None] = []
    transport.start(events.put, ended.append)

    def until(check: Callable[[dict], bool], stage: str) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        seen = []
        while True:
            try:
                event = events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                why = f"the session ended: {ended[0]}" if ended else f"saw {seen[-3:]}"
                raise TimeoutError(f"no answer to {stage}; {why}") from None
            seen.append(event)
            if check(event):
                return event

    try:
        transport.send({"type": "hello", "name": name})
        transport.send({"type": "join", "room": room, "ref": "j"})
        transport.send({"type": "leave", "room": "lobby"})
        until(lambda e: e.get("ref") == "j", "the join")
        for n, text in enumerate(texts):
            transport.send({"type": "say", "room": room, "text": text, "ref": n})
            time.sleep(pace)
        answer = until(lambda e: e.get("ref") == len(texts) - 1, "the last message")
        if answer["type"] != "ok":
            raise RuntimeError(f"refused: {answer}")
    finally:
        transport.close()


def _ws(ports: Ports, subprotocol: str) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{ports.web}/ws",
        subprotocols=[Subprotocol(subprotocol)],
        open_timeout=TIMEOUT_S,
        close_timeout=TIMEOUT_S,
    )


def _ws_until(ws: ClientConnection, check: Callable[[str], bool]) -> str:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        line = message if isinstance(message, str) else message.decode()
        if line.startswith("PING "):
            ws.send("PONG " + line[5:])
        if check(line):
            return line


def visit_ws_json(ports: Ports, name: str, room: str, texts: list[str], pace: float) -> None:
    with _ws(ports, "threadchat.json") as ws:
        ws.send(json.dumps({"type": "hello", "name": name}))
        ws.send(json.dumps({"type": "join", "room": room, "ref": "j"}))
        ws.send(json.dumps({"type": "leave", "room": "lobby"}))
        _ws_until(ws, lambda line: json.loads(line).get("ref") == "j")
        for n, text in enumerate(texts):
            ws.send(json.dumps({"type": "say", "room": room, "text": text, "ref": n}))
            time.sleep(pace)
        last = len(texts) - 1
        answer = json.loads(_ws_until(ws, lambda line: json.loads(line).get("ref") == last))
        if answer["type"] != "ok":
            raise RuntimeError(f"refused: {answer}")
        ws.send(json.dumps({"type": "quit", "reason": "soak"}))


def visit_ws_irc(ports: Ports, name: str, room: str, texts: list[str], pace: float) -> None:
    with _ws(ports, "text.ircv3.net") as ws:
        ws.send(f"NICK {name}")
        ws.send(f"USER {name} 0 * :soak")
        _ws_until(ws, lambda line: " 001 " in line)
        ws.send(f"JOIN #{room}")
        _ws_until(ws, lambda line: " 366 " in line)
        for text in texts:
            ws.send(f"PRIVMSG #{room} :{text}")
            time.sleep(pace)
        ws.send("PING :fence")
        _ws_until(ws, lambda line: "PONG" in line and "fence" in line)
        ws.send("QUIT :soak")


VISITS: dict[str, Callable[[Ports, str, str, list[str], float], None]] = {
    "text": visit_text,
    "json": visit_json,
    "irc": visit_irc,
    "udp": visit_udp,
    "ws-json": visit_ws_json,
    "ws-irc": visit_ws_irc,
}


# -- the room listeners ---------------------------------------------------------------------


class _JsonReader:
    """A JSON client read by a thread of its own, which answers pings and hands every other
    event to `on_event` (set up by the subclass before `_start`)."""

    client: LineSocket

    def _start(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def on_event(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        self.client.sock.settimeout(0.5)
        while not self.stop.is_set():
            try:
                chunk = self.client.sock.recv(262144)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.client.buffer += chunk
            *lines, self.client.buffer = self.client.buffer.split(b"\n")
            for raw in lines:
                event = json.loads(raw)
                if event.get("type") == "ping":
                    pong = {"type": "pong", "token": event["token"]}
                    self.client.sock.sendall((json.dumps(pong) + "\n").encode())
                else:
                    self.on_event(event)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT_S)
        self.client.close()


class Listener(_JsonReader):
    """A JSON client that stays in one room and keeps every message text it hears."""

    def __init__(self, ports: Ports, room: str) -> None:
        self.client = LineSocket(ports.line)
        self.client.send(json.dumps({"type": "hello", "name": f"listen-{room}"}))
        self.client.send(json.dumps({"type": "join", "room": room, "ref": "j"}))
        self.client.send(json.dumps({"type": "leave", "room": "lobby"}))
        self.client.until(lambda line: '"ref": "j"' in line or '"ref":"j"' in line)
        self.heard: set[str] = set()
        self._start()

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "message":
            self.heard.add(event["text"])


class LobbyWatch(_JsonReader):
    """A JSON client that stays in the lobby and asks how many are in it: whether the lobby
    is over --quiet-room-size (then its joins and leaves are announced to nobody but IRC
    clients) is what decides how much churn the visitors waiting there get."""

    def __init__(self, ports: Ports) -> None:
        self.client = LineSocket(ports.line)
        self.client.send(json.dumps({"type": "hello", "name": "watch-lobby"}))
        self.client.until(lambda line: '"type": "welcome"' in line or '"type":"welcome"' in line)
        self.members: int | None = None
        self._start()

    def ask(self) -> int | None:
        """The count from the last answer, and a new question for the next sample."""
        with contextlib.suppress(OSError):
            self.client.send(json.dumps({"type": "who", "room": "lobby"}))
        return self.members

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "who" and event.get("room") == "lobby":
            self.members = len(event["members"]) - 1  # not counting the watcher


def failure_kind(problem: str) -> str:
    """A failure without what varies from visit to visit (the events it saw last)."""
    return problem.split("; saw ", 1)[0]


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: dict[str, set[str]] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROTOCOLS, 0))
    failures: dict[str, list[str]] = field(default_factory=dict)

    def __getstate__(self) -> dict:
        # Sent back from a client process: everything but the lock.
        return {key: value for key, value in vars(self).items() if key != "lock"}

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state, lock=threading.Lock())


def worker(
    n: int, ports: Ports, rooms: list[str], args: argparse.Namespace, until: float, tally: Tally
) -> None:
    rng = random.Random(n)
    for visit_number in itertools.count():
        if time.monotonic() >= until:
            return
        protocol = PROTOCOLS[(n + visit_number) % len(PROTOCOLS)]
        room = rng.choice(rooms)
        name = f"s{n}x{visit_number}"
        texts = [f"soak {name} {k}" for k in range(args.messages)]
        try:
            VISITS[protocol](ports, name, room, texts, args.pace)
        except Exception as problem:
            with tally.lock:
                tally.failures.setdefault(protocol, []).append(
                    f"{type(problem).__name__}: {problem}"
                )
            continue
        with tally.lock:
            tally.accepted.setdefault(room, set()).update(texts)
            tally.visits[protocol] += 1


def client_process(
    numbers: list[int], ports: Ports, rooms: list[str], args: argparse.Namespace, until: float
) -> Tally:
    """The workers of these numbers, in one of the `--processes` processes; their tally."""
    tally = Tally()
    threads = [
        threading.Thread(target=worker, args=(n, ports, rooms, args, until, tally)) for n in numbers
    ]
    for thread in threads:
        thread.start()
        time.sleep(RAMP_S)  # a ramp, not a connect storm (bench/connect_storm.py is one)
    for thread in threads:
        thread.join()
    return tally


def merge(tallies: Sequence[Tally]) -> Tally:
    merged = Tally()
    for tally in tallies:
        for room, texts in tally.accepted.items():
            merged.accepted.setdefault(room, set()).update(texts)
        for protocol, count in tally.visits.items():
            merged.visits[protocol] += count
        for protocol, problems in tally.failures.items():
            merged.failures.setdefault(protocol, []).extend(problems)
    return merged


def start_server(
    ports: Ports, data_dir: str, log_path: Path, extra: Sequence[str] = ()
) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "threadchat", "serve",
        "--line-port", str(ports.line), "--irc-port", str(ports.irc),
        "--web-port", str(ports.web), "--udp-port", str(ports.udp),
        "--data-dir", data_dir, "--history-on-join", "0", "--log-level", "warning", *extra,
    ]  # fmt: skip
    server = subprocess.Popen(command, stderr=log_path.open("w"))
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            for port in (ports.line, ports.irc, ports.web):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited: {log_path.read_text()}") from None
            time.sleep(0.1)
    server.kill()
    raise TimeoutError("the server did not start listening")


def settle(pid: int, baseline: dict[str, int], seconds: float) -> dict[str, int]:
    """Resources once the clients have left: waits (bounded) for threads and descriptors to
    come back, as the server's reader threads end and the UDP sessions say goodbye."""
    deadline = time.monotonic() + seconds
    now = sample(pid)
    while time.monotonic() < deadline:
        if (now["threads"] <= baseline["threads"] + SLACK
                and now["fds"] <= baseline["fds"] + FD_SLACK):  # fmt: skip
            break
        time.sleep(0.5)
        now = sample(pid)
    return now


def run(args: argparse.Namespace) -> int:
    ports = Ports()
    rooms = [f"soak{r}" for r in range(args.rooms)]
    samples: list[dict] = []
    with tempfile.TemporaryDirectory() as data_dir:
        log_path = Path(args.server_log) if args.server_log else Path(data_dir) / "server.log"
        server = start_server(ports, os.path.join(data_dir, "data"), log_path, args.server_arg)
        try:
            listeners = [Listener(ports, room) for room in rooms]
            lobby = LobbyWatch(ports)
            # Warm-up: one visit per protocol, so code and caches are loaded, then the baseline.
            warm = Tally()
            for k in range(len(PROTOCOLS)):
                worker(k, ports, rooms, argparse.Namespace(**{**vars(args), "messages": 2}),
                       time.monotonic() + 0.001, warm)  # fmt: skip
            time.sleep(2.0)
            baseline = sample(server.pid)
            started = time.monotonic()
            until = started + args.seconds
            # The clients in --processes processes, so that their own interpreter lock is not
            # what makes a visit time out (CLOCK_MONOTONIC, hence `until`, is the machine's).
            shares = [list(range(args.clients))[k :: args.processes] for k in range(args.processes)]
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(len(shares), mp_context=context) as pool:
                futures = [
                    pool.submit(client_process, share, ports, rooms, args, until)
                    for share in shares
                ]
                while not all(future.done() for future in futures):
                    samples.append(
                        {
                            "t": round(time.monotonic() - started, 1),
                            **sample(server.pid),
                            "lobby": lobby.ask(),
                        }
                    )
                    time.sleep(SAMPLE_EVERY_S)
                tally = merge([future.result() for future in futures])
            final = settle(server.pid, baseline, 30.0)
            samples.append({"t": round(time.monotonic() - started, 1), **final})
            time.sleep(1.0)  # the listeners read the last messages
            for listener in listeners:
                listener.close()
            lobby.close()
            # Every client gone, the rooms with them (and what they kept: their recent
            # messages): what RSS comes back to once nothing is left to hold.
            empty = settle(
                server.pid,
                {**baseline, "threads": baseline["threads"] - len(listeners) - 1},
                30.0,
            )
        finally:
            server.terminate()
            try:
                server.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(TIMEOUT_S)
        server_log = log_path.read_text()
    heard = {room: listener.heard for room, listener in zip(rooms, listeners, strict=True)}
    lost = sum(len(texts - heard[room]) for room, texts in tally.accepted.items())
    accepted = sum(len(texts) for texts in tally.accepted.values())
    peak = {key: max(s[key] for s in samples) for key in ("rss_kb", "threads", "fds")}
    lobby_sizes = sorted(s["lobby"] for s in samples if s.get("lobby") is not None)
    quiet_size = quiet_room_size(args.server_arg)
    failure_kinds = {
        protocol: Counter(map(failure_kind, problems)).most_common(5)
        for protocol, problems in tally.failures.items()
    }
    middle = [x["rss_kb"] for x in samples if args.seconds / 3 <= x["t"] < 2 * args.seconds / 3]
    last = [x["rss_kb"] for x in samples if 2 * args.seconds / 3 <= x["t"] <= args.seconds]
    rss_thirds = (max(middle), max(last)) if middle and last else None
    flat = (
        final["threads"] <= baseline["threads"] + SLACK
        and final["fds"] <= baseline["fds"] + FD_SLACK
        and (rss_thirds is None or rss_thirds[1] <= rss_thirds[0] * (1 + RSS_GROWTH))
    )
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.node(),
        "seconds": args.seconds,
        "clients": args.clients,
        "rooms": args.rooms,
        "client_processes": args.processes,
        "load_average": os.getloadavg(),
        "server_args": args.server_arg,
        "visits": sum(tally.visits.values()),
        "visits_by_protocol": tally.visits,
        "failed_visits": {p: len(f) for p, f in tally.failures.items()},
        "failure_kinds": failure_kinds,
        "lobby_members": lobby_sizes
        and {
            "min": lobby_sizes[0],
            "median": lobby_sizes[len(lobby_sizes) // 2],
            "max": lobby_sizes[-1],
            "share_quiet": round(sum(n > quiet_size for n in lobby_sizes) / len(lobby_sizes), 2),
        },
        "accepted_messages": accepted,
        "lost_messages": lost,
        "baseline": baseline,
        "peak": peak,
        "final": final,
        "empty": empty,
        "rss_peak_middle_and_last_third_kb": rss_thirds,
        "flat": flat,
        "tracebacks_in_log": server_log.count("Traceback"),
        "samples": samples,
    }
    print(
        f"soak: {args.seconds:g} s, {args.clients} clients at once in {args.processes} "
        f"processes, {args.rooms} rooms; load average at the end {os.getloadavg()[0]:.1f}"
    )
    print(f"visits: {record['visits']} "
          f"({', '.join(f'{p} {v}' for p, v in tally.visits.items())}); failed: "
          f"{record['failed_visits'] or 'none'}")  # fmt: skip
    print(f"messages accepted: {accepted}, lost: {lost}")
    if record["lobby_members"]:
        sizes = record["lobby_members"]
        print(f"lobby members: min {sizes['min']}, median {sizes['median']}, max {sizes['max']}; "
              f"over the quiet room size ({quiet_size}) in {sizes['share_quiet']:.0%} "
              f"of the samples")  # fmt: skip
    print(f"{'':10} {'baseline':>10} {'peak':>10} {'final':>10}")
    for key, unit in (("rss_kb", "RSS KiB"), ("threads", "threads"), ("fds", "open fds")):
        print(f"{unit:10} {baseline[key]:>10} {peak[key]:>10} {final[key]:>10}")
    print(f"RSS once every client, the listeners too, had left: {empty['rss_kb']} KiB "
          f"({empty['threads']} threads)")  # fmt: skip
    if rss_thirds is not None:
        growth = (rss_thirds[1] / rss_thirds[0] - 1) * 100
        print(f"RSS peak, middle third -> last third: {rss_thirds[0]} -> {rss_thirds[1]} KiB "
              f"({growth:+.1f} %, at most {RSS_GROWTH * 100:g} %)")  # fmt: skip
    print(f"flat (threads and files back to baseline, RSS not growing): "
          f"{'yes' if flat else 'NO'}; tracebacks in the server log: "
          f"{record['tracebacks_in_log']}")  # fmt: skip
    for protocol, problems in tally.failures.items():
        print(f"  {protocol} failures, first: {problems[0]}")
        for kind, count in failure_kinds[protocol]:
            print(f"    {count:>6} x {kind[:150]}")
    if not args.no_record:
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("a") as results:
            results.write(json.dumps(record) + "\n")
    if args.plot:
        plot(samples, baseline, Path(args.plot), args)
    return 0 if lost == 0 and flat and not record["tracebacks_in_log"] else 1


def quiet_room_size(server_args: Sequence[str]) -> int:
    """The server's --quiet-room-size (its default when not given)."""
    for k, arg in enumerate(server_args):
        if arg.startswith("--quiet-room-size="):
            return int(arg.split("=", 1)[1])
        if arg == "--quiet-room-size" and k + 1 < len(server_args):
            return int(server_args[k + 1])
    return Config.quiet_room_size


def plot(
    samples: list[dict], baseline: dict[str, int], path: Path, args: argparse.Namespace
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    times = [s["t"] for s in samples]
    for axis, (key, label) in zip(
        axes, (("rss_kb", "RSS (MiB)"), ("threads", "threads"), ("fds", "open files")), strict=True
    ):
        scale = 1024 if key == "rss_kb" else 1
        axis.plot(times, [s[key] / scale for s in samples])
        axis.axhline(baseline[key] / scale, linestyle="--", color="grey", label="baseline")
        axis.set_ylabel(label)
    axes[0].legend(loc="lower right")
    axes[-1].set_xlabel("seconds")
    figure.suptitle(f"soak: {args.clients} clients at once, every protocol, {args.seconds:g} s")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long (default 180)")
    parser.add_argument("--clients", type=int, default=200, help="clients at once (default 200)")
    parser.add_argument(
        "--rooms", type=int, help=f"default: one per {CLIENTS_PER_ROOM} clients, at least 10"
    )
    parser.add_argument(
        "--processes",
        type=int,
        help=f"client processes (default: one per {CLIENTS_PER_PROCESS} clients)",
    )
    parser.add_argument("--messages", type=int, default=5, help="per visit (default 5)")
    parser.add_argument("--pace", type=float, default=0.2, help="seconds between messages")
    parser.add_argument("--plot", metavar="FILE", help="draw the samples (needs matplotlib)")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed on to threadchat serve (repeat: --server-arg=--no-history)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to results")
    parser.add_argument(
        "--server-log", metavar="FILE", help="keep the server's log there (default: dropped)"
    )
    args = parser.parse_args()
    if args.rooms is None:
        args.rooms = max(10, args.clients // CLIENTS_PER_ROOM)
    if args.processes is None:
        args.processes = max(1, -(-args.clients // CLIENTS_PER_PROCESS))
    args.processes = min(args.processes, args.clients)
    sys.exit(run(args))


if __name__ == "__main__":
    main()
