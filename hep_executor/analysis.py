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

from .chunk_tasks import PRELOAD, ChunkSpec, preprocess_file, process_chunk
from .chunking import Coverage, CoverageReport
from .errors import ConfigError, CoverageError, EmptyInputError, InputError
from .pipeline import ReducePipeline, worker_cores
from .sources import DEFAULT_TARGETS, ChunkSource, Segment, make_allocator
from .sizing import ChunkSizer

__all__ = ["FilePlan", "RunResult", "normalize_fileset", "run"]

log = logging.getLogger(__name__)

DEFAULT_INITIAL_CHUNK = 10_000


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
               io_options: dict, align_clusters: bool, progress: Callable | None = None, warm: bool = True
               ) -> tuple[list[FilePlan], list[dict]]:
    """Read every file's entries and UUID as worker tasks; return plans and skipped files."""
    ids = {}
    for dataset, filename, tree, meta in entries:
        tid = manager.submit(preprocess_file, dataset, filename, tree, io_options, align_clusters, warm,
                             category="preprocess", affinity=filename)
        ids[tid] = (dataset, filename, tree, meta)
    plans: dict[int, FilePlan] = {}
    skipped: list[dict] = []
    errors: list[BaseException] = []
    while len(plans) + len(skipped) + len(errors) < len(ids):
        for result in manager.wait(timeout=1.0):
            dataset, filename, tree, meta = ids[result.id]
            if result.ok:
                info = result.value
                if info["entries"] == 0:
                    result.error = EmptyInputError(f"{filename}: tree {tree!r} has no entries", filename)
                else:
                    plans[result.id] = FilePlan(dataset, filename, tree, info["entries"], info["uuid"],
                                                info["clusters"], meta)
            if not result.ok:
                if skipbadfiles and isinstance(result.error, InputError):
                    log.warning("skipping %s: %s", filename, result.error)
                    skipped.append({"dataset": dataset, "file": filename, "error": str(result.error)})
                else:
                    errors.append(result.error)
            if progress is not None:
                progress("preprocess", result=result)
    if errors:
        raise errors[0]
    return [plans[t] for t in sorted(plans)], skipped


def run(fileset: dict, processor_instance: Any, treename: str | None = "Events", *,
        manager=None, workers: int | None = None, schema: Any = None, chunksize: int | None = None,
        dynamic_chunksize: dict | None = None, initial_chunksize: int = DEFAULT_INITIAL_CHUNK,
        maxchunks: int | None = None, fan_in: int = 20,
        skipbadfiles: bool = False, align_clusters: bool = False, timeout: float = 60.0,
        handler: str = "auto",
        resources_mode: str = "auto", memory_mb: int | None = None, allocator=None,
        split_on_exhaustion: bool = True, warm: bool = True,
        retries: int = 0,
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
        bindings, ``fsspec``) of :func:`hep_executor.io.open_file`.
    skipbadfiles : bool
        Skip unreadable files (listed in the report) instead of failing.
    warm : bool
        Keep files open and NanoEvents schemas built in each worker slot between
        tasks (default); False opens each file anew for every task.
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
    from .manager import Manager

    entries = normalize_fileset(fileset, treename)
    own = manager is None
    if own:
        manager = Manager(local_workers=workers, worker_preload=PRELOAD)
    t0 = time.time()
    try:
        io_options = {"timeout": timeout, "handler": handler}
        files, skipped = preprocess(manager, entries, skipbadfiles=skipbadfiles, io_options=io_options,
                                    align_clusters=align_clusters, progress=progress, warm=warm)
        t_pre = time.time() - t0
        if allocator is None and resources_mode != "none":
            allocator = make_allocator(resources_mode, manager, memory_mb=memory_mb)
        sizer = None
        if not chunksize:
            targets = dynamic_chunksize or DEFAULT_TARGETS
            sizer = ChunkSizer(targets, initial=initial_chunksize)
        segments = [Segment(ChunkSpec(f.dataset, f.filename, f.treename, 0, f.entries, f.uuid, f.metadata),
                            0, f.entries, tuple(f.clusters) if f.clusters else None) for f in files]
        source = ChunkSource(segments, chunksize=chunksize, sizer=sizer, maxchunks=maxchunks,
                             memory_mb=memory_mb or 0, allocator=allocator,
                             split_on_exhaustion=split_on_exhaustion, spread=worker_cores(manager))
        fn = functools.partial(process_chunk, processor_instance=processor_instance, schema=schema,
                               io_options=io_options, warm=warm)
        tolerate = (lambda e: isinstance(e, InputError)) if skipbadfiles else None

        task_events: dict[int, int] = {}

        def on_result(result, item):
            task_events[result.id] = item.events
            if not result.ok and tolerate is not None and tolerate(result.error):
                skipped.append({"dataset": item.dataset, "file": item.filename,
                                "range": [item.entrystart, item.entrystop], "error": str(result.error)})
            if progress is not None:
                progress("process", result=result, item=item)

        pipeline = ReducePipeline(manager, fn, fan_in=fan_in, on_result=on_result, retries=retries,
                                  tolerate=tolerate)
        outcome = pipeline.run(source)
        wrapped = outcome.output or {}
        report = _report(manager, files, skipped, outcome, source, sizer, allocator,
                         t_pre=t_pre, t_total=time.time() - t0, task_events=task_events)
        error = next((e for _, e in outcome.failures if tolerate is None or not tolerate(e)), None)
        if error is not None:
            error.partial_output = wrapped.get("out")
            raise error
        skipped_files = {s["file"] for s in skipped}
        planned = {f: r for f, r in source.planned.items() if f not in skipped_files}
        recorded = {f: r for f, r in wrapped.get("coverage", {}).items() if f not in skipped_files}
        coverage = Coverage.check(recorded, planned)
        report["coverage_ok"] = coverage.ok
        if not coverage.ok:
            err = CoverageError(coverage.describe())
            err.partial_output = wrapped.get("out")
            raise err
        out = wrapped.get("out")
        if out is not None and hasattr(processor_instance, "postprocess"):
            post = processor_instance.postprocess(out)
            out = out if post is None else post
        return RunResult(out, report, coverage, skipped)
    finally:
        if own:
            manager.close()


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
