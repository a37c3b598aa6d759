"""Preprocessing: one task per file reads its metadata, with one error policy.

Both faces use :func:`gather`: :func:`hep_executor.analysis._runner.run`
with its own metadata task, :class:`hep_executor.executor.HepExecutor`
with coffea's. The policy: an error that ``tolerate`` accepts (a bad
file under ``skipbadfiles``) is listed and the run goes on; any other
error cancels the preprocessing tasks still waiting or running and is
raised, so nothing is left running behind it.

:class:`MetadataStream` runs the same tasks beside the chunk tasks of a
pipeline (streaming: a file's chunks start as soon as its metadata is
back), with the same policy.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

__all__ = ["MetadataStream", "gather"]

log = logging.getLogger(__name__)


def gather(manager, fn: Callable, calls: list[tuple[tuple, str]], *,
           tolerate: Callable[[BaseException], bool] | None = None,
           progress: Callable | None = None, retries: int = 0
           ) -> tuple[dict[int, Any], dict[int, BaseException]]:
    """Run ``fn(*args)`` for each ``(args, affinity)`` of ``calls`` as ``preprocess`` tasks.

    A task that raised is run again up to ``retries`` times before its error counts.
    Returns ``(values, tolerated)``: the value of each call that succeeded and
    the error of each that ``tolerate`` accepted, both by the call's index.
    ``progress(result)`` is called after each task.

    Raises
    ------
    Exception
        The first error ``tolerate`` does not accept, after the other
        preprocessing tasks were cancelled.
    """
    index = {manager.submit(fn, *args, category="preprocess", affinity=key, retries=retries): i
             for i, (args, key) in enumerate(calls)}
    values: dict[int, Any] = {}
    tolerated: dict[int, BaseException] = {}
    while len(values) + len(tolerated) < len(index):
        for result in manager.wait(timeout=1.0):
            i = index[result.id]
            if progress is not None:
                progress(result)
            if result.ok:
                values[i] = result.value
            elif tolerate is not None and tolerate(result.error):
                tolerated[i] = result.error
            else:
                _cancel_rest(manager, index, values, tolerated, result.id)
                raise result.error
    return values, tolerated


def _cancel_rest(manager, index: dict[int, int], values: dict, tolerated: dict, failed: int) -> None:
    done = set(values) | set(tolerated) | {index[failed]}
    for task_id, i in index.items():
        if i not in done:
            manager.cancel(task_id)


class MetadataStream:
    """Preprocessing tasks run beside the chunk tasks of a :class:`~hep_executor.analysis._pipeline.ReducePipeline`.

    The pipeline calls :meth:`pump` before it feeds chunk tasks (so each new
    preprocessing task is queued ahead of the chunks submitted in the same
    pass) and offers it every result first (:meth:`route`). It keeps as many
    preprocessing tasks in flight as the workers have cores, plus the free
    places of the pipeline's chunk window, so the plan stays ahead of the
    slots without queueing every file before the first chunk.

    Parameters
    ----------
    manager : Manager
    fn : callable
        The metadata function, ``fn(*args)``.
    calls : list of (args, affinity)
    on_value : callable
        ``on_value(index, value)`` for each call that succeeded.
    tolerate : callable, optional
        Errors it accepts are passed to ``on_tolerated(index, error)``; any
        other stops the stream: the rest is cancelled and :attr:`error` set.
    on_result : callable, optional
        ``on_result(index, result)`` for every result (reports, progress).
    on_done : callable, optional
        Called once when every call came back or the stream stopped.
    """

    def __init__(self, manager, fn: Callable, calls: list[tuple[tuple, str]], *, on_value: Callable,
                 tolerate: Callable[[BaseException], bool] | None = None,
                 on_tolerated: Callable | None = None, on_result: Callable | None = None,
                 on_done: Callable | None = None):
        self.manager = manager
        self.fn = fn
        self.calls = calls
        self.on_value, self.on_tolerated, self.on_result = on_value, on_tolerated, on_result
        self.on_done = on_done
        self.tolerate = tolerate
        self.next = 0
        self.in_flight: dict[int, int] = {}
        self.error: BaseException | None = None
        self.error_index: int | None = None
        self.t_done: float | None = None

    @property
    def done(self) -> bool:
        """Every call came back, or the stream stopped at an error."""
        return self.error is not None or (self.next >= len(self.calls) and not self.in_flight)

    def pump(self, cores: int, free_window: int) -> int:
        """Submit preprocessing tasks up to ``cores + free_window`` in flight; return how many."""
        if self.error is not None:
            return 0
        target = max(1, cores) + max(0, free_window)
        submitted = 0
        while self.next < len(self.calls) and len(self.in_flight) < target:
            args, key = self.calls[self.next]
            tid = self.manager.submit(self.fn, *args, category="preprocess", affinity=key)
            self.in_flight[tid] = self.next
            self.next += 1
            submitted += 1
        return submitted

    def add(self, args: tuple, affinity: str) -> int:
        """Queue one more call (a file to read again); return its index. ``on_done`` is called again once done."""
        self.calls.append((args, affinity))
        self.t_done = None
        return len(self.calls) - 1

    def route(self, result) -> bool:
        """Take ``result`` if it is one of this stream's tasks; return whether it was."""
        i = self.in_flight.pop(result.id, None)
        if i is None:
            return False
        if self.on_result is not None:
            self.on_result(i, result)
        if result.ok:
            self.on_value(i, result.value)
        elif self.tolerate is not None and self.tolerate(result.error):
            if self.on_tolerated is not None:
                self.on_tolerated(i, result.error)
        elif self.error is None:
            self.error, self.error_index = result.error, i
            for tid in list(self.in_flight):
                self.manager.cancel(tid)
            self.in_flight.clear()
        if self.done and self.t_done is None:
            self.t_done = time.time()
            if self.on_done is not None:
                self.on_done()
        return True
