"""Local ROOT inputs that cannot be used map to the right error class, naming the file.

Files are written into ``tmp_path`` with uproot; nothing here needs a socket.
"""

from __future__ import annotations

import pickle

import awkward as ak
import numpy as np
import pytest
import uproot

from hep_executor.errors import (
    ConfigError,
    EmptyInputError,
    FileMissingError,
    InputError,
    NotRootFileError,
    TreeNotFoundError,
    TruncatedFileError,
)
from hep_executor.analysis import FileCache, FileInfo, file_info, is_remote, open_file, open_tree

N = 600
BASKET = 200


def write_tree(path, entries=N, treename="Events", basket=BASKET):
    """A small NanoAOD-like TTree written in baskets of ``basket`` entries."""
    rng = np.random.default_rng(7)
    with uproot.recreate(path) as f:
        f.mktree(treename, {"Muon_pt": "var * float32", "run": "int32"})
        for start in range(0, entries, basket):
            n = min(basket, entries - start)
            counts = rng.integers(0, 4, n)
            f[treename].extend({
                "Muon_pt": ak.unflatten(rng.uniform(5, 100, counts.sum()).astype(np.float32), counts),
                "run": np.arange(start, start + n, dtype=np.int32),
            })
    return path


@pytest.fixture
def good(tmp_path):
    return write_tree(tmp_path / "good.root")


def test_file_info_of_a_good_file(good):
    info = file_info(good, "Events")
    assert isinstance(info, FileInfo)
    assert info.path == str(good)
    assert info.entries == N
    assert info.cluster_starts == [0, 200, 400, 600]
    assert info.uuid == str(uproot.open(good).file.uuid)
    assert info.branches == len(uproot.open(good)["Events"].keys())


def test_open_tree_reads_the_arrays(good):
    tree = open_tree(good, "Events")
    try:
        assert tree["run"].array().tolist() == list(range(N))
    finally:
        tree.file.close()


def test_open_files_keep_no_arrays_between_reads(good):
    # a worker slot keeps files open across chunks: their columns must not pile up in it
    tree = open_tree(good, "Events")
    try:
        assert tree.file.array_cache is None
        first = tree["run"].array(entry_start=0, entry_stop=100)
        again = tree["run"].array(entry_start=0, entry_stop=100)
        assert first is not again and first.tolist() == again.tolist()
    finally:
        tree.file.close()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.root"
    with pytest.raises(FileMissingError, match="nope.root") as info:
        open_file(path)
    assert info.value.path == str(path)
    assert isinstance(info.value, FileNotFoundError)


def test_text_file_is_not_root(tmp_path):
    path = tmp_path / "notes.root"
    path.write_text("this is a text file\n" * 20)
    with pytest.raises(NotRootFileError, match="notes.root.*not a ROOT file"):
        file_info(path, "Events")


def test_file_cut_in_half_is_truncated(good, tmp_path):
    data = good.read_bytes()
    half = tmp_path / "half.root"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedFileError, match="half.root.*truncated"):
        file_info(half, "Events")


def test_file_missing_its_last_bytes_is_truncated(good, tmp_path):
    short = tmp_path / "short.root"
    short.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(TruncatedFileError, match="short.root"):
        open_file(short)


def test_empty_file_is_truncated(tmp_path):
    path = tmp_path / "zero.root"
    path.write_bytes(b"")
    with pytest.raises(TruncatedFileError, match="zero.root.*0 bytes"):
        open_file(path)


def test_header_only_file_is_truncated(good, tmp_path):
    path = tmp_path / "head.root"
    path.write_bytes(good.read_bytes()[:120])
    with pytest.raises(TruncatedFileError, match="head.root"):
        open_file(path)


def test_wrong_tree_name_lists_the_trees(tmp_path):
    path = write_tree(tmp_path / "other.root", treename="Runs")
    with pytest.raises(TreeNotFoundError) as info:
        file_info(path, "Events")
    text = str(info.value)
    assert "other.root" in text and "'Events'" in text and "'Runs'" in text
    assert isinstance(info.value, KeyError)  # and it prints as a sentence, not a repr
    assert not text.startswith('"')


