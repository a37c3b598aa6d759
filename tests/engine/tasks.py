"""Task functions used by the integration tests (importable by workers)."""

from __future__ import annotations

import os
import time


def square(x):
    return x * x


def slow_square(x, delay=0.01):
    time.sleep(delay)
    return x * x


def fail(message):
    raise ValueError(message)


def die():
    os._exit(17)


def allocate(mb, hold=0.2):
    block = bytearray(int(mb * 2**20))
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold)
    return len(block)


def pid_of_worker():
    return os.getppid()


def pid_after(delay):
    time.sleep(delay)
    return os.getppid()


class HoldsALock(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        import threading

        self.lock = threading.Lock()


def fail_unpicklable(message):
    raise HoldsALock(message)


def random_bytes(data, size):
    """Return ``size`` random (incompressible) bytes at once; ``data`` is only carried."""
    return os.urandom(size) if len(data) >= 0 else b""


def mark_and_sleep(path, delay):
    """Append a line to ``path`` (one per start of this task), then sleep."""
    with open(path, "a") as fh:
        fh.write("start\n")
    time.sleep(delay)
    return os.getpid()


def kill_own_worker():
    """End the worker process this task runs under (not only its slot)."""
    import signal

    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(10)


def segfault():
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def child_allocates(mb, hold, pid_file=None):
    """Start a child process that holds ``mb`` MB for ``hold`` seconds, and wait for it."""
    import subprocess
    import sys

    code = (f"import time; b = bytearray({int(mb)} * 2**20)\n"
            f"for i in range(0, len(b), 4096): b[i] = 1\n"
            f"time.sleep({hold})")
    child = subprocess.Popen([sys.executable, "-c", code])
    if pid_file:
        with open(pid_file, "w") as fh:
            fh.write(str(child.pid))
    return child.wait()


def slow_first_time(marker, x, hold=120.0):
    """Square ``x``; the first call (the one that makes ``marker``) hangs for ``hold`` seconds."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return x * x
    os.close(fd)
    time.sleep(hold)
    return -1


def crash_second_time(marker, hold):
    """The first call (the one that makes ``marker``) returns "first" after ``hold`` s; a second dies."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        os._exit(3)
    os.close(fd)
    time.sleep(hold)
    return "first"
