"""Who is blamed when a worker dies, and what cancel() touches."""

import time

from hep_executor import Manager
from hep_executor.engine import TaskState, TaskTable, WorkerRecord
from hep_executor.errors import WorkerLostError
from tests.engine import tasks
from tests.helpers import drain


def _warm(m, n=60):
    """Run short tasks so that manager and worker prefetch behind a running task."""
    for i in range(n):
        m.submit(tasks.square, i, category="short")
    drain(m)


def test_worker_death_blames_only_the_running_task():
    table = TaskTable(max_worker_kills=1)
    worker = WorkerRecord(b"w", "w", "h", 1, 1, 1000, 0)
    table.add_worker(worker)
    running, queued = table.add("f", b""), table.add("f", b"")
    table.waiting.clear()
    table.assign(running, worker)
    table.assign(queued, worker)
    table.note_running(worker, [running.id])
    requeued, failed = table.remove_worker(worker.identity)
    assert failed == [running] and requeued == [queued]
    assert queued.worker_kills == 0 and queued.state is TaskState.WAITING


def test_worker_death_without_a_report_blames_the_oldest_per_core():
    table = TaskTable(max_worker_kills=1)
    worker = WorkerRecord(b"w", "w", "h", 1, 1, 1000, 0)
    table.add_worker(worker)
    first, second = table.add("f", b""), table.add("f", b"")
    table.waiting.clear()
    table.assign(first, worker)
    table.assign(second, worker)
    requeued, failed = table.remove_worker(worker.identity)
    assert failed == [first] and requeued == [second]


def test_prefetched_task_survives_a_task_that_kills_its_worker():
    with Manager(local_workers=1, max_worker_kills=1) as m:
        assert m.wait_for_workers(1) == 1
        _warm(m)
        killer = m.submit(tasks.kill_own_worker, category="short")
        behind = [m.submit(tasks.square, i, category="short") for i in range(5)]
        results = {r.id: r for r in drain(m, timeout=90)}
        assert isinstance(results[killer].error, WorkerLostError), results[killer]
        assert "1 times" in str(results[killer].error)
        assert [results[i].value for i in behind] == [i * i for i in range(5)]


def test_cancel_of_a_prefetched_task_leaves_the_running_one_alone(tmp_path):
    marks = tmp_path / "marks"
    with Manager(local_workers=1) as m:
        assert m.wait_for_workers(1) == 1
        _warm(m)
        long = m.submit(tasks.mark_and_sleep, str(marks), 1.5, category="short")
        queued = m.submit(tasks.square, 3, category="short")
        deadline = time.monotonic() + 10
        while not marks.exists() and time.monotonic() < deadline:
            m.wait(timeout=0.05)
        assert marks.exists(), "the long task did not start"
        assert m.cancel(queued)
        results = drain(m, timeout=30)
        assert [r.id for r in results] == [long] and results[0].ok
        assert marks.read_text() == "start\n", "the running task was restarted by the cancel"


def test_cancel_of_a_running_task_stops_it_and_the_worker_runs_the_next(tmp_path):
    marks = tmp_path / "marks"
    with Manager(local_workers=1) as m:
        assert m.wait_for_workers(1) == 1
        victim = m.submit(tasks.mark_and_sleep, str(marks), 30)
        deadline = time.monotonic() + 10
        while not marks.exists() and time.monotonic() < deadline:
            m.wait(timeout=0.05)
        assert m.cancel(victim)
        t0 = time.monotonic()
        after = m.submit(tasks.square, 4)
        (r,) = drain(m, timeout=20)
        assert r.id == after and r.value == 16
        assert time.monotonic() - t0 < 15, "the cancelled task was not stopped"
        assert m.stats["cancelled"] == 1
