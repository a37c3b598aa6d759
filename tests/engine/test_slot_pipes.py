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
