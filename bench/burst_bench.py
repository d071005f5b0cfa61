"""How long a pasted burst takes to reach another member, with the server's default settings.

Flood control and history are on, as `make run` starts the server: a client sends a burst of
`--lines` lines (at most the flood burst, so no pause) in one write, and the time until
another client has the last of them is measured. With flood control on, the lines of one read
share one commit (see docs/history.md); when every line waited for the commit of the one
before, a burst of 20 took about four times as long.

In-process server on loopback ports, real sockets. Prints the median and the slowest of
`--bursts` bursts and appends one JSON line to bench/results/burst.jsonl.

    python -m bench.burst_bench [--bursts 10] [--lines 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from threadchat.app.server import Server
from threadchat.config import Config

RESULTS = Path(__file__).resolve().parent / "results" / "burst.jsonl"
TIMEOUT_S = 10.0


class Client:
    """A JSON-mode client reading whole lines, every wait bounded by TIMEOUT_S."""

    def __init__(self, port: int, name: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.buffer = b""
        self.send(json.dumps({"type": "hello", "name": name}) + "\n")
        self.wait_for('"type":"who"')

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def wait_for(self, needle: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while needle.encode() not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {needle!r} within {TIMEOUT_S}s")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buffer += data
        self.buffer = self.buffer[self.buffer.index(needle.encode()) + len(needle) :]

    def close(self) -> None:
        self.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.burst_bench", description=__doc__)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--lines", type=int, default=20)
    args = parser.parse_args()
    config = Config(data_dir=tempfile.mkdtemp(prefix="threadchat-burst-"))
    if args.lines > config.flood_burst:
        parser.error(f"--lines above the flood burst ({config.flood_burst}) would be paused")
    server = Server(config, ephemeral_ports=True)
    server.start()
    sender = receiver = None
    try:
        port = server.listener("line").port
        sender, receiver = Client(port, "sender"), Client(port, "receiver")
        refill = threading.Event()
        times_ms = []
        for burst in range(args.bursts):
            lines = "".join(
                json.dumps({"type": "say", "room": "lobby", "text": f"b{burst}-{i}"}) + "\n"
                for i in range(args.lines)
            )
            started = time.perf_counter()
            sender.send(lines)
            receiver.wait_for(f'"text":"b{burst}-{args.lines - 1}"')
            times_ms.append((time.perf_counter() - started) * 1000)
            # Let the flood bucket fill up again, so that no burst is paused.
            refill.wait(args.lines / config.flood_rate + 0.1)
    finally:
        for client in (sender, receiver):
            if client is not None:
                client.close()
        server.stop()
    result = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(),
        "lines": args.lines,
        "bursts": args.bursts,
        "median_ms": round(statistics.median(times_ms), 2),
        "max_ms": round(max(times_ms), 2),
    }
    print(f"{'lines':>6} {'bursts':>7} {'median ms':>10} {'max ms':>8}")
    print(f"{args.lines:>6} {args.bursts:>7} {result['median_ms']:>10} {result['max_ms']:>8}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
