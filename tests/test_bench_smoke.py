"""Smoke test of the benchmark harness against the naive reference server (no speed goals)."""

from __future__ import annotations

import pytest

from bench.__main__ import median
from bench.history_cpu import measure as measure_history_cpu
from bench.runner import TrafficPlan, plan_clients, run_idle, run_traffic
from bench.servers import SERVERS

pytestmark = pytest.mark.timeout(90)


def test_plan_puts_senders_first_in_each_room() -> None:
    plans = plan_clients(20, rooms=2, senders=4, slow=True)
    assert [p.rooms[0] for p in plans].count("r0") == 10
    assert [p.gid for p in plans if p.sender] == [0, 1, 10, 11]
    assert [p.gid for p in plans if p.slow] == [9]


@pytest.mark.parametrize("server", ["naive", "naive-json"])
def test_every_delivery_is_counted(server: str) -> None:
    clients = 6
    plan = TrafficPlan(clients=clients, senders=2, rate=200, sample_every=1, duration=1.0,
                       drain_s=5.0)  # fmt: skip
    result = run_traffic(SERVERS[server], plan)
    assert result["ready"] == clients
    assert result["sent"] > 50
    # One room: each message reaches every member but its sender.
    assert result["expected"] == result["sent"] * (clients - 1)
    assert result["received"] == result["expected"]
    assert result["completeness"] == 1.0
    # sample_every=1 times every delivered line.
    assert result["samples"] == result["received"]
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["server_alive"] and result["disconnects"] == 0


def test_idle_clients_are_held() -> None:
    result = run_idle(SERVERS["naive"], 40)
    assert result["held"] == 40
    assert result["server_alive"]


def test_repeated_runs_are_summed_up_by_their_median() -> None:
    runs = [
        {"deliveries_per_s": 3.0, "p99_ms": 9.0, "p50_ms": 1.0, "label": "a"},
        {"deliveries_per_s": 1.0, "p99_ms": 5.0, "p50_ms": 3.0, "label": "b"},
        {"deliveries_per_s": 2.0, "p99_ms": 7.0, "p50_ms": 2.0, "label": "c"},
    ]
    summary = median(runs)
    assert summary["deliveries_per_s"] == 2.0 and summary["p99_ms"] == 7.0
    assert summary["p50_ms"] == 2.0 and summary["label"] == "c"  # the median run's other fields
    assert summary["runs"] == 3
    assert summary["spread"] == {"deliveries_per_s": [1.0, 3.0], "p99_ms": [5.0, 9.0]}


@pytest.mark.parametrize("with_history", [False, True])
def test_history_cpu_harness_delivers_every_message(with_history: bool) -> None:
    # The CPU figures of bench.history_cpu mean something only if the work happened: every
    # message reached every member but its sender.
    result = measure_history_cpu(
        with_history, rounds=6, members=5, senders=2, per_read=4, count=True
    )
    assert result["delivered"] == 6 * 4 * (5 - 1)
    assert result["cpu_us"] > 0
