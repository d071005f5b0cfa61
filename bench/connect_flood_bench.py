"""A connection flood from one address against the per-address limits, with a canary pair.

The server runs as `threadchat serve` in its own process, with `--limit-exempt none` so that
loopback is limited like any address. An attacker process opens `--connections` TCP
connections from 127.0.0.2 as fast as it can and keeps every one it is given; meanwhile a
canary pair from 127.0.0.1 exchanges a message every 0.3 s in a room of its own. Prints how
many connections were admitted and refused, the attempts per second, and the canary's worst
round trip and losses; appends one JSON line to bench/results/connect_flood.jsonl.

    python -m bench.connect_flood_bench [--connections 5000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.canary import Canary

RESULTS = Path(__file__).resolve().parent / "results" / "connect_flood.jsonl"
TIMEOUT_S = 10.0
ATTACKER = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("the server did not start listening")


def attack(port: int, connections: int, results: multiprocessing.Queue) -> None:
    """Open `connections` connections from ATTACKER; report admitted, refused, seconds."""
    kept: list[socket.socket] = []
    started = time.monotonic()
    for _ in range(connections):
        sock = socket.socket()
        sock.settimeout(TIMEOUT_S)
        sock.bind((ATTACKER, 0))
        sock.connect(("127.0.0.1", port))
        kept.append(sock)
    elapsed = time.monotonic() - started
    # A refused connection was told why and closed; an admitted one hears nothing yet.
    time.sleep(1.0)
    poller = select.poll()
    for sock in kept:
        poller.register(sock, select.POLLIN)
    refused = len(poller.poll(0))
    results.put((connections - refused, refused, elapsed))
    for sock in kept:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "threadchat", "serve", "--line-port", str(port)),
                *("--irc-port", "0", "--udp-port", "0", "--data-dir", data_dir),
                *("--limit-exempt", "none", "--log-level", "warning"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_listening(port)
            canary = Canary(port)
            canary_thread = threading.Thread(target=canary.run)
            canary_thread.start()
            time.sleep(1.5)  # a few quiet round trips first
            results: multiprocessing.Queue = multiprocessing.Queue()
            attacker = multiprocessing.Process(
                target=attack, args=(port, args.connections, results)
            )
            attacker.start()
            admitted, refused, elapsed = results.get(timeout=600)
            attacker.join(TIMEOUT_S)
            time.sleep(1.0)  # the refused and the released leave
            canary.stop.set()
            canary_thread.join(TIMEOUT_S * 2)
        finally:
            server.terminate()
            _, log = server.communicate(timeout=TIMEOUT_S)
    refusal_lines = sum("refused" in line for line in log.splitlines())
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.node(),
        "connections": args.connections,
        "admitted": admitted,
        "refused": refused,
        "attempts_per_s": round(args.connections / elapsed),
        "refusal_log_lines": refusal_lines,
        "canary_round_trips": len(canary.round_trips),
        "canary_worst_ms": round(max(canary.round_trips, default=0.0) * 1000, 1),
        "canary_lost": canary.lost,
    }
    print(
        f"{args.connections} connections from {ATTACKER}: {admitted} admitted, {refused} "
        f"refused, {record['attempts_per_s']} attempts/s; {refusal_lines} log lines about "
        f"refusals; canary: {len(canary.round_trips)} round trips, worst "
        f"{record['canary_worst_ms']} ms, {canary.lost} lost"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as results_file:
        results_file.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
