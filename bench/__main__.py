"""``python -m bench``: run scenarios against servers, print a table, append JSON lines.

Results go to bench/results/results.jsonl; ``python -m bench.report`` (``make bench-report``)
turns them into docs/performance.md. Examples:

  python -m bench --quick                                  # a first look, short runs
  python -m bench --scenario fanout-100,rate-100 --servers ngircd,threadchat-irc --repeat 3

Before/after, same machine, one sitting: ``--baseline REV`` also runs threadchat-irc and
threadchat-json of git revision REV (as ``threadchat-irc@REV``, ``threadchat-json@REV``),
taking turns with its working-tree twin in every round (the order reversed every other
round). REV is checked out once as a detached git worktree in bench/baselines/ (gitignored,
reused later; remove it with ``git worktree remove``) and its servers import that checkout's
package. Idle scenarios are then repeated too, and the run ends with a Markdown table of
medians before and after and the change, changes worse than 5 % in bold; it is appended to
bench/results/comparisons.jsonl and the report shows the newest one under "Before and
after". Issue 11's table (one command line):

  python -m bench --baseline f195cf1 --servers threadchat-irc,threadchat-json --repeat 3
      --scenario fanout-100,fanout-1000,rate-100,rate-1000,idle-1000,idle-5000,history
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.baseline import (
    COMPARABLE,
    Baseline,
    BaselineError,
    baseline_servers,
    prepare_baseline,
    verify_source,
    working_tree_label,
)
from bench.compare import compare, markdown
from bench.scenarios import SCENARIOS, Options, Scenario
from bench.servers import REPO_DIR, SERVERS, ServerSpec, raise_nofile_limit

RESULTS = Path(__file__).resolve().parent / "results" / "results.jsonl"
# One line per --baseline run: its before/after rows and the Markdown table.
COMPARISONS = RESULTS.parent / "comparisons.jsonl"
DEFAULT_SERVERS = "ngircd,naive,threadchat-irc,threadchat-json"


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare runs: cores, CPU model, memory, kernel, Python."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR,
                             capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def fmt(v: Any, scale: float = 1.0, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):
        return "/".join(f"{x:.0f}" for x in v)
    return f"{v * scale:,.{digits}f}"


def row(rec: dict[str, Any]) -> str:
    r = rec["result"]
    name = f"{rec['scenario']}{'[' + r['variant'] + ']' if r.get('variant') else ''}"
    if "repeat" in rec:
        name += f" #{rec['repeat']}" if rec["repeat"] != "median" else " median"
    if "error" in r or "skipped" in r:
        return f"{name:<26} {rec['server']:<23} {r.get('error') or r.get('skipped')}"
    if "registrations_per_s" in r:
        return (
            f"{name:<26} {rec['server']:<23} registered {r['registered']}/{r['clients']} "
            f"in {r['total_s']:.2f}s  {fmt(r['registrations_per_s'])}/s  "
            f"server cpu {r['server_cpu_s']:.2f}s ({fmt(r['server_cpu_pct'], 1, 0)}%)  "
            f"p99 {fmt(r['p99_ms'], 1, 1)} ms"
        )
    if "cpu_s_per_node" in r:
        # A cluster run (bench/cluster_bench.py): one row per node count.
        added = ""
        if r.get("added_p50_ms") is not None:
            added = (
                f"  cross-node adds p50 {r['added_p50_ms']:+.1f} p99 {r['added_p99_ms']:+.1f} ms"
            )
        cpu = " ".join(f"{c:.0f}%" for c in r["cpu_pct_per_node"])
        return (
            f"{name:<26} {rec['server']:<23} {fmt(r['deliveries_per_s']):>11} "
            f"{'':>11} {fmt(r['p50_ms'], 1, 1):>8} {fmt(r['p99_ms'], 1, 1):>8} {'':>8} "
            f"{fmt(r['completeness'], 100, 1):>6}%  cpu per node {cpu}, generator "
            f"{fmt(r.get('generator_cpu_pct'))}%{added}"
        )
    if "held_per_node" in r:
        return (
            f"{name:<26} {rec['server']:<23} held {r['held_total']} on {r['nodes']} nodes "
            f"({'+'.join(str(n) for n in r['held_per_node'])}), each limited to "
            f"{r['nofile_per_node']} open files"
        )
    if "held" in r:
        per_conn = fmt(r["rss_kb_per_conn"], 1, 1)
        return (
            f"{name:<26} {rec['server']:<23} held {r['held']}/{r['clients']} "
            f"in {r['connect_s']:.1f}s  rss/conn {per_conn} KiB"
        )
    extra = ""
    if r.get("slow_consumer") is not None:
        s = r["slow_consumer"]
        extra = f" slow cut_off={s['cut_off']} base_p99={fmt(r.get('baseline_p99_ms'), 1, 1)}"
    return (
        f"{name:<26} {rec['server']:<23} {fmt(r['deliveries_per_s']):>11} "
        f"{fmt(r['deliveries_per_cpu_s']):>11} {fmt(r['p50_ms'], 1, 1):>8} "
        f"{fmt(r['p99_ms'], 1, 1):>8} {fmt(r['max_ms'], 1, 1):>8} "
        f"{fmt(r['completeness'], 100, 1):>6}% {fmt(r['server_cpu_pct'], 1, 0):>4}% "
        f"{fmt(r['server_rss_kb_end'] / 1024, 1, 1):>6} {fmt(r['generator_cpu_pct']):>7}{extra}"
    )


HEADER = (
    f"{'scenario':<26} {'server':<23} {'deliv/s':>11} {'deliv/cpu-s':>11} {'p50 ms':>8} "
    f"{'p99 ms':>8} {'max ms':>8} {'compl':>7} {'cpu':>5} {'RSS MB':>6} {'gen cpu%':>7}"
)


def server_order(servers: list[str], specs: dict[str, ServerSpec], label: str | None) -> list[str]:
    """The servers of one round; each threadchat server preceded by its baseline, if any."""
    out = []
    for server in servers:
        twin = f"{server}@{label}"
        if label and twin in specs and twin not in servers:
            out.append(twin)
        out.append(server)
    return out


def run_scenarios(
    names: list[str],
    servers: list[str],
    specs: dict[str, ServerSpec],
    opts: Options,
    repeat: int,
    record: Callable[[dict[str, Any]], None],
    common: dict[str, Any],
    repeat_idle: bool = False,
    scenarios: dict[str, Scenario] = SCENARIOS,
) -> list[dict[str, Any]]:
    """Run each scenario against each server, ``repeat`` times with the servers taking turns,
    and return one summary record per scenario x server x variant: the median of its runs,
    or its only run."""
    summaries: list[dict[str, Any]] = []
    for name in names:
        scenario = scenarios[name]
        # Idle runs measure memory and connect time, which vary little: run them once, unless
        # a before/after comparison asks for medians of everything.
        rounds = repeat if scenario.traffic or scenario.repeated or repeat_idle else 1
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for index in range(rounds):
            # Servers take turns, so a slow moment of the machine does not hit one server's
            # runs only; every other round in reverse, so no server always goes first.
            for server in servers if index % 2 == 0 else servers[::-1]:
                if scenario.only_server is not None and server != scenario.only_server:
                    continue
                try:
                    results = scenario.run(specs[server], opts)
                except Exception as exc:  # one broken server must not lose the other rows
                    traceback.print_exc(file=sys.stderr)
                    results = [{"error": f"{type(exc).__name__}: {exc}"}]
                for result in results:
                    rec = {**common, "scenario": name, "server": server, "result": result,
                           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
                    if rounds > 1:
                        rec["repeat"] = index
                    runs.setdefault((server, result.get("variant", "")), []).append(result)
                    record(rec)
        # In the order of the servers, not of the last round.
        for server in servers:
            for (run_server, _), results in runs.items():
                if run_server != server:
                    continue
                if rounds == 1:
                    summary = results[0]
                    rec = {**common, "scenario": name, "server": server, "result": summary}
                else:
                    rec = {**common, "scenario": name, "server": server,
                           "result": median(results), "repeat": "median",
                           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
                    record(rec)
                summaries.append(rec)
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario", default="all", help="comma-separated names or 'all': " + ", ".join(SCENARIOS)
    )
    parser.add_argument(
        "--servers", default=DEFAULT_SERVERS, help="comma-separated: " + ", ".join(SERVERS)
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds of sending per run")
    parser.add_argument(
        "--quick", action="store_true", help="short runs, and only the scenarios marked quick"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each traffic scenario (with --baseline: each scenario) N times, servers "
        "taking turns, and also record the median of the N runs (what the report shows)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run threadchat-irc/-json of git revision REV (as threadchat-irc@REV ...), "
        "checked out in bench/baselines/, taking turns with the working tree's servers; "
        "idle scenarios are repeated too; ends with a before/after table",
    )
    parser.add_argument("--no-save", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args(argv)  # fmt: skip

    names = list(SCENARIOS) if args.scenario == "all" else args.scenario.split(",")
    servers = args.servers.split(",")
    for n in names:
        if n not in SCENARIOS:
            parser.error(f"unknown scenario {n!r}")
    for s in servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s!r}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.quick:
        names = [n for n in names if SCENARIOS[n].in_quick]
    duration = args.duration or (3.0 if args.quick else 8.0)
    opts = Options(duration=duration, drain_s=3.0 if args.quick else 5.0, quick=args.quick)

    specs = dict(SERVERS)
    baseline: Baseline | None = None
    after = git_commit()
    if args.baseline:
        if not any(s in COMPARABLE for s in servers):
            parser.error(f"--baseline needs one of {', '.join(COMPARABLE)} in --servers")
        try:
            baseline = prepare_baseline(args.baseline)
            # The working tree's servers must run the working tree too, not an installed copy.
            verify_source(REPO_DIR)
            after = working_tree_label()
        except BaselineError as exc:
            parser.error(str(exc))
        specs.update(baseline_servers(baseline))
        servers = server_order(servers, specs, baseline.label)
        print(f"baseline {baseline.rev} = {baseline.commit[:12]}, checked out in "
              f"{baseline.path.relative_to(REPO_DIR)}", flush=True)  # fmt: skip

    raise_nofile_limit()
    run_id = time.strftime("%Y%m%dT%H%M%S")
    common = {
        "run_id": run_id,
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "commit": git_commit(),
    }
    if baseline is not None:
        common["baseline"] = baseline.commit

    def record(rec: dict[str, Any]) -> None:
        print(row(rec), flush=True)
        if not args.no_save:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS.open("a") as f:
                f.write(json.dumps(rec) + "\n")

    print(HEADER, flush=True)
    summaries = run_scenarios(names, servers, specs, opts, args.repeat, record, common,
                              repeat_idle=baseline is not None)  # fmt: skip
    if baseline is not None:
        table = compare(summaries, baseline.label)
        text = markdown(table, before=baseline.label, after=after, runs=args.repeat)
        print("\n" + text, flush=True)
        if not args.no_save:
            rec = {**common, "before": baseline.label, "after": after, "repeat": args.repeat,
                   "duration_s": duration, **table, "markdown": text}  # fmt: skip
            COMPARISONS.parent.mkdir(parents=True, exist_ok=True)
            with COMPARISONS.open("a") as f:
                f.write(json.dumps(rec) + "\n")
    return 0


# Figures of a result that are single numbers; the median takes each on its own.
MEDIAN_FIELDS = ("deliveries_per_s", "deliveries_per_cpu_s", "p50_ms", "p99_ms", "max_ms",
                 "completeness", "server_cpu_pct", "server_rss_kb_end",
                 # cluster-fanout's (bench/cluster_bench.py)
                 "local_p50_ms", "local_p99_ms", "remote_p50_ms", "remote_p99_ms",
                 "added_p50_ms", "added_p99_ms")  # fmt: skip
IDLE_MEDIAN_FIELDS = ("rss_kb_per_conn", "connect_s", "connects_per_s", "server_rss_kb_end")
STORM_MEDIAN_FIELDS = ("total_s", "registrations_per_s", "server_cpu_s", "server_cpu_pct",
                       "server_cpu_ms_per_registration", "p50_ms", "p99_ms", "max_ms",
                       "server_rss_kb_end")  # fmt: skip


def median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result for N runs: the run of median throughput (idle runs: of median memory per
    connection; connect storms: of median registrations/s), each figure replaced by its median
    over the runs, with the runs' lowest and highest throughput and p99 (idle: memory per
    connection; storms: total seconds) kept beside it."""
    idle = any("held" in r for r in results)
    storm = any("registrations_per_s" in r for r in results)
    if storm:
        key, fields, spread = "registrations_per_s", STORM_MEDIAN_FIELDS, ("total_s",)
    elif idle:
        key, fields, spread = "rss_kb_per_conn", IDLE_MEDIAN_FIELDS, ("rss_kb_per_conn",)
    else:
        key, fields, spread = "deliveries_per_s", MEDIAN_FIELDS, ("deliveries_per_s", "p99_ms")
    usable = [r for r in results if r.get(key) is not None]
    if not usable:
        return results[-1]
    usable.sort(key=lambda r: r[key])
    out = dict(usable[len(usable) // 2])
    for field in fields:
        values = sorted(r[field] for r in usable if r.get(field) is not None)
        if values:
            out[field] = statistics.median(values)
    if "held" in out:
        out["held"] = min(r["held"] for r in usable)  # every run must have kept them all
    if storm:
        out["registered"] = min(r["registered"] for r in usable)  # likewise
    out["runs"] = len(usable)
    out["spread"] = {
        field: [min(r[field] for r in usable), max(r[field] for r in usable)]
        for field in spread
        if all(r.get(field) is not None for r in usable)
    }
    return out


if __name__ == "__main__":
    sys.exit(main())
