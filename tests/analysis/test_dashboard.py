"""The live dashboard of ``run(..., dashboard=...)`` and ``HepExecutor(dashboard=...)``: served on
127.0.0.1 while the run goes on, its ``/status.json`` numbers are the run's, and its port is closed
once the run ends, also when the run fails."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hep_executor import HepExecutor, run
from hep_executor.analysis import Dashboard, RunStatus, dashboard_port
from hep_executor.errors import ChunkError, ConfigError
from tests.analysis.simple_processor import FailingProcessor, MuonPtProcessor


class SlowMuonPt(MuonPtProcessor):
    """MuonPtProcessor taking 0.3 s a chunk, so that a run lasts long enough to be watched."""

    def process(self, events):
        time.sleep(0.3)
        return super().process(events)


def _status(url: str) -> dict:
    with urllib.request.urlopen(url + "status.json", timeout=5) as answer:
        return json.loads(answer.read())


def _closed(url: str) -> bool:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((host, int(port))) != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_serves_its_own_numbers_and_stops(samples, manager, caplog):
    fileset = {"ttbar": samples["ttbar"]}
    seen: list[dict] = []
    urls: list[str] = []

    def watch(stage, result, item=None):
        if not urls:  # the URL is logged at INFO before the first task
            urls.extend(r.args[0] for r in caplog.records if r.getMessage().startswith("dashboard at "))
        seen.append(_status(urls[0]))

    with caplog.at_level(logging.INFO, logger="hep_executor"):
        result = run(fileset, MuonPtProcessor(), manager=manager, chunksize=1000, dashboard=True,
                     progress=watch)
    url = result.dashboard_url
    assert url == urls[0] and url.startswith("http://127.0.0.1:")
    totals = result.report["totals"]
    last = seen[-1]  # fetched in the callback of the last chunk: the run's final counts
    assert last["state"] == "running"
    assert last["files"] == {"done": 2, "total": 2}
    assert last["events"]["done"] == totals["events"] == 6000 and last["events"]["total"] == 6000
    assert last["chunks"]["done"] == totals["chunks"] == 6 and last["chunks"]["total"] == 6
    sizes = last["chunk_sizes"]["ttbar"]
    assert sizes["last"] == 1000 and sizes["chunks"] == 6
    assert [n for _, n in sizes["history"]] == [1000] * 6  # the size over time: one point a chunk
    assert [t for t, _ in sizes["history"]] == sorted(t for t, _ in sizes["history"])
    assert [s["events"]["done"] for s in seen] == sorted(s["events"]["done"] for s in seen)
    assert seen[0]["events"]["done"] < 6000
    assert last["workers"] and len(last["recent_tasks"]) == 6
    assert _closed(url)


def test_run_on_a_given_port_stops_it_when_the_run_fails(samples, manager):
    port = _free_port()
    seen: list[dict] = []
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(ChunkError):
        run({"ttbar": samples["ttbar"][:1]}, FailingProcessor(), manager=manager, chunksize=1000,
            dashboard=port, progress=lambda stage, result, item=None: seen.append(_status(url)))
    assert any(s["failed"] == 1 for s in seen)
    assert _closed(url)


def test_hep_executor_under_runner_serves_the_run(samples, manager):
    executor = HepExecutor(manager=manager, status=False, dashboard=True, dynamic=False)
    assert executor.dashboard_url is None
    seen: list[dict] = []
    stop = threading.Event()

    def poll():  # the Runner's clones share the executor's pool: its URL shows here once served
        while not stop.is_set():
            url = executor.dashboard_url
            if url:
                try:
                    seen.append(_status(url))
                except (urllib.error.URLError, OSError):
                    pass  # the run ended between two polls
            time.sleep(0.05)

    watcher = threading.Thread(target=poll)
    watcher.start()
    try:
        out = processor.Runner(executor=executor, schema=NanoAODSchema, chunksize=1000)(
            {"ttbar": samples["ttbar"]}, treename="Events", processor_instance=SlowMuonPt())
    finally:
        stop.set()
        watcher.join()
    assert out["events"] == {"ttbar": 6000}
    running = [s for s in seen if s["state"] == "running"]
    assert running, "the dashboard was never seen during the run"
    assert all(s["files"]["total"] == 2 for s in running)
    processing = [s for s in running if s["chunks"]["done"] > 0]
    assert processing, "no snapshot while chunks ran"
    assert all(s["events"]["total"] == 6000 and 0 < s["events"]["done"] <= 6000 for s in processing)
    assert all(s["events"]["done"] == 1000 * s["chunks"]["done"] for s in processing)
    assert _closed(executor.dashboard_url)


def test_dashboard_settings_and_a_taken_port_are_config_errors():
    assert [dashboard_port(v) for v in (None, False, True, 0, 8123)] == [None, None, 0, 0, 8123]
    with pytest.raises(ConfigError, match="dashboard='yes'"):
        dashboard_port("yes")
    board = Dashboard()
    try:
        with pytest.raises(ConfigError, match=f"127.0.0.1:{board.port}"):
            Dashboard(port=board.port)
    finally:
        board.close()
    assert _closed(board.url)


def test_status_counts_and_estimates_chunks():
    status = RunStatus(n_files=2, chunksize=1000)
    published: list[dict] = []
    status.on_update = published.append
    status.known("A", "a.root", 2500)
    status.known("B", "b.root", 1000)
    assert status.estimated_chunks() == 4  # 3 + 1
    assert published[-1]["events"] == {"done": 0, "total": 3500, "estimated": False}
    status.maxchunks = 2
    assert status.estimated_chunks() == 3  # A capped at 2


def test_status_of_20000_files_stays_cheap():
    """A snapshot after each task walks no file list: 20,000 files and 2,000 chunks take seconds, not
    the minutes that walking every file per task takes; the last snapshot is exact."""
    from types import SimpleNamespace as NS

    status = RunStatus(n_files=20_000, chunksize=1000)
    published: list[dict] = []
    status.on_update = published.append
    report = NS(task_id=1, attempts=1, peak_mb=100.0, memory_mb=500, status="ok")
    t0 = time.perf_counter()
    for i in range(20_000):
        status.known(f"ds{i % 50}", f"f{i}.root", 3000)
    for i in range(2000):
        status.processed(NS(ok=True, report=report),
                         NS(dataset=f"ds{i % 50}", filename=f"f{i}.root", entrystart=0, entrystop=1000))
    took = time.perf_counter() - t0
    assert took < 30, f"{took:.1f} s for 22,000 snapshots"
    assert len(published) == 22_000
    last = status.snapshot("done")
    assert last["events"] == {"done": 2_000_000, "total": 60_000_000, "estimated": False}
    assert last["chunks"] == {"done": 2000, "total": 60_000, "estimated": True}
