"""Runner's metadata call under HepExecutor: the tasks that read the files' metadata.

:func:`read_metadata` runs one preprocessing task per file on the workers
(with a progress bar and the dashboard's file counts), files each task's
row in the run's :class:`~hep_executor.analysis.TaskRows`, warns about the
bad files ``skipbadfiles`` skips, and keeps each file's cluster starts in
the shared pool (:func:`keep_clusters`) for the processing call to cut on.
"""

from __future__ import annotations

import warnings

from hep_executor.analysis import TaskRows, gather
from hep_executor.executor._progress import counting_files, file_entries, progress

__all__ = ["keep_clusters", "read_metadata"]


def read_metadata(executor, manager, items, fn, tolerate, retries, rows: TaskRows) -> list:
    """The metadata tasks' values, in the order of ``items`` (bad files skipped are warned about)."""
    if not items:
        return []
    status = counting_files(executor.pool.status, items)
    with progress(executor, len(items)) as advance:
        def on_result(result):
            rows.add(result.report)
            advance()
            if status is not None:
                status.preprocessed(result, file_entries(result))

        values, skipped = gather(manager, fn, [((item,), item.filename) for item in items],
                                 tolerate=tolerate, retries=retries, progress=on_result)
    for i, error in sorted(skipped.items()):
        warnings.warn(f"Skipping bad file {items[i].filename}: {error}", stacklevel=4)
    out = [values[i] for i in sorted(values)]
    keep_clusters(executor.pool, out)
    return out


def keep_clusters(pool, values) -> None:
    """Keep the cluster starts that metadata ``values`` (lists of FileMeta) carry in ``pool.clusters``."""
    for value in values:
        for meta in value or ():
            if (meta.metadata or {}).get("clusters"):
                pool.clusters[meta.filename] = list(meta.metadata["clusters"])
