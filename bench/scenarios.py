"""Named scenarios: each maps a server to one or more result records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench import cluster_bench
from bench.runner import TrafficPlan, run_connect_storm, run_idle, run_traffic
from bench.servers import ServerSpec

# Senders keep at most this many of their own messages un-received by a probe reader: enough to
# keep ngircd busy at C=100 (measured), small enough that receivers are not cut off for lag.
FAST_WINDOW = 128


@dataclass(frozen=True)
class Options:
    duration: float = 8.0
    drain_s: float = 5.0
    quick: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable[[ServerSpec, Options], list[dict[str, Any]]]
    in_quick: bool = True
    traffic: bool = True  # False for idle runs (connections and memory, not messages)
    # Run --repeat times even when not a traffic scenario (a short run with a noisy figure).
    repeated: bool = False
    # The one server it runs against when set (it starts its own processes, as that
    # server): the others have no row for it.
    only_server: str | None = None


def _traffic(plan: TrafficPlan) -> Callable[[ServerSpec, Options], list[dict[str, Any]]]:
    def run(spec: ServerSpec, opts: Options) -> list[dict[str, Any]]:
        return [run_traffic(spec, replace(plan, duration=opts.duration, drain_s=opts.drain_s))]

    return run


def _idle(count: int) -> Callable[[ServerSpec, Options], list[dict[str, Any]]]:
    def run(spec: ServerSpec, opts: Options) -> list[dict[str, Any]]:
        return [run_idle(spec, count)]

    return run


def _connect_storm(count: int) -> Callable[[ServerSpec, Options], list[dict[str, Any]]]:
    def run(spec: ServerSpec, opts: Options) -> list[dict[str, Any]]:
        return [run_connect_storm(spec, count)]

    return run


# ~460-byte lines (IRC caps a line at 512) at 1,500 msgs/s push ~0.7 MB/s at the stalled
# member, so the server's socket buffers (MiBs on loopback) fill within a few seconds.
SLOW_PLAN = TrafficPlan(clients=100, senders=10, rate=1500, sample_every=1, pad_bytes=400)
SLOW_MIN_DURATION_S = 8.0


def _slow_consumer(spec: ServerSpec, opts: Options) -> list[dict[str, Any]]:
    """Same paced room twice, without and with one member that never reads."""
    duration = max(opts.duration, SLOW_MIN_DURATION_S)
    base = replace(SLOW_PLAN, duration=duration, drain_s=opts.drain_s)
    without = run_traffic(spec, base)
    with_slow = run_traffic(spec, replace(base, slow_consumer=True))
    with_slow["baseline_p99_ms"] = without["p99_ms"]
    with_slow["baseline_completeness"] = without["completeness"]
    return [with_slow]


def _history(spec: ServerSpec, opts: Options) -> list[dict[str, Any]]:
    if not spec.supports_history:
        return [{"skipped": "server has no history option"}]
    plan = TrafficPlan(clients=100, senders=10, window=FAST_WINDOW)
    plan = replace(plan, duration=opts.duration, drain_s=opts.drain_s)
    out = []
    for on in (False, True):
        rec = run_traffic(spec, plan, history=on)
        rec["variant"] = f"history={'on' if on else 'off'}"
        out.append(rec)
    return out


# Issue 16: fan-out over 1, 2 and 3 nodes sharing Redis and PostgreSQL (history on), JSON
# clients spread round-robin over the nodes in one room, one paced sender per node.
CLUSTER_NODES = (1, 2, 3)
CLUSTER_CLIENTS, CLUSTER_RATE = 300, 30.0
CLUSTER_QUICK_CLIENTS, CLUSTER_QUICK_RATE = 150, 20.0
# Each node's open-file limit in the connections-held run: three such nodes hold more
# clients together than one process with that limit could.
CLUSTER_NOFILE = 256


def _cluster_fanout(spec: ServerSpec, opts: Options) -> list[dict[str, Any]]:
    missing = cluster_bench.available()
    if missing is not None:
        return [{"skipped": missing}]
    clients = CLUSTER_QUICK_CLIENTS if opts.quick else CLUSTER_CLIENTS
    rate = CLUSTER_QUICK_RATE if opts.quick else CLUSTER_RATE
    out = []
    for nodes in CLUSTER_NODES:
        result = cluster_bench.run(nodes, clients, rate, opts.duration)
        result["variant"] = f"nodes={nodes}"
        out.append(result)
    return out


def _cluster_held(spec: ServerSpec, opts: Options) -> list[dict[str, Any]]:
    missing = cluster_bench.available()
    if missing is not None:
        return [{"skipped": missing}]
    return [cluster_bench.held(len(CLUSTER_NODES), CLUSTER_NOFILE)]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("fanout-100", "1 room, C=100, S=10, as fast as the window allows",
                 _traffic(TrafficPlan(clients=100, senders=10, window=FAST_WINDOW))),
        Scenario("fanout-1000", "1 room, C=1000, S=10, as fast as the window allows",
                 _traffic(TrafficPlan(clients=1000, senders=10, window=FAST_WINDOW))),
        Scenario("rate-100", "1 room, C=100, S=10, 1,500 msgs/s total, every line timed",
                 _traffic(TrafficPlan(clients=100, senders=10, rate=1500, sample_every=1))),
        Scenario("rate-1000", "1 room, C=1000, S=10, 200 msgs/s total, every line timed",
                 _traffic(TrafficPlan(clients=1000, senders=10, rate=200, sample_every=1))),
        Scenario("rooms-200x10", "200 rooms of 10 (2,000 clients), 1 sender per room, windowed",
                 _traffic(TrafficPlan(clients=2000, rooms=200, senders=200, window=32))),
        Scenario("idle-1000", "1,000 idle registered clients", _idle(1000), traffic=False),
        Scenario("idle-5000", "5,000 idle registered clients", _idle(5000), in_quick=False,
                 traffic=False),
        Scenario("idle-15000", "15,000 idle registered clients", _idle(15000), in_quick=False,
                 traffic=False),
        Scenario("connect-10000", "10,000 clients register (to the end of the welcome burst), "
                 "8 in flight at a time, and stay connected", _connect_storm(10_000),
                 in_quick=False, traffic=False, repeated=True),
        Scenario("slow-consumer", "rate-100 with one member that never reads vs without",
                 _slow_consumer),
        Scenario("history", "fanout-100 with message history off vs on (threadchat only)",
                 _history),
        Scenario("cluster-fanout", f"1 room over 1, 2 and 3 nodes (Redis + PostgreSQL, history "
                 f"on), C={CLUSTER_CLIENTS} JSON clients spread over the nodes, one sender per "
                 f"node at {CLUSTER_RATE:.0f} msgs/s", _cluster_fanout,
                 only_server="threadchat-json"),
        Scenario("cluster-held", f"3 nodes, each with an open-file limit of {CLUSTER_NOFILE}: "
                 "registered clients held until each refuses", _cluster_held, traffic=False,
                 only_server="threadchat-json"),
    )
}  # fmt: skip
