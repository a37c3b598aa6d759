"""The manager and local workers: many tasks, exceptions, wait modes, clean shutdown."""

import os
import subprocess
import sys
import time

import pytest

from hep_executor import Manager
from hep_executor.errors import ManagerClosedError, RemoteTaskError, ResourceExhaustedError, WorkerLostError
from tests.helpers import children, drain, try_assert
from tests.engine import tasks


def test_thousand_tasks_on_two_workers_all_correct():
    with Manager(local_workers=2) as m:
        assert m.wait_for_workers(2) == 2
        ids = {m.submit(tasks.square, i, category="demo"): i for i in range(1000)}
        results = drain(m)
        assert len(results) == 1000
        assert {r.id for r in results} == set(ids)
        for r in results:
            assert r.ok and r.value == ids[r.id] ** 2
            assert r.report.status == "ok" and r.report.category == "demo"
            # a Python slot holds MBs from task to task; squaring a number adds next to nothing
            assert r.report.wall >= 0 and r.report.warm_mb > 5 and 0 <= r.report.peak_mb < r.report.warm_mb
        assert len({r.report.slot for r in results}) == 2  # both workers took part


def test_task_exception_comes_back_with_traceback_and_worker_survives():
    with Manager(local_workers=1) as m:
        bad = m.submit(tasks.fail, "boom 42")
        good = m.submit(tasks.square, 3)
        results = {r.id: r for r in drain(m)}
        assert not results[bad].ok
        with pytest.raises(ValueError, match="boom 42") as info:
            results[bad].value
        assert "in fail" in info.value.remote_traceback
        assert results[good].value == 9
        assert len(m.workers()) == 1


def test_unpicklable_result_is_a_clear_error():
    with Manager(local_workers=1) as m:
        tid = m.submit(lambda: (x for x in range(3)))
        (result,) = drain(m)
        assert result.id == tid and not result.ok
        assert "generator" in str(result.error)


def test_retries_rerun_a_failing_task():
    with Manager(local_workers=1) as m:
        m.submit(tasks.fail, "always", retries=2)
        (result,) = drain(m)
        assert isinstance(result.error, ValueError)
        assert result.report.attempts == 3
        assert m.stats["retried"] == 2


def test_task_that_kills_its_worker_fails_after_three_kills():
    with Manager(local_workers=1) as m:
        m.submit(tasks.die)
        survivor = m.submit(tasks.square, 5)
        results = {r.id: r for r in drain(m, timeout=60)}
        dead = [r for r in results.values() if r.id != survivor][0]
        assert isinstance(dead.error, WorkerLostError)
        assert "3 times" in str(dead.error)
        assert "with exit code 17" in str(dead.error)
        assert results[survivor].value == 25


def test_memory_over_allocation_is_stopped_and_worker_lives():
    with Manager(local_workers=1) as m:
        big = m.submit(tasks.allocate, 600, 2.0, memory_mb=300)
        small = m.submit(tasks.allocate, 10, memory_mb=400)
        results = {r.id: r for r in drain(m, timeout=60)}
        assert isinstance(results[big].error, ResourceExhaustedError)
        assert results[big].error.limit_mb == 300
        assert results[big].error.peak_mb > 300
        assert results[small].value == 10 * 2**20
        assert len(m.workers()) == 1


def test_peak_memory_is_per_task():
    with Manager(local_workers=1) as m:
        m.submit(tasks.allocate, 300)
        (r1,) = drain(m)
        second = m.submit(tasks.allocate, 5)
        (r2,) = drain(m)
        assert 290 < r1.report.peak_mb < 330, r1.report  # the big task's own 300 MB are seen ...
        assert r2.id == second and r2.report.peak_mb < 250, r2.report  # ... and not the next one's


def _dispatch_then_let_finish(m):
    """Two 0.3 s tasks on two workers: dispatched, then both results left waiting."""
    m.wait_for_workers(2)
    for i in range(2):
        m.submit(tasks.slow_square, i, 0.3)
    early = m.wait(timeout=0.05)  # dispatches both; too soon for a result
    time.sleep(1.5)
    return early


