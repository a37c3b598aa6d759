"""Writing a run's results: histograms (coffea pickle and ROOT), the JSON report, a plot."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["save_histograms", "save_report", "plot_eft"]

log = logging.getLogger(__name__)


def _hists(output: Any, prefix: str = ""):
    import hist

    if isinstance(output, hist.Hist):
        yield prefix or "hist", output
    elif isinstance(output, dict):
        for key, value in output.items():
            yield from _hists(value, f"{prefix}/{key}" if prefix else str(key))


def save_histograms(output: Any, out_dir: str | Path) -> dict[str, str]:
    """Write ``output`` as ``output.coffea`` (pickle) and its histograms to ``histograms.root``.

    Each histogram is written once per combination of its categorical
    axes (``name/cat1/cat2``), with up to three numeric axes each.
    """
    import hist
    import uproot
    from coffea.util import save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"coffea": str(out_dir / "output.coffea"), "root": str(out_dir / "histograms.root")}
    save(output, paths["coffea"])
    with uproot.recreate(paths["root"]) as f:
        for name, h in _hists(output):
            cats = [ax for ax in h.axes if isinstance(ax, (hist.axis.StrCategory, hist.axis.IntCategory))]
            if len(h.axes) - len(cats) > 3 or len(h.axes) == len(cats):
                log.info("not writing %s to ROOT: %d numeric axes", name, len(h.axes) - len(cats))
                continue
            for values in itertools.product(*[list(ax) for ax in cats]):
                sub = h[dict(zip([ax.name for ax in cats], values))] if cats else h
                key = "/".join([name, *map(str, values)]).replace(" ", "_")
                f[key] = sub
    return paths


def save_report(report: dict, path: str | Path) -> str:
    """Write the run report as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    return str(path)


def plot_eft(h, wc_point: dict, path: str | Path, *, dataset: str | None = None,
             lumi: float | None = None, title: str = "") -> str | None:
    """Plot ``h`` at the SM point and at ``wc_point`` (mplhep style); return the PNG path.

    ``h`` needs a ``coefficient`` axis (see ``processors.eft``); it is
    narrowed to ``dataset`` and the nominal systematic where it has those
    axes, and projected on its last axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    try:
        from processors import eft
    except ImportError:
        return None
    names = [ax.name for ax in h.axes]
    select = {}
    if dataset is not None and "dataset" in names:
        select["dataset"] = dataset
    if "systematic" in names:
        select["systematic"] = "nominal"
    h = h[select] if select else h
    plt.style.use(mplhep.style.CMS)
    fig, ax = plt.subplots(figsize=(8, 6))
    variable = h.axes[-1].name
    sm = eft.evaluate(h, None).project(variable)
    bsm = eft.evaluate(h, wc_point).project(variable)
    mplhep.histplot(sm, ax=ax, label="SM")
    mplhep.histplot(bsm, ax=ax, label=", ".join(f"{k} = {v:g}" for k, v in wc_point.items()))
    ax.set_ylabel("Events")
    ax.set_title(title, fontsize=16)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)
