"""Task memory allocation: fixed vs max-seen vs auto (bucketing) on categories that differ.

Run from the repository root::

    python -m benchmarks.allocation                      # 3 modes, 3 repetitions
    python -m benchmarks.allocation --reps 1 --chunksize 2000

The workload is :class:`benchmarks._workloads.JetMemoryProcessor` on
NanoAOD-like samples (``ttH_EFT`` signal, ``ttbar`` background, ``data``;
made once into ``benchmarks/results/samples/``): it holds ``--kb-per-jet``
KB per jet of the chunk, a different amount per dataset, so the three
``process:<dataset>`` categories need different allocations, and tasks
of one category differ a little (jets per chunk vary). Chunks have a
fixed size (``--chunksize``; 0: dynamic sizing), so the allocation is
the only thing that adapts.

Each repetition runs ``hep_executor.run`` once per mode on one
``Manager(local_workers=--workers)`` (warmed up first):

- ``fixed``: ``resources_mode="fixed", memory_mb=--fixed-mb`` (a generous
  number a user would pick);
- ``max-seen``: the largest peak seen per category plus 5%;
- ``auto``: bucketing of the observed peaks (``hep_executor.planning._allocation``).

``--first-mb`` passes ``memory_mb`` to max-seen and auto too (their first
allocation; by default the largest worker). Measured over the process
tasks (every attempt):

- efficiency: sum of peak memory / sum of allocated memory (the brief's
  definition; an attempt stopped for memory counts its peak at the stop);
- strict efficiency: sum of the peaks of the tasks that succeeded / sum
  of every attempt's allocation (a stopped attempt is all waste);
- the same after warm-up: each category's first ``--warmup-tasks``
  attempts left out;
- the share of all allocated memory that went to those first attempts;
- retried: the share of attempts stopped for memory (each one is retried,
  at a larger allocation or split in two); makespan; lost tasks; coverage.

Targets for ``auto``: strict efficiency >= 80% (a stopped attempt's peak
is waste, not use), at most 5% of tasks retried, no lost task, coverage
complete, and no repetition that raised (a failed run is kept in the
medians as 0% efficiency and 100% retried, and fails every target). Output: a table per mode (medians of the
repetitions), a table per category (all repetitions pooled), the
verdicts and ``allocation.json``.
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
from collections import defaultdict
from pathlib import Path

from benchmarks._stats import RESULTS_DIR, median, print_table, quiet_logging, write_json
from benchmarks._workloads import JetMemoryProcessor, ready_manager, sample_fileset

__all__ = ["MODES", "main", "measure", "run_once", "task_metrics"]

log = logging.getLogger(__name__)

MODES = ("fixed", "max-seen", "auto")
DEFAULT_KB_PER_JET = {"ttH_EFT": 60.0, "ttbar": 32.0, "data": 12.0}
TARGET_EFFICIENCY = 0.80
TARGET_RETRIED = 0.05


def task_metrics(tasks: list[dict], warmup: int = 0) -> dict:
    """Efficiency and retries of process task reports (``report["tasks"]`` rows).

    Parameters
    ----------
    tasks : list of dict
        Rows with ``kind``, ``category``, ``status``, ``peak_mb``, ``memory_mb``, ``task_id``.
    warmup : int
        Leave out each category's first ``warmup`` attempts (by task id).
    """
    rows = sorted((t for t in tasks if t.get("kind") == "process"), key=lambda t: t["task_id"])
    if warmup:
        seen: dict[str, int] = defaultdict(int)
        kept = []
        for t in rows:
            seen[t["category"]] += 1
            if seen[t["category"]] > warmup:
                kept.append(t)
        rows = kept
    allocated = sum(t["memory_mb"] for t in rows)
    ok = [t for t in rows if t["status"] == "ok"]
    exhausted = sum(t["status"] == "exhausted" for t in rows)
    nan = float("nan")
    return {
        "attempts": len(rows),
        "ok": len(ok),
        "exhausted": exhausted,
        "lost": sum(t["status"] == "lost" for t in rows),
        "retried": exhausted / len(rows) if rows else nan,
        "efficiency": sum(t["peak_mb"] for t in rows) / allocated if allocated else nan,
        "strict_efficiency": sum(t["peak_mb"] for t in ok) / allocated if allocated else nan,
        "peak_mb_sum": sum(t["peak_mb"] for t in rows),
        "allocated_mb_sum": allocated,
    }


def run_once(manager, fileset: dict, processor, *, mode: str, chunksize: int | None, fixed_mb: int,
             first_mb: int | None, warmup_tasks: int) -> dict:
    """One run in ``mode``; return its metrics and the task rows (``error`` set when it raised)."""
    from hep_executor import analysis
    from hep_executor.errors import HepExecutorError

    memory = fixed_mb if mode == "fixed" else first_mb
    t0 = time.perf_counter()
    try:
        result = analysis.run(fileset, processor, "Events", manager=manager, chunksize=chunksize or None,
                              resources_mode=mode, memory_mb=memory)
    except HepExecutorError as exc:
        log.warning("run in mode %s failed: %s", mode, exc)
        return {"mode": mode, "makespan_s": time.perf_counter() - t0,
                "error": f"{type(exc).__name__}: {exc}", "coverage_ok": False, "tasks": []}
    elapsed = time.perf_counter() - t0
    report = result.report
    keep = ("task_id", "category", "kind", "status", "wall", "peak_mb", "memory_mb", "events")
    tasks = [{k: t.get(k) for k in keep} for t in report["tasks"]]
    return {
        "mode": mode,
        "makespan_s": elapsed,
        "error": None,
        "coverage_ok": bool(report.get("coverage_ok")),
        "splits": report["totals"]["splits"],
        "escalations": report["totals"]["escalations"],
        "events": report["totals"]["events"],
        **task_metrics(tasks),
        "after_warmup": task_metrics(tasks, warmup_tasks),
        "allocator": report.get("allocation", {}),
        "tasks": tasks,
    }


def _warm_up(manager, fileset: dict, processor) -> None:
    from hep_executor import analysis

    analysis.run(fileset, processor, "Events", manager=manager, chunksize=250, maxchunks=2,
                 resources_mode="none")


def measure(fileset: dict, processor, *, modes: list[str], reps: int, workers: int, chunksize: int | None,
            fixed_mb: int, first_mb: int | None, warmup_tasks: int) -> dict:
    """Run every mode ``reps`` times, interleaved, on one warm manager; ``{mode: [runs]}``."""
    out: dict[str, list] = {mode: [] for mode in modes}
    with ready_manager(workers) as manager:
        _warm_up(manager, fileset, processor)
        for rep in range(reps):
            for mode in modes:
                run = run_once(manager, fileset, processor, mode=mode, chunksize=chunksize,
                               fixed_mb=fixed_mb, first_mb=first_mb, warmup_tasks=warmup_tasks)
                out[mode].append(run)
                if run["error"]:
                    log.warning("rep %d %-8s ERROR %s", rep, mode, run["error"])
                else:
                    log.warning("rep %d %-8s %5.1f s  efficiency %.0f%%  retried %.1f%%  lost %d",
                                rep, mode, run["makespan_s"], 100 * run["efficiency"],
                                100 * run["retried"], run["lost"])
                if run["error"] or run.get("exhausted"):
                    _warm_up(manager, fileset, processor)  # stopped slots come back cold
    return out


def _summary(runs: list[dict]) -> dict:
    good = [r for r in runs if not r["error"]]
    keys = ("makespan_s", "attempts", "exhausted", "lost", "splits", "escalations")
    out = {k: median(r[k] for r in good) for k in keys}
    # a run that raised stays in the medians: nothing of what it allocated was used, all of it retried
    failed = {"efficiency": 0.0, "strict_efficiency": 0.0, "retried": 1.0}
    for k, worst in failed.items():
        out[k] = median(r[k] if not r["error"] else worst for r in runs)
    for k in ("efficiency", "strict_efficiency", "retried"):
        out[f"{k}_after_warmup"] = median(r["after_warmup"][k] for r in good)
    # memory allocated to each category's first attempts, as a share of all allocated
    out["warmup_alloc_share"] = median(1 - r["after_warmup"]["allocated_mb_sum"] / r["allocated_mb_sum"]
                                       for r in good if r["allocated_mb_sum"])
    out["coverage_ok"] = bool(good) and all(r["coverage_ok"] for r in good)
    out["runs_ok"], out["runs"] = len(good), len(runs)
    return out


def _per_category(runs_by_mode: dict) -> list[list]:
    rows = []
    for mode, runs in runs_by_mode.items():
        by_cat: dict[str, list] = defaultdict(list)
        for run in runs:
            for t in run["tasks"]:
                if t["kind"] == "process":
                    by_cat[t["category"]].append(t)
        for cat, tasks in sorted(by_cat.items()):
            m = task_metrics(tasks)
            ok = [t for t in tasks if t["status"] == "ok"]
            rows.append([mode, cat.split(":", 1)[-1], m["attempts"], m["exhausted"],
                         median(t["peak_mb"] for t in ok), max((t["peak_mb"] for t in ok), default=float("nan")),
                         median(t["memory_mb"] for t in tasks), m["efficiency"], m["retried"]])
    return rows


def main(argv=None) -> int:
    """Command-line entry: measure, print the tables and the verdicts, write JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.allocation", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per file (20000)")
    parser.add_argument("--files", type=int, default=2, help="files per dataset (2)")
    parser.add_argument("--chunksize", type=int, default=1000, help="events per chunk; 0: dynamic sizing (1000)")
    parser.add_argument("--modes", default=",".join(MODES), help="allocation modes, comma-separated")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; medians are reported (3)")
    parser.add_argument("--workers", type=int, default=2, help="local workers, one core each (2)")
    parser.add_argument("--fixed-mb", type=int, default=2000, help="memory per task in fixed mode, MB (2000)")
    parser.add_argument("--first-mb", type=int, default=0,
                        help="first allocation of max-seen and auto, MB (0: the largest worker)")
    parser.add_argument("--kb-per-jet", default=",".join(f"{k}={v:g}" for k, v in DEFAULT_KB_PER_JET.items()),
                        help="extra memory per jet per dataset, KB (ttH_EFT=60,ttbar=32,data=12)")
    parser.add_argument("--hold", type=float, default=0.2, help="seconds each task holds its memory (0.2)")
    parser.add_argument("--warmup-tasks", type=int, default=10,
                        help="first attempts per category left out of the after-warm-up numbers (10)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for allocation.json")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes must name some of {', '.join(MODES)}")
    try:
        kb_per_jet = {k.strip(): float(v) for k, v in (p.split("=") for p in args.kb_per_jet.split(","))}
    except ValueError:
        parser.error(f"--kb-per-jet must look like ttH_EFT=60,ttbar=32,data=12, got {args.kb_per_jet!r}")
    if min(args.events, args.files, args.reps, args.workers, args.fixed_mb) < 1 or args.chunksize < 0:
        parser.error("--events, --files, --reps, --workers and --fixed-mb must be at least 1, --chunksize >= 0")
    quiet_logging(args.log_level)

    fileset = sample_fileset(args.events, args.files)
    processor = JetMemoryProcessor(kb_per_jet, hold_s=args.hold)
    load_before = os.getloadavg()
    print(f"allocation: {args.events} events x {args.files} files x {len(fileset)} datasets, chunks of "
          f"{args.chunksize or 'dynamic size'}, KB per jet {kb_per_jet}, fixed {args.fixed_mb} MB, first "
          f"allocation {args.first_mb or 'largest worker'}, {args.workers} workers, {args.reps} reps; "
          f"{os.cpu_count()} cores, load {load_before[0]:.2f}")
    results = measure(fileset, processor, modes=modes, reps=args.reps, workers=args.workers,
                      chunksize=args.chunksize or None, fixed_mb=args.fixed_mb, first_mb=args.first_mb or None,
                      warmup_tasks=args.warmup_tasks)
    summary = {mode: _summary(runs) for mode, runs in results.items()}

    rows = [[mode, s["efficiency"], s["strict_efficiency"], s["efficiency_after_warmup"], s["retried"],
             s["retried_after_warmup"], s["warmup_alloc_share"], s["attempts"], s["makespan_s"], s["lost"],
             "ok" if s["coverage_ok"] else "NOT OK", f"{s['runs_ok']}/{s['runs']}"]
            for mode, s in summary.items()]
    print_table(f"Allocation modes (median of {args.reps})",
                ["mode", "efficiency", "strict eff.", f"eff. after {args.warmup_tasks}", "retried",
                 f"retried after {args.warmup_tasks}",
                 f"alloc. in first {args.warmup_tasks}", "attempts", "makespan s", "lost", "coverage", "runs ok"],
                rows)
    print_table("Per category (all repetitions pooled)",
                ["mode", "dataset", "attempts", "stopped", "median peak MB", "max peak MB",
                 "median alloc MB", "efficiency", "retried"], _per_category(results))

    targets = {}
    if "auto" in summary:
        s = summary["auto"]
        targets[f"auto strict efficiency >= {TARGET_EFFICIENCY:.0%}"] = s["strict_efficiency"] >= TARGET_EFFICIENCY
        targets[f"auto retried <= {TARGET_RETRIED:.0%}"] = s["retried"] <= TARGET_RETRIED
        targets["auto: no lost task, coverage complete"] = s["lost"] == 0 and s["coverage_ok"]
        targets["auto: every repetition ran"] = s["runs_ok"] == s["runs"]
        for text, ok in targets.items():
            print(f"target {text}: {'HOLDS' if ok else 'MISSED'}")
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    path = write_json(args.out / "allocation.json", {
        "config": {"events_per_file": args.events, "files_per_dataset": args.files, "chunksize": args.chunksize,
                   "modes": modes, "reps": args.reps, "workers": args.workers, "fixed_mb": args.fixed_mb,
                   "first_mb": args.first_mb, "kb_per_jet": kb_per_jet, "hold_s": args.hold,
                   "warmup_tasks": args.warmup_tasks, "cpu_count": os.cpu_count(),
                   "python": platform.python_version(), "load_before": load_before, "load_after": load_after},
        "runs": results, "summary": summary, "targets": targets,
    })
    print(f"wrote {path}")
    return 0 if targets and all(targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
