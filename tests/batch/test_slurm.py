"""SlurmBatch against a real one-node Slurm: submit, state, cancel, and real workers for a Manager."""

from __future__ import annotations

import stat
import threading
import time

import psutil
import pytest

from hep_executor.batch import WorkerSpec, get_batch_system
from hep_executor.batch import SlurmBatch
from hep_executor.engine import Manager
from hep_executor.errors import BatchError, ConfigError
from tests.servers import wait_until

pytestmark = pytest.mark.slurm


def fake_python(folder, body: str):
    """An executable that stands in for the worker's Python: records its arguments, then ``body``."""
    path = folder / "fake-python"
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {folder}/args-$SLURM_ARRAY_TASK_ID.txt\n'
        f"{body}\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def states(batch, ids):
    return sorted(batch.status(ids).values())


def test_submit_status_cancel(slurm, shared_dir):
    batch = SlurmBatch(log_dir=shared_dir / "logs", slurm_conf=slurm.conf_path)
    spec = WorkerSpec(manager="tcp://127.0.0.1:5999", key_file=str(shared_dir / "k"), cores=1,
                      memory_mb=100, python=fake_python(shared_dir, "exec sleep 300"))
    count = slurm.cpus + 1  # one more than fits: it must wait
    ids = batch.submit(spec, count)

    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{i}" for i in range(count)]
    assert sorted(slurm.job_ids()) == sorted(ids)
    assert wait_until(lambda: states(batch, ids).count("running") == slurm.cpus, 30)
    assert states(batch, ids) == ["pending"] + ["running"] * slurm.cpus

    # the job ran the worker command line
    assert wait_until(lambda: (shared_dir / "args-0.txt").exists(), 10)
    args = (shared_dir / "args-0.txt").read_text().split()
    assert args[:2] == ["-m", "hep_executor.worker"]
    assert args[args.index("--manager") + 1] == "tcp://127.0.0.1:5999"
    assert args[args.index("--key-file") + 1] == str(shared_dir / "k")

    batch.cancel(ids[:1])
    assert wait_until(lambda: batch.status(ids[:1]) == {ids[0]: "done"}, 15)
    batch.cancel(ids)
    assert wait_until(lambda: not slurm.job_ids(), 15), slurm.job_ids()
    assert set(batch.status(ids).values()) == {"done"}
    batch.cancel(ids)  # cancelling finished jobs is harmless


def test_short_job_is_done(slurm, shared_dir):
    batch = SlurmBatch(log_dir=shared_dir / "logs", slurm_conf=slurm.conf_path)
    spec = WorkerSpec(manager="tcp://127.0.0.1:5999", memory_mb=100,
                      python=fake_python(shared_dir, "echo finished"))
    ids = batch.submit(spec, 2)
    assert wait_until(lambda: set(batch.status(ids).values()) == {"done"}, 30)
    out = sorted((shared_dir / "logs").glob("hep-worker-*.out"))
    assert len(out) == 2 and all("finished" in p.read_text() for p in out)
    assert list((shared_dir / "logs").glob("*.sh")), "the job script is kept for inspection"


def test_options_reach_sbatch(shared_dir):
    batch = get_batch_system("slurm", partition="short", account="cms", log_dir=shared_dir,
                             extra_sbatch=("--qos=low",), request_tmp=True)
    spec = WorkerSpec(manager="tcp://h:1", cores=4, memory_mb=8000, disk_mb=20000, walltime="1-02:00:00")
    opts = batch.sbatch_options(spec, 3)
    for expected in ("--array=0-2", "--cpus-per-task=4", "--mem=8000", "--tmp=20000",
                     "--time=1-02:00:00", "--partition=short", "--account=cms", "--qos=low"):
        assert expected in opts
    assert batch.job_script(spec).splitlines()[-1] == "exec " + spec.shell_command()


def test_bad_options():
    with pytest.raises(ConfigError, match="extra_sbatch"):
        SlurmBatch(extra_sbatch=("qos=low",))
    with pytest.raises(ConfigError, match="walltime"):
        SlurmBatch().sbatch_options(WorkerSpec(manager="tcp://h:1", walltime="two hours"), 1)


def test_unreachable_controller_is_batch_error(slurm, shared_dir):
    conf = shared_dir / "slurm.conf"
    text = slurm.conf_path.read_text()
    port = next(line for line in text.splitlines() if line.startswith("SlurmctldPort="))
    conf.write_text(text.replace(port, "SlurmctldPort=1") + "MessageTimeout=1\n")
    batch = SlurmBatch(log_dir=shared_dir, slurm_conf=conf)
    with pytest.raises(BatchError, match="sbatch.*controller"):
        batch.submit(WorkerSpec(manager="tcp://h:1", memory_mb=100), 1)
    with pytest.raises(BatchError, match="squeue.*controller"):
        batch.status(["1_0"])


