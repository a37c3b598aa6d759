"""Workers that die, stop answering, or hold the wrong key."""

import os
import signal
import subprocess
import sys
import time

import psutil
from hep_executor import Manager
from hep_executor.engine import keys, protocol
from hep_executor.errors import WorkerLostError
from tests.helpers import drain, try_assert
from tests.engine import tasks
from tests.engine.rawpeer import RawPeer, answer


def test_sigkill_worker_mid_run_replacement_joins_all_complete_none_twice():
    with Manager(local_workers=2) as m:
        assert m.wait_for_workers(2) == 2
        ids = {m.submit(tasks.slow_square, i, 0.01): i for i in range(300)}
        results = list(m.wait(timeout=0.3))
        victim = m.workers()[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        results += drain(m, timeout=120)
        got = [r.id for r in results]
        assert len(got) == len(set(got)) == 300, "a task came back twice or went missing"
        assert all(r.value == ids[r.id] ** 2 for r in results)
        pids = {w["pid"] for w in m.workers()}
        assert victim not in pids and len(pids) == 2, "no replacement joined"


def test_slot_killed_by_a_signal_names_the_signal():
    with Manager(local_workers=1, max_worker_kills=1) as m:
        m.submit(tasks.segfault)
        (r,) = drain(m, timeout=60)
        assert isinstance(r.error, WorkerLostError)
        assert "by signal SIGSEGV" in str(r.error)


def test_silent_worker_is_removed_and_its_tasks_requeued():
    with Manager(local_workers=2, heartbeat_interval=0.2, heartbeat_timeout=1.5,
                 restart_workers=False) as m:
        assert m.wait_for_workers(2) == 2
        ids = [m.submit(tasks.slow_square, i, 0.3) for i in range(6)]
        m.wait(timeout=0.1)
        frozen = m.workers()[0]["pid"]
        proc = psutil.Process(frozen)
        for p in [proc, *proc.children()]:
            p.suspend()
        try:
            results = drain(m, timeout=60)
            assert sorted(r.id for r in results) == sorted(ids)
            assert [w["pid"] for w in m.workers()] != [] and frozen not in [w["pid"] for w in m.workers()]
            assert m.stats["requeued"] >= 1
        finally:
            for p in [proc, *proc.children()]:
                try:
                    p.resume()
                except psutil.NoSuchProcess:
                    pass


def _worker_cmd(address, key_file, *extra):
    return [sys.executable, "-m", "hep_executor.engine.worker", "--manager", address,
            "--key-file", str(key_file), "--cores", "1", "--memory", "1000",
            "--manager-timeout", "10", *extra]


def test_remote_style_worker_with_key_file_joins(tmp_path):
    key_file = tmp_path / "run.key"
    with Manager(local_workers=0, key_file=str(key_file), address_file=str(tmp_path / "addr")) as m:
        address = (tmp_path / "addr").read_text().strip()
        assert address == m.address
        worker = subprocess.Popen(_worker_cmd(address, key_file))
        try:
            assert m.wait_for_workers(1, timeout=20) == 1
            m.submit(tasks.square, 7)
            (r,) = drain(m)
            assert r.value == 49
        finally:
            m.close()
            assert worker.wait(timeout=20) == 0


def test_worker_with_wrong_key_is_refused_with_reason(tmp_path):
    good, bad = tmp_path / "good.key", tmp_path / "bad.key"
    keys.write_key_file(bad)
    with Manager(local_workers=0, key_file=str(good)) as m:
        worker = subprocess.Popen(_worker_cmd(m.address, bad), stderr=subprocess.PIPE, text=True)
        try:
            m.wait_for_workers(1, timeout=3)
            code = worker.wait(timeout=20)
        finally:
            if worker.poll() is None:
                worker.kill()
        assert code == 3
        assert "key does not match" in worker.stderr.read()
        assert m.workers() == []
        assert m.endpoint.dropped >= 1


def test_raw_socket_with_wrong_version_is_refused():
    with Manager(local_workers=0) as m:
        peer = RawPeer(m.address, m.key)
        try:
            frames = peer.frames(protocol.Hello(protocol.PROTOCOL_VERSION, "old"))
            frames[2] = frames[2].replace(f'"version":{protocol.PROTOCOL_VERSION}'.encode(), b'"version":0')
            frames[0] = protocol.sign_frames(protocol.derive_key(m.key, protocol.NO_SESSION), peer.identity,
                                       frames[1:])
            peer.send(frames)
            msg = answer(m, peer)
            assert isinstance(msg, protocol.Refuse), msg
            assert "version 0" in msg.reason and f"speaks {protocol.PROTOCOL_VERSION}" in msg.reason
            assert m.workers() == []
        finally:
            peer.close()


def test_garbage_and_tampered_messages_are_dropped_and_the_run_goes_on():
    with Manager(local_workers=1) as m:
        assert m.wait_for_workers(1) == 1
        peer = RawPeer(m.address, m.key)
        try:
            peer.send([b"garbage"])
            frames = peer.frames(protocol.Results([{"id": 1}]), [b"x"])
            frames[-1] = b"\x80\x04evil"
            peer.send(frames)
            try_assert(lambda: m.wait(timeout=0.1) == [] and m.endpoint.dropped == 2, timeout=5)
            m.submit(tasks.square, 4)
            (r,) = drain(m)
            assert r.value == 16
        finally:
            peer.close()


def test_a_flood_of_wrong_key_registrations_is_one_log_line(caplog):
    import logging

    with Manager(local_workers=0) as m:
        peers = [RawPeer(m.address, b"w" * 32) for _ in range(50)]
        try:
            with caplog.at_level(logging.ERROR, logger="hep_executor.engine._inbox"):
                for peer in peers:
                    peer.send(protocol.Hello(protocol.PROTOCOL_VERSION, "x" * 10_000))
                try_assert(lambda: m.wait_for_workers(1, timeout=0.1) == 0 and m.stats["refused"] == 50,
                           timeout=20)
            lines = [r for r in caplog.records if "refused worker" in r.getMessage()]
            assert 1 <= len(lines) <= 2, len(lines)  # one a second at most
            assert all(len(r.getMessage()) < 400 for r in lines)  # the sender's fields are cut short
        finally:
            for peer in peers:
                peer.close()


def test_a_worker_stopped_while_registering_says_so_and_blames_no_manager(tmp_path):
    import socket
    import time

    key_file = tmp_path / "run.key"
    keys.write_key_file(key_file)
    with socket.socket() as s:  # a port nobody listens on: the Hello goes unanswered
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = subprocess.Popen([*_worker_cmd(f"tcp://127.0.0.1:{port}", key_file), "--log-level", "INFO"],
                              stderr=subprocess.PIPE, text=True)
    # its slot starts after the signal handlers are in place and before the Hello
    try_assert(lambda: psutil.Process(worker.pid).children(), timeout=60)
    time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert "stopped before it registered" in err
    assert "no answer from manager" not in err


def test_workers_and_status_queries_are_answered_while_the_caller_is_away(tmp_path):
    import time

    from hep_executor.engine import query_status

    key_file = tmp_path / "run.key"
    with Manager(local_workers=0, key_file=str(key_file), heartbeat_interval=0.5,
                 heartbeat_timeout=5.0) as m:
        # the worker gives its manager up after 3 s of silence: the caller is away for 8
        worker = subprocess.Popen([*_worker_cmd(m.address, key_file)[:-2], "--manager-timeout", "3",
                                   "--heartbeat", "0.5"])
        try:
            assert m.wait_for_workers(1, timeout=30) == 1
            m.submit(tasks.pid_of_worker)
            time.sleep(8.0)
            status = query_status(m.address, m.key, timeout=10)
            assert worker.poll() is None, "the worker left while the caller was away"
            assert status["workers"] == 1
            (r,) = drain(m)  # the task ran while the caller slept
            assert r.ok and r.value == worker.pid
        finally:
            m.close()
            assert worker.wait(timeout=20) == 0


def test_a_worker_that_heartbeats_but_runs_nothing_is_removed_and_its_task_runs_elsewhere(tmp_path):
    key_file = tmp_path / "run.key"
    with Manager(local_workers=0, key_file=str(key_file), worker_stall_s=2.0) as m:
        peer = RawPeer(m.address, m.key)
        try:
            peer.join(m)
            tid = m.submit(tasks.square, 6)
            got = answer(m, peer)  # the task goes to the only worker: the peer, which never runs it
            assert isinstance(got, protocol.Tasks) and got.items[0]["id"] == tid
            shutdown = None
            deadline = time.monotonic() + 20
            while shutdown is None and time.monotonic() < deadline:
                peer.send(protocol.Heartbeat())  # alive, so only the stall can remove it
                msg = answer(m, peer, timeout=0.5)
                shutdown = msg if isinstance(msg, protocol.Shutdown) else None
            assert shutdown is not None and "ran none" in shutdown.reason
            assert m.stats["stalled_workers"] == 1 and m.workers() == []
            worker = subprocess.Popen(_worker_cmd(m.address, key_file))
            try:
                (result,) = drain(m, timeout=120)
                assert result.id == tid and result.value == 36 and result.report.attempts == 2
            finally:
                worker.terminate()
                worker.wait(timeout=30)
        finally:
            peer.close()
