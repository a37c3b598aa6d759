"""One analysis run: fileset -> metadata -> chunks -> process tasks -> tree reduction -> output.

:func:`run` is the executor's own path (the CLI and :func:`run_uproot_job`
use it): it reads each file's entries and UUID as worker tasks, cuts
chunks at the size the sizer predicts per dataset, processes them on
workers that keep files warm, merges on workers, and checks that the
output covers every planned entry range exactly once.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from hep_executor.analysis._checkpoint_run import (DEFAULT_EVERY_CHUNKS, DEFAULT_EVERY_S, DEFAULT_GRACE_S,
                                                  RunCheckpoint)
from hep_executor.analysis._chunk_errors import as_chunk_error
from hep_executor.analysis._chunk_tasks import WORKER_SETUP, ChunkSpec, preprocess_file, process_chunk
from hep_executor.analysis._dashboard import dashboard_port, serving
from hep_executor.analysis._fileset import normalize_fileset
from hep_executor.analysis._metadata_cache import CachedMetadata, MetadataCache, open_cache
from hep_executor.analysis._metadata_cache_remote import RemoteGuesses
from hep_executor.analysis._pipeline import ReducePipeline
from hep_executor.analysis._preprocess import MetadataStream, gather
from hep_executor.analysis._run_status import RunStatus
from hep_executor.analysis._sources import DEFAULT_INITIAL_CHUNK, ChunkSource, Segment, build_source
from hep_executor.analysis._task_rows import TASKS_KEPT, TaskRows
from hep_executor.analysis._usercode import Shipment, prepare_task_function
from hep_executor.errors import CoverageError, InputChangedError, InputError
from hep_executor.planning import Coverage, CoverageReport, subtract_ranges

__all__ = ["FilePlan", "RunResult", "normalize_fileset", "run"]

log = logging.getLogger(__name__)

#: files read whose metadata is written to the cache at once, in one transaction
_STORE_BATCH = 2000


@dataclass(frozen=True)
class FilePlan:
    """One input file after preprocessing."""

    dataset: str
    filename: str
    treename: str
    entries: int
    uuid: str = ""
    clusters: list | None = None
    metadata: dict | None = None


@dataclass
class RunResult:
    """What :func:`run` returns: the processor's output and how the run went."""

    output: Any
    report: dict
    coverage: CoverageReport | None = None
    skipped: list[dict] = field(default_factory=list)
    #: where the run's dashboard was served (``run(dashboard=...)``; it stopped with the run)
    dashboard_url: str | None = None


def preprocess(manager, entries: list[tuple[str, str, str, dict | None]], *, skipbadfiles: bool,
               io_options: dict, align_clusters: bool, progress: Callable | None = None, warm: bool = True,
               cache: MetadataCache | None = None, rows: TaskRows | None = None, remote: bool = False
               ) -> tuple[dict[int, FilePlan], list[dict]]:
    """Read every file's entries and UUID as worker tasks; return plans (by entry index) and skipped files.

    Files whose metadata ``cache`` holds (and still matches) are not read;
    what is read is stored in it. ``remote``: remote files' rows are used too
    (their chunks then check the UUID). ``rows`` files the tasks' reports.
    """
    plans, todo = _from_cache(cache, entries, align_clusters, remote=remote)
    _report_cached(progress, plans)
    calls = [((entries[i][0], entries[i][1], entries[i][2], io_options, align_clusters, warm), entries[i][1])
             for i in todo]
    tolerate = (lambda e: isinstance(e, InputError)) if skipbadfiles else None

    def report(result):
        if rows is not None:
            rows.add(result.report)
        if progress is not None:
            progress("preprocess", result=result)

    values, bad = gather(manager, preprocess_file, calls, tolerate=tolerate, progress=report)
    plans.update({todo[k]: _plan(entries[todo[k]], info) for k, info in values.items()})
    _store(cache, [plans[todo[k]] for k in values])
    skipped = [_skip(entries[todo[k]], error) for k, error in sorted(bad.items())]
    return plans, skipped


def _from_cache(cache: MetadataCache | None, entries: list, align_clusters: bool, remote: bool = False
                ) -> tuple[dict[int, FilePlan], list[int]]:
    """Plans of the files ``cache`` holds, by index, and the indices of those to read.

    ``remote``: remote files' rows too (their UUID is then checked by their chunks).
    """
    if cache is None:
        return {}, list(range(len(entries)))
    found = cache.lookup([(e[1], e[2]) for e in entries], clusters=align_clusters, remote=remote)
    plans, todo = {}, []
    for i, entry in enumerate(entries):
        hit = found.get((entry[1], entry[2]))
        if hit is None:
            todo.append(i)
        else:
            plans[i] = FilePlan(entry[0], entry[1], entry[2], hit.entries, hit.uuid,
                                hit.clusters if align_clusters else None, entry[3])
    if found:
        log.info("metadata of %d of %d files from %s", len(found), len(entries), cache.path)
    return plans, todo


