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
    """A rich progress bar when the executor's ``status`` is on, as coffea's FuturesExecutor draws one.

    One line counts units (files or events) done of the total, with the
    tasks (chunks) done and the rate; with ``merges`` a second line is the
    merge stage: the merge tasks done on the workers, and "done" once the
    last merge is back. ``console`` is where it draws (default: rich's).
    """

    def __init__(self, executor: HepExecutor, total: int, unit: str = "file", *, merges: bool = False,
                 console=None):
        self.executor, self.total, self.unit = executor, total, unit
        self.merges, self.console = merges, console
        self.bar = None
        self.tasks = 0
        self.merged_tasks = 0

    def __enter__(self):
        if self.executor.status:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), transient=False, console=self.console)
            self.bar.start()
            self.task = self.bar.add_task(self.executor.desc, total=self.total, unit=f"{self.unit}s", info="")
            if self.merges:
                self.merge_task = self.bar.add_task("Merging (on workers)", total=None, unit="merges",
                                                    info="| waiting for results")
        return self.advance

    def advance(self, n: int = 1) -> None:
        """``n`` more units done by one more task."""
        if self.bar is None:
            return
        self.tasks += 1
        self.bar.advance(self.task, n)
        task = self.bar.tasks[0]
        rate = task.completed / task.elapsed if task.elapsed else 0.0
        self.bar.update(self.task, info=f"| {self.tasks} chunks | {rate:,.0f} {self.unit}s/s"
                        if self.unit == "event" else f"| {self.tasks} tasks | {rate:,.0f} {self.unit}s/s")

    def merged(self, result=None) -> None:
        """One more merge task finished (``result``, its TaskResult, is not needed)."""
        self.merged_tasks += 1
        if self.bar is not None and self.merges:
            self.bar.update(self.merge_task, completed=self.merged_tasks, info="| running")

    def __exit__(self, *exc) -> None:
        if self.bar is None:
            return
        if self.merges:
            state = "done" if exc[0] is None else "stopped"
            self.bar.update(self.merge_task, total=self.merged_tasks, completed=self.merged_tasks,
                            info=f"| {state}")
        self.bar.stop()
