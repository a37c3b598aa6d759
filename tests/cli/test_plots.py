"""Tests of the run report plots (hep_executor.cli._plots)."""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from hep_executor.cli.main import main as cli_main
from hep_executor.errors import ConfigError
from hep_executor.cli import report_main, write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CATEGORIES = ("process:ttbar", "process:ttH_EFT", "process:data")
T0 = 1_795_814_194.0


def _task(task_id, category, *, slot, started, events, wall, peak, status="ok", memory_mb=4000):
    return {"task_id": task_id, "category": category, "kind": category.split(":")[0], "status": status,
            "wall": wall, "cpu": 0.9 * wall, "peak_mb": peak, "cores": 1, "memory_mb": memory_mb,
            "slot": slot, "host": "node1", "started": started, "attempts": 1, "result_bytes": 1200,
            "events": events}


def make_report() -> dict:
    """A report like analysis.run writes: three categories, an exhausted task, merges."""
    tasks, chunk_history, allocation_history = [], [], []
    seq = 0
    for i in range(18):
        category = CATEGORIES[i % 3]
        events = 1000 * (1 + i // 3)
        seq += 1
        status = "exhausted" if i == 10 else "ok"
        k = 1 + i % 3  # each category its own cost per event
        peak = 100.0 + 0.02 * k * events + i
        allocated = 4000 if i < 3 else 300 + 40 * i
        tasks.append(_task(i, category, slot=f"w{i % 2}/{i % 3 % 2}", started=T0 + 0.4 * i,
                           events=events, wall=0.05 + 5e-5 * k * events, peak=peak, status=status,
                           memory_mb=allocated))
        allocation_history.append([seq, category, allocated, peak])
        if i % 4 == 0:
            chunk_history.append([seq, category, 1000 * (2 + i) // k])
    tasks.append(_task(18, "preprocess", slot="w0/0", started=T0 - 1.0, events=0, wall=0.5, peak=90.0))
    tasks.append(_task(19, "accumulate", slot="w1/0", started=T0 + 8.0, events=0, wall=0.1, peak=150.0))
    tasks.append(_task(20, "accumulate", slot="w1/1", started=T0 + 8.2, events=0, wall=0.1, peak=160.0,
                       status="lost"))
    sizing = {c: {"size": 16000 // k, "n_reports": 6, "n_failed": 0,
                  "wall_time": {"intercept": 0.05, "slope": 5e-5 * k},
                  "memory": {"intercept": 100.0, "slope": 0.02 * k}} for k, c in enumerate(CATEGORIES, 1)}
    return {
        "files": [{"dataset": "ttbar", "file": "/data/ttbar_0.root", "entries": 21000,
                   "uuid": "ccfb3e2e", "ranges": [[0, 21000]]}],
        "skipped": [],
        "tasks": tasks,
        "totals": {"events": 63000, "files": 3, "chunks": 18, "merges": 2, "wall_s": 9.0},
        "sizing": sizing,
        "chunk_history": chunk_history,
        "allocation": {c: {"mode": "auto", "observations": 6, "exhausted": int(c == "process:ttH_EFT")}
                       for c in CATEGORIES},
        "allocation_history": allocation_history,
        "coverage_ok": True,
        "config": {"chunking": {"chunksize": None, "targets": {"wall_time": 2.0, "memory": 1000.0}}},
    }


def assert_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, f"{path} is only {len(data)} bytes"


def test_write_plots_writes_all_four(tmp_path):
    written = write_plots(make_report(), tmp_path / "plots")
    assert set(written) == {"chunksize", "task_model", "allocation", "timeline"}
    for name, path in written.items():
        assert path == str(tmp_path / "plots" / f"{name}.png")
        assert_png(path)


def test_without_sizing_or_allocation_only_timeline(tmp_path, caplog):
    report = make_report()
    for key in ("sizing", "chunk_history", "allocation", "allocation_history", "config"):
        del report[key]
    with caplog.at_level(logging.INFO, logger="hep_executor.cli._plots"):
        written = write_plots(report, tmp_path)
    assert list(written) == ["timeline"]
    assert_png(written["timeline"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timeline.png"]
    assert "chunksize.png not written" in caplog.text


def test_empty_report_writes_nothing(tmp_path):
    assert write_plots({"tasks": []}, tmp_path) == {}
    assert list(tmp_path.iterdir()) == []


def test_report_main_default_out_is_beside_report(tmp_path, capsys):
    run_json = tmp_path / "RUN.json"
    run_json.write_text(json.dumps(make_report()))
    assert report_main(argparse.Namespace(report_file=str(run_json), out=None)) == 0
    printed = capsys.readouterr().out
    for name in ("chunksize", "task_model", "allocation", "timeline"):
        assert_png(tmp_path / f"{name}.png")
        assert f"{name}: {tmp_path / name}.png" in printed


def test_report_main_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="nope.json"):
        report_main(argparse.Namespace(report_file=str(missing), out=None))


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_report_main_not_a_report_names_it(tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ConfigError, match="bad.json"):
        report_main(argparse.Namespace(report_file=str(bad), out=str(tmp_path / "out")))


def test_cli_report_missing_file_exit_code_2(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "RUN.json"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "RUN.json" in err
    assert len(err.strip().splitlines()) == 1


def test_malformed_section_skips_only_its_plot(tmp_path, caplog):
    report = make_report()
    report["chunk_history"] = [["not", "a"]]
    with caplog.at_level(logging.WARNING, logger="hep_executor.cli._plots"):
        written = write_plots(report, tmp_path)
    assert set(written) == {"task_model", "allocation", "timeline"}
    assert "chunksize.png not written" in caplog.text
