"""The functions an analysis runs on workers: read a file's metadata, process a chunk, merge.

They run inside a worker's slot process, which lives across tasks: the
open files, their trees and NanoEvents base forms stay warm in a bounded
per-slot cache (:class:`WarmFiles`), keyed by file UUID, so a chunk of a
file the slot has seen pays no metadata read.
"""

from __future__ import annotations

import collections
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from .errors import ChunkError, InputError

__all__ = ["ChunkSpec", "WarmFiles", "merge_outputs", "preprocess_file", "process_chunk"]


@dataclass(frozen=True)
class ChunkSpec:
    """One entry range of one file, as a process task carries it."""

    dataset: str
    filename: str
    treename: str
    entrystart: int
    entrystop: int
    fileuuid: str = ""
    usermeta: dict | None = field(default=None, compare=False)

    @property
    def events(self) -> int:
        return self.entrystop - self.entrystart

    def describe(self) -> str:
        return f"{self.filename} entries {self.entrystart}-{self.entrystop} (dataset {self.dataset})"


class WarmFiles:
    """A small LRU of open ROOT files (and their base forms) for one slot.

    Parameters
    ----------
    max_files : int
        Files kept open at once; the least recently used is closed first.
    """

    def __init__(self, max_files: int = 4):
        self.max_files = max_files
        self._files: collections.OrderedDict = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, filename: str, key: str, timeout: float):
        """Return an open ``uproot.ReadOnlyDirectory`` for ``filename``."""
        key = key or filename
        entry = self._files.get(key)
        if entry is not None:
            self._files.move_to_end(key)
            self.hits += 1
            return entry
        from .io import open_file

        self.misses += 1
        handle = open_file(filename, timeout=timeout)
        self._files[key] = handle
        while len(self._files) > self.max_files:
            _, old = self._files.popitem(last=False)
            try:
                old.close()
            except Exception:
                pass
        return handle


_WARM: WarmFiles | None = None


def warm_files() -> WarmFiles:
    """This slot's cache (made on first use; a slot is one process)."""
    global _WARM
    if _WARM is None:
        _WARM = WarmFiles()
    return _WARM


def preprocess_file(dataset: str, filename: str, treename: str, timeout: float = 60.0,
                    align_clusters: bool = False) -> dict:
    """Read what chunking needs from one file: entries, UUID, cluster boundaries."""
    from .io import file_info

    info = file_info(filename, treename, timeout=timeout)
    return {"dataset": dataset, "filename": filename, "treename": treename,
            "entries": info.entries, "uuid": info.uuid,
            "clusters": list(info.cluster_starts) if align_clusters else None,
            "branches": info.branches}


def process_chunk(chunk: ChunkSpec, processor_instance: Any, schema: Any = None,
                  timeout: float = 60.0, warm: bool = True) -> dict:
    """Run ``processor_instance`` on one chunk; return its output with coverage.

    Returns ``{"out": ..., "coverage": {filename: [(start, stop)]},
    "events": {dataset: n}}``, which :func:`merge_outputs` merges.
    """
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    metadata = {"dataset": chunk.dataset, "filename": chunk.filename, "treename": chunk.treename,
                "entrystart": chunk.entrystart, "entrystop": chunk.entrystop,
                "fileuuid": chunk.fileuuid, **(chunk.usermeta or {})}
    try:
        if warm:
            handle = warm_files().get(chunk.filename, chunk.fileuuid, timeout)
        else:
            from .io import open_file

            handle = open_file(chunk.filename, timeout=timeout)
        factory = NanoEventsFactory.from_root(
            handle, treepath=chunk.treename, schemaclass=schema or NanoAODSchema,
            metadata=metadata, mode="virtual", entry_start=chunk.entrystart,
            entry_stop=chunk.entrystop)
        events = factory.events()
    except InputError:
        raise
    except Exception as exc:
        msg = f"cannot read {chunk.describe()}: {type(exc).__name__}: {exc}"
        raise ChunkError(msg, chunk.filename, chunk.entrystart, chunk.entrystop) from exc
    t0 = time.perf_counter()
    try:
        out = processor_instance.process(events)
    except Exception as exc:
        msg = f"processor {type(processor_instance).__name__} failed on {chunk.describe()}: " \
              f"{type(exc).__name__}: {exc}"
        raise ChunkError(msg, chunk.filename, chunk.entrystart, chunk.entrystop) from exc
    return {"out": out, "coverage": {chunk.filename: [(chunk.entrystart, chunk.entrystop)]},
            "events": {chunk.dataset: chunk.events},
            "process_time": {chunk.dataset: time.perf_counter() - t0}}


def merge_outputs(values: list) -> Any:
    """Merge partial outputs with coffea's ``accumulate`` (dicts, hists, sets, numbers)."""
    from coffea.processor import accumulate

    return accumulate(v for v in values if v is not None)


def uuid_hex(fileuuid) -> str:
    """A file UUID as text, whatever form it came in (bytes, UUID, str)."""
    if isinstance(fileuuid, bytes):
        return str(uuidlib.UUID(bytes=fileuuid)) if len(fileuuid) == 16 else fileuuid.hex()
    return str(fileuuid or "")
