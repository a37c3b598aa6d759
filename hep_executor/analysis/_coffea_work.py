"""coffea Runner's task closures, recognised and run on a slot's warm files.

coffea's ``Runner`` hands an executor two closures (both
``functools.partial``): for preprocessing ``automatic_retries`` around
``metadata_fetcher_root``, and for processing ``automatic_retries``
around ``_work_function``. Run as given, each task opens its file anew,
reads the TTree metadata and builds the NanoEvents schema: for a small
chunk of a NanoAOD file that costs far more than the physics.

:func:`recognise` unpacks such a closure into a :class:`RunnerMetadata`
or :class:`RunnerWork`; :func:`fetch_metadata` and :func:`work_chunk` do
the same work in a worker slot, on the files, trees and schemas the slot
keeps open (:mod:`hep_executor.analysis._warm`), and return what coffea's
functions return: a ``set_accumulator`` of ``FileMeta``, and
``{"out", "processed"[, "metrics"]}``. A bad input raises the typed
error that :func:`hep_executor.run` raises (naming file and cause).
Retries leave the function: the Manager re-runs a task that raised
``retries`` times, and :func:`tolerance` says which final errors
``skipbadfiles`` lets the run go on past. A chunk this module cannot run
warm (another input format, a preload, a column cache, uproot options
other than ``timeout``) runs coffea's function as given.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from hep_executor.analysis._warm import warm_events, warm_files
from hep_executor.errors import ChunkError, InputError

__all__ = ["RunnerMetadata", "RunnerWork", "fetch_metadata", "io_options", "processor_of", "recognise", "tolerance",
           "work_chunk"]

log = logging.getLogger(__name__)

_WORK_ARGS = ("format", "xrootdtimeout", "schema", "use_dataframes", "savemetrics")
_WORK_KEYWORDS = {"processor_instance", "uproot_options", "iteritems_options", "checkpointer", "cache_function"}


@dataclass(frozen=True)
class RunnerMetadata:
    """What coffea's preprocessing closure holds; ``original`` is its inner function."""

    retries: int
    skipbadfiles: Any
    use_result_type: bool
    xrootdtimeout: Any
    align_clusters: bool
    uproot_options: dict
    original: Callable


@dataclass(frozen=True)
class RunnerWork:
    """What coffea's processing closure holds; ``original`` is its inner ``_work_function`` partial."""

    retries: int
    skipbadfiles: Any
    use_result_type: bool
    format: str
    xrootdtimeout: Any
    schema: Any
    use_dataframes: bool
    savemetrics: bool
    processor_instance: Any
    uproot_options: dict
    iteritems_options: dict
    checkpointer: Any
    cache_function: Callable
    original: Callable


def recognise(function) -> RunnerMetadata | RunnerWork | None:
    """Unpack Runner's preprocessing or processing closure; None for anything else."""
    from coffea.processor import Runner

    if not (isinstance(function, functools.partial) and function.func is Runner.automatic_retries
            and len(function.args) == 3 and set(function.keywords) <= {"use_result_type"}):
        return None
    retries, skipbadfiles, inner = function.args
    use_result_type = bool(function.keywords.get("use_result_type", False))
    if not isinstance(inner, functools.partial) or not isinstance(retries, int):
        return None
    if inner.func is Runner.metadata_fetcher_root and len(inner.args) == 3 and not inner.keywords:
        return RunnerMetadata(retries, skipbadfiles, use_result_type, *inner.args, original=inner)
    if inner.func is Runner._work_function and len(inner.args) == len(_WORK_ARGS) \
            and set(inner.keywords) == _WORK_KEYWORDS:
        return RunnerWork(retries, skipbadfiles, use_result_type, *inner.args, **inner.keywords,
                          original=inner)
    return None


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def tolerance(spec: RunnerMetadata | RunnerWork) -> Callable[[BaseException], bool] | None:
    """Which final errors ``skipbadfiles`` skips (as ``automatic_retries`` does), or None.

    With ``use_result_type`` coffea raises them for the Runner to wrap, so none is skipped here.
    """
    kinds = (OSError,) if spec.skipbadfiles is True else spec.skipbadfiles
    if not kinds or spec.use_result_type:
        return None
    return lambda error: any(isinstance(c, kinds) for c in _chain(error))


def io_options(xrootdtimeout: Any, uproot_options: dict) -> dict | None:
    """The warm file cache's options for coffea's ``xrootdtimeout`` and ``uproot_options``.

    None when ``uproot_options`` holds more than ``timeout`` (the file must be opened as given).
    """
    options = dict(uproot_options or {})
    timeout = options.pop("timeout", xrootdtimeout)
    if options:
        return None
    return {"timeout": float(timeout or 60), "handler": "auto"}


