"""Feed work items to a manager and merge their results on workers, in a tree.

:class:`ReducePipeline` is the loop both faces share (the coffea
executor and :func:`hep_executor.run`): it keeps enough process tasks in
flight to fill the workers, asks its *source* for more items as results
come back (so a source can size the next chunks from what it measured),
hands finished results to the :class:`~hep_executor.reduction.TreeReducer`,
and submits each group it returns as an ``accumulate`` task over the
results' serialized bytes. The manager never deserializes a partial
result: only the last merge comes back as an object.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .chunk_tasks import merge_outputs
from .reduction import TreeReducer
from .results import TaskReport, TaskResult

__all__ = ["ItemSource", "PipelineOutcome", "ReducePipeline", "worker_cores"]

log = logging.getLogger(__name__)


class ItemSource(Protocol):
    """Where process items come from."""

    def take(self, n: int) -> list:
        """Up to ``n`` more items (fewer, or none, when the source is spent)."""

    @property
    def exhausted(self) -> bool:
        """No more items will come (unless :meth:`observe` adds some)."""

    def observe(self, item: Any, result: TaskResult) -> list:
        """Learn from a finished item; return items to add (e.g. split halves)."""

    def resources(self, item: Any) -> dict:
        """``cores``, ``memory_mb``, ``category`` for the item's task."""


@dataclass
class PipelineOutcome:
    """What a pipeline run produced."""

    output: Any = None
    reports: list[TaskReport] = field(default_factory=list)
    failures: list[tuple[Any, BaseException]] = field(default_factory=list)
    merges: int = 0
    processed: int = 0
    deserialized: int = 0
    wall: float = 0.0

    @property
    def error(self) -> BaseException | None:
        return self.failures[0][1] if self.failures else None


class ReducePipeline:
    """Run ``process_fn`` over a source's items and merge the results on workers.

    Parameters
    ----------
    manager : Manager
    process_fn : callable
        ``process_fn(item)`` runs on a worker; it travels once per worker.
    fan_in : int
        Results per merge task.
    merge_fn : callable
        ``merge_fn(list_of_values)`` merges on a worker.
    window : int, optional
        Process tasks kept in flight (default: twice the worker cores, at least 4).
    stop_on_error : bool
        Stop submitting new items after a failure (the results so far are
        still merged and returned with the error).
    on_result : callable, optional
        Called with each process :class:`TaskResult` (progress, reports).
    merge_memory_mb : int
        Memory allocation of merge tasks (0: no limit).
    """

    def __init__(self, manager, process_fn: Callable, *, fan_in: int = 20,
                 merge_fn: Callable = merge_outputs, window: int | None = None,
                 stop_on_error: bool = True, on_result: Callable | None = None,
                 merge_memory_mb: int = 0, retries: int = 0,
                 tolerate: Callable[[BaseException], bool] | None = None):
        self.manager = manager
        self.process_fn = process_fn
        self.merge_fn = merge_fn
        self.reducer = TreeReducer(fan_in)
        self.window = window
        self.stop_on_error = stop_on_error
        self.on_result = on_result
        self.merge_memory_mb = merge_memory_mb
        self.retries = retries
        self.tolerate = tolerate
        self._payloads: dict[int, tuple[bytes, bool]] = {}
        self._last: TaskResult | None = None

    def _window(self) -> int:
        if self.window:
            return self.window
        return max(4, 2 * worker_cores(self.manager))

    def run(self, source: ItemSource) -> PipelineOutcome:
        """Process every item of ``source``; return the merged output and reports."""
        outcome = PipelineOutcome()
        t0 = time.perf_counter()
        loads_before = self.manager.stats["deserialized"]
        in_flight: dict[int, Any] = {}
        merges: dict[int, list] = {}
        stopped = merge_broken = False
        while True:
            if not stopped:
                free = self._window() - len(in_flight)
                for item in source.take(max(0, free)) if free > 0 else []:
                    res = source.resources(item)
                    tid = self.manager.submit(self.process_fn, item, retries=self.retries,
                                              affinity=getattr(item, "filename", None), **res)
                    in_flight[tid] = item
            if (stopped or source.exhausted) and not in_flight and not self.reducer.inputs_closed:
                self.reducer.finish()
            for group in [] if merge_broken else self.reducer.groups():
                tid = self.manager.submit_payload(
                    self.merge_fn, [self._payloads[k] for k in group],
                    category="accumulate", memory_mb=self.merge_memory_mb, retries=1)
                merges[tid] = group
            if self.reducer.inputs_closed and not in_flight and not merges and self.reducer.done:
                break
            if merge_broken and not in_flight and not merges:
                # keep what was done: merge the pending results here
                outcome.output = merge_outputs([_load_payload(self.manager, p)
                                                for p in self._payloads.values()])
                outcome.wall = time.perf_counter() - t0
                outcome.deserialized = self.manager.stats["deserialized"] - loads_before
                return outcome
            for result in self.manager.wait(timeout=1.0):
                if result.id in in_flight:
                    item = in_flight.pop(result.id)
                    outcome.reports.append(result.report)
                    added = source.observe(item, result)
                    if result.ok:
                        outcome.processed += 1
                        self._keep(result)
                        self.reducer.add(result.id, len(result.payload))
                    elif added:
                        log.info("task %d split into %d after %s", result.id, len(added),
                                 type(result.error).__name__)
                    else:
                        outcome.failures.append((item, result.error))
                        if not (self.tolerate is not None and self.tolerate(result.error)):
                            stopped = stopped or self.stop_on_error
                    if self.on_result is not None:
                        self.on_result(result, item)
                elif result.id in merges:
                    group = merges.pop(result.id)
                    outcome.reports.append(result.report)
                    if result.ok:
                        outcome.merges += 1
                        for k in group:
                            self._payloads.pop(k, None)
                        self._keep(result)
                        self.reducer.add(result.id, len(result.payload), merged_from=group)
                    else:
                        self.reducer.merge_failed(group)
                        outcome.failures.append((("merge", group), result.error))
                        stopped = merge_broken = True
        key = self.reducer.result_key
        if key is not None:
            outcome.output = self._last.value if self._last is not None and self._last.id == key \
                else _load_payload(self.manager, self._payloads[key])
        outcome.wall = time.perf_counter() - t0
        outcome.deserialized = self.manager.stats["deserialized"] - loads_before
        return outcome

    def _keep(self, result: TaskResult) -> None:
        self._payloads[result.id] = (result.payload, result.compressed)
        self._last = result


def worker_cores(manager) -> int:
    """Cores of ``manager``'s workers now (at least 1)."""
    return max(1, sum(w["cores"] for w in manager.workers()))


def _load_payload(manager, payload: tuple[bytes, bool]):
    from .slot import loads

    manager.stats["deserialized"] += 1
    return loads(*payload)

