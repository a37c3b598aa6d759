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

from hep_executor.analysis.checkpoint_run import (DEFAULT_EVERY_CHUNKS, DEFAULT_EVERY_S, DEFAULT_GRACE_S,
                                                  RunCheckpoint)
from hep_executor.analysis.chunk_errors import as_chunk_error
from hep_executor.analysis.chunk_tasks import WORKER_SETUP, ChunkSpec, preprocess_file, process_chunk
from hep_executor.analysis.fileset import normalize_fileset
from hep_executor.analysis.pipeline import ReducePipeline
from hep_executor.analysis.preprocess import gather
from hep_executor.analysis.sources import DEFAULT_INITIAL_CHUNK, ChunkSource, Segment, build_source
from hep_executor.analysis.usercode import Shipment, prepare_task_function
from hep_executor.errors import CoverageError, InputError
from hep_executor.planning.chunking import Coverage, CoverageReport, subtract_ranges

__all__ = ["FilePlan", "RunResult", "normalize_fileset", "run"]

log = logging.getLogger(__name__)


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


def preprocess(manager, entries: list[tuple[str, str, str, dict | None]], *, skipbadfiles: bool,
               io_options: dict, align_clusters: bool, progress: Callable | None = None, warm: bool = True
               ) -> tuple[list[FilePlan], list[dict]]:
    """Read every file's entries and UUID as worker tasks; return plans and skipped files."""
    calls = [((dataset, filename, tree, io_options, align_clusters, warm), filename)
             for dataset, filename, tree, _ in entries]
    tolerate = (lambda e: isinstance(e, InputError)) if skipbadfiles else None
    report = None if progress is None else (lambda result: progress("preprocess", result=result))
    values, bad = gather(manager, preprocess_file, calls, tolerate=tolerate, progress=report)
    plans = []
    for i, info in sorted(values.items()):
        dataset, filename, tree, meta = entries[i]
        plans.append(FilePlan(dataset, filename, tree, info["entries"], info["uuid"], info["clusters"], meta))
    skipped = []
    for i, error in sorted(bad.items()):
        dataset, filename = entries[i][:2]
        log.warning("skipping %s: %s", filename, error)
        skipped.append({"dataset": dataset, "file": filename, "error": str(error)})
    return plans, skipped


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
    task_events: dict[int, int] = field(default_factory=dict)
    attempts: dict[Any, int] = field(default_factory=dict)
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
        retries: int = 0, files: list | None = None,
        progress: Callable | None = None,
        checkpoint: str | None = None, force: bool = False, checkpoint_every_s: float = DEFAULT_EVERY_S,
        checkpoint_every_chunks: int = DEFAULT_EVERY_CHUNKS,
        interrupt_grace_s: float = DEFAULT_GRACE_S) -> RunResult:
    """Run ``processor_instance`` over ``fileset`` on workers; return output and report.

    Parameters
    ----------
    fileset : dict, str or os.PathLike
        ``{dataset: [files]}``, ``{dataset: {"files": ..., "treename": ..., "metadata": ...}}``
        (every form of :mod:`hep_executor.analysis.fileset`), or a ``.json``/``.txt`` file of
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
        bindings, ``fsspec``) of :func:`hep_executor.analysis.io.open_file`.
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
    progress : callable, optional
        ``progress(stage, result=TaskResult, item=...)`` after each task.
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
        (a :class:`~hep_executor.planning.chunking.CoverageReport`; ``held`` per file).
    CoverageError
        The output does not cover the plan exactly once (with ``partial_output``
        and ``partial_coverage`` too).
    CheckpointMismatchError
        ``checkpoint`` holds another run (the message says what differs).
    RunInterrupted
        Ctrl-C stopped a checkpointed run; its checkpoint is written.
    """
    from hep_executor.engine.manager import Manager

    entries = normalize_fileset(fileset, treename, dedupe=dedupe)
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
    job = _Job(manager, processor_instance, options, {"timeout": timeout, "handler": handler},
               (lambda e: isinstance(e, InputError)) if skipbadfiles else None, progress, checkpoint=resume)
    try:
        job.files, job.skipped = preprocess(manager, entries, skipbadfiles=skipbadfiles,
                                            io_options=job.io_options, align_clusters=align_clusters,
                                            progress=progress, warm=warm)
        job.t_pre = time.time() - job.t0
        source = _chunk_source(job)
        outcome = _process(job, source)
        return _finish(job, source, outcome)
    finally:
        if own:
            manager.close()