def _report_cached(progress: Callable | None, plans: dict[int, FilePlan]) -> None:
    """Tell ``progress`` of the files whose metadata came from the cache (``item`` is the FilePlan)."""
    if progress is not None:
        for i in sorted(plans):
            progress("cached", result=None, item=plans[i])


def _plan(entry: tuple, info: dict) -> FilePlan:
    dataset, filename, tree, meta = entry
    return FilePlan(dataset, filename, tree, info["entries"], info["uuid"], info["clusters"], meta)


def _skip(entry: tuple, error: BaseException) -> dict:
    log.warning("skipping %s: %s", entry[1], error)
    return {"dataset": entry[0], "file": entry[1], "error": str(error)}


def _store(cache: MetadataCache | None, plans: list[FilePlan]) -> None:
    if cache is not None and plans:
        cache.store([(p.filename, p.treename, CachedMetadata(p.entries, p.uuid, p.clusters)) for p in plans])


@dataclass
class _Job:
    """What one call of :func:`run` works with, between its steps."""

    manager: Any
    processor: Any
    options: dict
    io_options: dict
    tolerate: Callable | None
    progress: Callable | None
    files: list[FilePlan] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    attempts: dict[Any, int] = field(default_factory=dict)
    rows: TaskRows = field(default_factory=TaskRows)
    cache: MetadataCache | None = None
    cached: int = 0
    stream_error: BaseException | None = None
    guesses: RemoteGuesses | None = None
    t0: float = field(default_factory=time.time)
    t_pre: float = 0.0
    shipment: Shipment = field(default_factory=Shipment)
    checkpoint: RunCheckpoint | None = None


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
    job = _Job(manager, processor_instance, options, {"timeout": timeout, "handler": handler},
               (lambda e: isinstance(e, InputError)) if skipbadfiles else None, progress, checkpoint=resume,
               rows=TaskRows(task_log, keep=keep_tasks))
    try:
        with serving(status, port) as board:
            job.cache = open_cache(metadata_cache)
            if streaming:
                source, stream = _stream(job, entries)
                outcome = _process(job, source, stream)
            else:
                hits = job.cache.hits if job.cache is not None else 0
                plans, job.skipped = preprocess(manager, entries, skipbadfiles=skipbadfiles,
                                                io_options=job.io_options, align_clusters=align_clusters,
                                                progress=progress, warm=warm, cache=job.cache,
                                                rows=job.rows, remote=True)
                job.t_pre = time.time() - job.t0
                job.cached = job.cache.hits - hits if job.cache is not None else 0
                source, stream = _stream(job, entries, plans)  # only files found changed are read again
                outcome = _process(job, source, stream)
            result = _finish(job, source, outcome)
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


def _segment(f: FilePlan) -> Segment:
    return Segment(ChunkSpec(f.dataset, f.filename, f.treename, 0, f.entries, f.uuid, f.metadata, f.entries),
                   0, f.entries, tuple(f.clusters) if f.clusters else None)


