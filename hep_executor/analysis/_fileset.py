"""Filesets: validating the user's ``{dataset: files}`` and loading it from a file.

:func:`normalize_fileset` turns every form coffea accepts into one flat
list of :class:`FileEntry` and checks it whole before any task runs:
each structural error is a one-line :class:`~hep_executor.errors.FilesetError`
naming the dataset and the key at fault, and a file listed twice (in one
dataset or in two) is a :class:`~hep_executor.errors.DuplicateFileError`
naming it, or is dropped with a warning when ``dedupe=True``.

Accepted forms (``tree`` may be omitted where ``treename`` is given)::

    {"ds": "a.root"}                                  one file
    {"ds": ["a.root", "root://host//b.root"]}         a list of files
    {"ds": {"files": ["a.root"], "treename": "Events", "metadata": {...}}}   coffea 0.7
    {"ds": {"files": {"a.root": "Events"}, "metadata": {...}}}              coffea 2023+
    {"ds": {"files": {"a.root": {"object_path": "Events", ...}}}}            coffea dataset_tools

:func:`load_fileset` reads a fileset from disk:

- ``.json``: any of the forms above;
- ``.txt``: one path or URL per line, for one dataset named after the
  file (``ttbar.txt`` -> dataset ``ttbar``); blank lines and lines
  starting with ``#`` are ignored.

Relative local paths in a fileset file are taken relative to the file's
folder, so a fileset can travel with its inputs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from hep_executor.errors import DuplicateFileError, EmptyInputError, FilesetError

__all__ = ["FileEntry", "load_fileset", "normalize_fileset", "resolve_paths"]

log = logging.getLogger(__name__)

#: keys a dataset's dict may hold
DATASET_KEYS = frozenset({"files", "treename", "metadata", "preload"})
#: keys of coffea's per-file dict that name the tree
_TREE_KEYS = ("object_path", "treename")


class FileEntry(NamedTuple):
    """One input file of a fileset, after validation."""

    dataset: str
    filename: str
    treename: str
    metadata: dict | None


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _check_name(value: Any, where: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
        msg = f"{where}: a file must be a path or URL string, not {_kind(value)}"
        raise FilesetError(msg)
    return os.fspath(value)


def _tree_of(value: Any, where: str) -> str | None:
    """The tree name of a ``{file: value}`` entry: a string, None, or coffea's per-file dict."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        tree = next((value[k] for k in _TREE_KEYS if k in value), None)
        if tree is None or isinstance(tree, str):
            return tree or None
        value = tree
    msg = f"{where}: the tree name must be a string, not {_kind(value)}"
    raise FilesetError(msg)


def _files_of(dataset: str, files: Any) -> list[tuple[str, str | None]]:
    """``(file, tree or None)`` pairs of a dataset's ``files`` value."""
    where = f"dataset {dataset!r}"
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if isinstance(files, Mapping):
        return [(_check_name(f, f"{where}, key {f!r}"), _tree_of(t, f"{where}, file {f!r}"))
                for f, t in files.items()]
    if isinstance(files, (list, tuple)):
        return [(_check_name(f, f"{where}, file #{i}"), None) for i, f in enumerate(files)]
    msg = f"{where}: 'files' must be a list of paths or a {{path: tree}} dict, not {_kind(files)}"
    raise FilesetError(msg)


def _dataset_entries(dataset: Any, spec: Any, treename: str | None) -> list[FileEntry]:
    if not isinstance(dataset, str) or not dataset:
        msg = f"dataset names must be non-empty strings, not {_kind(dataset)}"
        raise FilesetError(msg)
    where = f"dataset {dataset!r}"
    meta, tree, files = None, treename, spec
    if isinstance(spec, Mapping):
        unknown = set(spec) - DATASET_KEYS
        if unknown:
            msg = f"{where}: unknown key(s) {sorted(map(str, unknown))}; a dataset holds {sorted(DATASET_KEYS)}"
            raise FilesetError(msg)
        if "files" not in spec:
            msg = f"{where}: no 'files' key"
            raise FilesetError(msg)
        files, tree, meta = spec["files"], spec.get("treename", treename), spec.get("metadata")
        if tree is not None and not isinstance(tree, str):
            msg = f"{where}, key 'treename': must be a string, not {_kind(tree)}"
            raise FilesetError(msg)
        if meta is not None and not isinstance(meta, Mapping):
            msg = f"{where}, key 'metadata': must be a dict, not {_kind(meta)}"
            raise FilesetError(msg)
    elif not isinstance(spec, (str, os.PathLike, list, tuple)):
        msg = f"{where}: expected a list of files or a dict with 'files', not {_kind(spec)}"
        raise FilesetError(msg)
    pairs = _files_of(dataset, files)
    if not pairs:
        msg = f"dataset {dataset!r} has no files"
        raise EmptyInputError(msg, dataset)
    out = []
    for filename, file_tree in pairs:
        name = file_tree or tree
        if not name:
            msg = f"{where}, file {filename!r}: no tree name; give one per file or pass treename="
            raise FilesetError(msg)
        out.append(FileEntry(dataset, filename, name, dict(meta) if meta is not None else None))
    return out


