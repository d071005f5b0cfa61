"""What an attack costs everyone else: a canary pair's round trips during each attack of
issue 18, against `threadchat serve` in its own process with its default settings.

Attacks, each bounded in count and time, all on 127.0.0.1:

- slowloris: `--slowloris` named connections trickle a byte a second into a line that never
  ends (the server runs with `--line-timeout 5`, so they are cut off during the run);
- sigstop: a `threadchat connect` process in the lobby is stopped with SIGSTOP while a
  sender (no flood control here) fills the lobby with 3 KB messages, and the server cuts
  the stopped one off at its send queue;
- fanout: `--members` members of one room (read by one thread) and `--flooders` senders
  at the flood-control rate;
- udp-garbage: random datagrams to the UDP port as fast as one process sends them;
- half-open: `--half-open` connections that send nothing or half a name (the name timeout,
  5 s here, closes them).

For each: the canary's round trips (one message every 0.3 s, bench/canary.py), its worst and
median, and any loss. Prints a table and appends one JSON line per attack to
bench/results/attacks.jsonl.

    python -m bench.attack_canary [--seconds 10] [--attack slowloris,fanout]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.canary import canary_running
from bench.soak import Ports, start_server

RESULTS = Path(__file__).resolve().parent / "results" / "attacks.jsonl"
TIMEOUT_S = 10.0


def named(port: int, name: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    sock.sendall(json.dumps({"type": "hello", "name": name}).encode() + b"\n")
    return sock


class Drain:
    """Reads and discards what many sockets receive, on one thread (readers that keep up)."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.selector = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
        self.received = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(0.2):
                try:
                    data = key.fileobj.recv(262144)  # type: ignore[union-attr]
                except (BlockingIOError, ConnectionError):
                    continue
                if not data:
                    self.selector.unregister(key.fileobj)
                self.received += len(data)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT_S)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def slowloris(ports: Ports, args: argparse.Namespace) -> str:
    socks = [named(ports.line, f"loris{n}") for n in range(args.slowloris)]
    drain = Drain(socks)
    started = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - started < args.seconds:
            for sock in socks:
                try:
                    sock.send(b"x")
                    sent += 1
                except OSError:
                    pass  # cut off by the line timeout
            time.sleep(1.0)
    finally:
        drain.close()
    return f"{args.slowloris} connections, {sent} bytes trickled"


def sigstop(ports: Ports, args: argparse.Namespace) -> str:
    command = [sys.executable, "-m", "threadchat", "connect", f"127.0.0.1:{ports.line}",
               "--name", "sleeper"]  # fmt: skip
    sleeper = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sender = named(ports.line, "stuffer")
    sent = 0
    try:
        time.sleep(1.0)
        os.kill(sleeper.pid, signal.SIGSTOP)
        started = time.monotonic()
        payload = "z" * 3000
        sender.settimeout(TIMEOUT_S)
        buffer = b""
        while time.monotonic() - started < args.seconds:
            lines = [json.dumps({"type": "say", "text": f"{sent + k} {payload}", "ref": sent + k})
                     for k in range(10)]  # fmt: skip
            sender.sendall(("\n".join(lines) + "\n").encode())
            sent += 10
            # The server's flood control paces the sender: wait for its answers.
            while buffer.count(b'"ok"') < 10:
                buffer += sender.recv(65536)
            buffer = b""
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)
        sleeper.terminate()
        try:
            sleeper.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            sleeper.kill()
            sleeper.wait(TIMEOUT_S)
        sender.close()
    return f"{sent} messages of 3 KB while one reader was stopped"


def fanout(ports: Ports, args: argparse.Namespace) -> str:
    members = []
    for n in range(args.members):
        sock = named(ports.line, f"member{n}")
        sock.sendall(b'{"type":"join","room":"flood"}\n{"type":"leave","room":"lobby"}\n')
        members.append(sock)
    drain = Drain(members)
    flooders = []
    for n in range(args.flooders):
        sock = named(ports.line, f"flooder{n}")
        sock.sendall(b'{"type":"join","room":"flood"}\n{"type":"leave","room":"lobby"}\n')
        flooders.append(sock)
    flood_drain = Drain(flooders)
    started = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - started < args.seconds:
            for sock in flooders:
                # Faster than flood control lets through: the server paces each flooder.
                line = json.dumps({"type": "say", "room": "flood", "text": f"flood {sent}"})
                try:
                    sock.send((line + "\n").encode())
                    sent += 1
                except (BlockingIOError, OSError):
                    pass
            time.sleep(0.02)
    finally:
        received = drain.received
        drain.close()
        flood_drain.close()
    return (f"{args.members} members, {args.flooders} flooders, {sent} lines offered, "
            f"{received / 1e6:.1f} MB delivered")  # fmt: skip


