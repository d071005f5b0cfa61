"""``python -m bench``: run scenarios against servers, print a table, append JSON lines."""

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
from pathlib import Path
from typing import Any

from bench.scenarios import SCENARIOS, Options
from bench.servers import REPO_DIR, SERVERS, raise_nofile_limit

RESULTS = Path(__file__).resolve().parent / "results" / "results.jsonl"
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
        return f"{name:<26} {rec['server']:<16} {r.get('error') or r.get('skipped')}"
    if "held" in r:
        per_conn = fmt(r["rss_kb_per_conn"], 1, 1)
        return (
            f"{name:<26} {rec['server']:<16} held {r['held']}/{r['clients']} "
            f"in {r['connect_s']:.1f}s  rss/conn {per_conn} KiB"
        )
    extra = ""
    if r.get("slow_consumer") is not None:
        s = r["slow_consumer"]
        extra = f" slow cut_off={s['cut_off']} base_p99={fmt(r.get('baseline_p99_ms'), 1, 1)}"
    return (
        f"{name:<26} {rec['server']:<16} {fmt(r['deliveries_per_s']):>11} "
        f"{fmt(r['deliveries_per_cpu_s']):>11} {fmt(r['p50_ms'], 1, 1):>8} "
        f"{fmt(r['p99_ms'], 1, 1):>8} {fmt(r['max_ms'], 1, 1):>8} "
        f"{fmt(r['completeness'], 100, 1):>6}% {fmt(r['server_cpu_pct'], 1, 0):>4}% "
        f"{fmt(r['server_rss_kb_end'] / 1024, 1, 1):>6} {fmt(r['generator_cpu_pct']):>7}{extra}"
    )


HEADER = (
    f"{'scenario':<26} {'server':<16} {'deliv/s':>11} {'deliv/cpu-s':>11} {'p50 ms':>8} "
    f"{'p99 ms':>8} {'max ms':>8} {'compl':>7} {'cpu':>5} {'RSS MB':>6} {'gen cpu%':>7}"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
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
        help="run each traffic scenario N times, servers taking turns, and also record the "
        "median of the N runs (what the report shows)",
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
    if args.quick:
        names = [n for n in names if SCENARIOS[n].in_quick]
    duration = args.duration or (3.0 if args.quick else 8.0)
    opts = Options(duration=duration, drain_s=3.0 if args.quick else 5.0, quick=args.quick)

    raise_nofile_limit()
    run_id = time.strftime("%Y%m%dT%H%M%S")
    common = {
        "run_id": run_id,
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "commit": git_commit(),
    }
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    def record(rec: dict[str, Any]) -> None:
        print(row(rec), flush=True)
        if not args.no_save:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with RESULTS.open("a") as f:
                f.write(json.dumps(rec) + "\n")

    print(HEADER, flush=True)
    for name in names:
        # Idle runs measure memory and connect time, which vary little: run them once.
        rounds = args.repeat if SCENARIOS[name].traffic else 1
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for index in range(rounds):
            # Servers take turns, so a slow moment of the machine does not hit one server's
            # runs only.
            for server in servers:
                try:
                    results = SCENARIOS[name].run(SERVERS[server], opts)
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
        for (server, _), results in runs.items():
            rec = {**common, "scenario": name, "server": server, "result": median(results),
                   "repeat": "median", "time": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
            record(rec)
    return 0


# Figures of a traffic result that are single numbers; the median takes each on its own.
MEDIAN_FIELDS = ("deliveries_per_s", "deliveries_per_cpu_s", "p50_ms", "p99_ms", "max_ms",
                 "completeness", "server_cpu_pct", "server_rss_kb_end")  # fmt: skip


def median(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result for N runs: the run of median throughput, each figure replaced by its median
    over the runs, with the runs' lowest and highest throughput and p99 kept beside it."""
    usable = [r for r in results if "deliveries_per_s" in r]
    if not usable:
        return results[-1]
    usable.sort(key=lambda r: r["deliveries_per_s"])
    out = dict(usable[len(usable) // 2])
    for key in MEDIAN_FIELDS:
        values = sorted(r[key] for r in usable if r.get(key) is not None)
        if values:
            out[key] = statistics.median(values)
    out["runs"] = len(usable)
    out["spread"] = {
        key: [min(r[key] for r in usable), max(r[key] for r in usable)]
        for key in ("deliveries_per_s", "p99_ms")
        if all(r.get(key) is not None for r in usable)
    }
    return out


if __name__ == "__main__":
    sys.exit(main())