def _file_key(filename: str) -> str:
    """What makes two names one file: the URL as given, or the absolute local path (links kept)."""
    if "://" in filename and not filename.startswith("file://"):
        return filename
    return os.path.normpath(os.path.abspath(filename.removeprefix("file://")))


def _without_duplicates(entries: list[FileEntry], dedupe: bool) -> list[FileEntry]:
    first: dict[str, FileEntry] = {}
    out = []
    for entry in entries:
        key = _file_key(entry.filename)
        seen = first.get(key)
        if seen is None:
            first[key] = entry
            out.append(entry)
            continue
        where = (f"twice in dataset {entry.dataset!r}" if seen.dataset == entry.dataset
                 else f"in datasets {seen.dataset!r} and {entry.dataset!r}")
        same = "" if seen.filename == entry.filename else f" (as {seen.filename!r})"
        if not dedupe:
            msg = (f"{entry.filename!r}{same} is listed {where}: each file may be processed once; "
                   "remove one, or pass dedupe=True to keep the first")
            raise DuplicateFileError(msg, entry.filename)
        log.warning("%r%s is listed %s: keeping the first (dataset %r)", entry.filename, same, where,
                    seen.dataset)
    return out


def normalize_fileset(fileset: Any, treename: str | None = "Events", *, dedupe: bool = False
                      ) -> list[FileEntry]:
    """Validate ``fileset`` and flatten it to :class:`FileEntry` tuples.

    Parameters
    ----------
    fileset : dict, str or os.PathLike
        One of the forms in the module docstring, or a ``.json``/``.txt``
        file of one (see :func:`load_fileset`).
    treename : str, optional
        Tree to read where the fileset names none.
    dedupe : bool
        Drop a file listed again (with a warning) instead of raising.

    Returns
    -------
    list of FileEntry

    Raises
    ------
    FilesetError
        A structural error; the one-line message names the dataset and key.
    DuplicateFileError
        A file is listed twice (and ``dedupe`` is False).
    EmptyInputError
        A dataset has no files.
    """
    if isinstance(fileset, (str, os.PathLike)):
        fileset = load_fileset(fileset)
    if not isinstance(fileset, Mapping) or not fileset:
        msg = f"the fileset must be a non-empty dict {{dataset: [files]}}, not {_kind(fileset)}"
        raise FilesetError(msg)
    entries = [e for dataset, spec in fileset.items() for e in _dataset_entries(dataset, spec, treename)]
    return _without_duplicates(entries, dedupe)


def _resolved(name: str, base: Path) -> str:
    if "://" in name or Path(name).is_absolute():
        return name
    return str((base / name).resolve())


def resolve_paths(fileset: dict, base: str | os.PathLike) -> dict:
    """``fileset`` with relative local paths taken relative to ``base`` (structure kept, URLs unchanged).

    What :func:`load_fileset` does to a file's fileset, for one given inline
    (a config's ``fileset:`` mapping, relative to the config's folder).
    """
    base = Path(base)
    out = {}
    for dataset, spec in fileset.items():
        if isinstance(spec, dict) and "files" not in spec:
            out[dataset] = spec
            continue
        files = spec.get("files") if isinstance(spec, dict) else spec
        if isinstance(files, str):
            files = _resolved(files, base)
        elif isinstance(files, dict):
            files = {_resolved(f, base) if isinstance(f, str) else f: t for f, t in files.items()}
        elif isinstance(files, list):
            files = [_resolved(f, base) if isinstance(f, str) else f for f in files]
        out[dataset] = {**spec, "files": files} if isinstance(spec, dict) else files
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        msg = f"fileset file {str(path)!r}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        raise FilesetError(msg) from None
    except UnicodeDecodeError:
        msg = f"fileset file {str(path)!r}: not a text file"
        raise FilesetError(msg) from None


def _read_txt(path: Path) -> dict:
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        msg = f"fileset file {str(path)!r}: not a text file"
        raise FilesetError(msg) from None
    return {path.stem: [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]}


def load_fileset(path: str | os.PathLike) -> dict:
    """Read a fileset from a ``.json`` or ``.txt`` file (see the module docstring).

    Returns the fileset as a dict, with relative local paths resolved
    against the file's folder; :func:`normalize_fileset` validates it.

    Raises
    ------
    FilesetError
        The file is missing, of another kind, or not valid JSON (the
        message names the file, line and column).
    """
    path = Path(path)
    if not path.is_file():
        msg = f"fileset file {str(path)!r} not found"
        raise FilesetError(msg)
    suffix = path.suffix.lower()
    if suffix == ".json":
        raw = _read_json(path)
    elif suffix == ".txt":
        raw = _read_txt(path)
    else:
        msg = f"fileset file {str(path)!r}: expected a .json or a .txt file of paths, not {suffix or 'no suffix'!r}"
        raise FilesetError(msg)
    if not isinstance(raw, dict) or not raw:
        msg = f"fileset file {str(path)!r}: expected a non-empty {{dataset: files}} object, not {_kind(raw)}"
        raise FilesetError(msg)
    return resolve_paths(raw, path.parent.resolve())
