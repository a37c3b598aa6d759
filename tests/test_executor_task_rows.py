"""HepExecutor's task rows under coffea's Runner and run_uproot_job: the first ``keep_tasks`` kept, all logged."""

import json

from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hep_executor import HepExecutor, run_uproot_job
from tests.analysis.simple_processor import MuonPtProcessor

CHUNKS = 18  # 6 sample files of 3000 events at chunksize 1000


def _lines(path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def _check(report: dict, logged: list[dict], output: dict, keep: int) -> None:
    """The report keeps the first ``keep`` of the logged rows and counts all of them right."""
    merges = sum(r["kind"] == "accumulate" for r in logged)
    assert len(logged) == 6 + CHUNKS + merges and merges >= 1
    assert report["tasks"] == logged[:keep]
    assert report["tasks_left_out"] == len(logged) - keep
    summary = report["task_summary"]
    assert sum(t["tasks"] for t in summary.values()) == len(logged)
    assert summary["preprocess"]["tasks"] == 6
    assert {c: t["events"] for c, t in summary.items() if t["kind"] == "process"} \
        == {f"process:{d}": n for d, n in output["events"].items()}
    assert sum(t["tasks"] for t in summary.values() if t["kind"] == "process") == CHUNKS


def test_runner_keeps_the_first_rows_and_logs_all(samples, manager, tmp_path):
    task_log, transactions = tmp_path / "tasks.jsonl", tmp_path / "transactions.jsonl"
    ex = HepExecutor(manager=manager, status=False, dynamic=False, metadata_cache=False, task_log=str(task_log),
                     keep_tasks=5, transactions_log=str(transactions))
    run = processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1000, metadata_cache={})
    out = run(samples, treename="Events", processor_instance=MuonPtProcessor())
    first = _lines(task_log)
    _check(ex.task_report, first, out, keep=5)
    assert ex.task_report["task_log"] == str(task_log)
    assert _lines(transactions) == first  # every row, not only the kept ones

    again = processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1000, metadata_cache={})
    out = again(samples, treename="Events", processor_instance=MuonPtProcessor())
    second = _lines(task_log)[len(first):]  # the log grows; the report is the second run's alone
    _check(ex.task_report, second, out, keep=5)
    assert _lines(transactions) == first + second


def test_runner_under_the_cap_keeps_every_row_and_writes_no_file(samples, manager, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    ex = HepExecutor(manager=manager, status=False, dynamic=False, metadata_cache=False)
    out = processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1000, metadata_cache={})(
        samples, treename="Events", processor_instance=MuonPtProcessor())
    report = ex.task_report
    _check(report, report["tasks"], out, keep=len(report["tasks"]))
    assert report["task_log"] is None and not (tmp_path / "home" / "hep-executor" / "runs").exists()


def test_runner_past_the_cap_writes_the_default_log(samples, manager, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    ex = HepExecutor(manager=manager, status=False, dynamic=False, metadata_cache=False, keep_tasks=4)
    out = processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1000, metadata_cache={})(
        samples, treename="Events", processor_instance=MuonPtProcessor())
    (path,) = (tmp_path / "home" / "hep-executor" / "runs").iterdir()
    assert ex.task_report["task_log"] == str(path)
    _check(ex.task_report, _lines(path), out, keep=4)


def test_run_uproot_job_keeps_the_first_rows_and_logs_all(samples, manager, tmp_path):
    task_log, transactions = tmp_path / "tasks.jsonl", tmp_path / "transactions.jsonl"
    ex = HepExecutor(manager=manager, status=False, dynamic=False, metadata_cache=False,
                     transactions_log=str(transactions))
    out, metrics = run_uproot_job(samples, "Events", MuonPtProcessor(), executor=ex,
                                  executor_args={"schema": NanoAODSchema, "savemetrics": True, "keep_tasks": 5},
                                  chunksize=1000, task_log=str(task_log))
    logged = _lines(task_log)
    _check(ex.task_report, logged, out, keep=5)
    assert metrics["tasks_left_out"] == len(logged) - 5 and metrics["task_log"] == str(task_log)
    assert metrics["task_summary"] == ex.task_report["task_summary"]
    assert metrics["events"] == sum(out["events"].values())
    assert _lines(transactions) == logged
