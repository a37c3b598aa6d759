"""Exactly-once means the right events: inputs changed under a run, damaged baskets, crashed chunks.

Real files, real workers. Each test asserts the error class, the file and
entry range in its message and, with ``skipbadfiles``, that the output
equals a clean run over the files that stayed good.
"""

import os
import shutil
import struct

import numpy as np
import pytest
import uproot

from hep_executor import run
from hep_executor.errors import (ChunkError, ChunkLostError, ChunkReadError, InputChangedError, InputError,
                                 UnpicklableResultError, WorkerLostError)
from tests.analysis.fault_processors import ExitProcessor, SegfaultProcessor, UnpicklableProcessor
from tests.analysis.simple_processor import MuonPtProcessor


@pytest.fixture(scope="module")
def short_file(tmp_path_factory):
    """A file like the samples' but of 1000 entries."""
    from hep_executor.demo import make_samples

    made = make_samples(tmp_path_factory.mktemp("short"), events_per_file=1000, files_per_dataset=1,
                        datasets=["data"], extra_branches=30, seed=3)
    return made["data"][0]


@pytest.fixture
def inputs(samples, tmp_path):
    """Copies a.root (a ttbar file) and b.root (a data file) this test may damage; other: a third file."""
    a, b = tmp_path / "a.root", tmp_path / "b.root"
    shutil.copy(samples["ttbar"][0], a)
    shutil.copy(samples["data"][0], b)
    return {"a": str(a), "b": str(b), "other": samples["data"][1]}


def _clean(manager, files, **kw):
    return run({"mc": files}, MuonPtProcessor(), manager=manager, chunksize=1000, **kw)


def _same_output(result, clean):
    assert result.output["events"] == clean.output["events"]
    assert result.output["sumpt"] == pytest.approx(clean.output["sumpt"], rel=1e-9)
    assert np.array_equal(result.output["pt"].values(), clean.output["pt"].values())


def _replace_when_preprocessed(target: str, replace):
    """A progress hook: ``replace()`` once ``target``'s preprocessing result has come back."""
    done = []

    def progress(stage, result=None, item=None):
        if stage == "preprocess" and not done and result.ok and result.value["filename"] == target:
            replace()
            done.append(True)
    return progress


def _swap(src: str, dst: str):
    def replace():  # a new file under the old name (a new inode), as a copy tool does
        shutil.copy(src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)
    return replace


def _overwrite(src: str, dst: str):
    return lambda: shutil.copyfile(src, dst)  # the same inode, rewritten in place


@pytest.mark.parametrize("how, change", [
    ("same-entries", "UUID"), ("fewer-entries", "entries 3000 -> 1000"), ("in-place", "UUID"),
])
def test_file_replaced_after_preprocessing(manager, inputs, short_file, how, change):
    src = short_file if how == "fewer-entries" else inputs["other"]
    replace = (_overwrite if how == "in-place" else _swap)(src, inputs["b"])
    fileset = {"mc": [inputs["a"], inputs["b"]]}
    with pytest.raises(InputChangedError) as info:
        run(fileset, MuonPtProcessor(), manager=manager, chunksize=3000,
            progress=_replace_when_preprocessed(inputs["b"], replace))
    err = info.value
    assert isinstance(err, InputError) and isinstance(err, ChunkError)
    assert f"{inputs['b']} entries 0-3000 (dataset mc)" in str(err) and change in str(err), str(err)
    assert err.filename == inputs["b"] and (err.entrystart, err.entrystop) == (0, 3000)
    assert inputs["b"] not in err.partial_coverage.held


def test_file_replaced_skipbadfiles_skips_it_whole(manager, inputs):
    result = run({"mc": [inputs["a"], inputs["b"]]}, MuonPtProcessor(), manager=manager, chunksize=1000,
                 skipbadfiles=True, progress=_replace_when_preprocessed(inputs["b"], _swap(inputs["other"], inputs["b"])))
    _same_output(result, _clean(manager, [inputs["a"]]))
    skipped = [s for s in result.skipped if s["file"] == inputs["b"]]
    assert sorted(tuple(s["range"]) for s in skipped)[0][0] == 0
    assert sum(s["range"][1] - s["range"][0] for s in skipped) == 3000
    assert any("InputChangedError" in s["error"] or "changed after it was preprocessed" in s["error"] for s in skipped)
    assert result.coverage.ok and inputs["b"] not in result.coverage.held


def test_file_gone_after_preprocessing(manager, inputs):
    gone = _replace_when_preprocessed(inputs["b"], lambda: os.remove(inputs["b"]))
    with pytest.raises(ChunkReadError) as info:
        run({"mc": [inputs["a"], inputs["b"]]}, MuonPtProcessor(), manager=manager, chunksize=3000, progress=gone)
    assert f"{inputs['b']} entries 0-3000 (dataset mc): cannot open it: FileMissingError" in str(info.value)
    shutil.copy(inputs["other"], inputs["b"])
    gone = _replace_when_preprocessed(inputs["b"], lambda: os.remove(inputs["b"]))
    result = run({"mc": [inputs["a"], inputs["b"]]}, MuonPtProcessor(), manager=manager, chunksize=1000,
                 skipbadfiles=True, progress=gone)
    _same_output(result, _clean(manager, [inputs["a"]]))
    assert sum(s["range"][1] - s["range"][0] for s in result.skipped if s["file"] == inputs["b"]) == 3000


def _flip_basket(path: str, branch: str, basket: int) -> None:
    """Flip bytes inside the compressed data of one basket of ``branch``."""
    seek = int(uproot.open(path)["Events"][branch].member("fBasketSeek")[basket])
    data = bytearray(open(path, "rb").read())
    keylen = struct.unpack(">h", data[seek + 14: seek + 16])[0]
    for i in range(seek + keylen + 30, seek + keylen + 70):
        data[i] ^= 0xFF
    open(path, "r+b").write(bytes(data))


