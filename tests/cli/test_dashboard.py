"""The live dashboard: ``hep-executor run --dashboard`` serves a page and /status.json on
127.0.0.1 whose numbers change while the run goes on; ``hep-executor status`` prints them;
a headless Chromium loads the page and its screenshot lands in the run folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hep_executor.analysis import Dashboard
from hep_executor.cli import fetch_status, format_status
from hep_executor.cli.main import main as cli_main
from tests.cli.test_cli_run import REPO, write_processor
from tests.helpers import try_assert

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_dashboard_serves_what_is_published():
    board = Dashboard()
    try:
        assert board.url.startswith("http://127.0.0.1:")
        board.publish({"state": "running", "files": {"done": 1, "total": 2}, "elapsed_s": 1.0})
        assert fetch_status(board.url)["files"] == {"done": 1, "total": 2}
        board.publish({"state": "done", "files": {"done": 2, "total": 2}})
        assert fetch_status(board.url.removeprefix("http://"))["files"]["done"] == 2
        page = urllib.request.urlopen(board.url, timeout=5).read().decode()
        assert "status.json" in page and "<table" in page
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(board.url + "nothing", timeout=5)
        assert info.value.code == 404
    finally:
        board.close()


def test_status_of_nothing_names_the_address(capsys):
    assert cli_main(["status", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:9" in err and len(err.strip().splitlines()) == 1


def _screenshot(url: str, png: Path) -> None:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png}", "--window-size=1100,900", "--virtual-time-budget=4000", url],
                   check=True, capture_output=True, timeout=120)


def _snapshot(events_done: int) -> dict:
    return {"state": "running", "elapsed_s": 1.0, "events_per_s": 10.0, "eta_s": 5.0,
            "files": {"done": 1, "total": 1}, "chunks": {"done": 1, "total": 4, "estimated": True},
            "events": {"done": events_done, "total": 4000}, "failed": 0, "retries": 0,
            "workers": [{"name": "worker 1", "host": "vm", "busy": 1, "cores": 3, "memory_mb": 2000}],
            "chunk_sizes": {"ttbar": {"last": 400, "chunks": 3, "history": [[0.5, 100], [1.0, 200], [2.0, 400]]}},
            "recent_tasks": []}


@pytest.mark.skipif(not CHROMIUM, reason="no chromium on PATH (tests/run.sh installs Debian's chromium when root)")
def test_page_refreshes_its_numbers_every_second(caplog):
    """The page fetches /status.json on a timer: numbers published after its first fetch show up."""
    board = Dashboard()
    fetches = []

    class Count(logging.Handler):
        def emit(self, record):
            if "GET /status.json" in record.getMessage():
                fetches.append(record)
                board.publish(_snapshot(1111 * len(fetches)))  # each fetch is answered before this

    counter = Count()
    logger = logging.getLogger("hep_executor.analysis._dashboard")
    logger.addHandler(counter)
    try:
        with caplog.at_level(logging.DEBUG, logger="hep_executor.analysis._dashboard"):
            board.publish(_snapshot(0))
            dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--lang=en-US", "--dump-dom",
                                  "--virtual-time-budget=5000", board.url],
                                 check=True, capture_output=True, text=True, timeout=120).stdout
    finally:
        logger.removeHandler(counter)
        board.close()
    # one fetch at load, then one a second: 5 s of page time make at least 4
    assert len(fetches) >= 4, len(fetches)
    shown = f"<td>events</td><td>{1111 * (len(fetches) - 1):,}</td>"
    assert shown in dom, dom[-800:]
    assert "<td>worker 1</td><td>vm</td><td>1</td><td>2</td>" in dom  # busy and idle slots
    assert '<polyline fill="none" stroke="#1f77b4" points="0.0,' in dom  # the chunk size over time, drawn


def test_run_dashboard_numbers_change_and_page_loads(sample_files, tmp_path):
    marker = tmp_path / "started"
    write_processor(tmp_path, "cli_dash", "Dash", marker=str(marker), sleep=0.5)
    (tmp_path / "fs.json").write_text(json.dumps({"ttbar": [str(sample_files["good"])]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "hep_executor.cli.main", "run", "--fileset", "fs.json",
                             "--processor", "cli_dash:Dash", "--workers", "1", "--chunksize", "100",
                             "--no-progress", "--dashboard"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "hep-executor-runs"
    try:
        try_assert(lambda: any(runs.glob("*/dashboard.url")), timeout=60, message="no dashboard.url")
        url = next(runs.glob("*/dashboard.url")).read_text().strip()
        try_assert(marker.exists, timeout=120, message="the processor never started")
        first = fetch_status(url)
        try_assert(lambda: fetch_status(url)["events"]["done"] > first["events"]["done"] + 100, timeout=60,
                   message="the dashboard's events never moved")
        second = fetch_status(url)
        assert second["files"] == {"done": 1, "total": 1}
        assert second["events"]["total"] == 2000 and second["chunks"]["total"] == 20
        assert second["workers"] and second["workers"][0]["name"] == "worker 1"
        assert second["chunk_sizes"]["ttbar"]["last"] == 100
        assert any(t["peak_mb"] > 0 for t in second["recent_tasks"])
        lines = format_status(second)
        assert lines[0].startswith("run running: files 1/1, chunks ")
        run_dir = next(runs.glob("*/dashboard.url")).parent
        if CHROMIUM:
            _screenshot(url, run_dir / "dashboard.png")
            assert (run_dir / "dashboard.png").stat().st_size > 10_000
        proc.communicate(timeout=180)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if not CHROMIUM:
        pytest.skip("no chromium on PATH (tests/run.sh installs Debian's chromium when root): "
                    "the page was checked over HTTP only, no screenshot")


def test_cli_status_prints_a_running_dashboard(capsys):
    board = Dashboard()
    try:
        board.publish({"state": "running", "elapsed_s": 3.0, "events_per_s": 1234.0, "eta_s": 8.0,
                       "files": {"done": 6, "total": 6}, "chunks": {"done": 3, "total": 6, "estimated": True},
                       "events": {"done": 9000, "total": 18000}, "failed": 0, "retries": 1,
                       "workers": [{"name": "worker 1", "host": "vm", "busy": 1, "cores": 1}],
                       "chunk_sizes": {"ttbar": {"last": 3000, "chunks": 2}}, "recent_tasks": []})
        assert cli_main(["status", board.url]) == 0
    finally:
        board.close()
    out = capsys.readouterr().out
    assert "run running: files 6/6, chunks 3/~6, events 9,000/18,000" in out
    assert "1,234 events/s, ETA 8 s" in out and "worker 1" in out and "chunk 3,000 events" in out