def test_wait_retrieve_many_returns_all_waiting_results():
    with Manager(local_workers=2) as many:
        early = _dispatch_then_let_finish(many)
        got = many.wait(timeout=10)
        assert early == [] and len(got) == 2
        assert many.empty()


def test_plain_wait_returns_one_result():
    with Manager(local_workers=2, wait_retrieve_many=False) as plain:
        early = _dispatch_then_let_finish(plain)
        assert early == []
        assert len(plain.wait(timeout=10)) == 1
        assert len(plain.wait(timeout=10)) == 1
        assert plain.empty()


def test_cancel_waiting_task():
    with Manager(local_workers=0) as m:
        tid = m.submit(tasks.square, 2)
        assert m.cancel(tid)
        assert m.empty()
        assert not m.cancel(tid)


def test_close_leaves_no_child_process():
    before = {p.pid for p in children()}
    m = Manager(local_workers=2)
    assert m.wait_for_workers(2) == 2
    m.submit(tasks.slow_square, 3, 0.5)
    m.wait(timeout=0.2)
    assert len(children()) > len(before)
    m.close()
    try_assert(lambda: {p.pid for p in children()} <= before, timeout=10,
               message=f"children left: {children()}")
    with pytest.raises(ManagerClosedError):
        m.submit(tasks.square, 1)


def test_exception_in_caller_stops_workers():
    before = {p.pid for p in children()}
    with pytest.raises(RuntimeError):
        with Manager(local_workers=2) as m:
            m.wait_for_workers(2)
            raise RuntimeError("caller failed")
    try_assert(lambda: {p.pid for p in children()} <= before, timeout=10)


def test_workers_exit_when_manager_process_is_killed(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {os.getcwd()!r})\n"
        "from hep_executor import Manager\n"
        "m = Manager(local_workers=2)\n"
        "m.wait_for_workers(2)\n"
        "print(' '.join(str(w['pid']) for w in m.workers()), flush=True)\n"
        "time.sleep(60)\n")
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2
        owner.kill()
        owner.wait()
        import psutil

        def gone():
            return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                           for p in pids)
        try_assert(gone, timeout=15, message="workers outlived their manager")
    finally:
        if owner.poll() is None:
            owner.kill()


def test_remote_error_without_picklable_exception():
    with Manager(local_workers=1) as m:
        m.submit(tasks.fail_unpicklable, "holds a lock")
        (r,) = drain(m)
        assert type(r.error) is RemoteTaskError, repr(r.error)
        assert "HoldsALock: holds a lock" in str(r.error)
        assert "in fail_unpicklable" in r.error.traceback_text


def test_workers_outlive_a_pause_of_the_caller():
    with Manager(local_workers=1, heartbeat_interval=0.2, heartbeat_timeout=1.0) as m:
        assert m.wait_for_workers(1) == 1
        pid = m.workers()[0]["pid"]
        time.sleep(3.0)  # the caller does something else: no wait() calls, no heartbeats sent
        m.submit(tasks.square, 6)
        (r,) = drain(m)
        assert r.value == 36
        assert [w["pid"] for w in m.workers()] == [pid]


def test_affinity_sends_a_key_back_to_the_worker_that_ran_it():
    with Manager(local_workers=2) as m:
        m.wait_for_workers(2)
        # one task per key, at once: each worker gets one and remembers its key
        first = {m.submit(tasks.pid_after, 0.3, affinity=key): key for key in ("a", "b")}
        home = {first[r.id]: r.value for r in drain(m)}
        assert len(set(home.values())) == 2
        ids = {m.submit(tasks.pid_after, 0.05, affinity=key): key for key in ["a", "b"] * 20}
        results = drain(m)
        at_home = sum(r.value == home[ids[r.id]] for r in results)
        # without the hint a free worker takes the next in line: about half would run away from home
        assert len(results) == 40 and at_home >= 34, at_home
