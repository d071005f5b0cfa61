"""Before/after table of a ``--baseline`` run: each figure's median at the baseline revision
and in the working tree, and the change, with changes worse than ``WORSE_PCT`` marked.

The rows follow issue 11's rule ("no figure may get more than 5 % worse: deliveries/s, per
CPU-s, p99, idle RSS per connection"); max latency is shown beside p99 but not judged, as a
single stall decides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.baseline import baseline_of

WORSE_PCT = 5.0


@dataclass(frozen=True)
class Figure:
    label: str
    key: str  # in a result record
    higher_is_better: bool
    judged: bool = True
    digits: int = 0


TRAFFIC_FIGURES = (
    Figure("deliveries/s", "deliveries_per_s", higher_is_better=True),
    Figure("deliveries per CPU-s", "deliveries_per_cpu_s", higher_is_better=True),
    Figure("p99 ms", "p99_ms", higher_is_better=False, digits=1),
    Figure("max ms", "max_ms", higher_is_better=False, judged=False, digits=1),
    # Issue 19: what each client costs the server under traffic (after the run).
    Figure("RSS per connection KiB", "rss_kb_per_conn", higher_is_better=False, digits=1),
)
STORM_FIGURES = (
    Figure("registrations/s", "registrations_per_s", higher_is_better=True),
    Figure("server CPU ms per registration", "server_cpu_ms_per_registration", False, digits=3),
)
IDLE_FIGURES = (Figure("RSS per connection KiB", "rss_kb_per_conn", False, digits=1),)


def _figures(result: dict[str, Any]) -> tuple[Figure, ...]:
    if "deliveries_per_s" in result:
        return TRAFFIC_FIGURES
    if "held" in result:
        return IDLE_FIGURES
    if "registrations_per_s" in result:
        return STORM_FIGURES
    return ()


def _shortfall(result: dict[str, Any]) -> str | None:
    """Why a result's figures are not comparable as they stand, if they are not."""
    if "error" in result or "skipped" in result:
        return str(result.get("error") or result.get("skipped"))
    if result.get("completeness") is not None and result["completeness"] < 1.0:
        return f"delivered {100 * result['completeness']:.1f} % of messages"
    if "held" in result and result["held"] < result["clients"]:
        return f"held {result['held']} of {result['clients']} clients"
    if "registered" in result and result["registered"] < result["clients"]:
        return f"registered {result['registered']} of {result['clients']} clients"
    return None


def compare(summaries: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """Rows for each scenario (and variant) and server kind measured both at the baseline
    ``label`` and in the working tree. ``summaries`` are the median records (or the only
    record) of each scenario x server x variant, in the order they were run."""
    by_key = {
        (rec["scenario"], rec["result"].get("variant", ""), rec["server"]): rec["result"]
        for rec in summaries
    }
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for (scenario, variant, server), before in by_key.items():
        kind, revision = baseline_of(server)
        after = by_key.get((scenario, variant, kind))
        if revision != label or after is None:
            continue
        name = scenario + (f" [{variant}]" if variant else "")
        for side, result in (("before", before), ("after", after)):
            why = _shortfall(result)
            if why:
                notes.append(f"{name}, {kind}, {side}: {why}")
        for figure in _figures(after) or _figures(before):
            old, new = before.get(figure.key), after.get(figure.key)
            change = None
            if old and new is not None:
                change = 100.0 * (new - old) / old
            worse = (
                figure.judged
                and change is not None
                and (-change if figure.higher_is_better else change) > WORSE_PCT
            )
            rows.append({
                "scenario": name, "server": kind, "figure": figure.label, "key": figure.key,
                "before": old, "after": new, "change_pct": change, "worse": worse,
                "judged": figure.judged, "digits": figure.digits,
                "runs": [before.get("runs", 1), after.get("runs", 1)],
            })  # fmt: skip
    return {"rows": rows, "notes": notes, "worse": sum(r["worse"] for r in rows)}


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _change(row: dict[str, Any]) -> str:
    if row["change_pct"] is None:
        return "-"
    change = row["change_pct"]
    text = f"{change:+.1f} %" if round(change, 1) else "0.0 %"
    if row["worse"]:
        return f"**{text} worse**"
    return text if row["judged"] else f"{text} (not judged)"


def markdown(table: dict[str, Any], before: str, after: str, runs: int) -> str:
    """The table as Markdown, ready for the performance doc."""
    medians = f"medians of {runs} runs" if runs > 1 else "single runs"
    lines = [
        f"Before: `{before}`; after: `{after}`. Same machine, one sitting, {medians}, the "
        f"servers taking turns. Changes worse than {WORSE_PCT:g} % in bold.",
        "",
        "| scenario | server | figure | before | after | change |",
        "|---|---|---|--:|--:|--:|",
    ]
    for row in table["rows"]:
        lines.append(
            f"| {row['scenario']} | {row['server']} | {row['figure']} "
            f"| {_number(row['before'], row['digits'])} | {_number(row['after'], row['digits'])} "
            f"| {_change(row)} |"
        )
    if table["notes"]:
        lines += ["", *(f"- {note}" for note in table["notes"])]
    worse = table["worse"]
    lines += ["", f"{worse} figure{'s' if worse != 1 else ''} worse than {WORSE_PCT:g} %."]
    return "\n".join(lines)
