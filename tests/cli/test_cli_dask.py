"""``hep-executor run`` on a Dask cluster (``--dask ADDRESS``, config key ``workers.dask``): the same
output as on local workers, the client closed and the cluster left running, and an address where no
scheduler answers failing fast with the address named."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import distributed
import pytest
from coffea.util import load

from hep_executor.cli import load_config
from hep_executor.cli.main import main as cli_main
from hep_executor.errors import ConfigError
from tests.analysis.test_analysis import assert_same
from tests.helpers import try_assert

PROCESSOR_SOURCE = Path(__file__).resolve().parents[1] / "analysis" / "simple_processor.py"


def only_run(base: Path) -> Path:
    runs = [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def inputs(samples, tmp_path) -> Path:
    """A fileset JSON of the sample files and the muon-pt processor module beside it."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "fileset.json").write_text(json.dumps(samples))
    (folder / "dask_muon.py").write_text(PROCESSOR_SOURCE.read_text())
    return folder


def _scheduler_state(dask_scheduler):
    return {"clients": sorted(dask_scheduler.clients), "tasks": len(dask_scheduler.tasks),
            "workers": len(dask_scheduler.workers)}


def test_run_on_a_dask_cluster_matches_local_workers(inputs, tmp_path, capsys):
    local_runs, dask_runs = tmp_path / "local", tmp_path / "dask"
    common = ["--no-progress", "--chunksize", "1000", "--no-cache"]
    code = cli_main(["run", "--fileset", str(inputs / "fileset.json"), "--processor", "dask_muon:MuonPtProcessor",
                     "--workers", "2", "--out", str(local_runs), *common])
    assert code == 0, capsys.readouterr().err
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0",
                                  host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        config = inputs / "dask.yaml"
        config.write_text(f"fileset: fileset.json\nprocessor: {{class: 'dask_muon:MuonPtProcessor'}}\n"
                          f"workers: {{dask: '{cluster.scheduler_address}'}}\n")
        code = cli_main(["run", str(config), "--out", str(dask_runs), *common])
        assert code == 0, capsys.readouterr().err
        mine = sorted(client.run_on_scheduler(_scheduler_state)["clients"])
        # the run's client is gone, its tasks with it; the cluster and its workers are left running
        try_assert(lambda: client.run_on_scheduler(_scheduler_state)["clients"] == mine, timeout=30)
        state = client.run_on_scheduler(_scheduler_state)
        assert state["workers"] == 2 and state["tasks"] == 0 and client.id in state["clients"]
        assert len(state["clients"]) <= 2, state  # this test's client (and dask's fire-and-forget)
    local_dir, dask_dir = only_run(local_runs), only_run(dask_runs)
    assert_same(load(dask_dir / "output.coffea"), load(local_dir / "output.coffea"))
    report = json.loads((dask_dir / "report.json").read_text())
    assert report["status"] == "ok" and report["totals"]["events"] == 18000
    assert report["config"]["workers"]["dask"] == cluster.scheduler_address
    slots = {t["slot"].split(":")[0] for t in report["tasks"] if t["kind"] == "process"}
    assert slots == {"0", "1"}  # the chunks ran on the two Dask workers (named 0 and 1)


def test_unreachable_dask_address_fails_fast_naming_it(inputs, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    threads = {t.ident for t in threading.enumerate()}
    started = time.monotonic()
    code = cli_main(["run", "--fileset", str(inputs / "fileset.json"), "--processor", "dask_muon:MuonPtProcessor",
                     "--dask", address, "--out", str(tmp_path / "runs"), "--no-progress"])
    elapsed = time.monotonic() - started
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and address in line and "no Dask scheduler answered" in line, line
    assert elapsed < 25, f"took {elapsed:.1f} s to give up on {address}"
    try_assert(lambda: {t.ident for t in threading.enumerate()} <= threads, timeout=10,
               message=f"threads left behind: {threading.enumerate()}")
    report = json.loads((only_run(tmp_path / "runs") / "report.json").read_text())
    assert report["status"] == "failed" and address in report["error"]["message"]


def test_dask_key_is_an_address_and_excludes_batch_jobs(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("workers: {dask: 'tcp://10.0.0.1:8786'}\n")
    assert load_config(config).workers.dask == "tcp://10.0.0.1:8786"
    config.write_text("workers: {dask: 'tcp://10.0.0.1:8786', batch: slurm}\n")
    with pytest.raises(ConfigError, match="workers.dask .*tcp://10.0.0.1:8786.* workers.batch 'slurm'"):
        load_config(config)
    config.write_text("workers: {dask: ''}\n")
    with pytest.raises(ConfigError, match="workers.dask must be a Dask scheduler's address"):
        load_config(config)
