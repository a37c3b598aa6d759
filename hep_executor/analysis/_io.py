"""Opening ROOT inputs: local paths and ``root://`` XRootD URLs.

:func:`open_file`, :func:`open_tree` and :func:`file_info` open a file with
uproot and turn every failure into one class of
:mod:`hep_executor.errors`, with a one-line message naming the path or
URL and the cause:

========================  ==============================================
FileMissingError          no such local file, or the server says so
NotRootFileError          a text file or anything else not ROOT
TruncatedFileError        shorter than its header says, or undecodable
TreeNotFoundError         the tree is not there (the message lists trees)
EmptyInputError           the tree has no entries (``allow_empty=False``)
RemoteAccessError         server down, unreachable or too slow
========================  ==============================================

Remote files are read with uproot's XRootD-bindings source (faster),
or with fsspec-xrootd when the bindings are missing. A connection that
fails for a transient reason (refused, timed out) is retried with
exponential backoff; a definite "no such file" is not. Each attempt is
bounded by ``timeout``, so a dead server costs at most about
``(retries + 1) * timeout + backoff * (2**retries - 1)`` seconds.

:class:`FileCache` keeps a few files open (least recently used goes
first) so that a worker slot reading many chunks of one file pays for
its metadata once.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hep_executor.errors import (
    ConfigError,
    EmptyInputError,
    FileMissingError,
    InputError,
    NotRootFileError,
    RemoteAccessError,
    TreeNotFoundError,
    TruncatedFileError,
)

__all__ = ["FileCache", "FileInfo", "file_info", "get_tree", "is_remote", "open_file", "open_tree", "tree_info"]

log = logging.getLogger(__name__)

HANDLERS = ("auto", "xrootd", "fsspec")

# XRootD client settings applied once, before the first root:// open, unless
# the user set the matching XRD_* environment variable. The library defaults
# check timeouts only every 15 s and refuse to reconnect to a host for 30 min
# after one failed connection, which would turn "server restarted" into
# "server down" for the whole process.
XROOTD_CLIENT_SETTINGS = {
    "TimeoutResolution": 1,  # check request timeouts every second
    "StreamErrorWindow": 0,  # a failed connection may be retried at once
    "ConnectionWindow": 5,  # seconds per connection attempt (default 120)
    "ConnectionRetry": 1,  # attempts per open; our own retries add backoff (default 5)
}

# Words of XRootD/uproot error messages (lower case) that mark a failure
# worth retrying: client-side connection trouble, and the server's
# IOError, NoMemory, ServerError, noserver and Overloaded codes.
_TRANSIENT_WORDS = (
    "operation expired", "timed out", "timeout", "socket", "connection", "broken pipe",
    "stream error", "invalid address", "name or service not known",
    "[3007]", "[3008]", "[3012]", "[3014]", "[3024]",
)


@dataclass(frozen=True)
class FileInfo:
    """What the planner needs to know about one input file.

    Attributes
    ----------
    path : str
        The path or URL as given.
    entries : int
        Number of entries in the tree.
    uuid : str
        The ROOT file's UUID (stable across copies of the same file).
    cluster_starts : list of int
        The tree's common entry boundaries (uproot's
        ``TTree.common_entry_offsets()``): starts with 0, ends with
        ``entries``; chunks cut here read whole baskets.
    branches : int
        Number of branches (all levels).
    """

    path: str
    entries: int
    uuid: str
    cluster_starts: list[int] = field(hash=False)
    branches: int

    def __post_init__(self):
        if self.entries < 0:
            msg = f"FileInfo of {self.path!r}: entries must be >= 0, not {self.entries}"
            raise ConfigError(msg)


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL (``root://``, ``https://``, ...) rather than a local path."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def open_file(path_or_url: str | os.PathLike, *, timeout: float = 30.0, retries: int = 3,
              backoff: float = 1.0, handler: str = "auto"):
    """Open a ROOT file, local or remote, and return its top directory.

    Parameters
    ----------
    path_or_url : str or os.PathLike
        A local path or a ``root://host[:port]//path`` URL.
    timeout : float
        Seconds allowed for each remote request (and each open attempt).
    retries : int
        Further attempts after a transient remote failure (refused
        connection, timeout). Not used for local files or for a definite
        "no such file".
    backoff : float
        Seconds before the first retry; doubled before each next one.
    handler : {"auto", "xrootd", "fsspec"}
        How ``root://`` URLs are read: the XRootD Python bindings
        (``"xrootd"``), fsspec-xrootd (``"fsspec"``), or the bindings when
        importable and fsspec-xrootd otherwise (``"auto"``).

    Returns
    -------
    uproot.ReadOnlyDirectory
        The file's top directory; close it with ``.close()`` (or use it as
        a context manager).

    Raises
    ------
    FileMissingError, NotRootFileError, TruncatedFileError, RemoteAccessError
        See the module docstring.
    """
    _check_options(timeout, retries, backoff, handler)
    path = os.fspath(path_or_url)
    if not is_remote(path):
        return _open_once(path, timeout, _local_handler())
    source = _remote_handler(path, handler)
    delay = backoff
    for attempt in range(retries + 1):
        try:
            return _open_once(path, timeout, source)
        except RemoteAccessError as exc:
            if attempt == retries or not _is_transient(exc.__cause__):
                raise
            log.warning("%s; retry %d of %d in %.1f s", exc, attempt + 1, retries, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def open_tree(path_or_url: str | os.PathLike, treename: str, **options):
    """Open ``treename`` in a ROOT file; see :func:`open_file` for ``options``.

    The returned tree keeps its file open; close it with
    ``tree.file.close()``.

    Raises
    ------
    TreeNotFoundError
        ``treename`` is not a TTree in the file; the message lists the
        trees that are there.
    FileMissingError, NotRootFileError, TruncatedFileError, RemoteAccessError
        As :func:`open_file`.
    """
    directory = open_file(path_or_url, **options)
    try:
        return _get_tree(directory, os.fspath(path_or_url), treename)
    except BaseException:
        directory.close()
        raise


def file_info(path_or_url: str | os.PathLike, treename: str, *, allow_empty: bool = True,
              **options) -> FileInfo:
    """Read the entry count, UUID and cluster boundaries of one file's tree.

    Parameters
    ----------
    path_or_url : str or os.PathLike
        Local path or ``root://`` URL.
    treename : str
        Name (or ``dir/name`` path) of the TTree.
    allow_empty : bool
        When False, a tree with no entries raises :class:`EmptyInputError`.
    **options
        ``timeout``, ``retries``, ``backoff``, ``handler`` of :func:`open_file`.

    Returns
    -------
    FileInfo
    """
    path = os.fspath(path_or_url)
    tree = open_tree(path, treename, **options)
    try:
        return tree_info(tree, path, treename, allow_empty=allow_empty)
    finally:
        tree.file.close()


def tree_info(tree, path: str, treename: str, *, allow_empty: bool = True) -> FileInfo:
    """:class:`FileInfo` of an open ``tree`` of ``path`` (left open); see :func:`file_info`."""
    with _translated(path):
        entries = int(tree.num_entries)
        starts = [int(x) for x in tree.common_entry_offsets()]
        branches = len(tree.keys())
        uuid = str(tree.file.uuid)
    if entries == 0 and not allow_empty:
        msg = f"{path}: tree {treename!r} has no entries; drop the file from the fileset"
        raise EmptyInputError(msg, path)
    return FileInfo(path=path, entries=entries, uuid=uuid, cluster_starts=starts, branches=branches)


def get_tree(directory, path: str, treename: str):
    """The TTree ``treename`` of an open ``directory`` of ``path``; see :func:`open_tree` for errors."""
    return _get_tree(directory, path, treename)


def _stamp(path: str):
    """What tells a local file from one replaced or rewritten under the same name (None if remote)."""
    if is_remote(path):
        return None
    try:
        st = os.stat(path.removeprefix("file://"))
    except OSError:
        return "gone"
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileCache:
    """A small least-recently-used set of open files, for reading many chunks of few files.

    A local file replaced or rewritten since it was opened (another inode,
    size or modification time) is opened again, so a cached handle never
    reads a file that is no longer the one under its name.

    Parameters
    ----------
    max_files : int
        How many files stay open; opening one more closes the least
        recently used.
    **options
        ``timeout``, ``retries``, ``backoff``, ``handler`` of :func:`open_file`.

    Examples
    --------
    >>> cache = FileCache(max_files=4)
    >>> tree = cache.get("data.root", "Events")  # doctest: +SKIP
    >>> cache.close()
    """

    def __init__(self, max_files: int = 8, **options):
        if max_files < 1:
            msg = f"FileCache max_files must be >= 1, not {max_files}"
            raise ConfigError(msg)
        _check_options(**{**_DEFAULTS, **options})
        self.max_files = max_files
        self.options = options
        self._files: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: str | os.PathLike, treename: str):
        """Return the tree ``treename`` of ``path``, opening the file if needed."""
        path = os.fspath(path)
        with self._lock:
            entry = self._files.get(path)
            if entry is not None and entry[2] != _stamp(path):
                log.info("%s changed since it was opened: opening it again", path)
                del self._files[path]
                _close_quietly(entry[0])
                entry = None
            if entry is not None:
                self._files.move_to_end(path)
                directory, trees, _ = entry
                if treename in trees:
                    self.hits += 1
                    return trees[treename]
            else:
                stamp = _stamp(path)
                directory, trees = open_file(path, **self.options), {}
                self._files[path] = (directory, trees, stamp)
                self._evict()
            self.misses += 1
            tree = _get_tree(directory, path, treename)
            trees[treename] = tree
            return tree

    def directory(self, path: str | os.PathLike, treename: str):
        """Return the open top directory of ``path`` (after checking ``treename`` is there)."""
        self.get(path, treename)
        with self._lock:
            return self._files[os.fspath(path)][0]

    def discard(self, path: str | os.PathLike) -> None:
        """Close and forget ``path`` (after a read error, say)."""
        with self._lock:
            entry = self._files.pop(os.fspath(path), None)
        if entry is not None:
            _close_quietly(entry[0])

    def close(self) -> None:
        """Close every open file."""
        with self._lock:
            entries = list(self._files.values())
            self._files.clear()
        for directory, *_ in entries:
            _close_quietly(directory)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path) -> bool:
        return os.fspath(path) in self._files

    def __enter__(self) -> FileCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _evict(self) -> None:
        while len(self._files) > self.max_files:
            old, (directory, *_) = self._files.popitem(last=False)
            log.debug("closing %s (file cache full)", old)
            _close_quietly(directory)


# ---------------------------------------------------------------- internals

def _stamp(path: str) -> tuple | None:
    """``(size, mtime_ns)`` of a local file; None for a remote one (or one that cannot be stat'ed)."""
    if is_remote(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


_DEFAULTS = {"timeout": 30.0, "retries": 3, "backoff": 1.0, "handler": "auto"}


def _check_options(timeout: float, retries: int, backoff: float, handler: str) -> None:
    if not timeout or timeout <= 0:
        msg = f"timeout must be a positive number of seconds, not {timeout!r}"
        raise ConfigError(msg)
    if retries < 0 or backoff < 0:
        msg = f"retries and backoff must be >= 0 (got {retries!r}, {backoff!r})"
        raise ConfigError(msg)
    if handler not in HANDLERS:
        msg = f"handler must be one of {', '.join(HANDLERS)}, not {handler!r}"
        raise ConfigError(msg)


def _remote_handler(url: str, handler: str):
    """The uproot source class for ``url``, or None for uproot's default."""
    if not url.startswith(("root://", "roots://")):
        return None
    if handler in ("auto", "xrootd"):
        try:
            import XRootD.client  # noqa: F401
        except ImportError:
            if handler == "xrootd":
                msg = (f"cannot read {url}: the XRootD Python bindings are not installed "
                       "(pip install xrootd), or choose handler='fsspec'")
                raise ConfigError(msg) from None
        else:
            _configure_xrootd_client()
            import uproot.source.xrootd

            return uproot.source.xrootd.XRootDSource
    try:
        import fsspec_xrootd  # noqa: F401
    except ImportError:
        msg = f"cannot read {url}: install the XRootD bindings (pip install xrootd fsspec-xrootd)"
        raise ConfigError(msg) from None
    _configure_xrootd_client()
    import uproot.source.fsspec

    return uproot.source.fsspec.FSSpecSource


def _local_handler():
    """uproot's source for local files: handles opened once and kept (uproot's default, fsspec,
    opens and stats the file again for every read: some 40 calls per chunk in a warm slot)."""
    import uproot.source.file

    return uproot.source.file.MultithreadedFileSource


@functools.lru_cache(maxsize=1)
def _configure_xrootd_client() -> None:
    try:
        from XRootD.client import EnvPutInt
    except ImportError:  # fsspec-xrootd without bindings cannot happen, but be safe
        return
    for name, value in XROOTD_CLIENT_SETTINGS.items():
        if f"XRD_{name.upper()}" not in os.environ:
            EnvPutInt(name, value)


def _open_once(path: str, timeout: float, source):
    import uproot

    # the XRootD bindings take whole seconds (a float fails inside them). No array cache:
    # a run reads each entry range once, and uproot's default (100 MB per open file) would
    # keep earlier chunks' columns in a worker slot that holds several files open, adding
    # to every later task's measured peak.
    options = {"timeout": max(1, math.ceil(timeout)), "array_cache": None}
    if source is not None:
        options["handler"] = source
    # a Path is never split at ':' (uproot's "file.root:tree" syntax)
    target = path if is_remote(path) else Path(path.removeprefix("file://"))
    with _translated(path):
        directory = uproot.open(target, **options)
    try:
        with _translated(path):
            _check_length(directory, path)
    except BaseException:
        _close_quietly(directory)
        raise
    return directory


def _check_length(directory, path: str) -> None:
    """A file shorter than its header's fEND was cut short (a failed copy)."""
    rfile = directory.file
    size = rfile.source.num_bytes
    if size is not None and size < rfile.fEND:
        msg = (f"{path}: truncated ROOT file ({size} bytes, its header says {rfile.fEND}); "
               "copy it again")
        raise TruncatedFileError(msg, path)


@contextlib.contextmanager
def _translated(path: str):
    """Turn uproot/XRootD exceptions raised on ``path`` into InputError classes."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise _classify(exc, path) from exc


def _is_transient(exc: BaseException | None) -> bool:
    """Whether a remote failure may go away by itself (worth a retry)."""
    if exc is None:
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return any(w in str(exc).lower() for w in _TRANSIENT_WORDS)


def _classify(exc: Exception, path: str) -> InputError:
    """The InputError subclass (with a one-line message) for ``exc`` raised on ``path``."""
    text = str(exc)
    lower = text.lower()
    cause = (_first_line(text) or type(exc).__name__).replace(f" in file {path}", "")
    remote = is_remote(path)
    if isinstance(exc, IsADirectoryError) or (remote and "[3016]" in lower):
        return FileMissingError(f"{path}: is a directory, not a ROOT file", path)
    if isinstance(exc, ValueError) and "not a root file" in lower:
        return NotRootFileError(f"{path}: not a ROOT file ({_first_line(text)})", path)
    if remote:
        if "[3011]" in lower or "[3015]" in lower or "no such file" in lower:
            return FileMissingError(f"{path}: no such file on the server", path)
        if _is_transient(exc):
            return RemoteAccessError(f"{path}: server unreachable or not answering ({cause})", path)
        if "[3010]" in lower or "permission" in lower or "not authorized" in lower:
            return RemoteAccessError(f"{path}: access refused by the server ({cause})", path)
        if any(w in lower for w in ("xrootd error", "[error]", "[fatal]", "failed to open file")):
            return RemoteAccessError(f"{path}: XRootD request failed ({cause})", path)
    if isinstance(exc, PermissionError):
        return InputError(f"{path}: permission denied; check the file's mode", path)
    if isinstance(exc, FileNotFoundError):
        return FileMissingError(f"{path}: no such file", path)
    if isinstance(exc, (OSError, ValueError, KeyError, IndexError, TypeError, EOFError)) or \
            type(exc).__module__.startswith(("uproot", "zlib", "lz4", "zstandard")):
        if "received 0 bytes" in lower and not remote and _is_empty(path):
            return TruncatedFileError(f"{path}: empty file (0 bytes); copy it again", path)
        return TruncatedFileError(f"{path}: truncated or corrupt ROOT file ({cause})", path)
    return InputError(f"{path}: cannot read ({type(exc).__name__}: {cause})", path)


def _get_tree(directory, path: str, treename: str):
    import uproot

    with _translated(path):
        try:
            obj = directory[treename]
        except uproot.KeyInFileError:
            obj = None
    if obj is None or not isinstance(obj, uproot.behaviors.TTree.TTree):
        what = "" if obj is None else f" (it is a {type(obj).__name__}, not a TTree)"
        trees = _list_trees(directory, path)
        there = ", ".join(repr(t) for t in trees) if trees else "none"
        msg = f"{path}: no tree {treename!r}{what}; trees in the file: {there}"
        raise TreeNotFoundError(msg, path)
    return obj


def _list_trees(directory, path: str) -> list[str]:
    with _translated(path):
        names = directory.classnames(recursive=True, cycle=False)
    return sorted(n for n, cls in names.items() if cls in ("TTree", "TNtuple", "TNtupleD"))


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _close_quietly(directory) -> None:
    try:
        directory.close()
    except Exception:  # closing a broken remote file must not mask the real error
        log.debug("error closing a ROOT file", exc_info=True)
