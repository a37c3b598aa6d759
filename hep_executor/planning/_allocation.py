"""Adaptive resource allocation per task category.

:class:`Allocator` chooses the cores and memory to request for each task
of a category (``"process:ttbar"``, ``"accumulate"``, ``"preprocess"``)
from the peaks observed so far, in one of three modes:

``fixed``
    Always the user's numbers.
``max-seen``
    The largest peak seen in the category plus a margin; before any
    observation, a generous first guess (the largest worker).
``auto``
    Bucketing after Phung, Ward, Chard and Thain, "Not All Tasks Are
    Created Equal: Adaptive Resource Allocation for Heterogeneous Tasks
    in Dynamic Workflows" (WORKS 2021). The sorted observed peaks are
    partitioned into buckets; a bucket's allocation is its largest value.
    A new task gets the lowest bucket; after a resource exhaustion it
    climbs to the next bucket up, then to the largest worker. The
    buckets are chosen to minimise the expected waste of that ladder
    (:func:`ladder_cost`): memory allocated and not used by a task that
    fits, plus the memory held by the attempts that ran out. ``greedy``
    bucketing adds, one at a time, the break that lowers the expected
    waste most; ``exhaustive`` tries every set of breaks among quantiles
    of the peaks, up to a few buckets. The paper draws the first bucket
    at random by probability; here the ladder always starts at the
    lowest bucket, which makes allocations reproducible, and the cost
    function is that of the ladder. Recent observations weigh more.

In the adaptive modes every allocation is capped by ``max_resources``
(the largest worker).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from hep_executor.errors import ConfigError

__all__ = [
    "MIN_MEMORY_MB",
    "Allocator",
    "Resources",
    "exhaustive_buckets",
    "greedy_buckets",
    "ladder_cost",
]

logger = logging.getLogger(__name__)

MODES = ("fixed", "max-seen", "auto")
BUCKETINGS = ("greedy", "exhaustive")
#: the smallest learned allocation (MB): under it a slot's own memory noise is larger than a task's need
MIN_MEMORY_MB = 32


@dataclass(frozen=True)
class Resources:
    """Resources of a task or a worker.

    Parameters
    ----------
    cores : int, optional
        CPU cores (default 1, >= 1).
    memory_mb : int, optional
        Memory in MB (default 2000, >= 1).
    disk_mb : int, optional
        Scratch disk in MB (default 0).
    """

    cores: int = 1
    memory_mb: int = 2000
    disk_mb: int = 0

    def __post_init__(self) -> None:
        for f, low in zip(fields(self), (1, 1, 0)):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                msg = f"resources.{f.name} must be an integer >= {low}, got {value!r}"
                raise ConfigError(msg)

    def capped(self, cap: Resources | None) -> Resources:
        """These resources, each no larger than ``cap``'s."""
        if cap is None:
            return self
        return Resources(min(self.cores, cap.cores), min(self.memory_mb, cap.memory_mb), min(self.disk_mb, cap.disk_mb))

    def fits_in(self, other: Resources) -> bool:
        """True when every resource is at most ``other``'s."""
        return self.cores <= other.cores and self.memory_mb <= other.memory_mb and self.disk_mb <= other.disk_mb


# -- bucketing ------------------------------------------------------------------


def ladder_cost(
    values: np.ndarray,
    weights: np.ndarray,
    rungs: np.ndarray,
    failure_fraction: float | None = None,
) -> float | np.ndarray:
    """Expected waste per task of allocating along ``rungs``, lowest first.

    A task of peak ``v`` runs out at every rung below ``v`` and fits in
    the first rung ``r >= v``, wasting ``r - v``. An attempt that ran out
    at rung ``r`` held ``r`` for part of its run: the fraction
    ``failure_fraction``, or with None ``r / v``, the fraction of the run
    a task whose memory grows steadily to ``v`` takes to reach ``r``.

    Parameters
    ----------
    values, weights : ndarray
        Observed peaks and their weights.
    rungs : ndarray
        Sorted allocations, the last at least ``values.max()``; or a 2-D
        array of such ladders, one per row, to cost them all at once.
    failure_fraction : float or None, optional
        See above.

    Returns
    -------
    float or ndarray
        Weighted mean waste, in the unit of ``values`` (one per ladder).
    """
    values = np.asarray(values, dtype=float)
    weights = np.asarray(weights, dtype=float)
    ladders = np.atleast_2d(np.asarray(rungs, dtype=float))
    idx = np.sum(values[None, :, None] > ladders[:, None, :], axis=2)  # first rung >= v
    rows = np.arange(len(ladders))[:, None]
    waste = ladders[rows, idx] - values[None, :]
    zero = np.zeros((len(ladders), 1))
    if failure_fraction is None:
        held = np.concatenate((zero, np.cumsum(ladders**2, axis=1)), axis=1)[rows, idx] / values[None, :]
    else:
        held = failure_fraction * np.concatenate((zero, np.cumsum(ladders, axis=1)), axis=1)[rows, idx]
    cost = (waste + held) @ weights / weights.sum()
    return float(cost[0]) if np.ndim(rungs) == 1 else cost


