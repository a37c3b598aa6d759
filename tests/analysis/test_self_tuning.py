"""Self-tuning task shapes on real workers: memory targets, limits and splitting."""

import pytest

from hep_executor import run
from tests.analysis.simple_processor import MemoryHungryProcessor


def _same(a, b):
    assert a["events"] == b["events"]
    for ds in a["sumpt"]:
        assert a["sumpt"][ds] == pytest.approx(b["sumpt"][ds], rel=1e-9)


def test_memory_target_under_naive_chunk_needs_no_failure(samples, manager):
    proc = MemoryHungryProcessor(mb_per_event=0.1)  # a whole 3000-event file holds ~300 MB more
    small = run(samples, proc, manager=manager, chunksize=250, resources_mode="none")
    peaks = sorted(t["peak_mb"] for t in small.report["tasks"] if t["kind"] == "process")
    baseline = peaks[len(peaks) // 2]  # a slot's memory with a 25 MB chunk
    target = baseline + 150.0  # under the naive whole-file chunk's need (baseline + ~300 MB)
    result = run(samples, proc, manager=manager, dynamic_chunksize={"memory": target})
    _same(result.output, small.output)
    process = [t for t in result.report["tasks"] if t["kind"] == "process"]
    # no task failed; one stopped over its allocation (auto mode learns) was run again
    assert {t["status"] for t in process} <= {"ok", "exhausted"}
    assert result.coverage.ok
    assert sum(t["status"] == "exhausted" for t in process) <= max(1, len(process) // 10)
    final = {}
    for _, category, size in result.report["chunk_history"]:
        final[category] = size
    assert final and all(size < 3000 for size in final.values()), final  # under the naive chunk
    model = result.report["sizing"]["process:ttbar"]["memory"]
    assert model["slope"] == pytest.approx(0.1, rel=0.5)  # MB per event, as the processor holds


def test_fixed_memory_limit_splits_chunks_and_completes(samples, manager):
    proc = MemoryHungryProcessor(mb_per_event=0.1, hold_s=0.3)  # held for 6 of the worker's samples
    reference = run(samples, proc, manager=manager, chunksize=250, resources_mode="none").output
    # a 3000-event chunk holds ~300 MB of its own (the slot's warm memory is not counted): over 250 MB
    result = run(samples, proc, manager=manager, chunksize=3000, resources_mode="fixed", memory_mb=250)
    _same(result.output, reference)
    assert result.report["totals"]["splits"] >= 1
    exhausted = [t for t in result.report["tasks"] if t["status"] == "exhausted"]
    assert exhausted and all(t["memory_mb"] == 250 for t in exhausted)
    assert result.coverage.ok


def test_single_event_that_cannot_fit_fails_naming_file_and_entry(samples, manager):
    from hep_executor.errors import ResourceExhaustedError

    one_file = {"ttbar": [samples["ttbar"][0]]}
    with pytest.raises(ResourceExhaustedError) as info:
        run(one_file, MemoryHungryProcessor(mb_per_event=400), manager=manager, chunksize=2,
            maxchunks=1, resources_mode="fixed", memory_mb=350)
    import re

    assert samples["ttbar"][0] in str(info.value)
    assert re.search(r"entry [01] alone needs more than the 350 MB", str(info.value))
