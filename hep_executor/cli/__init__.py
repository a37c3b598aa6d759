"""The ``hep-executor`` command line: run, status, worker, keygen, submit-workers, factory, report.

Also holds what only the command line needs: YAML configs mapped onto
dataclasses, the processor lookup, run folders, the run's outputs (coffea
file, ROOT histograms, report), plots and ``hep-executor status``. The top
layer: may import every other layer.
"""

from __future__ import annotations

from hep_executor._lazy import lazy_exports

_EXPORTS = {
    "load_config": ("hep_executor.cli._config", "load_config"),
    "fetch_status": ("hep_executor.cli._dashboard", "fetch_status"),
    "format_status": ("hep_executor.cli._dashboard", "format_status"),
    "plot_eft": ("hep_executor.cli._eft_plot", "plot_eft"),
    "report_main": ("hep_executor.cli._plots", "report_main"),
    "slot_names": ("hep_executor.cli._plots", "slot_names"),
    "write_plots": ("hep_executor.cli._plots", "write_plots"),
    "RunProgress": ("hep_executor.cli._progress", "RunProgress"),
    "root_title": ("hep_executor.cli._root_out", "root_title"),
    "write_root": ("hep_executor.cli._root_out", "write_root"),
    "run_config": ("hep_executor.cli._run", "run_config"),
    "link_latest": ("hep_executor.cli._rundir", "link_latest"),
    "new_run_dir": ("hep_executor.cli._rundir", "new_run_dir"),
    "run_log": ("hep_executor.cli._rundir", "run_log"),
    "plural": ("hep_executor.cli._summary", "plural"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
