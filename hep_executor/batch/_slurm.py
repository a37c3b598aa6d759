"""Worker jobs on Slurm: ``sbatch`` a job array, ``squeue`` its state, ``scancel`` it.

One :meth:`SlurmBatch.submit` call is one ``sbatch --parsable --array=0-(N-1)``
of a small generated shell script that ``exec``\\ s the worker command; the
job ids it returns are the array elements, ``"<jobid>_<index>"``. State
comes from ``squeue`` alone (no accounting daemon needed): a job that
``squeue`` no longer lists is done.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from hep_executor.errors import BatchError, ConfigError
from hep_executor.batch._base import BatchSystem, WorkerSpec

__all__ = ["SlurmBatch"]

log = logging.getLogger(__name__)

_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
            "SUSPENDED", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"}
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_COMMAND_TIMEOUT = 60.0


class SlurmBatch(BatchSystem):
    """Submit workers as Slurm job arrays.

    Parameters
    ----------
    partition, account : str, optional
        ``--partition`` and ``--account`` of the jobs.
    extra_sbatch : sequence of str
        Further ``sbatch`` options, e.g. ``("--qos=short", "--constraint=avx2")``.
    log_dir : str or Path
        Folder for the job scripts and the workers' output
        (``hep-worker-<jobid>_<index>.out``); created when needed.
        It must be visible from the compute nodes.
    request_tmp : bool
        Also ask for the worker's disk as node-local scratch
        (``--tmp``); off by default because nodes without a configured
        ``TmpDisk`` would never start such jobs.
    slurm_conf : str or Path, optional
        A ``slurm.conf`` for the client commands (sets ``SLURM_CONF``);
        default: the system's.
    job_name : str
        ``--job-name`` of the jobs.
    """

    name = "slurm"

    def __init__(self, partition: str | None = None, account: str | None = None,
                 extra_sbatch: tuple[str, ...] | list[str] = (),
                 log_dir: str | os.PathLike = "hep-executor-logs", request_tmp: bool = False,
                 slurm_conf: str | os.PathLike | None = None, job_name: str = "hep-worker"):
        extra = tuple(extra_sbatch)
        bad = [opt for opt in extra if not isinstance(opt, str) or not opt.startswith("-")]
        if bad:
            msg = f"extra_sbatch entries must be sbatch options starting with '-', not {bad!r}"
            raise ConfigError(msg)
        if not job_name or any(c.isspace() for c in job_name):
            msg = f"job_name must be a non-empty word, not {job_name!r}"
            raise ConfigError(msg)
        self.partition = partition
        self.account = account
        self.extra_sbatch = extra
        self.log_dir = Path(log_dir).absolute()
        self.request_tmp = request_tmp
        self.slurm_conf = str(Path(slurm_conf).absolute()) if slurm_conf else None
        self.job_name = job_name

    # ------------------------------------------------------------ the face
    def submit(self, spec: WorkerSpec, count: int = 1) -> list[str]:
        """Submit ``count`` workers as one job array; return ``["<id>_0", ...]``."""
        if count < 1:
            return []
        self.log_dir.mkdir(parents=True, exist_ok=True)
        script = self.log_dir / f"{self.job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.sh"
        script.write_text(self.job_script(spec))
        out = self._run(["sbatch", "--parsable", *self.sbatch_options(spec, count), str(script)])
        job = out.strip().splitlines()[-1].split(";")[0].strip() if out.strip() else ""
        if not job.isdigit():
            msg = f"sbatch gave no job id (output {out.strip()!r}); see {script}"
            raise BatchError(msg)
        ids = [f"{job}_{i}" for i in range(count)]
        log.info("submitted %d worker job(s) to Slurm as array %s", count, job)
        return ids

    def cancel(self, job_ids: list[str]) -> None:
        """``scancel`` the jobs; finished or unknown ids are ignored."""
        if job_ids:
            self._run(["scancel", *job_ids], check=False)

    def status(self, job_ids: list[str]) -> dict[str, str]:
        """Map each id to pending/running/done from ``squeue`` (not listed = done)."""
        if not job_ids:
            return {}
        result = self._run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i %T"],
                           check=False, full=True)
        if result.returncode != 0:
            if "invalid job id" in result.stderr.lower():
                return {job: "done" for job in job_ids}  # none of them is known any more
            msg = f"squeue failed (exit {result.returncode}): {result.stderr.strip()}"
            raise BatchError(msg)
        seen: dict[str, str] = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                seen[parts[0]] = parts[1].upper()
        return {job: _state(seen.get(job)) for job in job_ids}

    # ------------------------------------------------------------ what is sent
    def sbatch_options(self, spec: WorkerSpec, count: int) -> list[str]:
        """The ``sbatch`` options for ``count`` workers of ``spec``."""
        if spec.walltime and not _WALLTIME.match(spec.walltime):
            msg = f"walltime {spec.walltime!r} is not a Slurm time ([D-]HH:MM:SS, MM:SS or minutes)"
            raise ConfigError(msg)
        opts = [
            f"--job-name={self.job_name}",
            f"--array=0-{count - 1}",
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={spec.cores}",
            f"--mem={spec.memory_mb}",
            f"--output={self.log_dir / (self.job_name + '-%A_%a.out')}",
        ]
        if self.request_tmp:
            opts.append(f"--tmp={spec.disk_mb}")
        if spec.walltime:
            opts.append(f"--time={spec.walltime}")
        if self.partition:
            opts.append(f"--partition={self.partition}")
        if self.account:
            opts.append(f"--account={self.account}")
        return opts + list(self.extra_sbatch)

    def job_script(self, spec: WorkerSpec) -> str:
        """The shell script each array element runs."""
        return (
            "#!/bin/sh\n"
            "# hep_executor worker job\n"
            f"exec {spec.shell_command()}\n"
        )

    # ------------------------------------------------------------ internals
    def _run(self, cmd: list[str], *, check: bool = True, full: bool = False):
        exe = shutil.which(cmd[0])
        if exe is None:
            msg = f"{cmd[0]} not found on PATH: no Slurm client on this machine (install slurm-client)"
            raise BatchError(msg)
        env = dict(os.environ)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        try:
            result = subprocess.run([exe, *cmd[1:]], env=env, capture_output=True, text=True,
                                    timeout=_COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            msg = f"{cmd[0]} did not answer within {_COMMAND_TIMEOUT:g} s (is slurmctld up?)"
            raise BatchError(msg) from None
        if result.returncode != 0:
            if check:
                msg = f"{cmd[0]} failed (exit {result.returncode}): {result.stderr.strip()}"
                raise BatchError(msg)
            if not full:
                log.debug("%s exit %d: %s", cmd[0], result.returncode, result.stderr.strip())
        return result if full else result.stdout


def _state(slurm_state: str | None) -> str:
    if slurm_state is None:
        return "done"
    if slurm_state in _PENDING:
        return "pending"
    if slurm_state in _RUNNING:
        return "running"
    return "done"
