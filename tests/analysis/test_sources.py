"""Tests of hep_executor.analysis._sources.ChunkSource: the order chunks are cut in and their coverage."""

from __future__ import annotations

from hep_executor.planning import Allocator, Resources
from hep_executor.analysis import ChunkSpec
from hep_executor.planning import Coverage
from hep_executor.errors import ResourceExhaustedError
from hep_executor.engine import TaskReport, TaskResult
from hep_executor.planning import ChunkSizer
from hep_executor.analysis import PROBE_FLOOR, ChunkSource, Segment


def _segments(entries):
    return [Segment(ChunkSpec("d", f"f{i}.root", "Events", 0, n), 0, n) for i, n in enumerate(entries)]


def _take_all(source, n=3):
    out = []
    while not source.exhausted:
        out.extend(source.take(n))
    return out


def test_spread_cuts_files_in_turn_and_covers_each_once():
    source = ChunkSource(_segments([300, 200, 500]), chunksize=100, spread=2)
    chunks = _take_all(source)
    files = [c.filename for c in chunks]
    # two files in progress at a time; the third starts when the second ends
    assert files[:6] == ["f0.root", "f1.root", "f0.root", "f1.root", "f0.root", "f2.root"]
    for i, n in enumerate([300, 200, 500]):
        ranges = sorted((c.entrystart, c.entrystop) for c in chunks if c.filename == f"f{i}.root")
        assert ranges == [(a, a + 100) for a in range(0, n, 100)]
    assert sum(len(v) for v in source.planned.values()) == len(chunks) == 10


def test_spread_one_is_file_after_file():
    chunks = _take_all(ChunkSource(_segments([200, 200]), chunksize=100))
    assert [c.filename for c in chunks] == ["f0.root", "f0.root", "f1.root", "f1.root"]


def test_maxchunks_per_dataset_holds_with_spread():
    source = ChunkSource(_segments([500, 500, 500]), chunksize=100, spread=3, maxchunks=4)
    assert len(_take_all(source, n=2)) == 4


# ---------------------------------------------------------------- learning from the first chunks

BASE_MB, MB_PER_EVENT, LIMIT_MB = 250.0, 0.08, 1000.0


def _run(source, item, tid=[0]):  # noqa: B006  (a counter)
    """A task of ``item`` as a worker would report it: 250 MB + 0.08 MB per event, stopped over 1000 MB."""
    tid[0] += 1
    need = BASE_MB + MB_PER_EVENT * (item.entrystop - item.entrystart)
    if need > LIMIT_MB:
        report = TaskReport(tid[0], "process", "exhausted", wall=0.1, peak_mb=LIMIT_MB)
        result = TaskResult(tid[0], report, error=ResourceExhaustedError("over", LIMIT_MB, LIMIT_MB))
    else:
        result = TaskResult(tid[0], TaskReport(tid[0], "process", "ok", wall=0.1, peak_mb=need))
    return result, source.observe(item, result)


def _datasets(n_files=2, entries=20000, names=("sig", "bkg", "data")):
    return [Segment(ChunkSpec(d, f"{d}_{i}.root", "Events", 0, entries), 0, entries)
            for d in names for i in range(n_files)]


def test_a_far_too_large_first_size_costs_one_failure_per_category_and_nothing_is_lost():
    sizer = ChunkSizer({"memory": LIMIT_MB}, initial=64000)
    source = ChunkSource(_datasets(), sizer=sizer, spread=2)
    first = source.take(4)
    # the first chunk of a category tries the prediction; the next in flight is 8x smaller
    assert first[0].events == 20000 and first[1].events <= 64000 // 8
    failures, done, in_flight = 0, Coverage(), list(first)
    while in_flight:
        item = in_flight.pop(0)
        result, _ = _run(source, item)
        if result.ok:
            done.add(item.filename, item.entrystart, item.entrystop)
        else:
            failures += 1
        in_flight.extend(source.take(4 - len(in_flight)))
    assert source.exhausted
    assert failures == 1, failures  # without probes: the first chunk of every category failed, and its halves
    assert Coverage.check(done, {s.template.filename: 20000 for s in _datasets()}).ok
    assert sum(b - a for r in source.planned.values() for a, b in r) == 6 * 20000  # re-cuts not planned twice


def test_probes_stop_at_the_floor_and_a_small_first_size_is_not_cut_smaller():
    big = ChunkSource(_datasets(entries=256000), sizer=ChunkSizer({"memory": LIMIT_MB}, initial=64000), spread=2)
    assert [c.events for c in big.take(4)] == [64000, 8000, PROBE_FLOOR, PROBE_FLOOR]
    small = ChunkSource(_datasets(), sizer=ChunkSizer({"memory": LIMIT_MB}, initial=250), spread=2)
    assert [c.events for c in small.take(4)] == [250, 250, 250, 250]


