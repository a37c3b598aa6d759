"""The run report's task rows: the first ``keep_tasks`` in memory, every one in the task log, totals of all."""

import json

from hep_executor import run
from hep_executor.analysis import TaskRows
from hep_executor.engine import TaskReport
from tests.analysis.simple_processor import MuonPtProcessor


def _lines(path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def test_rows_past_the_cap_are_only_in_the_log(tmp_path):
    rows = TaskRows(tmp_path / "log.jsonl", keep=3)
    for i in range(7):
        rows.add(TaskReport(i, "process:ttbar", "ok" if i != 4 else "error", wall=0.5, cpu=0.25, peak_mb=10.0 + i),
                 events=100, file=f"f{i}.root")
    rows.add(TaskReport(7, "accumulate", "ok", wall=0.1))
    rows.close()
    assert [r["task_id"] for r in rows.rows] == [0, 1, 2]
    assert rows.left_out == 5
    assert [r["task_id"] for r in _lines(tmp_path / "log.jsonl")] == list(range(8))
    assert rows.describe()["task_summary"] == {
        "process:ttbar": {"kind": "process", "tasks": 7, "ok": 6, "wall_s": 3.5, "cpu_s": 1.75, "events": 600,
                          "peak_mb": 16.0},
        "accumulate": {"kind": "accumulate", "tasks": 1, "ok": 1, "wall_s": 0.1, "cpu_s": 0.0, "events": 0,
                       "peak_mb": 0.0}}


def test_run_keeps_the_first_rows_and_logs_all(samples, manager, tmp_path):
    task_log = tmp_path / "tasks.jsonl"
    capped = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=False,
                 task_log=task_log, keep_tasks=5)
    whole = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=False)
    logged = _lines(task_log)
    assert len(whole.report["tasks"]) == len(logged) == 6 + 18 + capped.report["totals"]["merges"]
    assert capped.report["tasks"] == logged[:5]
    assert capped.report["tasks_left_out"] == len(logged) - 5
    assert capped.report["task_log"] == str(task_log)
    assert whole.report["tasks_left_out"] == 0 and whole.report["task_log"] is None
    summary = capped.report["task_summary"]
    assert sum(t["tasks"] for t in summary.values()) == len(logged)
    assert {c: t["events"] for c, t in summary.items() if t["kind"] == "process"} \
        == {f"process:{d}": n for d, n in capped.output["events"].items()}
    assert capped.report["totals"]["preprocess_tasks"] == 6


def test_default_log_under_the_cache_directory_holds_every_row(samples, manager, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    small = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=False)
    assert not (tmp_path / "home" / "hep-executor" / "runs").exists()  # under the cap: no file
    result = run(samples, MuonPtProcessor(), manager=manager, chunksize=1000, metadata_cache=False, keep_tasks=4)
    (path,) = (tmp_path / "home" / "hep-executor" / "runs").iterdir()
    assert result.report["task_log"] == str(path)
    logged = _lines(path)
    assert len(logged) == len(result.report["tasks"]) + result.report["tasks_left_out"] == len(small.report["tasks"])
    assert logged[:4] == result.report["tasks"]
    assert sorted(r["kind"] for r in logged) == sorted(r["kind"] for r in small.report["tasks"])
