"""The persistent metadata cache under coffea's Runner: FileMeta items in, FileMeta items out.

Runner's preprocessing call hands :class:`~hep_executor.executor.HepExecutor`
a set of ``FileMeta`` (dataset, filename, treename, metadata). The files
:class:`~hep_executor.analysis._metadata_cache.MetadataCache` holds (local
files whose size and mtime still match) come back at once as populated
``FileMeta``, with the user's metadata kept; only the others are read, and
what they return is stored. Rows are shared with :func:`hep_executor.run`:
the UUID is stored in its canonical text form and given back to coffea as
the 16 raw bytes it uses (``file.fUUID``).

Remote (``root://``) rows are stored but not used here: Runner cuts the
chunks from the metadata it is given and its work function does not compare
the file's UUID with the planned one, so a file rewritten on the server
would be processed with a stale plan. Such files are read again on each
Runner run (:func:`hep_executor.run` uses their rows and checks the UUID).
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from typing import Any

from hep_executor.analysis._metadata_cache import CachedMetadata, MetadataCache

__all__ = ["cached_filemeta", "store_filemeta"]

log = logging.getLogger(__name__)


def cached_filemeta(cache: MetadataCache | None, items: list, *, clusters: bool = False
                    ) -> tuple[Any, list[int]]:
    """``(set_accumulator of populated FileMeta of the files cache holds, indices of items to read)``.

    With ``clusters`` (Runner's ``align_clusters``), a row without cluster starts is a miss.
    """
    from coffea.processor.accumulator import set_accumulator

    if cache is None:
        return set_accumulator(), list(range(len(items)))
    found = cache.lookup([(item.filename, item.treename) for item in items], clusters=clusters)
    hits, todo = [], []
    for i, item in enumerate(items):
        meta = found.get((item.filename, item.treename))
        if meta is None:
            todo.append(i)
        else:
            hits.append(_filemeta(item, meta, clusters))
    if hits:
        log.info("metadata of %d of %d files from %s", len(hits), len(items), cache.path)
    return set_accumulator(hits), todo


def _filemeta(item, meta: CachedMetadata, clusters: bool):
    from coffea.processor.executor import FileMeta

    metadata = dict(item.metadata or {})
    metadata.update({"numentries": int(meta.entries), "uuid": _uuid_bytes(meta.uuid)})
    if clusters:
        metadata["clusters"] = list(meta.clusters)
    return FileMeta(item.dataset, item.filename, item.treename, metadata)


def store_filemeta(cache: MetadataCache | None, values: list) -> int:
    """Store what coffea's metadata function returned (sets of populated FileMeta); return rows written."""
    if cache is None:
        return 0
    rows = []
    for value in values:
        for meta in value or ():
            md = meta.metadata or {}
            if "numentries" in md and "uuid" in md:
                rows.append((meta.filename, meta.treename,
                             CachedMetadata(int(md["numentries"]), _uuid_text(md["uuid"]), md.get("clusters"))))
    return cache.store(rows)


def _uuid_text(value: Any) -> str:
    """The canonical text of a UUID given as coffea's 16 raw bytes, a ``uuid.UUID`` or text."""
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return str(uuidlib.UUID(bytes=bytes(value)))
    return str(value)


def _uuid_bytes(text: str) -> bytes:
    """coffea's form of a stored UUID: 16 raw bytes (text that is no UUID is kept as its UTF-8 bytes)."""
    try:
        return uuidlib.UUID(text).bytes
    except ValueError:
        return text.encode()
