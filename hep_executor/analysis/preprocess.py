"""Preprocessing: one task per file reads its metadata, with one error policy.

Both faces use :func:`gather`: :func:`hep_executor.analysis.runner.run`
with its own metadata task, :class:`hep_executor.executor.HepExecutor`
with coffea's. The policy: an error that ``tolerate`` accepts (a bad
file under ``skipbadfiles``) is listed and the run goes on; any other
error cancels the preprocessing tasks still waiting or running and is
raised, so nothing is left running behind it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

__all__ = ["gather"]

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
