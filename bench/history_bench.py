"""End-to-end cost of storing every message: a server with and without --history.

S senders each send M room messages as fast as TCP lets them (JSON mode, one line each, in
chunks of `--chunk` lines per write so that one recv() holds several lines, as from a paste
or a bot); one receiver in the room counts them. Reports messages per second from the first
send to the last receipt, for history on and off. Appends one JSON line per run to
bench/results/history.jsonl.

    python -m bench.history_bench [--senders 1,8,32] [--messages 2000] [--chunk 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from threadchat.app.server import Server
from threadchat.config import Config

RESULTS = Path(__file__).resolve().parent / "results" / "history.jsonl"
TEXT = "a typical chat line of about sixty characters, give or take."
TIMEOUT = 120.0


def _client(port: int, name: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(json.dumps({"type": "hello", "name": name}).encode() + b"\n")
    buffer = b""
    while b'"type":"who"' not in buffer:
        buffer += sock.recv(65536)
    return sock


def run(history: bool, senders: int, messages: int, chunk: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        config = replace(
            Config(),
            flood_rate=0,
            data_dir=tmp,
            history=history,
            history_on_join=0,
            log_level="warning",
        )
        server = Server(config, ephemeral_ports=True)
        server.start()
        try:
            port = server.listener("line").port
            receiver = _client(port, "receiver")
            clients = [_client(port, f"s{n}") for n in range(senders)]
            expected = senders * messages
            done = threading.Event()
            count = [0]

            def receive() -> None:
                pending = b""
                while count[0] < expected:
                    data = receiver.recv(1 << 20)
                    if not data:
                        return
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    count[0] += sum(1 for line in lines if b'"type":"message"' in line)
                done.set()

            line = json.dumps({"type": "say", "room": "lobby", "text": TEXT}).encode() + b"\n"
            block = line * chunk

            def send(sock: socket.socket) -> None:
                for _ in range(messages // chunk):
                    sock.sendall(block)

            def drain(sock: socket.socket) -> None:
                # Senders are in the room too: read what they are sent, or they are cut off.
                try:
                    while sock.recv(1 << 20):
                        pass
                except OSError:
                    pass

            for c in clients:
                threading.Thread(target=drain, args=(c,), daemon=True).start()

            reader = threading.Thread(target=receive, daemon=True)
            reader.start()
            began = time.perf_counter()
            threads = [threading.Thread(target=send, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            finished = done.wait(TIMEOUT)
            elapsed = time.perf_counter() - began
            for t in threads:
                t.join(TIMEOUT)
            for sock in [receiver, *clients]:
                sock.close()
        finally:
            server.stop()
    return {
        "bench": "history_end_to_end",
        "history": history,
        "senders": senders,
        "messages": count[0],
        "complete": finished,
        "chunk": chunk,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count[0] / elapsed, 1),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", default="1,8,32")
    parser.add_argument("--messages", type=int, default=2000, help="per sender")
    parser.add_argument("--chunk", type=int, default=10, help="lines per write")
    args = parser.parse_args()
    RESULTS.parent.mkdir(exist_ok=True)
    print(f"{'history':>8} {'senders':>8} {'msgs/s':>10} {'seconds':>8}")
    for senders in (int(s) for s in args.senders.split(",")):
        for history in (False, True):
            result = run(history, senders, args.messages, args.chunk)
            print(
                f"{'on' if history else 'off':>8} {senders:>8} {result['msgs_per_s']:>10} "
                f"{result['seconds']:>8}"
            )
            with RESULTS.open("a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
