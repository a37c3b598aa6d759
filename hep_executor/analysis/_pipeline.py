"""Feed work items to a manager and merge their results on workers, in a tree.

:class:`ReducePipeline` is the loop both faces share (the coffea
executor and :func:`hep_executor.run`): it keeps enough process tasks in
flight to fill the workers, asks its *source* for more items as results
come back (so a source can size the next chunks from what it measured),
hands finished results to the :class:`~hep_executor.planning._reduction.TreeReducer`,
and submits each group it returns as an ``accumulate`` task over the
results' serialized bytes. The manager never deserializes a partial
result: only the last merge comes back as an object.

It fails fast: when the first tasks of a category (three by default) all
end with one and the same error (a module the workers cannot import, a
processor bug that hits every chunk), the tasks still running are
cancelled and the run ends with that error, instead of running every
chunk to the same failure.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from hep_executor.analysis._chunk_tasks import merge_outputs
from hep_executor.planning import TreeReducer
from hep_executor.engine import TaskReport, TaskResult
from hep_executor.engine import loads
from hep_executor.errors import RemoteAccessError, ResourceExhaustedError, WorkerLostError

__all__ = ["FAIL_FAST_AFTER", "FailFast", "ItemSource", "PipelineOutcome", "ReducePipeline", "SideTasks",
           "worker_cores"]

#: a run stops when this many first tasks of a category end with the same error
FAIL_FAST_AFTER = 3
#: errors that say nothing about the next task (they close the first-tasks watch of a category)
_TRANSIENT = (RemoteAccessError, ResourceExhaustedError, WorkerLostError)

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


class SideTasks(Protocol):
    """Tasks a pipeline runs beside its items (a file's preprocessing while chunks of others run)."""

    error: BaseException | None

    def pump(self, cores: int, free_window: int) -> int:
        """Submit what should be in flight now, given the workers' cores and free places of the window."""

    def route(self, result: TaskResult) -> bool:
        """Take ``result`` if it is a side task's; return whether it was."""


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
    fatal: BaseException | None = None  # the error that stopped the run early (fail fast)

    @property
    def error(self) -> BaseException | None:
        return self.failures[0][1] if self.failures else None


@dataclass
class _RunState:
    """One :meth:`ReducePipeline.run`: tasks in flight, merges, and whether to stop."""

    source: Any
    loads_before: int
    outcome: PipelineOutcome = field(default_factory=PipelineOutcome)
    in_flight: dict[int, Any] = field(default_factory=dict)
    merges: dict[int, list] = field(default_factory=dict)
    stopped: bool = False
    merge_broken: bool = False
    last_category: str = "?"
    t0: float = field(default_factory=time.perf_counter)

    def close(self, manager) -> PipelineOutcome:
        self.outcome.wall = time.perf_counter() - self.t0
        self.outcome.deserialized = manager.stats["deserialized"] - self.loads_before
        return self.outcome


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
    on_merge : callable, optional
        Called with each finished merge task's :class:`TaskResult` (the progress bar's merge stage).
    merge_memory_mb : int
        Memory allocation of merge tasks (0: no limit).
    fail_fast : int
        Stop the run, cancelling what runs, when the first this many tasks of
        a category end with the same error (0: never).
    keep_reports : bool
        Keep every task's report in :attr:`PipelineOutcome.reports` (default);
        False keeps none (the caller files them from ``on_result`` and ``on_merge``).
    """

    def __init__(self, manager, process_fn: Callable, *, fan_in: int = 20,
                 merge_fn: Callable = merge_outputs, window: int | None = None,
                 stop_on_error: bool = True, on_result: Callable | None = None,
                 merge_memory_mb: int = 0, retries: int = 0,
                 tolerate: Callable[[BaseException], bool] | None = None,
                 fail_fast: int = FAIL_FAST_AFTER, on_merge: Callable | None = None,
                 keep_reports: bool = True):
        self.manager = manager
        self.keep_reports = keep_reports
        self.on_merge = on_merge
        self.fail_fast = fail_fast
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

    def run(self, source: ItemSource, side: SideTasks | None = None) -> PipelineOutcome:
        """Process every item of ``source``; return the merged output and reports.

        ``side`` (streaming preprocessing) submits its tasks first in each pass
        and sees every result first; when it stops at an error, no new item is
        submitted and the results so far are merged and returned.
        """
        state = _RunState(source, loads_before=self.manager.stats["deserialized"])
        watch = FailFast(self.fail_fast)
        while True:
            if state.outcome.fatal is not None:
                return self._abort(state)
            self._pump_side(state, side)
            self._feed(state)
            self._submit_merges(state)
            if state.merge_broken and not state.in_flight and not state.merges:
                return self._salvage(state)
            if self.reducer.inputs_closed and not state.in_flight and not state.merges and self.reducer.done:
                return self._finish(state)
            for result in self.manager.wait(timeout=1.0):
                if side is None or not side.route(result):
                    self._route(state, result, watch)

    def _pump_side(self, state: _RunState, side: SideTasks | None) -> None:
        if side is None:
            return
        if side.error is not None:
            state.stopped = True
        elif not state.stopped:
            side.pump(worker_cores(self.manager), self._window() - len(state.in_flight))

    def _feed(self, state: _RunState) -> None:
        """Keep the window of process tasks full; close the reducer's inputs when all are in."""
        if not state.stopped:
            free = self._window() - len(state.in_flight)
            for item in state.source.take(free) if free > 0 else []:
                tid = self.manager.submit(self.process_fn, item, retries=self.retries,
                                          affinity=getattr(item, "filename", None),
                                          **state.source.resources(item))
                state.in_flight[tid] = item
        if (state.stopped or state.source.exhausted) and not state.in_flight \
                and not self.reducer.inputs_closed:
            self.reducer.finish()

    def _submit_merges(self, state: _RunState) -> None:
        for group in [] if state.merge_broken else self.reducer.groups():
            tid = self.manager.submit_payload(
                self.merge_fn, [self._payloads[k] for k in group],
                category="accumulate", memory_mb=self.merge_memory_mb, retries=1)
            state.merges[tid] = group

    def _route(self, state: _RunState, result: TaskResult, watch: FailFast) -> None:
        if result.id in state.in_flight:
            item = state.in_flight.pop(result.id)
            again = self._file_processed(state, item, result)
            watched = not again or isinstance(result.error, _TRANSIENT)  # a replanned file's chunk says nothing
            if state.outcome.fatal is None and watched and watch.stops(result, item, self.tolerate):
                state.outcome.fatal = result.error
        elif result.id in state.merges:
            self._file_merged(state, state.merges.pop(result.id), result)

    def _file_processed(self, state: _RunState, item, result: TaskResult) -> bool:
        """File a process result; return whether it failed and its range runs again."""
        outcome = state.outcome
        self._file_report(state, result)
        added = state.source.observe(item, result)
        if result.ok:
            outcome.processed += 1
            self._keep(result)
            self.reducer.add(result.id, len(result.payload))
        elif added:
            log.info("task %d: its range runs again as %d new chunk(s) after %s", result.id, len(added),
                     type(result.error).__name__)
        else:
            outcome.failures.append((item, result.error))
            if not (self.tolerate is not None and self.tolerate(result.error)):
                state.stopped = state.stopped or self.stop_on_error
        if self.on_result is not None:
            self.on_result(result, item)
        return bool(added) and not result.ok

    def _file_report(self, state: _RunState, result: TaskResult) -> None:
        state.last_category = result.report.category
        if self.keep_reports:
            state.outcome.reports.append(result.report)

    def _file_merged(self, state: _RunState, group: list, result: TaskResult) -> None:
        outcome = state.outcome
        self._file_report(state, result)
        if result.ok:
            outcome.merges += 1
            for k in group:
                self._payloads.pop(k, None)
            self._keep(result)
            self.reducer.add(result.id, len(result.payload), merged_from=group)
        else:
            self.reducer.merge_failed(group)
            outcome.failures.append((("merge", group), result.error))
            state.stopped = state.merge_broken = True
        if self.on_merge is not None:
            self.on_merge(result)

    def _abort(self, state: _RunState) -> PipelineOutcome:
        """Fail fast: cancel every task still running; the outcome carries the error."""
        error = state.outcome.fatal
        log.error("stopping the run: the first %d tasks of category %r all failed with %s: %s",
                  self.fail_fast, state.last_category,
                  type(error).__name__, error)
        for tid in [*state.in_flight, *state.merges]:
            self.manager.cancel(tid)
        state.in_flight.clear()
        state.merges.clear()
        return state.close(self.manager)

    def _salvage(self, state: _RunState) -> PipelineOutcome:
        """A merge failed: keep what was done by merging the pending results here."""
        state.outcome.output = merge_outputs([_load_payload(self.manager, p)
                                              for p in self._payloads.values()])
        return state.close(self.manager)

    def _finish(self, state: _RunState) -> PipelineOutcome:
        key = self.reducer.result_key
        if key is not None:
            last = self._last
            state.outcome.output = last.value if last is not None and last.id == key \
                else _load_payload(self.manager, self._payloads[key])
        return state.close(self.manager)

    def _keep(self, result: TaskResult) -> None:
        self._payloads[result.id] = (result.payload, result.compressed)
        self._last = result


