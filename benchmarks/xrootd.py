"""The TopEFT-like workload reading over ``root://`` from a local XRootD server, against local paths.

Run from the repository root (needs the Debian ``xrootd-server`` and
``xrootd-client`` packages; as root, the ``xrootd`` user they create)::

    python -m benchmarks.xrootd             # 20,000 events x 2 files x 3 datasets, 10k chunks, 5 reps
    python -m benchmarks.xrootd --quick     # 2 reps

The samples (NanoAOD-like, 500 filler branches by default; made once into
``benchmarks/results/samples/``) are copied into the folder of an
XRootD server started on 127.0.0.1 by this script
(:class:`tests.servers.xrootd.XRootDServer`) and stopped at the end, also
on an error or Ctrl-C. One ``Manager`` with 2 local workers runs
``hep_executor.run(fileset, TopEFTLikeProcessor(), chunksize=C,
resources_mode="none")`` over three routes to the same bytes:

- ``local``: the local paths;
- ``xrootd``: the ``root://`` URLs through the XRootD Python bindings
  (``handler="xrootd"``, what ``auto`` picks when they are installed);
- ``fsspec``: the same URLs through fsspec-xrootd (``handler="fsspec"``).

The workers are warm (imports, one whole run per route) before the clock
starts, but each slot closes the files it kept open before every timed
run (so each run opens its files, as a new run of an analysis would);
both copies of the files are in the page cache; repetitions are
interleaved and the medians reported; events/s are end to end,
preprocessing (each file's entries and UUID, read by the workers)
included. Outputs are checked against the local route's (the cutflow
counts). Target: each ``root://`` route reaches at least 80% of the
local rate. Output: the table, the verdicts and ``xrootd.json``.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make ``benchmarks`` and ``tests`` importable as such
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
from benchmarks.peers import clear_file_caches, cutflow_of, read_through, stop_on_sigterm

__all__ = ["ROUTES", "main", "measure", "remote_fileset"]

log = logging.getLogger(__name__)

ROUTES = ("local", "xrootd", "fsspec")
TARGET_FRACTION = 0.80
# an int: the XRootD bindings refuse a float timeout ("integer argument expected"),
# and run()'s default is 60.0
TIMEOUT_S = 60


def remote_fileset(server, fileset: dict) -> dict:
    """Copy every file of ``fileset`` into ``server``'s folder; return the same fileset as ``root://`` URLs."""
    return {dataset: [server.add_file(path, Path(path).name) for path in paths] for dataset, paths in fileset.items()}


def measure(manager, filesets: dict, processor, *, chunksize: int, reps: int, events: int, workers: int) -> dict:
    """Warm up, then run every route ``reps`` times, interleaved; return the numbers per route.

    Parameters
    ----------
    manager : hep_executor.Manager
        Its workers run every route.
    filesets : dict
        ``{route: (fileset, handler)}``.
    workers : int
        How many slots ``manager`` has (their open files are closed before each timed run).
    """
    from hep_executor import run

    for fileset, handler in filesets.values():  # a whole untimed run per route: every file seen by both slots
        run(fileset, processor, "Events", manager=manager, chunksize=chunksize, resources_mode="none",
            handler=handler, timeout=TIMEOUT_S)
    results = {route: {"time_s": [], "events_per_s": [], "preprocess_s": [], "cutflows": []} for route in filesets}
    routes = list(filesets)
    for rep in range(reps):
        for route in routes[rep % len(routes):] + routes[:rep % len(routes)]:
            fileset, handler = filesets[route]
            clear_file_caches(manager, workers)
            t0 = time.perf_counter()
            result = run(fileset, processor, "Events", manager=manager, chunksize=chunksize,
                         resources_mode="none", handler=handler, timeout=TIMEOUT_S)
            seconds = time.perf_counter() - t0
            entry = results[route]
            entry["time_s"].append(seconds)
            entry["events_per_s"].append(events / seconds)
            entry["preprocess_s"].append(result.report["totals"]["preprocess_s"])
            entry["cutflows"].append(cutflow_of(result.output))
            log.warning("rep %d %-7s %6.2f s  %8.0f events/s", rep, route, seconds, events / seconds)
    reference = results["local"]["cutflows"][0] if "local" in results else None
    for entry in results.values():
        entry["output_ok"] = [flow == reference for flow in entry.pop("cutflows")]
    return results


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.xrootd", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per file (20000)")
    parser.add_argument("--files", type=int, default=2, help="files per dataset (2)")
    parser.add_argument("--branches", type=int, default=500, help="filler branches per file (500)")
    parser.add_argument("--chunksize", type=int, default=10_000, help="events per chunk (10000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions; medians are reported (5)")
    parser.add_argument("--workers", type=int, default=2, help="local workers (2)")
    parser.add_argument("--routes", default=",".join(ROUTES), help="routes to run, local first (local,xrootd,fsspec)")
    parser.add_argument("--quick", action="store_true", help="2 repetitions")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for xrootd.json")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 2
    args.routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if not args.routes or args.routes[0] != "local" or set(args.routes) - set(ROUTES):
        parser.error(f"--routes must start with local and name only {', '.join(ROUTES)}; got {args.routes!r}")
    if min(args.events, args.files, args.chunksize, args.reps, args.workers) < 1 or args.branches < 0:
        parser.error("--events, --files, --chunksize, --reps and --workers must be at least 1")
    return args


