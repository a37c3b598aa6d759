"""Small helpers shared by the benchmark scripts: medians, tables, JSON and logging set-up."""

from __future__ import annotations

import json
import logging
import os
import statistics
from pathlib import Path

__all__ = ["RESULTS_DIR", "median", "print_table", "quiet_logging", "write_json"]

#: where results go unless ``--out`` says otherwise (git-ignored)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def median(values) -> float:
    """Median of the repetitions; NaN when there are none."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    """Print a table with rich when it is installed, as plain text otherwise.

    Floats of 100 and over are shown as integers, under 1 with three
    significant digits, otherwise with two decimals; other cells with ``str``.
    """
    cells = [[_fmt(c) for c in row] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
                  for i, h in enumerate(columns)]
        print(f"\n{title}")
        print("  ".join(h.rjust(w) for h, w in zip(columns, widths)))
        for row in cells:
            print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        return
    table = Table()
    for h in columns:
        table.add_column(h, justify="right")
    for row in cells:
        table.add_row(*(Text(c) for c in row))
    console = Console(width=max(100, 16 * len(columns)))
    console.print(Text("\n" + title, style="bold"))
    console.print(table)


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def write_json(path: Path, data: dict) -> Path:
    """Write ``data`` as indented JSON to ``path`` (parents created; NaN as null); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_no_nan(data), indent=2) + "\n")
    return path


def _no_nan(obj):
    """NaN (a missing number) as null, which JSON readers accept."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def quiet_logging(level: str = "WARNING") -> None:
    """Log at ``level`` to standard error; dask.distributed only at CRITICAL.

    The engine logs each worker joining at INFO, and dask.distributed logs
    its start-up and a closed-connection traceback on every shutdown.
    """
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # dask reads this when first imported, in this process and in its worker processes
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")

