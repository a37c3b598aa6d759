"""coffea's Runner with HepExecutor: the same output, metrics and errors as coffea's own executors and run()."""

import functools
import warnings

import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hep_executor import HepExecutor, run
from hep_executor.analysis import RunnerMetadata, RunnerWork, recognise
from hep_executor.errors import FileMissingError, NotRootFileError, TreeNotFoundError
from tests.analysis.simple_processor import FailingProcessor, MuonPtProcessor
from tests.analysis.test_analysis import assert_same


def _runner(executor, **kw):
    return processor.Runner(executor=executor, schema=NanoAODSchema, chunksize=1000, **kw)


def _iterative(fileset, **kw):
    return _runner(processor.IterativeExecutor(status=False), **kw)(
        fileset, treename="Events", processor_instance=MuonPtProcessor())


@pytest.fixture(scope="module")
def bad(samples, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_runner")
    text = d / "notes.root"
    text.write_text("this is not a ROOT file\n" * 100)
    return {"good": samples["ttbar"][0], "missing": str(d / "nope.root"), "text": str(text)}


@pytest.mark.parametrize("kind, tree, error", [
    ("missing", "Events", FileMissingError),
    ("text", "Events", NotRootFileError),
    ("good", "Evnts", TreeNotFoundError),
])
def test_bad_input_under_runner_raises_what_run_raises(bad, manager, kind, tree, error):
    files = [bad["good"]] if kind == "good" else [bad["good"], bad[kind]]
    with pytest.raises(error) as own:
        run({"ttbar": files}, MuonPtProcessor(), tree, manager=manager, chunksize=1000)
    with pytest.raises(error) as under_runner:
        _runner(HepExecutor(manager=manager, status=False))(
            {"ttbar": files}, treename=tree, processor_instance=MuonPtProcessor())
    assert str(under_runner.value) == str(own.value)
    assert bad[kind] in str(under_runner.value)
    assert "could not be accessed" not in str(under_runner.value)


def test_skipbadfiles_under_runner_skips_only_the_bad_file(samples, bad, manager):
    fileset = {"ttbar": [bad["good"], bad["missing"]]}
    ref = _iterative(fileset, skipbadfiles=True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = _runner(HepExecutor(manager=manager, status=False), skipbadfiles=True)(
            fileset, treename="Events", processor_instance=MuonPtProcessor())
    assert_same(out, ref)
    assert out["events"] == {"ttbar": 3000}
    assert any(bad["missing"] in str(w.message) for w in seen)


def _closures(fileset, **kw):
    """The closures Runner hands its executor, recorded by an IterativeExecutor subclass."""
    seen = []

    class Recording(processor.IterativeExecutor):
        def __call__(self, items, function, accumulator):
            seen.append(function)
            return super().__call__(items, function, accumulator)

    _runner(Recording(status=False), metadata_cache={}, **kw)(fileset, treename="Events", processor_instance=MuonPtProcessor())
    return seen


def test_runner_closures_are_recognised(samples):
    pre, work = _closures({"ttbar": samples["ttbar"][:1]}, savemetrics=True, skipbadfiles=True)
    meta, spec = recognise(pre), recognise(work)
    assert isinstance(meta, RunnerMetadata) and meta.skipbadfiles is True
    assert isinstance(spec, RunnerWork) and spec.savemetrics and isinstance(spec.processor_instance, bytes)
    assert recognise(functools.partial(print, 1)) is None


def test_savemetrics_same_as_iterative(samples, manager):
    def wrapped(executor):  # Runner.run returns the wrapped output: out, processed, metrics
        return _runner(executor, savemetrics=True).run(samples, treename="Events",
                                                        processor_instance=MuonPtProcessor())

    ref = wrapped(processor.IterativeExecutor(status=False))
    out = wrapped(HepExecutor(manager=manager, status=False, dynamic=False))
    assert_same(out["out"], ref["out"])
    assert set(out["metrics"]) == set(ref["metrics"]) >= {"bytesread", "columns", "entries", "processtime"}
    assert out["metrics"]["entries"] == ref["metrics"]["entries"] == 6 * 3000
    assert set(out["metrics"]["columns"]) == set(ref["metrics"]["columns"])
    assert out["metrics"]["bytesread"] > 0
    assert out["processed"] == ref["processed"]


def test_align_clusters_same_as_iterative(samples, manager):
    ref = _iterative(samples, align_clusters=True)
    out = _runner(HepExecutor(manager=manager, status=False), align_clusters=True)(
        samples, treename="Events", processor_instance=MuonPtProcessor())
    assert_same(out, ref)


def test_checkpointer_saves_then_loads(samples, manager, tmp_path):
    fileset = {"ttbar": samples["ttbar"]}
    ref = _iterative(fileset)
    ex = HepExecutor(manager=manager, status=False, dynamic=False)
    first = _runner(ex, checkpointer=processor.SimpleCheckpointer(str(tmp_path)))(
        fileset, treename="Events", processor_instance=MuonPtProcessor())
    saved = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(saved) == 6  # one per chunk: 2 files x 3 chunks
    # a processor that fails on every chunk: the second run's outputs can only come from the checkpoints
    second = _runner(ex, checkpointer=processor.SimpleCheckpointer(str(tmp_path)))(
        fileset, treename="Events", processor_instance=FailingProcessor())
    assert_same(first, ref)
    assert_same(second, ref)


_PREPROCESSED: list[int] = []


class _CountingExecutor(HepExecutor):
    def _preprocess(self, manager, items, function, accumulator):
        _PREPROCESSED.append(len(items))
        return super()._preprocess(manager, items, function, accumulator)


def test_metadata_cache_filled_and_used(samples, manager):
    cache = {}
    ex = _CountingExecutor(manager=manager, status=False)
    first = _runner(ex, metadata_cache=cache)(samples, treename="Events", processor_instance=MuonPtProcessor())
    assert len(cache) == 6 and all(meta["numentries"] == 3000 for meta in cache.values())
    second = _runner(ex, metadata_cache=cache)(samples, treename="Events", processor_instance=MuonPtProcessor())
    assert _PREPROCESSED == [6]  # the second run read no file's metadata
    assert_same(first, _iterative(samples))
    assert_same(second, first)


def _entries(item) -> dict:
    return {"entries": {item.dataset: len(item)}}


def test_unrecognised_function_runs_as_given(samples, manager):
    from coffea.processor.executor import WorkItem

    items = [WorkItem("ttbar", samples["ttbar"][0], "Events", start, start + 1000, b"")
             for start in range(0, 3000, 1000)]
    ex = HepExecutor(manager=manager, status=False, dynamic=False, function_name="custom")
    out, error = ex(items, functools.partial(_entries), None)
    assert error == 0
    assert out == {"entries": {"ttbar": 3000}}


def test_allocator_waits_briefly_without_workers():
    import time

    from hep_executor import Manager
    from hep_executor.analysis import make_allocator

    with Manager(local_workers=0) as empty:
        t0 = time.monotonic()
        allocator = make_allocator("auto", empty)  # no worker will come: it must not block for long
        waited = time.monotonic() - t0
    assert waited < 10.0
    assert allocator.allocate("process:x").memory_mb == 2000


def test_progress_shows_chunks_rate_and_the_merge_stage(samples, manager, capsys, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "200")  # rich cuts the counts at 80 columns
    ex = HepExecutor(manager=manager, status=True, dynamic=False, treereduction=2)
    _runner(ex, metadata_cache={})({"ttbar": samples["ttbar"]}, treename="Events",
                                   processor_instance=MuonPtProcessor())
    shown = capsys.readouterr().out
    # the processing line: events done of the total, chunks done and a rate (6 chunks of 1,000 events)
    assert re.search(r"6000/6000\s+events \| 6 chunks \| [\d,]+ events/s", shown), shown
    # the merge stage: merges done on the workers (fan-in 2 over 6 results: at least 3), then done
    merge = re.search(r"Merging \(on workers\).*?(\d+)/(\d+)\s+merges \| done", shown)
    assert merge is not None, shown
    assert int(merge.group(1)) == int(merge.group(2)) >= 3
