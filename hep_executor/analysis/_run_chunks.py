"""One run's chunks: the chunk source fed by the files' metadata as it streams in, and the processing.

:func:`stream_source` opens the chunk source of a run beside its
preprocessing tasks (files the metadata cache holds are planned at once);
:func:`process_chunks` runs the chunks and merges them on the workers,
filing each task's row and skipping the rest of a file a tolerated error
was found in.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Callable

from hep_executor.analysis._chunk_errors import as_chunk_error
from hep_executor.analysis._chunk_tasks import ChunkSpec, preprocess_file, process_chunk
from hep_executor.analysis._metadata_cache_remote import RemoteGuesses
from hep_executor.analysis._pipeline import ReducePipeline
from hep_executor.analysis._preprocess import MetadataStream
from hep_executor.analysis._run_files import (STORE_BATCH, FilePlan, RunJob, from_cache, plan_of, report_cached,
                                             skipped_file, store_plans)
from hep_executor.analysis._sources import ChunkSource, Segment, build_source
from hep_executor.analysis._usercode import prepare_task_function
from hep_executor.errors import InputChangedError

__all__ = ["process_chunks", "stream_source"]

log = logging.getLogger(__name__)

def _segment(f: FilePlan) -> Segment:
    return Segment(ChunkSpec(f.dataset, f.filename, f.treename, 0, f.entries, f.uuid, f.metadata, f.entries),
                   0, f.entries, tuple(f.clusters) if f.clusters else None)


def stream_source(job: RunJob, entries: list, read: dict[int, FilePlan] | None = None
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
        plans, todo = from_cache(job.cache, entries, o["align_clusters"], remote=True)
        report_cached(job.progress, plans)
        job.cached = len(plans)
        job.t_pre = time.time() - job.t0  # the cache look-up; the last metadata's arrival when files are read
    else:
        plans, todo = dict(read), []
    job.guesses = _guesses(job, plans, todo, lambda i: stream.add(*call(i)))
    source = _chunk_source(job, _segments(job, [plans[i] for i in sorted(plans)]), more=bool(todo))
    fresh: list[FilePlan] = []

    def on_value(k, info):
        plan = plans[todo[k]] = plan_of(entries[todo[k]], info)
        source.add(_segments(job, [plan]))
        fresh.append(plan)
        if len(fresh) >= STORE_BATCH:
            store_plans(job.cache, fresh)
            fresh.clear()

    def on_result(k, result):
        job.rows.add(result.report, file=entries[todo[k]][1])
        if job.progress is not None:
            job.progress("preprocess", result=result)

    def on_done():
        source.close()
        store_plans(job.cache, fresh)
        fresh.clear()
        job.t_pre = stream.t_done - job.t0
        job.files = [plans[i] for i in sorted(plans)]
        job.stream_error = stream.error

    def call(i):
        return (entries[i][0], entries[i][1], entries[i][2], job.io_options, o["align_clusters"], o["warm"]), \
            entries[i][1]

    calls = [call(i) for i in todo]
    stream = MetadataStream(job.manager, preprocess_file, calls, on_value=on_value, tolerate=job.tolerate,
                            on_tolerated=lambda k, e: job.skipped.append(skipped_file(entries[todo[k]], e)),
                            on_result=on_result, on_done=on_done)
    job.files = [plans[i] for i in sorted(plans)]
    return source, stream


def _guesses(job: RunJob, plans: dict[int, FilePlan], todo: list[int], queue: Callable) -> RemoteGuesses | None:
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


def _segments(job: RunJob, plans: list[FilePlan]) -> list[Segment]:
    """The files' segments, less what a loaded checkpoint already covers."""
    segments = [_segment(f) for f in plans]
    if job.checkpoint is not None:
        segments = job.checkpoint.remaining(segments, {f.filename: f.uuid for f in plans})
    return segments


def _chunk_source(job: RunJob, segments: list[Segment], more: bool = False) -> ChunkSource:
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


def process_chunks(job: RunJob, source: ChunkSource, stream: MetadataStream | None = None):
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


def _skip_rest_of_file(job: RunJob, source: ChunkSource, item, error: BaseException) -> None:
    """A tolerated read error: list the chunk, and cut nothing more of its file (listed too)."""
    error = as_chunk_error(item, error, job.attempts.get(item, 1))
    log.warning("skipping %s: %s", item.filename, error)
    job.skipped.append({"dataset": item.dataset, "file": item.filename,
                        "range": [item.entrystart, item.entrystop], "error": str(error)})
    for start, stop in source.skip_file(item.filename):
        job.skipped.append({"dataset": item.dataset, "file": item.filename, "range": [start, stop],
                            "error": f"not processed: entries {item.entrystart}-{item.entrystop} of "
                                     f"this file failed ({type(error).__name__})"})
