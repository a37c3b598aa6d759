"""The manager's task/worker table, without sockets."""

from hep_executor.engine import TaskState, TaskTable, WorkerRecord


def _worker(name=b"w1", cores=2, memory=1000):
    return WorkerRecord(name, name.decode(), "host", 1, cores, memory, 0)


def test_assign_and_finish_track_resources():
    table = TaskTable()
    w = _worker()
    table.add_worker(w)
    t = table.add("f", b"", cores=1, memory_mb=400)
    assert table.waiting.popleft() is t
    table.assign(t, w)
    assert (w.used_cores, w.used_memory_mb) == (1, 400)
    assert table.n_dispatched == 1
    assert table.finish(t.id) is t
    assert (w.used_cores, w.used_memory_mb) == (0, 0)
    assert table.empty()
    assert table.finish(t.id) is None  # a second result for the same task is ignored


def test_fits_respects_cores_and_memory():
    w = _worker(cores=2, memory=1000)
    table = TaskTable()
    table.add_worker(w)
    a = table.add("f", b"", cores=1, memory_mb=600)
    b = table.add("f", b"", cores=1, memory_mb=600)
    table.waiting.clear()
    table.assign(a, w)
    assert not w.fits(b)
    assert w.could_ever_fit(b)


def test_worker_loss_requeues_then_fails_after_max_kills():
    table = TaskTable(max_worker_kills=3)
    t = table.add("f", b"")
    table.waiting.clear()
    for kill in range(1, 4):
        w = _worker(name=f"w{kill}".encode())
        table.add_worker(w)
        if t in table.waiting:
            table.waiting.remove(t)
        table.assign(t, w)
        requeued, failed = table.remove_worker(w.identity)
        if kill < 3:
            assert requeued == [t] and not failed
            assert t.state is TaskState.WAITING and t in table.waiting
        else:
            assert failed == [t] and not requeued
            assert t.state is TaskState.FAILED
    assert t.worker_kills == 3
    assert table.empty()


def test_graceful_leave_does_not_count_as_kill():
    table = TaskTable()
    w = _worker()
    table.add_worker(w)
    t = table.add("f", b"")
    table.waiting.clear()
    table.assign(t, w)
    table.remove_worker(w.identity, counts_as_kill=False)
    assert t.worker_kills == 0 and t.state is TaskState.WAITING


def test_retry_uses_up_retries():
    table = TaskTable()
    w = _worker()
    table.add_worker(w)
    t = table.add("f", b"", retries=1)
    table.waiting.clear()
    table.assign(t, w)
    assert table.retry(t.id)
    assert t.retries == 0 and t.state is TaskState.WAITING and w.used_cores == 0
    table.waiting.clear()
    table.assign(t, w)
    assert not table.retry(t.id)


def test_cancel_waiting_and_dispatched():
    table = TaskTable()
    w = _worker()
    table.add_worker(w)
    a = table.add("f", b"")
    b = table.add("f", b"")
    table.waiting.remove(b)
    table.assign(b, w)
    assert table.cancel(a.id) is a and a not in table.waiting
    assert table.cancel(b.id) is b and w.used_cores == 0
    assert table.cancel(12345) is None
    assert table.empty()


def test_task_killed_worker_counts():
    table = TaskTable(max_worker_kills=2)
    w = _worker()
    table.add_worker(w)
    t = table.add("f", b"")
    table.waiting.clear()
    table.assign(t, w)
    assert table.task_killed_worker(t.id) == ("requeued", t)
    table.waiting.clear()
    table.assign(t, w)
    assert table.task_killed_worker(t.id) == ("failed", t)


def test_worker_remembers_recent_affinity_keys_per_core():
    table = TaskTable(affinity_keys=2)
    w = _worker(cores=1, memory=0)
    table.add_worker(w)
    for key in ["a", "b", "a", "c", None]:
        task = table.add("f", b"", affinity=key)
        table.waiting.clear()
        table.assign(task, w)
        table.finish(task.id)
    # two keys per core, the most recent kept ("a" was used again after "b")
    assert list(w.affinity) == ["a", "c"]
    assert table.add("f", b"", affinity="c").wire()["affinity"] == "c"
    assert "affinity" not in table.add("f", b"").wire()


def test_a_workers_warm_memory_is_kept_free_but_an_idle_worker_takes_a_task_its_memory_holds():
    table = TaskTable()
    worker = _worker(cores=4, memory=1000)
    table.add_worker(worker)
    worker.warm_mb = 300
    whole = table.add("f", b"", memory_mb=1000)
    assert worker.fits(whole)  # idle: the worker keeps the task within what its warm slots leave
    first = table.add("f", b"", memory_mb=400)
    table.assign(first, worker)
    assert worker.fits(table.add("f", b"", memory_mb=300))  # 400 + 300 + 300 warm
    assert not worker.fits(table.add("f", b"", memory_mb=301))
