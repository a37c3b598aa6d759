"""The manager's message limit: big unauthenticated frames are never held, big results fail by name."""

import os
import subprocess
import sys

import zmq

from hep_executor import Manager
from hep_executor.errors import RemoteTaskError, ResourceExhaustedError
from tests.engine import tasks
from tests.helpers import drain


def _random_bytes(n):
    return os.urandom(n)  # incompressible: the frame is as large as the value


def test_a_result_over_the_message_limit_fails_naming_the_setting_and_the_worker_stays():
    with Manager(local_workers=1, max_message_mb=1) as m:
        big = m.submit(_random_bytes, 3 * 2**20)
        small = m.submit(tasks.pid_of_worker)
        results = {r.id: r for r in drain(m)}
        assert isinstance(results[big].error, RemoteTaskError)
        message = str(results[big].error)
        assert "max_message_mb" in message and "3 MB" in message
        assert results[small].ok
        assert len(m.workers()) == 1 and m.workers()[0]["pid"] == results[small].value


def _garbage_from_a_stranger(address, frame_bytes):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(address)
    sock.send_multipart([b"s" * 32, b"e" * 25, b"h" * frame_bytes])
    return ctx, sock


def test_an_unauthenticated_frame_over_the_limit_is_dropped_before_it_is_read():
    with Manager(local_workers=0, max_message_mb=1) as m:
        ctx, sock = _garbage_from_a_stranger(m.address, 100)
        m.wait_for_workers(1, timeout=1.5)
        assert m.endpoint.dropped == 1  # a small one reaches the signature check
        big_ctx, big_sock = _garbage_from_a_stranger(m.address, 2 * 2**20)
        m.wait_for_workers(1, timeout=1.5)
        assert m.endpoint.dropped == 1  # the big one never reached the manager
        for s, c in ((sock, ctx), (big_sock, big_ctx)):
            s.close(0)
            c.term()


def test_a_worker_offering_more_than_its_machine_has_is_capped_with_a_warning(caplog):
    import logging

    from hep_executor.engine import protocol
    from tests.engine.rawpeer import RawPeer, answer

    with Manager(local_workers=0) as m:
        peer = RawPeer(m.local_address, m.key)
        try:
            peer.send(protocol.Hello(protocol.PROTOCOL_VERSION, peer.identity.decode()))
            peer.session = bytes.fromhex(answer(m, peer).session)
            with caplog.at_level(logging.WARNING, logger="hep_executor.engine"):
                peer.send(protocol.Register(protocol.PROTOCOL_VERSION, peer.identity.decode(), "node7",
                                            1, 64, 500_000, 1000, 8, 16_000))
                assert isinstance(answer(m, peer), protocol.Welcome)
            (worker,) = m.workers()
            assert worker["cores"] == 8 and worker["memory_mb"] == 16_000
            text = " ".join(r.getMessage() for r in caplog.records)
            assert "offers 64 cores, its machine has 8" in text
            assert "offers 500000 MB, its machine has 16000 MB" in text
        finally:
            peer.close()


def test_a_real_worker_started_with_too_many_cores_is_capped_at_its_machine(tmp_path):
    import psutil

    key_file = tmp_path / "run.key"
    with Manager(local_workers=0, key_file=str(key_file)) as m:
        worker = subprocess.Popen([sys.executable, "-m", "hep_executor.worker", "--manager", m.address,
                                   "--key-file", str(key_file), "--cores", str(4 * os.cpu_count()),
                                   "--memory", str(10**8)])
        try:
            assert m.wait_for_workers(1, timeout=60) == 1
            (info,) = m.workers()
            assert info["cores"] == os.cpu_count()
            assert info["memory_mb"] == int(psutil.virtual_memory().total / 2**20)
        finally:
            m.close()
            assert worker.wait(timeout=30) == 0


def _stop_myself():
    import signal

    os.kill(os.getpid(), signal.SIGSTOP)
    return "never"