def test_corrupt_basket_names_file_and_range(manager, inputs):
    _flip_basket(inputs["b"], "Muon_pt", 2)  # entries 2000-3000
    with pytest.raises(ChunkReadError) as info:
        run({"mc": [inputs["a"], inputs["b"]]}, MuonPtProcessor(), manager=manager, chunksize=1000)
    assert f"{inputs['b']} entries 2000-3000 (dataset mc): damaged data while reading it" in str(info.value)
    held = info.value.partial_coverage.held
    assert all(stop <= 2000 for _, stop in held.get(inputs["b"], [])), held
    assert info.value.partial_coverage.missing[inputs["b"]][-1] == (2000, 3000)


def test_corrupt_basket_skipbadfiles_one_chunk_file(manager, inputs):
    _flip_basket(inputs["b"], "Muon_pt", 1)
    result = run({"mc": [inputs["a"], inputs["b"]]}, MuonPtProcessor(), manager=manager, chunksize=3000,
                 skipbadfiles=True)
    _same_output(result, run({"mc": [inputs["a"]]}, MuonPtProcessor(), manager=manager, chunksize=3000))
    assert [s["range"] for s in result.skipped if s["file"] == inputs["b"]] == [[0, 3000]]
    assert result.coverage.ok


def test_corrupt_basket_skipbadfiles_keeps_the_ranges_that_ran(manager, inputs):
    _flip_basket(inputs["b"], "Muon_pt", 2)
    result = run({"mc": [inputs["a"], inputs["b"]]}, MuonPtProcessor(), manager=manager, chunksize=1000,
                 skipbadfiles=True)
    held = result.coverage.held[inputs["b"]]
    assert held == [(0, 2000)], held
    assert result.coverage.ok
    bad = [s for s in result.skipped if s["file"] == inputs["b"]]
    assert [s["range"] for s in bad] == [[2000, 3000]]
    assert "damaged data while reading it" in bad[0]["error"]
    pt = uproot.open(inputs["a"])["Events"]["Muon_pt"].array(library="np")
    good_b = uproot.open(inputs["b"])["Events"]["Muon_pt"].array(entry_stop=2000, library="np")
    expected = sum(float(np.sum(x.astype(np.float64))) for x in list(pt) + list(good_b))
    assert result.output["events"] == {"mc": 5000}
    assert result.output["sumpt"]["mc"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("processor, cause", [
    (ExitProcessor("b."), "the chunk's process exited with code 3 3 times"),
    (SegfaultProcessor("b."), "the chunk's process was killed by SIGSEGV 3 times"),
])
def test_crashing_chunk_names_file_range_and_signal(manager, inputs, processor, cause):
    with pytest.raises(ChunkLostError) as info:
        run({"mc": [inputs["a"], inputs["b"]]}, processor, manager=manager, chunksize=1000)
    err = info.value
    assert isinstance(err, WorkerLostError)
    assert f"{inputs['b']} entries 1000-2000 (dataset mc): {cause}" in str(err), str(err)
    assert "[3 attempts]" in str(err) and err.attempts == 3 and err.dataset == "mc"
    assert (err.entrystart, err.entrystop) == (1000, 2000)
    assert inputs["b"] not in err.partial_coverage.held or (1000, 2000) not in err.partial_coverage.held[inputs["b"]]


def test_unpicklable_result_names_type_and_place(manager, inputs):
    with pytest.raises(UnpicklableResultError) as info:
        run({"mc": [inputs["a"], inputs["b"]]}, UnpicklableProcessor("b."), manager=manager, chunksize=1000)
    text = str(info.value)
    assert f"{inputs['b']} entries 1000-2000 (dataset mc)" in text
    assert "output['nested']['handle'][1] is a _thread.lock" in text, text
    assert "[1 attempt]" in text


def test_memory_kill_is_a_chunk_error(samples, manager):
    import re

    from hep_executor.errors import ChunkExhaustedError, ResourceExhaustedError
    from tests.analysis.simple_processor import MemoryHungryProcessor

    path = samples["ttbar"][0]
    with pytest.raises(ChunkExhaustedError) as info:
        run({"ttbar": [path]}, MemoryHungryProcessor(mb_per_event=400), manager=manager, chunksize=2,
            maxchunks=1, resources_mode="fixed", memory_mb=350)
    err = info.value
    assert isinstance(err, ResourceExhaustedError) and err.limit_mb == 350
    assert re.search(rf"{re.escape(path)} entries [01]-[12] \(dataset ttbar\): ResourceExhaustedError", str(err)), str(err)
    assert err.attempts >= 1 and f"[{err.attempts} attempt" in str(err)


def test_checked_output_pickles_as_its_value_and_names_the_leaf():
    import threading

    from hep_executor.analysis import CheckedOutput
    from hep_executor.analysis import ChunkSpec
    from hep_executor.engine import dumps, loads

    chunk = ChunkSpec("d", "f.root", "Events", 0, 10)
    assert loads(*dumps(CheckedOutput({"out": {"n": 3}}, chunk))) == {"out": {"n": 3}}
    closure = loads(*dumps(CheckedOutput({"out": {"f": lambda x: x + 1}}, chunk)))  # cloudpickle's way
    assert closure["out"]["f"](1) == 2
    with pytest.raises(UnpicklableResultError, match=r"f.root entries 0-10 \(dataset d\).*output\['a'\]\[1\]\['l'\] is a _thread.lock"):
        dumps(CheckedOutput({"out": {"a": [1, {"l": threading.Lock()}]}}, chunk))
