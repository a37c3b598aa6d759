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
import contextlib
import importlib
import logging
import os
import platform
import signal
import time
from pathlib import Path

from benchmarks._stats import RESULTS_DIR, median, print_table, quiet_logging, write_json

__all__ = ["EXECUTORS", "Pools", "clear_file_caches", "cutflow_of", "forget_open_files", "main", "measure_table",
           "read_through", "run_single", "solo_run", "stop_on_sigterm", "summarize", "warm_imports"]

log = logging.getLogger(__name__)

EXECUTORS = ("single", "single-warm", "iterative", "futures", "futures-pool", "dask", "parsl", "hep-run",
             "hep-run-none", "hep-run-kept", "hep-runner")
IN_PROCESS = ("single", "single-warm", "iterative")
PARALLEL = ("futures", "futures-pool", "dask", "parsl", "hep-run", "hep-run-none", "hep-run-kept", "hep-runner")
OURS = ("hep-run", "hep-run-none", "hep-run-kept", "hep-runner")
HEP_RUN = ("hep-run", "hep-run-none", "hep-run-kept")
TARGET_VS_FUTURES = 1.3
TARGET_EFFICIENCY = 0.90
TARGET_VS_POOL = 1.0
TARGET_SMALL_VS_FUTURES = 3.0
TARGET_SMALL_RUNNER_VS_RUN = 0.9
TARGET_SMALL_RUNNER_VS_POOL = 1.5
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
    forget = _task("forget_open_files")
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


def _task(name: str):
    """``name`` from the importable ``benchmarks.peers`` (not ``__main__``), so workers load it by reference."""
    return getattr(importlib.import_module("benchmarks.peers"), name)


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


