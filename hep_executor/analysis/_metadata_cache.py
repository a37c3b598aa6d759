"""A persistent cache of file metadata (entries, UUID, clusters) in SQLite, on the manager.

A second run over the same files reads no metadata again: :class:`MetadataCache`
keeps one row per ``(URL, tree)`` with the file's entries, UUID and cluster
starts, and the size and modification time (ns) the file had when they were
read. A local entry is used only while ``os.stat`` of the file still shows
that size and mtime; a changed file is read again and its row replaced.

Remote (``root://``) files cannot be stat'ed cheaply from the manager: their
rows are given only to a caller that asks for them (``lookup(remote=True)``),
which must check the UUID: :func:`hep_executor.run` (streaming or
preprocess-first) plans the file from its row, each chunk compares the UUID
it reads with the one planned, and the first chunk that finds another one
makes the run :meth:`MetadataCache.forget` the row and read the file's
metadata again (never trusting the old plan). Under coffea's Runner remote
rows are not used (see :mod:`hep_executor.analysis._metadata_cache_coffea`).

The database runs in WAL mode with one connection on the manager; writes are
batched (``executemany``, one transaction per :meth:`MetadataCache.store`
call). A file that is not a readable cache is moved aside and rebuilt, with a
warning; a write that fails (a locked or read-only database) is logged and the
run goes on without caching.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CachedMetadata", "MetadataCache", "default_cache_path", "open_cache"]

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
_CREATE = """
CREATE TABLE IF NOT EXISTS files (
    url TEXT NOT NULL, tree TEXT NOT NULL, size INTEGER, mtime_ns INTEGER,
    entries INTEGER NOT NULL, uuid TEXT NOT NULL, clusters TEXT,
    PRIMARY KEY (url, tree)) WITHOUT ROWID
"""


@dataclass(frozen=True)
class CachedMetadata:
    """What preprocessing read from one tree of one file."""

    entries: int
    uuid: str
    clusters: list | None = None


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/hep-executor/metadata.sqlite`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hep-executor" / "metadata.sqlite"


def open_cache(setting) -> MetadataCache | None:
    """The cache a ``metadata_cache=`` setting asks for: None/True (default path), a path, or False (none)."""
    if setting is False:
        return None
    if isinstance(setting, MetadataCache):
        return setting
    path = default_cache_path() if setting in (None, True) else Path(setting)
    return MetadataCache(path)


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _stat(url: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a local file, None for a remote URL or a file that cannot be stat'ed."""
    if _is_remote(url):
        return None
    try:
        st = os.stat(url[len("file://"):] if url.startswith("file://") else url)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class MetadataCache:
    """File metadata kept between runs, keyed by ``(url, tree)``; see the module docstring.

    Parameters
    ----------
    path : str or Path
        The SQLite file (its folder is created).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self._conn: sqlite3.Connection | None = None
        self._stats: dict[str, tuple[int, int] | None] = {}  # by URL, as seen at lookup
        self._open()

    # -- set-up
    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as exc:
            self._rebuild(exc)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                msg = f"schema version {version}, expected {_SCHEMA_VERSION}"
                raise sqlite3.DatabaseError(msg)
            conn.execute(_CREATE)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            conn.execute("SELECT count(*) FROM files").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _rebuild(self, exc: BaseException) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        msg = (f"metadata cache {self.path} is not readable ({exc}); moved to {aside.name} "
               "and rebuilt empty: every file's metadata is read again")
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
        log.warning(msg)
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(self.path) + suffix)
            if part.exists():
                os.replace(part, Path(str(aside) + suffix))
        self._conn = self._connect()

    def close(self) -> None:
        """Close the connection (the file stays)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> MetadataCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reads
    def lookup(self, keys: list[tuple[str, str]], *, clusters: bool = False,
               remote: bool = False) -> dict[tuple[str, str], CachedMetadata]:
        """The valid entries among ``(url, tree)`` ``keys``.

        A local entry is valid while the file's size and mtime match those
        stored; a remote entry is returned only with ``remote`` (the caller
        then checks its UUID; see the module docstring).
        With ``clusters``, an entry stored without cluster starts is a miss.
        """
        wanted = [k for k in keys if self._stat_of(k) is not None or (remote and _is_remote(k[0]))]
        found = self._select(wanted, clusters) if wanted else {}
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def _stat_of(self, key: tuple[str, str]) -> tuple[int, int] | None:
        url = key[0]
        if url not in self._stats:
            self._stats[url] = _stat(url)
        return self._stats[url]

    def _select(self, keys: list[tuple[str, str]], clusters: bool) -> dict:
        """Rows of ``keys`` whose stored size and mtime match, through a temporary table (one join)."""
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (url TEXT, tree TEXT)")
                self._conn.execute("DELETE FROM wanted")
                self._conn.executemany("INSERT INTO wanted VALUES (?, ?)", keys)
                rows = self._conn.execute(
                    "SELECT f.url, f.tree, f.size, f.mtime_ns, f.entries, f.uuid, f.clusters "
                    "FROM wanted w JOIN files f ON f.url = w.url AND f.tree = w.tree").fetchall()
        except sqlite3.DatabaseError as exc:
            log.warning("metadata cache %s: read failed (%s); reading metadata from the files", self.path, exc)
            return {}
        out = {}
        for url, tree, size, mtime_ns, entries, uuid, cl in rows:
            key = (url, tree)
            valid = self._stats.get(url) == (size, mtime_ns) or (_is_remote(url) and size is None)
            if valid and not (clusters and cl is None):
                out[key] = CachedMetadata(entries, uuid, json.loads(cl) if cl is not None else None)
        return out

    # -- writes
    def store(self, rows: list[tuple[str, str, CachedMetadata]]) -> int:
        """Store ``(url, tree, metadata)`` rows in one transaction; return how many were written.

        The size and mtime stored are those seen at :meth:`lookup` (before the
        file was read), so a file rewritten while it was read is read again next time.
        """
        values = []
        for url, tree, meta in rows:
            stat = self._stats.get(url) or _stat(url) or (None, None)
            cl = None if meta.clusters is None else json.dumps([int(c) for c in meta.clusters])
            values.append((url, tree, stat[0], stat[1], int(meta.entries), str(meta.uuid), cl))
        if not values:
            return 0
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", values)
        except sqlite3.DatabaseError as exc:
            log.warning("metadata cache %s: write failed (%s); %d entries not cached", self.path, exc,
                        len(values))
            return 0
        return len(values)

    def forget(self, keys: list[tuple[str, str]]) -> None:
        """Drop the rows of ``(url, tree)`` ``keys`` (a remote file found changed)."""
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany("DELETE FROM files WHERE url = ? AND tree = ?", keys)
        except sqlite3.DatabaseError as exc:
            log.warning("metadata cache %s: could not drop %d entries (%s)", self.path, len(keys), exc)

    def __len__(self) -> int:
        return self._conn.execute("SELECT count(*) FROM files").fetchone()[0]

    def __repr__(self) -> str:
        return f"MetadataCache({str(self.path)!r})"
