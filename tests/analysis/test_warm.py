"""Tests of hep_executor.analysis._warm: NanoEvents from a slot's cached schema equal coffea's own."""

from __future__ import annotations

import shutil

import awkward as ak
import pytest
from coffea.nanoevents import BaseSchema, NanoAODSchema, NanoEventsFactory

from hep_executor.demo import samples
from hep_executor.analysis import warm


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("warm_samples")
    fileset = samples.make_samples(out, events_per_file=300, files_per_dataset=1, extra_branches=10, block_size=100)
    return fileset["ttH_EFT"][0], fileset["data"][0]


@pytest.fixture(autouse=True)
def cold():
    warm.clear()
    yield
    warm.clear()


def coffea_events(path, schema, metadata, start, stop):
    return NanoEventsFactory.from_root({path: "Events"}, schemaclass=schema, metadata=metadata, mode="virtual",
                                       entry_start=start, entry_stop=stop).events()


@pytest.mark.parametrize("schema", [NanoAODSchema, BaseSchema])
def test_same_events_as_coffea_on_every_chunk(files, schema):
    path = files[0]
    directory = warm.warm_files().directory(path, "Events")
    for start, stop in [(0, 100), (100, 250), (250, 300)]:
        meta = {"dataset": "ttH_EFT", "entrystart": start}
        ours = warm.warm_events(directory, "Events", schema, meta, start, stop)
        theirs = coffea_events(path, schema, meta, start, stop)
        assert len(ours) == len(theirs) == stop - start
        assert ours.metadata == theirs.metadata
        assert ak.fields(ours) == ak.fields(theirs)
        if schema is NanoAODSchema:
            assert ak.to_list(ours.Muon.pt) == ak.to_list(theirs.Muon.pt)
            assert ak.to_list(ak.num(ours.Jet)) == ak.to_list(ak.num(theirs.Jet))
        assert ak.to_list(ours.MET_pt if schema is BaseSchema else ours.MET.pt) == \
            ak.to_list(theirs.MET_pt if schema is BaseSchema else theirs.MET.pt)
    stats = warm.warm_stats()
    assert (stats["schema_misses"], stats["schema_hits"]) == (1, 2)


def test_one_schema_per_file_uuid_tree_and_schema(files, tmp_path):
    signal, data = files
    copy = tmp_path / "copy_of_signal.root"
    shutil.copy(signal, copy)
    before = warm.warm_stats()
    for path in (signal, copy, data):
        directory = warm.warm_files().directory(path, "Events")
        warm.warm_events(directory, "Events", NanoAODSchema, {"dataset": "x"}, 0, 10)
    stats = warm.warm_stats()
    # the copy has the signal file's UUID: its schema is reused; the data file needs its own
    assert stats["schema_misses"] - before["schema_misses"] == 2
    assert stats["schema_hits"] - before["schema_hits"] == 1


def test_metadata_of_one_chunk_does_not_leak_into_the_next(files):
    directory = warm.warm_files().directory(files[0], "Events")
    first = warm.warm_events(directory, "Events", NanoAODSchema, {"dataset": "a", "only_first": 1}, 0, 10)
    second = warm.warm_events(directory, "Events", NanoAODSchema, {"dataset": "b"}, 10, 20)
    assert first.metadata["dataset"] == "a" and first.metadata["only_first"] == 1
    assert second.metadata["dataset"] == "b" and "only_first" not in second.metadata
    assert second.metadata["version"] == "latest"  # the schema's own key is kept


def test_clear_closes_files_and_forgets_schemas(files):
    directory = warm.warm_files().directory(files[0], "Events")
    warm.warm_events(directory, "Events", NanoAODSchema, {}, 0, 10)
    warm.clear()
    assert len(warm.warm_files()) == 0
    directory = warm.warm_files().directory(files[0], "Events")
    misses = warm.warm_stats()["schema_misses"]
    warm.warm_events(directory, "Events", NanoAODSchema, {}, 0, 10)
    assert warm.warm_stats()["schema_misses"] == misses + 1


_TWO_CHUNKS = """
import os, sys
import awkward as ak
from coffea.nanoevents import NanoAODSchema
from hep_executor.analysis import warm

def chunk(start, stop):
    directory = warm.warm_files().directory(sys.argv[1], "Events")
    events = warm.warm_events(directory, "Events", NanoAODSchema, {"dataset": "ttH_EFT"}, start, stop)
    return float(ak.sum(events.Jet.pt) + ak.sum(events.Muon.pt) + ak.sum(events.Electron.pt) + ak.sum(events.MET.pt))

chunk(0, 100)
os.access("/hep-mark-start", os.F_OK)
chunk(100, 200)
os.access("/hep-mark-stop", os.F_OK)
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_warm_chunk_makes_almost_no_metadata_calls(files, tmp_path):
    import subprocess
    import sys

    log = tmp_path / "strace.log"
    calls = "stat,lstat,newfstatat,statx,openat,open,access,faccessat,faccessat2,readlink,readlinkat,getdents64"
    subprocess.run(["strace", "-f", "-qq", "-e", f"trace={calls}", "-o", str(log), sys.executable, "-c", _TWO_CHUNKS,
                    str(files[0])], check=True, timeout=300)
    lines = log.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "/hep-mark-start" in line)
    stop = next(i for i, line in enumerate(lines) if "/hep-mark-stop" in line)
    window = [line for line in lines[start + 1:stop] if "resumed>" not in line]
    assert len(window) <= 10, window  # was 2 per column read (uproot's fsspec source reopened the file)
    assert [line for line in window if "openat" in line and str(files[0]) in line] == []
