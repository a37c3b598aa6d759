"""Worker processes on this machine, started with :mod:`subprocess`.

The manager starts its local workers through :class:`LocalProcesses` unless
it is handed another launcher (any object with ``submit``, ``exited``,
``forget`` and ``close``); :class:`hep_executor.batch.local.LocalBatch` is
the same launcher under the batch-system face.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

from hep_executor.engine.spec import WorkerSpec

__all__ = ["LocalProcesses"]

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
        self.procs: dict[str, subprocess.Popen] = {}

    def submit(self, spec: WorkerSpec, count: int = 1) -> list[str]:
        """Start ``count`` workers; return their pids as job ids."""
        env = {**os.environ, **self.env}
        # the package must be importable by the child even when run from a source tree
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        ids = []
        for _ in range(count):
            proc = subprocess.Popen(spec.command(), env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL if self.quiet else None,
                                    process_group=0)  # a terminal's Ctrl-C goes to the manager alone
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
        return [job for job, proc in self.procs.items() if proc.poll() is not None]

    def forget(self, job_id: str) -> None:
        """Stop tracking an ended worker."""
        self.procs.pop(job_id, None)

    def close(self) -> None:
        """Stop every worker still running."""
        self.cancel(list(self.procs))
