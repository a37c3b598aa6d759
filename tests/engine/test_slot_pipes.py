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