def _stream(job: _Job, entries: list, read: dict[int, FilePlan] | None = None
            ) -> tuple[ChunkSource, MetadataStream]:
    """The chunk source of a streaming run, open while the files' preprocessing runs beside it.

    Files the cache holds are planned at once; each file read adds its
    segment as its metadata comes back. What was read is stored in the
    cache in batches (and at the end, even when the run stops at an error).
    With ``read`` (a preprocess-first run: every file's plan, by entry index)
    the stream starts empty and reads only remote files whose cached UUID
    a chunk refutes.
    """
    o = job.options
    if read is None:
        plans, todo = _from_cache(job.cache, entries, o["align_clusters"], remote=True)
        _report_cached(job.progress, plans)
        job.cached = len(plans)
        job.t_pre = time.time() - job.t0  # the cache look-up; the last metadata's arrival when files are read
    else:
        plans, todo = dict(read), []
    job.guesses = _guesses(job, plans, todo, lambda i: stream.add(*call(i)))
    source = _chunk_source(job, _segments(job, [plans[i] for i in sorted(plans)]), more=bool(todo))
    fresh: list[FilePlan] = []

    def on_value(k, info):
        plan = plans[todo[k]] = _plan(entries[todo[k]], info)
        source.add(_segments(job, [plan]))
        fresh.append(plan)
        if len(fresh) >= _STORE_BATCH:
            _store(job.cache, fresh)
            fresh.clear()

    def on_result(k, result):
        job.rows.add(result.report, file=entries[todo[k]][1])
        if job.progress is not None:
            job.progress("preprocess", result=result)

    def on_done():
        source.close()
        _store(job.cache, fresh)
        fresh.clear()
        job.t_pre = stream.t_done - job.t0
        job.files = [plans[i] for i in sorted(plans)]
        job.stream_error = stream.error

    def call(i):
        return (entries[i][0], entries[i][1], entries[i][2], job.io_options, o["align_clusters"], o["warm"]), \
            entries[i][1]

    calls = [call(i) for i in todo]
    stream = MetadataStream(job.manager, preprocess_file, calls, on_value=on_value, tolerate=job.tolerate,
                            on_tolerated=lambda k, e: job.skipped.append(_skip(entries[todo[k]], e)),
                            on_result=on_result, on_done=on_done)
    job.files = [plans[i] for i in sorted(plans)]
    return source, stream


def _guesses(job: _Job, plans: dict[int, FilePlan], todo: list[int], queue: Callable) -> RemoteGuesses | None:
    """The remote files planned from the cache; a changed one is read again: ``queue(i)``, then ``todo[k] = i``."""
    from hep_executor.analysis._io import is_remote

    def reread(i):
        queue(i)
        todo.append(i)

    guesses = RemoteGuesses(job.cache, reread) if job.cache is not None else None
    for i, plan in plans.items() if guesses is not None else ():
        if is_remote(plan.filename):
            guesses.expect(i, plan.filename, plan.treename, plan.uuid)
    return guesses if guesses else None


def _segments(job: _Job, plans: list[FilePlan]) -> list[Segment]:
    """The files' segments, less what a loaded checkpoint already covers."""
    segments = [_segment(f) for f in plans]
    if job.checkpoint is not None:
        segments = job.checkpoint.remaining(segments, {f.filename: f.uuid for f in plans})
    return segments


def _chunk_source(job: _Job, segments: list[Segment], more: bool = False) -> ChunkSource:
    o = job.options
    source = build_source(job.manager, segments, more=more, chunksize=o["chunksize"],
                          dynamic_chunksize=o["dynamic_chunksize"], initial_chunksize=o["initial_chunksize"],
                          maxchunks=o["maxchunks"], resources_mode=o["resources_mode"],
                          memory_mb=o["memory_mb"], allocator=o["allocator"],
                          split_on_exhaustion=o["split_on_exhaustion"],
                          on_changed=job.guesses.changed if job.guesses is not None else None)
    if job.checkpoint is not None:
        job.checkpoint.restore_planner(source)
    return source


def _process(job: _Job, source: ChunkSource, stream: MetadataStream | None = None):
    """Run the chunks and merge them on the workers; return the pipeline's outcome."""
    fn = functools.partial(process_chunk, processor_instance=job.processor, schema=job.options["schema"],
                           io_options=job.io_options, warm=job.options["warm"])
    fn, job.shipment = prepare_task_function(fn, job.processor, job.options["files"])

    def on_result(result, item):
        job.rows.add(result.report, events=item.events, file=item.filename)
        if job.guesses is not None:
            if result.ok:
                job.guesses.confirm(item)
            elif isinstance(result.error, InputChangedError) and job.guesses.passed_over(item):
                return  # a chunk of a remote file's old plan: the file is read again
        if not result.ok:
            job.attempts[item] = result.report.attempts
            if job.tolerate is not None and job.tolerate(result.error):
                _skip_rest_of_file(job, source, item, result.error)
        if job.progress is not None:
            job.progress("process", result=result, item=item)

    make = ReducePipeline if job.checkpoint is None else job.checkpoint.make_pipeline
    pipeline = make(job.manager, fn, fan_in=job.options["fan_in"], on_result=on_result,
                    on_merge=lambda result: job.rows.add(result.report), keep_reports=False,
                    retries=job.options["retries"], tolerate=job.tolerate)
    if job.checkpoint is None:
        return pipeline.run(source, stream)
    with job.checkpoint.ctrl_c():
        return pipeline.run(source, stream)


