"""Placing tasks: the load index, tasks that fit no worker now or ever, and a run left with no workers."""

import subprocess
import sys
import time

import pytest

from hep_executor import Manager
from hep_executor.engine import FreeIndex, protocol
from hep_executor.engine import TaskTable, WorkerRecord
from hep_executor.errors import NoWorkersError, TaskError
from tests.engine import tasks
from tests.engine.rawpeer import RawPeer
from tests.helpers import drain, try_assert


def _table(*shapes):
    table = TaskTable()
    for i, (cores, memory) in enumerate(shapes):
        table.add_worker(WorkerRecord(f"w{i}".encode(), f"w{i}", "h", i, cores, memory, 0))
    return table


def test_index_picks_the_least_loaded_worker_that_fits():
    table = _table((4, 1000), (4, 8000), (4, 1000))
    small = table.add("f", b"", memory_mb=500)
    big = table.add("f", b"", memory_mb=4000)
    first = table.index.pick(small)
    table.assign(small, first)
    assert table.index.pick(table.add("f", b"", memory_mb=500)) is not first  # the others are less loaded
    assert table.index.pick(big).worker_id == "w1"  # the only one with the memory


def test_index_says_none_at_once_when_every_worker_is_full(monkeypatch):
    table = _table(*[(1, 1000)] * 1000)
    for worker in table.workers.values():
        table.assign(table.add("f", b""), worker)
    task = table.add("f", b"")
    looked_at = []
    real_fits = WorkerRecord.fits
    monkeypatch.setattr(WorkerRecord, "fits", lambda w, t: looked_at.append(w) or real_fits(w, t))
    assert table.index.pick(task) is None and not table.index.has_room()
    assert looked_at == []  # the least loaded is full: no worker was even looked at
    assert table.index.pick(task, prefetch=1) is not None  # room to queue one more behind


def test_index_follows_releases_and_removals():
    table = _table((1, 1000), (1, 1000))
    a, b = table.add("f", b""), table.add("f", b"")
    table.assign(a, table.index.pick(a))
    table.assign(b, table.index.pick(b))
    assert table.index.pick(table.add("f", b"")) is None
    home = a.worker
    table.finish(a.id)
    freed = table.index.pick(table.add("f", b""))
    assert freed is not None and freed.identity == home
    table.remove_worker(freed.identity)
    assert table.index.pick(table.add("f", b"")) is None and len(table.index) == 1


def test_tasks_that_fit_no_worker_now_do_not_block_the_ones_behind():
    with Manager(local_workers=1, worker_cores=2) as m:
        assert m.wait_for_workers(1) == 1
        busy = m.submit(tasks.slow_square, 1, 3.0)  # one of the two cores, for 3 s
        m.wait(timeout=0.3)
        wide = [m.submit(tasks.square, i, cores=2) for i in range(70)]
        narrow = m.submit(tasks.square, 9)
        order = [r.id for r in drain(m, timeout=60)]
        assert order.index(narrow) < order.index(busy), order[:5]
        assert sorted(order) == sorted([busy, narrow, *wide])


def test_task_larger_than_every_remote_worker_fails_after_the_grace_period():
    with Manager(local_workers=0, unfit_grace_s=1.5) as m:
        peer = RawPeer(m.address, m.key)
        try:
            peer.join(m)
            t0 = time.monotonic()
            tid = m.submit(tasks.square, 2, memory_mb=5000)
            results = []
            while not results and time.monotonic() - t0 < 15:
                results = m.wait(timeout=0.5)
            (r,) = results
            assert r.id == tid and type(r.error) is TaskError
            assert "5000 MB" in str(r.error) and "1 cores, 1000 MB" in str(r.error)
            assert "unfit_grace_s" in str(r.error)
            assert time.monotonic() - t0 >= 1.5
        finally:
            peer.close()


def test_wait_raises_when_local_workers_keep_dying():
    with Manager(local_workers=1, max_worker_kills=1000) as m:
        m.submit(tasks.kill_own_worker)
        with pytest.raises(NoWorkersError, match="keep dying"):
            drain(m, timeout=120)


def test_a_workers_shorter_manager_timeout_wins_over_the_welcome(tmp_path):
    key_file, addr = tmp_path / "run.key", tmp_path / "addr"
    owner = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom hep_executor import Manager\n"
        f"m = Manager(local_workers=0, key_file={str(key_file)!r}, address_file={str(addr)!r}, "
        "worker_timeout=900)\nm.wait_for_workers(1, timeout=60)\nprint('joined', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        try_assert(lambda: addr.exists() and addr.read_text().strip(), timeout=30)
        worker = subprocess.Popen([sys.executable, "-m", "hep_executor.engine.worker", "--manager",
                                   addr.read_text().strip(), "--key-file", str(key_file),
                                   "--manager-timeout", "3", "--heartbeat", "0.5"])
        assert owner.stdout.readline().strip() == "joined"
        owner.kill()
        owner.wait()
        t0 = time.monotonic()
        assert worker.wait(timeout=30) == 4  # EXIT_MANAGER_LOST, after its own 3 s
        assert time.monotonic() - t0 < 20
    finally:
        for proc in (owner, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()


def test_one_pass_sends_every_worker_its_message_across_send_groups():
    """More workers than one send group: each gets one signed message; a vanished one is removed."""
    with Manager(local_workers=0, heartbeat_interval=60, heartbeat_timeout=120) as m:  # no heartbeats
        peers = [RawPeer(m.address, m.key) for _ in range(70)]
        try:
            for peer in peers:
                peer.join(m)
            gone = peers.pop(30)
            gone.close()
            try_assert(lambda: _unreachable(m, gone.identity))
            ids = {m.submit(tasks.square, i) for i in range(140)}
            assert m._dispatch_waiting_tasks() == 69
            got = [peer.recv(timeout=5) for peer in peers]
            assert all(isinstance(g[0], protocol.Tasks) and len(g[0].items) == 1 for g in got), got
            sent = [g[0].items[0]["id"] for g in got]
            assert len(set(sent)) == 69 and set(sent) <= ids
            assert gone.identity not in m.table.workers and m.table.n_waiting == 140 - 69
        finally:
            for peer in peers:
                peer.close()


def _unreachable(m, identity: bytes) -> bool:
    """Whether the manager's socket has dropped the route to ``identity`` (a probe: a heartbeat)."""
    return not m.endpoint.send(protocol.Heartbeat(), peer=identity)
