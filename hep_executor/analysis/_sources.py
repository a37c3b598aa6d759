"""Cutting chunks lazily at the size the sizer predicts, for both faces of the executor.

A :class:`ChunkSource` holds *segments* (entry ranges of files still to
process) and cuts the next chunk of each at the size that
:class:`~hep_executor.planning._sizing.ChunkSizer` predicts for its dataset, so
chunks cut later profit from what earlier ones measured. Items are any
frozen dataclass with ``dataset``, ``filename``, ``entrystart`` and
``entrystop`` (coffea's ``WorkItem``, our ``ChunkSpec``): a chunk is a
copy of its segment's template with a new entry range.

Chunks of several files are cut in turn (``spread``), so that each
worker keeps reading the files it has open. When allocations are
adaptive, the run's first wave (one chunk per worker core, each at the
first guess) is in flight before any report, and then each category
without a result has one chunk in flight (its allocation comes from the
peaks of the others). Until a category has a success, each
further chunk in flight is :data:`PROBE_STEP` times smaller than the one
before (down to :data:`PROBE_FLOOR` events), so a far too large first
size costs one failed chunk, not one per worker, and a small first size
is not cut smaller still.

Segments can be added while chunks run (:meth:`ChunkSource.add`, with
``more=True`` until :meth:`ChunkSource.close`): a streaming run adds a
file's segment as soon as its metadata is back.

A chunk's memory allocation is the allocator's (from the peaks of its
category), raised to the peak expected of the chunk's events plus
``FLOOR_MARGIN``: while the sizer grows the chunks, the peaks already
seen are too small for the next one. The expected peak is the larger of
the sizer's memory fit and, for a chunk larger than any of its category
seen yet, the most memory per event a chunk of its category has held (of
any category, before its own first chunk): a task's peak leaves out what
its slot keeps from task to task, so it grows with the chunk's events
from near zero.

A chunk that runs out of memory is retried at the next allocation
bucket, and once at the largest allocation, cut anew at the size the
sizer predicts after the failure (or split in two without a sizer),
recursively; a one-entry chunk that cannot fit fails with file and
entry named.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

from hep_executor.planning import FileCursor, split_range
from hep_executor.errors import ConfigError, InputChangedError, ResourceExhaustedError
from hep_executor.engine import TaskResult

__all__ = ["DEFAULT_INITIAL_CHUNK", "DEFAULT_TARGETS", "ChunkSource", "Segment", "build_source", "make_allocator",
           "segments_of_workitems"]

#: per-task targets of dynamic chunk sizing: wall time (s) and peak memory (MB)
DEFAULT_TARGETS = {"wall_time": 30.0, "memory": 2000.0}
#: first guess of the dynamic sizer, before any task has reported
DEFAULT_INITIAL_CHUNK = 10_000
#: before a category's first success, each further chunk in flight is this many times smaller
PROBE_STEP = 8
#: probes are not cut below this many events (nor above the prediction): a smaller chunk costs as
#: much as a real one (its fixed cost: opening, building the events) and measures little
PROBE_FLOOR = 1000
#: a chunk's memory allocation is at least the sizer's expected peak for its events times (1 + this)
FLOOR_MARGIN = 0.15
#: chunks under this many events say nothing of the memory per event (their peak is mostly noise)
MIN_EVENTS_PER_EVENT_RATE = 100

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


def dataset_category(dataset: str) -> str:
    """The sizing and allocation category of ``dataset``'s process tasks."""
    return f"process:{dataset}"


