"""The peers benchmark's tasks and in-process runs: what workers and the solo process call.

Named executors and their groups, the imports a worker warms, closing the
files a slot keeps open, and the ``single``/``single-warm``/``iterative``
runs (see :mod:`benchmarks.peers` for what each measures). The functions
live here (never in ``__main__``), so workers load them by reference.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import time

__all__ = ["DATASETS", "EXECUTORS", "HEP_RUN", "IDLE_S", "IN_PROCESS", "OURS", "PARALLEL", "clear_file_caches",
           "cutflow_of", "forget_open_files", "read_through", "run_single", "solo_run", "stop_on_sigterm", "task",
           "warm_imports"]

log = logging.getLogger(__name__)

EXECUTORS = ("single", "single-warm", "iterative", "futures", "futures-pool", "dask", "parsl", "hep-run",
             "hep-run-none", "hep-run-kept", "hep-runner")
IN_PROCESS = ("single", "single-warm", "iterative")
PARALLEL = ("futures", "futures-pool", "dask", "parsl", "hep-run", "hep-run-none", "hep-run-kept", "hep-runner")
OURS = ("hep-run", "hep-run-none", "hep-run-kept", "hep-runner")
HEP_RUN = ("hep-run", "hep-run-none", "hep-run-kept")
DATASETS = 3  # ttH_EFT, ttbar, data
IDLE_S = 3600.0  # heartbeat timeout of the benchmark's Managers (see Pools._start_manager)


def warm_imports(_=None) -> int:
    """Import what a chunk needs (coffea's NanoEvents, the processor); return this process id."""
    importlib.import_module("coffea.nanoevents")
    importlib.import_module("coffea.processor")
    importlib.import_module("processors.topeft_like")
    return os.getpid()


def forget_open_files(pause_s: float = 0.25) -> int:
    """Close the files this worker slot keeps open and forget its schemas; return its process id.

    The pause keeps the task long enough that the Manager sends one to
    each idle slot rather than queueing several on one.
    """
    from hep_executor.analysis import warm

    warm.clear()
    time.sleep(pause_s)
    return os.getpid()


def clear_file_caches(manager, workers: int, attempts: int = 5) -> bool:
    """Make every slot of ``manager`` close its open files (untimed, before a run); return whether all did.

    A slot keeps the files of earlier runs open; a repetition must pay
    for opening its files as a new run of the analysis would.
    """
    forget = task("forget_open_files")
    for _ in range(attempts):
        ids = {manager.submit(forget, category="benchmark:forget") for _ in range(workers)}
        pids = set()
        while ids:
            for result in manager.wait(timeout=30):
                ids.discard(result.id)
                pids.add(result.value)
        if len(pids) >= workers:
            return True
    log.error("could not reach every worker slot to close its files: the next run may find some open")
    return False


def task(name: str):
    """``name`` from the importable ``benchmarks._peers_runs`` (not ``__main__``), so workers load it by reference."""
    return getattr(importlib.import_module("benchmarks._peers_runs"), name)


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so that every ``finally`` and ``with`` stops what it started."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def read_through(fileset: dict) -> int:
    """Read every file once (into the page cache); return the bytes read."""
    total = 0
    for paths in fileset.values():
        for path in paths:
            with open(path, "rb") as stream:
                while chunk := stream.read(1 << 24):
                    total += len(chunk)
    return total


def cutflow_of(output) -> dict:
    """The processor output's cutflow counts, plain ints: what must agree between executors."""
    return {d: {k: int(v) for k, v in steps.items()} for d, steps in output["cutflow"].items()}


def run_single(fileset: dict, processor, chunksize: int, treename: str = "Events", *, warm: bool = False):
    """No executor: entries of each file, then each chunk read, processed and accumulated here.

    Each chunk opens its file anew (as coffea's Runner does), or with
    ``warm`` each file is opened once and its chunks read from the open
    file (TTree metadata read once, as the executor's own path does).
    """
    import uproot
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory
    from coffea.processor import accumulate

    plan = []
    for dataset, paths in fileset.items():
        for path in paths:
            with uproot.open(path) as f:
                plan.append((dataset, path, f[treename].num_entries))
    out = None
    for dataset, path, entries in plan:
        with contextlib.ExitStack() as stack:
            source = stack.enter_context(uproot.open(path)) if warm else {path: treename}
            for start in range(0, entries, chunksize):
                stop = min(entries, start + chunksize)
                events = NanoEventsFactory.from_root(
                    source, treepath=treename, schemaclass=NanoAODSchema, mode="virtual", entry_start=start,
                    entry_stop=stop, metadata={"dataset": dataset, "filename": path, "treename": treename,
                                               "entrystart": start, "entrystop": stop}).events()
                out = accumulate([processor.process(events)], out)
    return processor.postprocess(out) or out


def solo_run(name: str, fileset: dict, processor, chunksize: int) -> tuple[dict, float, float]:
    """Run ``single``, ``single-warm`` or ``iterative`` here; return ``(cutflow, wall s, CPU s)``."""
    import coffea.util
    from coffea import processor as cp
    from coffea.nanoevents import NanoAODSchema

    coffea.util.coffea_console.quiet = True  # coffea draws progress bars whatever status= says
    t0, c0 = time.perf_counter(), time.process_time()
    if name == "iterative":
        runner = cp.Runner(executor=cp.IterativeExecutor(status=False), schema=NanoAODSchema, chunksize=chunksize,
                           metadata_cache={})
        out = runner(fileset, processor, treename="Events")
    else:
        out = run_single(fileset, processor, chunksize, warm=name == "single-warm")
    return cutflow_of(out), time.perf_counter() - t0, time.process_time() - c0

