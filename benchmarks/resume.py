"""Resume after a kill at 50%, and the cost of checkpoints on a run that is not killed.

Run from the repository root::

    python -m benchmarks.resume --quick      # 3 datasets x 2 files x 20,000 events (runs of 5-15 s)
    python -m benchmarks.resume --medium     # the same files linked 5 times: 3 x 10 x 20,000 (about 60 s)
    python -m benchmarks.resume              # 3 x 4 x 50,000 events

The workload is the TopEFT-like processor
(:class:`processors.topeft_like.TopEFTLikeProcessor`) on NanoAOD-like
samples (made once into ``benchmarks/results/samples/``; ``--medium``
lists each file of the quick samples under 5 names, symbolic links made
in a second, so its samples cost no more than the quick ones), with dynamic
chunk sizes. Every run is a process of its own (as a real manager is),
with ``--workers`` local workers that join before its clock starts; it
logs each chunk's events as it comes back. The runs, in this order:

1. ``plain``: ``run(...)`` without a checkpoint; the time at which half
   the events had come back gives "the remaining half of an
   uninterrupted run";
2. ``checkpointed``: ``run(..., checkpoint=DIR)`` to the end: its time
   against ``plain`` is the checkpoint overhead (target under 3%), and
   its checkpoint files per hour are reported;
3. ``killed``: the same, SIGKILLed once half the events have come back;
4. ``resumed``: the same call with the same DIR, to the end: its time
   against the remaining half of ``plain`` (target at most 1.15x). It
   includes reading the files' metadata again and the work done after
   the last checkpoint before the kill (lost, run again; reported).

Checkpoints are written every ``--every-s`` seconds (default 60, the
library's; ``--quick`` and ``--medium`` 5, so that a run of a minute
writes some). ``--repeat N`` measures N times and reports medians.

What a resumed run pays that the remaining half of an uninterrupted one
does not, as measured (reported per run): its start to the first chunk
sent (``first_submit_s``: the task function prepared, the checkpoint and
the metadata cache read, the plan cut; the workers have joined before the
clock starts, in both runs), the events processed after the last
checkpoint before the kill (lost with the manager), and the chunks that
were running at the kill (their work so far lost; the uninterrupted run
had them part done at its half-way mark). ``ratio per event left``
divides out the first of those losses.
Output: the table, the verdicts and ``resume.json``; exit code 1 when a
target is missed or the outputs differ.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make ``benchmarks`` importable as such
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._stats import RESULTS_DIR, median, print_table, quiet_logging, write_json

__all__ = ["child", "linked_fileset", "main"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
OVERHEAD_TARGET = 0.03
RESUME_TARGET = 1.15


def child(argv: list[str]) -> int:
    """One run in this process: ``FILESET LOG OUT WORKERS EVERY_S [DIR]``; writes OUT as JSON."""
    from benchmarks._workloads import ready_manager
    from hep_executor import run
    from processors.topeft_like import TopEFTLikeProcessor

    fileset_path, log_path, out_path, workers, every_s, *folder = argv
    fileset = json.loads(Path(fileset_path).read_text())
    with ready_manager(int(workers)) as manager, open(log_path, "a") as fh:
        submit, first = manager.submit, []

        def timed_submit(*args, **kwargs):
            if not first:
                first.append(time.perf_counter() - t0)
            return submit(*args, **kwargs)

        manager.submit = timed_submit
        t0 = time.perf_counter()

        def progress(stage, result=None, item=None):
            if stage == "process" and result.ok:
                fh.write(f"{time.perf_counter() - t0:.4f} {item.entrystop - item.entrystart}\n")
                fh.flush()

        result = run(fileset, TopEFTLikeProcessor(), manager=manager, progress=progress,
                     checkpoint=folder[0] if folder else None, checkpoint_every_s=float(every_s))
        wall = time.perf_counter() - t0
    totals = result.report["totals"]
    out = {"wall_s": wall, "events": totals["events"], "chunks": totals["chunks"],
           "preprocess_s": totals["preprocess_s"], "coverage_ok": result.coverage.ok,
           "first_submit_s": first[0] if first else None,
           "sizes": [t["events"] for t in result.report["tasks"] if t["kind"] == "process" and t["status"] == "ok"],
           "checkpoint": {k: v for k, v in result.report.get("checkpoint", {}).items() if k != "resumed_ranges"},
           "summary": _summary(result.output)}
    Path(out_path).write_text(json.dumps(out))
    return 0


def _summary(output) -> dict:
    """What runs are compared on: the cutflow counts, the sums of weights and of every histogram."""
    return {"cutflow": {ds: {k: int(v) for k, v in c.items()} for ds, c in output["cutflow"].items()},
            "sumw": output["sumw"], "hists": {k: float(h.values().sum()) for k, h in output["hists"].items()}}


def _same(a: dict, b: dict) -> bool:
    """Counts equal, float sums within 1e-9 relative."""
    close = lambda x, y: abs(x - y) <= 1e-9 * max(abs(x), abs(y))  # noqa: E731
    return (a["cutflow"] == b["cutflow"] and a["sumw"].keys() == b["sumw"].keys()
            and all(close(a["sumw"][k], b["sumw"][k]) for k in a["sumw"])
            and all(close(a["hists"][k], b["hists"][k]) for k in a["hists"]))


def _timeline(path: Path) -> list[tuple[float, int]]:
    if not path.exists():
        return []
    return [(float(t), int(n)) for t, n in (line.split() for line in path.read_text().splitlines() if line)]


def _start(work: Path, name: str, fileset: Path, workers: int, every_s: float, folder: Path | None):
    logf, out = work / f"{name}.log", work / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmarks.resume", "--child", str(fileset), str(logf), str(out),
           str(workers), str(every_s), *([str(folder)] if folder else [])]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    return proc, logf, out


def _finish(proc, out: Path, timeout: float) -> dict:
    if proc.wait(timeout=timeout) != 0:
        msg = f"run {out.stem} failed with exit code {proc.returncode}"
        raise RuntimeError(msg)
    return json.loads(out.read_text())


def _kill_at(proc, logf: Path, events: int, timeout: float) -> float:
    """SIGKILL ``proc`` once its log shows ``events`` done; return the run's time then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = _timeline(logf)
        if sum(n for _, n in line) >= events:
            os.killpg(proc.pid, signal.SIGKILL)  # the manager and its workers, as a lost node
            proc.wait(timeout=60)
            return line[-1][0]
        if proc.poll() is not None:
            msg = "the run to be killed ended first"
            raise RuntimeError(msg)
        time.sleep(0.02)
    msg = f"half the events not done within {timeout} s"
    raise RuntimeError(msg)


