"""Worker jobs for one manager: submitted together, optionally from a packed environment, cancelled together.

:class:`WorkerJobs` is what ``HepExecutor(batch=...)`` holds: it starts a
manager with no local workers, submits worker jobs that connect to it
(each running from ``environment_file`` unpacked once per node when one is
given, see :func:`~hep_executor.batch._env.write_runner`), and on
:meth:`WorkerJobs.close` cancels them and removes the key file it made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

from hep_executor.batch._base import WorkerSpec, get_batch_system

__all__ = ["WorkerJobs"]

log = logging.getLogger(__name__)


class WorkerJobs:
    """The worker jobs submitted for one manager, and the key file they read."""

    def __init__(self):
        self.batch = None
        self.ids: list[str] = []
        self.own_key: str | None = None

    def start(self, batch: str, count: int, *, host: str = "127.0.0.1", port=0, key_file: str | None = None,
              address_file: str | None = None, cores: int = 1, memory_mb: int = 2000,
              environment_file: str | None = None, setting: str = "environment_file",
              proxy: str | None = None, options: dict | None = None, extra_args: tuple = ()):
        """A :class:`~hep_executor.engine.Manager` with no local workers, and ``count`` jobs that join it.

        Parameters
        ----------
        batch : str
            ``local``, ``slurm`` or ``condor``.
        key_file : str, optional
            The key the jobs read (default: a new one in ``options["log_dir"]``,
            else ``./hep-executor-logs``, or the temporary folder for ``local``).
        environment_file : str, optional
            An archive from ``hep-executor pack-env`` the jobs run from; ``setting``
            names it in errors.
        proxy : str, optional
            The grid proxy the jobs read ``root://`` files with (default: found
            as coffea does); shipped beside the archive, or exported to the jobs.
        options : dict, optional
            Options of the batch system (``partition``, ``log_dir``, ...).
        extra_args : tuple of str
            Further worker arguments (modules to preload, affinity keys).
        """
        from hep_executor.engine import Manager

        options = dict(options or {})
        folder = options.get("log_dir") or ("hep-executor-logs" if batch != "local" else None)
        key_file = key_file or self._new_key_file(folder)
        host = "0.0.0.0" if host == "127.0.0.1" and batch == "condor" else host
        python = _environment_python(environment_file, setting, proxy)
        if proxy and not python:
            os.environ["X509_USER_PROXY"] = os.path.abspath(proxy)  # jobs submitted from here inherit it
        manager = Manager(local_workers=0, host=host, port=port, key_file=key_file, address_file=address_file)
        spec = WorkerSpec(manager=manager.address, key_file=os.path.abspath(key_file), cores=cores,
                          memory_mb=memory_mb, extra_args=tuple(extra_args), **({"python": python} if python else {}))
        try:
            self.batch = get_batch_system(batch, **options)
            self.ids = self.batch.submit(spec, count)
        except BaseException:
            manager.close()
            self.close()
            raise
        log.info("submitted %d %s worker job(s)%s: %s", len(self.ids), batch,
                 f" running from {environment_file}" if python else "", " ".join(self.ids))
        return manager

    def _new_key_file(self, folder: str | None) -> str:
        if folder is not None:
            os.makedirs(folder, exist_ok=True)  # jobs read it: a folder they see, as their logs are
        fd, self.own_key = tempfile.mkstemp(prefix="executor-", suffix=".key", dir=folder)
        os.close(fd)
        os.unlink(self.own_key)  # the manager writes a new key there
        return self.own_key

    def close(self) -> None:
        """Cancel the jobs; remove the key file made for them."""
        if self.batch is not None:
            if self.ids:
                self.batch.cancel(self.ids)
            self.batch.close()
        self.batch, self.ids = None, []
        if self.own_key is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.own_key)
            self.own_key = None


def _environment_python(archive: str | None, setting: str, proxy: str | None = None) -> str | None:
    """The jobs' interpreter: the runner of ``archive`` (unpacked once per node), or None for this one."""
    if archive is None:
        return None
    from hep_executor.batch._env import write_runner

    return str(write_runner(archive, proxy=proxy, setting=setting))