def udp_garbage(ports: Ports, args: argparse.Namespace) -> str:
    rng = random.Random(18)
    datagrams = [rng.randbytes(rng.randrange(1, 1200)) for _ in range(256)]
    datagrams += [b'{"v":1,"k":"hello"}', b"{", b"\xff" * 100, b'{"t":"\\ud800"}']
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        started = time.monotonic()
        while time.monotonic() - started < args.seconds and sent < 2_000_000:
            for datagram in datagrams:
                sock.sendto(datagram, ("127.0.0.1", ports.udp))
            sent += len(datagrams)
    return f"{sent} datagrams ({sent / args.seconds:.0f}/s)"


def half_open(ports: Ports, args: argparse.Namespace) -> str:
    held = []
    started = time.monotonic()
    try:
        for n in range(args.half_open):
            sock = socket.create_connection(("127.0.0.1", ports.line), timeout=TIMEOUT_S)
            if n % 2:
                sock.send(b"half-a-na")
            held.append(sock)
        opened = time.monotonic() - started
        time.sleep(max(0.0, args.seconds - opened))
    finally:
        for sock in held:
            sock.close()
    return f"{args.half_open} connections opened in {opened:.1f} s"


# Each attack, and what the server runs with besides its defaults (and SERVER_ARGS).
ATTACKS: dict[str, tuple[Callable[[Ports, argparse.Namespace], str], list[str]]] = {
    "slowloris": (slowloris, []),
    # Without flood control, so that one sender fills the stopped reader's queue in seconds.
    "sigstop": (sigstop, ["--flood-rate", "0"]),
    "fanout": (fanout, []),
    "udp-garbage": (udp_garbage, []),
    "half-open": (half_open, []),
}
# Info level: the log then counts the cut-offs (the last --log-level given wins).
SERVER_ARGS = ["--line-timeout", "5", "--name-timeout", "5", "--max-clients", "6000",
               "--log-level", "info"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attack", default=",".join(ATTACKS), help="comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="per attack")
    parser.add_argument("--slowloris", type=int, default=500)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--flooders", type=int, default=20)
    parser.add_argument("--half-open", type=int, default=5000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each attack (a busy machine is noisy)"
    )
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed on to threadchat serve (--server-arg=--max-clients=1000)",
    )
    args = parser.parse_args()
    chosen = args.attack.split(",")
    records = []
    for name in [name for name in chosen for _ in range(args.repeat)]:
        ports = Ports()
        with tempfile.TemporaryDirectory() as data_dir:
            log_path = Path(data_dir) / "server.log"
            server = start_server(
                ports,
                os.path.join(data_dir, "data"),
                log_path,
                extra=[*SERVER_ARGS, *ATTACKS[name][1], *args.server_arg],
            )
            try:
                with canary_running(ports.line) as canary:
                    what = ATTACKS[name][0](ports, args)
                alive = server.poll() is None
            finally:
                server.terminate()
                try:
                    server.wait(TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(TIMEOUT_S)
            log = log_path.read_text()
        trips = canary.round_trips
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": platform.node(),
            "load_average": os.getloadavg()[0],
            "attack": name,
            "server_args": [*SERVER_ARGS, *ATTACKS[name][1], *args.server_arg],
            "what": what,
            "canary_round_trips": len(trips),
            "canary_median_ms": round(statistics.median(trips) * 1000, 1) if trips else None,
            "canary_worst_ms": canary.worst_ms,
            "canary_lost": canary.lost,
            "server_alive": alive,
            "tracebacks_in_log": log.count("Traceback"),
            "cut_off_by_send_queue": log.count("cutting off"),
            "cut_off_by_line_timeout": log.count("no line end within"),
        }
        records.append(record)
        print(
            f"{name:12} canary: {len(trips)} round trips, median {record['canary_median_ms']} "
            f"ms, worst {record['canary_worst_ms']} ms, {canary.lost} lost; {what}; cut off: "
            f"{record['cut_off_by_send_queue']} by send queue, "
            f"{record['cut_off_by_line_timeout']} by line timeout",
            flush=True,
        )
    if args.repeat > 1:
        for name in chosen:
            worsts = [r["canary_worst_ms"] for r in records if r["attack"] == name]
            print(
                f"{name:12} over {len(worsts)} runs: canary worst round trip median "
                f"{statistics.median(worsts)} ms, worst {max(worsts)} ms; lost "
                f"{sum(r['canary_lost'] for r in records if r['attack'] == name)}; load "
                f"average {min(r['load_average'] for r in records if r['attack'] == name):.1f}"
                f" to {max(r['load_average'] for r in records if r['attack'] == name):.1f}"
            )
    if not args.no_record:
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("a") as results:
            for record in records:
                results.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
