"""Worker processes on this machine, started with :mod:`subprocess`.

The manager starts its local workers through :class:`LocalProcesses` unless
it is handed another launcher (any object with ``submit``, ``exited``,
``forget`` and ``close``); :class:`hep_executor.batch._local.LocalBatch` is
the same launcher under the batch-system face. :class:`BackgroundStarts`
starts replacements on a thread of its own, so that a dispatch pass never
waits on a fork and exec (or a batch submission).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from hep_executor.engine._files import SANDBOX_ENV
from hep_executor.engine._spec import WorkerSpec

__all__ = ["BackgroundStarts", "LocalProcesses", "caller_pythonpath"]

log = logging.getLogger(__name__)


class LocalProcesses:
    """Start workers as child processes of this one.

    Parameters
    ----------
    env : dict, optional
        Extra environment variables for the workers.
    quiet : bool
        Send the workers' standard output to /dev/null (their standard
        error stays with ours, so their errors are seen).
    """

    def __init__(self, env: dict | None = None, quiet: bool = True):
        self.env = env or {}
        self.quiet = quiet
        # shipped files land here, not in the caller's working directory (the workers' own)
        self.sandbox: str | None = None
        self.procs: dict[str, subprocess.Popen] = {}

    def submit(self, spec: WorkerSpec, count: int = 1) -> list[str]:
        """Start ``count`` workers; return their pids as job ids.

        Workers run in this process's working directory, with its
        environment and with its ``sys.path`` (as ``PYTHONPATH``), so that
        whatever the caller can import (a processor next to its run
        script, a folder added to ``sys.path``) every slot can import.
        """
        if self.sandbox is None:
            self.sandbox = tempfile.mkdtemp(prefix="hep-sandbox-")
        env = {**os.environ, SANDBOX_ENV: self.sandbox, **self.env}
        env["PYTHONPATH"] = caller_pythonpath(env.get("PYTHONPATH"))
        ids = []
        for _ in range(count):
            proc = subprocess.Popen(spec.command(), env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL if self.quiet else None,
                                    cwd=os.getcwd(), process_group=0)  # Ctrl-C in a terminal goes to the manager alone
            self.procs[str(proc.pid)] = proc
            ids.append(str(proc.pid))
        return ids

    def cancel(self, job_ids: list[str]) -> None:
        """Stop the given workers: SIGTERM, then SIGKILL after 5 s."""
        for job in job_ids:
            proc = self.procs.get(job)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for job in job_ids:
            proc = self.procs.pop(job, None)
            if proc is None:
                continue
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def status(self, job_ids: list[str]) -> dict[str, str]:
        """Map each id to ``"running"`` or ``"done"``."""
        out = {}
        for job in job_ids:
            proc = self.procs.get(job)
            out[job] = "running" if proc is not None and proc.poll() is None else "done"
        return out

    def exited(self) -> list[str]:
        """Ids of workers that have ended (and are still tracked)."""
        return [job for job, proc in list(self.procs.items()) if proc.poll() is not None]

    def forget(self, job_id: str) -> None:
        """Stop tracking an ended worker."""
        self.procs.pop(job_id, None)

    def close(self) -> None:
        """Stop every worker still running; remove their sandbox."""
        self.cancel(list(self.procs))
        if self.sandbox is not None:
            shutil.rmtree(self.sandbox, ignore_errors=True)


class BackgroundStarts:
    """Start workers through a launcher, now or on a thread of its own; remember when each started.

    Parameters
    ----------
    launcher : LocalProcesses or any object with ``submit(spec, count)``
    """

    def __init__(self, launcher):
        self.launcher = launcher
        self.started: dict[str, float] = {}  # job id -> when it was started (monotonic)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hep-worker-starts")

    def start_now(self, spec: WorkerSpec, count: int) -> None:
        """Start ``count`` workers before returning (errors reach the caller)."""
        self._record(self.launcher.submit(spec, count))

    def start_later(self, spec: WorkerSpec, count: int) -> None:
        """Start ``count`` workers on the starting thread; an error there is logged."""
        self._pool.submit(self._start_logged, spec, count)

    def _start_logged(self, spec: WorkerSpec, count: int) -> None:
        try:
            self._record(self.launcher.submit(spec, count))
        except Exception:
            log.exception("could not start %d replacement worker(s)", count)

    def _record(self, jobs) -> None:
        now = time.monotonic()
        for job in jobs or ():
            self.started[job] = now

    def close(self) -> None:
        """Drop starts not begun; wait for the one under way (so that no worker starts after this)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def caller_pythonpath(existing: str | None = None) -> str:
    """``PYTHONPATH`` for a child that imports what this process imports.

    This package's own root comes first (a source tree need not be
    installed), then this process's ``sys.path`` in order, with the
    interpreter's own folders (standard library, site-packages) left out
    since the child finds them itself, then ``existing``.
    """
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    own = {os.path.realpath(p) for p in sysconfig.get_paths().values()}
    own.update(os.path.realpath(p) for p in _site_dirs())
    parts = [here]
    for entry in sys.path:
        path = os.path.abspath(entry or os.getcwd())
        if os.path.realpath(path) not in own and os.path.isdir(path) and path not in parts:
            parts.append(path)
    parts.extend(p for p in (existing or "").split(os.pathsep) if p and p not in parts)
    return os.pathsep.join(parts)


def _site_dirs() -> list[str]:
    import site

    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    user = getattr(site, "getusersitepackages", lambda: "")()
    dirs.extend([user] if user else [])
    dirs.extend(p for p in sys.path if p.endswith(("lib-dynload", ".zip")))
    return dirs
