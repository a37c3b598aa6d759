"""The functions an analysis runs on workers: read a file's metadata, process a chunk, merge.

They run inside a worker's slot process, which lives across tasks: the
files opened by preprocessing and processing, their trees and their
NanoEvents schemas stay warm in the slot (:mod:`hep_executor.analysis._warm`), so
a chunk of a file the slot has seen pays no metadata read.

A chunk checks, when it opens its file, that the file's UUID and entry
count are the ones preprocessing planned (:class:`InputChangedError`
otherwise); it reports the entries it read, and its coverage is built
from them. Damage found while reading (a corrupt basket, a failed
decompression) is a :class:`ChunkReadError`, an input error that
``skipbadfiles`` tolerates; the processor's own exceptions are a
:class:`ChunkError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hep_executor.analysis._chunk_errors import CheckedOutput, is_read_damage
from hep_executor.analysis._warm import MAX_FILES, warm_events, warm_files
from hep_executor.errors import (ChunkError, ChunkReadError, EmptyInputError, InputChangedError, InputError,
                                 RemoteAccessError)

__all__ = ["PRELOAD", "WORKER_SETUP", "ChunkSpec", "merge_outputs", "preprocess_file", "process_chunk"]

#: modules a worker imports before starting slots, so a replacement slot starts warm
PRELOAD = ("coffea.nanoevents", "coffea.processor", "hep_executor.analysis._io")
#: Manager options for workers that run chunk tasks: modules to preload, and as many
#: affinity keys per slot as the slot's warm file cache keeps open.
WORKER_SETUP = {"worker_preload": PRELOAD, "worker_slot_keys": MAX_FILES}


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
    #: entries of the file's tree when it was preprocessed (0: not known, not checked)
    file_entries: int = 0

    @property
    def events(self) -> int:
        return self.entrystop - self.entrystart

    def describe(self) -> str:
        return f"{self.filename} entries {self.entrystart}-{self.entrystop} (dataset {self.dataset})"


def preprocess_file(dataset: str, filename: str, treename: str, io_options: dict | None = None,
                    align_clusters: bool = False, warm: bool = True) -> dict:
    """Read what chunking needs from one file: entries, UUID, cluster boundaries.

    With ``warm`` the file stays open in this slot's cache for the chunks that follow.
    """
    from hep_executor.analysis._io import file_info, tree_info

    if warm:
        tree = warm_files(io_options).get(filename, treename)
        info = tree_info(tree, filename, treename)
    else:
        info = file_info(filename, treename, **(io_options or {}))
    if info.entries == 0:
        msg = f"{filename}: tree {treename!r} has no entries"
        raise EmptyInputError(msg, filename)
    return {"dataset": dataset, "filename": filename, "treename": treename,
            "entries": info.entries, "uuid": info.uuid,
            "clusters": list(info.cluster_starts) if align_clusters else None,
            "branches": info.branches}


def _io_failure(exc: BaseException) -> BaseException | None:
    """The OSError in ``exc``'s chain (a failed read), if any."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and not isinstance(seen, InputError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def process_chunk(chunk: ChunkSpec, processor_instance: Any, schema: Any = None,
                  io_options: dict | None = None, warm: bool = True) -> CheckedOutput:
    """Run ``processor_instance`` on one chunk; return its output with coverage.

    Returns ``{"out": ..., "coverage": {filename: [(start, stop)]},
    "events": {dataset: n}}`` (as a :class:`CheckedOutput`, which pickles as
    that dict), which :func:`merge_outputs` merges. A read
    of a remote file that fails mid-chunk is tried once more on a fresh
    connection (opened with retries and backoff), then reported as
    :class:`RemoteAccessError` naming the URL.
    """
    from hep_executor.analysis._io import is_remote

    remote = is_remote(chunk.filename)
    for attempt in (1, 2):
        try:
            return _process_once(chunk, processor_instance, schema, io_options, warm)
        except (ChunkError, OSError) as exc:
            failure = _io_failure(exc) if remote else None
            if failure is None:
                raise
            if warm:
                warm_files(io_options).discard(chunk.filename)
            if attempt == 2:
                msg = f"{chunk.filename}: reading entries {chunk.entrystart}-{chunk.entrystop} failed " \
                      f"twice: {type(failure).__name__}: {failure}"
                raise RemoteAccessError(msg, chunk.filename) from failure
    raise AssertionError("unreachable")  # pragma: no cover


