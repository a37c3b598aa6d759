"""Many small files: first chunk result, total time and preprocessing, preprocess-first vs streaming.

Run from the repository root::

    python -m benchmarks.manyfiles               # 20,000 files
    python -m benchmarks.manyfiles --quick       # 2,000 files
    python -m benchmarks.manyfiles --files 500
    python -m benchmarks.manyfiles --plan-only    # the manager's planning alone, 2,000 vs 20,000 files

A few small NanoAOD-like files (:func:`hep_executor.demo._samples.make_samples`,
``--events`` per file, no filler branches) are written once and hard-linked
(copied where links fail) under distinct names, half per dataset (``ttbar``,
``data``). One ``Manager`` with 2 local workers, warmed by a run over a few
files, runs ``hep_executor.run(fileset, DimuonProcessor(), chunksize=...)``
(one chunk per file) three ways:

- (a) ``streaming=False``: every file's metadata read before the first chunk
  (with a fresh metadata cache, which this run fills);
- (b) ``streaming=True``, ``metadata_cache=False``: a file's chunks start as
  soon as its metadata is back;
- (c) ``streaming=True`` with the cache (a) filled: no metadata read.

Printed per run: seconds from ``run()`` to the first chunk result, total,
preprocessing (until the last file's metadata arrived; the cache look-up
for (c)), manager CPU seconds (this process, user+sys) and peak RSS of this
process so far (ru_maxrss, monotone across runs), plus the load average.
Targets: (b) first chunk result < 2 s; (c) preprocessing < 5% of (a)'s;
(b) total <= 1.2 x max(preprocessing alone, processing alone), the two
taken from (a) (its preprocessing, and its total minus it).

``--plan-only`` runs no worker: it feeds the files' segments one by one into a
streaming :class:`~hep_executor.analysis._sources.ChunkSource` with a dynamic
sizer, cuts every chunk, files a made-up successful report for each, and checks
the coverage of the chunks against the plan, at 2,000 and 20,000 files; it
prints seconds (a pass without tracemalloc) and peak traced memory (a second
pass under it) per file, which stay flat when plan, sizer and coverage are
O(files + chunks). Each made-up report is filed as
:func:`hep_executor.run` files it (:class:`~hep_executor.analysis.TaskRows`,
its row written to a task log in a temporary folder): with every row kept
(``--keep-tasks 0``: the report's rows before they were capped) and with
the first ``--keep-tasks`` (default 10,000) kept.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from hep_executor import Manager, run
from hep_executor.demo import make_samples


def make_fileset(folder: Path, n_files: int, events: int) -> dict[str, list[str]]:
    """``n_files`` distinct names over two datasets, linked to four generated files."""
    made = make_samples(folder / "src", events_per_file=events, files_per_dataset=2,
                        datasets=["ttbar", "data"], extra_branches=0, block_size=max(1, events // 2))
    fileset: dict[str, list[str]] = {}
    for dataset, sources in made.items():
        fileset[dataset] = []
        for i in range(n_files // 2):
            path = folder / f"{dataset}_{i:05d}.root"
            try:
                os.link(sources[i % 2], path)
            except OSError:
                shutil.copyfile(sources[i % 2], path)
            fileset[dataset].append(str(path))
    return fileset


def timed(manager, fileset, processor, chunksize: int, **options) -> dict:
    """One run; its figures."""
    first: list[float] = []
    t0 = time.perf_counter()
    cpu0 = _cpu()

    def progress(stage, result=None, item=None):
        if stage == "process" and not first and result.ok:
            first.append(time.perf_counter() - t0)

    result = run(fileset, processor, manager=manager, chunksize=chunksize, resources_mode="none",
                 progress=progress, **options)
    total = time.perf_counter() - t0
    return {"first_s": first[0] if first else float("nan"), "total_s": total,
            "preprocess_s": result.report["totals"]["preprocess_s"],
            "preprocess_tasks": result.report["totals"]["preprocess_tasks"],
            "chunks": result.report["totals"]["chunks"], "cpu_s": _cpu() - cpu0,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "events": sum(c["all"] for c in result.output["cutflow"].values())}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plan_only(n_files: int, events: int, keep_tasks: int = 0) -> dict:
    """The manager's planning of ``n_files`` files of ``events`` entries, with no worker; its figures.

    ``keep_tasks``: task rows held in memory (0: all, and no task log). Timed
    once without tracemalloc (which slows every allocation several times),
    then run again under it for the peak of traced memory.
    """
    t0 = time.perf_counter()
    chunks, ok, kept = _plan_loop(n_files, events, keep_tasks)
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    _plan_loop(n_files, events, keep_tasks)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {"files": n_files, "chunks": chunks, "s": seconds, "peak_mb": peak, "ok": ok, "kept": kept,
            "keep": keep_tasks}


def _plan_loop(n_files: int, events: int, keep_tasks: int) -> tuple[int, bool, int]:
    """Segments in one by one, every chunk cut and reported, coverage checked: ``(chunks, coverage ok, rows kept)``."""
    from hep_executor.analysis import ChunkSource, ChunkSpec, Segment, TaskRows
    from hep_executor.engine import TaskReport, TaskResult
    from hep_executor.planning import ChunkSizer, Coverage

    folder = Path(tempfile.mkdtemp(prefix="hepx-plan-"))
    rows = TaskRows(folder / "tasks.jsonl", keep=keep_tasks) if keep_tasks else TaskRows(keep=10**12)
    source = ChunkSource([], sizer=ChunkSizer({"wall_time": 1.0}, initial=max(1, events // 4)), spread=2, more=True)
    recorded: dict[str, list] = {}
    task = 0
    for i in range(n_files):
        dataset = ("ttbar", "data")[i % 2]
        name = f"/data/{dataset}_{i:05d}.root"
        source.add([Segment(ChunkSpec(dataset, name, "Events", 0, events, f"uuid-{i}", None, events), 0, events)])
        if i == n_files - 1:
            source.close()
        while items := source.take(64):
            for item in items:
                task += 1
                n = item.entrystop - item.entrystart
                report = TaskReport(task, f"process:{item.dataset}", "ok", wall=n * 1e-3, peak_mb=100.0)
                source.observe(item, TaskResult(task, report))
                rows.add(report, events=n, file=item.filename)
                recorded.setdefault(item.filename, []).append((item.entrystart, item.entrystop))
    ok = Coverage.check(recorded, source.planned).ok
    rows.close()
    shutil.rmtree(folder, ignore_errors=True)
    return task, ok, len(rows.rows)


def report_plan(rows: list[dict]) -> None:
    print(f"planning alone (no workers); load average {open('/proc/loadavg').read().strip()}")
    print(f"{'files':>7s} {'chunks':>7s} {'rows kept':>10s} {'time(s)':>8s} {'us/file':>8s} {'peak MB':>8s} "
          f"{'KB/file':>8s} coverage")
    for r in rows:
        kept = f"{r['kept']} (all)" if not r["keep"] else str(r["kept"])
        print(f"{r['files']:7d} {r['chunks']:7d} {kept:>10s} {r['s']:8.2f} {1e6 * r['s'] / r['files']:8.1f} "
              f"{r['peak_mb']:8.1f} {1024 * r['peak_mb'] / r['files']:8.2f} {'ok' if r['ok'] else 'WRONG'}")
    for keep in sorted({r["keep"] for r in rows}):
        group = [r for r in rows if r["keep"] == keep]
        small, large = group[0], group[-1]
        scale = large["files"] / small["files"]
        print(f"rows kept {keep or 'all'}: x{scale:.0f} files: time x{large['s'] / small['s']:.1f}, "
              f"memory x{large['peak_mb'] / small['peak_mb']:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 files")
    parser.add_argument("--events", type=int, default=200, help="events per file")
    parser.add_argument("--plan-only", action="store_true", help="the manager's planning alone, no workers")
    parser.add_argument("--keep-tasks", type=int, default=10_000,
                        help="--plan-only: task rows kept in memory (besides all kept)")
    args = parser.parse_args(argv)
    if args.plan_only:
        report_plan([plan_only(n, args.events, keep) for keep in (0, args.keep_tasks) for n in (2_000, 20_000)])
        return 0
    n_files = 2_000 if args.quick else args.files
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from processors.dimuon import DimuonProcessor

    folder = Path(tempfile.mkdtemp(prefix="hepx-manyfiles-"))
    try:
        fileset = make_fileset(folder, n_files, args.events)
        warmup = {ds: files[:4] for ds, files in fileset.items()}
        db = folder / "metadata.sqlite"
        with Manager(local_workers=2) as manager:
            manager.wait_for_workers(2, timeout=120)
            run(warmup, DimuonProcessor(), manager=manager, chunksize=args.events, metadata_cache=False)
            rows = {
                "a preprocess-first": timed(manager, fileset, DimuonProcessor(), args.events,
                                            streaming=False, metadata_cache=db),
                "b streaming": timed(manager, fileset, DimuonProcessor(), args.events, metadata_cache=False),
                "c streaming, warm cache": timed(manager, fileset, DimuonProcessor(), args.events,
                                                 metadata_cache=db),
            }
        report(rows, n_files)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def report(rows: dict, n_files: int) -> None:
    print(f"{n_files} files, 2 local workers, DimuonProcessor; load average {open('/proc/loadavg').read().strip()}")
    print(f"{'run':26s} {'first(s)':>9s} {'total(s)':>9s} {'pre(s)':>8s} {'pre tasks':>9s} {'chunks':>7s} "
          f"{'mgr cpu(s)':>10s} {'peak MB':>8s}")
    for name, r in rows.items():
        print(f"{name:26s} {r['first_s']:9.2f} {r['total_s']:9.1f} {r['preprocess_s']:8.2f} "
              f"{r['preprocess_tasks']:9d} {r['chunks']:7d} {r['cpu_s']:10.1f} {r['rss_mb']:8.0f}")
    a, b, c = rows.values()
    assert a["events"] == b["events"] == c["events"], "the three runs disagree on the events"
    pre_alone, proc_alone = a["preprocess_s"], a["total_s"] - a["preprocess_s"]
    bound = 1.2 * max(pre_alone, proc_alone)
    print(f"(b) first chunk result {b['first_s']:.2f} s (target < 2 s): {'met' if b['first_s'] < 2 else 'NOT met'}")
    ratio = c["preprocess_s"] / a["preprocess_s"] if a["preprocess_s"] else float("nan")
    print(f"(c) preprocessing {100 * ratio:.1f}% of (a)'s (target < 5%): {'met' if ratio < 0.05 else 'NOT met'}")
    print(f"(b) total {b['total_s']:.1f} s vs 1.2 x max(pre {pre_alone:.1f}, proc {proc_alone:.1f}) = {bound:.1f} s: "
          f"{'met' if b['total_s'] <= bound else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())
