"""Stragglers: at the end of a run, a second copy of a task that runs far longer than its kind.

When nothing waits and only a few tasks still run, one that has run
``straggler_factor`` times longer than its category's mean (and at least
``straggler_min_s``) gets a copy on another worker with room. The first
copy back is the task's result; the manager stops the other
(:mod:`hep_executor.engine._inbox`), and the task comes back once, so
nothing is counted twice. A copy that fails leaves the other running.
Tasks must be safe to run twice, as for ``retries``.

:class:`StragglerSteps` is a part of the
:class:`~hep_executor.engine._manager.Manager`; it works on its ``table``,
``stats``, ``_wall_ewma`` and ``_send_batches``.
"""

from __future__ import annotations

import logging
import time

from hep_executor.engine._state import TaskState

__all__ = ["StragglerSteps"]

log = logging.getLogger(__name__)

FEW_LEFT_SHARE = 0.1  # "a few tasks left": at most this share of the cores (and at least 2) run


class StragglerSteps:
    """The manager's straggler step."""

    straggler_factor: float
    straggler_min_s: float

    def _copy_stragglers(self) -> int:
        """Start copies of the stragglers of a run's last tasks; return how many were sent."""
        table = self.table
        running = table.n_dispatched
        if (not self.straggler_factor or table.n_waiting or not running
                or running > max(2, int(FEW_LEFT_SHARE * table.total_cores))):
            return 0
        now = time.monotonic()
        batches: dict[bytes, list] = {}
        for task in list(table.tasks.values()):
            if task.state is not TaskState.DISPATCHED or task.copied:
                continue
            if not self._is_straggler(task, now):
                continue
            worker = next((w for w in table.workers.values()
                           if w.identity != task.worker and w.fits(task)), None)
            if worker is None:
                continue
            table.add_copy(task, worker)
            batches.setdefault(worker.identity, []).append(task)
            self.stats["straggler_copies"] += 1
            log.info("task %d (%s) has run %.1f s, over %g x its category's %.2f s: a copy goes to %s",
                     task.id, task.category, now - task.dispatched_at, self.straggler_factor,
                     self._wall_ewma[task.category], worker.worker_id)
        return self._send_batches(batches) if batches else 0

    def _is_straggler(self, task, now: float) -> bool:
        model = self._wall_ewma.get(task.category)
        if model is None:
            return False
        return now - task.dispatched_at > max(self.straggler_min_s, self.straggler_factor * model)