def test_object_that_is_not_a_tree(tmp_path):
    path = tmp_path / "hist.root"
    with uproot.recreate(path) as f:
        f["Events"] = np.histogram(np.arange(10), bins=5)
    with pytest.raises(TreeNotFoundError, match="not a TTree.*trees in the file: none"):
        open_tree(path, "Events")


def test_tree_in_a_subdirectory(tmp_path):
    path = tmp_path / "nested.root"
    with uproot.recreate(path) as f:
        f.mktree("dir/Events", {"x": "int32"}).extend({"x": np.arange(5, dtype=np.int32)})
    assert file_info(path, "dir/Events").entries == 5
    with pytest.raises(TreeNotFoundError, match="'dir/Events'"):
        file_info(path, "Events")


def test_empty_tree(tmp_path):
    path = tmp_path / "empty.root"
    with uproot.recreate(path) as f:
        f.mktree("Events", {"x": "int32"})
    assert file_info(path, "Events").entries == 0
    with pytest.raises(EmptyInputError, match="empty.root.*no entries"):
        file_info(path, "Events", allow_empty=False)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(InputError, match=str(tmp_path)):
        open_file(tmp_path)


def test_colon_in_a_local_path(tmp_path):
    path = write_tree(tmp_path / "a:b.root", entries=10, basket=10)
    assert file_info(path, "Events").entries == 10


def test_errors_survive_pickling(tmp_path):
    path = tmp_path / "gone.root"
    with pytest.raises(FileMissingError) as info:
        open_file(path)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is FileMissingError and str(again) == str(info.value) and again.path == str(path)


@pytest.mark.parametrize("options", [
    {"timeout": 0}, {"timeout": -1}, {"retries": -1}, {"backoff": -0.5}, {"handler": "curl"},
])
def test_bad_options(good, options):
    with pytest.raises(ConfigError):
        open_file(good, **options)


def test_is_remote():
    assert is_remote("root://host:1094//store/a.root")
    assert is_remote("https://host/a.root")
    assert not is_remote("/data/a.root")
    assert not is_remote("file:///data/a.root")


def test_file_url_opens_locally(good):
    with open_file(f"file://{good}") as directory:
        assert directory["Events"].num_entries == N


class TestFileCache:
    def test_keeps_trees_warm(self, good):
        with FileCache(max_files=2) as cache:
            first = cache.get(good, "Events")
            assert cache.get(good, "Events") is first
            assert (cache.hits, cache.misses) == (1, 1)
            assert good in cache

    def test_evicts_least_recently_used(self, tmp_path):
        paths = [write_tree(tmp_path / f"f{i}.root", entries=10, basket=10) for i in range(3)]
        cache = FileCache(max_files=2)
        trees = [cache.get(p, "Events") for p in paths[:2]]
        cache.get(paths[0], "Events")  # f0 is now the most recent
        cache.get(paths[2], "Events")  # evicts f1
        assert len(cache) == 2
        assert paths[0] in cache and paths[2] in cache and paths[1] not in cache
        assert trees[1].file.source.closed
        assert not trees[0].file.source.closed
        cache.close()
        assert len(cache) == 0 and trees[0].file.source.closed

    def test_discard(self, good):
        cache = FileCache(max_files=1)
        tree = cache.get(good, "Events")
        cache.discard(good)
        assert good not in cache and tree.file.source.closed

    def test_errors_pass_through_and_cache_nothing(self, tmp_path):
        cache = FileCache(max_files=2)
        with pytest.raises(FileMissingError):
            cache.get(tmp_path / "nope.root", "Events")
        assert len(cache) == 0

    def test_wrong_tree_keeps_the_file(self, good):
        cache = FileCache(max_files=2)
        with pytest.raises(TreeNotFoundError):
            cache.get(good, "Nope")
        assert cache.get(good, "Events").num_entries == N
        cache.close()

    def test_needs_room_for_one_file(self):
        with pytest.raises(ConfigError):
            FileCache(max_files=0)
