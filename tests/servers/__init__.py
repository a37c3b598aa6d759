"""Start and stop real services (an XRootD server, a one-node Slurm) for tests.

Plain Python, usable from pytest fixtures and from the command line::

    python -m tests.servers.xrootd start DIR      # serve DIR until Ctrl-C
    python -m tests.servers.slurm start           # a one-node Slurm until Ctrl-C

Each helper raises :class:`ServiceUnavailable` (tests skip on it) only
when the service's programs are not installed, and
:class:`ServiceError` when they are installed but fail to start.
Every process a helper starts, its ``stop()`` stops.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

__all__ = [
    "CallHangs",
    "ServiceError",
    "ServiceUnavailable",
    "free_port",
    "is_root",
    "call_with_deadline",
    "missing_programs",
    "stop_process",
    "wait_until",
]


class Service:
    """What both services share: ``cleanup`` (stop, then remove a work folder made here)
    and use as a context manager. Subclasses define ``start``, ``stop``, ``workdir`` and
    ``_own_workdir``."""

    def cleanup(self) -> None:
        """:meth:`stop`, then remove the work folder if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


class ServiceUnavailable(RuntimeError):
    """The service's programs are not installed here (tests skip)."""


class ServiceError(RuntimeError):
    """The service is installed but did not start or stop as it should."""


class CallHangs(AssertionError):
    """A call did not return (or raise) within its deadline."""


def call_with_deadline(fn, deadline: float):
    """Return ``fn()`` run in a thread; raise :class:`CallHangs` if it is still busy after ``deadline`` s.

    A hang guard for tests, not a speed check: pick ``deadline`` several
    times the worst case the call's own timeouts allow. Exceptions of
    ``fn`` propagate.
    """
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(fn)
    try:
        future.exception(timeout=deadline)
    except concurrent.futures.TimeoutError:
        msg = f"{getattr(fn, '__name__', fn)} still running after {deadline} s: it hangs"
        raise CallHangs(msg) from None
    finally:
        pool.shutdown(wait=False)
    return future.result()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_root() -> bool:
    """Whether this process runs as root."""
    return os.geteuid() == 0


def missing_programs(*names: str) -> list[str]:
    """The programs among ``names`` found neither on PATH nor in /usr/sbin."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [n for n in names if shutil.which(n, path=path) is None]


def program(name: str) -> str:
    """Full path of ``name`` (PATH, then /usr/sbin, /sbin)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        msg = f"{name} is not installed"
        raise ServiceUnavailable(msg)
    return found


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    """Call ``condition()`` until it is true or ``timeout`` seconds pass; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM ``proc``, wait up to ``timeout`` s, then SIGKILL; always reaps it."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=timeout)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