class Pools:
    """The executors' long-lived workers (two Managers, a process pool, a dask cluster) and the solo process.

    Made once, used by every run of both tables, closed by :meth:`close`
    (also on an error or Ctrl-C, through ``with``). ``startup_s`` holds
    the time each took to make and warm (processes up, imports done).
    The in-process runs (``single``, ``single-warm``, ``iterative``) go to
    one spawned process that does nothing else: this one hosts dask's
    scheduler and the pools' threads, which would share its interpreter.
    """

    def __init__(self, workers: int, names: set[str]):
        self.workers = workers
        self.startup_s: dict[str, float] = {}
        self.worker_ids: dict[int, set] = {}
        self.manager = self.hep_executor = self.pool = self.cluster = self.client = self.solo = None
        self.parsl = False
        self._stack = contextlib.ExitStack()
        self._names = names

    def __enter__(self) -> Pools:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker this object started."""
        self._stack.close()

    def _start(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import coffea.util
        import loky

        warm = _task("warm_imports")
        warm()
        # coffea's futures executor draws its progress bars whatever its status= says
        quiet, coffea.util.coffea_console.quiet = coffea.util.coffea_console.quiet, True
        self._stack.callback(setattr, coffea.util.coffea_console, "quiet", quiet)
        if set(IN_PROCESS) & self._names:
            spawn = multiprocessing.get_context("spawn")
            self.solo = self._stack.enter_context(ProcessPoolExecutor(1, mp_context=spawn))
            self.solo.submit(warm).result()
        if "futures-pool" in self._names:
            t0 = time.perf_counter()  # the pool class FuturesExecutor makes by default, made once
            self.pool = self._stack.enter_context(loky.ProcessPoolExecutor(self.workers))
            list(self.pool.map(warm, range(4 * self.workers)))
            self.startup_s["futures-pool"] = time.perf_counter() - t0
        if set(HEP_RUN) & self._names:
            t0 = time.perf_counter()
            self.manager = self._start_manager(warm)
            for name in HEP_RUN:
                self.startup_s[name] = time.perf_counter() - t0
        if "hep-runner" in self._names:
            from hep_executor import HepExecutor

            t0 = time.perf_counter()
            self.hep_executor = HepExecutor(manager=self._start_manager(warm), dynamic=False, status=False)
            self.startup_s["hep-runner"] = time.perf_counter() - t0
        if "parsl" in self._names:
            from benchmarks._parsl import htex

            self.startup_s["parsl"] = self._stack.enter_context(htex(self.workers, warm=warm))
            self.parsl = True
        if "dask" in self._names:
            from dask.distributed import Client, LocalCluster

            t0 = time.perf_counter()
            self.cluster = self._stack.enter_context(LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                silence_logs=logging.ERROR))
            self.client = self._stack.enter_context(Client(self.cluster))
            self.client.wait_for_workers(self.workers)
            self.client.run(warm)
            self.startup_s["dask"] = time.perf_counter() - t0

    def _start_manager(self, warm):
        """A Manager with ``workers`` local workers, up and warm.

        A worker exits when its manager is silent for 2 x ``heartbeat_timeout``
        (60 s by default), and a Manager is heard only while it is called: the
        long timeout keeps its workers through the other executors' runs.
        """
        from hep_executor import Manager

        manager = self._stack.enter_context(Manager(local_workers=self.workers, heartbeat_timeout=IDLE_S))
        if manager.wait_for_workers(self.workers, timeout=120) < self.workers:
            msg = f"only {len(manager.workers())} of {self.workers} local workers joined within 120 s"
            raise RuntimeError(msg)
        ids = {manager.submit(warm, i) for i in range(self.workers)}
        while ids:
            for result in manager.wait(timeout=60):
                ids.discard(result.id)
                result.value  # noqa: B018 (raises if the import failed)
        self.worker_ids[id(manager)] = {w["id"] for w in manager.workers()}
        return manager

    def replaced_workers(self, manager) -> bool:
        """Whether ``manager``'s workers are not the ones warmed at start (they would be cold)."""
        return {w["id"] for w in manager.workers()} != self.worker_ids[id(manager)]

    # ------------------------------------------------------------ one run
    def run(self, name: str, fileset: dict, processor, chunksize: int, *, maxchunks: int | None = None):
        """Run executor ``name`` once; return ``(cutflow, seconds, {"preprocess_s": s, "cpu_s": s})``.

        ``cpu_s`` is the CPU time of the work: the solo process's for the
        in-process runs, the sum over tasks for hep-run, NaN for the others
        (as is ``preprocess_s`` where the executor does not report it).
        ``maxchunks`` (chunks per dataset) is for warm-up runs of the others.
        """
        pre = cpu = float("nan")
        if name in IN_PROCESS:  # timed there, from the first file opened to the output
            flow, seconds, cpu = self.solo.submit(_task("solo_run"), name, fileset, processor, chunksize).result()
            return flow, seconds, {"preprocess_s": pre, "cpu_s": cpu}
        t0 = time.perf_counter()
        if name in HEP_RUN:
            from hep_executor import run

            if self.replaced_workers(self.manager):
                log.error("hep-run: the Manager's workers were replaced: this run starts cold")
            if maxchunks is None and name != "hep-run-kept":
                clear_file_caches(self.manager, self.workers)
                t0 = time.perf_counter()
            mode = {"resources_mode": "none"} if name == "hep-run-none" else {}
            result = run(fileset, processor, "Events", manager=self.manager, chunksize=chunksize,
                         maxchunks=maxchunks, **mode)
            out, pre = result.output, result.report["totals"]["preprocess_s"]
            cpu = sum(t["cpu"] for t in result.report["tasks"])
        else:
            if name == "hep-runner" and self.replaced_workers(self.hep_executor.manager):
                log.error("hep-runner: the Manager's workers were replaced: this run starts cold")
            if name == "hep-runner" and maxchunks is None:
                clear_file_caches(self.hep_executor.manager, self.workers)
                t0 = time.perf_counter()
            out = self._runner(name, chunksize, maxchunks)(fileset, processor, treename="Events")
        return cutflow_of(out), time.perf_counter() - t0, {"preprocess_s": pre, "cpu_s": cpu}

    def _runner(self, name: str, chunksize: int, maxchunks: int | None):
        from coffea import processor as cp
        from coffea.nanoevents import NanoAODSchema

        executor = {
            "futures": lambda: cp.FuturesExecutor(workers=self.workers, status=False),
            "futures-pool": lambda: cp.FuturesExecutor(pool=self.pool, workers=self.workers, status=False),
            "dask": lambda: cp.DaskExecutor(client=self.client, status=False),
            "parsl": lambda: cp.ParslExecutor(status=False),
            "hep-runner": lambda: self.hep_executor,
        }[name]()
        # a fresh metadata cache: coffea's default one is per process and would skip preprocessing
        return cp.Runner(executor=executor, schema=NanoAODSchema, chunksize=chunksize, maxchunks=maxchunks,
                         metadata_cache={})