def measure(fileset: dict, *, workers: int, every_s: float, timeout: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="hepx-resume-"))
    try:
        fs = work / "fileset.json"
        fs.write_text(json.dumps(fileset))
        proc, logf, out = _start(work, "plain", fs, workers, every_s, None)
        plain = _finish(proc, out, timeout)
        line, half = _timeline(logf), plain["events"] / 2
        t_half = next(t for t, c in _cumulative(line) if c >= half)
        proc, _, out = _start(work, "checkpointed", fs, workers, every_s, work / "ckpt-full")
        full = _finish(proc, out, timeout)
        proc, logf, _ = _start(work, "killed", fs, workers, every_s, work / "ckpt")
        t_kill = _kill_at(proc, logf, half, timeout)
        killed_events = sum(n for _, n in _timeline(logf))
        proc, _, out = _start(work, "resumed", fs, workers, every_s, work / "ckpt")
        resumed = _finish(proc, out, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"plain": plain, "checkpointed": full, "resumed": resumed, "t_half_s": t_half,
            "t_kill_s": t_kill, "killed_events_done": killed_events}


def _cumulative(line):
    total = 0
    for t, n in line:
        total += n
        yield t, total


def summarize(m: dict) -> dict:
    plain, full, resumed = m["plain"], m["checkpointed"], m["resumed"]
    rest = plain["wall_s"] - m["t_half_s"]
    ck = full["checkpoint"]
    return {
        "plain_s": plain["wall_s"], "remaining_half_s": rest, "checkpointed_s": full["wall_s"],
        "overhead": full["wall_s"] / plain["wall_s"] - 1, "resumed_s": resumed["wall_s"],
        "resume_ratio": resumed["wall_s"] / rest,
        "checkpoint_files": ck["files_written"], "files_per_hour": ck["files_written"] / full["wall_s"] * 3600,
        "checkpoint_mb": ck["bytes_written"] / 2**20, "write_s": ck["write_s"],
        # the checkpoint writer thread's time against the run's: the overhead free of the load's noise
        "write_share": ck["write_s"] / full["wall_s"],
        "events_done_at_kill": m["killed_events_done"], "events_resumed": resumed["checkpoint"]["resumed_entries"],
        # the same ratio per event left to run (work lost after the last checkpoint not counted against it)
        "resume_ratio_per_event": resumed["wall_s"] / (rest * (plain["events"] - resumed["checkpoint"]["resumed_entries"])
                                                       / (plain["events"] / 2)),
        "resumed_preprocess_s": resumed["preprocess_s"], "resumed_first_submit_s": resumed["first_submit_s"],
        "same_output": _same(plain["summary"], resumed["summary"]) and _same(plain["summary"], full["summary"]),
        "coverage_ok": plain["coverage_ok"] and full["coverage_ok"] and resumed["coverage_ok"],
    }


