"""The task rows of a run report, kept small in memory whatever the number of tasks.

Each finished task of :func:`hep_executor.run` (preprocessing, chunk,
merge) becomes one row: its :class:`~hep_executor.engine.TaskReport` as a
dict, plus ``kind`` (``preprocess``, ``process``, ``accumulate``),
``events`` and ``file``. :class:`TaskRows` adds each row to per-category
totals (tasks, successes, wall and CPU seconds, events, largest peak) and
keeps the row itself only while fewer than ``keep`` rows are held
(:data:`TASKS_KEPT`); so a run of 20,000 files does not hold 20,000 report
dicts on the manager after their chunks are merged.

Every row goes to a JSON-lines task log when the run names one
(``run(task_log=PATH)``). Without one, the first row past ``keep`` opens
a log under the user's cache directory (:func:`default_task_log`), writes
the rows held so far into it, and every later row: the log is then
complete, and the report says how many rows it left out and where they are.
:meth:`TaskRows.all_rows` reads a run's rows back (from memory, or from
the log when some were left out), one at a time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["TASKS_KEPT", "TaskRows", "default_task_log", "read_rows"]

log = logging.getLogger(__name__)

#: task rows a run report holds in memory (``report["tasks"]``); the rest are in its task log only
TASKS_KEPT = 10_000


def default_task_log() -> Path:
    """A new file ``hep-executor/runs/tasks-<UTC time>-<pid>.jsonl`` under the user's cache directory."""
    from hep_executor.analysis._metadata_cache import default_cache_path

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return default_cache_path().parent / "runs" / f"tasks-{stamp}-{os.getpid()}.jsonl"


def read_rows(path: str | os.PathLike, start: int = 0) -> Iterator[dict]:
    """The rows of a task log from byte ``start`` on (where a run began appending), one at a time."""
    with open(path) as fh:
        fh.seek(start)
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _kind(category: str) -> str:
    return category.split(":")[0]


class TaskRows:
    """Per-category totals of a run's tasks, the first ``keep`` rows, and a JSON-lines log of all.

    Parameters
    ----------
    path : str or Path, optional
        Append every row to this file (one JSON object a line). Default: none
        until the rows outgrow ``keep``, then :func:`default_task_log`.
    keep : int
        Rows held in memory (:data:`TASKS_KEPT`).
    """

    def __init__(self, path: str | os.PathLike | None = None, keep: int = TASKS_KEPT):
        self.path = Path(path) if path is not None else None
        self.keep = int(keep)
        self.rows: list[dict] = []
        self.left_out = 0
        self.summary: dict[str, dict[str, Any]] = {}
        self.start = 0  # where this run's rows begin in the log (it may hold earlier runs' rows)
        self._fh: IO[str] | None = None
        if self.path is not None:
            self._open()

    def add(self, report, *, events: int = 0, file: str | None = None) -> None:
        """File one finished task's ``report``: the totals, the log, and the row while fewer than ``keep`` are held."""
        row = report.as_dict()
        row["kind"], row["events"], row["file"] = _kind(row["category"]), int(events), file
        self._count(row)
        if len(self.rows) < self.keep:
            self.rows.append(row)
        else:
            if self._fh is None:
                self._spill()
            self.left_out += 1
        if self._fh is not None:
            self._fh.write(json.dumps(row, separators=(",", ":")) + "\n")

    def _count(self, row: dict) -> None:
        total = self.summary.get(row["category"])
        if total is None:
            total = self.summary[row["category"]] = {"kind": row["kind"], "tasks": 0, "ok": 0, "wall_s": 0.0,
                                                     "cpu_s": 0.0, "events": 0, "peak_mb": 0.0}
        total["tasks"] += 1
        total["ok"] += row["status"] == "ok"
        total["wall_s"] += row["wall"]
        total["cpu_s"] += row["cpu"]
        total["events"] += row["events"] if row["status"] == "ok" else 0
        total["peak_mb"] = max(total["peak_mb"], row["peak_mb"])

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", buffering=1 << 16)  # noqa: SIM115
        self.start = self._fh.tell()

    def _spill(self) -> None:
        """Past ``keep`` rows with no log named: open the default one and write the rows held so far."""
        self.path = default_task_log()
        self._open()
        log.info("more than %d tasks: every task's row goes to %s, the report keeps the first %d",
                 self.keep, self.path, self.keep)
        for row in self.rows:
            self._fh.write(json.dumps(row, separators=(",", ":")) + "\n")

    def close(self) -> None:
        """Flush and close the log (the rows and totals stay)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def all_rows(self) -> Iterator[dict]:
        """Every row filed, in order: those held, or (some left out) the log's, read after :meth:`close`."""
        if not self.left_out:
            yield from self.rows
            return
        if self._fh is not None:
            self._fh.flush()
        yield from read_rows(self.path, self.start)

    def describe(self) -> dict:
        """What the run report says of its tasks besides the rows: totals, rows left out, the log."""
        return {"tasks_left_out": self.left_out, "task_log": None if self.path is None else str(self.path),
                "task_summary": {c: dict(t) for c, t in self.summary.items()}}
