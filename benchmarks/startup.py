"""What a worker's start asks of the file system: metadata calls and seconds to its first chunk.

Runs a worker under ``strace -f`` and counts the metadata calls (stat,
lstat, newfstatat, statx, openat, access, readlink, getdents) of the
worker and its slots from its start to its first finished chunk, then of
a warm slot's later task, and splits them by path prefix: calls under the
environment's prefix (and this source tree) are what a shared file system
would serve. Cases:

- worker from the installed environment (this interpreter's prefix);
- worker from a packed environment unpacked on local disk (``--env-dir``,
  a folder made by :func:`hep_executor.batch._env.unpack`; skipped without it);
- a warm slot's later task (from the installed-env run);
- for comparison, a worker from a pex of this environment (``--pex FILE``,
  its ``PEX_ROOT`` already filled by one first run, as on a node that ran
  one job before; calls on the .pex file itself count as shared);
- a fresh ``python -c 'import coffea'``, what a task-per-process system pays per task.

Prints a table and what 1,000 workers starting at once would ask of a
shared file system. ``--quick`` runs one chunk of a small file.

    python benchmarks/startup.py --quick [--env-dir /tmp/hep-env-HASH] [--pex env.pex --pex-root DIR]

Measured (2 cores, load average 1.9-3.7, one 1000-event chunk of the
TopEFT-like processor, workers preloading coffea as real runs do;
``nice -n 19 python benchmarks/startup.py --quick --env-dir DIR``):

    case                                          metadata calls  on shared path  seconds
    worker, installed env: start to first chunk            13415            8877     3.72
    warm slot: a later task                                    3               0
    worker, unpacked env on local disk                     13422              46     2.99
    fresh python -c 'import coffea' (per task)             12354            8089     3.21

1,000 workers from the installed env on a shared file system: 8.9 million
metadata calls before the first chunk; from the unpacked env 46,000 (the
interpreter's RPATH still probes the original prefix for libc). The warm
slot's 3 calls: one stat of the data file (its warm handle is still the
file's) and the slot's own memory probe. uproot's default local source
(fsspec) opened and stat'ed the file again for every read, 74 calls per
task; local files are now read through handles kept open
(``MultithreadedFileSource``).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hep_executor import Manager  # noqa: E402
from hep_executor.analysis import PRELOAD, ChunkSpec, process_chunk  # noqa: E402

CALLS = ("stat", "lstat", "newfstatat", "statx", "openat", "open", "access", "faccessat", "faccessat2",
         "readlink", "readlinkat", "getdents64")
_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(\w+)\((.*)$")
_PATH = re.compile(r'"([^"]*)"')


def strace_prefix(log: Path) -> list[str]:
    return ["strace", "-f", "-qq", "-ttt", "-e", "trace=" + ",".join(CALLS), "-o", str(log)]


def count(log: Path, shared: tuple[str, ...], t0: float = 0.0, t1: float = float("inf")) -> dict:
    """Metadata calls in ``log`` between ``t0`` and ``t1``: total, on the shared prefixes, by call."""
    by_call: collections.Counter = collections.Counter()
    on_shared = 0
    for line in log.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if match is None or "resumed>" in line:
            continue
        ts = float(match.group(2))
        if not t0 <= ts <= t1:
            continue
        by_call[match.group(3)] += 1
        path = _PATH.search(match.group(4))
        if path and path.group(1).startswith(shared):
            on_shared += 1
    return {"total": sum(by_call.values()), "shared": on_shared, "by_call": dict(by_call)}


def run_worker_case(python: list[str], env: dict, chunk: ChunkSpec, processor, folder: Path,
                    shared: tuple[str, ...]) -> tuple[dict, dict, float]:
    """Start a traced worker, run two chunks; return (start-to-first counts, warm-task counts, seconds)."""
    log = folder / f"worker-{len(list(folder.iterdir()))}.strace"
    key_file = folder / "key"
    fn = _task(processor)
    with Manager(local_workers=0, key_file=str(key_file)) as manager:
        t_start = time.time()
        cmd = strace_prefix(log) + python + ["-m", "hep_executor.worker", "--manager", manager.address,
                                             "--key-file", str(key_file), "--cores", "1",
                                             "--preload", ",".join(PRELOAD)]
        proc = subprocess.Popen(cmd, env=env, cwd=folder)
        manager.submit(fn, chunk)
        first = _wait_one(manager)
        t_first = time.time()
        manager.submit(fn, chunk)
        _wait_one(manager)
        t_second = time.time()
        assert first.ok, first.error
    proc.wait(timeout=60)
    return (count(log, shared, t1=t_first), count(log, shared, t0=t_first, t1=t_second),
            t_first - t_start)


def _task(processor):
    import functools

    return functools.partial(process_chunk, processor_instance=processor)


def _wait_one(manager):
    while True:
        got = manager.wait(timeout=5)
        if got:
            return got[0]


def import_coffea_case(folder: Path, shared: tuple[str, ...]) -> tuple[dict, float]:
    log = folder / "import-coffea.strace"
    t0 = time.time()
    subprocess.run(strace_prefix(log) + [sys.executable, "-c", "import coffea.processor, coffea.nanoevents"],
                   check=True, cwd=folder)
    return count(log, shared), time.time() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small file (default: the same; kept for CI)")
    parser.add_argument("--env-dir", help="an unpacked packed environment (hep-executor pack-env + unpack)")
    parser.add_argument("--pex", help="a .pex of this environment (venv mode), run with env -i")
    parser.add_argument("--pex-root", help="the PEX_ROOT its first run filled (default: a folder next to it)")
    parser.add_argument("--workers", type=int, default=1000, help="workers in the extrapolation")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="hep-startup-"))
    try:
        _print(_measure(args, folder), args.workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _measure(args, folder: Path) -> list:
    """The table's rows: (case, counts, seconds); samples, logs and keys go in ``folder``."""
    from hep_executor.demo import make_samples
    from processors.topeft_like import TopEFTLikeProcessor

    made = make_samples(folder / "samples", events_per_file=2000, files_per_dataset=1, datasets=["ttbar"],
                        extra_branches=0)
    chunk = ChunkSpec("ttbar", str(made["ttbar"][0]), "Events", 0, 1000)
    installed_shared = (os.path.realpath(sys.prefix), str(ROOT))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    start, warm, secs = run_worker_case([sys.executable], env, chunk, TopEFTLikeProcessor(), folder,
                                        installed_shared)
    rows.append(("worker, installed env: start to first chunk", start, secs))
    rows.append(("warm slot: a later task", warm, None))
    if args.env_dir:
        env_dir = Path(args.env_dir).resolve()
        clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
        start_u, _, secs_u = run_worker_case([str(env_dir / "bin" / "hep-python")], clean, chunk,
                                             TopEFTLikeProcessor(), folder, installed_shared)
        rows.append(("worker, unpacked env on local disk: start to first chunk", start_u, secs_u))
    if args.pex:
        pex = Path(args.pex).resolve()
        pex_root = args.pex_root or pex.parent / "pex-root"
        pex_env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "PEX_ROOT": str(pex_root)}  # its shebang needs python3.11 on PATH
        start_p, _, secs_p = run_worker_case([str(pex)], pex_env, chunk, TopEFTLikeProcessor(), folder,
                                             installed_shared + (str(pex),))
        rows.append(("worker from a pex (PEX_ROOT filled): start to first chunk", start_p, secs_p))
    imp, secs_i = import_coffea_case(folder, installed_shared)
    rows.append(("fresh python -c 'import coffea' (per task)", imp, secs_i))
    return rows