def fetch_metadata(spec: RunnerMetadata, item) -> Any:
    """``Runner.metadata_fetcher_root(item)`` on this slot's warm files (left open for the chunks)."""
    from coffea.processor.accumulator import set_accumulator
    from coffea.processor.executor import FileMeta

    options = io_options(spec.xrootdtimeout, spec.uproot_options)
    if options is None:
        return spec.original(item)
    tree = warm_files(options).get(item.filename, item.treename)
    metadata = dict(item.metadata or {})
    metadata.update({"numentries": int(tree.num_entries), "uuid": tree.file.fUUID})
    if spec.align_clusters:
        metadata["clusters"] = [int(x) for x in tree.common_entry_offsets()]
    return set_accumulator([FileMeta(item.dataset, item.filename, item.treename, metadata)])


def _warm_options(spec: RunnerWork, item) -> dict | None:
    """The io options to run ``item`` warm with, or None to run coffea's function as given."""
    from coffea.nanoevents import schemas

    if spec.format != "root" or spec.use_dataframes or spec.processor_instance == "heavy":
        return None
    if getattr(item, "preload", None) is not None or spec.cache_function() is not None:
        return None
    if not (isinstance(spec.schema, type) and issubclass(spec.schema, schemas.BaseSchema)):
        return None
    return io_options(spec.xrootdtimeout, spec.uproot_options)


def processor_of(spec: RunnerWork) -> Any:
    """The processor instance of Runner's work closure (unpickled if Runner compressed it)."""
    return _processor(spec.processor_instance)


def _processor(instance: Any) -> Any:
    """The processor, unpickled when Runner sent it as lz4-compressed cloudpickle bytes."""
    from coffea.processor import ProcessorABC

    if isinstance(instance, ProcessorABC) or callable(instance):
        return instance
    import cloudpickle
    import lz4.frame

    return cloudpickle.loads(lz4.frame.decompress(instance))


def _metadata(item) -> dict:
    metadata = {"dataset": item.dataset, "filename": item.filename, "treename": item.treename,
                "entrystart": item.entrystart, "entrystop": item.entrystop,
                "fileuuid": str(uuid.UUID(bytes=item.fileuuid)) if len(item.fileuuid) > 0 else ""}
    if item.usermeta is not None:
        metadata.update(item.usermeta)
    return metadata


def work_chunk(spec: RunnerWork, item) -> dict:
    """``Runner._work_function(item)`` (one attempt) on this slot's warm files, trees and schemas."""
    options = _warm_options(spec, item)
    if options is None:
        return spec.original(item)
    processor = _processor(spec.processor_instance)
    metadata = _metadata(item)
    if spec.checkpointer is not None:
        out = spec.checkpointer.load(metadata, processor)
        if out is not None:
            return out
    out = _run_warm(spec, item, processor, metadata, options)
    if spec.checkpointer is not None:
        spec.checkpointer.save(out, metadata, processor)
    return out


def _describe(item) -> str:
    return f"{item.filename} entries {item.entrystart}-{item.entrystop} (dataset {item.dataset})"


def _run_warm(spec: RunnerWork, item, processor, metadata: dict, options: dict) -> dict:
    """Build the chunk's events from the warm file, run the processor, wrap the output as coffea does."""
    from coffea.processor import ProcessorABC

    files = warm_files(options)
    handle = files.directory(item.filename, item.treename)
    source = getattr(handle.file, "source", None)
    bytes_before = getattr(source, "num_requested_bytes", 0)
    materialized: list = []
    try:
        events = warm_events(handle, item.treename, spec.schema, metadata, item.entrystart, item.entrystop,
                             access_log=materialized, iteritems_options=spec.iteritems_options)
    except InputError:
        raise
    except Exception as exc:
        files.discard(item.filename)
        msg = f"cannot read {_describe(item)}: {type(exc).__name__}: {exc}"
        raise ChunkError(msg, item.filename, item.entrystart, item.entrystop) from exc
    tic = time.time()
    try:
        out = processor.process(events) if isinstance(processor, ProcessorABC) else processor(events)
    except Exception as exc:
        name = type(processor).__name__
        msg = f"processor {name} failed on {_describe(item)}: {type(exc).__name__}: {exc}"
        raise ChunkError(msg, item.filename, item.entrystart, item.entrystop) from exc
    if out is None:
        msg = ("Output of process() should not be None. Make sure your processor's process() function "
               "returns an accumulator.")
        raise ValueError(msg)
    toc = time.time()
    if not spec.savemetrics:
        return {"out": out, "processed": {item}}
    return {"out": out, "processed": {item},
            "metrics": _metrics(materialized, events, toc - tic,
                                getattr(source, "num_requested_bytes", 0) - bytes_before)}


def _metrics(materialized: list, events, processtime: float, bytesread: int) -> dict:
    from coffea.nanoevents.util import key_to_tuple

    return {"bytesread": bytesread,
            "columns": {f"{x.branch}-{key_to_tuple(x.buffer_key)[3]}" for x in materialized},
            "entries": len(events), "processtime": processtime}
