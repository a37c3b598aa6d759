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

from hep_executor.analysis.chunk_tasks import WORKER_SETUP, ChunkSpec, preprocess_file, process_chunk
from hep_executor.analysis.metadata_cache import CachedMetadata, MetadataCache, open_cache
from hep_executor.analysis.pipeline import ReducePipeline
from hep_executor.analysis.preprocess import MetadataStream, gather
from hep_executor.analysis.sources import DEFAULT_INITIAL_CHUNK, ChunkSource, Segment, build_source
from hep_executor.errors import ConfigError, CoverageError, EmptyInputError, InputError
from hep_executor.planning.chunking import Coverage, CoverageReport

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


def normalize_fileset(fileset: dict, treename: str | None) -> list[tuple[str, str, str, dict | None]]:
    """Flatten a coffea-style fileset to ``(dataset, file, treename, metadata)`` tuples.

    Accepts ``{dataset: [files]}``, ``{dataset: {"files": [...] or {file: tree},
    "treename": ..., "metadata": ...}}``.
    """
    if not isinstance(fileset, dict) or not fileset:
        msg = "the fileset must be a non-empty dict {dataset: [files]}"
        raise ConfigError(msg)
    out = []
    for dataset, spec in fileset.items():
        meta, tree = None, treename
        files = spec
        if isinstance(spec, dict):
            unknown = set(spec) - {"files", "treename", "metadata", "preload"}
            if unknown:
                msg = f"dataset {dataset!r}: unknown fileset key(s) {sorted(unknown)}"
                raise ConfigError(msg)
            files = spec.get("files", [])
            tree = spec.get("treename", treename)
            meta = spec.get("metadata")
        if isinstance(files, str):
            files = [files]
        if not files:
            msg = f"dataset {dataset!r} has no files"
            raise EmptyInputError(msg, str(dataset))
        items = files.items() if isinstance(files, dict) else ((f, None) for f in files)
        for filename, file_tree in items:
            name = file_tree or tree
            if not name:
                msg = f"no tree name for {filename!r} (dataset {dataset!r}): pass treename="
                raise ConfigError(msg)
            out.append((str(dataset), str(filename), name, meta))
    return out


def preprocess(manager, entries: list[tuple[str, str, str, dict | None]], *, skipbadfiles: bool,
               io_options: dict, align_clusters: bool, progress: Callable | None = None, warm: bool = True,
               cache: MetadataCache | None = None, reports: list | None = None
               ) -> tuple[list[FilePlan], list[dict]]:
    """Read every file's entries and UUID as worker tasks; return plans and skipped files.

    Files whose metadata ``cache`` holds (and still matches) are not read;
    what is read is stored in it. ``reports`` collects the tasks' reports.
    """
    plans, todo = _from_cache(cache, entries, align_clusters)
    calls = [((entries[i][0], entries[i][1], entries[i][2], io_options, align_clusters, warm), entries[i][1])
             for i in todo]
    tolerate = (lambda e: isinstance(e, InputError)) if skipbadfiles else None

    def report(result):
        if reports is not None:
            reports.append(result.report)
        if progress is not None:
            progress("preprocess", result=result)

    values, bad = gather(manager, preprocess_file, calls, tolerate=tolerate, progress=report)
    plans.update({todo[k]: _plan(entries[todo[k]], info) for k, info in values.items()})
    _store(cache, [plans[todo[k]] for k in values])
    skipped = [_skip(entries[todo[k]], error) for k, error in sorted(bad.items())]
    return [plans[i] for i in sorted(plans)], skipped


def _from_cache(cache: MetadataCache | None, entries: list, align_clusters: bool
                ) -> tuple[dict[int, FilePlan], list[int]]:
    """Plans of the files ``cache`` holds, by index, and the indices of those to read."""
    if cache is None:
        return {}, list(range(len(entries)))
    found = cache.lookup([(e[1], e[2]) for e in entries], clusters=align_clusters)
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
    task_events: dict[int, int] = field(default_factory=dict)
    task_files: dict[int, str] = field(default_factory=dict)
    pre_reports: list = field(default_factory=list)
    cache: MetadataCache | None = None
    cached: int = 0
    stream_error: BaseException | None = None
    t0: float = field(default_factory=time.time)
    t_pre: float = 0.0


