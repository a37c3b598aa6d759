"""Streaming: a file's chunks run as soon as its metadata is back, beside the other files' preprocessing."""

import os

import pytest

from hep_executor import run
from hep_executor.demo import make_samples
from hep_executor.errors import InputError
from tests.analysis.simple_processor import MuonPtProcessor
from tests.analysis.test_analysis import assert_same


def _linked(folder, n_files, events=500):
    """``{dataset: paths}`` of ``n_files`` files per two datasets: hard links to two generated files each."""
    made = make_samples(folder / "src", events_per_file=events, files_per_dataset=2, datasets=["ttbar", "data"],
                        extra_branches=0, block_size=250)
    fileset = {}
    for dataset, sources in made.items():
        fileset[dataset] = []
        for i in range(n_files // 2):
            path = folder / f"{dataset}_{i:04d}.root"
            os.link(sources[i % 2], path)
            fileset[dataset].append(str(path))
    return fileset


def _ranges(report):
    return {f["file"]: f["ranges"] for f in report["files"]}


def _finish(task):
    return task["started"] + task["wall"]


def test_same_output_and_coverage_as_preprocess_first(samples, manager):
    first = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, streaming=False, metadata_cache=False)
    streamed = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=False)
    assert_same(first.output, streamed.output)
    assert first.report["coverage_ok"] and streamed.report["coverage_ok"]
    assert _ranges(first.report) == _ranges(streamed.report)
    assert len(_ranges(first.report)) == 6


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    return _linked(tmp_path_factory.mktemp("many"), 200)


def test_two_hundred_files_streamed(many_files, manager):
    first = run(many_files, MuonPtProcessor(), manager=manager, chunksize=500, streaming=False, metadata_cache=False)
    streamed = run(many_files, MuonPtProcessor(), manager=manager, chunksize=500, metadata_cache=False)
    assert_same(first.output, streamed.output)
    assert streamed.output["events"] == {"ttbar": 50_000, "data": 50_000}
    assert streamed.report["coverage_ok"]
    assert _ranges(first.report) == _ranges(streamed.report)
    assert len(_ranges(streamed.report)) == 200
    tasks = streamed.report["tasks"]
    pre = [t for t in tasks if t["kind"] == "preprocess"]
    assert len(pre) == 200
    first_file = many_files["ttbar"][0]
    first_chunks = [t for t in tasks if t["kind"] == "process" and t["file"] == first_file]
    assert len(first_chunks) == 1
    # the first file's chunk was done before the last file's metadata was read
    assert max(map(_finish, first_chunks)) < max(map(_finish, pre))
    # and preprocessing-first really did read every file before the first chunk started
    pre_first = [t for t in first.report["tasks"] if t["kind"] == "preprocess"]
    chunks_first = [t for t in first.report["tasks"] if t["kind"] == "process"]
    assert max(map(_finish, pre_first)) <= min(t["started"] for t in chunks_first) + 0.05


def _bad_last(many_files, sample_files, n=30):
    files = many_files["ttbar"][:n] + [str(sample_files["text"])]
    return {"ttbar": files}


def test_bad_file_found_after_processing_started_stops_with_partial_output(many_files, sample_files, manager):
    fileset = _bad_last(many_files, sample_files)
    done = []

    def progress(stage, result=None, item=None):
        if stage == "process" and result.ok:
            done.append((item.filename, item.entrystart, item.entrystop))

    with pytest.raises(InputError, match="text.root") as info:
        run(fileset, MuonPtProcessor(), manager=manager, chunksize=500, metadata_cache=False, progress=progress)
    err = info.value
    assert done, "no chunk finished before the bad file was found"
    held = {f: sorted(rs) for f, rs in err.partial_coverage.held.items() if rs}
    assert held == _joined(done)
    assert err.partial_output["events"]["ttbar"] == sum(b - a for _, a, b in done)


def _joined(chunks) -> dict:
    """File -> entry ranges of ``(file, start, stop)`` chunks, adjacent ranges joined."""
    out: dict = {}
    for f, a, b in sorted(chunks):
        ranges = out.setdefault(f, [])
        if ranges and ranges[-1][1] == a:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))
    return out


def test_bad_file_found_while_streaming_is_skipped_with_skipbadfiles(many_files, sample_files, manager):
    fileset = _bad_last(many_files, sample_files, n=10)
    result = run(fileset, MuonPtProcessor(), manager=manager, chunksize=500, metadata_cache=False,
                 skipbadfiles=True)
    assert [s["file"] for s in result.skipped] == [str(sample_files["text"])]
    assert result.output["events"] == {"ttbar": 10 * 500}
    assert result.report["coverage_ok"]


def test_source_drops_a_replanned_file_once_and_stays_open():
    """A chunk of a guessed plan that finds its file changed: the old plan goes, the new one is cut."""
    from hep_executor.analysis import ChunkSource, ChunkSpec, Segment
    from hep_executor.engine import TaskReport, TaskResult
    from hep_executor.errors import InputChangedError

    def segment(uuid, entries):
        return Segment(ChunkSpec("ttbar", "root://h//f.root", "Events", 0, entries, uuid, None, entries), 0, entries)

    guessed = []
    source = ChunkSource([segment("old", 1000)], chunksize=300,
                         on_changed=lambda item: guessed.append(item) or item.fileuuid == "old")
    first, second = source.take(2)
    changed = TaskResult(1, TaskReport(1, "process:ttbar", "failed"),
                         error=InputChangedError("changed", first.filename, 0, 300))
    assert source.observe(first, changed) == [first]
    assert source.planned == {} and not source.exhausted
    assert source.take(5) == []  # nothing more of the old plan
    source.add([segment("new", 700)])
    source.close()
    new = source.take(5)
    assert {i.fileuuid for i in new} == {"new"} and sum(i.entrystop - i.entrystart for i in new) == 700
    assert source.observe(second, changed) == [second]  # the old plan's other chunk: passed over
    assert sum(b - a for a, b in source.planned["root://h//f.root"]) == 700  # the new plan stays
    other = TaskResult(3, TaskReport(3, "process:ttbar", "failed"),
                       error=InputChangedError("changed", new[0].filename, 0, 300))
    assert source.observe(new[0], other) == []  # a confirmed plan: a real error
    assert len(guessed) == 3
