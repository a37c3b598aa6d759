"""hep_executor.analysis._io against a real XRootD server: same data as local, right errors, no hangs."""

from __future__ import annotations

import awkward as ak
import pytest

from hep_executor.errors import (
    EmptyInputError,
    FileMissingError,
    NotRootFileError,
    RemoteAccessError,
    TreeNotFoundError,
    TruncatedFileError,
)
from hep_executor.analysis import FileCache, file_info, open_file, open_tree
from tests.servers import call_with_deadline, free_port

pytestmark = pytest.mark.xrootd

BRANCHES = ["Muon_pt", "Muon_eta", "nMuon", "Jet_pt", "event"]


@pytest.mark.parametrize("handler", ["xrootd", "fsspec"])
def test_local_and_remote_give_the_same_arrays(xrootd_server, sample_files, handler):
    local = open_tree(sample_files["good"], "Events")
    remote = open_tree(xrootd_server.url("good.root"), "Events", handler=handler, timeout=10)
    try:
        assert remote.num_entries == local.num_entries
        for name in BRANCHES:
            assert ak.array_equal(remote[name].array(), local[name].array()), name
    finally:
        local.file.close()
        remote.file.close()


def test_file_info_is_the_same_remotely(xrootd_server, sample_files):
    here = file_info(sample_files["good"], "Events")
    there = file_info(xrootd_server.url("good.root"), "Events", timeout=10)
    assert (there.entries, there.uuid, there.cluster_starts, there.branches) == (
        here.entries, here.uuid, here.cluster_starts, here.branches)
    assert there.cluster_starts[0] == 0 and there.cluster_starts[-1] == there.entries
    assert len(there.cluster_starts) > 2  # several baskets: chunks can follow them
    assert there.path == xrootd_server.url("good.root")


def test_file_cache_over_xrootd(xrootd_server):
    url = xrootd_server.url("good.root")
    with FileCache(max_files=1, timeout=10) as cache:
        tree = cache.get(url, "Events")
        assert cache.get(url, "Events") is tree
        assert len(tree["event"].array()) == tree.num_entries
        cache.get(xrootd_server.url("other.root"), "Events")
        assert url not in cache and tree.file.source.closed


@pytest.mark.parametrize("handler", ["xrootd", "fsspec"])
def test_missing_url(xrootd_server, handler):
    url = xrootd_server.url("nope.root")
    with pytest.raises(FileMissingError, match="nope.root") as info:
        open_file(url, handler=handler, timeout=10)
    assert info.value.path == url


def test_missing_url_is_not_retried(xrootd_server, caplog):
    with caplog.at_level("WARNING", logger="hep_executor.analysis._io"), pytest.raises(FileMissingError):
        open_file(xrootd_server.url("nope.root"), retries=3, backoff=5.0, timeout=10)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]


def test_remote_text_file(xrootd_server):
    url = xrootd_server.url("text.root")
    with pytest.raises(NotRootFileError, match="text.root"):
        file_info(url, "Events", timeout=10)


def test_remote_truncated_file(xrootd_server):
    url = xrootd_server.url("half.root")
    with pytest.raises(TruncatedFileError, match="half.root.*truncated"):
        file_info(url, "Events", timeout=10)


def test_remote_wrong_tree(xrootd_server):
    url = xrootd_server.url("good.root")
    with pytest.raises(TreeNotFoundError, match=r"good\.root.*'Evnts'.*'Events'"):
        file_info(url, "Evnts", timeout=10)


def test_remote_object_that_is_not_a_tree(xrootd_server):
    with pytest.raises(TreeNotFoundError, match="hist.root.*not a TTree"):
        open_tree(xrootd_server.url("hist.root"), "Events", timeout=10)


def test_remote_empty_tree(xrootd_server):
    url = xrootd_server.url("empty.root")
    assert file_info(url, "Events", timeout=10).entries == 0
    with pytest.raises(EmptyInputError, match="empty.root.*no entries"):
        file_info(url, "Events", allow_empty=False, timeout=10)


def test_remote_directory(xrootd_server):
    with pytest.raises(FileMissingError, match="directory"):
        open_file(xrootd_server.url_prefix + "/", timeout=10)


@pytest.mark.parametrize("handler", ["xrootd", "fsspec"])
def test_closed_port_is_remote_access_error(handler):
    url = f"root://127.0.0.1:{free_port()}//data/good.root"
    timeout, retries, backoff = 2.0, 1, 0.2
    worst = (retries + 1) * timeout + backoff * (2**retries - 1)
    with pytest.raises(RemoteAccessError, match="127.0.0.1") as info:
        call_with_deadline(lambda: open_file(url, timeout=timeout, retries=retries,
                                             backoff=backoff, handler=handler), 5 * worst + 10)
    assert info.value.path == url
    assert url in str(info.value)


def test_unknown_host_is_remote_access_error():
    url = "root://no-such-host.invalid:1094//data/good.root"
    with pytest.raises(RemoteAccessError, match="no-such-host.invalid"):
        call_with_deadline(lambda: open_file(url, timeout=2, retries=0), 30)
