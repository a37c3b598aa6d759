"""Worker jobs on demand: submit workers once, or keep a pool sized to a manager's work.

:func:`submit_workers` submits a fixed number of worker jobs.
:func:`run_factory` asks a running manager how much work it has
(:func:`~hep_executor.engine._status_client.query_status`) every
``poll_interval`` seconds and keeps between ``min_workers`` and
``max_workers`` worker jobs alive: it submits more while the manager is
hungry, cancels jobs that are not needed, and cancels all of its jobs
when the manager closes or stays unreachable.

:func:`add_submit_arguments`, :func:`add_factory_arguments`,
:func:`submit_main` and :func:`factory_main` are the ``hep-executor
submit-workers`` and ``hep-executor factory`` commands.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hep_executor.batch._base import BatchSystem, WorkerSpec, get_batch_system
from hep_executor.errors import BatchError, ConfigError, RemoteAccessError

__all__ = [
    "FactoryPolicy",
    "add_factory_arguments",
    "add_submit_arguments",
    "factory_main",
    "normalize_address",
    "run_factory",
    "submit_main",
    "submit_workers",
]

log = logging.getLogger(__name__)

BATCH_NAMES = ("local", "slurm", "condor")
MAX_BATCH_ERRORS = 5  # consecutive failed batch commands before the factory gives up


@dataclass(frozen=True)
class FactoryPolicy:
    """How many worker jobs the factory keeps, and when it gives up.

    Parameters
    ----------
    min_workers, max_workers : int
        Bounds on the worker jobs alive (pending or running).
    poll_interval : float
        Seconds between looks at the manager and the batch system.
    idle_timeout : float
        After this long with no task waiting or running, jobs above
        ``min_workers`` are cancelled.
    unreachable_timeout : float
        After the manager has not answered for this long, all jobs are
        cancelled (and the factory stops if ``stop_when_done``).
    query_timeout : float
        Seconds to wait for each status answer.
    """

    min_workers: int
    max_workers: int
    poll_interval: float = 5.0
    idle_timeout: float = 60.0
    unreachable_timeout: float = 60.0
    query_timeout: float = 5.0

    def __post_init__(self):
        if not 0 <= self.min_workers <= self.max_workers or self.max_workers < 1:
            msg = (f"need 0 <= min_workers <= max_workers and max_workers >= 1 "
                   f"(got min {self.min_workers}, max {self.max_workers})")
            raise ConfigError(msg)
        for name in ("poll_interval", "idle_timeout", "unreachable_timeout", "query_timeout"):
            if getattr(self, name) <= 0:
                msg = f"factory {name} must be > 0 seconds, not {getattr(self, name)!r}"
                raise ConfigError(msg)

    def plan(self, status: dict, pending: int, running: int, cores: int, idle: bool) -> int:
        """Jobs to add (> 0) or cancel (< 0) given the manager's ``status``.

        ``pending`` and ``running`` count this factory's jobs; ``cores`` is
        the slots one job brings; ``idle`` says the manager has had no work
        for ``idle_timeout``.
        """
        active = pending + running
        if active > self.max_workers:
            return self.max_workers - active
        if active < self.min_workers:
            return self.min_workers - active
        hungry = int(status.get("tasks_unplaced", 0))
        if hungry > 0:
            # jobs still pending will bring slots the manager does not count yet
            wanted = math.ceil(hungry / max(1, cores)) - pending
            return max(0, min(wanted, self.max_workers - active))
        if int(status.get("tasks_waiting", 0)) == 0 and pending and active > self.min_workers:
            return -min(pending, active - self.min_workers)  # nothing queued: pending jobs are not needed
        if idle and active > self.min_workers:
            return self.min_workers - active
        return 0


def submit_workers(batch_name: str, spec: WorkerSpec, count: int, **options) -> list[str]:
    """Submit ``count`` worker jobs to the batch system ``batch_name``; return their ids.

    ``options`` go to the batch system's constructor (``partition=``,
    ``log_dir=``, ...).
    """
    if count < 1:
        msg = f"count must be >= 1, not {count}"
        raise ConfigError(msg)
    return get_batch_system(batch_name, **options).submit(spec, count)


def run_factory(batch: BatchSystem, spec: WorkerSpec, *, min_workers: int, max_workers: int,
                poll_interval: float = 5.0, key: bytes | None = None, stop_when_done: bool = True,
                idle_timeout: float = 60.0, unreachable_timeout: float = 60.0,
                query_timeout: float = 5.0, stop_event: threading.Event | None = None) -> None:
    """Keep between ``min_workers`` and ``max_workers`` worker jobs alive while the manager has work.

    Parameters
    ----------
    batch : BatchSystem
        Where the workers run.
    spec : WorkerSpec
        The workers' resources; ``spec.manager`` is also the address asked
        for status.
    min_workers, max_workers, poll_interval, idle_timeout, unreachable_timeout, query_timeout
        See :class:`FactoryPolicy`.
    key : bytes, optional
        The manager's key (default: read ``spec.key_file``, else the
        ``HEP_EXECUTOR_KEY`` environment variable).
    stop_when_done : bool
        Return once the manager has closed or stayed unreachable (True),
        or keep watching the address for a new manager (False).
    stop_event : threading.Event, optional
        Set it to make the factory cancel its jobs and return.

    Notes
    -----
    Jobs are cancelled on every way out, exceptions included.
    """
    policy = FactoryPolicy(min_workers, max_workers, poll_interval, idle_timeout,
                           unreachable_timeout, query_timeout)
    key = _resolve_key(key, spec)
    stop_event = stop_event or threading.Event()
    jobs: dict[str, str] = {}
    watch = _Watch()
    batch_errors = 0
    try:
        while not stop_event.is_set():
            try:
                _step(batch, spec, policy, key, jobs, watch, stop_when_done)
                batch_errors = 0
            except BatchError as exc:
                batch_errors += 1
                if batch_errors >= MAX_BATCH_ERRORS:
                    raise
                log.warning("%s (attempt %d of %d); trying again", exc, batch_errors, MAX_BATCH_ERRORS)
            if watch.done:
                return
            stop_event.wait(policy.poll_interval)
    finally:
        if jobs:
            _cancel(batch, jobs, list(jobs))


@dataclass
class _Watch:
    """What the factory remembers between looks at the manager."""

    unreachable_since: float | None = None
    idle_since: float | None = None
    done: bool = False


def _step(batch: BatchSystem, spec: WorkerSpec, policy: FactoryPolicy, key: bytes,
          jobs: dict[str, str], watch: _Watch, stop_when_done: bool) -> None:
    """One look at the batch system and the manager, and the jobs it calls for."""
    from hep_executor.engine import query_status

    now = time.monotonic()
    _refresh(batch, jobs)
    try:
        status = query_status(spec.manager, key, timeout=policy.query_timeout,
                              curve="--curve" in spec.extra_args)
    except RemoteAccessError as exc:
        watch.unreachable_since = watch.unreachable_since or now
        if now - watch.unreachable_since >= policy.unreachable_timeout:
            log.warning("%s for %.0f s: cancelling %d job(s)", exc, now - watch.unreachable_since, len(jobs))
            _cancel(batch, jobs, list(jobs))
            watch.unreachable_since = None
            watch.done = stop_when_done
        return
    watch.unreachable_since = None
    if status.get("closing"):
        log.info("manager %s is closing: cancelling %d job(s)", spec.manager, len(jobs))
        _cancel(batch, jobs, list(jobs))
        watch.done = stop_when_done
        return
    busy = status.get("tasks_waiting", 0) or status.get("tasks_running", 0)
    watch.idle_since = None if busy else (watch.idle_since or now)
    idle = watch.idle_since is not None and now - watch.idle_since >= policy.idle_timeout
    pending = [j for j, s in jobs.items() if s == "pending"]
    running = [j for j, s in jobs.items() if s != "pending"]
    change = policy.plan(status, len(pending), len(running), spec.cores, idle)
    if change > 0:
        for job in batch.submit(spec, change):
            jobs[job] = "pending"
        log.info("submitted %d worker job(s); %d alive", change, len(jobs))
    elif change < 0:
        # pending jobs first (they cost nothing yet), then the newest running ones
        victims = (pending[::-1] + running[::-1])[:-change]
        _cancel(batch, jobs, victims)
        log.info("cancelled %d worker job(s); %d alive", len(victims), len(jobs))


# ---------------------------------------------------------------- command line


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hep-executor submit-workers``."""
    _add_common_arguments(parser)
    parser.add_argument("--count", type=int, default=1, help="worker jobs to submit (default 1)")


