"""Cutting chunks lazily at the size the sizer predicts, for both faces of the executor.

A :class:`ChunkSource` holds *segments* (entry ranges of files still to
process) and cuts the next chunk of each at the size that
:class:`~hep_executor.sizing.ChunkSizer` predicts for its dataset, so
chunks cut later profit from what earlier ones measured. Items are any
frozen dataclass with ``dataset``, ``filename``, ``entrystart`` and
``entrystop`` (coffea's ``WorkItem``, our ``ChunkSpec``): a chunk is a
copy of its segment's template with a new entry range.

A chunk that runs out of memory is retried at the next allocation
bucket, and once at the largest allocation, split in two (recursively);
a one-entry chunk that cannot fit fails with file and entry named.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from .chunking import FileCursor, split_range
from .errors import ConfigError, ResourceExhaustedError
from .results import TaskResult

__all__ = ["DEFAULT_TARGETS", "ChunkSource", "Segment", "make_allocator", "segments_of_workitems"]

#: per-task targets of dynamic chunk sizing: wall time (s) and peak memory (MB)
DEFAULT_TARGETS = {"wall_time": 30.0, "memory": 2000.0}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """Entries ``[start, stop)`` of one file still to cut; ``template`` is copied for each chunk."""

    template: Any
    start: int
    stop: int
    clusters: tuple | None = None

    @property
    def dataset(self) -> str:
        return self.template.dataset


def _events(item) -> int:
    return item.entrystop - item.entrystart


def category_of(item) -> str:
    """The sizing and allocation category of a process item."""
    return f"process:{item.dataset}"


def segments_of_workitems(items) -> list[Segment]:
    """Contiguous segments of coffea WorkItems, per file (so they can be cut anew)."""
    by_file: dict[tuple, list] = {}
    for item in items:
        key = (item.dataset, item.filename, item.treename, item.fileuuid)
        by_file.setdefault(key, []).append(item)
    out = []
    for group in by_file.values():
        group.sort(key=lambda i: i.entrystart)
        seg_start, seg_stop, first = group[0].entrystart, group[0].entrystop, group[0]
        for item in group[1:]:
            if item.entrystart == seg_stop:
                seg_stop = item.entrystop
            else:
                out.append(Segment(first, seg_start, seg_stop))
                seg_start, seg_stop, first = item.entrystart, item.entrystop, item
        out.append(Segment(first, seg_start, seg_stop))
    return out


class ChunkSource:
    """Items cut lazily from segments; see the module docstring.

    Parameters
    ----------
    segments : list of Segment
    chunksize : int, optional
        A fixed size (no sizer needed).
    sizer : ChunkSizer, optional
        Predicts the size per dataset when ``chunksize`` is None.
    maxchunks : int, optional
        At most this many chunks per dataset.
    memory_mb : int
        Memory allocation per task when there is no allocator (0: none).
    allocator : Allocator, optional
        Chooses allocations per category from observed peaks.
    split_on_exhaustion : bool
        Split a chunk that runs out of memory at the largest allocation.
    """

    def __init__(self, segments: list[Segment], *, chunksize: int | None = None, sizer=None,
                 maxchunks: int | None = None, memory_mb: int = 0, allocator=None,
                 split_on_exhaustion: bool = True):
        self.segments = segments
        self.cursors = [FileCursor(s.template.filename, s.stop, start=s.start,
                                   cluster_starts=list(s.clusters) if s.clusters else None)
                        for s in segments]
        self.chunksize = chunksize
        self.sizer = sizer
        self.maxchunks = maxchunks
        self.memory_mb = memory_mb
        self.allocator = allocator
        self.split_on_exhaustion = split_on_exhaustion
        self._index = 0
        self._per_dataset: dict[str, int] = {}
        self._extra: list = []
        self._attempt: dict[Any, int] = {}
        self._alloc: dict[Any, Any] = {}
        self.planned: dict[str, list[tuple[int, int]]] = {}
        self.splits = 0
        self.escalations = 0

    def _size_for(self, dataset: str) -> int:
        if self.chunksize:
            return self.chunksize
        return self.sizer.predict(f"process:{dataset}")

    def take(self, n: int) -> list:
        out, self._extra = self._extra[:n], self._extra[n:]
        while len(out) < n and self._index < len(self.segments):
            seg, cursor = self.segments[self._index], self.cursors[self._index]
            capped = self.maxchunks is not None and self._per_dataset.get(seg.dataset, 0) >= self.maxchunks
            rng = None if capped else cursor.next(self._size_for(seg.dataset))
            if rng is None:
                self._index += 1
                continue
            self._per_dataset[seg.dataset] = self._per_dataset.get(seg.dataset, 0) + 1
            self.planned.setdefault(seg.template.filename, []).append((rng[0], rng[1]))
            out.append(dataclasses.replace(seg.template, entrystart=rng[0], entrystop=rng[1]))
        return out

    @property
    def exhausted(self) -> bool:
        return not self._extra and self._index >= len(self.segments)

    def observe(self, item, result: TaskResult) -> list:
        category = category_of(item)
        report = result.report
        exhausted = isinstance(result.error, ResourceExhaustedError)
        if self.sizer is not None and (result.ok or exhausted):
            self.sizer.observe(category, _events(item), report.wall, report.peak_mb,
                               failed_memory=exhausted)
        if self.allocator is not None and (result.ok or exhausted):
            self.allocator.observe(category, report.peak_mb, exhausted=exhausted,
                                   allocated=self._alloc.get(item))
        if not exhausted:
            self._alloc.pop(item, None)
            return []
        previous = self._alloc.get(item)
        if self.allocator is not None and previous is not None \
                and not self.allocator.at_cap(category, previous):
            self._attempt[item] = self._attempt.get(item, 0) + 1
            self.escalations += 1
            self._extra.insert(0, item)
            return [item]
        if not self.split_on_exhaustion or _events(item) <= 1:
            err = result.error
            what = (f"entry {item.entrystart} alone" if _events(item) <= 1
                    else f"entries {item.entrystart}-{item.entrystop}")
            result.error = ResourceExhaustedError(
                f"{item.filename} (dataset {item.dataset}): {what} needs more than the "
                f"{err.limit_mb} MB allocation (peak seen {err.peak_mb:.0f} MB)",
                peak_mb=err.peak_mb, limit_mb=err.limit_mb)
            return []
        # cut at what the sizer now predicts, in two at least
        parts = 2
        if self.sizer is not None:
            parts = max(2, -(-_events(item) // max(1, self.sizer.predict(category))))
        halves = [dataclasses.replace(item, entrystart=a, entrystop=b)
                  for a, b in split_range(item.entrystart, item.entrystop, parts=parts)]
        self.splits += 1
        log.info("split %s %d-%d after it ran out of memory", item.filename, item.entrystart,
                 item.entrystop)
        self._extra[:0] = halves
        return halves

    def resources(self, item) -> dict:
        category = category_of(item)
        memory = self.memory_mb
        if self.allocator is not None:
            alloc = self.allocator.allocate(category, attempt=self._attempt.get(item, 0),
                                            previous=self._alloc.get(item))
            self._alloc[item] = alloc
            memory = alloc.memory_mb
        return {"cores": 1, "memory_mb": int(memory), "category": category}


def make_allocator(mode: str, manager, *, memory_mb: int | None = None, cores: int = 1,
                   first_mb: int = 2000):
    """An :class:`~hep_executor.allocation.Allocator` capped by the largest worker of ``manager``.

    ``mode`` is ``auto``, ``max-seen`` or ``fixed`` (which needs ``memory_mb``).
    Before any peak is seen a task gets ``memory_mb``, else ``first_mb``
    (2000 MB, the usual memory per core of a grid slot); one that runs out
    climbs the allocation ladder toward the largest worker.
    """
    from .allocation import Allocator, Resources

    if not manager.workers():
        manager.wait_for_workers(1, timeout=60)
    largest = max((w["memory_mb"] for w in manager.workers()), default=memory_mb or first_mb)
    cap = Resources(cores=cores, memory_mb=int(largest))
    if mode == "fixed":
        if not memory_mb:
            msg = "resources_mode 'fixed' needs the memory per task (memory_mb)"
            raise ConfigError(msg)
        return Allocator(mode, fixed=Resources(cores=cores, memory_mb=int(memory_mb)), max_resources=cap)
    first = Resources(cores=cores, memory_mb=int(min(largest, memory_mb or first_mb)))
    return Allocator(mode, max_resources=cap, first_guess=first, min_observations=3)
