"""What runs on a Dask worker for the :class:`~hep_executor.engine._dask_manager.DaskManager`.

:func:`run_measured` wraps every task: it measures the task's wall time,
CPU time and peak memory with the same :mod:`~hep_executor.engine._monitor`
code as our own slots, stops it with
:class:`~hep_executor.errors.ResourceExhaustedError` when the process's
resident memory goes over the task's allocation (a :class:`_MemoryGuard`
thread), and sends the measurements to the manager as a Dask event (a
small message; the value stays on the worker). :func:`load_function`
turns a task function's bytes into the function once per worker;
:func:`apply_to_values` is the merge task's body over futures' values and
:class:`Raw` bytes.

Per-task peaks are exact with one thread per Dask worker process (the
peak mark is the process's); with more threads they are an upper bound.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass

import cloudpickle
import distributed
from dask.sizeof import sizeof

from hep_executor.engine import _monitor as monitor
from hep_executor.engine._serialization import loads
from hep_executor.errors import ResourceExhaustedError

__all__ = ["Raw", "apply_to_values", "load_function", "run_measured"]

_GUARD_INTERVAL = 0.05  # seconds between two looks at the resident memory


class _OverAllocation(BaseException):
    """Raised asynchronously in a task's thread by its memory guard."""


class _MemoryGuard:
    """Watches this process's resident memory while a task runs; interrupts the task past ``limit_mb``."""

    def __init__(self, limit_mb: float):
        self.limit_mb = limit_mb
        self.fired_at = 0.0
        self._target = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="hep-memory-guard")

    def __enter__(self) -> _MemoryGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.fired_at:  # the interrupt may still be pending if the task ended just then
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), None)

    def _watch(self) -> None:
        pid = os.getpid()
        while not self._stop.wait(_GUARD_INTERVAL):
            rss = monitor.rss_mb(pid)
            if rss > self.limit_mb:
                self.fired_at = rss
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target),
                                                           ctypes.py_object(_OverAllocation))
                return


def _call(fn, args, kwargs, limit_mb: int):
    if not limit_mb:
        return fn(*args, **kwargs)
    guard = _MemoryGuard(limit_mb)
    try:
        with guard:
            return fn(*args, **kwargs)
    except _OverAllocation:
        pass
    msg = f"resident memory {guard.fired_at:.0f} MB went over the task's {limit_mb} MB allocation"
    raise ResourceExhaustedError(msg, peak_mb=guard.fired_at, limit_mb=limit_mb)


def run_measured(topic: str, fn, args: tuple, kwargs: dict, limit_mb: int):
    """Run ``fn(*args, **kwargs)`` on a Dask worker; send its measurements to ``topic``."""
    worker = distributed.get_worker()
    monitor.reset_peak()
    cpu0 = time.thread_time()  # this task's thread: the worker's own threads do not count
    started = time.time()
    t0 = time.perf_counter()
    status, nbytes = "error", 0
    try:
        value = _call(fn, args, kwargs, limit_mb)
        status, nbytes = "ok", sizeof(value)
        return value
    except ResourceExhaustedError:
        status = "exhausted"
        raise
    finally:
        worker.log_event(topic, {
            "key": distributed.get_worker().get_current_task(), "status": status,
            "wall": time.perf_counter() - t0, "cpu": time.thread_time() - cpu0,
            "peak_mb": monitor.peak_mb(), "started": started, "nbytes": nbytes, "worker": worker.address,
            "host": worker.ip, "slot": f"{worker.name}:{threading.get_ident()}"})


def load_function(data: bytes):
    """The task function held in ``data`` (a Dask task of its own, so it is loaded once per worker)."""
    return cloudpickle.loads(data)


@dataclass(frozen=True)
class Raw:
    """A serialized value among a merge task's inputs."""

    data: bytes
    compressed: bool


def apply_to_values(fn, parts: list):
    """Call ``fn`` on a merge task's inputs: values (from futures) or bytes (:class:`Raw`)."""
    return fn([loads(p.data, p.compressed) if isinstance(p, Raw) else p for p in parts])
