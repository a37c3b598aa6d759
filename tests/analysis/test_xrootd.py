"""An XRootD server that goes away: retried opens recover if it returns, fail cleanly if not."""

from __future__ import annotations

import threading

import awkward as ak
import pytest

from hep_executor.errors import RemoteAccessError
from hep_executor.analysis import FileCache, open_file, open_tree
from tests.servers import call_with_deadline

pytestmark = pytest.mark.xrootd


def test_server_back_within_the_retry_window(fresh_xrootd_server, sample_files):
    server = fresh_xrootd_server
    url = server.url("good.root")
    expected = open_tree(sample_files["good"], "Events")["Jet_pt"].array()

    tree = open_tree(url, "Events", timeout=2)
    first = tree["Muon_pt"].array()  # reading works...
    server.stop()
    with pytest.raises(OSError):  # ...until the server goes away mid-read
        tree["Jet_pt"].array()
    tree.file.close()

    restart = threading.Timer(1.5, server.start)
    restart.start()
    try:
        directory = call_with_deadline(
            lambda: open_file(url, timeout=2, retries=5, backoff=0.5), 60)
    finally:
        restart.join()
    try:
        again = directory["Events"]
        assert ak.array_equal(again["Jet_pt"].array(), expected)
        assert ak.array_equal(again["Muon_pt"].array(), first)
    finally:
        directory.close()


def test_server_that_stays_down(fresh_xrootd_server, caplog):
    server = fresh_xrootd_server
    url = server.url("good.root")
    server.stop()
    with caplog.at_level("WARNING", logger="hep_executor.analysis._io"):
        with pytest.raises(RemoteAccessError) as info:
            call_with_deadline(lambda: open_file(url, timeout=1, retries=2, backoff=0.2), 60)
    assert url in str(info.value) and info.value.path == url
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "retry 2 of 2" in retries[-1]


def test_file_cache_recovers_after_a_restart(fresh_xrootd_server):
    server = fresh_xrootd_server
    url = server.url("good.root")
    cache = FileCache(max_files=2, timeout=2, retries=5, backoff=0.5)
    try:
        entries = cache.get(url, "Events").num_entries
        server.restart()
        cache.discard(url)  # what a worker does after a read error
        tree = cache.get(url, "Events")
        assert len(tree["event"].array()) == entries
    finally:
        cache.close()
