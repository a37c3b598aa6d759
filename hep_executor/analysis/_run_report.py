"""The end of one run: coverage against the plan, the error that stops it, the report and the result.

:func:`finish` checks the pipeline's outcome (the first error that is not
tolerated, the coverage of the output against the plan less what was
skipped), post-processes the output and builds the run report
(:class:`RunResult`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hep_executor.analysis._chunk_errors import as_chunk_error
from hep_executor.analysis._chunk_tasks import ChunkSpec
from hep_executor.analysis._run_files import RunJob
from hep_executor.analysis._sources import ChunkSource
from hep_executor.errors import CoverageError
from hep_executor.planning import Coverage, CoverageReport, subtract_ranges

__all__ = ["RunResult", "finish"]

@dataclass
class RunResult:
    """What :func:`run` returns: the processor's output and how the run went."""

    output: Any
    report: dict
    coverage: CoverageReport | None = None
    skipped: list[dict] = field(default_factory=list)
    #: where the run's dashboard was served (``run(dashboard=...)``; it stopped with the run)
    dashboard_url: str | None = None


def _coverage(job: RunJob, source: ChunkSource, wrapped: dict) -> CoverageReport:
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


def _first_error(job: RunJob, outcome) -> BaseException | None:
    """The first failure that stops the run, as the ChunkError that names its chunk."""
    for item, error in outcome.failures:
        if job.tolerate is not None and job.tolerate(error):
            continue
        return as_chunk_error(item, error, job.attempts.get(item, 1)) if isinstance(item, ChunkSpec) else error
    return None


def finish(job: RunJob, source: ChunkSource, outcome) -> RunResult:
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


def _report(job: RunJob, outcome, source, *, t_total: float) -> dict:
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
