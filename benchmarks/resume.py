"""Resume after a kill at 50%, and the cost of checkpoints on a run that is not killed.

Run from the repository root::

    python -m benchmarks.resume --quick      # 3 datasets x 2 files x 20,000 events
    python -m benchmarks.resume              # 3 x 4 x 50,000 events

The workload is the TopEFT-like processor
(:class:`processors.topeft_like.TopEFTLikeProcessor`) on NanoAOD-like
samples (made once into ``benchmarks/results/samples/``), with dynamic
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
library's; ``--quick`` 5, so that a run of a minute writes some).
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

from benchmarks._stats import RESULTS_DIR, print_table, quiet_logging, write_json

__all__ = ["child", "main"]

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
        "events_done_at_kill": m["killed_events_done"], "events_resumed": resumed["checkpoint"]["resumed_entries"],
        # the same ratio per event left to run (work lost after the last checkpoint not counted against it)
        "resume_ratio_per_event": resumed["wall_s"] / (rest * (plain["events"] - resumed["checkpoint"]["resumed_entries"])
                                                       / (plain["events"] / 2)),
        "resumed_preprocess_s": resumed["preprocess_s"],
        "same_output": _same(plain["summary"], resumed["summary"]) and _same(plain["summary"], full["summary"]),
        "coverage_ok": plain["coverage_ok"] and full["coverage_ok"] and resumed["coverage_ok"],
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        quiet_logging()
        return child(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 files of 20,000 events per dataset")
    p.add_argument("--events", type=int, default=None, help="events per file")
    p.add_argument("--files", type=int, default=None, help="files per dataset")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--every-s", type=float, default=None, help="seconds between checkpoints")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "resume.json")
    args = p.parse_args(argv)
    quiet_logging()
    from benchmarks._workloads import sample_fileset

    events = args.events or (20_000 if args.quick else 50_000)
    files = args.files or (2 if args.quick else 4)
    every_s = args.every_s or (5.0 if args.quick else 60.0)
    fileset = sample_fileset(events, files)
    load_before = open("/proc/loadavg").read().split()[:3]
    m = measure(fileset, workers=args.workers, every_s=every_s, timeout=args.timeout)
    s = summarize(m)
    s["loadavg_before"], s["loadavg_after"] = load_before, open("/proc/loadavg").read().split()[:3]
    s["verdicts"] = {"resume_within_1.15x": s["resume_ratio"] <= RESUME_TARGET,
                     "overhead_under_3pct": s["overhead"] < OVERHEAD_TARGET}
    print_table(f"resume after a kill at 50% ({events} events x {files} files x 3 datasets, "
                f"{args.workers} workers, checkpoint every {every_s:.0f} s)",
                ["plain s", "rest half s", "resumed s", "ratio", "checkpointed s", "overhead", "files/h",
                 "ckpt MB"],
                [[s["plain_s"], s["remaining_half_s"], s["resumed_s"], s["resume_ratio"], s["checkpointed_s"],
                  f"{100 * s['overhead']:+.1f}%", s["files_per_hour"], s["checkpoint_mb"]]])
    print(f"events done at the kill: {s['events_done_at_kill']}, in the checkpoint resumed: "
          f"{s['events_resumed']}; ratio per event left: {s['resume_ratio_per_event']:.2f}; metadata read again "
          f"in {s['resumed_preprocess_s']:.1f} s; same output: {s['same_output']}; coverage exact: {s['coverage_ok']}")
    print(f"verdicts: {s['verdicts']}; load average before {s['loadavg_before']}, after {s['loadavg_after']}")
    write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, "summary": s, "runs": m})
    return 0 if all(s["verdicts"].values()) and s["same_output"] and s["coverage_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
