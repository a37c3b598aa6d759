"""Task functions for the benchmarks.

They live in an importable module so that worker processes (ours, the
process pool's and dask's) load them by reference instead of unpickling
their code.
"""

from __future__ import annotations

import time


def noop(x):
    """Return ``x`` unchanged: a task that costs nothing but its dispatch."""
    return x


def sleep_task(seconds: float, x=None):
    """Sleep ``seconds`` on the worker, then return ``x``."""
    time.sleep(seconds)
    return x
