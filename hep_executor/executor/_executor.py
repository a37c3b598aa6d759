"""HepExecutor: the coffea executor face (``processor.Runner(executor=HepExecutor(...))``).

coffea's Runner calls an executor twice per run: once to read file
metadata (``function_name="get_metadata"``), once to process chunks. It
clones executors with ``copy(**kw)``, so every attribute here is a
dataclass field, and the workers live in a shared :class:`WorkerPool`
that all clones hold: they persist across both calls and across runs
until :meth:`HepExecutor.close` (or the ``with`` block ends).

The fields of coffea 0.7's WorkQueueExecutor that TopEFT-style scripts
pass are accepted with the same meaning where it applies; those that do
not apply here are named once in a warning. The shared workers are in
:mod:`hep_executor.executor._pool`, the progress bar in ``_progress``, the
metadata call's tasks in ``_metadata_call``, and a run's task rows with the
log files they go to in ``_task_logs``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

from coffea.processor.executor import ExecutorBase

from hep_executor.analysis import (TASKS_KEPT, ChunkSource, ReducePipeline, RunCheckpoint, RunnerMetadata,
                                   RunnerWork, Segment, TaskRows, build_source, cached_filemeta, dashboard_port,
                                   end_state, fetch_metadata, open_cache, processor_of, recognise,
                                   segments_of_workitems, store_filemeta, tolerance, work_chunk)
from hep_executor.errors import ConfigError
from hep_executor.executor._metadata_call import keep_clusters, read_metadata
from hep_executor.executor._pool import WorkerPool
from hep_executor.executor._progress import counting_events, progress
from hep_executor.executor._task_logs import begin_rows, end_rows, take_rows, write_logs

__all__ = ["HepExecutor"]

log = logging.getLogger(__name__)

# WorkQueueExecutor fields that have no meaning here: (name, value that means "unused")
_IGNORED = {
    "gpus": None, "filepath": None,
    "fast_terminate_workers": None, "print_stdout": False,
    "chunks_accum_in_mem": None, "wrapper": None, "ssl": None, "custom_init": None,
    "bar_format": None, "disk": None, "manager_name": None, "master_name": None,
}
# resource_monitor values that say what this executor does anyway: measure each task and stop one over
# its allocation (a value that turns monitoring off is named in the warning)
_MONITOR_ON = (True, None, "measure", "watchdog")


@dataclass
class HepExecutor(ExecutorBase):
    """Run coffea's chunks on hep_executor workers, merging results on the workers.

    Parameters
    ----------
    workers : int, optional
        Local workers to start (default: one per core; 0: remote workers only).
    manager : Manager, optional
        Use an existing :class:`~hep_executor.engine._manager.Manager` instead.
    client : distributed.Client, optional
        Run on this Dask cluster (a :class:`~hep_executor.engine._dask_manager.DaskManager`).
    host, port : str, int or [low, high]
        Where the manager listens (port 0: any free port).
    key_file : str, optional
        Shared key for remote workers (a hex key file, ``hep-executor keygen``).
    password_file : str, optional
        A Work Queue password file (any bytes, hashed into the key) or a hex key file;
        it wins over ``key_file``.
    address_file : str, optional
        Write the manager's address here for submit scripts.
    treereduction, chunks_per_accum : int
        Fan-in of the merge tree on workers (default 20).
    cores, memory : int, optional
        Per-task resources (memory in MB); with ``resources_mode="fixed"``
        they are used as given, otherwise as the first allocation.
    disk, manager_name, master_name : optional
        Accepted for WorkQueueExecutor scripts; they have no effect and are
        named in a warning when set (task disk is not limited; there is no catalog).
    resource_monitor : bool or str
        Tasks are always measured and stopped over their memory allocation; a
        value that would turn that off is named in the warning.
    resources_mode : str
        ``auto`` (default), ``max-seen`` or ``fixed``.
    split_on_exhaustion : bool
        Split a chunk that runs out of memory in two (default True).
    dynamic : bool
        Cut each file's entries anew at the predicted chunk size (default True;
        Runner's chunk size is the first guess). False runs Runner's chunks as given.
    dynamic_chunksize : dict, optional
        Targets per task, ``{"wall_time": s, "memory": MB}`` (either alone works).
    retries : int
        Times a chunk or preprocessing task that raised runs again (by the Manager,
        on any worker) before its error counts or ``skipbadfiles`` skips it.
    batch : str, optional
        Start the workers as jobs of this batch system (``slurm``, ``condor``,
        or ``local`` for child processes under the same face): ``workers`` jobs
        (default 1) of ``cores`` cores (default 1) and ``memory`` MB (default
        2000) each, cancelled by :meth:`close`. Jobs read ``key_file``
        (default: a new key in ``batch_options["log_dir"]``, else
        ``./hep-executor-logs``, or the temporary folder for ``local``;
        removed on close), so it must be on a filesystem the nodes see.
    batch_options : dict, optional
        Options of the batch system (``partition``, ``account``,
        ``extra_sbatch``, ``log_dir``, ``extra_submit``).
    environment_file : str, optional
        An archive made by ``hep-executor pack-env``. Each ``batch`` job
        unpacks it once per node into local scratch (``$TMPDIR``, keyed by
        the archive's content hash, under a lock) and runs its worker from
        there, as ``hep-executor submit-workers --env`` does. Local workers
        (no ``batch``) and the workers of a given ``manager`` or ``client``
        use their own environment (local ones this process's ``sys.path``
        and working directory): the archive is only checked and a log line
        says so. A missing or unreadable file, or one that is no tar
        archive, raises :class:`~hep_executor.errors.ConfigError` naming it
        when the executor is made.
    x509_proxy : str, optional
        The grid proxy workers read ``root://`` files with. Local workers
        get it as ``X509_USER_PROXY``; ``batch`` jobs get a copy next to
        ``environment_file`` (mode 0600), or the variable when there is no
        archive. Without it, workers find one as coffea does
        (``$X509_USER_PROXY``, ``/tmp/x509up_u$UID``). A missing file is a
        :class:`~hep_executor.errors.ConfigError` when the executor is made.
    extra_input_files : list of str
        Files or folders (helper modules, corrections) shipped once to each
        worker, on its ``sys.path`` and in its working directory; the
        processor's module travels by value when it is not installed.
    verbose : bool
        Log each task at INFO level.
    debug_log, transactions_log, stats_log, tasks_accum_log : str, optional
        Files for debug logging, one JSON line per task, run statistics,
        and one JSON line per accumulate task.
    checkpoint : str, optional
        Checkpoint folder of the processing call (as ``run(checkpoint=...)``):
        a call with the same folder runs only the entry ranges not covered yet.
    dashboard : bool or int, optional
        Serve a live status page and ``/status.json`` on 127.0.0.1 during each
        Runner call (True: any free port; an int: that port), from its metadata
        call to the end of its processing call, also when one fails. The URL is
        logged at INFO and kept as :attr:`dashboard_url`.
    metadata_cache : str, Path or False, optional
        SQLite file where the metadata call keeps each file's entries, UUID and
        clusters between runs (default: the user's cache directory,
        :func:`~hep_executor.analysis._metadata_cache.default_cache_path`); a
        file whose size and mtime still match is not read again, so a second
        Runner run over unchanged files submits no preprocessing task. False:
        every file is read and nothing is kept. A ``root://`` file is read
        each time under Runner (its row is stored, but Runner's chunks do not
        check the UUID, so a file rewritten on the server would go unseen);
        :func:`hep_executor.run` uses its row and checks the UUID.
    task_log : str, optional
        Append one JSON line per finished task of each Runner run (metadata,
        chunk and merge tasks, the rows of :attr:`task_report`) to this file.
        Without it, a run of more than ``keep_tasks`` tasks writes them all to a
        new file under the user's cache directory, as :func:`hep_executor.run` does.
    keep_tasks : int
        Task rows :attr:`task_report` holds (the first ones; default
        :data:`~hep_executor.analysis._task_rows.TASKS_KEPT`, 10,000); the rest
        are only in the task log. ``transactions_log`` and ``tasks_accum_log``
        still get every task.
    """

    workers: int | None = None
    manager: Any = None
    client: Any = None
    host: str = "127.0.0.1"
    port: Any = 0
    key_file: str | None = None
    address_file: str | None = None
    treereduction: int = 20
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    resources_mode: str = "auto"
    resource_monitor: Any = True
    split_on_exhaustion: bool = True
    retries: int = 2
    verbose: bool = False
    manager_name: str | None = None
    master_name: str | None = None
    password_file: str | None = None
    chunks_per_accum: int | None = None
    debug_log: str | None = None
    transactions_log: str | None = None
    stats_log: str | None = None
    tasks_accum_log: str | None = None
    dynamic: bool = True
    dynamic_chunksize: dict | None = None
    gpus: int | None = None
    filepath: str | None = None
    environment_file: Any = None
    extra_input_files: Any = ()
    x509_proxy: Any = None
    fast_terminate_workers: Any = None
    print_stdout: bool = False
    chunks_accum_in_mem: int | None = None
    wrapper: str | None = None
    ssl: Any = None
    custom_init: Any = None
    bar_format: str | None = None
    checkpoint: str | None = None
    dashboard: Any = None
    batch: str | None = None
    batch_options: dict | None = None
    metadata_cache: Any = None
    task_log: str | None = None
    keep_tasks: int = TASKS_KEPT
    pool: WorkerPool = field(default_factory=WorkerPool, repr=False)

    def __post_init__(self):
        if self.batch is not None and (self.batch not in ("local", "slurm", "condor")
                                       or self.manager is not None or self.client is not None):
            msg = (f"HepExecutor batch={self.batch!r}: choose 'local', 'slurm' or 'condor', and give no "
                   "manager or client (batch jobs join a manager the executor starts)")
            raise ConfigError(msg)
        if self.environment_file is not None:
            from hep_executor.batch import check_archive

            check_archive(self.environment_file, "environment_file")
        if self.x509_proxy is not None and not os.path.isfile(self.x509_proxy):
            msg = f"HepExecutor x509_proxy: no grid proxy file at {self.x509_proxy!r} (voms-proxy-init makes one)"
            raise ConfigError(msg)

    # -- lifetime
    def close(self) -> None:
        """Stop the workers this executor started."""
        self.pool.close()

    def __enter__(self) -> HepExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def dashboard_url(self) -> str | None:
        """Where the dashboard of the run under way (else of the last one) is served; None: no dashboard."""
        return self.pool.dashboard_url

    @property
    def task_report(self) -> dict | None:
        """The task rows of the last Runner run, as :func:`hep_executor.run` reports them.

        ``tasks`` (the first ``keep_tasks`` rows), ``tasks_left_out`` (rows only in
        ``task_log``), ``task_log`` (the file with every row, or None) and
        ``task_summary`` (per-category totals of all tasks); None before a run.
        """
        return self.pool.task_report

    @property
    def fan_in(self) -> int:
        return int(self.chunks_per_accum or self.treereduction or 20)

    def ignored_fields(self) -> list[str]:
        """Names of set fields that have no effect with this executor."""
        ignored = [name for name, unused in _IGNORED.items()
                   if getattr(self, name) not in (unused, None, (), [], 0, False)]
        if self.resource_monitor not in _MONITOR_ON:
            ignored.append(f"resource_monitor={self.resource_monitor!r} (tasks are always measured and "
                           "stopped over their memory allocation)")
        return ignored

    def _warn_once(self) -> None:
        if self.pool.warned:
            return
        self.pool.warned = True
        ignored = self.ignored_fields()
        if ignored:
            warnings.warn(f"HepExecutor ignores these WorkQueueExecutor options: {', '.join(ignored)}",
                          stacklevel=3)
        if self.debug_log:
            handler = logging.FileHandler(self.debug_log)
            handler.setLevel(logging.DEBUG)
            logging.getLogger("hep_executor").addHandler(handler)
            logging.getLogger("hep_executor").setLevel(logging.DEBUG)
        if self.verbose:
            logging.getLogger("hep_executor").setLevel(logging.INFO)

    # -- coffea's calls
    def __call__(self, items, function, accumulator):
        self._warn_once()
        items = list(items)
        if not items:
            return accumulator, 0
        manager = self.pool.get(self)
        self.pool.start_dashboard(dashboard_port(self.dashboard), manager)
        try:
            if self.function_name == "get_metadata":
                return self._preprocess(manager, items, function, accumulator)
            out = self._process(manager, items, function, accumulator)
        except BaseException as exc:
            self.pool.stop_dashboard(end_state(exc))
            raise
        self.pool.stop_dashboard("done" if out[1] == 0 else "failed")  # processing is Runner's last call
        return out

    def _preprocess(self, manager, items, function, accumulator):
        """Read file metadata (on the slots' warm files when Runner's closure is recognised).

        An error ``skipbadfiles`` does not cover is raised, naming its file and cause.
        """
        from coffea.processor import accumulate

        spec = recognise(function)
        fn, tolerate, retries = function, None, 0
        if isinstance(spec, RunnerMetadata):
            fn, tolerate, retries = functools.partial(fetch_metadata, spec), tolerance(spec), spec.retries
        cache = open_cache(self.metadata_cache) if isinstance(spec, RunnerMetadata) else None
        rows = begin_rows(self.pool, self.task_log, self.keep_tasks)
        try:
            cached, todo = cached_filemeta(cache, items, clusters=bool(getattr(spec, "align_clusters", False)))
            keep_clusters(self.pool, [cached])
            items = [items[i] for i in todo]
            out = read_metadata(self, manager, items, fn, tolerate, retries, rows)
            store_filemeta(cache, out)
        except BaseException:
            end_rows(self.pool, rows)
            raise
        finally:
            if cache is not None:
                cache.close()
        return accumulate([cached, *out], accumulator), 0

    def make_source(self, manager, items) -> ChunkSource:
        """The chunks to run: Runner's items, or (dynamic) their files' entries cut anew."""
        common = dict(resources_mode=self.resources_mode, memory_mb=self.memory, cores=self.cores or 1,
                      split_on_exhaustion=self.split_on_exhaustion)
        if self.dynamic:
            segments = [dataclasses.replace(seg, clusters=tuple(self.pool.clusters[seg.template.filename]))
                        if seg.template.filename in self.pool.clusters else seg
                        for seg in segments_of_workitems(items)]
            return build_source(manager, segments, dynamic_chunksize=self.dynamic_chunksize,
                                initial_chunksize=max((len(i) for i in items), default=1), **common)
        return build_source(manager, [Segment(i, i.entrystart, i.entrystop) for i in items],
                            chunksize=2**62, spread=False, **common)

    def _process(self, manager, items, function, accumulator):
        """Run the chunks (Runner's work on warm files when recognised) and merge on the workers.

        Returns ``(output, 0)`` or ``(partial output, error)``; an error with no
        output at all is raised (Runner would hide it behind "No chunks returned results").
        """
        from coffea.processor import accumulate

        fn, tolerate, retries = self._task_function(function)
        resume = None if self.checkpoint is None else RunCheckpoint.for_items(self.checkpoint, items, function)
        if resume is not None:
            items = resume.remaining_items(items)
        source = self.make_source(manager, items)
        if resume is not None:
            resume.restore_planner(source)
        rows = take_rows(self.pool, self.task_log, self.keep_tasks)
        try:
            outcome = self._run_pipeline(manager, items, fn, source, resume, rows, tolerate, retries)
        finally:
            end_rows(self.pool, rows)
        if resume is not None:
            resume.finish(outcome, complete=outcome.error is None)
        self.write_logs(rows.all_rows(), {"processed": outcome.processed, "merges": outcome.merges,
                                          "failures": len(outcome.failures), "wall_s": outcome.wall,
                                          **rows.describe()})
        if outcome.fatal is not None:
            raise outcome.fatal  # the same error ended a category's first tasks: stop, naming it
        error = _first_error(outcome, tolerate)
        out = outcome.output
        if error is not None and out is None:
            error.partial_output = None
            raise error
        if accumulator is not None and out is not None:
            out = accumulate([out], accumulator)
        return out, (error or 0)

    def _run_pipeline(self, manager, items, fn, source, resume, rows: TaskRows, tolerate, retries):
        """Feed ``source``'s chunks and merge them on the workers, filing each task's row in ``rows``."""
        status = counting_events(self.pool.status, items)
        bar = progress(self, sum(len(i) for i in items), unit="event", merges=True)
        with bar as advance:
            def on_result(result, item):
                rows.add(result.report, events=len(item), file=item.filename)
                if result.ok:
                    advance(len(item))
                if status is not None:
                    status.processed(result, item)

            def on_merge(result):
                rows.add(result.report)
                bar.merged(result)

            make = ReducePipeline if resume is None else resume.make_pipeline
            pipeline = make(manager, fn, fan_in=self.fan_in, on_result=on_result, retries=retries,
                            tolerate=tolerate, on_merge=on_merge, keep_reports=False)
            with contextlib.nullcontext() if resume is None else resume.ctrl_c():
                return pipeline.run(source)

    def _task_function(self, function):
        """What the slots run: Runner's work on warm files when recognised, else ``function``.

        Returns ``(fn, tolerate, retries)``; ``fn`` carries the user's code and
        ``extra_input_files`` to workers that cannot import them.
        """
        from hep_executor.analysis import prepare_task_function

        spec = recognise(function)
        fn, tolerate, retries, processor = function, None, 0, None
        if isinstance(spec, RunnerWork):
            spec = dataclasses.replace(spec, processor_instance=processor_of(spec))
            fn, tolerate, retries = functools.partial(work_chunk, spec), tolerance(spec), spec.retries
            processor = spec.processor_instance
        fn, self.pool.shipment = prepare_task_function(fn, processor, files=list(self.extra_input_files or ()))
        return fn, tolerate, retries

    def write_logs(self, tasks: Iterable[dict], stats: dict) -> None:
        """Append the run's task rows (read once, in order) and statistics to the ``*_log`` files that are set."""
        write_logs(tasks, stats, transactions_log=self.transactions_log, tasks_accum_log=self.tasks_accum_log,
                   stats_log=self.stats_log)


def _first_error(outcome, tolerate) -> BaseException | None:
    """The first failure ``tolerate`` does not cover; the covered ones are warned about, as coffea does."""
    error = None
    for item, exc in outcome.failures:
        if tolerate is not None and tolerate(exc):
            warnings.warn(f"Skipping bad file after retries: {exc}", stacklevel=4)
        elif error is None:
            error = exc
    return error
