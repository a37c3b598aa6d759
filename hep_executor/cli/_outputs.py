"""Writing a run's results: the output (coffea pickle, ROOT histograms) and the JSON report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["save_histograms", "save_report"]

log = logging.getLogger(__name__)


def save_histograms(output: Any, out_dir: str | Path) -> dict[str, str]:
    """Write ``output`` as ``output.coffea`` (pickle) and ``histograms.root`` (see
    :func:`hep_executor.cli._root_out.write_root`); return ``{kind: path}``."""
    from coffea.util import save

    from hep_executor.cli._root_out import write_root

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"coffea": str(out_dir / "output.coffea"), "root": str(out_dir / "histograms.root")}
    save(output, paths["coffea"])
    n = write_root(output, paths["root"])
    log.debug("wrote %d objects to %s", n, paths["root"])
    return paths


def save_report(report: dict, path: str | Path) -> str:
    """Write the run report as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    return str(path)
