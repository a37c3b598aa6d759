"""The slot process: runs tasks one after another for its worker.

A worker keeps one slot per core. A slot lives across tasks, so imported
modules, functions and anything a task caches (open files, NanoEvents
forms) stay warm. It talks to its worker over a pipe: the worker has
already checked every message's signature, so the pipe carries plain
pickles. A task's exception comes back with its traceback text and never
ends the slot; a task that ends the process (a crash, ``os._exit``, the
worker stopping it for memory) is reported by the worker.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
import traceback

import cloudpickle

from hep_executor.engine import _monitor as monitor
from hep_executor.engine._serialization import dumps
from hep_executor.errors import CodeUnavailableError

__all__ = ["WARM_STEP_MB", "slot_main"]

#: the worker is told a slot's warm memory again when it moved by this much
WARM_STEP_MB = 8.0

def _run(fn, args_bytes: bytes):
    args, kwargs = _unpickle(pickle.loads, args_bytes, "arguments")
    return fn(*args, **kwargs)


def _unpickle(load, data: bytes, what: str):
    """``load(data)``; a module missing here becomes :class:`CodeUnavailableError` naming it."""
    try:
        return load(data)
    except (ImportError, AttributeError) as exc:
        module = getattr(exc, "name", None) or _module_in(str(exc))
        msg = (f"the task's {what} could not be unpickled on worker {socket.gethostname()} "
               f"(cwd {os.getcwd()}): {type(exc).__name__}: {exc}. The module {module!r} is not "
               "importable there: install it in the worker environment (hep-executor pack-env), "
               "or ship it with files=[...] / extra_input_files=[...]")
        raise CodeUnavailableError(msg, module) from exc


def _module_in(text: str) -> str:
    """The module named in ``Can't get attribute 'X' on <module 'M' from ...>``, or ``?``."""
    start = text.find("<module '")
    return text[start + 9:text.find("'", start + 9)] if start >= 0 else "?"


def _error_payload(exc: BaseException) -> tuple[bytes, str, str]:
    text = f"{type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data = cloudpickle.dumps(exc)
        pickle.loads(data)
    except Exception:
        data = b""
    return data, text, tb


def slot_main(conn, slot_index: int, worker_pid: int | None = None, worker_end=None) -> None:
    """Serve tasks from ``conn`` until it closes or a ``stop`` arrives.

    The slot dies with its worker: Linux kills it when the worker ends,
    and a worker already gone when the slot starts (killed between the
    fork and here) ends the slot at once. ``worker_end``, the worker's end
    of the pipe that the fork copied here, is closed, so the pipe reads as
    closed once the worker is gone.
    """
    monitor.set_parent_death_signal()
    if worker_end is not None:
        worker_end.close()
    if worker_pid is not None and os.getppid() != worker_pid:
        return
    functions: dict[str, object] = {}
    warm_told = None
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind == "fn":
            _, fn_hash, fn_bytes = message
            functions[fn_hash] = fn_bytes  # unpickled on first use
            continue
        try:
            warm_told = _serve_task(conn, message, functions, slot_index, warm_told)
        except (BrokenPipeError, OSError):
            return


def _serve_task(conn, message: tuple, functions: dict, slot_index: int, warm_told: float | None) -> float | None:
    """Run one task and send its report; return the warm memory last told to the worker.

    The slot's warm memory is its resident memory once the task's function
    is loaded (its imports included), before the task runs: what the slot
    keeps from task to task. The worker is told it when it moved by
    :data:`WARM_STEP_MB` or more, so it can leave it out of the task's
    allocation while the task runs; the report carries it for each task.
    """
    _, task_id, fn_hash, args_bytes = message
    monitor.release_free_memory()  # what the last task freed is not this one's warm memory
    monitor.reset_peak()
    cpu0 = time.process_time()
    started = time.time()
    t0 = time.perf_counter()
    warm = 0.0  # the function did not load: the task is charged with all the slot holds
    try:
        fn = functions[fn_hash]
        if isinstance(fn, bytes):
            fn = functions[fn_hash] = _unpickle(cloudpickle.loads, fn, "function")
        warm = monitor.own_rss_mb()
        if warm_told is None or abs(warm - warm_told) >= WARM_STEP_MB:
            conn.send_bytes(pickle.dumps(("warm", warm), protocol=pickle.HIGHEST_PROTOCOL))
            warm_told = warm
        value = _run(fn, args_bytes)
        status, error, tb = "ok", "", ""
        payload, compressed = dumps(value)
    except BaseException as exc:  # a task's exception never ends the slot
        status = "error"
        payload, error, tb = _error_payload(exc)
        compressed = False
    wall = time.perf_counter() - t0
    report = (task_id, status, payload, compressed, wall, time.process_time() - cpu0,
              monitor.peak_mb(), error, tb, started, os.getpid(), slot_index, warm)
    conn.send_bytes(pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL))
    return warm_told
