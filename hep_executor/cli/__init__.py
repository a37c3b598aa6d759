"""The ``hep-executor`` command line: run, status, worker, keygen, submit-workers, factory, report.

Also holds what only the command line needs: YAML configs mapped onto
dataclasses, the processor lookup, run folders, the run's outputs (coffea
file, ROOT histograms, report), plots and the live dashboard. The top
layer: may import every other layer.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv=None) -> int:
    """Run the ``hep-executor`` command (see :func:`hep_executor.cli.main.main`)."""
    from hep_executor.cli.main import main as _main

    return _main(argv)