def test_factory_gives_up_when_slurm_keeps_failing(slurm, shared_dir):
    from hep_executor.batch import MAX_BATCH_ERRORS, run_factory

    conf = shared_dir / "slurm.conf"
    text = slurm.conf_path.read_text()
    port = next(line for line in text.splitlines() if line.startswith("SlurmctldPort="))
    conf.write_text(text.replace(port, "SlurmctldPort=1") + "MessageTimeout=1\n")
    key_file = shared_dir / "run.key"
    with Manager(local_workers=0, key_file=str(key_file)) as manager:
        batch = SlurmBatch(log_dir=shared_dir / "logs", slurm_conf=conf)
        spec = WorkerSpec(manager=manager.address, key_file=str(key_file), memory_mb=100)
        outcome = {}

        def factory():
            try:
                run_factory(batch, spec, min_workers=1, max_workers=2, poll_interval=0.1)
            except BatchError as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=factory, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            manager.wait(0.2)  # the manager answers status queries while it is pumped
        thread.join(timeout=1)
    assert not thread.is_alive()
    assert "controller" in str(outcome["error"]) and MAX_BATCH_ERRORS > 1


def test_manager_with_slurm_workers(slurm, shared_dir):
    key_file = shared_dir / "run.key"
    with Manager(local_workers=0, key_file=str(key_file)) as manager:
        batch = SlurmBatch(log_dir=shared_dir / "logs", slurm_conf=slurm.conf_path)
        spec = WorkerSpec(manager=manager.address, key_file=str(key_file), cores=1, memory_mb=300)
        ids = batch.submit(spec, 2)
        try:
            assert manager.wait_for_workers(2, timeout=60) == 2, _worker_logs(shared_dir)
            array = ids[0].split("_")[0]
            for worker in manager.workers():  # the workers are these Slurm jobs
                assert psutil.Process(worker["pid"]).environ()["SLURM_ARRAY_JOB_ID"] == array

            tasks = {manager.submit(pow, i, 2): i * i for i in range(20)}
            results = []
            deadline = time.monotonic() + 120
            while len(results) < len(tasks) and time.monotonic() < deadline:
                results += manager.wait(1.0)
            assert sorted(r.id for r in results) == sorted(tasks)
            assert all(r.ok and r.value == tasks[r.id] for r in results)
            assert {r.report.slot.split("/")[0] for r in results} == {w["id"] for w in manager.workers()}
        finally:
            batch.cancel(ids)
        assert wait_until(lambda: not slurm.job_ids(), 20), slurm.job_ids()


def test_factory_keeps_slurm_workers_within_bounds(slurm, shared_dir):
    from hep_executor.batch import run_factory

    key_file = shared_dir / "run.key"
    with Manager(local_workers=0, key_file=str(key_file)) as manager:
        batch = SlurmBatch(log_dir=shared_dir / "logs", slurm_conf=slurm.conf_path)
        spec = WorkerSpec(manager=manager.address, key_file=str(key_file), cores=1, memory_mb=200)
        stop = threading.Event()
        factory = threading.Thread(target=run_factory, args=(batch, spec), daemon=True, kwargs=dict(
            min_workers=1, max_workers=2, poll_interval=0.3, idle_timeout=60, unreachable_timeout=2,
            query_timeout=2, stop_event=stop))
        tasks = {manager.submit(time.sleep, 0.2): None for _ in range(30)}
        factory.start()
        try:
            done, most_jobs = 0, 0
            deadline = time.monotonic() + 120
            while done < len(tasks) and time.monotonic() < deadline:
                done += len(manager.wait(0.3))
                most_jobs = max(most_jobs, len(slurm.job_ids()))
            assert done == len(tasks), _worker_logs(shared_dir)
            assert 1 <= most_jobs <= 2
            assert 1 <= len(slurm.job_ids()) <= 2  # min_workers stay while the manager lives
        finally:
            manager.close()
            factory.join(timeout=60)
            stop.set()
        assert not factory.is_alive()
        assert wait_until(lambda: not slurm.job_ids(), 20), slurm.job_ids()


def _worker_logs(folder) -> str:
    texts = [f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(folder.glob("logs/*.out"))]
    return "\n".join(texts) or "(no worker logs)"


def test_submit_workers_command(slurm, shared_dir):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "hep_executor.cli.main", "submit-workers", "--batch", "slurm", "--count", "2",
           "--manager", "127.0.0.1:5999", "--key-file", str(shared_dir / "k"), "--memory", "100",
           "--log-dir", str(shared_dir / "logs"), "--python", fake_python(shared_dir, "exec sleep 300")]
    out = subprocess.run(cmd, env=slurm.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    assert len(ids) == 2 and sorted(slurm.job_ids()) == sorted(ids)
    assert wait_until(lambda: (shared_dir / "args-1.txt").exists(), 20)
    args = (shared_dir / "args-1.txt").read_text().split()
    assert args[args.index("--manager") + 1] == "tcp://127.0.0.1:5999"
    SlurmBatch(slurm_conf=slurm.conf_path).cancel(ids)
    assert wait_until(lambda: not slurm.job_ids(), 15)