def run(fileset: dict, processor_instance: Any, treename: str | None = "Events", *,
        manager=None, workers: int | None = None, schema: Any = None, chunksize: int | None = None,
        dynamic_chunksize: dict | None = None, initial_chunksize: int = DEFAULT_INITIAL_CHUNK,
        maxchunks: int | None = None, fan_in: int = 20,
        skipbadfiles: bool = False, align_clusters: bool = False, timeout: float = 60.0,
        handler: str = "auto",
        resources_mode: str = "auto", memory_mb: int | None = None, allocator=None,
        split_on_exhaustion: bool = True, warm: bool = True,
        retries: int = 0, metadata_cache: Any = None, streaming: bool = True,
        progress: Callable | None = None) -> RunResult:
    """Run ``processor_instance`` over ``fileset`` on workers; return output and report.

    Parameters
    ----------
    fileset : dict
        ``{dataset: [files]}`` or ``{dataset: {"files": ..., "treename": ..., "metadata": ...}}``;
        files are local paths or ``root://`` URLs.
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
        Skip unreadable files (listed in the report) instead of failing.
    warm : bool
        Keep files open and NanoEvents schemas built in each worker slot between
        tasks (default); False opens each file anew for every task.
    retries : int
        Times a failed chunk is tried again before its error counts.
    metadata_cache : str, Path, MetadataCache or False, optional
        Where file metadata is kept between runs (SQLite; default
        :func:`~hep_executor.analysis.metadata_cache.default_cache_path`);
        False reads every file's metadata and keeps none.
    streaming : bool
        Cut and run a file's chunks as soon as its metadata is back, beside
        the other files' preprocessing (default); False reads all metadata first.
    progress : callable, optional
        ``progress(stage, result=TaskResult, item=...)`` after each task.

    Raises
    ------
    InputError
        A file is missing, not ROOT, truncated, lacks the tree, or is empty.
    ChunkError
        The processor failed on a chunk (the error names file and range); the
        partial output is attached as ``partial_output``.
    CoverageError
        The output does not cover the plan exactly once.
    """
    from hep_executor.engine.manager import Manager

    entries = normalize_fileset(fileset, treename)
    own = manager is None
    if own:
        manager = Manager(local_workers=workers, **WORKER_SETUP)
    options = dict(schema=schema, chunksize=chunksize, dynamic_chunksize=dynamic_chunksize,
                   initial_chunksize=initial_chunksize, maxchunks=maxchunks, fan_in=fan_in,
                   align_clusters=align_clusters, resources_mode=resources_mode, memory_mb=memory_mb,
                   allocator=allocator, split_on_exhaustion=split_on_exhaustion, warm=warm,
                   retries=retries)
    job = _Job(manager, processor_instance, options, {"timeout": timeout, "handler": handler},
               (lambda e: isinstance(e, InputError)) if skipbadfiles else None, progress)
    try:
        job.cache = open_cache(metadata_cache)
        if streaming:
            source, stream = _stream(job, entries)
            outcome = _process(job, source, stream)
        else:
            hits = job.cache.hits if job.cache is not None else 0
            job.files, job.skipped = preprocess(manager, entries, skipbadfiles=skipbadfiles,
                                                io_options=job.io_options, align_clusters=align_clusters,
                                                progress=progress, warm=warm, cache=job.cache,
                                                reports=job.pre_reports)
            job.t_pre = time.time() - job.t0
            job.cached = job.cache.hits - hits if job.cache is not None else 0
            source = _chunk_source(job, [_segment(f) for f in job.files])
            outcome = _process(job, source)
        return _finish(job, source, outcome)
    finally:
        if job.cache is not None and job.cache is not metadata_cache:
            job.cache.close()
        if own:
            manager.close()


def _segment(f: FilePlan) -> Segment:
    return Segment(ChunkSpec(f.dataset, f.filename, f.treename, 0, f.entries, f.uuid, f.metadata),
                   0, f.entries, tuple(f.clusters) if f.clusters else None)


def _stream(job: _Job, entries: list) -> tuple[ChunkSource, MetadataStream]:
    """The chunk source of a streaming run, open while the files' preprocessing runs beside it.

    Files the cache holds are planned at once; each file read adds its
    segment as its metadata comes back. What was read is stored in the
    cache in batches (and at the end, even when the run stops at an error).
    """
    o = job.options
    plans, todo = _from_cache(job.cache, entries, o["align_clusters"])
    job.cached = len(plans)
    job.t_pre = time.time() - job.t0  # the cache look-up; the last metadata's arrival when files are read
    source = _chunk_source(job, [_segment(plans[i]) for i in sorted(plans)], more=bool(todo))
    fresh: list[FilePlan] = []

    def on_value(k, info):
        plan = plans[todo[k]] = _plan(entries[todo[k]], info)
        source.add([_segment(plan)])
        fresh.append(plan)
        if len(fresh) >= _STORE_BATCH:
            _store(job.cache, fresh)
            fresh.clear()

    def on_result(k, result):
        job.pre_reports.append(result.report)
        job.task_files[result.id] = entries[todo[k]][1]
        if job.progress is not None:
            job.progress("preprocess", result=result)

    def on_done():
        source.close()
        _store(job.cache, fresh)
        fresh.clear()
        job.t_pre = stream.t_done - job.t0
        job.files = [plans[i] for i in sorted(plans)]
        job.stream_error = stream.error

    calls = [((entries[i][0], entries[i][1], entries[i][2], job.io_options, o["align_clusters"], o["warm"]),
              entries[i][1]) for i in todo]
    stream = MetadataStream(job.manager, preprocess_file, calls, on_value=on_value, tolerate=job.tolerate,
                            on_tolerated=lambda k, e: job.skipped.append(_skip(entries[todo[k]], e)),
                            on_result=on_result, on_done=on_done)
    job.files = [plans[i] for i in sorted(plans)]
    return source, stream


