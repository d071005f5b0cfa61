"""Smoke test of the benchmark harness against the naive reference server (no speed goals)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import median, run_scenarios, server_order
from bench.baseline import (
    BaselineError,
    baseline_servers,
    git,
    prepare_baseline,
    verify_source,
)
from bench.compare import compare, markdown
from bench.connect_storm import storm
from bench.history_cpu import measure as measure_history_cpu
from bench.runner import TrafficPlan, plan_clients, run_connect_storm, run_idle, run_traffic
from bench.scenarios import Options, Scenario
from bench.servers import REPO_DIR, SERVERS, ServerSpec

pytestmark = pytest.mark.timeout(90)


def test_plan_puts_senders_first_in_each_room() -> None:
    plans = plan_clients(20, rooms=2, senders=4, slow=True)
    assert [p.rooms[0] for p in plans].count("r0") == 10
    assert [p.gid for p in plans if p.sender] == [0, 1, 10, 11]
    assert [p.gid for p in plans if p.slow] == [9]


@pytest.mark.parametrize("server", ["naive", "naive-json", "threadchat-ws"])
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


def test_idle_runs_are_summed_up_by_their_median() -> None:
    runs = [
        {"held": 10, "clients": 10, "rss_kb_per_conn": 31.0, "connect_s": 0.2},
        {"held": 9, "clients": 10, "rss_kb_per_conn": 29.0, "connect_s": 0.3},
        {"held": 10, "clients": 10, "rss_kb_per_conn": 30.0, "connect_s": 0.1},
    ]
    summary = median(runs)
    assert summary["rss_kb_per_conn"] == 30.0 and summary["connect_s"] == 0.2
    assert summary["held"] == 9  # one run that lost a client is not hidden by the others
    assert summary["spread"] == {"rss_kb_per_conn": [29.0, 31.0]}


def _tiny_traffic(spec: ServerSpec, opts: Options) -> list[dict[str, Any]]:
    plan = TrafficPlan(clients=4, senders=2, rate=100, sample_every=1, duration=opts.duration,
                       drain_s=opts.drain_s)  # fmt: skip
    return [run_traffic(spec, plan)]


def _tiny_idle(spec: ServerSpec, opts: Options) -> list[dict[str, Any]]:
    return [run_idle(spec, 10)]


TINY = {
    "tiny": Scenario("tiny", "1 room, C=4, S=2, 100 msgs/s", _tiny_traffic),
    "tiny-idle": Scenario("tiny-idle", "10 idle clients", _tiny_idle, traffic=False),
}


@pytest.mark.timeout(240)
def test_baseline_runs_beside_the_working_tree(tmp_path: Path) -> None:
    # HEAD: a revision every clone has, shallow ones included (CI runs on a fresh clone).
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        git("rev-parse", "--verify", "HEAD")
    except BaselineError as exc:
        pytest.skip(f"not a git checkout: {exc}")
    baseline = prepare_baseline("HEAD", root=tmp_path / "baselines")
    try:
        # A second call finds and reuses the worktree.
        assert prepare_baseline("HEAD", root=tmp_path / "baselines") == baseline
        # Each side imports its own checkout's package.
        assert verify_source(baseline.path).is_relative_to(baseline.path)
        assert verify_source(REPO_DIR).is_relative_to(REPO_DIR)
        specs = {**SERVERS, **baseline_servers(baseline)}
        before = f"threadchat-json@{baseline.label}"
        servers = server_order(["threadchat-json"], specs, baseline.label)
        assert servers == [before, "threadchat-json"]
        records: list[dict[str, Any]] = []
        summaries = run_scenarios(list(TINY), servers, specs, Options(duration=1.0, drain_s=5.0),
                                  repeat=2, record=records.append, common={}, repeat_idle=True,
                                  scenarios=TINY)  # fmt: skip
    finally:
        git("worktree", "remove", "--force", str(baseline.path))

    # Both servers in every round, taking turns in alternating order, then the medians.
    assert [(r["scenario"], r["server"], r.get("repeat")) for r in records] == [
        (name, server, repeat)
        for name in TINY
        for repeat, order in ((0, servers), (1, servers[::-1]), ("median", servers))
        for server in order
    ]
    for rec in records:
        result = rec["result"]
        assert "error" not in result, result
        assert result.get("completeness", 1.0) == 1.0
        assert result.get("held", 10) == 10
    table = compare(summaries, baseline.label)
    assert [(r["scenario"], r["figure"]) for r in table["rows"]] == [
        ("tiny", "deliveries/s"),
        ("tiny", "deliveries per CPU-s"),
        ("tiny", "p99 ms"),
        ("tiny", "max ms"),
        ("tiny", "RSS per connection KiB"),
        ("tiny-idle", "RSS per connection KiB"),
    ]
    for row in table["rows"]:
        assert row["server"] == "threadchat-json" and row["runs"] == [2, 2]
        assert row["before"] is not None and row["after"] is not None, row
        assert row["change_pct"] is not None, row
    assert table["notes"] == []

    text = markdown(table, before=baseline.label, after="working tree", runs=2)
    lines = text.splitlines()
    assert "| scenario | server | figure | before | after | change |" in lines
    body = [line for line in lines if line.startswith("| tiny")]
    assert len(body) == len(table["rows"])
    for line, row in zip(body, table["rows"], strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        shown = [float(cell.replace(",", "")) for cell in cells[3:5]]
        assert shown == pytest.approx([row["before"], row["after"]], abs=10 ** -row["digits"])
        assert "%" in cells[5]


def test_a_worse_figure_is_marked() -> None:
    def summary(server: str, **result: Any) -> dict[str, Any]:
        return {"scenario": "fanout-100", "server": server, "result": result}

    before = {"deliveries_per_s": 100.0, "deliveries_per_cpu_s": 200.0, "p99_ms": 10.0,
              "max_ms": 20.0, "completeness": 1.0, "rss_kb_per_conn": 30.0}  # fmt: skip
    after = {**before, "deliveries_per_s": 94.0, "p99_ms": 10.4, "max_ms": 40.0,
             "rss_kb_per_conn": 32.0}  # fmt: skip
    table = compare([summary("threadchat-irc@abc", **before), summary("threadchat-irc", **after)],
                    "abc")  # fmt: skip
    worse = {r["figure"]: r["worse"] for r in table["rows"]}
    # 6 % fewer deliveries is worse than 5 %; p99 4 % up is not; max is shown, not judged;
    # 6.7 % more memory per connection is worse.
    assert worse == {"deliveries/s": True, "deliveries per CPU-s": False, "p99 ms": False,
                     "max ms": False, "RSS per connection KiB": True}  # fmt: skip
    assert table["worse"] == 2
    text = markdown(table, before="abc", after="def", runs=3)
    assert "| fanout-100 | threadchat-irc | deliveries/s | 100 | 94 | **-6.0 % worse** |" in text
    assert "+100.0 % (not judged)" in text


@pytest.mark.parametrize("server", ["threadchat-irc", "threadchat-json"])
def test_connect_storm_registers_everyone(server: str) -> None:
    result = run_connect_storm(SERVERS[server], 12, in_flight=3)
    assert result["registered"] == 12 and result["failed"] == 0
    assert result["kept_connected"] and result["server_alive"]
    assert result["registrations_per_s"] > 0 and result["server_cpu_s"] >= 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_connect_storm_counts_a_refused_registration() -> None:
    # The nick is taken by a client that stays connected, so the storm's one client gets 433.
    spec = SERVERS["threadchat-irc"]
    server = spec.start()
    try:
        with socket.create_connection((server.host, server.port), timeout=10) as holder:
            holder.sendall(b"NICK s00000\r\nUSER s 0 * :holder\r\n")
            holder.settimeout(10)
            seen = b""
            while b" 001 " not in seen:
                chunk = holder.recv(4096)
                assert chunk, "the server closed the holder"
                seen += chunk
            result = storm(server.host, server.port, "irc", 1, in_flight=1)
    finally:
        server.stop()
    assert result["registered"] == 0 and result["failed"] == 1


def test_connect_storms_are_summed_up_by_their_median() -> None:
    runs = [
        {"registered": 10, "clients": 10, "registrations_per_s": 500.0, "total_s": 0.02,
         "server_cpu_s": 0.3},
        {"registered": 9, "clients": 10, "registrations_per_s": 300.0, "total_s": 0.03,
         "server_cpu_s": 0.1},
        {"registered": 10, "clients": 10, "registrations_per_s": 400.0, "total_s": 0.025,
         "server_cpu_s": 0.2},
    ]  # fmt: skip
    summary = median(runs)
    assert summary["registrations_per_s"] == 400.0 and summary["server_cpu_s"] == 0.2
    assert summary["registered"] == 9  # a run that lost a registration is not hidden
    assert summary["spread"] == {"total_s": [0.02, 0.03]}


def test_a_short_soak_loses_nothing_and_comes_back_to_its_baseline() -> None:
    # `make soak` in miniature: every protocol visits, and the verdict is the exit status.
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", "4", "--clients", "6", "--no-record"],
        capture_output=True,
        text=True,
        timeout=80,
        cwd=REPO_DIR,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lost: 0" in result.stdout and "failed: none" in result.stdout, result.stdout


def test_every_attack_of_the_canary_bench_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.attack_canary", "--seconds", "1", "--slowloris", "5",
         "--members", "5", "--flooders", "2", "--half-open", "20", "--no-record"],
        capture_output=True,
        text=True,
        timeout=80,
        cwd=REPO_DIR,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "slowloris", "sigstop", "fanout", "udp-garbage", "half-open"
    ]  # fmt: skip
    assert all(" 0 lost" in line for line in lines), result.stdout


def test_live_bench_typing_storm_measures_both_phases() -> None:
    from bench.live_bench import typing_storm

    result = typing_storm(users=12, seconds=1.0)
    for phase in ("quiet", "typing"):
        assert result[phase]["messages"] > 0
        assert result[phase]["server_cpu_s"] >= 0


def test_live_bench_history_pages_compares_plain_and_lively() -> None:
    from bench.live_bench import history_pages

    result = history_pages(messages=600, pages=40)
    assert result["plain"]["p99_ms"] > 0 and result["with_reactions_and_edits"]["p99_ms"] > 0
