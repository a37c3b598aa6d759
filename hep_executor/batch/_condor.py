"""Worker jobs on HTCondor: a submit description, ``condor_submit``, ``condor_q``, ``condor_rm``.

:meth:`CondorBatch.submit_description` builds the description (with the
``htcondor`` Python bindings when importable, checked by their parser);
:meth:`CondorBatch.submit` writes it to the log folder and hands it to
``condor_submit``. Without a ``condor_submit`` on this machine there is
no schedd to talk to and submitting raises :class:`BatchError`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from hep_executor.errors import BatchError, ConfigError
from hep_executor.batch._base import BatchSystem, WorkerSpec

__all__ = ["CondorBatch", "condor_arguments"]

log = logging.getLogger(__name__)

# condor JobStatus codes -> our three states. Held (5) jobs will not run
# without a person releasing them, so for the caller they are over.
_STATES = {1: "pending", 2: "running", 3: "done", 4: "done", 5: "done", 6: "running", 7: "running"}
_COMMAND_TIMEOUT = 60.0
_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})$")


def condor_arguments(args: list[str]) -> str:
    """Quote ``args`` in HTCondor's "new" ``arguments`` syntax (double quotes, ' inside)."""
    quoted = []
    for arg in args:
        text = arg.replace('"', '""')
        if not text or any(c.isspace() or c == "'" for c in text):
            text = "'" + text.replace("'", "''") + "'"
        quoted.append(text)
    return '"' + " ".join(quoted) + '"'


class CondorBatch(BatchSystem):
    """Submit workers to an HTCondor schedd.

    Parameters
    ----------
    log_dir : str or Path
        Folder for the submit files and the jobs' output, error and event
        log; created when needed.
    extra_submit : dict
        Further submit commands (``{"+JobFlavour": '"longlunch"'}``,
        ``{"requirements": 'OpSysAndVer == "AlmaLinux9"'}``); they override
        the generated ones.
    transfer_key : bool
        Send the key file with the job (``transfer_input_files``) instead
        of expecting it on a shared file system.
    """

    name = "condor"

    def __init__(self, log_dir: str | os.PathLike = "hep-executor-logs",
                 extra_submit: dict | None = None, transfer_key: bool = True):
        extra = dict(extra_submit or {})
        bad = [k for k in extra if not isinstance(k, str) or not k or k.lower() == "queue"]
        if bad:
            msg = f"extra_submit keys must be submit commands other than 'queue', not {bad!r}"
            raise ConfigError(msg)
        self.log_dir = Path(log_dir).absolute()
        self.extra_submit = {k: str(v) for k, v in extra.items()}
        self.transfer_key = transfer_key

    # ------------------------------------------------------------ description
    def submit_commands(self, spec: WorkerSpec) -> dict[str, str]:
        """The submit commands (without ``queue``) for workers of ``spec``."""
        cmd = spec.command()
        commands = {
            "universe": "vanilla",
            "executable": cmd[0],
            "transfer_executable": "false",
            "arguments": "",
            "request_cpus": str(spec.cores),
            "request_memory": f"{spec.memory_mb}MB",
            "request_disk": f"{spec.disk_mb}MB",
            "output": str(self.log_dir / "hep-worker.$(ClusterId).$(ProcId).out"),
            "error": str(self.log_dir / "hep-worker.$(ClusterId).$(ProcId).err"),
            "log": str(self.log_dir / "hep-worker.$(ClusterId).log"),
            "getenv": "true",
        }
        args = cmd[1:]
        if spec.key_file and self.transfer_key:
            key = Path(spec.key_file).absolute()
            commands["should_transfer_files"] = "YES"
            commands["when_to_transfer_output"] = "ON_EXIT"
            commands["transfer_input_files"] = str(key)
            at = args.index("--key-file")
            args[at + 1] = key.name  # the job starts in its scratch folder, beside the key
        commands["arguments"] = condor_arguments(args)
        if spec.walltime:
            commands["allowed_execute_duration"] = str(_seconds(spec.walltime))
        commands.update(self.extra_submit)
        return commands

    def submit_description(self, spec: WorkerSpec, count: int = 1) -> str:
        """The submit description for ``count`` workers, ending with ``queue count``."""
        if count < 1:
            msg = f"count must be >= 1, not {count}"
            raise ConfigError(msg)
        commands = self.submit_commands(spec)
        htcondor = _bindings()
        if htcondor is not None:
            try:
                sub = htcondor.Submit(commands)
                sub.setQArgs(str(count))
            except Exception as exc:  # the bindings raise several kinds
                msg = f"HTCondor refused the submit description: {exc}"
                raise BatchError(msg) from exc
            text = str(sub)
            return text if text.endswith("\n") else text + "\n"
        lines = [f"{key} = {value}" for key, value in commands.items()]
        return "\n".join([*lines, f"queue {count}", ""])

    # ------------------------------------------------------------ the face
    def submit(self, spec: WorkerSpec, count: int = 1) -> list[str]:
        """``condor_submit`` ``count`` workers; return ``["<cluster>.<proc>", ...]``."""
        if count < 1:
            return []
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"hep-worker-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.sub"
        path.write_text(self.submit_description(spec, count))
        if shutil.which("condor_submit") is None:
            msg = (f"no HTCondor schedd is reachable from this machine (condor_submit not on PATH); "
                   f"the submit description is in {path}: run 'condor_submit {path}' on a submit node")
            raise BatchError(msg)
        out = self._run(["condor_submit", "-terse", str(path)])
        ids = parse_terse(out)
        if not ids:
            msg = f"condor_submit gave no job ids (output {out.strip()!r}); see {path}"
            raise BatchError(msg)
        log.info("submitted %d worker job(s) to HTCondor: %s", len(ids), out.strip())
        return ids

    def cancel(self, job_ids: list[str]) -> None:
        """``condor_rm`` the jobs; finished or unknown ids are ignored."""
        if job_ids:
            self._run(["condor_rm", *job_ids], check=False)

    def status(self, job_ids: list[str]) -> dict[str, str]:
        """Map each id to pending/running/done from ``condor_q`` (not listed = done)."""
        if not job_ids:
            return {}
        out = self._run(["condor_q", *job_ids, "-af:j", "JobStatus"])
        seen = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                seen[parts[0]] = _STATES.get(int(parts[1]), "pending")
        return {job: seen.get(job, "done") for job in job_ids}

    # ------------------------------------------------------------ internals
    def _run(self, cmd: list[str], *, check: bool = True) -> str:
        exe = shutil.which(cmd[0])
        if exe is None:
            msg = f"{cmd[0]} not found on PATH: no HTCondor schedd is reachable from this machine"
            raise BatchError(msg)
        try:
            result = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True,
                                    timeout=_COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            msg = f"{shlex.join(cmd)} did not answer within {_COMMAND_TIMEOUT:g} s"
            raise BatchError(msg) from None
        if result.returncode != 0:
            if check:
                msg = f"{cmd[0]} failed (exit {result.returncode}): {result.stderr.strip()}"
                raise BatchError(msg)
            log.debug("%s exit %d: %s", cmd[0], result.returncode, result.stderr.strip())
        return result.stdout


def _bindings():
    """The htcondor bindings module (``htcondor2`` in 25.x), or None."""
    try:
        import htcondor2 as htcondor
    except ImportError:
        try:
            import htcondor
        except ImportError:
            return None
    return htcondor


def parse_terse(out: str) -> list[str]:
    """``123.0 - 123.2`` lines from ``condor_submit -terse`` -> ``['123.0', '123.1', '123.2']``."""
    ids = []
    for line in out.splitlines():
        m = re.match(r"^\s*(\d+)\.(\d+)\s*-\s*(\d+)\.(\d+)\s*$", line)
        if m:
            cluster, first, last = int(m[1]), int(m[2]), int(m[4])
            ids += [f"{cluster}.{p}" for p in range(first, last + 1)]
    return ids


def _seconds(walltime: str) -> int:
    m = _WALLTIME.match(walltime)
    if not m:
        msg = f"walltime {walltime!r} is not [D-]HH:MM:SS"
        raise ConfigError(msg)
    days, hours, minutes, secs = (int(x or 0) for x in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs
