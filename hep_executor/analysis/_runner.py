"""One analysis run: fileset -> metadata -> chunks -> process tasks -> tree reduction -> output.

:func:`run` is the executor's own path (the CLI and :func:`run_uproot_job`
use it): it reads each file's entries and UUID as worker tasks, cuts
chunks at the size the sizer predicts per dataset, processes them on
workers that keep files warm, merges on workers, and checks that the
output covers every planned entry range exactly once.

Its steps live beside it: the file plans, the run's state and
preprocessing with the metadata cache in ``_run_files``, the streaming
chunk source and the processing in ``_run_chunks``, coverage, errors and
the report in ``_run_report``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from hep_executor.analysis._checkpoint_run import (DEFAULT_EVERY_CHUNKS, DEFAULT_EVERY_S, DEFAULT_GRACE_S,
                                                  RunCheckpoint)
from hep_executor.analysis._chunk_tasks import WORKER_SETUP
from hep_executor.analysis._dashboard import dashboard_port, serving
from hep_executor.analysis._fileset import normalize_fileset
from hep_executor.analysis._metadata_cache import open_cache
from hep_executor.analysis._run_chunks import process_chunks, stream_source
from hep_executor.analysis._run_files import FilePlan, RunJob, preprocess
from hep_executor.analysis._run_report import RunResult, finish
from hep_executor.analysis._run_status import RunStatus
from hep_executor.analysis._sources import DEFAULT_INITIAL_CHUNK
from hep_executor.analysis._task_rows import TASKS_KEPT, TaskRows
from hep_executor.errors import InputError

__all__ = ["FilePlan", "RunResult", "normalize_fileset", "run"]

log = logging.getLogger(__name__)


def run(fileset: dict, processor_instance: Any, treename: str | None = "Events", *,
        manager=None, workers: int | None = None, schema: Any = None, chunksize: int | None = None,
        dynamic_chunksize: dict | None = None, initial_chunksize: int = DEFAULT_INITIAL_CHUNK,
        maxchunks: int | None = None, fan_in: int = 20,
        skipbadfiles: bool = False, dedupe: bool = False, align_clusters: bool = False,
        timeout: float = 60.0,
        handler: str = "auto",
        resources_mode: str = "auto", memory_mb: int | None = None, allocator=None,
        split_on_exhaustion: bool = True, warm: bool = True,
        retries: int = 0, files: list | None = None, metadata_cache: Any = None, streaming: bool = True,
        progress: Callable | None = None,
        checkpoint: str | None = None, force: bool = False, checkpoint_every_s: float = DEFAULT_EVERY_S,
        checkpoint_every_chunks: int = DEFAULT_EVERY_CHUNKS,
        interrupt_grace_s: float = DEFAULT_GRACE_S, dashboard: bool | int | None = None,
        task_log: str | None = None, keep_tasks: int = TASKS_KEPT) -> RunResult:
    """Run ``processor_instance`` over ``fileset`` on workers; return output and report.

    Parameters
    ----------
    fileset : dict, str or os.PathLike
        ``{dataset: [files]}``, ``{dataset: {"files": ..., "treename": ..., "metadata": ...}}``
        (every form of :mod:`hep_executor.analysis._fileset`), or a ``.json``/``.txt`` file of
        one; files are local paths or ``root://`` URLs. Checked whole before any task.
    processor_instance : coffea ProcessorABC
    treename : str
        Tree to read where the fileset names none.
    manager : Manager, optional
        Use this manager (its workers stay up); default: a new one with ``workers`` local workers.
    resources_mode : str
        Task memory allocation: ``auto`` (default; bucketing of observed peaks),
        ``max-seen``, ``fixed`` (``memory_mb`` per task) or ``none`` (no limits).
    memory_mb : int, optional
        Memory per task in ``fixed`` mode; the first allocation otherwise.
    chunksize : int, optional
        A fixed chunk size. Default: dynamic, from ``dynamic_chunksize`` targets
        (``{"wall_time": s, "memory": MB}``, either alone works).
    initial_chunksize : int
        First guess of the dynamic sizer (before any task has reported).
    maxchunks : int, optional
        At most this many chunks per dataset (for tests and quick looks).
    fan_in : int
        Results merged per accumulate task on the workers.
    timeout, handler : float, str
        Per-request timeout (s) and the ``root://`` route (``auto``, ``xrootd``
        bindings, ``fsspec``) of :func:`hep_executor.analysis._io.open_file`.
    skipbadfiles : bool
        Skip unreadable files (listed in the report) instead of failing: files that
        fail preprocessing, and files found damaged, gone or changed while a chunk
        reads them; then the file's remaining ranges are skipped and listed, what was
        merged of it before is kept, and the coverage check holds for what ran.
    dedupe : bool
        Drop a file listed twice (with a warning) instead of raising
        :class:`~hep_executor.errors.DuplicateFileError`.
    warm : bool
        Keep files open and NanoEvents schemas built in each worker slot between
        tasks (default); False opens each file anew for every task.
    retries : int
        Times a failed chunk is tried again before its error counts.
    files : list of str, optional
        Files or folders (helper modules, corrections) shipped once to each
        worker, on its ``sys.path`` and in its working directory. The
        processor's own module travels by value when it is not installed.
    metadata_cache : str, Path, MetadataCache or False, optional
        Where file metadata is kept between runs (SQLite; default
        :func:`~hep_executor.analysis._metadata_cache.default_cache_path`);
        False reads every file's metadata and keeps none. A ``root://`` file is
        planned from its row (streaming or not): its chunks check the UUID, and
        a file found changed has its row dropped and is read again.
    streaming : bool
        Cut and run a file's chunks as soon as its metadata is back, beside
        the other files' preprocessing (default); False reads all metadata first.
    progress : callable, optional
        ``progress(stage, result=TaskResult, item=...)`` after each task; ``stage`` is
        ``preprocess``, ``process``, or ``cached`` (``result=None``, ``item`` the file's
        FilePlan) for a file whose metadata came from the cache.
    checkpoint : str or Path, optional
        Checkpoint folder: merged partial outputs and their coverage are written
        there every ``checkpoint_every_s`` seconds or ``checkpoint_every_chunks``
        chunks; the same call with the same folder resumes, running only the
        entries not covered yet (at the chunk size predicted now). Ctrl-C stops
        dispatch, waits up to ``interrupt_grace_s`` for the chunks in flight and
        writes a checkpoint (a second Ctrl-C: at once), then raises
        :class:`~hep_executor.errors.RunInterrupted`.
    force : bool
        Start over in a checkpoint folder of another run instead of refusing it.
    dashboard : bool or int, optional
        Serve a live status page and ``/status.json`` on 127.0.0.1 while the run
        goes on: True for any free port, an int for that port. Its URL is logged at
        INFO and kept as ``RunResult.dashboard_url``; it stops with the run, also
        on an error.
    task_log : str or Path, optional
        Append one JSON line per finished task (the rows of ``report["tasks"]``)
        to this file. Without it, a run of more than ``keep_tasks`` tasks writes
        them all to a new file under the user's cache directory
        (:func:`~hep_executor.analysis._task_rows.default_task_log`).
    keep_tasks : int
        Task rows the report holds (``report["tasks"]``, the first ones;
        default :data:`~hep_executor.analysis._task_rows.TASKS_KEPT`, 10,000): the
        manager's memory does not grow with the tasks past it. ``report["tasks_left_out"]``
        counts the rows only in ``report["task_log"]``; ``report["task_summary"]``
        has per-category totals of all.

    Raises
    ------
    FilesetError
        The fileset is malformed or lists a file twice (before any task runs).
    InputError
        A file is missing, not ROOT, truncated, lacks the tree, or is empty.
    ChunkError
        A chunk failed, whatever the cause: a subclass names dataset, file, entry range,
        attempts and cause (:class:`~hep_executor.errors.InputChangedError`,
        :class:`~hep_executor.errors.ChunkReadError`, :class:`~hep_executor.errors.ChunkLostError`,
        :class:`~hep_executor.errors.ChunkExhaustedError`,
        :class:`~hep_executor.errors.UnpicklableResultError`). The output merged so far is
        attached as ``partial_output``, and what it holds as ``partial_coverage``
        (a :class:`~hep_executor.planning._chunking.CoverageReport`; ``held`` per file).
    CoverageError
        The output does not cover the plan exactly once (with ``partial_output``
        and ``partial_coverage`` too).
    CheckpointMismatchError
        ``checkpoint`` holds another run (the message says what differs).
    RunInterrupted
        Ctrl-C stopped a checkpointed run; its checkpoint is written.
    """
    from hep_executor.engine import Manager

    entries = normalize_fileset(fileset, treename, dedupe=dedupe)
    port = dashboard_port(dashboard)
    resume = None if checkpoint is None else RunCheckpoint.for_run(
        checkpoint, entries, treename, processor_instance, schema, force=force, every_s=checkpoint_every_s,
        every_chunks=checkpoint_every_chunks, grace_s=interrupt_grace_s)
    own = manager is None
    if own:
        manager = Manager(local_workers=workers, **WORKER_SETUP)
    options = dict(schema=schema, chunksize=chunksize, dynamic_chunksize=dynamic_chunksize,
                   initial_chunksize=initial_chunksize, maxchunks=maxchunks, fan_in=fan_in,
                   align_clusters=align_clusters, resources_mode=resources_mode, memory_mb=memory_mb,
                   allocator=allocator, split_on_exhaustion=split_on_exhaustion, warm=warm,
                   retries=retries, files=files)
    status = None if port is None else RunStatus(len(entries), chunksize, maxchunks, manager=manager)
    progress = _with_status(status, progress)
    job = RunJob(manager, processor_instance, options, {"timeout": timeout, "handler": handler},
                 (lambda e: isinstance(e, InputError)) if skipbadfiles else None, progress, checkpoint=resume,
                 rows=TaskRows(task_log, keep=keep_tasks))
    try:
        with serving(status, port) as board:
            job.cache = open_cache(metadata_cache)
            if streaming:
                source, stream = stream_source(job, entries)
                outcome = process_chunks(job, source, stream)
            else:
                hits = job.cache.hits if job.cache is not None else 0
                plans, job.skipped = preprocess(manager, entries, skipbadfiles=skipbadfiles,
                                                io_options=job.io_options, align_clusters=align_clusters,
                                                progress=progress, warm=warm, cache=job.cache,
                                                rows=job.rows, remote=True)
                job.t_pre = time.time() - job.t0
                job.cached = job.cache.hits - hits if job.cache is not None else 0
                source, stream = stream_source(job, entries, plans)  # only files found changed are read again
                outcome = process_chunks(job, source, stream)
            result = finish(job, source, outcome)
        result.dashboard_url = board.url if board is not None else None
        return result
    finally:
        job.rows.close()
        if job.cache is not None and job.cache is not metadata_cache:
            job.cache.close()
        if own:
            manager.close()


def _with_status(status: RunStatus | None, progress: Callable | None) -> Callable | None:
    """``progress`` that first counts each task in ``status`` (the dashboard's numbers)."""
    if status is None:
        return progress

    def both(stage, result, item=None):
        status.progress(stage, result, item)
        if progress is not None:
            progress(stage, result=result, item=item)

    return both
