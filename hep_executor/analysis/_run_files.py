"""One run's files: their plans, the run's state between steps, and preprocessing with the metadata cache.

:class:`FilePlan` is a file after preprocessing; :class:`RunJob` holds what
one call of :func:`hep_executor.analysis._runner.run` works with between its
steps; :func:`preprocess` reads every file's entries and UUID as worker
tasks (a preprocess-first run), using and filling the metadata cache.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from hep_executor.analysis._checkpoint_run import RunCheckpoint
from hep_executor.analysis._chunk_tasks import preprocess_file
from hep_executor.analysis._metadata_cache import CachedMetadata, MetadataCache
from hep_executor.analysis._metadata_cache_remote import RemoteGuesses
from hep_executor.analysis._preprocess import gather
from hep_executor.analysis._task_rows import TaskRows
from hep_executor.analysis._usercode import Shipment
from hep_executor.errors import InputError

__all__ = ["STORE_BATCH", "FilePlan", "RunJob", "from_cache", "plan_of", "preprocess", "report_cached",
           "skipped_file", "store_plans"]

log = logging.getLogger(__name__)

#: files read whose metadata is written to the cache at once, in one transaction
STORE_BATCH = 2000


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
class RunJob:
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


def preprocess(manager, entries: list[tuple[str, str, str, dict | None]], *, skipbadfiles: bool,
               io_options: dict, align_clusters: bool, progress: Callable | None = None, warm: bool = True,
               cache: MetadataCache | None = None, rows: TaskRows | None = None, remote: bool = False
               ) -> tuple[dict[int, FilePlan], list[dict]]:
    """Read every file's entries and UUID as worker tasks; return plans (by entry index) and skipped files.

    Files whose metadata ``cache`` holds (and still matches) are not read;
    what is read is stored in it. ``remote``: remote files' rows are used too
    (their chunks then check the UUID). ``rows`` files the tasks' reports.
    """
    plans, todo = from_cache(cache, entries, align_clusters, remote=remote)
    report_cached(progress, plans)
    calls = [((entries[i][0], entries[i][1], entries[i][2], io_options, align_clusters, warm), entries[i][1])
             for i in todo]
    tolerate = (lambda e: isinstance(e, InputError)) if skipbadfiles else None

    def report(result):
        if rows is not None:
            rows.add(result.report)
        if progress is not None:
            progress("preprocess", result=result)

    values, bad = gather(manager, preprocess_file, calls, tolerate=tolerate, progress=report)
    plans.update({todo[k]: plan_of(entries[todo[k]], info) for k, info in values.items()})
    store_plans(cache, [plans[todo[k]] for k in values])
    skipped = [skipped_file(entries[todo[k]], error) for k, error in sorted(bad.items())]
    return plans, skipped


def from_cache(cache: MetadataCache | None, entries: list, align_clusters: bool, remote: bool = False
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


def report_cached(progress: Callable | None, plans: dict[int, FilePlan]) -> None:
    """Tell ``progress`` of the files whose metadata came from the cache (``item`` is the FilePlan)."""
    if progress is not None:
        for i in sorted(plans):
            progress("cached", result=None, item=plans[i])


def plan_of(entry: tuple, info: dict) -> FilePlan:
    dataset, filename, tree, meta = entry
    return FilePlan(dataset, filename, tree, info["entries"], info["uuid"], info["clusters"], meta)


def skipped_file(entry: tuple, error: BaseException) -> dict:
    log.warning("skipping %s: %s", entry[1], error)
    return {"dataset": entry[0], "file": entry[1], "error": str(error)}


def store_plans(cache: MetadataCache | None, plans: list[FilePlan]) -> None:
    if cache is not None and plans:
        cache.store([(p.filename, p.treename, CachedMetadata(p.entries, p.uuid, p.clusters)) for p in plans])