def _chunk_source(job: _Job) -> ChunkSource:
    o = job.options
    segments = [Segment(ChunkSpec(f.dataset, f.filename, f.treename, 0, f.entries, f.uuid, f.metadata, f.entries),
                        0, f.entries, tuple(f.clusters) if f.clusters else None) for f in job.files]
    if job.checkpoint is not None:
        segments = job.checkpoint.remaining(segments, {f.filename: f.uuid for f in job.files})
    source = build_source(job.manager, segments, chunksize=o["chunksize"],
                        dynamic_chunksize=o["dynamic_chunksize"], initial_chunksize=o["initial_chunksize"],
                        maxchunks=o["maxchunks"], resources_mode=o["resources_mode"],
                        memory_mb=o["memory_mb"], allocator=o["allocator"],
                        split_on_exhaustion=o["split_on_exhaustion"])
    if job.checkpoint is not None:
        job.checkpoint.restore_planner(source)
    return source


def _process(job: _Job, source: ChunkSource):
    """Run the chunks and merge them on the workers; return the pipeline's outcome."""
    fn = functools.partial(process_chunk, processor_instance=job.processor, schema=job.options["schema"],
                           io_options=job.io_options, warm=job.options["warm"])
    fn, job.shipment = prepare_task_function(fn, job.processor, job.options["files"])

    def on_result(result, item):
        job.task_events[result.id] = item.events
        if not result.ok:
            job.attempts[item] = result.report.attempts
            if job.tolerate is not None and job.tolerate(result.error):
                _skip_rest_of_file(job, source, item, result.error)
        if job.progress is not None:
            job.progress("process", result=result, item=item)

    make = ReducePipeline if job.checkpoint is None else job.checkpoint.make_pipeline
    pipeline = make(job.manager, fn, fan_in=job.options["fan_in"], on_result=on_result,
                    retries=job.options["retries"], tolerate=job.tolerate)
    if job.checkpoint is None:
        return pipeline.run(source)
    with job.checkpoint.ctrl_c():
        return pipeline.run(source)


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
    report = _report(job.manager, job.files, job.skipped, outcome, source, source.sizer, source.allocator,
                     t_pre=job.t_pre, t_total=time.time() - job.t0, task_events=job.task_events)
    report["shipped"] = {**job.shipment.as_dict(),
                         "function_bytes_sent": job.manager.stats["function_bytes_sent"]}
    coverage = _coverage(job, source, wrapped)
    report["coverage_ok"] = coverage.ok
    error = _first_error(job, outcome)
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


def _report(manager, files, skipped, outcome, source, sizer, allocator, *, t_pre, t_total,
            task_events) -> dict:
    events = sum(r[1] - r[0] for rs in source.planned.values() for r in rs)
    tasks = [r.as_dict() for r in outcome.reports]
    for t in tasks:
        t["kind"] = t["category"].split(":")[0]
        t["events"] = task_events.get(t["task_id"], 0)
    report = {
        "files": [{"dataset": f.dataset, "file": f.filename, "entries": f.entries, "uuid": f.uuid,
                   "ranges": sorted(source.planned.get(f.filename, []))} for f in files],
        "skipped": skipped,
        "tasks": tasks,
        "totals": {"events": events, "files": len(files), "chunks": sum(map(len, source.planned.values())),
                   "merges": outcome.merges, "wall_s": t_total, "preprocess_s": t_pre,
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