def category_of(item) -> str:
    """The sizing and allocation category of a process item."""
    return dataset_category(item.dataset)


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
    on_changed : callable, optional
        ``on_changed(item)`` for a chunk that found its file changed
        (:class:`~hep_executor.errors.InputChangedError`): True when the file's
        plan was a guess that is being replaced (a remote file planned from the
        metadata cache, now read again). Its planned ranges are then dropped, the
        source stays open for the new segment, and the error does not count.
    spread : int
        Segments cut in turn (one chunk each), so that as many files are
        in progress as there are worker cores and a worker keeps reading
        the files it has open (with the Manager's ``affinity``) instead of
        every worker opening every file.
    wave : int, optional
        Chunks in flight before the run's first report when allocations are
        adaptive (default ``spread``): the worker cores.
    """

    def __init__(self, segments: list[Segment], *, chunksize: int | None = None, sizer=None,
                 maxchunks: int | None = None, memory_mb: int = 0, allocator=None,
                 split_on_exhaustion: bool = True, spread: int = 1, more: bool = False,
                 wave: int | None = None, on_changed=None):
        self.on_changed = on_changed
        self._replanned: set[tuple[str, Any]] = set()  # (file, UUID) plans dropped by on_changed
        self.segments = list(segments)
        self.more = more  # segments may still be added (streaming); see add and close
        self.cursors = [self._cursor(s) for s in self.segments]
        self.chunksize = chunksize
        self.sizer = sizer
        self.maxchunks = maxchunks
        self.memory_mb = memory_mb
        self.allocator = allocator
        self.split_on_exhaustion = split_on_exhaustion
        self.spread = max(1, int(spread))
        self.wave = max(1, int(wave or spread))
        self._index = 0  # next segment to open
        self._active: list[int] = []  # segments being cut, in turn
        self._turn = 0
        self._recut: set[int] = set()  # segments holding ranges given back after running out of memory
        self._clusters = {s.template.filename: s.clusters for s in self.segments}
        self._per_dataset: dict[str, int] = {}
        self._extra: list = []
        self._attempt: dict[Any, int] = {}
        self._alloc: dict[Any, Any] = {}
        self._mb_per_event: dict[str, float] = {}  # the most peak memory per event a chunk held, per category
        self._most_events: dict[str, int] = {}  # the largest chunk (events) that reported, per category
        self._in_flight: dict[str, int] = {}
        self._reported: set[str] = set()
        self._succeeded: set[str] = set()
        self._hold_new = allocator is not None and allocator.mode != "fixed"
        self.planned: dict[str, list[tuple[int, int]]] = {}
        self.splits = 0
        self.escalations = 0

    @staticmethod
    def _cursor(seg: Segment) -> FileCursor:
        return FileCursor(seg.template.filename, seg.stop, start=seg.start,
                          cluster_starts=list(seg.clusters) if seg.clusters else None)

    def _size_for(self, dataset: str) -> int:
        if self.chunksize:
            return self.chunksize
        category = dataset_category(dataset)
        size = self.sizer.predict(category)
        if category not in self._succeeded:
            # No chunk of this category has succeeded yet: the first one in flight tries the
            # predicted size, the next ones sizes PROBE_STEP (then its square) times smaller,
            # so that one of them fits and measures the category even when the prediction is
            # far too large. Until any category has succeeded, the chunks in flight of all
            # categories count (the first sizes of new categories are as much a guess); after,
            # the prediction is informed by the others: the chunks after the first are halved.
            if self._succeeded:
                step, ahead = 2, min(1, self._in_flight.get(category, 0))
            else:
                step, ahead = PROBE_STEP, min(2, sum(self._in_flight.values()))
            size = max(self.sizer.min_size, min(size, PROBE_FLOOR), size // step ** ahead)
        return size

    def _blocked(self, dataset: str) -> bool:
        """Whether a chunk of ``dataset`` must wait: its allocation would be a blind guess.

        Until the first result of the run, the first wave fills the workers' cores (each chunk
        gets the first guess, a conservative allocation: the run never waits for one chunk
        alone); after it, one chunk per category that has no result yet (its first allocation
        comes from the others' peaks).
        """
        category = dataset_category(dataset)
        if not self._hold_new or category in self._reported:
            return False
        if not self._reported:
            return sum(self._in_flight.values()) >= self.wave
        return self._in_flight.get(category, 0) > 0

    def _open(self, blocked_ok: bool = True) -> bool:
        """Start cutting the next segment (the next one not blocked, unless ``blocked_ok``)."""
        j = self._index
        if not blocked_ok:
            blocked: dict[str, bool] = {}  # one check per dataset, not per segment
            while j < len(self.segments):
                dataset = self.segments[j].dataset
                if dataset not in blocked:
                    blocked[dataset] = self._blocked(dataset)
                if not blocked[dataset]:
                    break
                j += 1
        if j >= len(self.segments):
            return False
        if j != self._index:  # bring it forward
            self.segments.insert(self._index, self.segments.pop(j))
            self.cursors.insert(self._index, self.cursors.pop(j))
        self._active.append(self._index)
        self._index += 1
        return True

    def _cut(self):
        """The next chunk, cutting the active segments in turn; None when nothing can be cut now."""
        while len(self._active) < self.spread and self._open():
            pass
        while True:
            tried = 0
            while self._active and tried < len(self._active):
                self._turn %= len(self._active)
                i = self._active[self._turn]
                seg, cursor = self.segments[i], self.cursors[i]
                if self._blocked(seg.dataset):
                    self._turn += 1
                    tried += 1
                    continue
                recut = i in self._recut
                capped = not recut and self.maxchunks is not None \
                    and self._per_dataset.get(seg.dataset, 0) >= self.maxchunks
                rng = None if capped else cursor.next(self._size_for(seg.dataset))
                if rng is None:
                    del self._active[self._turn]
                    continue
                self._turn += 1
                if not recut:
                    self._per_dataset[seg.dataset] = self._per_dataset.get(seg.dataset, 0) + 1
                    self.planned.setdefault(seg.template.filename, []).append((rng[0], rng[1]))
                return dataclasses.replace(seg.template, entrystart=rng[0], entrystop=rng[1])
            if not self._open(blocked_ok=False):  # every active segment is blocked: try another file
                return None

    def take(self, n: int) -> list:
        out, self._extra = self._extra[:n], self._extra[n:]
        for item in out:
            self._count(item, +1)
        while len(out) < n:
            item = self._cut()
            if item is None:
                break
            out.append(item)
            self._count(item, +1)
        return out

    def known(self, categories) -> None:
        """Treat ``categories`` as measured already (a sizing model restored from a checkpoint)."""
        self._reported.update(categories)
        self._succeeded.update(categories)

    def _count(self, item, step: int) -> None:
        category = category_of(item)
        self._in_flight[category] = self._in_flight.get(category, 0) + step

    @property
    def exhausted(self) -> bool:
        return not self.more and not self._extra and not self._active and self._index >= len(self.segments)

    def add(self, segments: list[Segment]) -> None:
        """Add segments while running (a file whose metadata just came back); cut after those before."""
        for seg in segments:
            self.segments.append(seg)
            self.cursors.append(self._cursor(seg))
            self._clusters[seg.template.filename] = seg.clusters

    def close(self) -> None:
        """No more segments will be added: the source is exhausted once those it has are cut."""
        self.more = False

    def _replan(self, item) -> None:
        """Drop what was planned of ``item``'s file from its old UUID (once); keep the source open for the new plan."""
        key = (item.filename, getattr(item, "fileuuid", None))
        if key in self._replanned:
            return
        self._replanned.add(key)
        self.skip_file(item.filename)
        self.planned.pop(item.filename, None)
        self.more = True

    def _give_back(self, item) -> None:
        """Put ``item``'s range back to be cut anew at the sizes predicted from now on."""
        seg = Segment(item, item.entrystart, item.entrystop, self._clusters.get(item.filename))
        self.segments.insert(self._index, seg)
        self.cursors.insert(self._index, self._cursor(seg))
        self._recut.add(self._index)
        self._active.insert(0, self._index)
        self._turn = 0
        self._index += 1

    def skip_file(self, filename: str) -> list[tuple[int, int]]:
        """Cut no more of ``filename``; return its ranges that will not run (never cut, or to rerun)."""
        dropped = [r for seg, cursor in zip(self.segments, self.cursors)
                   if seg.template.filename == filename and (r := cursor.stop()) is not None]
        dropped += [(x.entrystart, x.entrystop) for x in self._extra if x.filename == filename]
        self._extra = [x for x in self._extra if x.filename != filename]
        return sorted(dropped)

    def observe(self, item, result: TaskResult) -> list:
        """File ``item``'s result; return what of it runs again (retried or split), if anything."""
        category = category_of(item)
        self._count(item, -1)
        self._reported.add(category)
        report = result.report
        exhausted = isinstance(result.error, ResourceExhaustedError)
        if result.ok:
            self._succeeded.add(category)
        elif isinstance(result.error, InputChangedError) and self.on_changed is not None \
                and self.on_changed(item):
            self._replan(item)
            return [item]  # it runs again, in the file's new plan
        # a lifetime peak (the kernel's mark could not be reset) says nothing of this chunk's memory
        learn_memory = exhausted or not report.peak_is_lifetime
        if self.sizer is not None and (result.ok or exhausted):
            self.sizer.observe(category, _events(item), report.wall, report.peak_mb if learn_memory else 0.0,
                               failed_memory=exhausted)
        if self.allocator is not None and (result.ok or exhausted) and learn_memory:
            self.allocator.observe(category, report.peak_mb, exhausted=exhausted,
                                   allocated=self._alloc.get(item))
            self._note_memory_per_event(category, _events(item), report.peak_mb)
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
        self.splits += 1
        log.info("%s %d-%d ran out of memory: cutting it anew", item.filename, item.entrystart,
                 item.entrystop)
        self._alloc.pop(item, None)
        if self.sizer is not None and self.sizer.predict(category) < _events(item):
            # cut again at the sizes predicted from now on (smaller: the sizer saw the failure)
            self._give_back(item)
            return [item]
        halves = [dataclasses.replace(item, entrystart=a, entrystop=b)
                  for a, b in split_range(item.entrystart, item.entrystop, parts=2)]
        self._extra[:0] = halves
        return halves

    def resources(self, item) -> dict:
        category = category_of(item)
        memory = self.memory_mb
        if self.allocator is not None:
            previous = self._alloc.get(item)
            alloc = self.allocator.allocate(category, attempt=self._attempt.get(item, 0), previous=previous)
            if previous is None:
                alloc = self._sized_floor(category, item, alloc)
            self._alloc[item] = alloc
            memory = alloc.memory_mb
        return {"cores": 1, "memory_mb": int(memory), "category": category}

    def _note_memory_per_event(self, category: str, events: int, peak_mb: float) -> None:
        """Keep the most peak memory per event of ``category`` (chunks of too few events say nothing of it)."""
        self._most_events[category] = max(events, self._most_events.get(category, 0))
        if events >= MIN_EVENTS_PER_EVENT_RATE:
            rate = peak_mb / events
            self._mb_per_event[category] = max(rate, self._mb_per_event.get(category, 0.0))

    def _sized_floor(self, category: str, item, alloc):
        """``alloc``, raised to the peak expected of ``item``'s events plus a margin.

        The expected peak is the larger of the sizer's memory fit and, for a chunk larger than
        any of its category seen yet, the most memory per event a chunk of the category held (of
        any category before its first). The allocator's buckets hold the peaks of chunks already
        run; while the sizer grows the chunks, a new chunk needs more than those, and would run
        out of memory only to climb the ladder. Fixed allocations stay as the user set them.
        """
        if self.allocator.mode == "fixed":
            return alloc
        events = _events(item)
        fitted = self.sizer.predict_memory(category, events) if self.sizer is not None else None
        per_event = 0.0
        if events > self._most_events.get(category, 0):  # larger than any of its chunks seen yet
            per_event = self._mb_per_event.get(category, max(self._mb_per_event.values(), default=0.0))
        expected = max(fitted or 0.0, per_event * events)
        if not expected:
            return alloc
        raised = dataclasses.replace(alloc, memory_mb=math.ceil(expected * (1 + FLOOR_MARGIN)))
        raised = raised.capped(self.allocator.max_resources)
        return raised if raised.memory_mb > alloc.memory_mb else alloc


def make_allocator(mode: str, manager, *, memory_mb: int | None = None, cores: int = 1,
                   first_mb: int = 2000, worker_wait_s: float = 5.0):
    """An :class:`~hep_executor.planning._allocation.Allocator` capped by the largest worker of ``manager``.

    ``mode`` is ``auto``, ``max-seen`` or ``fixed`` (which needs ``memory_mb``).
    Before any peak is seen a task gets ``memory_mb``, else ``first_mb``
    (2000 MB, the usual memory per core of a grid slot); one that runs out
    climbs the allocation ladder toward the largest worker. With no worker
    registered yet it waits at most ``worker_wait_s`` for one (the first
    chunks could not run before anyway), then caps at the first allocation.
    """
    from hep_executor.planning import Allocator, Resources

    if not manager.workers():
        manager.wait_for_workers(1, timeout=worker_wait_s)
    largest = max((w["memory_mb"] for w in manager.workers()), default=memory_mb or first_mb)
    cap = Resources(cores=cores, memory_mb=int(largest))
    if mode == "fixed":
        if not memory_mb:
            msg = "resources_mode 'fixed' needs the memory per task (memory_mb)"
            raise ConfigError(msg)
        return Allocator(mode, fixed=Resources(cores=cores, memory_mb=int(memory_mb)), max_resources=cap)
    first = Resources(cores=cores, memory_mb=int(min(largest, memory_mb or first_mb)))
    return Allocator(mode, max_resources=cap, first_guess=first, min_observations=3)


def build_source(manager, segments: list[Segment], *, chunksize: int | None = None,
                 dynamic_chunksize: dict | None = None, initial_chunksize: int = DEFAULT_INITIAL_CHUNK,
                 maxchunks: int | None = None, resources_mode: str = "auto",
                 memory_mb: int | None = None, cores: int = 1, allocator=None,
                 split_on_exhaustion: bool = True, spread: bool = True, more: bool = False,
                 on_changed=None) -> ChunkSource:
    """The chunk source of a run, with its sizer and allocator: one set-up for both faces.

    ``chunksize`` fixes the size; otherwise a :class:`ChunkSizer` predicts it per
    dataset from ``dynamic_chunksize`` targets, starting at ``initial_chunksize``.
    ``resources_mode`` other than ``none`` makes an allocator (unless one is given).
    ``spread`` cuts as many files in turn as the manager's workers have cores.
    ``more`` leaves the source open for segments added later (:meth:`ChunkSource.add`);
    ``on_changed`` is :class:`ChunkSource`'s.
    """
    from hep_executor.analysis._pipeline import worker_cores
    from hep_executor.planning import ChunkSizer

    if allocator is None and resources_mode != "none":
        allocator = make_allocator(resources_mode, manager, memory_mb=memory_mb, cores=cores)
    sizer = None if chunksize else ChunkSizer(dynamic_chunksize or DEFAULT_TARGETS, initial=initial_chunksize)
    all_cores = worker_cores(manager)
    return ChunkSource(segments, chunksize=chunksize, sizer=sizer, maxchunks=maxchunks,
                       memory_mb=memory_mb or 0, allocator=allocator,
                       split_on_exhaustion=split_on_exhaustion,
                       spread=all_cores if spread else 1, more=more, wave=all_cores,
                       on_changed=on_changed)
