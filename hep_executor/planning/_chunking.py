"""Entry-range planning for ROOT trees: cutting, splitting and coverage.

Pure functions and small classes, no I/O:

- :func:`plan_ranges` cuts ``[start, entries)`` of one tree into balanced
  contiguous ranges, optionally aligned to the tree's cluster boundaries;
- :class:`FileCursor` cuts one file lazily, one range at a time, at a
  size that may change between calls (dynamic chunk sizes);
- :func:`split_range` halves a range whose task ran out of memory;
- :class:`Coverage` records which entry ranges of which files an output
  holds, in a plain dict-of-lists form that coffea's
  ``processor.accumulate`` merges by concatenation, and
  :meth:`Coverage.check` compares it with the plan as interval sets with
  multiplicity, returning a :class:`CoverageReport`.
"""

from __future__ import annotations

import bisect
import logging
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hep_executor.errors import ConfigError

__all__ = [
    "Coverage",
    "CoverageReport",
    "FileCursor",
    "plan_ranges",
    "split_range",
    "subtract_ranges",
]

logger = logging.getLogger(__name__)

Range = tuple[int, int]


def _check_bounds(entries: int, start: int, where: str) -> None:
    if entries < 0:
        msg = f"{where}: entries must be >= 0, got {entries}"
        raise ConfigError(msg)
    if not 0 <= start <= entries:
        msg = f"{where}: start must lie in [0, entries={entries}], got {start}"
        raise ConfigError(msg)


def _check_chunksize(chunksize: int, where: str) -> None:
    if int(chunksize) != chunksize or chunksize < 1:
        msg = f"{where}: chunksize must be a positive integer, got {chunksize!r}"
        raise ConfigError(msg)


def _boundaries(cluster_starts: Sequence[int] | None, start: int, stop: int) -> list[int] | None:
    """Cluster boundaries usable as cuts, with ``start`` and ``stop`` included."""
    if cluster_starts is None:
        return None
    inner = sorted({int(c) for c in cluster_starts if start < c < stop})
    return [start, *inner, stop]


def _snap(candidates: list[int], target: float) -> int:
    """The candidate nearest to ``target`` (the lower one on a tie)."""
    i = bisect.bisect_left(candidates, target)
    if i == 0:
        return candidates[0]
    if i == len(candidates):
        return candidates[-1]
    lo, hi = candidates[i - 1], candidates[i]
    return lo if target - lo <= hi - target else hi


