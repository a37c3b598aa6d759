"""What a run has done so far, counted task by task: files, chunks and events done with
totals, rate and ETA, workers, chunk size per dataset, recent tasks' memory, failures.

:class:`RunStatus` is fed by :func:`~hep_executor.analysis._runner.run`'s ``progress``
callback (or by the coffea executor's own calls); :meth:`RunStatus.snapshot` is what the
live dashboard serves, :meth:`RunStatus.state` what a failed run's report keeps.

The chunk total is estimated as soon as a file's entries are known: the
entries still to do in each file, over the chunk size that dataset was
last cut at (the fixed size, else the runner's first guess), capped by
``maxchunks``; it is exact once every entry is done.

A snapshot is taken after every task, so it costs O(1) but for that
estimate, which walks every file: it is computed again only once the time
since the last one is :data:`ESTIMATE_BUDGET` times what the last one took
(so it never takes more than a few percent of the run's main thread, with
20,000 files too), and always for a run's last snapshot.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from hep_executor.analysis._sources import DEFAULT_INITIAL_CHUNK

__all__ = ["RunStatus"]

#: recent process tasks the snapshot lists (memory against allocation)
RECENT_TASKS = 20
#: chunk sizes per dataset the snapshot keeps, as (elapsed s, events), for the size-over-time line
SIZE_HISTORY = 200
#: the chunk estimate is redone once this many times its own cost has passed since the last one
ESTIMATE_BUDGET = 20


@dataclass
class RunStatus:
    """Counts a run's tasks; ``progress`` is :func:`run`'s callback, ``on_update`` gets each snapshot.

    Parameters
    ----------
    n_files : int
        Files in the fileset (set later where not known at the start).
    chunksize, maxchunks : int, optional
        The run's fixed chunk size and chunk cap per dataset (for the chunk estimate).
    manager : Manager, optional
        Where the workers' rows of the snapshot come from.
    on_update : callable, optional
        Called with :meth:`snapshot` after each task.
    """

    n_files: int = 0
    chunksize: int | None = None
    maxchunks: int | None = None
    manager: Any = None
    on_update: Callable[[dict], None] | None = None
    entries: dict[str, int] = field(default_factory=dict)
    dataset_of: dict[str, str] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    chunks_done: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_size: dict[str, int] = field(default_factory=dict)
    size_history: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    failed: int = 0
    preprocess_tasks: list[dict] = field(default_factory=list)
    cached: int = 0  # files whose metadata came from the cache
    recent: list[dict] = field(default_factory=list)
    retries: int = 0
    t0: float = field(default_factory=time.time)
    events_done: int = 0
    entries_total: int = 0
    _estimate: tuple = field(default=(None, 0.0, 0.0), init=False, repr=False)  # (chunks, at, cost)

    def progress(self, stage: str, result, item=None) -> None:
        """:func:`run`'s ``progress(stage, result=..., item=...)`` callback."""
        if stage == "preprocess":
            info = result.value if result.ok and isinstance(result.value, dict) else None
            self.preprocessed(result, info and (info["dataset"], info["filename"], info["entries"]))
        elif stage == "cached":
            self.cached += 1
            self.known(item.dataset, item.filename, item.entries)
        else:
            self.processed(result, item)

    def preprocessed(self, result, file: tuple[str, str, int] | None = None) -> None:
        """A metadata task ended; ``file`` is its (dataset, filename, entries) when it read them."""
        task = result.report.as_dict()
        task["kind"] = task["category"] = "preprocess"
        task["status"] = task.get("status", "ok" if result.ok else "failed")
        self.preprocess_tasks.append(task)
        if file is not None:
            self.known(*file)
        else:
            self.changed()

    def known(self, dataset: str, filename: str, entries: int) -> None:
        """A file's entries are known (read now, or from the metadata cache)."""
        self.expect(dataset, filename, entries)
        self.changed()

    def expect(self, dataset: str, filename: str, entries: int) -> None:
        """Count ``entries`` of ``filename`` as the run's to do (no snapshot: call :meth:`changed`)."""
        self.entries_total += int(entries) - self.entries.get(filename, 0)
        self.entries[filename] = int(entries)
        self.dataset_of[filename] = dataset

    def processed(self, result, item) -> None:
        """A chunk task ended (``item``: dataset, filename, entrystart, entrystop)."""
        events = item.entrystop - item.entrystart
        self.dataset_of[item.filename] = item.dataset
        report = result.report
        self.retries += max(0, int(getattr(report, "attempts", 1)) - 1)
        self.recent = [*self.recent[-(RECENT_TASKS - 1):],
                       {"task_id": report.task_id, "dataset": item.dataset, "events": events,
                        "peak_mb": float(report.peak_mb), "memory_mb": int(report.memory_mb),
                        "status": report.status}]
        if result.ok:
            self.done[item.filename] += events
            self.events_done += events
            self.chunks_done[item.dataset] += 1
            self.last_size[item.dataset] = events
            history = self.size_history[item.dataset]
            history.append((round(time.time() - self.t0, 2), events))
            del history[:-SIZE_HISTORY]
        else:
            self.failed += 1
        self.changed()

    def changed(self) -> None:
        """Hand the new snapshot to ``on_update``."""
        if self.on_update is not None:
            self.on_update(self.snapshot())

    @property
    def files_done(self) -> int:
        return len(self.preprocess_tasks) + self.cached

    def events_per_s(self) -> float:
        elapsed = time.time() - self.t0
        return self.events_done / elapsed if elapsed > 0 else 0.0

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

    def chunk_estimate(self, fresh: bool = False) -> int:
        """:meth:`estimated_chunks`, computed again when its time budget allows (or ``fresh``)."""
        chunks, at, cost = self._estimate
        now = time.perf_counter()
        if fresh or chunks is None or now - at >= ESTIMATE_BUDGET * cost:
            chunks = self.estimated_chunks()
            done = time.perf_counter()
            self._estimate = (chunks, done, done - now)
        return max(chunks, sum(self.chunks_done.values()))

    def chunks_exact(self) -> bool:
        """Every file's entries are known and done: the chunk total is no estimate."""
        return len(self.entries) >= self.n_files and self.events_done >= self.entries_total

    def workers(self) -> list[dict]:
        """One row per worker of ``manager``: host, busy slots, cores, memory."""
        rows = []
        for i, w in enumerate(self.manager.workers() if self.manager is not None else (), 1):
            rows.append({"name": f"worker {i}", "host": w.get("host", ""), "busy": w.get("running", 0),
                         "cores": w.get("cores", 0), "memory_mb": w.get("memory_mb"),
                         "completed": w.get("completed", 0)})
        return rows

    def snapshot(self, state: str = "running") -> dict:
        """What the dashboard shows: progress with totals, rate, ETA, workers, chunk sizes, tasks."""
        events_done, events_total = self.events_done, self.entries_total or None
        rate = self.events_per_s()
        eta = (events_total - events_done) / rate if rate > 0 and events_total else None
        complete = len(self.entries) >= self.n_files
        return {"state": state, "elapsed_s": time.time() - self.t0, "events_per_s": rate, "eta_s": eta,
                "files": {"done": self.files_done, "total": self.n_files},
                "chunks": {"done": sum(self.chunks_done.values()),
                           "total": self.chunk_estimate(fresh=state != "running") or None,
                           "estimated": not (events_total and self.chunks_exact())},
                "events": {"done": events_done, "total": events_total, "estimated": not complete},
                "failed": self.failed, "retries": self.retries, "workers": self.workers(),
                "chunk_sizes": {ds: {"last": n, "chunks": self.chunks_done.get(ds, 0),
                                     "history": list(self.size_history.get(ds, ()))}
                                for ds, n in sorted(self.last_size.items())},
                "recent_tasks": list(self.recent)}

    def state(self) -> dict:
        """The partial state for a report: files, chunks and events done."""
        return {"files_preprocessed": self.files_done, "files_from_cache": self.cached,
                "entries_known": self.entries_total,
                "chunks_done": sum(self.chunks_done.values()), "chunks_failed": self.failed,
                "events_done": self.events_done,
                "events_done_per_file": dict(self.done), "elapsed_s": time.time() - self.t0}
