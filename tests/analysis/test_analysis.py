"""The analysis path against coffea's own IterativeExecutor, tree reduction and coverage."""

import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hep_executor import HepExecutor, run, run_uproot_job
from hep_executor.errors import ChunkError
from tests.analysis.simple_processor import FailingProcessor, MuonPtProcessor


def _reference(fileset, chunksize=1000):
    runner = processor.Runner(executor=processor.IterativeExecutor(status=False),
                              schema=NanoAODSchema, chunksize=chunksize)
    return runner(fileset, treename="Events", processor_instance=MuonPtProcessor())


def assert_same(a, b):
    assert a["events"] == b["events"]
    assert set(a["sumpt"]) == set(b["sumpt"])
    for ds in a["sumpt"]:
        assert a["sumpt"][ds] == pytest.approx(b["sumpt"][ds], rel=1e-9)
    ha, hb = a["pt"], b["pt"]
    assert set(ha.axes["dataset"]) == set(hb.axes["dataset"])
    for ds in ha.axes["dataset"]:
        np.testing.assert_allclose(ha[{"dataset": ds}].values(), hb[{"dataset": ds}].values(), rtol=1e-9)
        np.testing.assert_allclose(ha[{"dataset": ds}].variances(), hb[{"dataset": ds}].variances(), rtol=1e-9)


def test_runner_with_hep_executor_matches_iterative(samples, manager):
    ref = _reference(samples)
    ex = HepExecutor(manager=manager, status=False)
    out = processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1000)(
        samples, treename="Events", processor_instance=MuonPtProcessor())
    assert_same(out, ref)
    assert sum(out["events"].values()) == 6 * 3000


def test_run_uproot_job_matches_iterative(samples, manager):
    ref = _reference(samples)
    out = run_uproot_job(samples, "Events", MuonPtProcessor(), executor=HepExecutor,
                         executor_args={"manager": manager, "schema": NanoAODSchema, "status": False},
                         chunksize=1500)
    assert_same(out, ref)


def test_run_uproot_job_rejects_unknown_key(samples):
    from hep_executor.errors import ConfigError

    with pytest.raises(ConfigError, match="not_an_option"):
        run_uproot_job(samples, "Events", MuonPtProcessor(), executor=HepExecutor,
                       executor_args={"not_an_option": 1})


@pytest.mark.parametrize("fan_in", [2, 20])
def test_tree_reduction_same_as_flat_merge_one_deserialization(samples, manager, fan_in):
    ref = _reference(samples, chunksize=500)
    result = run(samples, MuonPtProcessor(), manager=manager, chunksize=500, fan_in=fan_in)
    assert_same(result.output, ref)
    totals = result.report["totals"]
    assert totals["chunks"] == 36
    assert totals["results_deserialized_on_manager"] == 1
    expected_merges = -(-(36 - 1) // (fan_in - 1))
    assert totals["merges"] == expected_merges
    assert result.coverage.ok


def test_dynamic_chunking_covers_every_entry_once(samples, manager):
    result = run(samples, MuonPtProcessor(), manager=manager)
    assert result.coverage.ok
    assert sum(result.output["events"].values()) == 18000


def test_processor_exception_names_file_and_range(samples, manager):
    with pytest.raises(ChunkError) as info:
        run(samples, FailingProcessor(), manager=manager, chunksize=1000)
    message = str(info.value)
    assert ".root entries 1000-2000" in message and "bad value in this chunk" in message
    assert info.value.filename.endswith(".root") and info.value.entrystart == 1000
    held = info.value.partial_coverage.held  # what the partial output is made of, exactly
    partial = info.value.partial_output
    assert (sum(partial["events"].values()) if partial is not None else 0) == _entries_in(held)
    assert not any(start <= 1500 < stop for ranges in held.values() for start, stop in ranges)
    assert _entries_in(held) < 18000


def _entries_in(held) -> int:
    return sum(stop - start for ranges in held.values() for start, stop in ranges)


def test_run_uproot_job_with_hep_executor_takes_the_warm_own_path(samples, manager):
    ref = _reference(samples)
    out, metrics = run_uproot_job(samples, "Events", MuonPtProcessor(), executor=HepExecutor,
                                  executor_args={"manager": manager, "schema": NanoAODSchema,
                                                 "savemetrics": True}, chunksize=700)
    assert_same(out, ref)
    assert metrics["results_deserialized_on_manager"] == 1 and metrics["events"] == 18000