def plan_ranges(
    entries: int,
    chunksize: int,
    *,
    start: int = 0,
    cluster_starts: Sequence[int] | None = None,
) -> list[Range]:
    """Cut ``[start, entries)`` into contiguous ranges of about ``chunksize``.

    The range is cut into ``n = ceil((entries - start) / chunksize)``
    nearly equal parts, as coffea does, so no range exceeds ``chunksize``
    and there is no tiny last range. With ``cluster_starts`` every cut is
    moved to the nearest cluster boundary; cuts that fall together are
    merged, so each range holds at least one whole cluster (ranges may
    then exceed ``chunksize`` when clusters are larger than it).

    Parameters
    ----------
    entries : int
        Number of entries of the tree (the end of the last range).
    chunksize : int
        Target number of entries per range, >= 1.
    start : int, optional
        First entry to plan (default 0).
    cluster_starts : sequence of int, optional
        First entry of every cluster (basket boundary) of the tree,
        sorted, starting with 0.

    Returns
    -------
    list of (int, int)
        Contiguous ``(start, stop)`` ranges covering ``[start, entries)``
        exactly; empty when there is nothing to cover.

    Raises
    ------
    ConfigError
        If ``chunksize`` is not a positive integer or ``start`` lies
        outside ``[0, entries]``.
    """
    _check_chunksize(chunksize, "plan_ranges")
    _check_bounds(entries, start, "plan_ranges")
    remaining = entries - start
    if remaining == 0:
        return []
    n = math.ceil(remaining / chunksize)
    ideal = [start + (i * remaining) // n for i in range(1, n)]
    candidates = _boundaries(cluster_starts, start, entries)
    if candidates is not None:
        ideal = [_snap(candidates, t) for t in ideal]
    cuts = sorted({c for c in ideal if start < c < entries})
    edges = [start, *cuts, entries]
    return list(zip(edges[:-1], edges[1:]))


class FileCursor:
    """Cut one file lazily into ranges whose size may change between calls.

    Each :meth:`next` returns the first range that :func:`plan_ranges`
    would plan for the rest of the file at that size, so a constant size
    gives balanced ranges (lengths within one entry of each other when
    not aligned to clusters) and no tiny last range.

    Parameters
    ----------
    filename : str
        The file (path or URL) this cursor walks; kept for reports.
    entries : int
        Number of entries of its tree.
    start : int, optional
        First entry not yet planned (default 0).
    cluster_starts : sequence of int, optional
        Cluster boundaries of the tree (see :func:`plan_ranges`).
    """

    def __init__(
        self,
        filename: str,
        entries: int,
        *,
        start: int = 0,
        cluster_starts: Sequence[int] | None = None,
    ):
        _check_bounds(entries, start, f"FileCursor({filename!r})")
        self.filename = filename
        self.entries = entries
        self._position = start
        self._clusters = None if cluster_starts is None else sorted({int(c) for c in cluster_starts})

    @property
    def position(self) -> int:
        """The first entry not yet handed out."""
        return self._position

    @property
    def remaining(self) -> int:
        """Entries not yet handed out."""
        return self.entries - self._position

    @property
    def done(self) -> bool:
        """True when every entry has been handed out."""
        return self._position >= self.entries

    def next(self, size: int) -> Range | None:
        """Hand out the next range of about ``size`` entries.

        Parameters
        ----------
        size : int
            Wanted number of entries, >= 1.

        Returns
        -------
        (int, int) or None
            The next ``(start, stop)`` range, or None when the file is
            exhausted.
        """
        _check_chunksize(size, f"FileCursor({self.filename!r}).next")
        if self.done:
            return None
        start, remaining = self._position, self.remaining
        n = math.ceil(remaining / size)
        stop = self.entries
        if n > 1:
            target = start + remaining / n
            candidates = _boundaries(self._clusters, start, self.entries)
            if candidates is None:
                stop = start + remaining // n
            else:
                stop = _snap(candidates, target)
                if stop == start:  # at least one whole cluster
                    stop = candidates[1]
        self._position = stop
        return (start, stop)

    def stop(self) -> Range | None:
        """Hand out nothing more; return the range that will not be cut (None when done)."""
        if self.done:
            return None
        rest = (self._position, self.entries)
        self._position = self.entries
        return rest

    def __repr__(self) -> str:
        return f"FileCursor({self.filename!r}, position={self._position}, entries={self.entries})"


def split_range(start: int, stop: int, parts: int = 2) -> list[Range]:
    """Split ``[start, stop)`` into ``parts`` nearly equal contiguous ranges.

    Used when a task ran out of memory. When the range holds fewer
    entries than ``parts``, it is split into one-entry ranges.

    Parameters
    ----------
    start, stop : int
        The range to split.
    parts : int, optional
        Number of pieces (default 2, >= 2).

    Returns
    -------
    list of (int, int)
        Ranges covering ``[start, stop)`` exactly, in order.

    Raises
    ------
    ValueError
        If the range has fewer than two entries (it cannot be split) or
        ``parts < 2``.
    """
    length = stop - start
    if parts < 2:
        msg = f"split_range: parts must be >= 2, got {parts}"
        raise ValueError(msg)
    if length < 2:
        msg = (
            f"cannot split entry range [{start}, {stop}): it holds {max(length, 0)} entry; "
            "a single event needs more memory than allowed, raise the memory limit"
        )
        raise ValueError(msg)
    parts = min(parts, length)
    edges = [start + (i * length) // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _normalize(ranges: Iterable[Sequence[int]], filename: str) -> list[Range]:
    """Sorted, merged (touching or overlapping) intervals of ``ranges``."""
    out: list[list[int]] = []
    for a, b in sorted(_as_range(r, filename) for r in ranges):
        if a == b:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _as_range(r: Sequence[int], filename: str) -> Range:
    a, b = (int(x) for x in r)
    if b < a:
        msg = f"invalid entry range [{a}, {b}) recorded for {filename}: stop is before start"
        raise ValueError(msg)
    return a, b


def _depth_segments(ranges: Iterable[Range]) -> list[tuple[int, int, int]]:
    """``(start, stop, multiplicity)`` of the non-empty pieces of a range multiset."""
    events: dict[int, int] = {}
    for a, b in ranges:
        if a < b:
            events[a] = events.get(a, 0) + 1
            events[b] = events.get(b, 0) - 1
    out, depth, last = [], 0, None
    for x in sorted(events):
        if last is not None and depth > 0 and x > last:
            out.append((last, x, depth))
        depth += events[x]
        last = x
    return out


def _subtract(ranges: list[Range], minus: list[Range]) -> list[Range]:
    """Parts of normalized ``ranges`` outside normalized ``minus``."""
    out = []
    for a, b in ranges:
        cur = a
        for c, d in minus:
            if d <= cur or c >= b:
                continue
            if c > cur:
                out.append((cur, c))
            cur = max(cur, d)
        if cur < b:
            out.append((cur, b))
    return out


def subtract_ranges(ranges: Iterable[Sequence[int]], minus: Iterable[Sequence[int]],
                    filename: str = "") -> list[Range]:
    """The entries of ``ranges`` outside ``minus``, as sorted, merged ``(start, stop)`` ranges."""
    return _subtract(_normalize(ranges, filename), _normalize(minus, filename))


def _intersect(ranges: list[Range], within: list[Range]) -> list[Range]:
    return _subtract(ranges, _subtract(ranges, within))


def _fmt_ranges(ranges: list[Range], limit: int = 6) -> str:
    shown = ", ".join(f"[{a}, {b})" for a, b in ranges[:limit])
    if len(ranges) > limit:
        shown += f" and {len(ranges) - limit} more"
    return shown


@dataclass(frozen=True)
class CoverageReport:
    """How recorded entry ranges differ from the planned ones.

    Attributes
    ----------
    missing : dict of str to list of (int, int)
        Planned entries that no output holds.
    doubled : dict of str to list of (int, int)
        Planned entries that the output holds more than once.
    unexpected : dict of str to list of (int, int)
        Recorded entries outside the plan (unknown files or ranges).
    held : dict of str to list of (int, int)
        What the output holds, per file (sorted, merged ranges).
    """

    missing: dict[str, list[Range]] = field(default_factory=dict)
    doubled: dict[str, list[Range]] = field(default_factory=dict)
    unexpected: dict[str, list[Range]] = field(default_factory=dict)
    held: dict[str, list[Range]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every planned entry is held exactly once and nothing else."""
        return not (self.missing or self.doubled or self.unexpected)

    def describe(self) -> str:
        """One readable paragraph naming the files and ranges at fault."""
        if self.ok:
            return "The output covers every planned entry range exactly once."
        parts = []
        for label, table in (
            ("missing (never processed)", self.missing),
            ("processed more than once", self.doubled),
            ("outside the plan", self.unexpected),
        ):
            if table:
                files = "; ".join(f"{name} {_fmt_ranges(r)}" for name, r in sorted(table.items()))
                n = sum(b - a for r in table.values() for a, b in r)
                parts.append(f"{n} entries {label}: {files}")
        return "The output does not match the plan: " + ". ".join(parts) + "."


class Coverage:
    """The entry ranges of each file that an output holds.

    Its serialized form, :meth:`to_dict`, is a plain ``dict`` of lists of
    ``(start, stop)`` tuples: picklable, and merged by coffea's
    ``processor.accumulate`` by list concatenation, which keeps
    multiplicity so that a range merged twice shows up as doubled.
    """

    def __init__(self) -> None:
        self._ranges: dict[str, list[Range]] = {}

    @classmethod
    def from_ranges(cls, ranges: Mapping[str, Iterable[Sequence[int]]]) -> Coverage:
        """Build from ``{file: [(start, stop), ...]}`` (e.g. a :meth:`to_dict` output)."""
        cov = cls()
        for filename, rs in ranges.items():
            for r in rs:
                cov.add(filename, *r)
        return cov

    def add(self, filename: str, start: int, stop: int) -> None:
        """Record that the output holds entries ``[start, stop)`` of ``filename``."""
        a, b = _as_range((start, stop), filename)
        self._ranges.setdefault(filename, []).append((a, b))

    def to_dict(self) -> dict[str, list[Range]]:
        """The plain ``{file: [(start, stop), ...]}`` form (a copy)."""
        return {name: list(rs) for name, rs in self._ranges.items()}

    def __len__(self) -> int:
        return sum(b - a for rs in self._ranges.values() for a, b in rs)

    def __repr__(self) -> str:
        return f"Coverage({len(self._ranges)} files, {len(self)} entries)"

    @staticmethod
    def check(
        recorded: Coverage | Mapping[str, Iterable[Sequence[int]]],
        planned: Mapping[str, int | Iterable[Sequence[int]]],
    ) -> CoverageReport:
        """Compare recorded ranges with the plan, as interval sets with multiplicity.

        Different chunkings of the same entries are equivalent:
        ``[0, 10) + [10, 20)`` matches ``[0, 20)``.

        Parameters
        ----------
        recorded : Coverage or dict of str to list of (int, int)
            What the output holds.
        planned : dict of str to int or list of (int, int)
            Per file, either its number of entries (then ``[0, entries)``
            must be covered) or the planned ranges.

        Returns
        -------
        CoverageReport
            Missing, doubled and unexpected ranges per file.
        """
        if isinstance(recorded, Coverage):
            recorded = recorded._ranges
        missing: dict[str, list[Range]] = {}
        doubled: dict[str, list[Range]] = {}
        unexpected: dict[str, list[Range]] = {}
        holds: dict[str, list[Range]] = {}
        for filename in sorted(set(recorded) | set(planned), key=str):
            raw = [_as_range(r, filename) for r in recorded.get(filename, ())]
            plan_spec = planned.get(filename)
            if plan_spec is None:
                plan: list[Range] = []
            elif isinstance(plan_spec, numbers.Integral):
                plan = [(0, int(plan_spec))] if plan_spec > 0 else []
            else:
                plan = _normalize(plan_spec, filename)
            segments = _depth_segments(raw)
            held = _normalize(((a, b) for a, b, _ in segments), filename)
            if held:
                holds[filename] = held
            multi = _normalize(((a, b) for a, b, d in segments if d > 1), filename)
            if gap := _subtract(plan, held):
                missing[filename] = gap
            if twice := _intersect(multi, plan):
                doubled[filename] = twice
            if extra := _subtract(held, plan):
                unexpected[filename] = extra
        report = CoverageReport(missing, doubled, unexpected, holds)
        if not report.ok:
            logger.debug("coverage check failed: %s", report.describe())
        return report
