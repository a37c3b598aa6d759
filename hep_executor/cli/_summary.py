"""The table ``hep-executor run`` prints at the end: per dataset, events (and what the
processor's ``summarize`` adds), worker time and events per worker-second; then the
run's totals in words that read right ("1 merge", "6 chunks").
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

from rich.console import Console
from rich.table import Table

__all__ = ["dataset_times", "plural", "print_summary"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 merge``, ``2 merges``, ``1,200 chunks``."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def dataset_times(report: dict) -> dict[str, float]:
    """Seconds the process tasks of each dataset ran on workers (task wall times summed)."""
    out: dict[str, float] = defaultdict(float)
    for t in report.get("tasks", []):
        if t.get("kind") == "process" and t.get("status") == "ok":
            out[str(t.get("category", "")).partition(":")[2]] += float(t.get("wall", 0.0))
    return dict(out)


def _rows(report: dict, per_dataset: dict) -> list[tuple[str, int, dict, float]]:
    times = dataset_times(report)
    events: dict[str, int] = defaultdict(int)
    for f in report["files"]:
        events[f["dataset"]] += sum(r[1] - r[0] for r in f["ranges"])
    return [(ds, events[ds], per_dataset.get(ds, {}), times.get(ds, 0.0)) for ds in sorted(events)]


def print_summary(console: Console, result, paths: dict[str, str], *,
                  summarize: Callable | None = None) -> None:
    """Print the run's table, totals, skipped files and output paths."""
    report = result.report
    totals = report["totals"]
    per_dataset = summarize(result.output) if summarize is not None else {}
    categories = sorted({k for row in per_dataset.values() for k in row} - {"events", "sumw"})
    table = Table(title="hep-executor run", caption="worker s: process tasks' time summed over worker slots")
    for name, justify in [("dataset", "left"), ("events", "right"),
                          *[(f"selected {c}", "right") for c in categories],
                          ("worker s", "right"), ("ev/s/slot", "right")]:
        table.add_column(name, justify=justify)
    sum_time = 0.0
    for ds, n, row, seconds in _rows(report, per_dataset):
        sum_time += seconds
        rate = f"{n / seconds:,.0f}" if seconds > 0 else "-"
        table.add_row(ds, f"{n:,}", *[f"{row.get(c, 0):,}" for c in categories], f"{seconds:.1f}", rate)
    rate = f"{totals['events'] / sum_time:,.0f}" if sum_time > 0 else "-"
    table.add_row("total", f"{totals['events']:,}", *[""] * len(categories), f"{sum_time:.1f}", rate,
                  style="bold")
    console.print(table)
    console.print(f"{plural(totals['events'], 'event')} in {totals['wall_s']:.1f} s wall "
                  f"({totals['events_per_s']:,.0f} events/s, preprocessing {totals.get('preprocess_s', 0):.1f} s): "
                  f"{plural(totals['chunks'], 'chunk')}, {plural(totals['merges'], 'merge')} on workers, "
                  f"{plural(totals['workers'], 'worker')}", soft_wrap=True)
    for s in result.skipped:
        console.print(f"[yellow]skipped[/] {s['file']}: {s['error']}", soft_wrap=True)
    width = max((len(k) for k in paths), default=0)
    for kind, path in paths.items():
        console.print(f"{kind:>{width}}: {path}", soft_wrap=True, highlight=False)
