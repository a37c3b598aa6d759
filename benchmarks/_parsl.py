"""Parsl's HighThroughputExecutor on this machine, as the benchmarks' peer: one block of local workers.

:func:`htex` loads a DataFlowKernel with one ``HighThroughputExecutor``
(label ``htex``) whose single block (a ``LocalProvider``) runs
``workers`` single-core worker processes, waits until they are up, and
cleans it all up on exit. The workers import the benchmark modules by
reference: the repository root is put on their ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

__all__ = ["htex"]

_ROOT = str(Path(__file__).resolve().parent.parent)


def _config(workers: int, run_dir: str):
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    path = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    provider = LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1,
                             worker_init=f"export PYTHONPATH={path}")
    executor = HighThroughputExecutor(label="htex", address="127.0.0.1", loopback_address="127.0.0.1",
                                      cores_per_worker=1, max_workers_per_node=workers, provider=provider,
                                      worker_logdir_root=run_dir)
    return Config(executors=[executor], run_dir=run_dir, strategy="none", usage_tracking=0,
                  initialize_logging=False)


@contextlib.contextmanager
def htex(workers: int, warm=None, timeout: float = 120.0):
    """A loaded Parsl DataFlowKernel with ``workers`` HTEX workers up (each ran ``warm`` once, if given).

    Yields the seconds it took to start (the workers' start-up).
    """
    import parsl
    from parsl.app.app import python_app

    logging.getLogger("parsl").setLevel(logging.WARNING)  # parsl logs every step at DEBUG
    run_dir = tempfile.mkdtemp(prefix="parsl-bench-")
    t0 = time.perf_counter()
    dfk = parsl.load(_config(workers, run_dir))
    logging.getLogger("parsl").setLevel(logging.WARNING)
    try:
        app = python_app(warm or _pid, executors=["htex"])
        deadline = time.monotonic() + timeout
        pids = set()
        while len(pids) < workers and time.monotonic() < deadline:  # until every worker has run a task
            pids |= {f.result() for f in [app() for _ in range(4 * workers)]}
        yield time.perf_counter() - t0
    finally:
        dfk.cleanup()
        parsl.clear()


def _pid(_=None) -> int:
    import os as _os

    return _os.getpid()