def _prepare(values, weights) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    if v.size == 0:
        msg = "bucketing needs at least one observed value"
        raise ValueError(msg)
    v = np.maximum(v, 1e-9)
    order = np.argsort(v, kind="stable")
    return v[order], w[order]


def _candidates(v: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` distinct observed values below the maximum, at even quantiles."""
    below = np.unique(v[v < v[-1]])
    if len(below) <= n:
        return below
    return np.unique(below[np.linspace(0, len(below) - 1, n).round().astype(int)])


def _as_buckets(v: np.ndarray, w: np.ndarray, rungs: list[float]) -> list[tuple[float, float]]:
    rungs = sorted(rungs)
    idx = np.searchsorted(rungs, v, side="left")
    total = w.sum()
    return [(float(r), float(w[idx == i].sum() / total)) for i, r in enumerate(rungs)]


def greedy_buckets(
    values,
    weights=None,
    *,
    max_buckets: int = 8,
    candidates: int = 64,
    failure_fraction: float | None = None,
) -> list[tuple[float, float]]:
    """Buckets by greedy splitting.

    Starting from one bucket (the maximum), repeatedly add the break,
    among up to ``candidates`` quantiles of the values, that lowers
    :func:`ladder_cost` most, while it lowers it by more than 0.1 %.

    Returns
    -------
    list of (float, float)
        ``(allocation, probability)`` per bucket, allocations ascending.
    """
    v, w = _prepare(values, weights)
    rungs = [float(v[-1])]
    best = ladder_cost(v, w, np.array(rungs), failure_fraction)
    pool = list(_candidates(v, candidates))
    while len(rungs) < max_buckets and pool:
        ladders = np.sort(np.column_stack([np.tile(rungs, (len(pool), 1)), pool]), axis=1)
        costs = ladder_cost(v, w, ladders, failure_fraction)
        i = int(np.argmin(costs))
        if costs[i] >= best * (1 - 1e-3):
            break
        best = costs[i]
        rungs.append(float(pool.pop(i)))
    return _as_buckets(v, w, rungs)


def exhaustive_buckets(
    values,
    weights=None,
    *,
    max_buckets: int = 4,
    candidates: int = 16,
    failure_fraction: float | None = None,
) -> list[tuple[float, float]]:
    """Buckets by trying every set of up to ``max_buckets - 1`` breaks.

    Breaks are chosen among up to ``candidates`` quantiles of the values;
    the set with the lowest :func:`ladder_cost` wins (fewer buckets on a tie).

    Returns
    -------
    list of (float, float)
        ``(allocation, probability)`` per bucket, allocations ascending.
    """
    v, w = _prepare(values, weights)
    top = float(v[-1])
    pool = [float(c) for c in _candidates(v, candidates)]
    best_rungs, best = [top], ladder_cost(v, w, np.array([top]), failure_fraction)
    for k in range(1, max_buckets):
        combos = np.array(list(itertools.combinations(pool, k)), dtype=float).reshape(-1, k)
        if len(combos) == 0:
            break
        ladders = np.column_stack([combos, np.full(len(combos), top)])
        costs = ladder_cost(v, w, ladders, failure_fraction)
        i = int(np.argmin(costs))
        if costs[i] < best * (1 - 1e-9):
            best, best_rungs = float(costs[i]), list(ladders[i])
    return _as_buckets(v, w, best_rungs)


# -- the allocator ------------------------------------------------------------


@dataclass
class _Category:
    """What the allocator knows of one category."""

    peaks: deque
    n_observed: int = 0
    n_exhausted: int = 0
    max_seen: float = 0.0
    buckets: list = field(default_factory=list)
    buckets_at: int = -1
    allocated_total: float = 0.0
    peak_total: float = 0.0


class Allocator:
    """Choose the resources of each task from the peaks of its category.

    Parameters
    ----------
    mode : {"auto", "max-seen", "fixed"}, optional
        See the module docstring (default ``"auto"``).
    fixed : Resources, optional
        The allocation of ``fixed`` mode (required there).
    max_resources : Resources, optional
        The largest worker: the cap of every allocation, and the first
        guess before enough observations.
    bucketing : {"greedy", "exhaustive"}, optional
        How ``auto`` mode forms buckets (default ``"greedy"``).
    first_guess : Resources, optional
        Allocation before enough observations; default ``max_resources``,
        else ``Resources()``.
    min_observations : int, optional
        Observations a category needs before ``auto`` uses buckets (default 5).
    margin : float, optional
        Relative margin added to observed peaks (default 0.05).
    window : int, optional
        Most recent observations kept per category (default 1000).
    failure_fraction : float or None, optional
        Share of a failed attempt's allocation counted as waste; None
        (default) assumes memory that grows steadily (see :func:`ladder_cost`).
    warmup_factor : float, optional
        Before ``min_observations``, a task gets this factor times the
        largest peak seen (default 1.5), or the first guess if smaller; a
        category with no peak yet gets it times the largest peak of the
        others, or the first guess if nothing was seen at all.
    min_memory_mb : int, optional
        No learned allocation is smaller (default :data:`MIN_MEMORY_MB`):
        a small task's own peak moves by several MB from task to task
        (allocator arenas, a module it imports), as much as it needs.
    """

    def __init__(
        self,
        mode: str = "auto",
        *,
        fixed: Resources | None = None,
        max_resources: Resources | None = None,
        bucketing: str = "greedy",
        first_guess: Resources | None = None,
        min_observations: int = 5,
        margin: float = 0.05,
        window: int = 1000,
        failure_fraction: float | None = None,
        warmup_factor: float = 1.5,
        min_memory_mb: int = MIN_MEMORY_MB,
    ):
        if mode not in MODES:
            msg = f"unknown allocation mode {mode!r}; choose one of {', '.join(MODES)}"
            raise ConfigError(msg)
        if mode == "fixed" and fixed is None:
            msg = "allocation mode 'fixed' needs the fixed resources (cores, memory_mb, disk_mb)"
            raise ConfigError(msg)
        if bucketing not in BUCKETINGS:
            msg = f"unknown bucketing {bucketing!r}; choose one of {', '.join(BUCKETINGS)}"
            raise ConfigError(msg)
        if min_observations < 1 or margin < 0 or window < 2 or warmup_factor < 1:
            msg = (
                f"Allocator: min_observations must be >= 1 (got {min_observations}), margin >= 0 "
                f"(got {margin}), window >= 2 (got {window}), warmup_factor >= 1 (got {warmup_factor})"
            )
            raise ConfigError(msg)
        if failure_fraction is not None and not 0 <= failure_fraction <= 1:
            msg = f"Allocator: failure_fraction must lie in [0, 1] or be None, got {failure_fraction}"
            raise ConfigError(msg)
        self.mode = mode
        self.fixed = fixed
        self.max_resources = max_resources
        self.bucketing = bucketing
        self._first_guess = first_guess
        self.min_observations = int(min_observations)
        self.margin = float(margin)
        self.window = int(window)
        self.failure_fraction = failure_fraction
        self.warmup_factor = float(warmup_factor)
        self.min_memory_mb = int(min_memory_mb)
        self._categories: dict[str, _Category] = {}
        self._seq = 0
        self.history: list[tuple[int, str, int, float]] = []

    # -- public -----------------------------------------------------------
    def allocate(self, category: str, *, attempt: int = 0, previous: Resources | None = None) -> Resources:
        """Resources for the next task of ``category``.

        Parameters
        ----------
        category : str
            The task's category.
        attempt : int, optional
            0 for a first try; ``n > 0`` climbs ``n`` rungs of the ladder
            when ``previous`` is not given.
        previous : Resources, optional
            The allocation that was exhausted; the result is strictly
            larger unless ``previous`` is already at the cap, in which
            case the cap is returned (see :meth:`at_cap`).

        Returns
        -------
        Resources
        """
        if self.mode == "fixed":
            return self.fixed
        st = self._state(category)
        if previous is not None:
            return self._next_up(category, st, previous)
        res = self._first(category, st)
        for _ in range(attempt):
            res = self._next_up(category, st, res)
        return res

    def at_cap(self, category: str, resources: Resources) -> bool:
        """True when ``resources`` cannot grow any more for ``category``."""
        if self.mode == "fixed":
            return True
        cap = self.max_resources
        return cap is not None and resources.memory_mb >= cap.memory_mb

    def observe(
        self,
        category: str,
        peak_memory_mb: float,
        *,
        exhausted: bool = False,
        allocated: Resources | None = None,
    ) -> None:
        """File the measured peak of a finished (or exhausted) task.

        Parameters
        ----------
        category : str
            The task's category.
        peak_memory_mb : float
            Its peak memory (for an exhausted task: the peak when stopped,
            a lower bound of its need).
        exhausted : bool, optional
            True when it went over its allocation and was stopped.
        allocated : Resources, optional
            What it was given; default the current first allocation.
        """
        self._seq += 1
        st = self._state(category)
        given = (allocated or self.allocate(category)).memory_mb
        self.history.append((self._seq, category, int(given), float(peak_memory_mb)))
        st.allocated_total += given
        if exhausted:
            st.n_exhausted += 1
            logger.info("%s: task exhausted %d MB (peak %.0f MB)", category, given, peak_memory_mb)
            return
        st.n_observed += 1
        st.peak_total += peak_memory_mb
        st.peaks.append(float(peak_memory_mb))
        st.max_seen = max(st.max_seen, float(peak_memory_mb))

    def buckets(self, category: str) -> list[tuple[float, float]]:
        """``(allocation_mb, probability)`` of the category's buckets (empty before enough data)."""
        st = self._state(category)
        if st.n_observed < self.min_observations:
            return []
        if st.buckets_at != st.n_observed and self._due(st):
            values = np.array(st.peaks)
            weights = np.arange(1, len(values) + 1, dtype=float)  # recent ones weigh more
            find = greedy_buckets if self.bucketing == "greedy" else exhaustive_buckets
            st.buckets = find(values, weights, failure_fraction=self.failure_fraction)
            st.buckets_at = st.n_observed
        return st.buckets

    def summary(self) -> dict[str, dict[str, Any]]:
        """What the allocator learned, per category, in JSON-ready types.

        Returns
        -------
        dict of str to dict
            Per category: ``mode``, ``observations``, ``exhausted``,
            ``max_seen_mb``, ``allocation_mb`` and ``cores`` of a first
            try, ``buckets`` (``[allocation_mb, probability]`` pairs) and
            ``efficiency`` (sum of peaks / sum allocated, retries included).
        """
        out = {}
        for name, st in self._categories.items():
            out[name] = {
                "mode": self.mode,
                "observations": st.n_observed,
                "exhausted": st.n_exhausted,
                "max_seen_mb": st.max_seen,
                "allocation_mb": self.allocate(name).memory_mb,
                "cores": self.allocate(name).cores,
                "buckets": self.buckets(name) if self.mode == "auto" else [],
                "efficiency": st.peak_total / st.allocated_total if st.allocated_total else None,
            }
        return out

    # -- internals ----------------------------------------------------------
    def _state(self, category: str) -> _Category:
        st = self._categories.get(category)
        if st is None:
            st = self._categories[category] = _Category(deque(maxlen=self.window))
        return st

    def _due(self, st: _Category) -> bool:
        """Recompute buckets after every new observation at first, then every 5 %."""
        return st.buckets_at < 0 or st.n_observed - st.buckets_at >= max(1, st.buckets_at // 20)

    def _guess(self) -> Resources:
        return self._first_guess or self.max_resources or Resources()

    def _make(self, st: _Category, memory_mb: float) -> Resources:
        base = self._guess()
        res = Resources(base.cores, max(1, self.min_memory_mb, math.ceil(memory_mb)), base.disk_mb)
        return res.capped(self.max_resources)

    def _ladder(self, category: str, st: _Category) -> list[float]:
        """Memory allocations of the category's rungs, ascending."""
        if st.n_observed == 0:
            return []
        if self.mode == "max-seen":
            return [st.max_seen * (1 + self.margin)]
        if st.n_observed < self.min_observations:
            return [st.max_seen * self.warmup_factor]
        return [value * (1 + self.margin) for value, _ in self.buckets(category)]

    def _first(self, category: str, st: _Category) -> Resources:
        guess = self._guess().capped(self.max_resources)
        if st.n_observed == 0:
            # a new category: the warm-up factor times the largest peak of the others, if any
            others = [c.max_seen for name, c in self._categories.items() if c.n_observed and name != category]
            if self.mode == "auto" and others:
                return self._make(st, min(guess.memory_mb, self.warmup_factor * max(others)))
            return guess
        if self.mode == "auto" and st.n_observed < self.min_observations:
            # warm-up: a margin over the largest peak seen, never more than the first guess
            return self._make(st, min(guess.memory_mb, self.warmup_factor * st.max_seen))
        return self._make(st, self._ladder(category, st)[0])

    def _next_up(self, category: str, st: _Category, previous: Resources) -> Resources:
        cap = self.max_resources
        higher = [m for m in self._ladder(category, st) if math.ceil(m) > previous.memory_mb]
        if higher:
            memory = higher[0]
        else:  # past the top bucket: grow step by step toward the largest worker
            memory = 2 * previous.memory_mb
        res = self._make(st, memory)
        if res.cores < previous.cores:
            res = replace(res, cores=previous.cores)
        res = res.capped(cap)
        if cap is not None and res.memory_mb <= previous.memory_mb:
            return cap
        return res
