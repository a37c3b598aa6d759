"""The worker's rules without sockets or processes: feeding slots, cancels, blame, limits."""

from hep_executor.engine import Stop, WorkerState, Write


def _task(tid, fn="f1", **extra):
    return ({"id": tid, "fn": fn, "cores": 1, "memory_mb": 0, "category": "c", **extra}, b"args%d" % tid)


def _report(tid, index, wall=0.5, payload=b"value", peak=10.0, warm=0.0):
    return (tid, "ok", payload, False, wall, wall, peak, "", "", 100.0, 1234, index, warm)


def _state(cores=2, tasks=(), wall=1.0):
    state = WorkerState("w1", "node1", cores)
    state.ewma_wall = wall
    state.tasks_arrived({"f1": b"FN1", "f2": b"FN2"}, list(tasks))
    return state


def _task_ids(writes):
    return {w.index: [m[1] for m in w.messages if m[0] == "task"] for w in writes}


def test_each_idle_slot_gets_one_task_and_each_function_once():
    state = _state(tasks=[_task(i) for i in range(1, 6)])
    writes = state.feed(now=0.0)
    assert _task_ids(writes) == {0: [1], 1: [2]}
    assert all(w.messages[0] == ("fn", "f1", b"FN1") for w in writes)
    assert state.feed(now=0.1) == []  # both busy, tasks long: nothing written behind them
    state.slot_result(0, _report(1, 0), now=1.0)
    (again,) = state.feed(now=1.0)
    assert again == Write(0, [("task", 3, "f1", b"args3")])  # the function is there already


def test_short_tasks_get_one_more_queued_behind_and_never_two():
    state = _state(cores=1, tasks=[_task(i) for i in range(1, 6)], wall=0.001)
    assert _task_ids(state.feed(now=0.0)) == {0: [1, 2]}
    assert state.feed(now=0.0) == []
    state.slot_result(0, _report(1, 0, wall=0.001), now=0.01)
    assert _task_ids(state.feed(now=0.01)) == {0: [3]}


def test_cancel_of_a_queued_task_forgets_it_and_restarts_nothing():
    state = _state(cores=1, tasks=[_task(1), _task(2), _task(3)])
    state.feed(now=0.0)
    assert state.cancel({2}) == []
    assert [item["id"] for item, _ in state.queue] == [3]


def test_cancel_of_a_task_behind_the_running_one_drops_its_result_only():
    state = _state(cores=1, tasks=[_task(1), _task(2)], wall=0.001)
    state.feed(now=0.0)
    assert state.cancel({2}) == []  # task 1 runs on undisturbed
    state.slot_result(0, _report(1, 0), now=0.1)
    state.slot_result(0, _report(2, 0), now=0.2)
    items, _, _ = state.flush()
    assert [i["id"] for i in items] == [1]


def test_cancel_of_the_running_task_restarts_its_slot_and_requeues_the_one_behind():
    state = _state(cores=1, tasks=[_task(1), _task(2), _task(3)], wall=0.001)
    state.feed(now=0.0)
    assert state.cancel({1}) == [0]
    assert [item["id"] for item, _ in state.queue] == [2, 3]
    (write,) = state.feed(now=0.5)
    assert write.messages[0] == ("fn", "f1", b"FN1")  # a fresh slot needs the function again


def test_a_slot_death_blames_only_the_running_task_and_requeues_the_prefetched_one():
    state = _state(cores=1, tasks=[_task(1), _task(2)], wall=0.001)
    state.feed(now=0.0)
    assert state.flush()[2] == [1]  # the manager learns which task runs
    state.slot_died(0, "lost", "the task's process ended by signal SIGKILL")
    items, payloads, running = state.flush()
    assert [(i["id"], i["status"]) for i in items] == [(1, "lost")]
    assert "SIGKILL" in items[0]["error"] and items[0]["slot"] == "w1/0" and payloads == [b""]
    assert running == []
    assert [item["id"] for item, _ in state.queue] == [2]


def test_running_tasks_are_sent_only_when_they_change():
    state = _state(cores=2, tasks=[_task(1), _task(2)])
    state.feed(now=0.0)
    assert state.flush() == ([], [], [1, 2])
    assert state.flush() is None
    state.slot_result(1, _report(2, 1), now=1.0)
    items, payloads, running = state.flush()
    assert [i["id"] for i in items] == [2] and payloads == [b"value"] and running == [1]


def test_memory_over_the_allocation_counts_the_tasks_children():
    state = _state(cores=1, tasks=[_task(1, memory_mb=300)])
    state.feed(now=0.0)
    state.slot_warm(0, 0.0)  # the slot holds nothing from task to task
    assert state.over_limits(1.0, {0: 200.0}) == []
    state.children_seen(0, [555], 150.0)
    (stop,) = state.over_limits(2.0, {0: 200.0})
    assert stop.index == 0 and stop.status == "exhausted" and "350 MB, over its 300 MB" in stop.note
    state.slot_result(0, _report(1, 0, peak=200.0), now=3.0)
    items, _, _ = state.flush()
    assert items[0]["peak_mb"] == 350.0  # the slot's own peak plus its children's