def _skip_rest_of_file(job: _Job, source: ChunkSource, item, error: BaseException) -> None:
    """A tolerated read error: list the chunk, and cut nothing more of its file (listed too)."""
    error = as_chunk_error(item, error, job.attempts.get(item, 1))
    log.warning("skipping %s: %s", item.filename, error)
    job.skipped.append({"dataset": item.dataset, "file": item.filename,
                        "range": [item.entrystart, item.entrystop], "error": str(error)})
    for start, stop in source.skip_file(item.filename):
        job.skipped.append({"dataset": item.dataset, "file": item.filename, "range": [start, stop],
                            "error": f"not processed: entries {item.entrystart}-{item.entrystop} of "
                                     f"this file failed ({type(error).__name__})"})


def _coverage(job: _Job, source: ChunkSource, wrapped: dict) -> CoverageReport:
    """The output's coverage against the plan, less what was skipped.

    A file skipped at preprocessing is out of the check; a file with skipped
    chunks stays in it for the ranges that ran.
    """
    whole = {s["file"] for s in job.skipped if "range" not in s}
    ranges: dict[str, list] = {}
    for s in job.skipped:
        if "range" in s:
            ranges.setdefault(s["file"], []).append(s["range"])
    planned = {f: subtract_ranges(r, ranges.get(f, ()), f) for f, r in source.planned.items() if f not in whole}
    if job.checkpoint is not None:  # what the loaded checkpoint held counts as planned and done
        for name, done in job.checkpoint.covered.items():
            planned[name] = [*planned.get(name, []), *done]
    recorded = {f: r for f, r in wrapped.get("coverage", {}).items() if f not in whole}
    return Coverage.check(recorded, planned)


def _first_error(job: _Job, outcome) -> BaseException | None:
    """The first failure that stops the run, as the ChunkError that names its chunk."""
    for item, error in outcome.failures:
        if job.tolerate is not None and job.tolerate(error):
            continue
        return as_chunk_error(item, error, job.attempts.get(item, 1)) if isinstance(item, ChunkSpec) else error
    return None


def _finish(job: _Job, source: ChunkSource, outcome) -> RunResult:
    """Check the outcome (errors, coverage), post-process and return the result."""
    wrapped = outcome.output or {}
    report = _report(job, outcome, source, t_total=time.time() - job.t0)
    report["shipped"] = {**job.shipment.as_dict(),
                         "function_bytes_sent": job.manager.stats["function_bytes_sent"]}
    coverage = _coverage(job, source, wrapped)
    report["coverage_ok"] = coverage.ok
    error = job.stream_error or _first_error(job, outcome)
    if job.checkpoint is not None:
        job.checkpoint.finish(outcome, complete=error is None)
        report["checkpoint"] = job.checkpoint.summary()
    if error is None and not coverage.ok:
        error = CoverageError(coverage.describe())
    if error is not None:
        error.partial_output = wrapped.get("out")
        error.partial_coverage = coverage
        raise error
    out = wrapped.get("out")
    if out is not None and hasattr(job.processor, "postprocess"):
        post = job.processor.postprocess(out)
        out = out if post is None else post
    return RunResult(out, report, coverage, job.skipped)


def _report(job: _Job, outcome, source, *, t_total: float) -> dict:
    manager, files, sizer, allocator = job.manager, job.files, source.sizer, source.allocator
    events = sum(r[1] - r[0] for rs in source.planned.values() for r in rs)
    report = {
        "files": [{"dataset": f.dataset, "file": f.filename, "entries": f.entries, "uuid": f.uuid,
                   "ranges": sorted(source.planned.get(f.filename, []))} for f in files],
        "skipped": job.skipped,
        "tasks": job.rows.rows,
        **job.rows.describe(),
        "totals": {"events": events, "files": len(files), "chunks": sum(map(len, source.planned.values())),
                   "merges": outcome.merges, "wall_s": t_total, "preprocess_s": job.t_pre,
                   "preprocess_tasks": job.rows.summary.get("preprocess", {}).get("tasks", 0),
                   "metadata_cached": job.cached,
                   "metadata_reread": job.guesses.replaced if job.guesses is not None else 0,
                   "events_per_s": events / t_total if t_total else 0.0,
                   "results_deserialized_on_manager": outcome.deserialized,
                   "workers": len(manager.workers()), "splits": source.splits,
                   "escalations": source.escalations},
    }
    if sizer is not None:
        report["sizing"] = {c: sizer.model(c) for c in sizer.categories}
        report["chunk_history"] = [list(h) for h in sizer.history]
    if allocator is not None:
        report["allocation"] = allocator.summary()
        report["allocation_history"] = [list(h) for h in allocator.history]
    return report