def add_factory_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hep-executor factory``."""
    _add_common_arguments(parser)
    parser.add_argument("--min", dest="min_workers", type=int, default=0, help="fewest worker jobs (default 0)")
    parser.add_argument("--max", dest="max_workers", type=int, required=True, help="most worker jobs")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between looks (default 5)")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="cancel jobs above --min after the manager is idle this long, s (default 60)")
    parser.add_argument("--unreachable-timeout", type=float, default=60.0,
                        help="stop when the manager is unreachable this long, s (default 60)")
    parser.add_argument("--keep-going", action="store_true",
                        help="keep watching the address after the manager has gone")


def submit_main(args: argparse.Namespace) -> int:
    """``hep-executor submit-workers``: submit the jobs, print one id a line."""
    spec = _spec_from_args(args)
    ids = submit_workers(args.batch, spec, args.count, **_batch_options(args))
    for job in ids:
        print(job)
    return 0


def factory_main(args: argparse.Namespace) -> int:
    """``hep-executor factory``: run :func:`run_factory` until the manager is done."""
    spec = _spec_from_args(args)
    batch = get_batch_system(args.batch, **_batch_options(args))
    try:
        run_factory(batch, spec, min_workers=args.min_workers, max_workers=args.max_workers,
                    poll_interval=args.poll_interval, idle_timeout=args.idle_timeout,
                    unreachable_timeout=args.unreachable_timeout, stop_when_done=not args.keep_going)
    finally:
        batch.close()
    return 0


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", choices=BATCH_NAMES, required=True, help="batch system")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--manager", help="manager address, HOST:PORT or tcp://HOST:PORT")
    where.add_argument("--address-file", help="file the manager wrote its address to")
    parser.add_argument("--key-file", help="key file shared with the manager (hep-executor keygen)")
    parser.add_argument("--cores", type=int, default=1, help="cores per worker (default 1)")
    parser.add_argument("--memory", type=int, default=2000, help="memory per worker, MB (default 2000)")
    parser.add_argument("--disk", type=int, default=4000, help="disk per worker, MB (default 4000)")
    parser.add_argument("--env", help="archive from hep-executor pack-env: each node unpacks it once "
                                      "into local scratch and runs the worker from there")
    parser.add_argument("--walltime", help="job wall-time limit, HH:MM:SS")
    parser.add_argument("--curve", action="store_true",
                        help="the manager encrypts with ZeroMQ CURVE (Manager(curve=True)): so do the workers")
    parser.add_argument("--python", help="Python interpreter on the worker nodes (default: this one)")
    parser.add_argument("--log-dir", default="hep-executor-logs",
                        help="folder for job scripts and worker logs (slurm, condor)")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--account", help="Slurm account")
    parser.add_argument("--sbatch-option", action="append", default=[], metavar="OPT",
                        help="extra sbatch option, e.g. --sbatch-option=--qos=short (repeatable)")
    parser.add_argument("--condor-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra HTCondor submit command (repeatable)")


def _spec_from_args(args: argparse.Namespace) -> WorkerSpec:
    if args.address_file:
        try:
            manager = Path(args.address_file).read_text().strip()
        except OSError as exc:
            msg = f"cannot read the manager address file {args.address_file!r}: {exc.strerror or exc}"
            raise ConfigError(msg) from exc
    else:
        manager = args.manager
    manager = normalize_address(manager)
    for name in ("cores", "memory", "disk"):
        if getattr(args, name) < 1:
            msg = f"--{name} must be >= 1, not {getattr(args, name)}"
            raise ConfigError(msg)
    key_file = os.path.abspath(args.key_file) if args.key_file else None
    extra = {"python": args.python} if args.python else {}
    if getattr(args, "env", None):
        from hep_executor.batch._env import write_runner

        extra = {"python": str(write_runner(args.env))}
    return WorkerSpec(manager=manager, key_file=key_file, cores=args.cores, memory_mb=args.memory,
                      disk_mb=args.disk, walltime=args.walltime,
                      extra_args=("--curve",) if getattr(args, "curve", False) else (), **extra)


def normalize_address(address: str) -> str:
    """``HOST:PORT`` or ``tcp://HOST:PORT`` -> ``tcp://HOST:PORT``."""
    text = address.strip()
    rest = text.removeprefix("tcp://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or "://" in rest:
        msg = f"manager address {address!r} is not HOST:PORT or tcp://HOST:PORT"
        raise ConfigError(msg)
    return f"tcp://{host}:{port}"


def _batch_options(args: argparse.Namespace) -> dict:
    if args.batch == "slurm":
        return {"partition": args.partition, "account": args.account,
                "extra_sbatch": tuple(args.sbatch_option), "log_dir": args.log_dir}
    if args.batch == "condor":
        extra = {}
        for item in args.condor_option:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                msg = f"--condor-option {item!r} is not KEY=VALUE"
                raise ConfigError(msg)
            extra[name.strip()] = value.strip()
        return {"log_dir": args.log_dir, "extra_submit": extra}
    return {}


def _resolve_key(key: bytes | None, spec: WorkerSpec) -> bytes:
    from hep_executor.engine import load_key

    return load_key(key, spec.key_file, who="the factory")


def _refresh(batch: BatchSystem, jobs: dict[str, str]) -> None:
    if not jobs:
        return
    for job, state in batch.status(list(jobs)).items():
        if state == "done":
            jobs.pop(job, None)
        elif job in jobs:
            jobs[job] = state


def _cancel(batch: BatchSystem, jobs: dict[str, str], victims: list[str]) -> None:
    if victims:
        batch.cancel(victims)
    for job in victims:
        jobs.pop(job, None)
