"""Planning of the merge tree that reduces partial results to one output.

Partial results (processing outputs, then merge outputs) arrive over time
as serialized bytes held by the manager; merges run as ``accumulate``
tasks on workers. :class:`TreeReducer` decides which results to merge
together and when; it never sees the results themselves, only their keys
and sizes.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
import logging
from collections.abc import Hashable, Iterable, Sequence

from hep_executor.errors import ConfigError

__all__ = ["TreeReducer"]

logger = logging.getLogger(__name__)


def _check_fan_in(fan_in: int) -> int:
    if isinstance(fan_in, bool) or int(fan_in) != fan_in or fan_in < 2:
        msg = f"merge fan_in must be an integer >= 2 (a merge needs two inputs), got {fan_in!r}"
        raise ConfigError(msg)
    return int(fan_in)


class TreeReducer:
    """Plan a merge tree of bounded fan-in over results arriving in any order.

    Parameters
    ----------
    fan_in : int, optional
        Most inputs per merge (default 20), >= 2.

    Notes
    -----
    The merge policy:

    - Every result has a merge level: a processing result is level 0, a
      merge output one more than its deepest input.
    - While inputs still come, :meth:`groups` merges only results of the
      same level, ``fan_in`` at a time, the smallest (in bytes) first, as
      coffea does. Merging across levels as soon as ``fan_in`` results
      wait would chain merges when inputs trickle in (a tree of depth
      ``N / fan_in``); same-level groups keep the depth within one of
      ``ceil(log_k N)``, with at most ``fan_in - 1`` results waiting per
      level.
    - Once no more inputs will come (:meth:`finish`), results of any level are grouped
      ``fan_in`` at a time, lowest level and smallest first, unless a
      merge in flight will yield a result of lower level than the group's
      highest (then the group waits for it: Huffman's rule on depth);
      when fewer than ``fan_in`` are left and no merge is in flight, they
      are merged in one last group (if two or more).
    - So every merge but the last has ``fan_in`` inputs and N inputs take
      ``ceil((N - 1) / (fan_in - 1))`` merges; a group never holds one
      key, nor the same key twice, and each result is merged once.

    Examples
    --------
    >>> r = TreeReducer(fan_in=2)
    >>> r.add("a", 10); r.add("b", 12); r.finish()
    >>> r.groups()
    [['a', 'b']]
    >>> r.add("ab", 15, merged_from=["a", "b"])
    >>> r.done, r.result_key
    (True, 'ab')
    """

    def __init__(self, fan_in: int = 20):
        self.fan_in = _check_fan_in(fan_in)
        self._heaps: dict[int, list[tuple[int, int, Hashable]]] = {}
        self._per_level: Counter[int] = Counter()
        self._level: dict[Hashable, int] = {}
        self._size: dict[Hashable, int] = {}
        self._pending: dict[Hashable, int] = {}
        self._in_flight: dict[frozenset, int] = {}
        self._seen: set[Hashable] = set()
        self._arrival = itertools.count()
        self._finished = False
        self.n_inputs = 0
        self.n_merges = 0

    # -- inputs -----------------------------------------------------------
    def finish(self) -> None:
        """Say that no more inputs will come."""
        self._finished = True

    def add(self, key: Hashable, nbytes: int, *, merged_from: Sequence[Hashable] | None = None) -> None:
        """Register a finished result.

        Parameters
        ----------
        key : hashable
            Its key; never registered before.
        nbytes : int
            Its serialized size.
        merged_from : sequence of key, optional
            For a merge output: the group (as returned by :meth:`groups`)
            it was merged from. Without it, ``key`` is a new input.

        Raises
        ------
        ValueError
            If ``key`` was registered before, or ``merged_from`` is not a
            merge in flight.
        """
        if key in self._seen:
            msg = f"result key {key!r} was already registered with the reducer"
            raise ValueError(msg)
        level = 0
        if merged_from is not None:
            level = self._in_flight.pop(frozenset(merged_from), None)
            if level is None:
                msg = f"merge of {list(merged_from)!r} is not in flight; cannot register its output {key!r}"
                raise ValueError(msg)
            self.n_merges += 1
        else:
            self.n_inputs += 1
        self._seen.add(key)
        self._push(key, int(nbytes), level)

    def _push(self, key: Hashable, nbytes: int, level: int) -> None:
        self._level[key] = level
        self._size[key] = nbytes
        self._pending[key] = level
        self._per_level[level] += 1
        heapq.heappush(self._heaps.setdefault(level, []), (nbytes, next(self._arrival), key))

    def _take(self, level: int) -> Hashable:
        """Remove and return the smallest pending key of ``level``."""
        _, _, key = heapq.heappop(self._heaps[level])
        self._discard(key)
        return key

    def _discard(self, key: Hashable) -> None:
        self._per_level[self._pending.pop(key)] -= 1

    def _start(self, group: list[Hashable]) -> list[Hashable]:
        self._in_flight[frozenset(group)] = 1 + max(self._level[k] for k in group)
        return group

    # -- merges -----------------------------------------------------------
    @property
    def inputs_closed(self) -> bool:
        """True when no more inputs will come."""
        return self._finished

    def groups(self) -> list[list[Hashable]]:
        """Pop the groups ready to merge now and mark them in flight.

        Returns
        -------
        list of list of key
            Each group holds 2 to ``fan_in`` distinct keys.
        """
        k = self.fan_in
        out = []
        for level in sorted(self._per_level):
            while self._per_level[level] >= k:
                out.append(self._start([self._take(level) for _ in range(k)]))
        while self.inputs_closed:
            n = len(self._pending)
            if n < k and (self._in_flight or n < 2):
                break
            size = min(k, n)
            # Wait for a merge in flight whose output would be a shallower partner.
            if any(lvl < self._top_level(size) for lvl in self._in_flight.values()):
                break
            out.append(self._start(self._take_lowest(size)))
        if out:
            logger.debug("%d merges ready, of %s inputs", len(out), [len(g) for g in out])
        return out

    def _top_level(self, n: int) -> int:
        """The highest level among the ``n`` lowest-level pending results."""
        seen = 0
        for level in sorted(self._per_level):
            seen += self._per_level[level]
            if seen >= n:
                return level
        return max(self._pending.values())

    def _take_lowest(self, n: int) -> list[Hashable]:
        group: list[Hashable] = []
        for level in sorted(self._per_level):
            while len(group) < n and self._per_level[level] > 0:
                group.append(self._take(level))
        return group

    def merge_failed(self, group: Iterable[Hashable]) -> None:
        """Put the inputs of a failed merge back, to be grouped again."""
        group = tuple(group)
        if self._in_flight.pop(frozenset(group), None) is None:
            msg = f"merge of {list(group)!r} is not in flight"
            raise ValueError(msg)
        logger.info("merge of %d results failed; regrouping them", len(group))
        for k in group:
            self._push(k, self._size[k], self._level[k])

    # -- state ------------------------------------------------------------
    @property
    def pending_count(self) -> int:
        """Results waiting to be merged."""
        return len(self._pending)

    @property
    def in_flight_count(self) -> int:
        """Merges started and not yet registered."""
        return len(self._in_flight)

    @property
    def done(self) -> bool:
        """True when the inputs are closed, no merge is in flight and at most one result is left."""
        return self.inputs_closed and not self._in_flight and len(self._pending) <= 1

    @property
    def result_key(self) -> Hashable | None:
        """The key of the final result once :attr:`done`, else None (also for zero inputs)."""
        if self.done and self._pending:
            return next(iter(self._pending))
        return None

    def __repr__(self) -> str:
        return (
            f"TreeReducer(fan_in={self.fan_in}, pending={self.pending_count}, "
            f"in_flight={self.in_flight_count}, merges={self.n_merges})"
        )