def test_a_slots_warm_memory_is_kept_out_of_its_tasks_memory_and_peak():
    state = _state(cores=1, tasks=[_task(1, memory_mb=100)])
    state.feed(now=0.0)
    assert state.over_limits(0.5, {0: 10_000.0}) == []  # the slot has not said what it holds: not judged
    state.slot_warm(0, 250.0)  # imports and caches, there before the task runs
    assert state.over_limits(1.0, {0: 330.0}) == []  # the task's own 80 MB are within its 100
    (stop,) = state.over_limits(2.0, {0: 400.0})
    assert stop.status == "exhausted" and "150 MB, over its 100 MB allocation" in stop.note
    state.slot_result(0, _report(1, 0, peak=340.0, warm=250.0), now=3.0)
    (item,), _, _ = state.flush()
    assert item["peak_mb"] == 90.0 and item["warm_mb"] == 250.0


def test_a_task_is_kept_within_what_the_warm_slots_leave_of_the_workers_memory():
    state = _state(cores=2, tasks=[_task(1, memory_mb=900)])
    state.memory_mb = 1000
    state.feed(now=0.0)
    state.slot_warm(0, 300.0)
    state.slot_warm(1, 300.0)  # an idle slot's warm memory is taken from the worker too
    assert state.over_limits(1.0, {0: 600.0}) == []  # 300 MB of its own, 400 MB left
    (stop,) = state.over_limits(2.0, {0: 750.0})
    assert "450 MB, over its 400 MB of room left by the warm slots" in stop.note


def test_the_manager_is_told_the_warm_memory_when_it_moved():
    state = _state(cores=2)
    assert state.warm_to_report() is None  # nothing held, nothing told
    state.slot_warm(0, 200.0)
    assert state.warm_to_report() == 200.0
    state.slot_warm(1, 10.0)
    assert state.warm_to_report() is None  # under WARM_REPORT_MB of change
    state.slot_warm(1, 30.0)
    assert state.warm_to_report() == 230.0


def test_a_task_over_its_wall_time_is_stopped():
    state = _state(cores=1, tasks=[_task(1, max_wall_s=5.0)])
    state.feed(now=10.0)
    assert state.watching()
    assert state.over_limits(14.0, {0: 1.0}) == []
    assert state.over_limits(15.5, {0: 1.0}) == [Stop(0, "timeout", "task ran 5.5 s, over its max_wall_s", 5.5)]


def test_a_slot_stopped_too_long_under_a_task_is_stopped_and_its_task_reported_lost():
    state = _state(cores=2, tasks=[_task(1), _task(2)])
    state.stopped_slot_s = 30.0
    state.feed(now=0.0)
    state.slot_seen(0, stopped=True, now=10.0)
    state.slot_seen(1, stopped=True, now=10.0)
    state.slot_seen(1, stopped=False, now=20.0)  # slot 1 ran again: its clock starts over
    state.slot_seen(1, stopped=True, now=25.0)
    assert state.over_limits(39.0, {0: 1.0, 1: 1.0}) == []
    (stop,) = state.over_limits(41.0, {0: 1.0, 1: 1.0})
    assert (stop.index, stop.status, stop.wall) == (0, "lost", 41.0)
    assert "stopped (SIGSTOP or a terminal read) for 31 s" in stop.note
    state.slot_died(0, stop.status, stop.note, stop.wall)
    (item, _), = state.outbox
    assert item["id"] == 1 and item["status"] == "lost" and "stopped" in item["error"]
    state.feed(now=42.0)
    state.slot_seen(0, stopped=False, now=43.0)
    assert [s.index for s in state.over_limits(100.0, {0: 1.0, 1: 1.0})] == [1]  # slot 1, stopped since 25


def test_a_result_over_the_managers_limit_becomes_an_error():
    state = _state(cores=1, tasks=[_task(1)])
    state.max_result_bytes = 100
    state.feed(now=0.0)
    state.slot_result(0, _report(1, 0, payload=b"x" * 500), now=1.0)
    (item,), (payload,), _ = state.flush()
    assert item["status"] == "error" and "max_message_mb" in item["error"] and payload == b""


def test_a_slot_takes_the_queued_task_whose_file_it_holds():
    state = _state(cores=1, tasks=[_task(1, affinity="a.root")])
    state.feed(now=0.0)
    state.slot_result(0, _report(1, 0), now=1.0)
    state.tasks_arrived({}, [_task(2, affinity="b.root"), _task(3, affinity="a.root")])
    assert _task_ids(state.feed(now=1.0)) == {0: [3]}


def test_results_say_when_peaks_are_the_slots_lifetime_peaks():
    state = _state(cores=1, tasks=[_task(1), _task(2)])
    state.feed(now=0.0)
    state.slot_result(0, _report(1, 0), now=1.0)
    state.lifetime_peaks = True
    state.feed(now=1.0)
    state.slot_result(0, _report(2, 0), now=2.0)
    first, second = state.flush()[0]
    assert "lifetime_peak" not in first and second["lifetime_peak"] is True
