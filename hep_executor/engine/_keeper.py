"""Answers a manager's workers while its caller is away from it.

The manager handles messages only inside its own calls. A caller that
pauses (a notebook left open, a long merge between ``wait()`` calls) would
leave heartbeats and status queries unanswered, and workers and the
factory would give the manager up after their timeouts. A :class:`Keeper`
thread runs the manager's dispatch pass when no call has been made for a
heartbeat interval; a lock keeps it and the caller's calls from ever
touching the socket at once.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref

__all__ = ["Keeper", "held"]

log = logging.getLogger(__name__)


class Keeper:
    """A lock for the manager's calls, and the thread that runs passes while none is made.

    Every manager call that touches the socket or the task table runs
    under :func:`held`, which takes ``lock`` and stamps ``last_call``.
    """

    def __init__(self, manager, interval: float):
        self.interval = max(0.05, float(interval))
        self.lock = threading.RLock()
        self.last_call = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_keep, args=(weakref.ref(manager), self),
                                        name="hep-executor-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it ends within one interval)."""
        self._stop.set()

    def idle(self) -> bool:
        """Whether the caller has made no call for an interval."""
        return time.monotonic() - self.last_call >= self.interval


def held(method):
    """Run a manager method under its keeper's lock (a method of an object with ``_keeper``)."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        keeper = self._keeper
        with keeper.lock:
            try:
                return method(self, *args, **kwargs)
            finally:
                keeper.last_call = time.monotonic()

    return call


def _keep(ref, keeper: Keeper) -> None:
    """Run a pass of the manager ``ref`` whenever its caller has been away an interval."""
    while not keeper._stop.wait(keeper.interval / 2):
        manager = ref()
        if manager is None:
            return
        if keeper.idle() and keeper.lock.acquire(blocking=False):
            try:
                if not manager._closed:
                    manager._pass()
            except Exception:  # the caller's next call meets the same state and raises itself
                log.exception("answering workers while the caller is away failed; stopping that")
                return
            finally:
                keeper.lock.release()
        del manager
