"""Dynamic chunk sizes learned from task reports.

:class:`ChunkSizer` fits, per category (e.g. ``"process:ttH"``), how a
task's wall time and peak memory grow with its number of events, and
predicts the chunk size that meets the :class:`SizingTargets`.

Model
-----
Per category and resource, ``y = a + b * events`` is fitted on the last
``window`` successful reports. The intercept ``a`` (imports, file
opening, the process's baseline memory) comes from a Theil–Sen fit (the
median of the pairwise slopes, then the median residual) whenever the
reports span a factor two in size; otherwise the last such intercept is
kept, or a prior (0 s for time, ``memory_baseline_mb`` for memory). It
is clipped to half the target and half the low decile of the recent
reports (nine tenths for memory, whose baseline is steady), since an intercept close to ``y`` turns noise in ``y`` into
swings of the slope. The slope is then the median of ``(y - a) / events``
over the recent half of the reports, so the line goes through the bulk
of the reports near the current size even when their sizes barely
differ. Medians make both robust to 10-20 % outliers (slow nodes). A
wrong intercept only changes how far one step extrapolates: the sizes
still settle where the reports meet the target. The first
``warmup_reports`` reports of a category (cold caches, first imports)
are left out once three later ones exist. A task that failed for memory
is a lower bound on the memory at its size: the slope is raised to
honour it. The memory slope is also at least the chord from the
smallest to the largest report (when they differ twofold), which keeps
a fit of a few small reports from extrapolating far past the target.

Decision
--------
The size is the smallest over the targets of ``(target - a) / b``, the
memory target first reduced by ``memory_headroom``, and never above the
size the model predicts to reach the full memory target. Growth is at
most ``max_growth`` times the largest size that succeeded, so a size
10-100x too small reaches the target in a few rounds; decreases are
immediate, and a report over the memory target or a memory failure cuts
the size at once. Changes within ``deadband`` of the current size are
ignored, which keeps the size steady once it has converged. coffea 0.7's
``dynamic_chunksize`` did the same job with a plain fit per target and
failed when only one target was given; here either target alone works.

Cost
----
A report costs tens of microseconds on the manager: the medians and the
low decile of at most ``window`` points are taken on Python lists (the
same values numpy's ``median`` and linear ``quantile`` give), and the
Theil–Sen intercept, quadratic in the window, is refitted at every report
until a category has ``window`` reports, then every ``refit_every`` (the
last intercept is kept in between, as when the sizes span too little).
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from hep_executor.errors import ConfigError

__all__ = ["ChunkSizer", "SizingTargets"]

logger = logging.getLogger(__name__)

_RESOURCES = ("wall_time", "memory")


@dataclass(frozen=True)
class SizingTargets:
    """What a chunk should cost: at most ``wall_time`` seconds and ``memory`` MB.

    Either may be None (not a target) but not both.

    Parameters
    ----------
    wall_time : float or None, optional
        Target wall time of one task in seconds (default 60).
    memory : float or None, optional
        Target peak memory of one task in MB (default 1500).
    """

    wall_time: float | None = 60.0
    memory: float | None = 1500.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                msg = f"dynamic_chunksize.{f.name} must be a positive number (or null), got {value!r}"
                raise ConfigError(msg)
        if self.wall_time is None and self.memory is None:
            msg = "dynamic_chunksize needs at least one target: set wall_time (s) or memory (MB)"
            raise ConfigError(msg)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SizingTargets:
        """Build from a mapping such as ``{"wall_time": 60, "memory": 1500}``.

        Keys left out are not targets (unlike the constructor defaults),
        as in coffea 0.7's ``dynamic_chunksize``.

        Raises
        ------
        ConfigError
            On an unknown key (naming it) or a bad value.
        """
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                msg = f"unknown dynamic_chunksize key {key!r}; known keys: {', '.join(sorted(known))}"
                raise ConfigError(msg)
        return cls(**{name: values.get(name) for name in known})

    def items(self) -> list[tuple[str, float]]:
        """The ``(resource, target)`` pairs that are set."""
        return [(name, getattr(self, name)) for name in _RESOURCES if getattr(self, name) is not None]


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Robust line fit ``y = a + b x``: ``(a, b)``, or None without two distinct x.

    numpy rather than ``scipy.stats.theilslopes``: the same estimator,
    without a one-second import in the manager.
    """
    i, j = _pairs(len(x))
    dx = x[j] - x[i]
    keep = dx != 0
    if not keep.any():
        return None
    b = _median((y[j] - y[i])[keep] / dx[keep])
    a = _median(y - b * x)
    return a, b


