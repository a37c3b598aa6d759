"""Whole analyses over root:// from the real XRootD server, and on workers submitted through Slurm."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from hep_executor import Manager, run
from hep_executor.batch import WorkerSpec
from hep_executor.batch import SlurmBatch
from hep_executor.errors import RemoteAccessError
from tests.analysis.simple_processor import MuonPtProcessor, SlowProcessor
from tests.analysis.test_analysis import assert_same

REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def manager():
    with Manager(local_workers=2) as m:
        m.wait_for_workers(2)
        yield m


def test_same_output_over_xrootd_as_local(xrootd_server, sample_files, manager):
    local = {"ttbar": [str(sample_files["good"]), str(sample_files["other"])]}
    remote = {"ttbar": [xrootd_server.url("good.root"), xrootd_server.url("other.root")]}
    a = run(local, MuonPtProcessor(), manager=manager, chunksize=700)
    b = run(remote, MuonPtProcessor(), manager=manager, chunksize=700)
    assert_same(a.output, b.output)
    assert b.coverage.ok and sum(b.output["events"].values()) == 4000
    assert all(f["file"].startswith("root://") for f in b.report["files"])


def _stop_after_first_chunk(server, restart_after: float | None):
    state = {"stopped": False}

    def progress(stage, result, item=None):
        if stage == "process" and not state["stopped"]:
            state["stopped"] = True
            server.stop()
            if restart_after is not None:
                threading.Timer(restart_after, server.start).start()

    return progress


def test_server_restarted_mid_run_is_retried(fresh_xrootd_server, sample_files, manager):
    url = fresh_xrootd_server.url("good.root")
    reference = run({"ttbar": [str(sample_files["good"])]}, MuonPtProcessor(), manager=manager,
                    chunksize=250)
    result = run({"ttbar": [url]}, SlowProcessor(0.2), manager=manager, chunksize=250, timeout=5,
                 progress=_stop_after_first_chunk(fresh_xrootd_server, restart_after=1.0))
    assert_same(result.output, reference.output)
    assert result.coverage.ok


def test_server_down_mid_run_is_reported_naming_the_url(fresh_xrootd_server, manager):
    url = fresh_xrootd_server.url("good.root")
    t0 = time.monotonic()
    with pytest.raises(RemoteAccessError) as info:
        run({"ttbar": [url]}, SlowProcessor(0.2), manager=manager, chunksize=250, timeout=3,
            progress=_stop_after_first_chunk(fresh_xrootd_server, restart_after=None))
    assert url in str(info.value)
    assert time.monotonic() - t0 < 120
    held = info.value.partial_coverage.held  # what the partial output is made of, exactly
    done = sum(stop - start for ranges in held.values() for start, stop in ranges)
    partial = info.value.partial_output
    assert (sum(partial["events"].values()) if partial is not None else 0) == done < 2000


def test_skipbadfiles_goes_on_when_the_server_is_down(fresh_xrootd_server, sample_files, manager):
    url = fresh_xrootd_server.url("good.root")
    fresh_xrootd_server.stop()
    fileset = {"ttbar": [str(sample_files["other"]), url]}
    result = run(fileset, MuonPtProcessor(), manager=manager, chunksize=700, timeout=2,
                 skipbadfiles=True)
    assert result.output["events"] == {"ttbar": 2000}
    assert [s["file"] for s in result.skipped] == [url]


def test_slurm_workers_give_the_same_output_as_local(slurm, shared_dir, sample_files, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf_path))
    files = []
    for name in ("good", "other"):  # a folder the jobs can read
        target = shared_dir / f"{name}.root"
        target.write_bytes(Path(sample_files[name]).read_bytes())
        files.append(str(target))
    fileset = {"ttbar": files}
    with Manager(local_workers=1) as local:
        reference = run(fileset, MuonPtProcessor(), manager=local, chunksize=500)
    key_file = shared_dir / "run.key"
    with Manager(local_workers=0, key_file=str(key_file)) as manager:
        batch = SlurmBatch(log_dir=shared_dir / "logs")
        jobs = batch.submit(WorkerSpec(manager=manager.address, key_file=str(key_file), cores=1,
                                       memory_mb=1500), 2)
        try:
            assert manager.wait_for_workers(2, timeout=60) == 2
            result = run(fileset, MuonPtProcessor(), manager=manager, chunksize=500)
        finally:
            batch.cancel(jobs)
    assert_same(result.output, reference.output)
    assert len({t["slot"].split("/")[0] for t in result.report["tasks"]}) == 2
    from tests.helpers import try_assert

    try_assert(lambda: not slurm.job_ids(), timeout=20, message=f"jobs left: {slurm.job_ids()}")
