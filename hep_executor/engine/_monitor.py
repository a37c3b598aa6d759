"""Measuring tasks and watching their memory on a worker.

A slot process calls :func:`reset_peak` before a task and :func:`peak_mb`
after it: on Linux, writing ``5`` to ``/proc/self/clear_refs`` resets the
kernel's peak-RSS mark, so the peak read afterwards is that task's alone,
not the process lifetime's. Where the reset is not allowed, the peak is
the process's so far (an upper bound).

The worker watches each busy slot's resident memory with
:func:`rss_mb` and stops a slot whose task goes over its allocation.
"""

from __future__ import annotations

import os
import resource
import sys

__all__ = ["PEAKS_PER_TASK", "descendants", "own_rss_mb", "peak_mb", "release_free_memory", "reset_peak",
           "rss_mb", "set_parent_death_signal", "total_memory_mb"]

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def _can_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


_CAN_RESET = sys.platform.startswith("linux") and _can_reset()
#: whether a task's peak is its own (the kernel's mark reset before it) or its slot's lifetime peak so far
PEAKS_PER_TASK = _CAN_RESET


def reset_peak() -> None:
    """Reset this process's peak-RSS mark (Linux), so the next peak is the next task's."""
    if _CAN_RESET:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")


def peak_mb() -> float:
    """Peak resident memory of this process since the last :func:`reset_peak`, in MB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _parents() -> dict[int, int]:
    """Every process's parent pid, from one read of /proc (empty where there is no /proc)."""
    out = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
            out[int(name)] = int(data[data.rindex(b")") + 2:].split(None, 2)[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def descendants(roots) -> dict[int, list[int]]:
    """The pids of each root's child processes, their children, and so on (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    out = {}
    for root in roots:
        found, stack = [], list(children.get(root, ()))
        while stack:
            pid = stack.pop()
            found.append(pid)
            stack.extend(children.get(pid, ()))
        out[root] = found
    return out


def total_memory_mb() -> int:
    """This machine's memory in MB (0 if it cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().total / 2**20)
    except Exception:
        return 0


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim(0)``; about 1 µs when none).

    The C allocator keeps memory a task freed, so without this a slot's
    resident memory after a big task holds that task's garbage, and the
    next task's own memory is measured against it.
    """
    if _TRIM is not None:
        _TRIM(0)


def own_rss_mb() -> float:
    """This process's resident memory now, in MB."""
    return rss_mb(os.getpid())


def rss_mb(pid: int) -> float:
    """Current resident memory of process ``pid`` in MB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        try:
            import psutil

            return psutil.Process(pid).memory_info().rss / 2**20
        except Exception:
            return 0.0


def is_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, SIGTSTP, a terminal read in the background, a tracer)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"T", b"t")


def set_parent_death_signal(sig: int = 9) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