@functools.lru_cache(maxsize=8)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The index pairs ``i < j`` of ``n`` points (one window's, kept)."""
    return np.triu_indices(n, k=1)


def _median(v: np.ndarray) -> float:
    """``np.median(v)`` of a 1-d array of finite values, without its per-call overhead."""
    k = len(v) // 2
    if len(v) % 2:
        return float(np.partition(v, k)[k])
    part = np.partition(v, [k - 1, k])
    return float((part[k - 1] + part[k]) / 2)


def _quantile(values: list[float], q: float) -> float:
    """numpy's ``quantile(values, q)`` (its default, linear method), on a short list."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    a, b, t = v[lo], v[min(lo + 1, len(v) - 1)], pos - lo
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


@dataclass
class _Category:
    """What the sizer knows of one category."""

    size: int
    reports: deque = field(default_factory=deque)  # (events, wall_time, memory_mb, seq)
    n_ok: int = 0
    n_failed: int = 0
    max_ok: int = 0
    min_failed: int | None = None
    failed_points: list = field(default_factory=list)  # (events, memory_mb)
    intercepts: dict = field(default_factory=dict)
    fits: dict = field(default_factory=dict)
    last_refit: int = 0  # n_ok at the last Theil–Sen fit


class ChunkSizer:
    """Predict per category the chunk size that meets the targets.

    See the module docstring for the model and the decision rule.

    Parameters
    ----------
    targets : SizingTargets or dict
        Target wall time (s) and/or peak memory (MB) of one task.
    initial : int, optional
        Size for a category before any report (default 100000).
    min_size, max_size : int, optional
        Bounds of every prediction (defaults 100 and 10000000).
    max_growth : float, optional
        Largest factor above the largest size that succeeded (default 8).
    memory_headroom : float, optional
        Fraction of the memory target kept free as a safety margin
        (default 0.1: aim at 90 % of the target).
    deadband : float, optional
        Relative change below which the size is left as it is (default 0.1).
    window : int, optional
        Reports per category the fit uses, the most recent (default 64).
    warmup_reports : int, optional
        First reports of a category left out of the fit (default 1).
    memory_baseline_mb : float, optional
        Prior memory intercept (imports) until the reports span a range
        of sizes (default 250).
    align_pow2 : bool, optional
        Round predictions down to a power of two (default False).
    refit_every : int, optional
        Once a category has ``window`` reports, its Theil–Sen intercept is
        refitted every this many reports (default 8; 1: at every report).
    """

    def __init__(
        self,
        targets: SizingTargets | Mapping[str, Any],
        *,
        initial: int = 100_000,
        min_size: int = 100,
        max_size: int = 10_000_000,
        max_growth: float = 8.0,
        memory_headroom: float = 0.1,
        deadband: float = 0.1,
        window: int = 64,
        warmup_reports: int = 1,
        memory_baseline_mb: float = 250.0,
        align_pow2: bool = False,
        refit_every: int = 8,
    ):
        if not isinstance(targets, SizingTargets):
            targets = SizingTargets.from_dict(targets)
        self.targets = targets
        checks = {
            "min_size": (min_size, min_size >= 1),
            "max_size": (max_size, max_size >= min_size),
            "initial": (initial, initial >= 1),
            "max_growth": (max_growth, max_growth > 1),
            "memory_headroom": (memory_headroom, 0 <= memory_headroom < 1),
            "deadband": (deadband, 0 <= deadband < 0.5),
            "window": (window, window >= 4),
            "warmup_reports": (warmup_reports, warmup_reports >= 0),
            "memory_baseline_mb": (memory_baseline_mb, memory_baseline_mb >= 0),
            "refit_every": (refit_every, refit_every >= 1),
        }
        for name, (value, ok) in checks.items():
            if not ok:
                msg = f"ChunkSizer: invalid {name}={value!r}; see the ChunkSizer docstring for the allowed range"
                raise ConfigError(msg)
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.align_pow2 = bool(align_pow2)
        self.initial = self._clamp(initial)
        self.max_growth = float(max_growth)
        self.memory_headroom = float(memory_headroom)
        self.deadband = float(deadband)
        self.window = int(window)
        self.warmup_reports = int(warmup_reports)
        self.memory_baseline_mb = float(memory_baseline_mb)
        self.refit_every = int(refit_every)
        self._categories: dict[str, _Category] = {}
        self._seq = 0
        self.history: list[tuple[int, str, int]] = []

    # -- public -----------------------------------------------------------
    def predict(self, category: str) -> int:
        """The chunk size to cut next for ``category``.

        Before any report of ``category`` this is the smallest current
        size of the other categories (a cautious prior), else ``initial``.
        """
        st = self._categories.get(category)
        if st is not None:
            return st.size
        return self._prior()

    def observe(
        self,
        category: str,
        events: int,
        wall_time: float,
        memory_mb: float,
        *,
        failed_memory: bool = False,
    ) -> int:
        """File a task report and return the new size for ``category``.

        Parameters
        ----------
        category : str
            The task's category, e.g. ``"process:ttH"``.
        events : int
            Entries the task processed (or was given, if it failed).
        wall_time : float
            Its wall time in seconds.
        memory_mb : float
            Its peak memory in MB (process baseline included).
        failed_memory : bool, optional
            True when the task was stopped for going over its memory.
        """
        self._seq += 1
        if not (math.isfinite(wall_time) and math.isfinite(memory_mb)):
            logger.warning("ignoring a report with wall time %r and memory %r for %s", wall_time, memory_mb, category)
            return self.predict(category)
        st = self._categories.get(category)
        if st is None:
            st = self._categories[category] = _Category(size=self._prior())
            st.reports = deque(maxlen=self.window)
            self._record(category, st.size)
        if events <= 0:
            logger.debug("ignoring a report of %d events for %s", events, category)
            return st.size
        if failed_memory:
            st.n_failed += 1
            st.failed_points = [*st.failed_points[-15:], (int(events), float(memory_mb))]
            st.min_failed = min(st.min_failed or events, int(events))
            cap = self._decide(st)
            size = min(cap, self._clamp(events // 2))
            logger.info("%s: task of %d events ran out of memory; chunk size %d -> %d", category, events, st.size, size)
        else:
            st.n_ok += 1
            st.reports.append((int(events), float(wall_time), float(memory_mb), st.n_ok))
            st.max_ok = max(st.max_ok, int(events))
            if st.min_failed is not None and events >= st.min_failed:
                st.min_failed = None  # that size fits after all (the failure was noise)
            size = self._decide(st, overshoot=(events, memory_mb))
        if size != st.size:
            st.size = size
            self._record(category, size)
        return st.size

    def predict_memory(self, category: str, events: int) -> float | None:
        """The peak memory (MB) the fitted model expects of a task of ``events`` in ``category``.

        None before the category's first successful report (no memory fit yet).
        """
        st = self._categories.get(category)
        fit = st.fits.get("memory") if st is not None else None
        if fit is None:
            return None
        a, b = fit
        return a + b * max(int(events), 0)

    def model(self, category: str) -> dict[str, Any]:
        """The fitted model of ``category`` for the run report.

        Returns
        -------
        dict
            ``size``, ``n_reports``, ``n_failed`` and, per fitted resource,
            ``{"intercept": a, "slope": b}`` (seconds or MB, per event).
        """
        st = self._categories.get(category)
        if st is None:
            return {"size": self.predict(category), "n_reports": 0, "n_failed": 0}
        out: dict[str, Any] = {"size": st.size, "n_reports": st.n_ok, "n_failed": st.n_failed}
        for resource, (a, b) in st.fits.items():
            out[resource] = {"intercept": a, "slope": b}
        return out

    @property
    def categories(self) -> list[str]:
        """Categories with at least one report."""
        return list(self._categories)

    # -- internals ----------------------------------------------------------
    def _prior(self) -> int:
        if self._categories:
            return min(st.size for st in self._categories.values())
        return self.initial

    def _record(self, category: str, size: int) -> None:
        self.history.append((self._seq, category, size))

    def _clamp(self, size: float) -> int:
        size = int(max(self.min_size, min(self.max_size, size)))
        if self.align_pow2 and size > 1:
            size = max(self.min_size, 1 << (size.bit_length() - 1))
        return size

    def _points(self, st: _Category) -> tuple[list[float], list[float], list[float]]:
        """Events, wall times and memory peaks of the reports the fit uses."""
        rows = list(st.reports)
        later = [r for r in rows if r[3] > self.warmup_reports]
        if len(later) >= 3:
            rows = later
        return [float(r[0]) for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def _refit_due(self, st: _Category) -> bool:
        """Whether the Theil–Sen intercepts are refitted at this report (see the module docstring)."""
        return st.n_ok <= self.window or st.n_ok - st.last_refit >= self.refit_every \
            or not st.intercepts

    def _fit(
        self, st: _Category, resource: str, aim: float, x: list[float], y: list[float], refit: bool
    ) -> tuple[float, float]:
        """Intercept and slope of ``y = a + b * events`` (see the module docstring)."""
        spans = len(x) >= 4 and max(x) >= 2.0 * min(x)
        fitted = theil_sen(np.array(x), np.array(y)) if spans and refit else None
        if fitted is not None:
            st.intercepts[resource] = max(fitted[0], 0.0)
        if resource in st.intercepts:
            a = st.intercepts[resource]
        elif resource == "memory":
            a = self.memory_baseline_mb
        else:
            a = 0.0
        # The slope is taken on the recent half of the reports: those of
        # sizes nearest to where the next tasks are cut, where a wrong
        # intercept matters least. An intercept close to y turns noise in y
        # into large swings of the slope: keep it below half of the low
        # decile of those reports and of the target (a smaller intercept
        # only makes extrapolation more cautious; the sizes still settle
        # on the target).
        # Memory is the exception to half: a process's baseline (imports,
        # open files) is large, real and steady, and halving it makes small
        # chunks look several times too steep, so the sizes creep up slowly.
        near = slice(-max(4, len(x) // 2), None)
        keep = 0.9 if resource == "memory" else 0.5
        xn, yn = x[near], y[near]
        a = min(a, keep * _quantile(yn, 0.1), keep * aim)
        b = statistics.median([(yi - a) / xi for xi, yi in zip(xn, yn)])
        if resource == "memory":
            for events, peak in st.failed_points:  # the failed size needs more than its peak
                b = max(b, (peak - a) / events)
            if max(x) >= 2.0 * min(x):
                # Memory grows at least as fast as the chord from the smallest to the largest
                # report: with few reports the intercept is uncertain, and a low slope from it
                # would extrapolate far past the target.
                lo, hi = x.index(min(x)), x.index(max(x))
                b = max(b, (y[hi] - y[lo]) / (x[hi] - x[lo]))
        b = max(b, 1e-12)
        st.fits[resource] = (a, b)
        return a, b

    def _decide(self, st: _Category, overshoot: tuple[int, float] | None = None) -> int:
        x, walls, peaks = self._points(st)
        if not x:  # only failures so far
            return self._clamp(st.size)
        refit = self._refit_due(st)
        if refit:
            st.last_refit = st.n_ok
        goals, hard_cap = [], math.inf
        for resource, target in self.targets.items():
            y = walls if resource == "wall_time" else peaks
            aim = target * (1 - self.memory_headroom) if resource == "memory" else target
            a, b = self._fit(st, resource, aim, x, y, refit)
            if resource == "memory":
                hard_cap = max((target - a) / b, 0.0)
            if a >= aim:
                # The fixed cost alone exceeds the target: the smallest
                # sensible chunk spends as much on events as on that cost.
                logger.warning("intercept %.3g of %s exceeds its target %.3g", a, resource, aim)
                goals.append(a / b if resource == "wall_time" else self.min_size)
            else:
                goals.append((aim - a) / b)
        raw = min(goals)
        current = st.size
        size = current if abs(raw - current) <= self.deadband * current else raw
        size = min(size, hard_cap)
        if st.max_ok:
            size = min(size, self.max_growth * st.max_ok)
        if st.min_failed is not None:
            size = min(size, 0.9 * st.min_failed)
        memory_target = self.targets.memory
        if overshoot is not None and memory_target is not None and overshoot[1] > memory_target:
            events, peak = overshoot
            a = st.fits["memory"][0]
            aim = memory_target * (1 - self.memory_headroom)
            size = min(size, events * max(aim - a, 0.0) / max(peak - a, 1e-9))
        return self._clamp(math.floor(size))
