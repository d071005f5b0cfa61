"""Write docs/performance.md (and a PNG chart when matplotlib is installed) from results.jsonl.

Run: ``python -m bench.report``. The latest record of each scenario x server (x variant) wins.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.__main__ import COMPARISONS, RESULTS
from bench.baseline import baseline_of
from bench.servers import REPO_DIR

DOC = REPO_DIR / "docs" / "performance.md"
CHART = REPO_DIR / "docs" / "performance.png"


def latest(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    for rec in records:
        if isinstance(rec.get("repeat"), int):
            continue  # one of several runs; their median record follows them
        if baseline_of(rec["server"])[1]:
            continue  # another revision's server: in the before/after section only
        key = (rec["scenario"], rec["server"], rec["result"].get("variant", ""))
        by_key[key] = rec
    return list(by_key.values())


def _n(v: Any, digits: int = 0, scale: float = 1.0) -> str:
    return "-" if v is None else f"{v * scale:,.{digits}f}"


def traffic_table(recs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| scenario | server | deliveries/s | per server CPU-s | p50 ms | p99 ms | max ms "
        "| delivered | server CPU | RSS MiB | generator CPU % (per worker) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for rec in recs:
        r = rec["result"]
        if "deliveries_per_s" not in r or "cpu_s_per_node" in r:
            continue  # not a run of one server (cluster runs have their own section)
        name = rec["scenario"] + (f" [{r['variant']}]" if r.get("variant") else "")
        if r.get("runs", 1) > 1:
            low, high = r["spread"]["deliveries_per_s"]
            name += f" (median of {r['runs']}; deliveries/s {low / 1e6:.2f}M to {high / 1e6:.2f}M)"
        lines.append(
            f"| {name} | {rec['server']} | {_n(r['deliveries_per_s'])} "
            f"| {_n(r['deliveries_per_cpu_s'])} | {_n(r['p50_ms'], 1)} | {_n(r['p99_ms'], 1)} "
            f"| {_n(r['max_ms'], 1)} | {_n(r['completeness'], 1, 100)} % "
            f"| {_n(r['server_cpu_pct'])} % | {_n(r['server_rss_kb_end'] / 1024, 1)} "
            f"| {' / '.join(_n(g) for g in r['generator_cpu_pct'])} |"
        )
    return lines


def slow_table(recs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| server | others' p99 ms (without → with) | delivered to others (without → with) "
        "| slow client cut off |",
        "|---|--:|--:|---|",
    ]
    for rec in recs:
        r = rec["result"]
        if rec["scenario"] != "slow-consumer" or "slow_consumer" not in r:
            continue
        s = r["slow_consumer"] or {}
        lines.append(
            f"| {rec['server']} | {_n(r.get('baseline_p99_ms'), 1)} → {_n(r['p99_ms'], 1)} "
            f"| {_n(r.get('baseline_completeness'), 1, 100)} % → {_n(r['completeness'], 1, 100)} % "
            f"| {'yes' if s.get('cut_off') else 'no'} |"
        )
    return lines


def idle_table(recs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| scenario | server | held | time to connect s | connects/s | RSS per connection KiB |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for rec in recs:
        r = rec["result"]
        if "held" in r:
            lines.append(
                f"| {rec['scenario']} | {rec['server']} | {r['held']} / {r['clients']} "
                f"| {_n(r['connect_s'], 2)} | {_n(r['connects_per_s'])} "
                f"| {_n(r['rss_kb_per_conn'], 1)} |"
            )
    return lines


def storm_table(recs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| scenario | server | registered | in flight | total s | registrations/s "
        "| server CPU s | server CPU ms per registration | p99 ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for rec in recs:
        r = rec["result"]
        if "registrations_per_s" in r:
            lines.append(
                f"| {rec['scenario']} | {rec['server']} | {r['registered']} / {r['clients']} "
                f"| {r['in_flight']} | {_n(r['total_s'], 2)} | {_n(r['registrations_per_s'])} "
                f"| {_n(r['server_cpu_s'], 2)} | {_n(r['server_cpu_ms_per_registration'], 3)} "
                f"| {_n(r['p99_ms'], 1)} |"
            )
    return lines


def comparison_section() -> list[str]:
    """The newest ``--baseline`` run's before/after table, if there is one."""
    if not COMPARISONS.exists():
        return []
    lines = [line for line in COMPARISONS.read_text().splitlines() if line.strip()]
    if not lines:
        return []
    rec = json.loads(lines[-1])
    m = rec["machine"]
    return [
        "## Before and after",
        "",
        f"`{rec['command']}` ({rec['run_id']}; {m['nproc']} cores, {m['cpu_model']}, "
        f"Python {m['python']}).",
        "",
        rec["markdown"],
        "",
    ]