class FailFast:
    """Watches the first tasks of each category: the same error ``n`` times in a row from the start stops the run.

    A success, a transient error (a lost worker, memory, a remote read) or
    an error the run tolerates ends the watch of that category.
    """

    def __init__(self, n: int = FAIL_FAST_AFTER):
        self.n = n
        self.first: dict[str, tuple[str, int]] = {}  # category -> (error signature, count)
        self.closed: set[str] = set()

    def stops(self, result: TaskResult, item: Any, tolerate: Callable | None = None) -> bool:
        """File one finished process task; return whether the run must stop."""
        category, error = result.report.category, result.error
        if self.n <= 0 or category in self.closed:
            return False
        if error is None or isinstance(error, _TRANSIENT) or (tolerate is not None and tolerate(error)):
            self.closed.add(category)
            return False
        signature = _signature(error, getattr(item, "filename", ""))
        seen, count = self.first.get(category, (signature, 0))
        if seen != signature:
            self.closed.add(category)
            return False
        self.first[category] = (signature, count + 1)
        return count + 1 >= self.n


def _signature(error: BaseException, filename: str) -> str:
    """An error's type and first line, with the chunk's file and all numbers taken out."""
    text = str(error).split("\n", 1)[0]
    if filename:
        text = text.replace(filename, "FILE")
    return f"{type(error).__name__}: {re.sub(r'[0-9]+', 'N', text)}"


def worker_cores(manager) -> int:
    """Cores of ``manager``'s workers now (at least 1)."""
    return max(1, sum(w["cores"] for w in manager.workers()))


def _load_payload(manager, payload: tuple[bytes, bool]):
    manager.stats["deserialized"] += 1
    load = getattr(manager, "load_payload", None)  # a manager whose results stay remote (Dask)
    return load(payload) if load is not None else loads(*payload)

