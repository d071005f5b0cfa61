"""CPU per room message of the hub's path, with history on and off, without sockets.

The real `Hub`, `MessageLog` and `SQLiteStore` (in a temporary directory); every member's
connection is an in-memory queue that a flush empties, and messages are JSON-encoded. S
senders take turns, each sending a read of R messages (as a reader thread does: one delivery
batch, one `history.pipelined` block, then `history.complete`). Reports process CPU per message
(every thread, SQLite included) and the reading thread's share, for history off and on. This
isolates what history costs in CPU from the GIL hand-overs and the load generator that make
`python -m bench --scenario history` noisy. Appends one JSON line per run to
bench/results/history_cpu.jsonl.

    python -m bench.history_cpu [--rounds 300] [--members 100] [--senders 10] [--per-read 128]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from threadchat.core import delivery
from threadchat.core.events import Event
from threadchat.core.hub import Hub
from threadchat.protocols.native import jsonlines
from threadchat.services import history
from threadchat.services.history import MessageLog
from threadchat.store.sqlite import SQLiteStore

RESULTS = Path(__file__).resolve().parent / "results" / "history_cpu.jsonl"
# A bench message: the load generator's marker, time and sequence, then padding.
TEXT = "~bm~1234567890123 5 77 " + "x" * 40


class _Drain:
    """Empties a member's queue as a flush would; counts the lines (messages) if asked to,
    for tests only: counting costs about as much as what is measured."""

    def __init__(self, queue: list[bytes]) -> None:
        self.queue = queue
        self.lines = 0
        self.counting = False

    def flush(self) -> None:
        if self.counting:
            self.lines += sum(chunk.count(b"\n") for chunk in self.queue)
        self.queue.clear()


class _MemoryConnection:
    """A connection whose outbox is a list; what `Hub` asks of a transport, nothing more."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.drain = _Drain(self.queue)

    def codec_key(self) -> str:
        return "json"

    def encode(self, event: Event) -> bytes | None:
        return jsonlines.encode_event(event)

    def send_bytes(self, data: bytes) -> None:
        self.queue.append(data)
        delivery.mark_dirty(self.drain)

    def direct_queue(self) -> tuple[list[bytes], _Drain]:
        return self.queue, self.drain


def _settle(drains: list[_Drain]) -> None:
    """Flush what is still queued, after any flush round in progress (the flusher's)."""
    with delivery._flush_lock:
        for drain in drains:
            drain.flush()


def measure(
    with_history: bool,
    rounds: int,
    members: int,
    senders: int,
    per_read: int,
    *,
    count: bool = False,
) -> dict:
    """CPU per message over `rounds` reads; with `count`, also the messages delivered."""
    hub = Hub()
    with tempfile.TemporaryDirectory() as data_dir:
        store = SQLiteStore(data_dir)
        try:
            if with_history:
                hub.history = MessageLog(store)
            else:
                hub.use_pipeline(history.PIPELINE)
            users = [hub.register(_MemoryConnection(), f"u{i}") for i in range(members)]
            for user in users:
                hub.join(user, "bench")
            drains: list[_Drain] = [
                user.connections[0].drain  # type: ignore[attr-defined]
                for user in users
            ]
            _settle(drains)
            for drain in drains:
                drain.counting = count  # the messages only, not the joins
            cpu, reader = time.process_time(), time.thread_time()
            for turn in range(rounds):
                with delivery.batch():
                    with history.pipelined():
                        for _ in range(per_read):
                            hub.say(users[turn % senders], "bench", TEXT)
                    history.complete()
            cpu, reader = time.process_time() - cpu, time.thread_time() - reader
            _settle(drains)
            delivered = sum(drain.lines for drain in drains)
        finally:
            store.close()
    messages = rounds * per_read
    return {
        "cpu_us": cpu / messages * 1e6,
        "reader_us": reader / messages * 1e6,
        "delivered": delivered,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--per-read", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shape = (args.rounds, args.members, args.senders, args.per_read)
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.repeat):  # taking turns, so drift hits both alike
        runs["off"].append(measure(False, *shape))
        runs["on"].append(measure(True, *shape))
    result: dict = {
        "ts": time.time(),
        "python": platform.python_version(),
        "rounds": args.rounds,
        "members": args.members,
        "senders": args.senders,
        "per_read": args.per_read,
    }
    print(f"{'history':8} {'CPU us/msg':>11} {'reader us/msg':>14}")
    for mode, samples in runs.items():
        cpu = statistics.median(s["cpu_us"] for s in samples)
        reader = statistics.median(s["reader_us"] for s in samples)
        result[mode] = {"cpu_us": round(cpu, 3), "reader_us": round(reader, 3)}
        print(f"{mode:8} {cpu:11.2f} {reader:14.2f}")
    extra = result["on"]["cpu_us"] - result["off"]["cpu_us"]
    result["extra_cpu_us"] = round(extra, 3)
    print(f"history adds {extra:.2f} us of CPU per message (medians of {args.repeat})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
