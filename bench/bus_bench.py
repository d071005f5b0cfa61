"""Redis pub/sub against Redis Streams as the bus between nodes (issue 16), in one sitting.

For each transport, one publisher thread sends events the way `services/cluster.py` does
(pipelined, up to 500 per round trip) and one reader thread receives them on its own
connection (Streams: XREAD BLOCK from the last id; pub/sub: a subscribed connection):
- burst: N events as fast as the publisher can; events/s from the first send to the last
  receipt;
- paced: events at a fixed rate, each carrying its send time; the latency from send to
  receipt at p50 and p99 (one machine, one clock).

Every key carries a prefix of its own and is deleted afterwards. Prints a table and appends
one JSON line per run to bench/results/bus.jsonl.

    python -m bench.bus_bench [--redis redis://127.0.0.1:6379/0] [--events 100000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis

RESULTS = Path(__file__).resolve().parent / "results" / "bus.jsonl"
BATCH = 500
# An event as the bus carries one: node, kind and a room message's record.
PAYLOAD = {
    "room": "lobby",
    "sender": "someone",
    "text": "a typical chat line of about sixty characters, give or take.",
    "kind": "text",
    "account": None,
    "id": 123456,
}


def _entry(sent: float) -> str:
    return json.dumps(["node-a", "msg", {**PAYLOAD, "ts": sent}], separators=(",", ":"))


class Streams:
    name = "streams"

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client, self.key = client, key

    def ready(self) -> None:
        pass

    def publish(self, entries: list[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(self.key, {"e": entry}, maxlen=100_000, approximate=True)
        pipe.execute()

    def receive(
        self, reader: redis.Redis, count: int, seen: list[float], stop: threading.Event
    ) -> None:
        position = "0-0"
        while len(seen) < count and not stop.is_set():
            answer = reader.xread({self.key: position}, count=1000, block=500)
            now = time.perf_counter()
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    position = entry_id
                    seen.append(now - json.loads(fields[b"e"])[2]["ts"])


class PubSub:
    name = "pubsub"

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client, self.key = client, key
        self.subscribed = threading.Event()

    def ready(self) -> None:
        assert self.subscribed.wait(5)

    def publish(self, entries: list[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.publish(self.key, entry)
        pipe.execute()

    def receive(
        self, reader: redis.Redis, count: int, seen: list[float], stop: threading.Event
    ) -> None:
        pubsub = reader.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.key)
        pubsub.get_message(timeout=1)  # the subscribe confirmation
        self.subscribed.set()
        while len(seen) < count and not stop.is_set():
            message = pubsub.get_message(timeout=0.5)
            if message is not None:
                seen.append(time.perf_counter() - json.loads(message["data"])[2]["ts"])
        pubsub.close()


def run(transport_class: Any, url: str, events: int, rate: float | None) -> dict[str, Any]:
    key = f"bus-bench-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(url)
    reader = redis.Redis.from_url(url)
    transport = transport_class(client, key)
    seen: list[float] = []
    stop = threading.Event()
    receiver = threading.Thread(target=transport.receive, args=(reader, events, seen, stop))
    receiver.start()
    transport.ready()
    start = time.perf_counter()
    sent = 0
    while sent < events:
        if rate is None:
            batch = min(BATCH, events - sent)
        else:
            due = int((time.perf_counter() - start) * rate) + 1
            batch = min(BATCH, due - sent, events - sent)
            if batch <= 0:
                time.sleep(0.0005)
                continue
        transport.publish([_entry(time.perf_counter()) for _ in range(batch)])
        sent += batch
    receiver.join(30)
    elapsed = time.perf_counter() - start
    stop.set()
    receiver.join(5)
    client.delete(key)
    client.close()
    reader.close()
    latencies = sorted(seen)
    return {
        "transport": transport.name,
        "mode": "burst" if rate is None else f"paced {rate:g}/s",
        "events": events,
        "received": len(seen),
        "events_per_s": round(len(seen) / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 3) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s of the paced run")
    args = parser.parse_args()
    rows = []
    for transport in (Streams, PubSub):
        rows.append(run(transport, args.redis, args.events, None))
        rows.append(run(transport, args.redis, int(args.rate * 3), args.rate))
    print(f"{'transport':10} {'mode':16} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(f"{row['transport']:10} {row['mode']:16} {row['events_per_s']:>10} "
              f"{row['p50_ms']:>8} {row['p99_ms']:>8}")  # fmt: skip
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        for row in rows:
            out.write(json.dumps({**row, "time": time.time(), "host": platform.node()}) + "\n")


if __name__ == "__main__":
    main()
