"""The DaskManager through a real dask-gateway server (its UnsafeLocalBackend: clusters as local
processes of this user) on 127.0.0.1, port 0: a new cluster started and shut down, a named running
cluster used and left running, wrong names and dead addresses failing with what is at fault."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hep_executor.engine import connect_dask
from hep_executor.errors import ConfigError, SchedulerUnreachableError
from tests.helpers import drain, try_assert

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "gateway-test-password"
CONFIG = f"""
c.DaskGateway.address = "127.0.0.1:0"
c.Proxy.address = "127.0.0.1:0"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = "{PASSWORD}"
c.ClusterConfig.environment = {{"PYTHONPATH": "{ROOT}"}}
c.ClusterConfig.scheduler_cmd = ["{sys.executable}", "-m", "distributed.cli.dask_scheduler"]
c.ClusterConfig.worker_cmd = ["{sys.executable}", "-m", "distributed.cli.dask_worker"]
c.ClusterConfig.worker_memory = 1.5
c.ClusterConfig.scheduler_memory = 0.5
c.LocalClusterConfig.cluster_start_timeout = 120
c.LocalClusterConfig.worker_start_timeout = 120
"""


def square(x):
    return x * x


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """A running dask-gateway server; yields its ``gateway://127.0.0.1:PORT`` address."""
    pytest.importorskip("dask_gateway_server")  # a third-party test dependency (the test extra)
    folder = tmp_path_factory.mktemp("gateway")
    (folder / "config.py").write_text(CONFIG)
    log = open(folder / "gateway.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "dask_gateway_server", "-f", "config.py"], cwd=folder,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        text = ""

        def started():
            nonlocal text
            text = (folder / "gateway.log").read_text()
            assert proc.poll() is None, text
            return "Dask-Gateway server started" in text

        try_assert(started, timeout=60, interval=0.2, message="dask-gateway-server did not start")
        port = re.search(r"HTTP routes listening at http://127\.0\.0\.1:(\d+)", text).group(1)
        # the proxy listens before the API behind it is routed (a POST then gets 404): wait for its health
        try_assert(lambda: _healthy(port), timeout=60, interval=0.2, message="dask-gateway API not ready")
        yield f"gateway://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def _healthy(port: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def basic_auth():
    """dask-gateway's basic auth with the server's password, from dask's configuration (as users set it)."""
    import dask
    import dask_gateway  # noqa: F401  (its defaults join dask's configuration first: set() restores to them)

    with dask.config.set({"gateway.auth.type": "basic", "gateway.auth.kwargs": {"password": PASSWORD}}):
        yield


def _clusters(address: str) -> list[str]:
    from dask_gateway import Gateway

    with Gateway(address.replace("gateway://", "http://")) as gateway:
        return [c.name for c in gateway.list_clusters()]


def test_a_new_gateway_cluster_runs_the_analysis_and_is_shut_down(gateway, basic_auth, samples):
    from hep_executor import run
    from tests.analysis.simple_processor import MuonPtProcessor
    from tests.analysis.test_analysis import assert_same
    from tests.engine.test_dask_manager import _reference

    manager = connect_dask(gateway, workers=2, timeout=30)
    try:
        assert manager.wait_for_workers(2, timeout=120) == 2
        assert manager.client.scheduler.address.startswith("gateway://")  # through the proxy, with TLS
        security = manager.client.security  # the cluster's own TLS certificate and key
        assert security is manager.cluster.security and "BEGIN CERTIFICATE" in security.tls_cert
        [name] = _clusters(gateway)
        result = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, fan_in=4, metadata_cache=False)
    finally:
        manager.close()
    assert result.coverage.ok
    assert_same(result.output, _reference(samples, 1000))
    try_assert(lambda: _clusters(gateway) == [], timeout=60, message=f"gateway cluster {name} left running")


def test_a_named_gateway_cluster_is_used_and_left_running(gateway, basic_auth):
    from dask_gateway import Gateway

    with Gateway(gateway.replace("gateway://", "http://")) as gw:
        cluster = gw.new_cluster(shutdown_on_close=False)
        try:
            cluster.scale(1)
            manager = connect_dask({"gateway": gateway, "cluster": cluster.name}, timeout=30)
            try:
                assert manager.wait_for_workers(1, timeout=120) == 1
                ids = [manager.submit(square, i) for i in range(5)]
                results = drain(manager, timeout=120)
                assert sorted((r.id, r.value) for r in results) == [(t, i * i) for i, t in enumerate(ids)]
            finally:
                manager.close()
            assert _clusters(gateway) == [cluster.name]  # not ours to stop
            with pytest.raises(ConfigError, match=f"no cluster 'nonesuch'.*running: {cluster.name}"):
                connect_dask({"gateway": gateway, "cluster": "nonesuch"}, timeout=30)
        finally:
            cluster.shutdown()
    try_assert(lambda: _clusters(gateway) == [], timeout=60)


def test_a_gateway_address_where_nothing_listens_fails_fast_naming_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        t0 = time.monotonic()
        with pytest.raises(SchedulerUnreachableError, match=f"no dask-gateway answered at 'http://127.0.0.1:{port}'"):
            connect_dask(f"gateway://127.0.0.1:{port}", timeout=5)
    assert time.monotonic() - t0 < 5
    with pytest.raises(ConfigError, match="needs a port"):
        connect_dask("gateway://127.0.0.1", timeout=5)


def test_cli_runs_on_a_new_gateway_cluster(gateway, basic_auth, samples, tmp_path, capsys):
    import json

    from hep_executor.cli.main import main as cli_main

    (tmp_path / "fileset.json").write_text(json.dumps(samples))
    processor = Path(__file__).resolve().parents[1] / "analysis" / "simple_processor.py"
    (tmp_path / "gateway_muon.py").write_text(processor.read_text())
    code = cli_main(["run", "--fileset", str(tmp_path / "fileset.json"), "--processor",
                     "gateway_muon:MuonPtProcessor", "--dask", gateway, "--out", str(tmp_path / "runs"),
                     "--no-progress", "--chunksize", "1000", "--no-cache"])
    assert code == 0, capsys.readouterr().err
    [run_dir] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.is_symlink()]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "ok" and report["totals"]["events"] == 18000
    assert report["config"]["workers"]["dask"] == gateway
    try_assert(lambda: _clusters(gateway) == [], timeout=60, message="the run's gateway cluster left running")


def test_dask_key_as_a_gateway_mapping(tmp_path):
    from hep_executor.cli import load_config

    config = tmp_path / "run.yaml"
    config.write_text("workers: {dask: {gateway: 'https://gw.example.org', cluster: abc, auth: jupyterhub}}\n")
    assert load_config(config).workers.dask == {"gateway": "https://gw.example.org", "cluster": "abc",
                                                "auth": "jupyterhub"}
    config.write_text("workers: {dask: {gateway: 'https://gw.example.org', clustr: abc}}\n")
    with pytest.raises(ConfigError, match="workers.dask as a mapping is a dask-gateway's.*clustr"):
        load_config(config)
