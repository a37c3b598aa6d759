"""Where the :class:`~hep_executor.engine._dask_manager.DaskManager` learns that tasks finished.

Two streams arrive on Dask's event loop: a future's done callback (the
task's id and key, queued for :meth:`Inbox.drain`) and the task's
measurements, a Dask event on the manager's topic (kept by key until
:meth:`Inbox.report` takes them). They travel apart, so a finished task's
measurements are allowed a moment to catch up.
"""

from __future__ import annotations

import logging
import queue
import time

import distributed

__all__ = ["Inbox"]

log = logging.getLogger(__name__)

_REPORT_GRACE = 5.0  # seconds to wait for a finished task's measurements to arrive


class Inbox:
    """Finished futures and their measurements, for the tasks this manager expects.

    Parameters
    ----------
    client : distributed.Client
    topic : str
        The Dask event topic the tasks send their measurements to.
    """

    def __init__(self, client: distributed.Client, topic: str):
        self.client = client
        self.topic = topic
        self._by_key: dict[str, int] = {}
        self._reports: dict[str, dict] = {}
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        client.subscribe_topic(topic, self._on_report)

    def expect(self, key: str, task_id: int) -> None:
        """Keep the measurements sent for ``key`` (call before submitting: they may come back at once)."""
        self._by_key[key] = task_id

    def watch(self, future: distributed.Future, task_id: int) -> None:
        """Queue ``(task_id, key)`` when ``future`` finishes."""
        future.add_done_callback(lambda fut, tid=task_id: self._finished.put((tid, fut.key)))

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)
        self._reports.pop(key, None)

    def drain(self, block: bool, deadline: float) -> list[tuple[int, str]]:
        """Every queued ``(task_id, key)``; with ``block``, wait until ``deadline`` for the first."""
        got = []
        if block:
            try:
                got.append(self._finished.get(timeout=max(0.0, min(deadline - time.monotonic(), 3600))))
            except queue.Empty:
                return got
        while True:
            try:
                got.append(self._finished.get_nowait())
            except queue.Empty:
                return got

    def report(self, key: str) -> dict | None:
        """The measurements of the task ``key``, waiting a moment for them; None if none came."""
        give_up = time.monotonic() + _REPORT_GRACE
        while key not in self._reports and time.monotonic() < give_up:
            time.sleep(0.001)
        return self._reports.pop(key, None)

    def close(self) -> None:
        """Stop listening for measurements."""
        try:
            self.client.unsubscribe_topic(self.topic)
        except Exception:  # the client may be closing already
            log.debug("could not unsubscribe %s", self.topic, exc_info=True)

    def _on_report(self, event) -> None:
        """Topic handler (Dask's event loop): keep a task's measurements until its result is filed."""
        _, report = event
        if report.get("key") in self._by_key:
            self._reports[report["key"]] = report
