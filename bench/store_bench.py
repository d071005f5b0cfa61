"""Micro-benchmark of SQLiteStore.append: throughput and latency under concurrent writers.

Runs every combination of writer threads (1, 8, 64), commit policy (group commit vs one commit
per message) and PRAGMA synchronous (NORMAL, FULL), each for a fixed duration on a fresh
database in a temporary directory. Prints a table and appends one JSON line per run to
bench/results/store.jsonl.

    python -m bench.store_bench [--seconds 2] [--threads 1,8,64]

With `--fts both` (issue 15) it runs group commit, synchronous NORMAL only, with and
without the full-text index (without: the writer indexes nothing, so an insert costs what
it did before search existed), alternating, `--repeat` times each, and prints the ratio of
the medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from threadchat.store.sqlite import SQLiteStore

RESULTS = Path(__file__).resolve().parent / "results" / "store.jsonl"
TEXT = "a typical chat line of about sixty characters, give or take."


def run(
    threads: int, group_commit: bool, synchronous: str, seconds: float, fts: bool = True
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(
            tmp,
            synchronous=synchronous,  # type: ignore[arg-type]
            group_commit=group_commit,
            search_index=fts,
        )
        latencies: list[list[float]] = [[] for _ in range(threads)]
        start = threading.Barrier(threads + 1)
        stop_at = 0.0

        def worker(n: int) -> None:
            own = latencies[n]
            start.wait(timeout=30)
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                store.append(sender=f"user{n}", room="bench", text=TEXT)
                own.append(time.perf_counter() - t0)

        workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for t in workers:
            t.start()
        began = time.perf_counter()
        stop_at = began + seconds
        start.wait(timeout=30)
        for t in workers:
            t.join(timeout=seconds + 60)
        elapsed = time.perf_counter() - began
        store.close()
    every = sorted(x for own in latencies for x in own)
    quantiles = statistics.quantiles(every, n=100) if len(every) >= 2 else every * 99
    return {
        "bench": "store_append",
        "threads": threads,
        "commit": "group" if group_commit else "per_message",
        "synchronous": synchronous,
        "fts": fts,
        "seconds": round(elapsed, 3),
        "messages": len(every),
        "msgs_per_s": round(len(every) / elapsed, 1),
        "p50_ms": round(quantiles[49] * 1000, 3),
        "p99_ms": round(quantiles[98] * 1000, 3),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each run")
    parser.add_argument("--threads", default="1,8,64", help="comma-separated writer counts")
    parser.add_argument("--fts", choices=("both",), help="with and without the search index")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, with --fts")
    parser.add_argument("--note", default="", help="recorded with each result")
    args = parser.parse_args()
    counts = [int(x) for x in args.threads.split(",")]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if args.fts:
        compare_fts(counts, args.seconds, args.repeat, args.note)
        return
    header = f"{'sync':<7}{'commit':<13}{'threads':>8}{'msgs/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
    print(header)
    print("-" * len(header))
    with RESULTS.open("a") as out:
        for synchronous in ("NORMAL", "FULL"):
            for group in (True, False):
                for threads in counts:
                    r = run(threads, group, synchronous, args.seconds)
                    out.write(json.dumps(r) + "\n")
                    out.flush()
                    print(
                        f"{synchronous:<7}{r['commit']!s:<13}{threads:>8}{r['msgs_per_s']:>11}"
                        f"{r['p50_ms']:>9}{r['p99_ms']:>9}",
                        flush=True,
                    )


def compare_fts(counts: list[int], seconds: float, repeat: int, note: str) -> None:
    """Insert throughput with the full-text index against without it, taking turns."""
    print(f"{'threads':>8}{'with index':>12}{'without':>10}{'ratio':>8}")
    with RESULTS.open("a") as out:
        for threads in counts:
            rates: dict[bool, list[float]] = {True: [], False: []}
            for n in range(repeat):
                for fts in (True, False) if n % 2 == 0 else (False, True):
                    r = run(threads, True, "NORMAL", seconds, fts=fts)
                    if note:
                        r["note"] = note
                    out.write(json.dumps(r) + "\n")
                    out.flush()
                    rates[fts].append(float(r["msgs_per_s"]))  # type: ignore[arg-type]
            with_index = statistics.median(rates[True])
            without = statistics.median(rates[False])
            print(
                f"{threads:>8}{with_index:>12.0f}{without:>10.0f}{with_index / without:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
