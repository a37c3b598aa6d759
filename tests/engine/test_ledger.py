"""What the manager keeps: functions only while tasks use them, report totals, a journal, bounded waits."""

import json

from hep_executor import Manager
from hep_executor.engine import FunctionStore
from tests.engine import tasks
from tests.helpers import drain


def test_function_store_forgets_a_function_after_its_last_task():
    store = FunctionStore()
    h = store.add(tasks.square)
    assert store.add(tasks.square) == h and len(store) == 1
    store.release(h)
    assert store[h]  # one task still calls it
    store.release(h)
    assert len(store) == 0
    assert store.add(tasks.square) == h and store[h]  # submitted again: stored again


def test_manager_evicts_functions_no_task_refers_to_and_keeps_running():
    with Manager(local_workers=1) as m:
        for round_ in range(3):
            fn = eval(f"lambda x: x + {round_}")  # a new function every round
            ids = [m.submit(fn, i) for i in range(5)]
            results = drain(m)
            assert sorted((r.id, r.value) for r in results) == [(t, i + round_) for i, t in enumerate(ids)]
            assert len(m._functions) == 0
        cancelled = m.submit(tasks.slow_square, 1, 5.0)
        assert len(m._functions) == 1
        m.cancel(cancelled)
        assert len(m._functions) == 0


def test_wait_max_results_bounds_each_call():
    with Manager(local_workers=2) as m:
        ids = {m.submit(tasks.square, i) for i in range(40)}
        got = []
        while len(got) < 40:
            batch = m.wait(timeout=10, max_results=7)
            assert 1 <= len(batch) <= 7
            got += batch
        assert {r.id for r in got} == ids and m.empty()


def test_journal_holds_every_report_and_the_manager_only_totals(tmp_path):
    journal = tmp_path / "reports.jsonl"
    with Manager(local_workers=1, journal=str(journal)) as m:
        for i in range(10):
            m.submit(tasks.square, i, category="demo")
        m.submit(tasks.fail, "no", category="bad")
        drain(m)
        totals = m.reports.summary
        assert (totals["demo"].tasks, totals["demo"].ok) == (10, 10)
        assert (totals["bad"].tasks, totals["bad"].ok) == (1, 0)
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(lines) == 11
    assert sorted(line["task_id"] for line in lines) == list(range(1, 12))
    assert {line["status"] for line in lines} == {"ok", "error"}
