"""One measured run: fresh server, forked load workers, numbers read from /proc and the workers."""

from __future__ import annotations

import os
import time
from array import array
from dataclasses import dataclass
from typing import Any

from bench.connect_storm import storm
from bench.loadgen import MAX_DRAIN_S, ClientPlan, WorkerConfig, WorkerPool
from bench.servers import RunningServer, ServerSpec

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Two processes: the machine has two cores and the server needs one of them too.
DEFAULT_WORKERS = 2
# Idle clients are held this long before counting how many the server kept.
IDLE_HOLD_S = 3.0


def proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" of comm, utime and stime are the 12th and 13th fields.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process in KiB; ``field="VmHWM"``: the most it has had."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class TrafficPlan:
    clients: int
    rooms: int = 1
    senders: int = 10  # total; spread evenly over the rooms
    rate: float = 0.0  # total messages/s; 0 = as fast as the window allows
    window: int = 32
    slow_consumer: bool = False
    sample_every: int = 16
    duration: float = 8.0
    drain_s: float = 5.0
    workers: int = DEFAULT_WORKERS
    pad_bytes: int = 40


def plan_clients(n: int, rooms: int, senders: int, slow: bool) -> list[ClientPlan]:
    """Clients in contiguous room blocks; the first members of each room are its senders."""
    per_room = max(1, n // rooms)
    senders_per_room = max(1, senders // rooms) if senders else 0
    plans = []
    for i in range(n):
        room_idx = min(i // per_room, rooms - 1)
        rank = i - room_idx * per_room
        plans.append(
            ClientPlan(gid=i, nick=f"b{i:05d}", rooms=[f"r{room_idx}"],
                       sender=rank < senders_per_room)
        )  # fmt: skip
    if slow:
        # The last member of room 0 (never a sender, never the probe in its worker).
        victim = next(p for p in reversed(plans[:per_room]) if not p.sender)
        victim.slow = True
    return plans


def split(plans: list[ClientPlan], workers: int, rooms: int) -> list[list[ClientPlan]]:
    """One room: alternate clients over workers. Many rooms: whole rooms per worker."""
    out: list[list[ClientPlan]] = [[] for _ in range(workers)]
    for p in plans:
        key = p.gid if rooms == 1 else int(p.rooms[0][1:])
        out[key % workers].append(p)
    return out


def _configs(server: RunningServer, parts: list[list[ClientPlan]], **kw: Any) -> list[WorkerConfig]:
    per_worker = max(1, server.connect_parallelism // len(parts))
    return [
        WorkerConfig(index=i, host=server.host, port=server.port, protocol=server.protocol,
                     clients=part, connect_parallelism=per_worker, oper=server.oper, **kw)
        for i, part in enumerate(parts)
    ]  # fmt: skip


def percentiles(samples: array[int]) -> dict[str, Any]:
    if not samples:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "cdf_ms": []}
    ordered = sorted(samples)
    n = len(ordered)

    def q(p: float) -> float:
        return ordered[min(n - 1, int(p * n))] / 1e6

    # 1..99 % plus the tail, enough to draw a distribution later without the raw samples.
    cdf = [round(q(i / 100), 4) for i in range(1, 100)] + [round(q(0.999), 4)]
    return {"p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "max_ms": ordered[-1] / 1e6,
            "samples": n, "cdf_ms": cdf}  # fmt: skip


def run_traffic(spec: ServerSpec, plan: TrafficPlan, **server_opts: object) -> dict[str, Any]:
    """Fresh server, connect and join everyone, send for plan.duration, drain, measure."""
    server = spec.start(**server_opts)
    pool: WorkerPool | None = None
    try:
        rss0 = proc_rss_kb(server.pid)
        plans = plan_clients(plan.clients, plan.rooms, plan.senders, plan.slow_consumer)
        senders = sum(p.sender for p in plans)
        rate_per_sender = plan.rate / senders if plan.rate and senders else 0.0
        window = plan.window if not plan.rate else max(plan.window, int(rate_per_sender * 2))
        parts = split(plans, plan.workers, plan.rooms)
        pool = WorkerPool(_configs(server, parts, window=window, rate_per_sender=rate_per_sender,
                                   sample_every=plan.sample_every,
                                   pad_bytes=plan.pad_bytes))  # fmt: skip
        t_c = time.monotonic()
        conn = pool.ask_all("connect")
        connect_s = time.monotonic() - t_c
        ready = sum(r["ready"] for r in conn)
        pool.ask_all("quiesce")
        rss_ready = proc_rss_kb(server.pid)
        cpu0 = proc_cpu_s(server.pid)
        t_go = time.monotonic_ns()
        pool.send_all("run", plan.duration)
        sent = pool.recv_all(plan.duration + 60)
        totals: dict[str, int] = {}
        for s in sent:
            for room, k in s["sent_by_room"].items():
                totals[room] = totals.get(room, 0) + k
        pool.send_all(totals, plan.drain_s)  # type: ignore[arg-type]  # (totals, drain) reply
        results = pool.recv_all(MAX_DRAIN_S + 60)
        wall = (time.monotonic_ns() - t_go) / 1e9
        cpu = proc_cpu_s(server.pid) - cpu0
        rss1 = proc_rss_kb(server.pid)
        rss_peak = proc_rss_kb(server.pid, "VmHWM")
        alive = server.alive()
    finally:
        if pool is not None:
            pool.close()
        server.stop()
    received = sum(r["received"] for r in results)
    expected = sum(r["expected"] for r in results)
    last_rx = max((r["last_rx"] for r in results), default=0)
    active_s = (last_rx - t_go) / 1e9 if last_rx else wall
    samples = array("q")
    for r in results:
        samples.extend(r["samples"])
    gen_cpu = [r["cpu_s"] / r["wall_s"] for r in results]
    slow = next((r["slow"] for r in results if r["slow"]), None)
    return {
        "clients": plan.clients, "rooms": plan.rooms, "senders": senders,
        "rate_target": plan.rate, "window": window, "duration_s": plan.duration,
        "pad_bytes": plan.pad_bytes,
        "ready": ready, "connect_s": round(connect_s, 3),
        "sent": sum(r["sent"] for r in results), "expected": expected, "received": received,
        "completeness": received / expected if expected else None,
        "deliveries_per_s": received / active_s if active_s > 0 else 0.0,
        "server_cpu_s": round(cpu, 3), "server_cpu_pct": round(100 * cpu / wall, 1),
        "deliveries_per_cpu_s": received / cpu if cpu > 0 else None,
        "server_rss_kb_start": rss0, "server_rss_kb_ready": rss_ready, "server_rss_kb_end": rss1,
        "server_rss_kb_peak": rss_peak,
        # What the clients cost, over the server's RSS before they came (issue 19's "RSS per
        # connection during fan-out"): after the run and drain, and at the peak of the run.
        "rss_kb_per_conn": round((rss1 - rss0) / plan.clients, 2),
        "rss_peak_kb_per_conn": round((rss_peak - rss0) / plan.clients, 2),
        "generator_cpu_pct": [round(100 * g, 1) for g in gen_cpu],
        "generator_workers": plan.workers,
        "disconnects": sum(r["disconnects"] for r in results),
        "server_alive": alive, "slow_consumer": slow,
        **percentiles(samples),
    }  # fmt: skip


def run_idle(spec: ServerSpec, count: int, workers: int = DEFAULT_WORKERS,
             **server_opts: object) -> dict[str, Any]:  # fmt: skip
    """Connect and register ``count`` clients (no room), hold them, measure memory per client."""
    server = spec.start(**server_opts)
    pool: WorkerPool | None = None
    try:
        rss0 = proc_rss_kb(server.pid)
        plans = [ClientPlan(gid=i, nick=f"i{i:05d}", rooms=[]) for i in range(count)]
        parts = split(plans, workers, 1)
        pool = WorkerPool(_configs(server, parts))
        t_c = time.monotonic()
        conn = pool.ask_all("connect", timeout=300)
        connect_s = time.monotonic() - t_c
        held = pool.ask_all("hold", IDLE_HOLD_S)
        rss1 = proc_rss_kb(server.pid)
        alive = server.alive()
    finally:
        if pool is not None:
            pool.close()
        server.stop()
    ready = sum(r["ready"] for r in conn)
    open_count = sum(h["open"] for h in held)
    return {
        "clients": count, "ready": ready, "held": open_count,
        "connect_s": round(connect_s, 3),
        "connects_per_s": round(ready / connect_s, 1) if connect_s > 0 else None,
        "server_rss_kb_start": rss0, "server_rss_kb_end": rss1,
        "rss_kb_per_conn": round((rss1 - rss0) / open_count, 2) if open_count else None,
        "server_alive": alive,
    }  # fmt: skip


# Connections between connect() and the end of their welcome burst at any moment in a connect
# storm (issue 19's figure: "10,000 clients registering, 8 connections in flight at a time").
STORM_IN_FLIGHT = 8


def run_connect_storm(spec: ServerSpec, count: int, in_flight: int = STORM_IN_FLIGHT,
                      **server_opts: object) -> dict[str, Any]:  # fmt: skip
    """Fresh server; ``count`` clients register, ``in_flight`` at a time, and stay connected
    until the last one is done (bench/connect_storm.py); the server's CPU over the storm."""
    server = spec.start(**server_opts)
    try:
        rss0 = proc_rss_kb(server.pid)
        cpu0 = proc_cpu_s(server.pid)
        result = storm(server.host, server.port, server.protocol, count, in_flight)
        cpu = proc_cpu_s(server.pid) - cpu0
        rss1 = proc_rss_kb(server.pid)
        alive = server.alive()
    finally:
        server.stop()
    registered = result["registered"]
    total_s = result["total_s"]
    return {
        **result,
        "server_cpu_s": round(cpu, 3),
        "server_cpu_pct": round(100 * cpu / total_s, 1) if total_s > 0 else None,
        "server_cpu_ms_per_registration": round(1000 * cpu / registered, 3) if registered else None,
        "server_rss_kb_start": rss0, "server_rss_kb_end": rss1,
        "server_alive": alive,
    }  # fmt: skip
