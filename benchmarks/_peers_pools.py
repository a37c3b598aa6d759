"""The peers benchmark's long-lived executors (:class:`Pools`) and one table's repetitions (:func:`measure_table`)."""

from __future__ import annotations

import contextlib
import logging
import time

from benchmarks._peers_runs import HEP_RUN, IDLE_S, IN_PROCESS, clear_file_caches, cutflow_of, read_through, task

__all__ = ["Pools", "measure_table"]

log = logging.getLogger(__name__)


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

        warm = task("warm_imports")
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
            flow, seconds, cpu = self.solo.submit(task("solo_run"), name, fileset, processor, chunksize).result()
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