def _chunk_source(job: _Job, segments: list[Segment], more: bool = False) -> ChunkSource:
    o = job.options
    return build_source(job.manager, segments, more=more, chunksize=o["chunksize"],
                        dynamic_chunksize=o["dynamic_chunksize"], initial_chunksize=o["initial_chunksize"],
                        maxchunks=o["maxchunks"], resources_mode=o["resources_mode"],
                        memory_mb=o["memory_mb"], allocator=o["allocator"],
                        split_on_exhaustion=o["split_on_exhaustion"])


def _process(job: _Job, source: ChunkSource, stream: MetadataStream | None = None):
    """Run the chunks and merge them on the workers; return the pipeline's outcome."""
    fn = functools.partial(process_chunk, processor_instance=job.processor, schema=job.options["schema"],
                           io_options=job.io_options, warm=job.options["warm"])

    def on_result(result, item):
        job.task_events[result.id] = item.events
        job.task_files[result.id] = item.filename
        if not result.ok and job.tolerate is not None and job.tolerate(result.error):
            job.skipped.append({"dataset": item.dataset, "file": item.filename,
                                "range": [item.entrystart, item.entrystop], "error": str(result.error)})
        if job.progress is not None:
            job.progress("process", result=result, item=item)

    pipeline = ReducePipeline(job.manager, fn, fan_in=job.options["fan_in"], on_result=on_result,
                              retries=job.options["retries"], tolerate=job.tolerate)
    return pipeline.run(source, stream)


def _finish(job: _Job, source: ChunkSource, outcome) -> RunResult:
    """Check the outcome (errors, coverage), post-process and return the result."""
    wrapped = outcome.output or {}
    report = _report(job, outcome, source, t_total=time.time() - job.t0)
    error = job.stream_error or next((e for _, e in outcome.failures
                                      if job.tolerate is None or not job.tolerate(e)), None)
    if error is not None:
        error.partial_output = wrapped.get("out")
        error.partial_coverage = wrapped.get("coverage", {})
        raise error
    skipped_files = {s["file"] for s in job.skipped}
    planned = {f: r for f, r in source.planned.items() if f not in skipped_files}
    recorded = {f: r for f, r in wrapped.get("coverage", {}).items() if f not in skipped_files}
    coverage = Coverage.check(recorded, planned)
    report["coverage_ok"] = coverage.ok
    if not coverage.ok:
        err = CoverageError(coverage.describe())
        err.partial_output = wrapped.get("out")
        raise err
    out = wrapped.get("out")
    if out is not None and hasattr(job.processor, "postprocess"):
        post = job.processor.postprocess(out)
        out = out if post is None else post
    return RunResult(out, report, coverage, job.skipped)


def _report(job: _Job, outcome, source, *, t_total: float) -> dict:
    manager, files, sizer, allocator = job.manager, job.files, source.sizer, source.allocator
    events = sum(r[1] - r[0] for rs in source.planned.values() for r in rs)
    tasks = [r.as_dict() for r in job.pre_reports] + [r.as_dict() for r in outcome.reports]
    for t in tasks:
        t["kind"] = t["category"].split(":")[0]
        t["events"] = job.task_events.get(t["task_id"], 0)
        t["file"] = job.task_files.get(t["task_id"])
    report = {
        "files": [{"dataset": f.dataset, "file": f.filename, "entries": f.entries, "uuid": f.uuid,
                   "ranges": sorted(source.planned.get(f.filename, []))} for f in files],
        "skipped": job.skipped,
        "tasks": tasks,
        "totals": {"events": events, "files": len(files), "chunks": sum(map(len, source.planned.values())),
                   "merges": outcome.merges, "wall_s": t_total, "preprocess_s": job.t_pre,
                   "preprocess_tasks": len(job.pre_reports), "metadata_cached": job.cached,
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
