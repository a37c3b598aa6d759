"""Dispatch rate: no-op tasks per second through the Manager and its peers.

Run from the repository root::

    python -m benchmarks.dispatch                  # 20,000 tasks, 5 repetitions
    python -m benchmarks.dispatch --quick          # 5,000 tasks, 3 repetitions

Every executor gets the same number of workers (2 by default) and runs
the same no-op task (:func:`benchmarks._tasks.noop`):

- ``manager``: :class:`hep_executor.Manager` with local workers, in its
  default ``wait_retrieve_many`` mode: submit every task, then
  ``while not m.empty(): for r in m.wait(...): r.value``;
- ``manager-plain``: the same with ``wait_retrieve_many=False``;
- ``pool-submit``: :class:`concurrent.futures.ProcessPoolExecutor`,
  one ``submit`` per task, then ``as_completed``;
- ``pool-map``: the same pool's ``map`` with a chunk size (default:
  tasks / (workers x 16), so each worker takes about 16 chunks);
- ``dask``: ``dask.distributed.LocalCluster(n_workers, threads_per_worker=1,
  processes=True)``, ``client.map`` then ``client.gather``;
- ``parsl``: raw Parsl apps (``python_app``) on a HighThroughputExecutor with
  one local block of ``workers`` single-core workers (:mod:`benchmarks._parsl`),
  every app submitted, then every future's ``result()``.

Start-up (creating the pool or cluster, waiting for its workers, and a
warm-up round of a few tasks that imports the task module everywhere) is
timed on its own and left out of the rate. The repetitions are
interleaved (each repetition runs every executor once, fresh), and the
medians are reported. The targets: the manager reaches at least 5,000
tasks/s, at least 5x the rate of dask.distributed and at least 5x the
rate of Parsl HTEX. A repetition that raised counts as a rate of 0 (it is
kept in the medians) and fails every target it is part of.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make ``benchmarks._tasks`` importable as such
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import logging
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from hep_executor.errors import BatchError, TaskError

from benchmarks._stats import RESULTS_DIR, median, print_table, quiet_logging, write_json
from benchmarks._tasks import noop

__all__ = ["EXECUTORS", "main", "measure"]

log = logging.getLogger(__name__)

TARGET_RATE = 5_000.0
TARGET_VS_DASK = 5.0
TARGET_VS_PARSL = 5.0
_WARMUP_PER_WORKER = 4


def _check_count(got: int, n: int) -> None:
    if got != n:
        msg = f"the executor returned {got} results for {n} tasks"
        raise TaskError(msg)


def _drain_manager(m, n: int) -> None:
    got = 0
    while not m.empty():
        for r in m.wait(timeout=10):
            r.value  # noqa: B018 (deserialize, as a caller would)
            got += 1
    _check_count(got, n)


def _run_manager(n: int, workers: int, chunksize: int, *, wrm: bool) -> tuple[float, float]:
    from hep_executor import Manager

    t0 = time.perf_counter()
    with Manager(local_workers=workers, wait_retrieve_many=wrm) as m:
        if m.wait_for_workers(workers, timeout=60) < workers:
            msg = (f"only {len(m.workers())} of {workers} local workers joined within 60 s; "
                   "see their errors above")
            raise BatchError(msg)
        warm = _WARMUP_PER_WORKER * workers
        for i in range(warm):
            m.submit(noop, i)
        _drain_manager(m, warm)
        t1 = time.perf_counter()
        for i in range(n):
            m.submit(noop, i)
        _drain_manager(m, n)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def _run_pool_submit(n: int, workers: int, chunksize: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(noop, range(_WARMUP_PER_WORKER * workers)))
        t1 = time.perf_counter()
        futures = [pool.submit(noop, i) for i in range(n)]
        got = 0
        for f in as_completed(futures):
            f.result()
            got += 1
        t2 = time.perf_counter()
    _check_count(got, n)
    return t1 - t0, t2 - t1


def _run_pool_map(n: int, workers: int, chunksize: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(noop, range(_WARMUP_PER_WORKER * workers)))
        t1 = time.perf_counter()
        got = sum(1 for _ in pool.map(noop, range(n), chunksize=chunksize))
        t2 = time.perf_counter()
    _check_count(got, n)
    return t1 - t0, t2 - t1


def _run_dask(n: int, workers: int, chunksize: int) -> tuple[float, float]:
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(workers)
        client.gather(client.map(noop, range(_WARMUP_PER_WORKER * workers), pure=False))
        t1 = time.perf_counter()
        got = len(client.gather(client.map(noop, range(n), pure=False)))
        t2 = time.perf_counter()
    _check_count(got, n)
    return t1 - t0, t2 - t1


def _run_parsl(n: int, workers: int, chunksize: int) -> tuple[float, float]:
    from parsl.app.app import python_app

    from benchmarks._parsl import htex

    with htex(workers) as startup:
        app = python_app(noop, executors=["htex"])
        t1 = time.perf_counter()
        futures = [app(i) for i in range(n)]
        got = 0
        for f in futures:
            f.result()
            got += 1
        t2 = time.perf_counter()
    _check_count(got, n)
    return startup, t2 - t1


#: executor name -> runner(n_tasks, workers, chunksize) -> (start-up s, run s)
EXECUTORS = {
    "manager": lambda n, w, c: _run_manager(n, w, c, wrm=True),
    "manager-plain": lambda n, w, c: _run_manager(n, w, c, wrm=False),
    "pool-submit": _run_pool_submit,
    "pool-map": _run_pool_map,
    "dask": _run_dask,
    "parsl": _run_parsl,
}


def measure(tasks: int, reps: int, workers: int, chunksize: int, executors: list[str]) -> dict:
    """Run every executor ``reps`` times, interleaved; return the numbers.

    Returns
    -------
    dict
        ``{name: {"startup_s": [...], "run_s": [...], "rate": [...],
        "rate_median": float, "startup_median": float}}``.
    """
    out = {name: {"startup_s": [], "run_s": [], "rate": [], "errors": []} for name in executors}
    for rep in range(reps):
        for name in executors:
            try:
                startup, run = EXECUTORS[name](tasks, workers, chunksize)
            except Exception as exc:  # a failed repetition counts (rate 0), it is not dropped
                log.error("rep %d %s raised %s: %s", rep, name, type(exc).__name__, exc)
                out[name]["errors"].append(f"rep {rep}: {type(exc).__name__}: {exc}")
                startup, run = float("nan"), float("inf")
            out[name]["startup_s"].append(startup)
            out[name]["run_s"].append(run)
            out[name]["rate"].append(tasks / run)
            log.info("rep %d %s: %.0f tasks/s (start-up %.2f s)", rep, name, tasks / run, startup)
    for entry in out.values():
        entry["rate_median"] = median(entry["rate"])
        entry["startup_median"] = median(s for s in entry["startup_s"] if s == s)
    return out


def _parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dispatch", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="no-op tasks per run (20000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions; medians are reported (5)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for every executor (2)")
    parser.add_argument("--chunksize", type=int, default=0,
                        help="chunk size of pool-map (default: tasks / (workers x 16))")
    parser.add_argument("--quick", action="store_true", help="5000 tasks, 3 repetitions")
    parser.add_argument("--skip", action="append", default=[], choices=sorted(EXECUTORS),
                        help="leave an executor out (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for dispatch.json")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.reps = 5_000, 3
    if args.tasks < 1 or args.reps < 1 or args.workers < 1:
        parser.error("--tasks, --reps and --workers must be at least 1")
    return args


def _print_rates(results: dict, args) -> dict:
    """Print the rate table and the ratios of ours to each peer; return the ratios."""
    rows = [[name, r["rate_median"], min(r["rate"]), max(r["rate"]), r["startup_median"], len(r["errors"])]
            for name, r in results.items()]
    print_table(f"No-op tasks per second ({args.tasks} tasks, {args.workers} workers, "
                f"median of {args.reps})",
                ["executor", "tasks/s", "min", "max", "start-up s", "failed reps"], rows)
    rate = {name: r["rate_median"] for name, r in results.items()}
    ours = rate.get("manager", float("nan"))
    ratios = {f"manager/{name}": ours / rate[name] for name in rate if name != "manager"}
    print_table("Ratios (median rates)", ["ratio", "value"], [[k, v] for k, v in ratios.items()])
    return ratios


def _targets(results: dict) -> dict[str, bool]:
    """Each target and whether it holds; a failed repetition of either side fails it."""
    rate = {name: r["rate_median"] for name, r in results.items()}
    ours = rate.get("manager", float("nan"))
    targets = {}

    def clean(*names):  # no failed repetition among the executors a target compares
        return not any(results[name]["errors"] for name in names)

    if "manager" in rate:
        targets[f"manager >= {TARGET_RATE:,.0f} tasks/s"] = ours >= TARGET_RATE and clean("manager")
    for peer, factor, label in (("dask", TARGET_VS_DASK, "dask.distributed"),
                                ("parsl", TARGET_VS_PARSL, "Parsl HTEX")):
        if "manager" in rate and peer in rate:
            targets[f"manager >= {factor:g}x {label}"] = ours >= factor * rate[peer] and clean("manager", peer)
    for text, ok in targets.items():
        print(f"target {text}: {'HOLDS' if ok else 'MISSED'}")
    return targets


def main(argv=None) -> int:
    """Command-line entry: measure, print the table and the targets, write JSON."""
    args = _parse_args(argv)
    quiet_logging(args.log_level)
    chunksize = args.chunksize or max(1, math.ceil(args.tasks / (args.workers * 16)))
    executors = [name for name in EXECUTORS if name not in args.skip]
    load_before = os.getloadavg()
    print(f"dispatch: {args.tasks} no-op tasks, {args.workers} workers, {args.reps} repetitions, "
          f"pool-map chunksize {chunksize}; {os.cpu_count()} cores, load {load_before[0]:.2f}")
    results = measure(args.tasks, args.reps, args.workers, chunksize, executors)
    ratios = _print_rates(results, args)
    targets = _targets(results)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    path = write_json(args.out / "dispatch.json", {
        "config": {"tasks": args.tasks, "reps": args.reps, "workers": args.workers,
                   "pool_map_chunksize": chunksize, "cpu_count": os.cpu_count(),
                   "python": platform.python_version(), "load_before": load_before,
                   "load_after": load_after},
        "executors": results, "ratios": ratios, "targets": targets,
    })
    print(f"wrote {path}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