def measure_table(pools: Pools, names: list[str], fileset: dict, processor, chunksize: int, reps: int,
                  events: int) -> dict:
    """Warm up, then run every executor ``reps`` times, interleaved; return the numbers per executor."""
    read_through(fileset)
    for name in names:  # load the files' first chunks and the function on every worker
        if name not in (*IN_PROCESS, "hep-run-kept"):
            pools.run(name, fileset, processor, chunksize, maxchunks=2)
    results = {name: {"time_s": [], "events_per_s": [], "preprocess_s": [], "cpu_s": [], "cutflows": [],
                      "errors": []} for name in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            entry = results[name]
            try:
                flow, seconds, info = pools.run(name, fileset, processor, chunksize)
            except Exception as exc:  # a failed repetition counts: 0 events/s, and its targets fail
                log.error("rep %d %s raised %s: %s", rep, name, type(exc).__name__, exc)
                entry["errors"].append(f"rep {rep}: {type(exc).__name__}: {exc}")
                flow, seconds, info = None, float("inf"), {"preprocess_s": float("nan"), "cpu_s": float("nan")}
            entry["time_s"].append(seconds)
            entry["events_per_s"].append(events / seconds)
            entry["preprocess_s"].append(info["preprocess_s"])
            entry["cpu_s"].append(info["cpu_s"])
            entry["cutflows"].append(flow)
            log.warning("rep %d %-12s %7.2f s  %9.0f events/s", rep, name, seconds, events / seconds)
    reference = next((f for f in results["single"]["cutflows"] if f is not None), None)
    for entry in results.values():
        entry["output_ok"] = [flow is not None and flow == reference for flow in entry.pop("cutflows")]
    return results


def summarize(results: dict, startup: dict, events: int, workers: int) -> dict:
    """Medians, start-up, efficiency, and the ratios of each of ours to each peer and to hep-run."""
    single = median(results["single"]["events_per_s"]) if "single" in results else float("nan")
    warm = median(results["single-warm"]["events_per_s"]) if "single-warm" in results else float("nan")
    rows = {}
    for name, r in results.items():
        rate = median(r["events_per_s"])
        t = median(r["time_s"])
        up = startup.get(name, 0.0)
        rows[name] = {
            "events_per_s": rate, "min": min(r["events_per_s"]), "max": max(r["events_per_s"]),
            "time_s": t, "preprocess_s": median(r["preprocess_s"]), "cpu_s": median(r["cpu_s"]), "startup_s": up,
            "events_per_s_with_startup": events / (t + up),
            "efficiency": rate / (workers * single) if name in PARALLEL else float("nan"),
            "efficiency_vs_warm": rate / (workers * warm) if name in PARALLEL else float("nan"),
            "output_ok": all(r["output_ok"]), "failed_reps": len(r["errors"]),
        }

    def ratio(ours, peer):
        return {"warm": rows[ours]["events_per_s"] / rows[peer]["events_per_s"],
                "with_startup": rows[ours]["events_per_s_with_startup"] / rows[peer]["events_per_s_with_startup"]}

    ratios = {ours: {peer: ratio(ours, peer) for peer in rows if peer not in OURS or
                     (peer == "hep-run" and ours == "hep-runner")}
              for ours in OURS if ours in rows}
    return {"executors": rows, "ratios": ratios, "single_events_per_s": single}


def _print_summary(title: str, summary: dict, workers: int) -> None:
    rows = [[n, s["events_per_s"], s["min"], s["max"], s["time_s"], s["preprocess_s"], s["cpu_s"],
             "in run" if n == "futures" else s["startup_s"], s["events_per_s_with_startup"], s["efficiency"],
             s["efficiency_vs_warm"], "yes" if s["output_ok"] else "NO", s["failed_reps"]]
            for n, s in summary["executors"].items()]
    print_table(title, ["executor", "events/s", "min", "max", "time s", "preproc s", "work CPU s", "start-up s",
                        "events/s w/ start-up", f"efficiency (/{workers}x single)",
                        f"efficiency (/{workers}x single-warm)", "output = single", "failed reps"], rows)
    ratios = summary["ratios"]
    if ratios:
        peers = list(dict.fromkeys(p for r in ratios.values() for p in r))
        rows = [[f"{ours} / peer{suffix}"] + [ratios[ours].get(p, {}).get(key, float("nan")) for p in peers]
                for ours in ratios for suffix, key in (("", "warm"), (" (w/ start-up)", "with_startup"))]
        print_table(f"{title}: ratios (events/s of ours / events/s of peer)", ["", *peers], rows)


def _clean(table: dict, *names: str) -> bool:
    """Every repetition of ``names`` ran and gave the reference output."""
    rows = table["executors"]
    return all(n in rows and rows[n]["output_ok"] and not rows[n]["failed_reps"] for n in names)


def _ratio_verdict(table: dict, ours: str, peer: str, target: float) -> dict:
    r = table["ratios"].get(ours, {}).get(peer, {})
    gated = r.get("with_startup", float("nan"))
    return {"value": gated, "without_startup": r.get("warm", float("nan")),
            "pass": bool(gated >= target) and _clean(table, ours, peer)}


def _verdicts(tables: dict) -> dict:
    """Each target: the gating value (start-up counted), the value without, and whether it holds."""
    verdicts = {}
    large, small = tables.get("large"), tables.get("small")
    if large:
        verdicts[f"large: hep-run >= {TARGET_VS_FUTURES}x futures"] = _ratio_verdict(
            large, "hep-run", "futures", TARGET_VS_FUTURES)
        for ours in ("hep-run", "hep-runner"):
            e = large["executors"].get(ours, {}).get("efficiency_vs_warm", float("nan"))
            verdicts[f"large: {ours} efficiency (/2x single-warm) >= {TARGET_EFFICIENCY:.0%}"] = {
                "value": e, "pass": bool(e >= TARGET_EFFICIENCY) and _clean(large, ours, "single-warm")}
            verdicts[f"large: {ours} >= {TARGET_VS_POOL}x futures-pool"] = _ratio_verdict(
                large, ours, "futures-pool", TARGET_VS_POOL)
    if small:
        verdicts[f"small: hep-run >= {TARGET_SMALL_VS_FUTURES}x futures"] = _ratio_verdict(
            small, "hep-run", "futures", TARGET_SMALL_VS_FUTURES)
        verdicts[f"small: hep-runner >= {TARGET_SMALL_RUNNER_VS_RUN}x hep-run"] = _ratio_verdict(
            small, "hep-runner", "hep-run", TARGET_SMALL_RUNNER_VS_RUN)
        verdicts[f"small: hep-runner >= {TARGET_SMALL_RUNNER_VS_POOL}x futures-pool"] = _ratio_verdict(
            small, "hep-runner", "futures-pool", TARGET_SMALL_RUNNER_VS_POOL)
    return verdicts


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
            _print_summary(f"{table} chunks ({chunksize:,} events), {events:,} events, median of {args.reps}",
                           summary, args.workers)
    out["machine"]["load_after"] = os.getloadavg()
    out["verdicts"] = _verdicts(out["tables"])
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