def test_with_adaptive_allocation_the_first_wave_fills_the_cores_then_one_per_new_category():
    allocator = Allocator("auto", max_resources=Resources(1, 4000), first_guess=Resources(1, 2000))
    source = ChunkSource(_datasets(entries=5000), chunksize=1000, allocator=allocator, spread=2)
    first = source.take(6)
    # one chunk per core (spread), each at the first guess: the run does not wait for one alone
    assert [c.filename for c in first] == ["sig_0.root", "sig_1.root"]
    assert source.take(2) == []
    assert [source.resources(c)["memory_mb"] for c in first] == [2000, 2000]
    _run(source, first[0])  # 330 MB
    more = source.take(12)
    # sig's 8 other chunks; then bkg and data one chunk each, until they report
    assert sorted(c.dataset for c in more) == ["bkg", "data"] + ["sig"] * 8
    bkg = next(c for c in more if c.dataset == "bkg")
    assert source.resources(bkg)["memory_mb"] < 2000  # from sig's peak, not the first guess
    assert source.take(3) == []
    _run(source, bkg)
    assert [c.dataset for c in source.take(3)] == ["bkg", "bkg", "bkg"]


def test_a_lifetime_peak_teaches_neither_the_allocator_nor_the_memory_model():
    allocator = Allocator("auto", max_resources=Resources(1, 4000), first_guess=Resources(1, 2000))
    sizer = ChunkSizer({"memory": 2000}, initial=1000)
    source = ChunkSource(_datasets(entries=5000), chunksize=None, sizer=sizer, allocator=allocator, spread=2)
    item, _ = source.take(6)
    report = TaskReport(1, "process", "ok", wall=0.5, peak_mb=3900.0, peak_is_lifetime=True)
    assert source.observe(item, TaskResult(1, report)) == []
    assert allocator.history == []  # 3,900 MB of a slot's lifetime says nothing of this chunk
    (events, wall, memory, _), = sizer._categories[next(iter(sizer._categories))].reports
    assert memory == 0.0 and wall == 0.5


def _run_within_allocation(source, item, tid=[1000]):  # noqa: B006  (a counter)
    """A task that needs 250 MB + 0.08 MB per event and is stopped when that is over its allocation."""
    tid[0] += 1
    need = BASE_MB + MB_PER_EVENT * item.events
    limit = source.resources(item)["memory_mb"]
    if need > limit:
        err = ResourceExhaustedError("over", limit, limit)
        return False, source.observe(item, TaskResult(tid[0], TaskReport(tid[0], "process", "exhausted",
                                                                          wall=0.1, peak_mb=limit), error=err))
    report = TaskReport(tid[0], "process", "ok", wall=0.1, peak_mb=need)
    return True, source.observe(item, TaskResult(tid[0], report))


def test_growing_chunks_get_the_memory_their_events_need_and_nothing_is_lost():
    allocator = Allocator("auto", max_resources=Resources(1, 4000), first_guess=Resources(1, 2000),
                          min_observations=3)
    sizer = ChunkSizer({"memory": 2000}, initial=1000)
    source = ChunkSource(_datasets(n_files=1, entries=400000, names=("sig",)), sizer=sizer,
                         allocator=allocator, spread=1)
    exhausted, done, sizes = 0, Coverage(), []
    while not source.exhausted:
        for item in source.take(1):
            ok, _ = _run_within_allocation(source, item)
            exhausted += not ok
            if ok:
                done.add(item.filename, item.entrystart, item.entrystop)
                sizes.append(item.events)
    assert Coverage.check(done, {"sig_0.root": 400000}).ok
    assert max(sizes) >= 8 * min(sizes)  # the sizer grew the chunks on the way
    # the peaks seen lag behind growing chunks: without the sizer's floor, every growth step ran out
    assert exhausted <= 1


def test_a_new_category_borrows_the_memory_per_event_of_the_chunks_already_run():
    # a task's peak is its own (its slot's warm memory left out): it grows from near zero with the events
    allocator = Allocator("auto", max_resources=Resources(1, 4000), first_guess=Resources(1, 2000))
    segments = [Segment(ChunkSpec("sig", "sig_0.root", "Events", 0, 1000), 0, 1000),
                Segment(ChunkSpec("bkg", "bkg_0.root", "Events", 0, 3000), 0, 3000)]
    source = ChunkSource(segments, chunksize=3000, allocator=allocator, spread=1)
    (first,) = source.take(1)
    assert first.dataset == "sig" and first.events == 1000
    source.resources(first)
    source.observe(first, TaskResult(1, TaskReport(1, "process", "ok", wall=0.1, peak_mb=100.0)))
    (second,) = source.take(1)
    assert second.dataset == "bkg" and second.events == 3000
    # the allocator alone gives 1.5 x the 100 MB seen: 150 MB, for a chunk that needs about 300
    assert allocator.allocate("process:bkg").memory_mb == 150
    assert source.resources(second)["memory_mb"] == 345  # 0.1 MB an event x 3000 events, and a 15% margin
