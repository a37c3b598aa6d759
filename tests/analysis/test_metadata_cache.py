"""The persistent metadata cache: a second run reads no metadata of unchanged files."""

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hep_executor import HepExecutor, run
from hep_executor.analysis import CachedMetadata, MetadataCache
from hep_executor.demo import make_samples
from tests.analysis.simple_processor import MuonPtProcessor
from tests.analysis.test_analysis import assert_same


def _kinds(report) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in report["tasks"]:
        counts[t["kind"]] = counts.get(t["kind"], 0) + 1
    return counts


@pytest.mark.parametrize("streaming", [True, False])
def test_second_run_submits_no_preprocessing(samples, manager, tmp_path, streaming):
    db = tmp_path / "meta.sqlite"
    first = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=db,
                streaming=streaming)
    second = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=db,
                 streaming=streaming)
    assert _kinds(first.report)["preprocess"] == 6
    assert "preprocess" not in _kinds(second.report)
    assert second.report["totals"]["metadata_cached"] == 6
    assert _kinds(second.report)["process"] == _kinds(first.report)["process"] == 18
    assert_same(first.output, second.output)
    assert [f["uuid"] for f in first.report["files"]] == [f["uuid"] for f in second.report["files"]]


def test_rewritten_file_is_read_again(manager, tmp_path):
    folder = tmp_path / "files"
    fileset = make_samples(folder, events_per_file=1200, files_per_dataset=2, datasets=["ttbar"],
                           extra_branches=0)
    db = tmp_path / "meta.sqlite"
    first = run(fileset, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=db)
    assert first.output["events"] == {"ttbar": 2400}
    changed = fileset["ttbar"][1]
    before = os.stat(changed).st_mtime_ns
    make_samples(tmp_path / "new", events_per_file=1700, files_per_dataset=2, datasets=["ttbar"],
                 extra_branches=0)
    os.replace(tmp_path / "new" / Path(changed).name, changed)
    if os.stat(changed).st_mtime_ns == before:  # a clock too coarse to tell: make it tell
        os.utime(changed, ns=(before + 10**9, before + 10**9))
    second = run(fileset, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=db)
    pre = [t for t in second.report["tasks"] if t["kind"] == "preprocess"]
    assert [t["file"] for t in pre] == [changed]
    assert {f["file"]: f["entries"] for f in second.report["files"]} == {fileset["ttbar"][0]: 1200,
                                                                         changed: 1700}
    assert second.output["events"] == {"ttbar": 2900}
    assert second.report["coverage_ok"]


def test_corrupt_cache_is_rebuilt_with_a_warning(samples, manager, tmp_path):
    db = tmp_path / "meta.sqlite"
    db.write_bytes(b"this is not an SQLite database\n" * 200)
    with pytest.warns(RuntimeWarning, match="not readable"):
        result = run(samples, MuonPtProcessor(), manager=manager, chunksize=3000, metadata_cache=db)
    assert result.report["coverage_ok"]
    assert (tmp_path / "meta.sqlite.corrupt").exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM files").fetchone()[0] == 6


def test_no_cache_with_false(samples, manager, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    run(samples, MuonPtProcessor(), manager=manager, chunksize=3000, metadata_cache=False)
    assert not (tmp_path / "hep-executor").exists()
    run(samples, MuonPtProcessor(), manager=manager, chunksize=3000)
    assert (tmp_path / "hep-executor" / "metadata.sqlite").exists()


def test_twenty_thousand_rows_are_cheap(tmp_path, sample_files):
    path = str(sample_files["good"])
    rows = [(path, f"tree{i}", CachedMetadata(1000 + i, f"uuid-{i}", [0, 500, 1000 + i])) for i in range(20_000)]
    with MetadataCache(tmp_path / "m.sqlite") as cache:
        t0 = time.perf_counter()
        cache.lookup([(u, t) for u, t, _ in rows])  # records the file's stat, as a run does
        assert cache.store(rows) == 20_000
        t_store = time.perf_counter() - t0
    with MetadataCache(tmp_path / "m.sqlite") as cache:
        t0 = time.perf_counter()
        found = cache.lookup([(u, t) for u, t, _ in rows], clusters=True)
        t_lookup = time.perf_counter() - t0
    assert len(found) == 20_000
    assert found[(path, "tree19999")] == CachedMetadata(20_999, "uuid-19999", [0, 500, 20_999])
    assert t_store < 5.0 and t_lookup < 5.0, (t_store, t_lookup)


def test_remote_entries_are_not_trusted(tmp_path):
    url = "root://localhost:1094//data/a.root"
    with MetadataCache(tmp_path / "m.sqlite") as cache:
        cache.store([(url, "Events", CachedMetadata(10, "u"))])
        assert len(cache) == 1
        assert cache.lookup([(url, "Events")]) == {}


def test_coffea_runner_metadata_cache_is_honoured(samples, manager, tmp_path):
    ref = processor.Runner(executor=processor.IterativeExecutor(status=False), schema=NanoAODSchema,
                           chunksize=1000)(samples, treename="Events", processor_instance=MuonPtProcessor())
    cache: dict = {}
    outputs, preprocessing = _runner_twice(samples, manager, tmp_path, False, runner_cache=cache)
    assert len(cache) == 6
    assert preprocessing == [6, 0]  # the second run: chunks and merges only
    assert {json.loads(line)["category"].split(":")[0] for line in (tmp_path / "tasks.jsonl").open()} \
        == {"process", "accumulate"}
    for out in outputs:
        assert_same(out, ref)


def _runner_twice(samples, manager, tmp_path, setting, runner_cache=None) -> tuple[list, list[int]]:
    """Two Runner runs (HepExecutor's ``metadata_cache=setting``; Runner's in-memory dict ``runner_cache``,
    else an empty one each time); the outputs and preprocessing tasks of each run (every task submitted
    is in the transactions log, the metadata call's too)."""
    log = tmp_path / "tasks.jsonl"
    outputs, preprocessing = [], []
    for _ in range(2):
        log.write_text("")
        before = manager.stats["submitted"]
        ex = HepExecutor(manager=manager, status=False, dynamic=False, transactions_log=str(log),
                         metadata_cache=setting)
        runner = processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1000,
                                  metadata_cache={} if runner_cache is None else runner_cache)
        outputs.append(runner(samples, treename="Events", processor_instance=MuonPtProcessor()))
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        assert len(rows) == manager.stats["submitted"] - before
        preprocessing.append(sum(row["category"] == "preprocess" for row in rows))
    return outputs, preprocessing


