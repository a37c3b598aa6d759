"""The task rows of a Runner run under HepExecutor, and the log files they go to.

coffea's Runner calls the executor twice per run (metadata, then
processing), on clones that share one :class:`~hep_executor.executor._pool.WorkerPool`:
the metadata call begins the run's :class:`~hep_executor.analysis.TaskRows`
in the pool (:func:`begin_rows`), the processing call takes them
(:func:`take_rows`) and ends them (:func:`end_rows`), which makes them
the pool's ``task_report``. :func:`write_logs` appends a run's rows and
statistics to WorkQueueExecutor's ``transactions_log``, ``tasks_accum_log``
and ``stats_log``, reading the rows once, so a run past the cap is copied
from its task log rather than held.
"""

from __future__ import annotations

import contextlib
import json
from typing import Iterable

from hep_executor.analysis import TaskRows

__all__ = ["begin_rows", "end_rows", "take_rows", "write_logs"]


def begin_rows(pool, path: str | None, keep: int) -> TaskRows:
    """New task rows for the run a metadata call begins (an earlier run's left unfinished are closed)."""
    if pool.rows is not None:
        pool.rows.close()
    pool.rows = TaskRows(path, keep=keep)
    return pool.rows


def take_rows(pool, path: str | None, keep: int) -> TaskRows:
    """The rows the metadata call began (or new ones when it read nothing): the processing call's."""
    rows = pool.rows if pool.rows is not None else begin_rows(pool, path, keep)
    pool.rows = None
    return rows


def end_rows(pool, rows: TaskRows) -> None:
    """Close the run's log; the rows and totals become ``pool.task_report``."""
    rows.close()
    if pool.rows is rows:
        pool.rows = None
    pool.task_report = {"tasks": rows.rows, **rows.describe()}


def write_logs(tasks: Iterable[dict], stats: dict, *, transactions_log: str | None = None,
               tasks_accum_log: str | None = None, stats_log: str | None = None) -> None:
    """Append the run's task rows (every task; accumulate ones only) and its statistics to the files set."""
    with contextlib.ExitStack() as stack:
        sinks = [(stack.enter_context(open(path, "a")), kind)
                 for path, kind in ((transactions_log, None), (tasks_accum_log, "accumulate")) if path]
        for task in tasks if sinks else ():
            for fh, kind in sinks:
                if kind is None or task["category"] == kind:
                    fh.write(json.dumps(task) + "\n")
    if stats_log:
        with open(stats_log, "a") as fh:
            fh.write(json.dumps(stats) + "\n")