def _open(chunk: ChunkSpec, io_options: dict | None, warm: bool):
    """The chunk's open file and tree, checked against the plan."""
    from hep_executor.analysis._io import get_tree, open_file

    if warm:
        directory = warm_files(io_options).directory(chunk.filename, chunk.treename)
    else:
        directory = open_file(chunk.filename, **(io_options or {}))
    tree = get_tree(directory, chunk.filename, chunk.treename)
    _check_plan(chunk, str(tree.file.uuid), int(tree.num_entries))
    return directory, tree


def _check_plan(chunk: ChunkSpec, uuid: str, entries: int) -> None:
    """Raise :class:`InputChangedError` when the file is not the one preprocessing read."""
    changes = []
    if chunk.fileuuid and uuid != chunk.fileuuid:
        changes.append(f"UUID {chunk.fileuuid} -> {uuid}")
    if chunk.file_entries and entries != chunk.file_entries:
        changes.append(f"entries {chunk.file_entries} -> {entries}")
    if changes:
        msg = (f"{chunk.describe()}: the file changed after it was preprocessed ({', '.join(changes)}); "
               "run again to plan the new file")
        raise InputChangedError(msg, chunk.filename, chunk.entrystart, chunk.entrystop, dataset=chunk.dataset)


def _read_error(chunk: ChunkSpec, exc: BaseException, what: str) -> ChunkReadError:
    msg = f"{chunk.describe()}: {what}: {type(exc).__name__}: {_first_line(exc)}"
    return ChunkReadError(msg, chunk.filename, chunk.entrystart, chunk.entrystop, dataset=chunk.dataset)


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


def _events(chunk: ChunkSpec, schema: Any, io_options: dict | None, warm: bool):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    metadata = {"dataset": chunk.dataset, "filename": chunk.filename, "treename": chunk.treename,
                "entrystart": chunk.entrystart, "entrystop": chunk.entrystop,
                "fileuuid": chunk.fileuuid, **(chunk.usermeta or {})}
    try:
        directory, _ = _open(chunk, io_options, warm)
        if warm:
            return warm_events(directory, chunk.treename, schema or NanoAODSchema, metadata,
                               chunk.entrystart, chunk.entrystop)
        return NanoEventsFactory.from_root(
            directory, treepath=chunk.treename, schemaclass=schema or NanoAODSchema,
            metadata=metadata, mode="virtual", entry_start=chunk.entrystart,
            entry_stop=chunk.entrystop).events()
    except ChunkError:
        raise
    except InputError as exc:
        raise _read_error(chunk, exc, "cannot open it") from exc
    except Exception as exc:
        msg = f"cannot read {chunk.describe()}: {type(exc).__name__}: {exc}"
        raise ChunkError(msg, chunk.filename, chunk.entrystart, chunk.entrystop, dataset=chunk.dataset) from exc


def _process_once(chunk: ChunkSpec, processor_instance: Any, schema: Any, io_options: dict | None,
                  warm: bool) -> CheckedOutput:
    events = _events(chunk, schema, io_options, warm)
    try:
        out = processor_instance.process(events)
    except Exception as exc:
        if is_read_damage(exc):
            raise _read_error(chunk, exc, "damaged data while reading it") from exc
        msg = f"processor {type(processor_instance).__name__} failed on {chunk.describe()}: " \
              f"{type(exc).__name__}: {exc}"
        raise ChunkError(msg, chunk.filename, chunk.entrystart, chunk.entrystop, dataset=chunk.dataset) from exc
    read = len(events)
    if read != chunk.events:
        msg = f"{chunk.describe()}: read short, {read} of {chunk.events} entries"
        raise ChunkReadError(msg, chunk.filename, chunk.entrystart, chunk.entrystop, dataset=chunk.dataset)
    return CheckedOutput({"out": out, "coverage": {chunk.filename: [(chunk.entrystart, chunk.entrystart + read)]},
                          "events": {chunk.dataset: read}}, chunk)


def merge_outputs(values: list) -> Any:
    """Merge partial outputs with coffea's ``accumulate`` (dicts, hists, sets, numbers).

    A chunk's :class:`CheckedOutput` is unwrapped first: it reaches a merge as
    itself where results stay in memory without pickling (a Dask worker).
    """
    from coffea.processor import accumulate

    return accumulate(v.value if isinstance(v, CheckedOutput) else v for v in values if v is not None)
