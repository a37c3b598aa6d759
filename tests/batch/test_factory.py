"""The worker factory with real workers on this machine (LocalBatch) and a real Manager.

The same factory on Slurm is in ``test_slurm.py``; the pure sizing rule
(:class:`FactoryPolicy`) is checked here too.
"""

from __future__ import annotations

import argparse
import threading
import time

import pytest

from hep_executor.batch import WorkerSpec
from hep_executor.errors import ConfigError
from hep_executor.batch import (
    FactoryPolicy,
    add_factory_arguments,
    add_submit_arguments,
    normalize_address,
    run_factory,
    submit_main,
)
from tests.servers import wait_until

from hep_executor.engine import Manager  # noqa: E402


class CountingLocalBatch:
    """LocalBatch that remembers the most jobs it had alive at once."""

    def __init__(self):
        from hep_executor.batch import LocalBatch

        self.inner = LocalBatch()
        self.most_alive = 0
        self.submitted = 0

    def alive(self) -> int:
        return sum(s != "done" for s in self.inner.status(list(self.inner.procs)).values())

    def submit(self, spec, count=1):
        ids = self.inner.submit(spec, count)
        self.submitted += count
        self.most_alive = max(self.most_alive, self.alive())
        return ids

    def cancel(self, job_ids):
        self.inner.cancel(job_ids)

    def status(self, job_ids):
        return self.inner.status(job_ids)

    def close(self):
        self.inner.close()


def start_factory(batch, spec, **options):
    stop = threading.Event()
    thread = threading.Thread(target=run_factory, args=(batch, spec), daemon=True,
                              kwargs={"stop_event": stop, **options})
    thread.start()
    return thread, stop


def test_factory_with_local_workers(tmp_path):
    key_file = tmp_path / "run.key"
    batch = CountingLocalBatch()
    with Manager(local_workers=0, key_file=str(key_file)) as manager:
        spec = WorkerSpec(manager=manager.address, key_file=str(key_file), memory_mb=300)
        thread, stop = start_factory(batch, spec, min_workers=1, max_workers=2, poll_interval=0.2,
                                     idle_timeout=60, unreachable_timeout=1.5, query_timeout=1.0)
        try:
            # no work yet: the factory keeps min_workers
            assert manager.wait_for_workers(1, timeout=30) == 1
            manager.wait(1.0)
            assert len(manager.workers()) == 1 and batch.alive() == 1

            tasks = [manager.submit(time.sleep, 0.1) for _ in range(40)]
            done = 0
            deadline = time.monotonic() + 60
            while done < len(tasks) and time.monotonic() < deadline:
                done += len(manager.wait(0.2))
            assert done == len(tasks)
            assert batch.submitted >= 2 and batch.most_alive == 2  # grew to max, never past it
        finally:
            manager.close()
        # the manager is gone: the factory cancels its workers and returns
        thread.join(timeout=30)
        stop.set()
    assert not thread.is_alive()
    assert batch.alive() == 0
    batch.close()


def test_factory_stops_on_request_and_cancels(tmp_path):
    key_file = tmp_path / "run.key"
    batch = CountingLocalBatch()
    with Manager(local_workers=0, key_file=str(key_file)) as manager:
        spec = WorkerSpec(manager=manager.address, key_file=str(key_file), memory_mb=300)
        thread, stop = start_factory(batch, spec, min_workers=2, max_workers=3, poll_interval=0.2)
        assert manager.wait_for_workers(2, timeout=30) == 2
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert wait_until(lambda: batch.alive() == 0, 10)
    batch.close()


def test_factory_with_no_manager_gives_up(tmp_path):
    from tests.servers import free_port

    key_file = tmp_path / "k"
    key_file.write_text("ab" * 32)
    batch = CountingLocalBatch()
    spec = WorkerSpec(manager=f"tcp://127.0.0.1:{free_port()}", key_file=str(key_file))
    run_factory(batch, spec, min_workers=0, max_workers=2, poll_interval=0.1,
                unreachable_timeout=0.5, query_timeout=0.2)
    assert batch.submitted == 0


@pytest.mark.parametrize(("status", "pending", "running", "idle", "change"), [
    ({"tasks_unplaced": 0, "tasks_waiting": 0}, 0, 0, False, 1),    # below min: grow to min
    ({"tasks_unplaced": 10, "tasks_waiting": 10}, 0, 1, False, 3),  # hungry: grow to max
    ({"tasks_unplaced": 10, "tasks_waiting": 10}, 3, 1, False, 0),  # at max
    ({"tasks_unplaced": 2, "tasks_waiting": 2}, 2, 1, False, 0),    # pending jobs will cover it
    ({"tasks_unplaced": 0, "tasks_waiting": 0}, 2, 2, False, -2),   # nothing queued: drop pending
    ({"tasks_unplaced": 0, "tasks_waiting": 0}, 0, 3, True, -2),    # idle: back to min
    ({"tasks_unplaced": 0, "tasks_waiting": 0}, 0, 3, False, 0),    # not idle long enough
    ({"tasks_unplaced": 0, "tasks_waiting": 0}, 0, 6, False, -2),   # above max
])
def test_policy(status, pending, running, idle, change):
    policy = FactoryPolicy(min_workers=1, max_workers=4)
    assert policy.plan(status, pending, running, cores=1, idle=idle) == change


def test_policy_counts_cores_per_job():
    policy = FactoryPolicy(min_workers=0, max_workers=10)
    assert policy.plan({"tasks_unplaced": 9, "tasks_waiting": 9}, 0, 0, cores=4, idle=False) == 3


@pytest.mark.parametrize(("low", "high"), [(-1, 2), (3, 2), (0, 0)])
def test_policy_bounds(low, high):
    with pytest.raises(ConfigError):
        FactoryPolicy(min_workers=low, max_workers=high)


def test_address_forms():
    assert normalize_address("node1:5000") == "tcp://node1:5000"
    assert normalize_address("tcp://10.0.0.2:5000") == "tcp://10.0.0.2:5000"
    for bad in ("node1", "http://node1:5000", "node1:http"):
        with pytest.raises(ConfigError):
            normalize_address(bad)


def test_submit_command_line_with_local_workers(tmp_path, capsys):
    key_file = tmp_path / "run.key"
    with Manager(local_workers=0, key_file=str(key_file),
                             address_file=str(tmp_path / "address")) as manager:
        parser = argparse.ArgumentParser()
        add_submit_arguments(parser)
        args = parser.parse_args(["--batch", "local", "--count", "2", "--address-file",
                                  str(tmp_path / "address"), "--key-file", str(key_file),
                                  "--memory", "300"])
        assert submit_main(args) == 0
        ids = capsys.readouterr().out.split()
        assert len(ids) == 2 and all(i.isdigit() for i in ids)
        assert manager.wait_for_workers(2, timeout=30) == 2
        assert sorted(str(w["pid"]) for w in manager.workers()) == sorted(ids)
    # the manager's close tells its workers to stop
    import psutil

    assert wait_until(lambda: not any(psutil.pid_exists(int(i)) and
                                      psutil.Process(int(i)).status() != psutil.STATUS_ZOMBIE
                                      for i in ids), 30)


def test_factory_arguments():
    parser = argparse.ArgumentParser()
    add_factory_arguments(parser)
    args = parser.parse_args(["--batch", "slurm", "--manager", "h:1", "--max", "5",
                              "--sbatch-option=--qos=low", "--partition", "short"])
    assert (args.min_workers, args.max_workers, args.partition) == (0, 5, "short")
    assert args.sbatch_option == ["--qos=low"]
