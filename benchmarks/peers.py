"""The TopEFT-like workload through hep_executor and through coffea's own executors.

Run from the repository root::

    python -m benchmarks.peers              # 600k events in 50k chunks, then 18k events in 1k chunks; 3 reps
    python -m benchmarks.peers --quick      # 120k events in 10k chunks, 9k events in 1k chunks; 1 rep

Two tables, each on its own generated samples (datasets ttH_EFT, ttbar,
data; made once by :func:`benchmarks._workloads.sample_fileset` into
``benchmarks/results/samples/``):

- ``large``: ``--events`` (600,000; 2 files per dataset, NanoAOD-like
  with no filler branches, ``--large-branches``) in chunks of
  ``--chunksize`` (50,000);
- ``small``: ``--small-events`` (18,000; 1 file per dataset) on the
  many-branch samples (``--branches``, 500 fillers as in real NanoAOD)
  in chunks of ``--small-chunksize`` (1,000): there reading a file's
  TTree metadata for each chunk costs about as much as all the rest of
  the chunk, which warm files save.

Every executor runs :class:`processors.topeft_like.TopEFTLikeProcessor`
on the same chunks (same chunk size), the parallel ones on 2 workers
(``--workers``):

- ``single``: no executor; in one process, read each file's entries,
  then for each chunk ``NanoEventsFactory.from_root({path: tree})`` +
  ``process`` + accumulate (the per-core limit, the way coffea reads);
- ``single-warm``: the same with each file opened once and its chunks
  read from the open file (the per-core limit of warm files);
- ``iterative``: ``Runner(executor=IterativeExecutor())``, in one process;
- ``futures``: ``Runner(executor=FuturesExecutor(workers=2))``, which makes a
  new (loky) process pool for each of its two calls (preprocessing, processing);
- ``futures-pool``: the same with one pool kept across runs
  (``FuturesExecutor(pool=loky.ProcessPoolExecutor(2))``);
- ``dask``: ``Runner(executor=DaskExecutor(client=...))`` on a
  ``LocalCluster`` of 2 single-threaded processes;
- ``parsl``: ``Runner(executor=ParslExecutor())`` on a loaded Parsl
  DataFlowKernel with one HighThroughputExecutor block of 2 local
  single-core workers (kept across runs, :mod:`benchmarks._parsl`);
- ``hep-run``: ``hep_executor.run(..., manager=Manager(2), chunksize=C)``
  with its defaults (``resources_mode="auto"``, what ``hep-executor run``
  gets), the executor's own path (each slot keeps the files it reads
  open; they are closed before each timed run, so that a repetition
  opens its files as a new run would);
- ``hep-run-none``: the same with ``resources_mode="none"`` (no memory
  allocations: nothing held back until the first chunk reports);
- ``hep-run-kept``: the same, on the same workers, with the files left
  open by the previous repetition (an analysis run again on the same
  workers, as in an interactive session);
- ``hep-runner``: ``Runner(executor=HepExecutor(manager=Manager(2),
  dynamic=False))`` (Runner's chunks as given, other options default):
  Runner's closures recognised and run on the slots' warm files (closed
  before each timed run, as for hep-run). Both Managers get a long ``heartbeat_timeout``:
  their workers would otherwise leave after 60 s without a call
  into their Manager, which happens while the other executors run.

Timing: events/s end to end, preprocessing (reading each file's entries)
included; every Runner gets a fresh ``metadata_cache`` (coffea's default
one lives as long as the process and would skip preprocessing).
Start-up is left out for every executor that can keep its workers
(hep-run, hep-runner, futures-pool, dask): their pools are made and
warmed (imports, a short run per table) before the clock starts; the
time to make them (processes up, imports done) is measured once, shown
as ``start-up s``, and added to each run's time for ``events/s w/
start-up``. ``futures`` cannot keep its pool: it pays its start-up in
every run, which is how coffea users run it. The files are read once
beforehand, so every executor finds them in the page cache. The
in-process runs (``single``, ``single-warm``, ``iterative``) run, and are
timed, in one spawned process that does nothing else (imports done
before): the benchmark's own process hosts dask's scheduler and the
pools' threads, and ``single`` ran 10-25% slower there. Repetitions are
interleaved (the order rotates); medians are reported. Outputs are
checked against ``single`` (the cutflow counts).

Parallel efficiency = events/s / (workers x ``single`` events/s), also
shown against ``single-warm``; the warm paths (ours) are judged against
``single-warm``, the per-core limit of the way they read. ``work CPU s`` is the CPU time of the
work where it can be had: the solo process's for the in-process runs, the
sum over tasks for hep-run (an efficiency over 100% with no less CPU
than ``single`` means ``single`` lost time to something else, such as
other load on the machine). A repetition that raised counts as 0
events/s (kept in the medians) and fails every target its executor is
part of, as does an output that differs from ``single``.

Targets, each ratio with both sides' start-up counted (the ratio without
is printed beside it): ``large``: hep-run at least 1.3x ``futures``;
hep-run and hep-runner at least 90% efficiency against 2x
``single-warm`` and at least 1.0x ``futures-pool``; ``small``: hep-run at
least 3x ``futures``; hep-runner at least 0.9x hep-run and at least 1.5x
``futures-pool``. Output: both tables, the ratios, the verdicts and
``peers.json``; exit status 1 when a target is missed.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make ``benchmarks`` importable as such
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import argparse
import logging
import os
import platform
from pathlib import Path

from benchmarks._peers_pools import Pools, measure_table
from benchmarks._peers_runs import (DATASETS, EXECUTORS, clear_file_caches, cutflow_of, forget_open_files,
                                    read_through, run_single, solo_run, stop_on_sigterm, warm_imports)
from benchmarks._peers_table import print_summary, summarize, verdicts
from benchmarks._stats import RESULTS_DIR, quiet_logging, write_json

__all__ = ["EXECUTORS", "Pools", "clear_file_caches", "cutflow_of", "forget_open_files", "main", "measure_table",
           "read_through", "run_single", "solo_run", "stop_on_sigterm", "summarize", "warm_imports"]

log = logging.getLogger(__name__)


def main(argv=None) -> int:
    """Command-line entry: measure both tables, print them and the verdicts, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=600_000, help="events of the large-chunk table (600000)")
    parser.add_argument("--chunksize", type=int, default=50_000, help="chunk size of the large table (50000)")
    parser.add_argument("--large-branches", type=int, default=0, help="filler branches, large table (0)")
    parser.add_argument("--small-events", type=int, default=18_000, help="events of the small-chunk table (18000)")
    parser.add_argument("--small-chunksize", type=int, default=1_000, help="chunk size of the small table (1000)")
    parser.add_argument("--branches", type=int, default=500, help="filler branches, small table (500)")
    parser.add_argument("--files", type=int, default=2, help="files per dataset, large table (2)")
    parser.add_argument("--small-files", type=int, default=1, help="files per dataset, small table (1)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; medians are reported (3)")
    parser.add_argument("--workers", type=int, default=2, help="workers of every parallel executor (2)")
    parser.add_argument("--tables", default="large,small", help="which tables (large,small)")
    parser.add_argument("--skip", action="append", default=[], choices=EXECUTORS, help="leave an executor out")
    parser.add_argument("--quick", action="store_true",
                        help="120k events in 10k chunks, 9k small-chunk events, 1 repetition")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for peers.json")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.chunksize, args.small_events, args.reps = 120_000, 10_000, 9_000, 1
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    if not tables or set(tables) - {"large", "small"}:
        parser.error(f"--tables takes large and/or small, got {args.tables!r}")
    counts = (args.events, args.chunksize, args.small_events, args.small_chunksize, args.files, args.small_files,
              args.reps, args.workers)
    if min(counts) < 1 or min(args.branches, args.large_branches) < 0:
        parser.error("sizes, --files, --reps and --workers must be at least 1, branches at least 0")
    names = [n for n in EXECUTORS if n not in args.skip]
    if "single" not in names:
        parser.error("single is the reference (efficiency, outputs): it cannot be skipped")
    quiet_logging(args.log_level)
    stop_on_sigterm()

    from benchmarks._workloads import sample_fileset
    from processors.topeft_like import TopEFTLikeProcessor

    specs = {"large": (args.events, args.chunksize, args.large_branches, args.files),
             "small": (args.small_events, args.small_chunksize, args.branches, args.small_files)}
    filesets = {}
    for table in tables:
        events, chunksize, branches, files = specs[table]
        per_file = max(1, events // (DATASETS * files))
        filesets[table] = sample_fileset(per_file, files, extra_branches=branches)
        specs[table] = (per_file * DATASETS * files, chunksize, branches, files)
    processor = TopEFTLikeProcessor()
    load_before = os.getloadavg()
    print(f"peers: TopEFT-like, {args.workers} workers, {args.reps} reps; {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} cores, load {load_before[0]:.2f}")
    out = {"settings": vars(args) | {"out": str(args.out)}, "machine": {
        "cores": os.cpu_count(), "python": platform.python_version(), "load_before": load_before}, "tables": {}}
    with Pools(args.workers, set(names)) as pools:
        out["startup_s"] = pools.startup_s
        for table in tables:
            events, chunksize, branches, files = specs[table]
            print(f"\n{table}: {events:,} events ({files} files x {DATASETS} datasets, {branches} filler "
                  f"branches), chunks of {chunksize:,}")
            results = measure_table(pools, names, filesets[table], processor, chunksize, args.reps, events)
            summary = summarize(results, pools.startup_s, events, args.workers)
            summary.update(events=events, chunksize=chunksize, branches=branches, files_per_dataset=files, runs=results)
            out["tables"][table] = summary
            print_summary(f"{table} chunks ({chunksize:,} events), {events:,} events, median of {args.reps}",
                           summary, args.workers)
    out["machine"]["load_after"] = os.getloadavg()
    out["verdicts"] = verdicts(out["tables"])
    print(f"\nload average before {load_before[0]:.2f}, after {out['machine']['load_after'][0]:.2f} "
          f"({os.cpu_count()} cores)")
    for name, v in out["verdicts"].items():
        without = f" (without start-up {v['without_startup']:.2f})" if "without_startup" in v else ""
        print(f"{'PASS' if v['pass'] else 'FAIL'}  {name}: {v['value']:.2f}{without}")
    bad = [t for t, s in out["tables"].items() for n, e in s["executors"].items() if not e["output_ok"]]
    if bad:
        print(f"FAIL  outputs differ from single in table(s) {sorted(set(bad))}")
    path = write_json(args.out / "peers.json", out)
    print(f"wrote {path}")
    return 0 if all(v["pass"] for v in out["verdicts"].values()) and not bad else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("peers benchmark: interrupted (every worker it started is stopped)")
        raise SystemExit(130) from None