def linked_fileset(fileset: dict, copies: int, folder: Path) -> dict:
    """``fileset`` with each file listed under ``copies`` names (symbolic links in ``folder``, made once)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    for dataset, files in fileset.items():
        for k in range(copies):
            for name in files:
                link = folder / f"{Path(name).stem}_copy{k}.root"
                if not link.is_symlink():
                    link.symlink_to(Path(name).resolve())
                out.setdefault(dataset, []).append(str(link))
    return out


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="2 files of 20,000 events per dataset")
    size.add_argument("--medium", action="store_true",
                      help="the quick samples, each file listed under 5 names (a run of about a minute)")
    p.add_argument("--events", type=int, default=None, help="events per file")
    p.add_argument("--files", type=int, default=None, help="files per dataset")
    p.add_argument("--copies", type=int, default=None, help="names each file is listed under (--medium: 5)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--every-s", type=float, default=None, help="seconds between checkpoints")
    p.add_argument("--repeat", type=int, default=1, help="measure this many times, report medians")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "resume.json")
    return p.parse_args(argv)


def _workload(args) -> tuple[dict, str, float]:
    """The fileset, its description and the checkpoint interval of these settings."""
    from benchmarks._workloads import SAMPLES_DIR, sample_fileset

    small = args.quick or args.medium
    events, files = args.events or (20_000 if small else 50_000), args.files or (2 if small else 4)
    copies = args.copies or (5 if args.medium else 1)
    fileset = sample_fileset(events, files)
    if copies > 1:
        fileset = linked_fileset(fileset, copies, SAMPLES_DIR / f"links_{events}x{files}x{copies}")
    text = f"{events} events x {files * copies} files x 3 datasets"
    return fileset, text, args.every_s or (5.0 if small else 60.0)


_SHOWN = ["plain_s", "remaining_half_s", "resumed_s", "resume_ratio", "resume_ratio_per_event",
          "resumed_first_submit_s", "checkpointed_s", "overhead", "write_share", "files_per_hour", "checkpoint_mb"]


def _medians(rows: list[dict]) -> dict:
    return {k: median(r[k] for r in rows) for k in rows[0] if isinstance(rows[0][k], (int, float))
            and not isinstance(rows[0][k], bool)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        quiet_logging()
        return child(argv[1:])
    args = _parse(argv)
    quiet_logging()
    fileset, text, every_s = _workload(args)
    rows, runs = [], []
    for _ in range(max(1, args.repeat)):
        load_before = open("/proc/loadavg").read().split()[:3]
        runs.append(measure(fileset, workers=args.workers, every_s=every_s, timeout=args.timeout))
        s = summarize(runs[-1])
        s["loadavg_before"], s["loadavg_after"] = load_before, open("/proc/loadavg").read().split()[:3]
        rows.append(s)
    med = _medians(rows)
    verdicts = {"resume_within_1.15x": med["resume_ratio"] <= RESUME_TARGET,
                "overhead_under_3pct": med["overhead"] < OVERHEAD_TARGET}
    same = all(r["same_output"] and r["coverage_ok"] for r in rows)
    print_table(f"resume after a kill at 50% ({text}, {args.workers} workers, checkpoint every {every_s:.0f} s)",
                ["", "plain s", "rest half s", "resumed s", "ratio", "per event left", "resumed 1st submit s",
                 "checkpointed s", "overhead", "write share", "files/h", "ckpt MB"],
                [[str(i + 1), *(r[k] for k in _SHOWN)] for i, r in enumerate(rows)]
                + ([["median", *(med[k] for k in _SHOWN)]] if len(rows) > 1 else []))
    for i, r in enumerate(rows):
        print(f"run {i + 1}: events done at the kill {r['events_done_at_kill']}, in the checkpoint resumed "
              f"{r['events_resumed']}; metadata read again in {r['resumed_preprocess_s']:.2f} s; same output: "
              f"{r['same_output']}; coverage exact: {r['coverage_ok']}; load average before "
              f"{r['loadavg_before']}, after {r['loadavg_after']}")
    print(f"verdicts (medians): {verdicts}")
    write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, "summary": med, "repeats": rows,
                          "verdicts": verdicts, "runs": runs})
    return 0 if all(verdicts.values()) and same else 1


if __name__ == "__main__":
    sys.exit(main())
