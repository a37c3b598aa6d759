"""hep_executor over Dask against coffea's DaskExecutor, on one LocalCluster.

Run from the repository root::

    python -m benchmarks.peers_dask           # 120k events in 10k chunks, 18k events in 1k chunks; 3 reps
    python -m benchmarks.peers_dask --quick   # 60k events in 10k chunks, 9k events in 1k chunks; 1 rep

The TopEFT-like processor (:class:`processors.topeft_like.TopEFTLikeProcessor`)
on the samples of :func:`benchmarks._workloads.sample_fileset` (the
``large`` and ``small`` tables of :mod:`benchmarks.peers`: no filler
branches and large chunks; 500 filler branches and 1k chunks), on one
``LocalCluster`` of 2 single-threaded worker processes:

- ``dask``: ``Runner(executor=DaskExecutor(client=...))``;
- ``hep-dask``: ``hep_executor.run(..., manager=DaskManager(client),
  chunksize=C, resources_mode="none", metadata_cache=False)`` (files kept
  open per worker process, merges on the workers).

Like for like: the same cluster, chunk size and chunks (the number of
chunks of each is printed); both read every file's metadata in every run
(coffea gets a fresh ``metadata_cache``, ours none: its default SQLite
cache would skip preprocessing from the second run on); before each timed
run of ``hep-dask`` the Dask workers close the files and forget the
schemas an earlier run left warm, so each run opens its files as a new
run would. Each executor runs each table once untimed first, so that
neither pays the first-use costs (lazy imports, first histograms) of the
cluster's processes in a timed run.

Start-up is counted: the time to start the cluster and import the
analysis modules on its workers is measured once and added to every run
of both executors (``events/s w/ start-up``); each run's own set-up (a
new DaskManager, coffea's preprocessing) is inside its time. Outputs are
checked to agree (cutflow counts). Repetitions alternate the order;
medians are reported. The workers' warm-cache counts (file and schema
hits and misses, summed over the timed ``hep-dask`` runs) are printed:
a chunk of a file already open on its worker is a file hit. Targets: hep-dask at least 1.3x dask at large
chunks, 2x at small chunks. The load average is printed before and
after. Exit status 1 when a target is missed.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make ``benchmarks`` importable as such
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import logging
import os
import time

from benchmarks._stats import median, quiet_logging
from benchmarks.peers import DATASETS, cutflow_of, forget_open_files, read_through, warm_imports

__all__ = ["main"]

log = logging.getLogger(__name__)

TARGETS = {"large": 1.3, "small": 2.0}


def _start_cluster(workers: int):
    """A LocalCluster of ``workers`` single-threaded processes with the analysis imported; and its start-up s."""
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(workers)
    client.run(warm_imports)
    return cluster, client, time.perf_counter() - t0


def _warm_counts(_=None) -> dict:
    """This Dask worker's warm-cache hits and misses (files and schemas)."""
    from hep_executor.analysis import warm

    return warm.warm_stats()


def _run_once(name: str, client, fileset: dict, processor, chunksize: int) -> tuple[dict, float, int]:
    """One run of ``dask`` or ``hep-dask`` (files closed on the workers first); ``(cutflow, s, chunks)``."""
    from coffea import processor as cp
    from coffea.nanoevents import NanoAODSchema

    client.run(forget_open_files, 0.0)
    t0 = time.perf_counter()
    if name == "dask":
        runner = cp.Runner(executor=cp.DaskExecutor(client=client, status=False), schema=NanoAODSchema,
                           chunksize=chunksize, metadata_cache={})
        out = runner(fileset, processor, treename="Events")
        chunks = 0  # counted once per table, untimed (_coffea_chunks)
    else:
        from hep_executor import run
        from hep_executor.engine import DaskManager

        with DaskManager(client) as manager:
            result = run(fileset, processor, "Events", manager=manager, chunksize=chunksize,
                         resources_mode="none", metadata_cache=False)
        out, chunks = result.output, result.report["totals"]["chunks"]
    return cutflow_of(out), time.perf_counter() - t0, chunks


def _coffea_chunks(client, fileset: dict, chunksize: int) -> int:
    """How many chunks coffea's Runner cuts of ``fileset`` (its own preprocessing, untimed)."""
    from coffea import processor as cp

    runner = cp.Runner(executor=cp.DaskExecutor(client=client, status=False), chunksize=chunksize,
                       metadata_cache={})
    return sum(1 for _ in runner.preprocess(fileset, treename="Events"))


def _summed_counts(client) -> dict:
    """The workers' warm-cache counts, summed over the workers."""
    total: dict = {}
    for counts in client.run(_warm_counts).values():
        for key, n in counts.items():
            total[key] = total.get(key, 0) + n
    return total