def test_a_task_over_its_max_wall_is_stopped_and_named_and_the_worker_goes_on():
    import time

    from hep_executor import TaskTimeoutError

    with Manager(local_workers=1) as m:
        start = time.monotonic()
        slow = m.submit(tasks.slow_square, 3, 30.0, max_wall_s=1.0, category="hung")
        after = m.submit(tasks.square, 4)
        results = {r.id: r for r in drain(m)}
        assert time.monotonic() - start < 20
        error = results[slow].error
        assert isinstance(error, TaskTimeoutError) and isinstance(error, TimeoutError)
        assert "max_wall_s of 1 s" in str(error) and "(hung)" in str(error)
        assert error.limit_s == 1.0 and error.wall_s >= 1.0
        assert results[after].value == 16


def test_a_stopped_slot_is_caught_by_max_wall_and_retried():
    from hep_executor import TaskTimeoutError

    with Manager(local_workers=1) as m:
        tid = m.submit(_stop_myself, max_wall_s=1.0, retries=1)
        (result,) = drain(m)
        assert result.id == tid and isinstance(result.error, TaskTimeoutError)
        assert result.report.attempts == 2
        assert m.stats["retried"] == 1


def test_a_slot_stopped_without_a_wall_limit_is_replaced_and_its_task_fails_naming_it(tmp_path):
    """No max_wall_s: the worker sees its slot stopped, kills and restarts it; the task is blamed, others run."""
    from hep_executor import WorkerLostError

    key_file = tmp_path / "run.key"
    with Manager(local_workers=0, key_file=str(key_file), max_worker_kills=2) as m:
        worker = subprocess.Popen([sys.executable, "-m", "hep_executor.worker", "--manager", m.address,
                                   "--key-file", str(key_file), "--cores", "1", "--stopped-slot-s", "2"])
        try:
            assert m.wait_for_workers(1, timeout=60) == 1
            stuck = m.submit(_stop_myself)
            after = m.submit(tasks.square, 5)
            results = {r.id: r for r in drain(m, timeout=120)}
            error = results[stuck].error
            assert isinstance(error, WorkerLostError), error
            assert "stopped (SIGSTOP or a terminal read)" in str(error) and "2 times" in str(error)
            assert results[after].value == 25
        finally:
            m.close()
            assert worker.wait(timeout=30) == 0


def test_memory_of_a_tasks_child_processes_counts_and_the_child_is_stopped_with_it(tmp_path):
    import time

    import psutil

    from hep_executor import ResourceExhaustedError

    pid_file = tmp_path / "child.pid"
    with Manager(local_workers=1) as m:
        tid = m.submit(tasks.child_allocates, 400, 60, str(pid_file), memory_mb=250)
        (result,) = drain(m)
        assert result.id == tid and isinstance(result.error, ResourceExhaustedError)
        assert "over its 250 MB allocation" in str(result.error)
        child = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the task's child outlived its slot"
            time.sleep(0.1)


def test_a_tasks_child_processes_count_in_its_peak():
    with Manager(local_workers=1) as m:
        m.submit(tasks.child_allocates, 200, 3.0)
        (result,) = drain(m)
        assert result.ok and result.value == 0
        assert result.report.peak_mb >= 200


def test_a_slots_warm_cache_is_kept_out_of_the_tasks_peak_and_allocation():
    from tests.engine import warm_tasks

    with Manager(local_workers=1, worker_cores=1) as m:
        assert m.wait_for_workers(1) == 1
        ids = [m.submit(warm_tasks.allocate_beside_cache, 60, memory_mb=150) for _ in range(3)]
        results = {r.id: r for r in drain(m, timeout=60)}
        assert sorted(results) == sorted(ids)
        for r in results.values():
            assert r.ok, r.error  # 250 MB cache + 60 MB each: over 150 MB if the cache were counted
            assert r.value == warm_tasks.CACHE_MB
            assert r.report.warm_mb > warm_tasks.CACHE_MB, r.report
            assert 55 < r.report.peak_mb < 150, r.report  # the task's own 60 MB
        (worker,) = m.workers()
        assert worker["warm_mb"] > warm_tasks.CACHE_MB  # kept free for the slot by the manager
        over = m.submit(warm_tasks.allocate_beside_cache, 300, 2.0, memory_mb=150)
        (r,) = drain(m, timeout=60)
        assert r.id == over and isinstance(r.error, ResourceExhaustedError), r.error  # its own 300 MB
