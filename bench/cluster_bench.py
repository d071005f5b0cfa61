"""Fan-out across 1, 2 and 3 nodes in one run (issue 16): deliveries/s, latency, CPU per node.

For each node count, real `threadchat serve` processes share a Redis key prefix and a fresh
PostgreSQL database of their own (history on, as a cluster runs). `--clients` JSON clients
are spread round-robin over the nodes, all in the lobby; one sender per node sends paced
messages that carry their send time. One thread reads every client socket and records each
delivery's latency, apart for receivers on the sender's node (local) and on another node
(cross-node): the difference is what the bus adds. CPU per node is read from /proc.

    python -m bench.cluster_bench [--nodes 1,2,3] [--clients 300] [--rate 40] [--seconds 5]
    python -m bench.cluster_bench --held 256   # connections held by 3 nodes with that fd limit

`python -m bench --scenario cluster-fanout,cluster-held` (part of `make bench`) runs the same
two, printing rows in its table and recording them in bench/results/results.jsonl.

Needs Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432 (user postgres, trust), as on
every machine of this project. Prints a table and appends one JSON line per node count to
bench/results/cluster.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "cluster.jsonl"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/0"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start_node(
    name: str, prefix: str, database: str, tmp: Path, nofile: int | None = None
) -> tuple[subprocess.Popen, int]:
    """A node; with `nofile`, its open-file limit (soft and hard) is that."""
    port = free_port()

    def limit_files() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    workdir = tmp / name
    workdir.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "THREADCHAT_LINE_PORT": str(port),
        "THREADCHAT_IRC_PORT": "0",
        "THREADCHAT_UDP_PORT": "0",
        "THREADCHAT_WEB_PORT": "0",
        "THREADCHAT_FLOOD_RATE": "0",
        "THREADCHAT_REDIS_URL": REDIS,
        "THREADCHAT_REDIS_PREFIX": prefix,
        "THREADCHAT_DATABASE_URL": database,
        "THREADCHAT_NODE_NAME": name,
        "THREADCHAT_HISTORY_ON_JOIN": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadchat", "serve", "--log-level", "warning"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=limit_files,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)  # waiting for another process to listen; bounded
    proc.kill()
    raise RuntimeError(f"node {name} did not start")


# What a JSON client is shown on arriving in the lobby: its members, or in a quiet room (over
# --quiet-room-size members) a notice with their count.
ARRIVED = (b'"type":"who"', b"/who lists them")


def hello(port: int, name: str, until: tuple[bytes, ...] = ARRIVED) -> socket.socket:
    """A registered JSON client, once it has seen one of `until` (by default its arrival in
    the lobby)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(json.dumps({"type": "hello", "name": name}).encode() + b"\n")
    buffer = b""
    while not any(mark in buffer for mark in until):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"{name} refused: {buffer[-300:]!r}")
        buffer += chunk
    return sock


def run(nodes: int, clients: int, rate: float, seconds: float) -> dict[str, Any]:
    prefix = f"cluster-bench-{uuid.uuid4().hex[:10]}"
    database = f"threadchat_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')  # type: ignore[arg-type]
    tmp = Path(f"/tmp/{prefix}")
    procs: list[tuple[subprocess.Popen, int]] = []
    sockets: list[socket.socket] = []
    try:
        procs = [start_node(f"n{i}", prefix, f"{POSTGRES}/{database}", tmp) for i in range(nodes)]
        receivers: list[tuple[socket.socket, int]] = []
        for i in range(clients):
            node = i % nodes
            receivers.append((hello(procs[node][1], f"r{i}"), node))
        senders = [hello(port, f"s{i}") for i, (_, port) in enumerate(procs)]
        sockets = [s for s, _ in receivers] + senders
        time.sleep(1.0)  # let every node apply every join before the clock starts
        latencies: dict[str, list[float]] = {"local": [], "remote": []}
        stop = threading.Event()
        reader = threading.Thread(target=read_all, args=(receivers, latencies, stop))
        reader.start()
        cpu_before = [cpu_seconds(p.pid) for p, _ in procs]
        generator_before = time.process_time()
        start = time.perf_counter()
        sent = 0
        while time.perf_counter() - start < seconds:
            due = int((time.perf_counter() - start) * rate)
            while sent < due:
                for node, sender in enumerate(senders):
                    text = f"{time.perf_counter()}|{node}"
                    sender.sendall(
                        json.dumps({"type": "say", "room": "lobby", "text": text}).encode() + b"\n"
                    )
                sent += 1
            time.sleep(0.002)
        time.sleep(2.0)  # the tail of the deliveries
        stop.set()
        reader.join(10)
        elapsed = time.perf_counter() - start - 2.0
        generator_cpu = time.process_time() - generator_before
        cpu = [
            round(cpu_seconds(p.pid) - before, 2)
            for (p, _), before in zip(procs, cpu_before, strict=True)
        ]
        every = sorted(latencies["local"] + latencies["remote"])
        expected = sent * nodes * clients
        row: dict[str, Any] = {
            "nodes": nodes,
            "clients": clients,
            "rate_per_sender": rate,
            "messages": sent * nodes,
            "deliveries": len(every),
            "expected": expected,
            "completeness": round(len(every) / expected, 4) if expected else None,
            "deliveries_per_s": round(len(every) / elapsed),
            "seconds": round(elapsed, 2),
            "cpu_s_per_node": cpu,
            "cpu_pct_per_node": [round(100 * c / elapsed) for c in cpu],
            # The senders and the one reader thread of this process: near 100 %, the
            # latencies are the generator's as much as the nodes'.
            "generator_cpu_pct": round(100 * generator_cpu / elapsed),
            "p50_ms": _percentile_ms(every, 0.5),
            "p99_ms": _percentile_ms(every, 0.99),
        }
        for kind in ("local", "remote"):
            values = sorted(latencies[kind])
            if values:
                row[f"{kind}_p50_ms"] = _percentile_ms(values, 0.5)
                row[f"{kind}_p99_ms"] = _percentile_ms(values, 0.99)
        if "remote_p50_ms" in row:
            # What the bus adds: a delivery on another node than the sender's, against one on
            # the sender's own node, in the same run (both include the PostgreSQL commit).
            row["added_p50_ms"] = round(row["remote_p50_ms"] - row["local_p50_ms"], 2)
            row["added_p99_ms"] = round(row["remote_p99_ms"] - row["local_p99_ms"], 2)
        return row
    finally:
        for sock in sockets:
            sock.close()
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')  # type: ignore[arg-type]


