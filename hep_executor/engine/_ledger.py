"""What the manager keeps between submit and result, bounded: functions in use and a report summary.

:class:`FunctionStore` holds each submitted function's pickled bytes
while a task that calls it is not finished, and forgets it after the
last such task ends (a worker keeps its own copy; submitting the
function again stores it again). :class:`ReportLog` keeps a per-category
summary of task reports instead of the reports themselves, and streams
each report as one JSON line to a journal file when given one.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from dataclasses import dataclass

from hep_executor.engine._files import with_files
from hep_executor.engine._serialization import dumps_function

__all__ = ["CategorySummary", "FunctionStore", "ReportLog"]


class FunctionStore:
    """Pickled functions by content hash, kept while tasks refer to them."""

    def __init__(self, files=None):
        self._files = files  # a ShippedFiles every function carries, or None
        self._data: dict[str, bytes] = {}
        self._refs: collections.Counter = collections.Counter()
        self._by_id: dict[int, tuple[object, str]] = {}  # id(fn) -> (fn, hash): pickle each once
        self._ids: dict[str, set] = collections.defaultdict(set)

    def add(self, fn) -> str:
        """Store ``fn`` for one more task; return its hash."""
        known = self._by_id.get(id(fn))
        if known is not None and known[0] is fn and known[1] in self._data:
            fn_hash = known[1]
        else:
            data = dumps_function(with_files(fn, self._files))
            fn_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
            self._data[fn_hash] = data
            self._by_id[id(fn)] = (fn, fn_hash)
            self._ids[fn_hash].add(id(fn))
        self._refs[fn_hash] += 1
        return fn_hash

    def __getitem__(self, fn_hash: str) -> bytes:
        return self._data[fn_hash]

    def __len__(self) -> int:
        return len(self._data)

    def release(self, fn_hash: str) -> None:
        """One task that calls ``fn_hash`` ended; forget the function after the last."""
        left = self._refs[fn_hash] - 1
        if left > 0:
            self._refs[fn_hash] = left
            return
        self._refs.pop(fn_hash, None)
        self._data.pop(fn_hash, None)
        for fn_id in self._ids.pop(fn_hash, ()):
            self._by_id.pop(fn_id, None)


@dataclass
class CategorySummary:
    """Totals of the task reports of one category."""

    tasks: int = 0
    ok: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    peak_mb: float = 0.0
    result_bytes: int = 0


class ReportLog:
    """Per-category totals of task reports, and an optional JSON-lines journal of every report.

    Parameters
    ----------
    journal : str or os.PathLike, optional
        File to append one JSON object per finished task to.
    """

    def __init__(self, journal: str | os.PathLike | None = None):
        self.summary: dict[str, CategorySummary] = {}
        self._fh = open(journal, "a", buffering=1 << 16) if journal else None  # noqa: SIM115

    def record(self, report) -> None:
        """Add ``report`` (a :class:`~hep_executor.engine._results.TaskReport`) to the totals and the journal."""
        total = self.summary.get(report.category)
        if total is None:
            total = self.summary[report.category] = CategorySummary()
        total.tasks += 1
        total.ok += report.status == "ok"
        total.wall += report.wall
        total.cpu += report.cpu
        total.peak_mb = max(total.peak_mb, report.peak_mb)
        total.result_bytes += report.result_bytes
        if self._fh is not None:
            self._fh.write(json.dumps(report.as_dict(), separators=(",", ":")) + "\n")

    def close(self) -> None:
        """Flush and close the journal."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