def _measure_routes(args, fileset: dict, events: int) -> dict:
    """Serve the files over a real XRootD server and time every route on one manager."""
    from hep_executor import Manager
    from processors.topeft_like import TopEFTLikeProcessor
    from tests.servers.xrootd import XRootDServer

    server = XRootDServer()
    try:
        remote = remote_fileset(server, fileset)
        server.start()
        print(f"XRootD server {server.url_prefix} (work folder {server.workdir})")
        read_through(fileset)
        read_through({d: [str(server.data_dir / Path(p).name) for p in ps] for d, ps in fileset.items()})
        filesets = {"local": (fileset, "auto"), "xrootd": (remote, "xrootd"), "fsspec": (remote, "fsspec")}
        filesets = {route: filesets[route] for route in args.routes}
        with Manager(local_workers=args.workers) as manager:
            if manager.wait_for_workers(args.workers, timeout=120) < args.workers:
                msg = f"only {len(manager.workers())} of {args.workers} local workers joined within 120 s"
                raise RuntimeError(msg)
            return measure(manager, filesets, TopEFTLikeProcessor(), chunksize=args.chunksize,
                           reps=args.reps, events=events, workers=args.workers)
    finally:
        server.cleanup()


def _summarise(args, results: dict, events: int) -> dict:
    """Print the table; return each route's medians."""
    local_rate = median(results["local"]["events_per_s"])
    summary, rows = {}, []
    for route, r in results.items():
        rate = median(r["events_per_s"])
        summary[route] = {"events_per_s": rate, "min": min(r["events_per_s"]), "max": max(r["events_per_s"]),
                          "time_s": median(r["time_s"]), "preprocess_s": median(r["preprocess_s"]),
                          "vs_local": rate / local_rate, "output_ok": all(r["output_ok"])}
        s = summary[route]
        rows.append([route, s["events_per_s"], s["min"], s["max"], s["time_s"], s["preprocess_s"], s["vs_local"],
                     "yes" if s["output_ok"] else "NO"])
    print_table(f"Reading over root:// vs local paths, {events:,} events, chunks of {args.chunksize:,}, "
                f"median of {args.reps}",
                ["route", "events/s", "min", "max", "time s", "preproc s", "vs local", "output = local"], rows)
    return summary


def main(argv=None) -> int:
    """Command-line entry: start the server, measure, print the table and verdicts, write JSON, stop the server."""
    args = _parse(argv)
    quiet_logging(args.log_level)
    stop_on_sigterm()
    from benchmarks._workloads import sample_fileset
    from tests.servers.xrootd import available

    reason = available()
    if reason:
        print(f"xrootd benchmark: cannot start an XRootD server here: {reason}")
        return 2
    fileset = sample_fileset(args.events, args.files, extra_branches=args.branches)
    events = args.events * args.files * len(fileset)
    load_before = os.getloadavg()
    print(f"xrootd: TopEFT-like, {events:,} events ({args.files} files x {len(fileset)} datasets, "
          f"{args.branches} filler branches), chunks of {args.chunksize:,}, {args.workers} workers, {args.reps} reps; "
          f"{os.cpu_count()} cores, load {load_before[0]:.2f}")
    results = _measure_routes(args, fileset, events)
    load_after = os.getloadavg()
    summary = _summarise(args, results, events)
    verdicts = {f"{route} >= 80% of local": {"value": s["vs_local"], "pass": bool(s["vs_local"] >= TARGET_FRACTION)}
                for route, s in summary.items() if route != "local"}
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)")
    for name, v in verdicts.items():
        print(f"{'PASS' if v['pass'] else 'FAIL'}  {name}: {v['value']:.2f}")
    bad = [route for route, s in summary.items() if not s["output_ok"]]
    if bad:
        print(f"FAIL  outputs differ from local for {', '.join(bad)}")
    path = write_json(args.out / "xrootd.json", {
        "settings": vars(args) | {"out": str(args.out)},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "load_before": load_before,
                    "load_after": load_after},
        "events": events, "routes": summary, "runs": results, "verdicts": verdicts})
    print(f"wrote {path}")
    return 0 if all(v["pass"] for v in verdicts.values()) and not bad else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("xrootd benchmark: interrupted (the XRootD server and the workers are stopped)")
        raise SystemExit(130) from None
