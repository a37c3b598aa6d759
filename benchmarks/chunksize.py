"""Dynamic chunk sizing against a sweep of fixed chunk sizes, under one memory limit.

Run from the repository root::

    python -m benchmarks.chunksize                       # 50,000 events x 2 files x 3 datasets, 3 reps
    python -m benchmarks.chunksize --files 1 --reps 2    # half the events, 2 repetitions
    python -m benchmarks.chunksize --events 20000        # files whose halves just fit the limit

The workload is the TopEFT-like processor
(:class:`processors.topeft_like.TopEFTLikeProcessor`) on NanoAOD-like
samples (datasets ``ttH_EFT``, ``ttbar``, ``data``; made once into
``benchmarks/results/samples/``). Its own memory barely grows with the
chunk (it reads columns lazily), so it runs inside
:class:`benchmarks._workloads.MemoryHungry`, which holds
``--mb-per-kevent`` MB per 1000 events while it runs: large chunks are
then memory-hungry, as in analyses with many systematic variations.

Every run uses one memory limit per task (``resources_mode="fixed",
memory_mb=--limit``), chosen so that the largest fixed sizes go over
it. A task over it is stopped and split in two (``run``'s default). The
runs:

- ``fixed N``: ``run(..., chunksize=N)`` for each of ``--sizes``
  (default 250 to 64,000: the small end pays the per-chunk cost, about
  0.3 s here, on a few hundred events; the large end runs out of memory).
  As in coffea, a file of E entries is cut into ``ceil(E/N)`` equal
  chunks, so with 50,000-event files 16,000 gives chunks of 12,500 and
  64,000 whole files (the ``median chunk`` column says what ran). With the
  default file size no swept size cuts chunks that sit at the limit;
  with ``--events 20000``, 16,000 gives chunks of 10,000 whose peak is
  998-1000 MB, at the 1000 MB limit, a size that no sizer keeping a
  margin chooses (see benchmarks/README.md);
- ``dynamic from N``: ``run(..., chunksize=None, dynamic_chunksize=
  {"wall_time": --wall-target, "memory": --limit})`` with the sizer
  starting at the smallest and at the largest size of the sweep
  (``run(..., initial_chunksize=)``).

One ``Manager(local_workers=--workers)`` serves every run; a warm-up run
loads the imports and files in both worker slots before the clock
starts, and again after any run in which a task was stopped (a stopped
task's slot process is replaced by a cold one). Repetitions are
interleaved; medians are reported.

Targets: dynamic sizing from either start ends within 15% of the time
of the best fixed size (``--tolerance``). The table also says whether
the large fixed sizes ran out of memory where dynamic sizing did not.
Output: the table, the verdicts and ``chunksize.json``.
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
import time
from pathlib import Path

from benchmarks._stats import RESULTS_DIR, median, print_table, quiet_logging, write_json
from benchmarks._workloads import MemoryHungry, ready_manager, sample_fileset

__all__ = ["main", "measure", "run_once", "summarize"]

log = logging.getLogger(__name__)

DEFAULT_SIZES = (250, 1000, 4000, 16000, 64000)
DEFAULT_LIMIT_MB = 1000
DEFAULT_MB_PER_KEVENT = 80.0
DEFAULT_WALL_TARGET = 30.0
DEFAULT_TOLERANCE = 0.15


def _process_tasks(report: dict) -> list[dict]:
    return [t for t in report.get("tasks", []) if t.get("kind") == "process"]


def run_once(manager, fileset: dict, processor, *, chunksize: int | None, initial: int | None,
             limit_mb: int, targets: dict) -> dict:
    """One run; return its numbers (``error`` set, numbers NaN, when it raised).

    ``chunksize`` None means dynamic sizing starting at ``initial``.
    """
    from hep_executor import analysis
    from hep_executor.errors import HepExecutorError

    t0 = time.perf_counter()
    try:
        result = analysis.run(fileset, processor, "Events", manager=manager, chunksize=chunksize,
                              dynamic_chunksize=None if chunksize else targets,
                              initial_chunksize=int(initial or analysis.DEFAULT_INITIAL_CHUNK),
                              resources_mode="fixed", memory_mb=limit_mb)
    except HepExecutorError as exc:
        log.warning("run (chunksize=%s, initial=%s) failed: %s", chunksize, initial, exc)
        nan = float("nan")
        return {"time_s": time.perf_counter() - t0, "error": f"{type(exc).__name__}: {exc}",
                "events": 0, "events_per_s": nan, "exhausted": nan, "splits": nan, "chunks": nan,
                "median_events": nan,
                "final_sizes": {}, "max_peak_mb": nan, "coverage_ok": False, "tasks": []}
    elapsed = time.perf_counter() - t0
    report = result.report
    tasks = _process_tasks(report)
    ok = [t for t in tasks if t["status"] == "ok"]
    totals = report["totals"]
    if chunksize:
        final = {}
    else:
        final = {c.split(":", 1)[-1]: m["size"] for c, m in report.get("sizing", {}).items()}
    return {
        "time_s": elapsed,
        "error": None,
        "events": totals["events"],
        "events_per_s": totals["events"] / elapsed,
        "exhausted": sum(t["status"] == "exhausted" for t in tasks),
        "splits": totals["splits"],
        "chunks": len(ok),
        "final_sizes": final,
        "max_peak_mb": max((t["peak_mb"] for t in ok), default=float("nan")),
        "median_events": median(t["events"] for t in ok),
        "max_ok_events": max((t["events"] for t in ok), default=0),
        "coverage_ok": bool(report.get("coverage_ok")),
        "chunk_history": report.get("chunk_history", []),
        "tasks": [{k: t.get(k) for k in ("task_id", "category", "status", "events", "wall", "peak_mb")}
                  for t in tasks],
    }


def _warm_up(manager, fileset: dict, processor) -> None:
    """A few small chunks without limits, so each slot has imported everything and opened files."""
    from hep_executor import analysis

    analysis.run(fileset, processor, "Events", manager=manager, chunksize=250, maxchunks=2,
                 resources_mode="none")


def measure(fileset: dict, processor, *, sizes: list[int], reps: int, workers: int, limit_mb: int,
            targets: dict) -> dict:
    """Run every configuration ``reps`` times, interleaved, on one manager.

    Returns
    -------
    dict
        ``{config name: {"kind", "size", "runs": [per-run dict]}}``.
    """
    configs = {f"fixed {s}": ("fixed", s) for s in sizes}
    configs[f"dynamic from {min(sizes)}"] = ("dynamic", min(sizes))
    configs[f"dynamic from {max(sizes)}"] = ("dynamic", max(sizes))
    out = {name: {"kind": kind, "size": size, "runs": []} for name, (kind, size) in configs.items()}
    with ready_manager(workers) as manager:
        _warm_up(manager, fileset, processor)
        for rep in range(reps):
            for name, (kind, size) in configs.items():
                run = run_once(manager, fileset, processor, chunksize=size if kind == "fixed" else None,
                               initial=size, limit_mb=limit_mb, targets=targets)
                out[name]["runs"].append(run)
                log.warning("rep %d %-18s %6.1f s  %d stopped for memory, %s splits%s", rep, name,
                            run["time_s"], run["exhausted"], run["splits"],
                            f"  ERROR {run['error']}" if run["error"] else "")
                if run["error"] or run["exhausted"]:
                    _warm_up(manager, fileset, processor)
    return out


def summarize(results: dict, tolerance: float) -> dict:
    """Medians per configuration and the verdicts against the best fixed size."""
    summary = {}
    for name, entry in results.items():
        runs = entry["runs"]
        good = [r for r in runs if not r["error"]]
        finals = [median(r["final_sizes"].values()) for r in good if r["final_sizes"]]
        summary[name] = {
            "kind": entry["kind"], "size": entry["size"],
            # a run that raised stays in the medians, as an endless run of 0 events/s
            "time_s": median(r["time_s"] if not r["error"] else float("inf") for r in runs),
            "events_per_s": median(r["events_per_s"] if not r["error"] else 0.0 for r in runs),
            "exhausted": median(r["exhausted"] for r in good),
            "splits": median(r["splits"] for r in good),
            "chunks": median(r["chunks"] for r in good),
            "median_events": median(r["median_events"] for r in good),
            "final_size": median(finals) if finals else None,
            "max_peak_mb": median(r["max_peak_mb"] for r in good),
            "runs_ok": len(good), "runs": len(runs),
        }
    fixed = {n: s for n, s in summary.items() if s["kind"] == "fixed" and s["runs_ok"]}
    best = min(fixed, key=lambda n: fixed[n]["time_s"]) if fixed else None
    verdicts = {"best_fixed": best}
    for name, s in summary.items():
        s["vs_best"] = s["time_s"] / summary[best]["time_s"] if best else float("nan")
    if best:
        best_size = summary[best]["size"]
        large = {n: s["exhausted"] for n, s in fixed.items() if s["size"] > best_size}
        dynamic = {n: s for n, s in summary.items() if s["kind"] == "dynamic"}
        verdicts["within_tolerance"] = {n: bool(s["runs_ok"] == s["runs"] and s["vs_best"] <= 1 + tolerance)
                                        for n, s in dynamic.items()}
        verdicts["large_fixed_stopped_for_memory"] = large
        verdicts["dynamic_stopped_for_memory"] = {n: s["exhausted"] for n, s in dynamic.items()}
    return {"configs": summary, "verdicts": verdicts}


def main(argv=None) -> int:
    """Command-line entry: measure, print the table and the verdicts, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chunksize", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per file (50000)")
    parser.add_argument("--files", type=int, default=2, help="files per dataset (2)")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="fixed chunk sizes, comma-separated (250,1000,4000,16000,64000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; medians are reported (3)")
    parser.add_argument("--workers", type=int, default=2, help="local workers, one core each (2)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT_MB,
                        help=f"memory limit per task, MB ({DEFAULT_LIMIT_MB})")
    parser.add_argument("--mb-per-kevent", type=float, default=DEFAULT_MB_PER_KEVENT,
                        help=f"extra memory held per 1000 events, MB ({DEFAULT_MB_PER_KEVENT:g})")
    parser.add_argument("--wall-target", type=float, default=DEFAULT_WALL_TARGET,
                        help=f"dynamic sizing's wall-time target per task, s ({DEFAULT_WALL_TARGET:g})")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="dynamic may be this much slower than the best fixed size (0.15)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for chunksize.json")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if len(sizes) < 2 or sizes[0] < 1:
        parser.error("--sizes needs at least two positive sizes")
    if min(args.events, args.files, args.reps, args.workers, args.limit) < 1:
        parser.error("--events, --files, --reps, --workers and --limit must be at least 1")
    quiet_logging(args.log_level)

    from processors.topeft_like import TopEFTLikeProcessor

    fileset = sample_fileset(args.events, args.files)
    processor = MemoryHungry(TopEFTLikeProcessor(), args.mb_per_kevent)
    targets = {"wall_time": args.wall_target, "memory": float(args.limit)}
    load_before = os.getloadavg()
    print(f"chunksize: TopEFT-like + {args.mb_per_kevent:g} MB per 1000 events, {args.events} events x "
          f"{args.files} files x {len(fileset)} datasets, limit {args.limit} MB per task, "
          f"{args.workers} workers, {args.reps} reps; {os.cpu_count()} cores, load {load_before[0]:.2f}")
    results = measure(fileset, processor, sizes=sizes, reps=args.reps, workers=args.workers,
                      limit_mb=args.limit, targets=targets)
    summary = summarize(results, args.tolerance)

    rows = []
    for name, s in summary["configs"].items():
        final = s["final_size"]
        rows.append([name, s["time_s"], s["events_per_s"], s["vs_best"], s["exhausted"], s["splits"],
                     s["chunks"], s["median_events"], "-" if final is None else f"{final:,.0f}", s["max_peak_mb"],
                     f"{s['runs_ok']}/{s['runs']}"])
    print_table(f"Chunk sizes under a {args.limit} MB limit per task (median of {args.reps})",
                ["config", "time s", "events/s", "vs best", "stopped (mem)", "splits", "chunks ok",
                 "median chunk", "final size", "max peak MB", "runs ok"], rows)

    verdicts = summary["verdicts"]
    targets_met = {}
    if verdicts["best_fixed"]:
        print(f"best fixed size: {verdicts['best_fixed']}")
        for name, ok in verdicts["within_tolerance"].items():
            ratio = summary["configs"][name]["vs_best"]
            text = f"{name} within {args.tolerance:.0%} of the best fixed size"
            targets_met[text] = ok
            print(f"target {text}: {'HOLDS' if ok else 'MISSED'} ({ratio:.2f}x)")
        large = verdicts["large_fixed_stopped_for_memory"]
        dyn = verdicts["dynamic_stopped_for_memory"]
        print("tasks stopped for memory (median per run): "
              + ", ".join(f"{n}: {v:g}" for n, v in {**large, **dyn}.items()))
        failed_large = [n for n, v in large.items() if v > 0]
        clean_dyn = [n for n, v in dyn.items() if v == 0]
        print(f"large fixed sizes that ran out of memory: {', '.join(failed_large) or 'none'}; "
              f"dynamic runs that did not: {', '.join(clean_dyn) or 'none'}")
    else:
        print("no fixed size completed: no verdict")
        targets_met["a fixed size completed"] = False
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    path = write_json(args.out / "chunksize.json", {
        "config": {"events_per_file": args.events, "files_per_dataset": args.files, "sizes": sizes,
                   "reps": args.reps, "workers": args.workers, "limit_mb": args.limit,
                   "mb_per_kevent": args.mb_per_kevent, "targets": targets, "tolerance": args.tolerance,
                   "cpu_count": os.cpu_count(), "python": platform.python_version(),
                   "load_before": load_before, "load_after": load_after},
        "results": results, "summary": summary, "targets": targets_met,
    })
    print(f"wrote {path}")
    return 0 if targets_met and all(targets_met.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
