"""What a run has done so far, as the runner reports it task by task: a progress bar
(files, chunks, events, with totals and ETA) and the partial state a failed or
interrupted run's report keeps.

The chunk total is estimated as soon as a file's entries are known: the
entries still to do in each file, over the chunk size that dataset was
last cut at (the fixed size, else the runner's first guess), capped by
``maxchunks``; it is exact once every entry is done.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from hep_executor.analysis import DEFAULT_INITIAL_CHUNK

__all__ = ["RunProgress"]


@dataclass
class RunProgress:
    """Counts a run's tasks and drives its progress bar; ``progress`` is the runner's callback."""

    n_files: int
    chunksize: int | None = None
    maxchunks: int | None = None
    console: Console | None = None
    show: bool = True
    entries: dict[str, int] = field(default_factory=dict)
    dataset_of: dict[str, str] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    chunks_done: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_size: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    preprocess_tasks: list[dict] = field(default_factory=list)
    cached: int = 0  # files whose metadata came from the cache
    recent: list[dict] = field(default_factory=list)
    retries: int = 0
    manager: Any = None
    on_update: Callable[[dict], None] | None = None
    t0: float = field(default_factory=time.time)

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

    def progress(self, stage: str, result, item=None) -> None:
        """The runner's ``progress(stage, result=..., item=...)`` callback."""
        if stage == "preprocess":
            self._preprocessed(result)
        elif stage == "cached":
            self._known(item.dataset, item.filename, item.entries)
            self.cached += 1
        else:
            self._processed(result, item)
        if self.on_update is not None:
            self.on_update(self.snapshot())

    def _preprocessed(self, result) -> None:
        self.bar.advance(self.files_bar)
        task = result.report.as_dict()
        task["kind"] = "preprocess"
        task["category"] = "preprocess"
        task["status"] = task.get("status", "ok" if result.ok else "failed")
        self.preprocess_tasks.append(task)
        if result.ok:
            info = result.value
            self._known(info["dataset"], info["filename"], info["entries"], advance=False)

    def _known(self, dataset: str, filename: str, entries: int, advance: bool = True) -> None:
        """A file's entries are known (read now, or from the metadata cache)."""
        if advance:
            self.bar.advance(self.files_bar)
        self.entries[filename] = int(entries)
        self.dataset_of[filename] = dataset
        self.bar.update(self.events_bar, total=sum(self.entries.values()))
        self._update_chunk_total()

    def _processed(self, result, item) -> None:
        self.dataset_of[item.filename] = item.dataset
        report = result.report
        self.retries += max(0, int(getattr(report, "attempts", 1)) - 1)
        self.recent = [*self.recent[-19:], {"task_id": report.task_id, "dataset": item.dataset,
                                            "events": item.events, "peak_mb": float(report.peak_mb),
                                            "memory_mb": int(report.memory_mb), "status": report.status}]
        if not result.ok:
            self.failed += 1
            return
        self.done[item.filename] += item.events
        self.chunks_done[item.dataset] += 1
        self.last_size[item.dataset] = item.events
        self.bar.advance(self.chunks_bar)
        self.bar.advance(self.events_bar, item.events)
        rate = sum(self.done.values()) / max(time.time() - self.t0, 1e-9)
        self.bar.update(self.events_bar, rate=f"{rate:,.0f} ev/s")
        self._update_chunk_total()

    def estimated_chunks(self) -> int:
        """Chunks done plus those the entries still to do will take (see the module docstring)."""
        todo: dict[str, int] = defaultdict(int)
        for name, entries in self.entries.items():
            dataset = self.dataset_of.get(name, name)
            size = self.chunksize or self.last_size.get(dataset) or DEFAULT_INITIAL_CHUNK
            todo[dataset] += math.ceil(max(entries - self.done.get(name, 0), 0) / max(size, 1))
        total = 0
        for dataset in set(todo) | set(self.chunks_done):
            n = self.chunks_done.get(dataset, 0) + todo.get(dataset, 0)
            total += min(n, self.maxchunks) if self.maxchunks else n
        return total

    def _update_chunk_total(self) -> None:
        total = max(self.estimated_chunks(), sum(self.chunks_done.values()))
        exact = len(self.entries) == self.n_files and all(
            self.done.get(n, 0) >= e for n, e in self.entries.items())
        self.bar.update(self.chunks_bar, total=total, description="chunks" if exact else "chunks (est.)")

    def snapshot(self, state: str = "running") -> dict:
        """What the dashboard shows: progress with totals, rate, ETA, workers, chunk sizes, tasks."""
        elapsed = time.time() - self.t0
        events_done, events_total = sum(self.done.values()), sum(self.entries.values()) or None
        rate = events_done / elapsed if elapsed > 0 else 0.0
        eta = (events_total - events_done) / rate if rate > 0 and events_total else None
        complete = len(self.entries) == self.n_files
        workers = []
        if self.manager is not None:
            for i, w in enumerate(self.manager.workers(), 1):
                workers.append({"name": f"worker {i}", "host": w.get("host", ""), "busy": w.get("running", 0),
                                "cores": w.get("cores", 0), "memory_mb": w.get("memory_mb"),
                                "completed": w.get("completed", 0)})
        return {"state": state, "elapsed_s": elapsed, "events_per_s": rate, "eta_s": eta,
                "files": {"done": len(self.preprocess_tasks) + self.cached, "total": self.n_files},
                "chunks": {"done": sum(self.chunks_done.values()), "total": self.estimated_chunks() or None,
                           "estimated": not (complete and events_total and events_done >= events_total)},
                "events": {"done": events_done, "total": events_total, "estimated": not complete},
                "failed": self.failed, "retries": self.retries, "workers": workers,
                "chunk_sizes": {ds: {"last": n, "chunks": self.chunks_done.get(ds, 0)}
                                for ds, n in sorted(self.last_size.items())},
                "recent_tasks": list(self.recent)}

    def state(self) -> dict:
        """The partial state for a report: files, chunks and events done."""
        return {"files_preprocessed": len(self.preprocess_tasks) + self.cached, "files_from_cache": self.cached,
                "entries_known": sum(self.entries.values()),
                "chunks_done": sum(self.chunks_done.values()), "chunks_failed": self.failed,
                "events_done": sum(self.done.values()),
                "events_done_per_file": dict(self.done), "elapsed_s": time.time() - self.t0}
