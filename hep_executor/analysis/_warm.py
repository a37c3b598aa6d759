"""What a worker slot keeps warm between tasks: open files and NanoEvents schemas.

A slot is one long-lived process that runs many chunks, most of them of
a few files. Opening a file and reading its TTree metadata (hundreds of
branches in NanoAOD) costs tenths of a second, and turning the tree's
branches into a NanoEvents schema tens of milliseconds more, while a
small chunk's own processing takes milliseconds. So the slot keeps:

- a bounded :class:`~hep_executor.analysis._io.FileCache` of open files and trees
  (:func:`warm_files`), filled by preprocessing and processing alike;
- the built schema of each (file UUID, tree, schema class), least
  recently used dropped past :data:`MAX_SCHEMAS` (:func:`warm_events`).

A cached schema is reused for another chunk by copying its top record
with that chunk's metadata; everything below the top record is shared
read-only. Files with the same UUID are copies of one file (same
branches), so one schema serves them all.
"""

from __future__ import annotations

import collections
import copy

from hep_executor.errors import ChunkReadError

__all__ = ["MAX_FILES", "MAX_SCHEMAS", "clear", "warm_events", "warm_files", "warm_stats"]

#: open files kept per slot
MAX_FILES = 4
#: NanoEvents schemas kept per slot
MAX_SCHEMAS = 16

_files = None
_schemas: collections.OrderedDict = collections.OrderedDict()
_stats = {"schema_hits": 0, "schema_misses": 0}


def warm_files(io_options: dict | None = None):
    """This slot's :class:`~hep_executor.analysis._io.FileCache` (made on first use; a slot is one process).

    ``io_options`` (``timeout``, ``handler``, ``retries``, ``backoff`` of
    :func:`~hep_executor.analysis._io.open_file`) that differ from the cache's make a new cache.
    """
    global _files
    io_options = io_options or {}
    if _files is None or _files.options != io_options:
        from hep_executor.analysis._io import FileCache

        if _files is not None:
            _files.close()
        _files = FileCache(max_files=MAX_FILES, **io_options)
    return _files


def warm_stats() -> dict:
    """Hits and misses of this slot's caches (files and schemas)."""
    files = {"file_hits": _files.hits, "file_misses": _files.misses} if _files is not None else {}
    return {**files, **_stats}


def _schema_key(schemaclass) -> str:
    return f"{getattr(schemaclass, '__module__', '')}.{getattr(schemaclass, '__qualname__', repr(schemaclass))}"


def _with_metadata(schema, metadata: dict):
    """A shallow copy of a cached ``schema`` whose top record carries ``metadata``."""
    form = getattr(schema, "_form", None)
    if not isinstance(form, dict) or not isinstance(form.get("parameters"), dict):
        return None  # not a BaseSchema layout this module knows: build afresh
    params = dict(form["parameters"])
    params["metadata"] = {**metadata, **(params.get("metadata") or {})}  # the schema's own keys win
    clone = copy.copy(schema)
    clone._form = {**form, "parameters": params}
    return clone


def _base_form(mapping, tree, metadata: dict, iteritems_options: dict | None = None) -> dict:
    """The tree's base form as ``NanoEventsFactory.from_root`` builds it."""
    form = mapping._extract_base_form(tree, iteritems_options=iteritems_options or {})
    form["typenames"] = tree.typenames()
    form["parameters"]["metadata"] = metadata
    return form


def warm_events(directory, treename: str, schemaclass, metadata: dict, entry_start: int, entry_stop: int,
                access_log: list | None = None, iteritems_options: dict | None = None):
    """NanoEvents (virtual) of ``[entry_start, entry_stop)`` of an open file's tree.

    The same events as ``NanoEventsFactory.from_root(directory, treepath=treename,
    schemaclass=..., metadata=..., mode="virtual", entry_start=..., entry_stop=...,
    access_log=..., iteritems_options=...)``, with the schema taken from this
    slot's cache when it has seen the file (by UUID) before. A range past the
    tree's end is an error, never clamped.

    Raises
    ------
    ChunkReadError
        ``[entry_start, entry_stop)`` does not lie within the tree.
    """
    from coffea.nanoevents import NanoEventsFactory
    from coffea.nanoevents.mapping import TrivialUprootOpener, UprootSourceMapping
    from coffea.nanoevents.util import tuple_to_key

    tree = directory[treename]
    uuid = str(tree.file.uuid)
    entry_start, entry_stop = int(entry_start), int(entry_stop)
    if not 0 <= entry_start <= entry_stop <= int(tree.num_entries):
        path = tree.file.file_path
        msg = (f"{path}: entries {entry_start}-{entry_stop} asked of tree {treename!r}, which holds "
               f"{tree.num_entries}: the range would be read short")
        raise ChunkReadError(msg, path, entry_start, entry_stop)
    mapping = UprootSourceMapping(TrivialUprootOpener({uuid: tree.file.file_path}, {}), entry_start, entry_stop,
                                  cache={}, access_log=access_log, file_handle=directory, use_ak_forth=True,
                                  virtual=True)
    mapping.preload_column_source(uuid, tree.object_path, tree)
    partition_key = (uuid, tree.object_path, f"{entry_start}-{entry_stop}")
    key = (uuid, tree.object_path, _schema_key(schemaclass), repr(sorted((iteritems_options or {}).items())))
    cached = _schemas.get(key)
    schema = _with_metadata(cached, metadata) if cached is not None else None
    if schema is None:
        _stats["schema_misses"] += 1
        built = schemaclass(_base_form(mapping, tree, {}, iteritems_options))
        _schemas[key] = built
        while len(_schemas) > MAX_SCHEMAS:
            _schemas.popitem(last=False)
        schema = _with_metadata(built, metadata)
        if schema is None:  # a schema layout this module does not know: build it with the metadata
            _schemas.pop(key, None)
            schema = schemaclass(_base_form(mapping, tree, metadata, iteritems_options))
    else:
        _stats["schema_hits"] += 1
        _schemas.move_to_end(key)
    return NanoEventsFactory(schema, mapping, tuple_to_key(partition_key), mode="virtual").events()


def clear() -> None:
    """Close this slot's files, forget its schemas and zero its counts (the slot starts cold again)."""
    global _files
    if _files is not None:
        _files.close()
    _files = None
    _schemas.clear()
    _stats.update(schema_hits=0, schema_misses=0)
