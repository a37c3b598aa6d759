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
analysis modules on its workers is measured once (and shown in its parts:
the cluster's processes up and connected, then the imports) and added to
every run of both executors (``events/s w/ start-up``); each run's own
set-up (a new DaskManager, coffea's preprocessing) is inside its time.

The bound: ``single-warm`` (as in :mod:`benchmarks.peers`: the same
processor over the same chunks in one spawned process that does nothing
else, each file opened once) is what one core does; each executor's
efficiency is its events/s over 2x (``--workers``) that. No executor running
this processor on these workers can beat 100%, so the most any can gain
over ``dask`` is ``1 / dask's efficiency`` (without start-up) and, with the
shared start-up ``S`` counted for both, ``(t_dask + S) / (t_single_warm /
workers + S)``; both bounds are printed beside each verdict. Coffea's own
time is split the same way: in the solo process, coffea's way of reading
(each chunk opens its file) is timed per step (``single`` by parts:
reading the files' entries, opening each chunk's file and its TTree
metadata, building the NanoEvents schema, the processor with its
accumulate), each step's total over the workers is shown as a share of
``dask``'s time with start-up, and what is left is coffea's and Dask's
own overhead (scheduling, transfers, merging, waiting). Outputs are
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
import contextlib
import importlib
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

from benchmarks._stats import median, quiet_logging
from benchmarks._peers_runs import solo_run
from benchmarks.peers import DATASETS, cutflow_of, forget_open_files, read_through, warm_imports

__all__ = ["main"]

log = logging.getLogger(__name__)

TARGETS = {"large": 1.3, "small": 2.0}


def _start_cluster(workers: int):
    """A LocalCluster of ``workers`` single-threaded processes with the analysis imported; and its start-up s by part."""
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(workers)
    t1 = time.perf_counter()
    imports = client.run(_timed_imports)
    t2 = time.perf_counter()
    parts = {"cluster up (scheduler, worker processes, client)": t1 - t0,
             "imports on the workers": t2 - t1}
    per_module = {m: max(w[m] for w in imports.values()) for m in next(iter(imports.values()))}
    return cluster, client, parts, per_module


#: what a worker imports at start-up, in this order (each one's time is the increment over those before)
_STARTUP_MODULES = ("numpy", "awkward", "uproot", "coffea.processor", "coffea.nanoevents", "processors.topeft_like",
                    "hep_executor.analysis", "hep_executor.engine")


def _timed_imports(_=None) -> dict:
    """Import what a chunk needs on this worker (:func:`warm_imports` and ours); seconds per module."""
    seconds = {}
    for name in _STARTUP_MODULES:
        t0 = time.perf_counter()
        importlib.import_module(name)
        seconds[name] = time.perf_counter() - t0
    warm_imports()
    return seconds


def _solo_pool(stack: contextlib.ExitStack) -> ProcessPoolExecutor:
    """One spawned process that does nothing but the in-process runs (imports done), as in benchmarks.peers."""
    solo = stack.enter_context(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
    solo.submit(warm_imports).result()
    return solo


def coffea_parts(fileset: dict, processor, chunksize: int, treename: str = "Events") -> dict:
    """Coffea's way of reading, in this process, timed per step; seconds per step.

    ``entries``: each file opened for its entry count (coffea's
    preprocessing); per chunk, ``open``: the file and its TTree metadata
    (``uproot.open`` + ``f[tree]``, what ``from_root({path: tree})`` does
    first), ``schema``: ``NanoEventsFactory.from_root`` on that tree's file
    to the events, ``processor``: ``process`` and ``accumulate``.
    """
    import uproot
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory
    from coffea.processor import accumulate

    parts = dict.fromkeys(("entries", "open", "schema", "processor"), 0.0)
    plan = []
    for dataset, paths in fileset.items():
        for path in paths:
            t0 = time.perf_counter()
            with uproot.open(path) as f:
                plan.append((dataset, path, f[treename].num_entries))
            parts["entries"] += time.perf_counter() - t0
    out = None
    for dataset, path, entries in plan:
        for start in range(0, entries, chunksize):
            stop = min(entries, start + chunksize)
            t0 = time.perf_counter()
            with uproot.open(path) as f:
                f[treename]  # noqa: B018 (reads the TTree metadata into the file's cache)
                t1 = time.perf_counter()
                events = NanoEventsFactory.from_root(
                    f, treepath=treename, schemaclass=NanoAODSchema, mode="virtual", entry_start=start,
                    entry_stop=stop, metadata={"dataset": dataset, "filename": path, "treename": treename,
                                               "entrystart": start, "entrystop": stop}).events()
                t2 = time.perf_counter()
                out = accumulate([processor.process(events)], out)
                t3 = time.perf_counter()
            parts["open"] += t1 - t0
            parts["schema"] += t2 - t1
            parts["processor"] += t3 - t2
    return parts


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


def _table(client, solo, fileset: dict, processor, chunksize: int, reps: int, events: int,
           startup: float) -> dict:
    """An untimed run of each, then timed runs alternating; medians, rates, ratio, chunks, cache counts.

    ``single-warm`` runs in ``solo`` between the others (the cluster idle), and
    coffea's way of reading is timed there by parts once (:func:`coffea_parts`).
    """
    times: dict[str, list[float]] = {"dask": [], "hep-dask": [], "single-warm": []}
    flows, chunks = {}, {"dask": _coffea_chunks(client, fileset, chunksize)}
    hits: dict = {}
    for rep in range(-1, reps):
        order = ["dask", "hep-dask", "single-warm"] if rep % 2 == 0 else ["single-warm", "hep-dask", "dask"]
        for name in order:
            if name == "single-warm":
                flows[name], seconds, _ = solo.submit(solo_run, name, fileset, processor, chunksize).result()
                chunks[name] = chunks["dask"]
            else:
                flows[name], seconds, n = _run_once(name, client, fileset, processor, chunksize)
            if name == "hep-dask":
                chunks[name] = n
                if rep >= 0:  # the counts of this run: the workers' caches were cleared before it
                    for key, count in _summed_counts(client).items():
                        hits[key] = hits.get(key, 0) + count
            if rep >= 0:
                times[name].append(seconds)
    differ = {k: v for k, v in flows.items() if v != flows["dask"]}
    if differ:
        msg = f"outputs differ: dask {flows['dask']} vs {differ}"
        raise RuntimeError(msg)
    rows = {}
    for name, ts in times.items():
        t = median(ts)
        rows[name] = {"seconds": t, "events_per_s": events / t, "with_startup": events / (t + startup),
                      "runs": ts, "chunks": chunks[name]}
    ratio = rows["hep-dask"]["with_startup"] / rows["dask"]["with_startup"]
    parts = solo.submit(_task("coffea_parts"), fileset, processor, chunksize).result()
    return {"rows": rows, "ratio_with_startup": ratio, "warm_counts": hits, "coffea_parts": parts,
            "ratio": rows["hep-dask"]["events_per_s"] / rows["dask"]["events_per_s"]}


def _task(name: str):
    """``name`` from the importable ``benchmarks.peers_dask`` (not ``__main__``), so the solo process loads it."""
    return getattr(importlib.import_module("benchmarks.peers_dask"), name)


def bounds(summary: dict, workers: int, startup: float) -> dict:
    """Efficiencies against ``workers`` x single-warm, and the most any executor can gain over ``dask``.

    ``ideal_s`` is the time of a perfect executor: single-warm's over the
    workers. ``bound`` = dask's time / ideal (without start-up),
    ``bound_with_startup`` = (dask's + S) / (ideal + S).
    """
    rows = summary["rows"]
    ideal = rows["single-warm"]["seconds"] / workers
    eff = {name: ideal / rows[name]["seconds"] for name in ("dask", "hep-dask")}
    eff_startup = {name: (ideal + startup) / (rows[name]["seconds"] + startup) for name in ("dask", "hep-dask")}
    t_dask = rows["dask"]["seconds"]
    return {"ideal_s": ideal, "efficiency": eff, "efficiency_with_startup": eff_startup,
            "bound": t_dask / ideal, "bound_with_startup": (t_dask + startup) / (ideal + startup)}


def _print_table(table: str, summary: dict, spec: tuple, workers: int, startup: float) -> bool:
    """Print one table, its efficiencies, bounds, coffea's time by part and the verdict; return whether met."""
    events, chunksize, branches, _ = spec
    print(f"\n{table}: {events:,} events, chunks of {chunksize:,}, {branches} filler branches")
    for name, row in summary["rows"].items():
        runs = " ".join(f"{t:.2f}" for t in row["runs"])
        print(f"  {name:11s} {row['seconds']:7.2f} s  {row['events_per_s']:9.0f} ev/s  "
              f"{row['with_startup']:9.0f} ev/s w/ start-up  {row['chunks']} chunks  runs [{runs}]")
    print(f"  hep-dask warm caches over its timed runs: {summary['warm_counts']}")
    b = bounds(summary, workers, startup)
    for name in ("dask", "hep-dask"):
        print(f"  {name:11s} efficiency vs {workers}x single-warm: {b['efficiency'][name]:6.0%} without start-up, "
              f"{b['efficiency_with_startup'][name]:6.0%} with")
    _print_parts(summary["coffea_parts"], summary["rows"]["dask"]["seconds"], workers, startup)
    target = TARGETS[table]
    ok = summary["ratio_with_startup"] >= target
    reach = "reachable" if b["bound_with_startup"] >= target else "NOT reachable by any executor of this processor"
    print(f"  bound: a perfect executor ({workers}x single-warm, {b['ideal_s']:.2f} s) would be "
          f"{b['bound_with_startup']:.2f}x dask with start-up ({b['bound']:.2f}x without); target {target}x: {reach}")
    print(f"  hep-dask / dask: {summary['ratio_with_startup']:.2f}x with start-up "
          f"({summary['ratio']:.2f}x without); target {target}x: {'met' if ok else 'MISSED'}")
    return ok


def _print_parts(parts: dict, t_dask: float, workers: int, startup: float) -> None:
    """Coffea's time with start-up by part: start-up, then each solo step over the workers, then the rest."""
    total = t_dask + startup
    shares = {"start-up": startup, **{k: v / workers for k, v in parts.items()}}
    shares["rest (Dask, coffea's executor, merging, waiting)"] = total - sum(shares.values())
    text = ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in shares.items())
    print(f"  dask's {total:.2f} s with start-up: {text}")


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
    missed = 0
    with contextlib.ExitStack() as stack:
        solo = _solo_pool(stack)
        cluster, client, parts, modules = _start_cluster(args.workers)
        stack.callback(cluster.close)
        stack.callback(client.close)
        startup = sum(parts.values())
        print(f"cluster start-up (counted in every run): {startup:.2f} s = "
              + " + ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
        print("  imports on the slowest worker: " + ", ".join(f"{k} {v:.2f} s" for k, v in modules.items()))
        for table, spec in specs.items():
            summary = _table(client, solo, filesets[table], TopEFTLikeProcessor(), spec[1], args.reps, spec[0],
                             startup)
            missed += not _print_table(table, summary, spec, args.workers, startup)
    print(f"\nload after {open('/proc/loadavg').read().strip()}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
