"""Worker and slot pipes: big arguments and big results of short tasks never deadlock."""

import os

from hep_executor import Manager
from tests.engine import tasks
from tests.helpers import drain


def test_short_tasks_with_big_arguments_and_results_complete():
    with Manager(local_workers=1) as m:
        assert m.wait_for_workers(1) == 1
        for i in range(60):  # short tasks first: the worker then queues a second task on a busy slot
            m.submit(tasks.square, i)
        drain(m)
        ids = [m.submit(tasks.random_bytes, os.urandom(2**20), 2**20) for _ in range(20)]
        results = drain(m, timeout=30)  # a worker stuck writing to a slot writing back hangs here
        assert sorted(r.id for r in results) == ids
        assert all(r.ok and len(r.value) == 2**20 for r in results)


def test_a_slot_whose_worker_is_already_gone_ends_at_once():
    import multiprocessing

    from hep_executor.engine import slot_main

    ctx = multiprocessing.get_context("fork")
    worker_end, slot_end = ctx.Pipe(duplex=True)
    # the pid it is told is its worker's is not its parent's: the worker died before the slot ran
    proc = ctx.Process(target=slot_main, args=(slot_end, 0, 1, worker_end), daemon=True)
    proc.start()
    proc.join(timeout=10)
    assert proc.exitcode == 0
    worker_end.close()
    slot_end.close()


def test_a_result_waiting_in_the_pipe_is_taken_before_a_memory_kill_on_a_stale_sample(monkeypatch):
    """A sample taken while the task was at its peak says it is over its allocation, but the task
    has finished and its result waits in the pipe: the worker files the result and kills nothing."""
    import pickle

    import cloudpickle

    from hep_executor.engine import worker as worker_module
    from hep_executor.engine.worker import Worker

    worker = Worker("tcp://127.0.0.1:1", b"k" * 32, cores=1, memory_mb=4000)
    worker.slots = [worker._start_slot(0)]
    try:
        item = {"id": 1, "fn": "f", "cores": 1, "memory_mb": 50, "category": "c"}
        args = pickle.dumps(((100,), {"hold": 0.0}))
        worker.state.tasks_arrived({"f": cloudpickle.dumps(tasks.allocate)}, [(item, args)])
        worker._feed_slots()
        conn = worker.slots[0].conn
        assert conn.poll(10)
        kind, warm = pickle.loads(conn.recv_bytes())  # the slot says its warm memory, then runs
        assert kind == "warm"
        worker.state.slot_warm(0, warm)
        assert conn.poll(10)  # the task is done: its result waits, unread
        monkeypatch.setattr(worker_module.monitor, "rss_mb", lambda pid: warm + 100.0)  # a stale sample of its peak
        worker._enforce_limits()
        assert worker.slots[0].proc.is_alive()  # not killed
        worker._process_slot_results({conn.fileno()})
        ((result, _),) = worker.state.outbox
        assert result["id"] == 1 and result["status"] == "ok", result
        assert 90 < result["peak_mb"] < 150  # the task's own 100 MB, over its 50 MB: it was a close call
    finally:
        worker._stop_slots()
