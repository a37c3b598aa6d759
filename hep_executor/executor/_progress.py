"""What the executor shows while Runner's calls run: a rich progress bar and the dashboard's counts.

The bar counts files (metadata call) or events (processing call), with
tasks done and the rate; the dashboard's :class:`RunStatus` is told of the
files and of the entries to run of each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hep_executor.analysis import RunStatus

if TYPE_CHECKING:
    from hep_executor.executor._executor import HepExecutor

__all__ = ["counting_events", "counting_files", "file_entries", "progress"]


def counting_files(status: RunStatus | None, items) -> RunStatus | None:
    """``status`` (the dashboard's counts) told of the metadata call's files."""
    if status is not None:
        status.n_files = max(status.n_files, len({i.filename for i in items}))
        status.changed()
    return status


def counting_events(status: RunStatus | None, items) -> RunStatus | None:
    """``status`` told of the processing call's work: its files and the entries to run of each."""
    if status is not None:
        todo: dict[tuple[str, str], int] = {}
        for item in items:
            todo[item.dataset, item.filename] = todo.get((item.dataset, item.filename), 0) + len(item)
        for (dataset, filename), entries in todo.items():
            status.expect(dataset, filename, entries)
        status.n_files = max(status.n_files, len(todo))
        status.changed()
    return status


def file_entries(result) -> tuple[str, str, int] | None:
    """(dataset, filename, entries) of a metadata task's result (Runner's FileMeta), if it has them."""
    for meta in (result.value or ()) if result.ok else ():
        entries = (getattr(meta, "metadata", None) or {}).get("numentries")
        if entries is not None:
            return meta.dataset, meta.filename, int(entries)
    return None


class progress:
    """A rich progress bar when the executor's ``status`` is on: units done, tasks done, rate."""

    def __init__(self, executor: HepExecutor, total: int, unit: str = "file"):
        self.executor, self.total, self.unit = executor, total, unit
        self.bar = None
        self.tasks = 0

    def __enter__(self):
        if self.executor.status:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn(f"{self.unit}s"), TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(self.executor.desc, total=self.total, info="")
        return self.advance

    def advance(self, n: int = 1) -> None:
        if self.bar is None:
            return
        self.tasks += 1
        self.bar.advance(self.task, n)
        task = self.bar.tasks[0]
        rate = task.completed / task.elapsed if task.elapsed else 0.0
        self.bar.update(self.task, info=f"| {self.tasks} tasks | {rate:,.0f} {self.unit}s/s")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
