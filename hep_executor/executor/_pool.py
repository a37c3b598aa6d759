"""The workers an executor and all its clones share: :class:`WorkerPool`.

coffea's Runner clones executors with ``copy(**kw)``; every clone holds the
same pool, so the manager (local workers, batch jobs or a Dask client's
cluster) and the run's dashboard persist across Runner's metadata and
processing calls and across runs until the pool is closed.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from hep_executor.analysis import Dashboard, RunStatus

if TYPE_CHECKING:
    from hep_executor.executor._executor import HepExecutor

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)


class WorkerPool:
    """The manager and workers that an executor and all its clones share.

    Started on first use; closed by :meth:`close`.
    """

    def __init__(self):
        self.manager = None
        self.owned = False
        self.warned = False
        self.clusters: dict[str, list] = {}  # file -> cluster starts, read by preprocessing
        self.board: Dashboard | None = None  # the live dashboard of the run under way
        self.status: RunStatus | None = None  # what it serves (None: no dashboard)
        self.dashboard_url: str | None = None  # the last run's, kept after it stopped
        self.jobs = None  # a WorkerJobs when the executor has batch=
        self.rows = None  # the TaskRows of the Runner run under way (its metadata call began them)
        self.task_report: dict | None = None  # the last Runner run's task rows and totals

    def get(self, executor: HepExecutor):
        if executor.manager is not None:
            return executor.manager
        if self.manager is None:
            _log_environment(executor)
        if self.manager is None and executor.batch is not None:
            from hep_executor.batch import WorkerJobs

            self.jobs = WorkerJobs()
            self.manager = _start_batch_jobs(self.jobs, executor)
            self.owned = True
        if self.manager is None and executor.client is not None:
            from hep_executor.engine import DaskManager

            from hep_executor.analysis import WORKER_SETUP

            # affinity counts as many warm files per Dask worker as its process's open-file cache keeps
            self.manager = DaskManager(executor.client, worker_keys=WORKER_SETUP["worker_slot_keys"])
            self.owned = True  # closing it leaves the caller's client open
        if self.manager is None:
            from hep_executor.engine import Manager

            from hep_executor.analysis import WORKER_SETUP

            key = None
            if executor.password_file:
                from hep_executor.engine import read_password_file

                key = read_password_file(executor.password_file)
            proxy = {"X509_USER_PROXY": os.path.abspath(executor.x509_proxy)} if executor.x509_proxy else None
            self.manager = Manager(local_workers=executor.workers, host=executor.host, **WORKER_SETUP,
                                   port=executor.port, key=key, key_file=executor.key_file,
                                   address_file=executor.address_file, worker_env=proxy)
            self.owned = True
        return self.manager

    def start_dashboard(self, port: int | None, manager) -> None:
        """Serve the run's counts on a dashboard (``port`` None: none), unless one is up already."""
        if port is None or self.board is not None:
            return
        self.status = RunStatus(manager=manager)
        self.board = Dashboard(port=port)
        self.dashboard_url = self.board.url
        self.board.follow(self.status)

    def stop_dashboard(self, state: str) -> None:
        """The run ended (``state``: done, failed, interrupted): publish that and stop serving."""
        if self.board is not None:
            self.board.stop(self.status, state)
        self.board = self.status = None

    def close(self) -> None:
        self.stop_dashboard("done")
        if self.manager is not None and self.owned:
            self.manager.close()
        self.manager = None
        if self.jobs is not None:
            self.jobs.close()


def _start_batch_jobs(jobs, executor: HepExecutor):
    """A manager, and ``executor.workers`` jobs of ``executor.batch`` that join it (from ``environment_file``)."""
    from hep_executor.analysis import PRELOAD, WORKER_SETUP

    return jobs.start(executor.batch, executor.workers or 1, host=executor.host, port=executor.port,
                      key_file=executor.key_file, address_file=executor.address_file,
                      cores=executor.cores or 1, memory_mb=executor.memory or 2000,
                      environment_file=executor.environment_file, proxy=executor.x509_proxy,
                      options=executor.batch_options,
                      extra_args=("--preload", ",".join(PRELOAD),
                                  "--slot-keys", str(WORKER_SETUP["worker_slot_keys"])))


def _log_environment(executor: HepExecutor) -> None:
    """Say who runs from ``environment_file``: batch jobs do; other workers use their own environment."""
    if executor.environment_file is None or executor.batch is not None:
        return  # the jobs' own log line names it
    path = os.path.abspath(executor.environment_file)
    if executor.manager is None and executor.client is None:
        log.info("environment_file %s: local workers run in this process's environment (its sys.path and "
                 "working directory); jobs of batch=... or of 'hep-executor submit-workers --env %s' run "
                 "from the archive", path, path)
    else:
        log.info("environment_file %s: the workers of the given manager or client were started elsewhere; "
                 "start them from the archive with 'hep-executor submit-workers --env %s'", path, path)