def _print(rows, workers: int) -> None:
    load = open("/proc/loadavg").read().split()[:3]
    print(f"load average: {' '.join(load)}  (machine shared; seconds are indicative)")
    print(f"{'case':58s} {'metadata calls':>14s} {'on shared path':>15s} {'seconds':>8s}")
    for name, counts, secs in rows:
        s = f"{secs:8.2f}" if secs is not None else f"{'':8s}"
        print(f"{name:58s} {counts['total']:14d} {counts['shared']:15d} {s}")
        top = sorted(counts["by_call"].items(), key=lambda kv: -kv[1])[:4]
        print(f"{'':60s}" + ", ".join(f"{k} {v}" for k, v in top))
    first = rows[0][1]["shared"]
    print(f"\n{workers:,} workers starting at once from the installed env on a shared file system: "
          f"{workers * first:,} metadata calls on it before any chunk is done")
    for name, counts, _ in rows:
        if name.startswith("worker, unpacked"):
            print(f"{workers:,} workers from the unpacked env: {workers * counts['shared']:,} on the shared "
                  f"path (plus one archive read per node)")
        if name.startswith("worker from a pex"):
            print(f"{workers:,} workers from the pex: {workers * counts['shared']:,} on the shared path")
        if name.startswith("fresh python"):
            print(f"a task-per-process system, per 1,000 tasks: {1000 * counts['shared']:,} calls on the "
                  f"shared path")


if __name__ == "__main__":
    sys.exit(main())