def _table(client, fileset: dict, processor, chunksize: int, reps: int, events: int, startup: float) -> dict:
    """An untimed run of each, then timed runs alternating; medians, rates, ratio, chunks, cache counts."""
    times: dict[str, list[float]] = {"dask": [], "hep-dask": []}
    flows, chunks = {}, {"dask": _coffea_chunks(client, fileset, chunksize)}
    hits: dict = {}
    for rep in range(-1, reps):
        order = ["dask", "hep-dask"] if rep % 2 == 0 else ["hep-dask", "dask"]
        for name in order:
            flows[name], seconds, n = _run_once(name, client, fileset, processor, chunksize)
            if name == "hep-dask":
                chunks[name] = n
                if rep >= 0:  # the counts of this run: the workers' caches were cleared before it
                    for key, count in _summed_counts(client).items():
                        hits[key] = hits.get(key, 0) + count
            if rep >= 0:
                times[name].append(seconds)
    if flows["dask"] != flows["hep-dask"]:
        msg = f"outputs differ: dask {flows['dask']} vs hep-dask {flows['hep-dask']}"
        raise RuntimeError(msg)
    rows = {}
    for name, ts in times.items():
        t = median(ts)
        rows[name] = {"seconds": t, "events_per_s": events / t, "with_startup": events / (t + startup),
                      "runs": ts, "chunks": chunks[name]}
    ratio = rows["hep-dask"]["with_startup"] / rows["dask"]["with_startup"]
    return {"rows": rows, "ratio_with_startup": ratio, "warm_counts": hits,
            "ratio": rows["hep-dask"]["events_per_s"] / rows["dask"]["events_per_s"]}


def main(argv=None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers_dask", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=120_000, help="events, large table (120000)")
    parser.add_argument("--chunksize", type=int, default=10_000, help="chunk size, large table (10000)")
    parser.add_argument("--small-events", type=int, default=18_000, help="events, small table (18000)")
    parser.add_argument("--small-chunksize", type=int, default=1_000, help="chunk size, small table (1000)")
    parser.add_argument("--branches", type=int, default=500, help="filler branches, small table (500)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (2)")
    parser.add_argument("--quick", action="store_true", help="60k large, 9k small events, 1 repetition")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.small_events, args.reps = 60_000, 9_000, 1
    quiet_logging(args.log_level)

    import coffea.util

    from benchmarks._workloads import sample_fileset
    from processors.topeft_like import TopEFTLikeProcessor

    coffea.util.coffea_console.quiet = True
    specs = {"large": (args.events, args.chunksize, 0, 2), "small": (args.small_events, args.small_chunksize,
                                                                     args.branches, 1)}
    filesets = {}
    for table, (events, chunksize, branches, files) in specs.items():
        per_file = max(1, events // (DATASETS * files))
        filesets[table] = sample_fileset(per_file, files, extra_branches=branches)
        read_through(filesets[table])
        specs[table] = (per_file * DATASETS * files, chunksize, branches, files)
    print(f"peers_dask: TopEFT-like, LocalCluster({args.workers} processes), {args.reps} reps; "
          f"{os.cpu_count()} cores, load before {open('/proc/loadavg').read().strip()}")
    cluster, client, startup = _start_cluster(args.workers)
    missed = 0
    try:
        print(f"cluster start-up (counted in every run): {startup:.2f} s")
        for table, (events, chunksize, branches, _) in specs.items():
            summary = _table(client, filesets[table], TopEFTLikeProcessor(), chunksize, args.reps, events,
                             startup)
            print(f"\n{table}: {events:,} events, chunks of {chunksize:,}, {branches} filler branches")
            for name, row in summary["rows"].items():
                runs = " ".join(f"{t:.2f}" for t in row["runs"])
                print(f"  {name:9s} {row['seconds']:7.2f} s  {row['events_per_s']:9.0f} ev/s  "
                      f"{row['with_startup']:9.0f} ev/s w/ start-up  {row['chunks']} chunks  runs [{runs}]")
            print(f"  hep-dask warm caches over its timed runs: {summary['warm_counts']}")
            target = TARGETS[table]
            ok = summary["ratio_with_startup"] >= target
            missed += not ok
            print(f"  hep-dask / dask: {summary['ratio_with_startup']:.2f}x with start-up "
                  f"({summary['ratio']:.2f}x without); target {target}x: {'met' if ok else 'MISSED'}")
    finally:
        client.close()
        cluster.close()
    print(f"\nload after {open('/proc/loadavg').read().strip()}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