def chart(recs: list[dict[str, Any]]) -> bool:
    """Throughput bars and latency distributions per server; False when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    traffic = [r for r in recs if "deliveries_per_s" in r["result"] and r["result"].get("cdf_ms")]
    scenarios = sorted({r["scenario"] for r in traffic})
    servers = sorted({r["server"] for r in traffic})
    if not traffic:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(servers))
    for i, server in enumerate(servers):
        vals = []
        for sc in scenarios:
            match = [r for r in traffic if r["scenario"] == sc and r["server"] == server]
            vals.append(match[-1]["result"]["deliveries_per_s"] / 1e6 if match else 0)
        axes[0].bar([x + i * width for x in range(len(scenarios))], vals, width, label=server)
    axes[0].set_xticks([x + width * (len(servers) - 1) / 2 for x in range(len(scenarios))])
    axes[0].set_xticklabels(scenarios, rotation=30, ha="right")
    axes[0].set_ylabel("delivered messages / s (millions)")
    axes[0].set_title("Throughput (higher is better)")
    axes[0].legend()
    pcts = [*range(1, 100), 99.9]
    for rec in traffic:
        if rec["scenario"] not in ("rate-100", "rate-1000"):
            continue
        axes[1].plot(rec["result"]["cdf_ms"], pcts, label=f"{rec['server']} {rec['scenario']}")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("latency ms (log)")
    axes[1].set_ylabel("percentile")
    axes[1].set_title("Latency distribution at fixed rate (left is better)")
    axes[1].grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    CHART.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(CHART, dpi=110)
    return True


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def devices_section() -> list[str]:
    """Issue 15: search over a generated history, insert throughput with and without the
    search index, and an always-on catch-up (bench/devices_bench.py, bench/store_bench.py
    --fts both): the newest run of each."""
    records = _jsonl(RESULTS.parent / "devices.jsonl")
    searches = [r for r in records if r["bench"] == "search"]
    catchups = [r for r in records if r["bench"] == "always_on_catchup"]
    inserts = [r for r in _jsonl(RESULTS.parent / "store.jsonl") if "fts" in r]
    if not (searches or catchups or inserts):
        return []
    out = ["## Search, always-on catch-up (issue 15)", ""]
    if searches:
        r = searches[-1]
        out += [
            f"Search over {r['messages']:,} generated messages ({r['when']}, "
            f"{r.get('note') or 'no note'}): index {r['index_mib']} MiB of a "
            f"{r['db_mib']} MiB database; each query run {r['repeat']} times, 20 results "
            "asked. `python -m bench.devices_bench search`",
            "",
            "| query | p50 ms | p99 ms | results |",
            "| --- | ---: | ---: | ---: |",
        ]
        for kind, q in r["queries"].items():
            out.append(f"| {kind} | {q['p50_ms']} | {q['p99_ms']} | {q['results']} |")
        out.append("")
    if inserts:
        by_threads: dict[int, dict[bool, list[float]]] = {}
        newest_note = inserts[-1].get("note", "")
        for r in inserts:
            if r.get("note", "") != newest_note:
                continue
            by_threads.setdefault(r["threads"], {True: [], False: []})[r["fts"]].append(
                r["msgs_per_s"]
            )
        out += [
            f"Message inserts with and without the search index, group commit "
            f"({newest_note or 'no note'}; medians). `python -m bench.store_bench --fts both`",
            "",
            "| writer threads | with index msgs/s | without msgs/s | ratio |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for threads, rates in sorted(by_threads.items()):
            if rates[True] and rates[False]:
                on, off = statistics.median(rates[True]), statistics.median(rates[False])
                out.append(f"| {threads} | {on:.0f} | {off:.0f} | {on / off:.2f} |")
        out.append("")
    if catchups:
        r = catchups[-1]
        out += [
            f"Always-on catch-up: {r['messages']:,} missed messages reach a returning IRC "
            f"client in {r['seconds_to_last']} s ({r['msgs_per_s']:,.0f} messages/s; "
            f"{r.get('note') or 'no note'}). `python -m bench.devices_bench catchup`",
            "",
        ]
    return out


def cluster_section(recs: list[dict[str, Any]]) -> list[str]:
    """Issue 16: fan-out over 1, 2 and 3 nodes in one run, and connections held by 3 nodes
    (scenarios cluster-fanout and cluster-held, bench/cluster_bench.py)."""
    fanout = [r for r in recs if r["scenario"] == "cluster-fanout" and "nodes" in r["result"]]
    held = [r for r in recs if r["scenario"] == "cluster-held" and "held_total" in r["result"]]
    if not (fanout or held):
        return []
    out = ["## Several nodes (issue 16)", ""]
    if fanout:
        first = fanout[0]["result"]
        out += [
            f"`cluster-fanout`: {first['clients']} JSON clients spread over the nodes in one "
            f"room, one sender per node at {first.get('rate_per_sender', '?')} messages/s, "
            "history on in PostgreSQL, Redis and PostgreSQL on the same machine. Local: a "
            "receiver on the sender's node; cross-node: on another; added: the difference. "
            "On a machine shared with other jobs the p99 figures vary tenfold from run to "
            "run: read the spread.",
            "",
            "| nodes | messages | deliveries/s | delivered | p50 / p99 ms | CPU per node "
            "| generator CPU | local p50 / p99 ms | cross-node p50 / p99 ms "
            "| added p50 / p99 ms |",
            "|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
        ]
        for rec in sorted(fanout, key=lambda rec: rec["result"]["nodes"]):
            r = rec["result"]
            cpu = ", ".join(f"{c} %" for c in r["cpu_pct_per_node"])
            nodes = str(r["nodes"])
            if r.get("runs", 1) > 1 and "p99_ms" in r.get("spread", {}):
                low, high = r["spread"]["p99_ms"]
                nodes += f" (median of {r['runs']}; p99 {low:.0f} to {high:.0f} ms)"
            out.append(
                f"| {nodes} | {r['messages']:,} | {_n(r['deliveries_per_s'])} "
                f"| {_n(r.get('completeness'), 1, 100)} % "
                f"| {_n(r.get('p50_ms'), 1)} / {_n(r.get('p99_ms'), 1)} | {cpu} "
                f"| {_n(r.get('generator_cpu_pct'))} % "
                f"| {_n(r.get('local_p50_ms'), 1)} / {_n(r.get('local_p99_ms'), 1)} "
                f"| {_n(r.get('remote_p50_ms'), 1)} / {_n(r.get('remote_p99_ms'), 1)} "
                f"| {_n(r.get('added_p50_ms'), 1)} / {_n(r.get('added_p99_ms'), 1)} |"
            )
        out.append("")
    if held:
        r = held[-1]["result"]
        out += [
            f"`cluster-held`: {r['nodes']} nodes, each limited to {r['nofile_per_node']} open "
            f"files, held {r['held_total']} registered clients together "
            f"({' + '.join(str(n) for n in r['held_per_node'])}), more than one process "
            f"with that limit can.",
            "",
        ]
    return out


def main() -> int:
    if not RESULTS.exists():
        print(f"no results yet: run `python -m bench` first ({RESULTS})", file=sys.stderr)
        return 1
    records = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    recs = latest(records)
    newest = records[-1]
    m = newest["machine"]
    has_chart = chart(recs)
    out = [
        "# Performance",
        "",
        "Generated by `python -m bench.report` from `bench/results/results.jsonl` "
        "(latest result per scenario and server).",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['mem_gib']} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}. Commit `{newest['commit']}`.",
        "",
        f"Latest command: `{newest['command']}`",
        "",
        "Load generator and servers share the machine's cores: the generator's own CPU is shown "
        "so a generator limit is not mistaken for a server limit. Deliveries are messages "
        "received by clients (a room message to C members counts C-1). Latency is send to "
        "receipt on the same clock. Fan-out runs keep at most `window` messages per sender "
        "unseen by a probe receiver; rate runs send on a fixed schedule.",
        "",
    ]
    if has_chart:
        out += ["![throughput and latency](performance.png)", ""]
    out += ["## Traffic", "", *traffic_table(recs), ""]
    out += ["## Slow consumer", "", *slow_table(recs), ""]
    out += ["## Idle connections", "", *idle_table(recs), ""]
    out += ["## Connect storm", "", *storm_table(recs), ""]
    out += comparison_section()
    out += devices_section()
    out += cluster_section(recs)
    analysis = REPO_DIR / "bench" / "analysis.md"
    if analysis.exists():
        # Hand-written: the targets, what each figure means, and what limits a missed one.
        out += [analysis.read_text()]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(out))
    print(f"wrote {DOC}" + (f" and {CHART}" if has_chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