def test_runner_second_run_submits_no_preprocessing(samples, manager, tmp_path):
    db = tmp_path / "meta.sqlite"
    outputs, preprocessing = _runner_twice(samples, manager, tmp_path, db)
    assert preprocessing == [6, 0]
    assert_same(outputs[0], outputs[1])
    assert outputs[1]["events"] == outputs[0]["events"] and sum(outputs[1]["events"].values()) > 0
    with MetadataCache(db) as cache:
        assert len(cache) == 6
    # rows written under Runner serve run() too (the same UUID text), and the other way round
    second = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=db)
    assert "preprocess" not in _kinds(second.report)
    assert_same(second.output, outputs[0])


def test_runner_without_cache_reads_metadata_each_time(samples, manager, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    _, preprocessing = _runner_twice(samples, manager, tmp_path, False)
    assert preprocessing == [6, 6]
    assert not (tmp_path / "home" / "hep-executor").exists()
    _, preprocessing = _runner_twice(samples, manager, tmp_path, None)  # the default: the user's cache dir
    assert preprocessing == [6, 0]
    assert (tmp_path / "home" / "hep-executor" / "metadata.sqlite").exists()


@pytest.mark.parametrize("streaming", [True, False])
def test_remote_file_rewritten_on_the_server_is_read_again(xrootd_server, tmp_path, streaming):
    old, new = (make_samples(tmp_path / name, events_per_file=n, files_per_dataset=1, datasets=["ttbar"],
                             extra_branches=0)["ttbar"][0] for name, n in (("old", 1200), ("new", 1700)))
    url = xrootd_server.add_file(old, "rewritten.root")
    db = tmp_path / "meta.sqlite"

    def again():  # own workers each time: no slot keeps the old file open
        return run({"ttbar": [url]}, MuonPtProcessor(), workers=1, chunksize=500, metadata_cache=db,
                   streaming=streaming)

    first, second = again(), again()
    assert _kinds(first.report)["preprocess"] == 1
    assert "preprocess" not in _kinds(second.report)  # planned from the cache, confirmed by its chunks
    assert second.output["events"] == first.output["events"] == {"ttbar": 1200}
    assert second.report["totals"]["metadata_reread"] == 0
    xrootd_server.add_file(new, "rewritten.root")  # other entries, another UUID, same URL
    third = again()
    assert third.report["totals"]["metadata_reread"] == 1
    assert _kinds(third.report)["preprocess"] == 1
    assert third.output["events"] == {"ttbar": 1700}
    assert third.report["coverage_ok"]
    (planned,) = third.report["files"]
    assert planned["entries"] == 1700 and sum(b - a for a, b in planned["ranges"]) == 1700
    assert third.report["files"][0]["uuid"] != first.report["files"][0]["uuid"]
    with MetadataCache(db) as cache:
        assert cache.lookup([(url, "Events")], remote=True)[(url, "Events")].entries == 1700


def test_runner_reads_remote_files_each_time_and_stores_their_rows(xrootd_server, manager, tmp_path):
    """Under Runner a root:// row is stored but not used (its chunks check no UUID); run() then uses it."""
    (local,) = make_samples(tmp_path / "files", events_per_file=900, files_per_dataset=1, datasets=["ttbar"],
                            extra_branches=0)["ttbar"]
    url = xrootd_server.add_file(local, "runner_remote.root")
    db = tmp_path / "meta.sqlite"
    outputs, preprocessing = _runner_twice({"ttbar": [url]}, manager, tmp_path, db)
    assert preprocessing == [1, 1]
    assert outputs[0]["events"] == outputs[1]["events"] == {"ttbar": 900}
    with MetadataCache(db) as cache:
        assert cache.lookup([(url, "Events")], remote=True)[(url, "Events")].entries == 900
    second = run({"ttbar": [url]}, MuonPtProcessor(), manager=manager, chunksize=500, metadata_cache=db)
    assert "preprocess" not in _kinds(second.report)
    assert second.output["events"] == {"ttbar": 900}
