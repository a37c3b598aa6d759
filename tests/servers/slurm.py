"""A real one-node Slurm cluster on this machine for tests (Debian slurmctld, slurmd, munge).

Everything lives in one temporary folder: a munge daemon with its own key
and socket (so a system munge is neither needed nor disturbed), a
generated ``slurm.conf`` (free ports, no accounting, ``proctrack/linuxproc``,
``task/none``), and ``slurmctld`` and ``slurmd -N localhost`` run in the
foreground as children of this process. Client commands find the cluster
through ``SLURM_CONF`` (see :attr:`SlurmCluster.client_env`).

The daemons need root: ``slurmd`` starts jobs as their submitting user.

Command line::

    python -m tests.servers.slurm start     # prints the SLURM_CONF to export; Ctrl-C stops
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import psutil

from tests.servers import (
    Service,
    ServiceError,
    ServiceUnavailable,
    free_port,
    is_root,
    missing_programs,
    program,
    stop_process,
    wait_until,
)

__all__ = ["SlurmCluster", "available"]

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
MUNGE_USER = "munge"


def available() -> str | None:
    """None when a one-node Slurm can run here, else the reason it cannot."""
    missing = missing_programs(*PROGRAMS)
    if missing:
        return (f"{', '.join(missing)} not installed "
                "(Debian packages slurmctld, slurmd, slurm-client, munge)")
    if not is_root():
        return "a one-node Slurm needs root here (slurmd starts jobs as their user)"
    try:
        pwd.getpwnam(MUNGE_USER)
    except KeyError:
        return f"there is no {MUNGE_USER!r} user to run munged as"
    return None


class SlurmCluster(Service):
    """munged + slurmctld + slurmd for one node called ``localhost``.

    Parameters
    ----------
    workdir : str or Path, optional
        Folder for config, state, spool and logs (default: a new
        temporary folder, removed by :meth:`cleanup`).
    cpus : int, optional
        CPUs of the node (default: this machine's).
    memory_mb : int, optional
        ``RealMemory`` of the node (default: 80% of this machine's).
    """

    def __init__(self, workdir: str | os.PathLike | None = None, cpus: int | None = None,
                 memory_mb: int | None = None):
        reason = available()
        if reason:
            raise ServiceUnavailable(reason)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="hepx-slurm-"))
        self.workdir.chmod(0o755)  # munged (its own user) needs to reach its socket folder
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb or int(psutil.virtual_memory().total / 2**20 * 0.8)
        self.conf_path = self.workdir / "slurm.conf"
        self.munge_dir = self.workdir / "munge"
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def client_env(self) -> dict[str, str]:
        """Environment variables that point Slurm clients at this cluster."""
        return {"SLURM_CONF": str(self.conf_path)}

    @property
    def env(self) -> dict[str, str]:
        """This process's environment plus :attr:`client_env`."""
        return {**os.environ, **self.client_env}

    def run(self, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run a Slurm client command (``sinfo``, ``squeue``, ...) against this cluster."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              check=check, timeout=timeout)

    def job_ids(self) -> list[str]:
        """Ids of the jobs in ``squeue`` (pending, running, completing)."""
        out = self.run("squeue", "-h", "-r", "-o", "%i").stdout
        return out.split()

    def node_state(self) -> str:
        """The node's state as ``sinfo`` shows it (``idle``, ``mixed``, ...), or '' when unknown."""
        result = self.run("sinfo", "-h", "-o", "%T", check=False, timeout=10)
        return result.stdout.strip() if result.returncode == 0 else ""

    # ------------------------------------------------------------ life cycle
    def start(self, timeout: float = 20.0, attempts: int = 3) -> SlurmCluster:
        """Start munged, slurmctld and slurmd; wait until the node is idle."""
        # daemons and jobs go even if the caller forgets stop() (at exit at the latest)
        weakref.finalize(self, _stop_daemons, self.processes, str(self.workdir))
        self._start_munge()
        for attempt in range(attempts):
            self._write_conf()
            self._spawn("slurmctld", [program("slurmctld"), "-D", "-f", str(self.conf_path)])
            self._spawn("slurmd", [program("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf_path)])
            if wait_until(self._ready, timeout, interval=0.1):
                return self
            tail = self.log_tail()
            for name in ("slurmd", "slurmctld"):
                stop_process(self.processes.pop(name, None))
            if "address already in use" not in tail.lower() or attempt == attempts - 1:
                self.stop()
                msg = f"slurm did not come up within {timeout:g} s (node state {self.node_state()!r}):\n{tail}"
                raise ServiceError(msg)
        raise AssertionError("unreachable")  # pragma: no cover

    def cancel_all(self, timeout: float = 15.0) -> bool:
        """Cancel every job and wait until ``squeue`` is empty; return whether it is."""
        if "slurmctld" not in self.processes:
            return True
        ids = self.job_ids()
        if ids:
            self.run("scancel", *ids, check=False)
        return wait_until(lambda: not self.job_ids(), timeout, interval=0.2)

    def stop(self) -> None:
        """Cancel all jobs, stop the daemons, and kill any job process left behind."""
        with contextlib.suppress(Exception):
            self.cancel_all()
        _stop_daemons(self.processes, str(self.workdir))

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of each daemon's output."""
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            path = self.workdir / f"{name}.out"
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------ internals
    def _ready(self) -> bool:
        if any(p.poll() is not None for p in self.processes.values()):
            return True  # a daemon died: stop waiting, start() reports it
        return self.node_state() == "idle"

    def _spawn(self, name: str, cmd: list[str], **popen) -> None:
        out = open(self.workdir / f"{name}.out", "ab")  # noqa: SIM115 (kept by the child)
        try:
            env = {**os.environ, **self.client_env}
            self.processes[name] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=env, start_new_session=True, **popen)
        finally:
            out.close()

    def _start_munge(self) -> None:
        munge = pwd.getpwnam(MUNGE_USER)
        self.munge_dir.mkdir(mode=0o755, exist_ok=True)
        key = self.munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        for path in (self.munge_dir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        socket_path = self.munge_dir / "munge.socket"
        self._spawn("munged", [
            program("munged"), "--foreground",
            f"--socket={socket_path}", f"--key-file={key}",
            f"--log-file={self.munge_dir / 'munged.log'}",
            f"--pid-file={self.munge_dir / 'munged.pid'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
        ], user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
        wait_until(lambda: socket_path.exists() or self.processes["munged"].poll() is not None, 10)
        if not socket_path.exists():
            tail = self.log_tail()
            self.stop()
            msg = f"munged did not start:\n{tail}"
            raise ServiceError(msg)

    def _write_conf(self) -> None:
        for sub in ("state", "spool"):
            (self.workdir / sub).mkdir(exist_ok=True)
        ctld_port, d_port = free_port(), free_port()
        while d_port == ctld_port:
            d_port = free_port()
        w = self.workdir
        self.conf_path.write_text(f"""\
ClusterName=hepxtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_dir / 'munge.socket'}
CredType=cred/munge
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={w / 'state'}
SlurmdSpoolDir={w / 'spool'}
SlurmctldPidFile={w / 'slurmctld.pid'}
SlurmdPidFile={w / 'slurmd.pid'}
SlurmctldLogFile={w / 'slurmctld.log'}
SlurmdLogFile={w / 'slurmd.log'}
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
InactiveLimit=0
MinJobAge=10
KillWait=2
NodeName=localhost CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")


def _stop_daemons(processes: dict[str, subprocess.Popen], workdir: str) -> None:
    """Stop the daemons (slurmd first, munged last), then any job process left behind."""
    for name in ("slurmd", "slurmctld", "munged"):
        stop_process(processes.pop(name, None))
    _kill_leftovers(workdir)


def _kill_leftovers(workdir: str) -> None:
    """Kill slurmstepd processes forked by the slurmd of ``workdir``, and their children.

    slurmd clears the environment of the slurmstepd it forks, but the
    working folder (the cluster's ``workdir``) is inherited.
    """
    doomed = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "slurmstepd":
            continue
        with contextlib.suppress(psutil.Error):
            if proc.cwd() == workdir:
                doomed += [proc, *proc.children(recursive=True)]
    for proc in doomed:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(doomed, timeout=5)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.servers.slurm start``: run a one-node Slurm until interrupted."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["start"]:
        print("usage: python -m tests.servers.slurm start", file=sys.stderr)
        return 2
    cluster = SlurmCluster()
    try:
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf_path}   # Ctrl-C stops the cluster")
        while all(p.poll() is None for p in cluster.processes.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