def _percentile_ms(values: list[float], fraction: float) -> float | None:
    """The `fraction` percentile of sorted `values` (seconds), in ms."""
    if not values:
        return None
    if fraction == 0.5:
        return round(statistics.median(values) * 1000, 2)
    return round(values[max(0, int(len(values) * fraction) - 1)] * 1000, 2)


def available() -> str | None:
    """Why the cluster benches cannot run here (None: Redis and PostgreSQL answer)."""
    try:
        client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as problem:
        return f"no Redis at {REDIS}: {problem}"
    try:
        psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=2).close()
    except psycopg.Error as problem:
        return f"no PostgreSQL at {POSTGRES}: {problem}"
    return None


def held(nodes: int, nofile: int) -> dict[str, Any]:
    """Connect registered clients to each node (each limited to `nofile` open files) until
    it refuses one: how many the nodes hold together, against one process's limit."""
    prefix = f"cluster-bench-{uuid.uuid4().hex[:10]}"
    database = f"threadchat_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')  # type: ignore[arg-type]
    tmp = Path(f"/tmp/{prefix}")
    procs: list[tuple[subprocess.Popen, int]] = []
    sockets: list[socket.socket] = []
    per_node: list[int] = []
    try:
        procs = [
            start_node(f"n{i}", prefix, f"{POSTGRES}/{database}", tmp, nofile) for i in range(nodes)
        ]
        for i, (_, port) in enumerate(procs):
            count = 0
            while count < nofile:  # a node cannot hold more than its limit
                try:
                    sockets.append(hello(port, f"u{i}x{count}", (b'"type":"welcome"',)))
                except (RuntimeError, OSError) as problem:
                    print(f"node {i} refused client {count + 1}: {problem}", file=sys.stderr)
                    break
                count += 1
            per_node.append(count)
        return {"nodes": nodes, "nofile_per_node": nofile, "held_per_node": per_node,
                "held_total": sum(per_node)}  # fmt: skip
    finally:
        for sock in sockets:
            sock.close()
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')  # type: ignore[arg-type]


def read_all(
    receivers: list[tuple[socket.socket, int]],
    latencies: dict[str, list[float]],
    stop: threading.Event,
) -> None:
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytes] = {}
    for sock, node in receivers:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, node)
    while not stop.is_set():
        for key, _ in selector.select(0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                chunk = sock.recv(262144)
            except BlockingIOError:
                continue
            now = time.perf_counter()
            data = buffers.get(sock.fileno(), b"") + chunk
            *lines, rest = data.split(b"\n")
            buffers[sock.fileno()] = rest
            for line in lines:
                if b'"type":"message"' not in line:
                    continue
                # The text ("SENT_AT|NODE") sliced out rather than the line parsed: at tens of
                # thousands of lines/s, json.loads would make this thread the bottleneck.
                start = line.index(b'"text":"') + 8
                sent_at, node = line[start : line.index(b'"', start)].split(b"|")
                kind = "local" if int(node) == key.data else "remote"
                latencies[kind].append(now - float(sent_at))
    selector.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--rate", type=float, default=40.0, help="messages/s per sender")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--held", type=int, default=0, help="open-file limit per node")
    args = parser.parse_args()
    if args.held:
        row = held(3, args.held)
        print(json.dumps(row))
        with RESULTS.open("a") as out:
            out.write(json.dumps({**row, "time": time.time(), "host": platform.node()}) + "\n")
        return
    rows = [run(int(n), args.clients, args.rate, args.seconds) for n in args.nodes.split(",")]
    for row in rows:
        print(json.dumps(row))
    RESULTS.parent.mkdir(exist_ok=True)
    load = os.getloadavg()[0]
    with RESULTS.open("a") as out:
        for row in rows:
            record = {**row, "time": time.time(), "host": platform.node(), "load": load}
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
