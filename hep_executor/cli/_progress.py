"""The terminal's view of a run: a progress bar (files, chunks, events, with totals and
ETA) drawn from the :class:`~hep_executor.analysis.RunStatus` counts the runner feeds,
which also make the dashboard's snapshot and a failed or interrupted run's partial state.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from hep_executor.analysis import RunStatus

__all__ = ["RunProgress"]


@dataclass
class RunProgress(RunStatus):
    """A :class:`RunStatus` that draws its counts as a rich progress bar while in a ``with`` block."""

    console: Console | None = None
    show: bool = True

    def __enter__(self) -> RunProgress:
        self.bar = Progress(TextColumn("{task.description:<15}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=self.console, disable=not self.show)
        self.bar.__enter__()
        self.files_bar = self.bar.add_task("files", total=self.n_files, rate="")
        self.chunks_bar = self.bar.add_task("chunks", total=None, rate="")
        self.events_bar = self.bar.add_task("events", total=None, rate="")
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def changed(self) -> None:
        """Redraw the bar from the counts, then hand the snapshot on (the dashboard)."""
        if getattr(self, "bar", None) is not None:
            chunks = sum(self.chunks_done.values())
            self.bar.update(self.files_bar, completed=self.files_done, total=self.n_files)
            self.bar.update(self.chunks_bar, completed=chunks, total=self.chunk_estimate(),
                            description="chunks" if self.chunks_exact() else "chunks (est.)")
            self.bar.update(self.events_bar, completed=self.events_done, total=self.entries_total or None,
                            rate=f"{self.events_per_s():,.0f} ev/s" if self.events_done else "")
        super().changed()
