"""The EFT plot of a run: one column per lepton category, the SM prediction against the
Wilson-coefficient point above, their ratio below, in the mplhep CMS-like style with the
luminosity of the config.

Categories ``2lss_4j``, ``2lss_5j``... are grouped by the part before the first
``_`` (the jet bins summed, and the panel says so). Drawn on the Agg canvas
without pyplot, so nothing global changes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["plot_eft"]

log = logging.getLogger(__name__)


def _groups(h) -> dict[str, list[str]]:
    """``{lepton category: [categories]}`` of ``h``'s ``category`` axis (one group if none)."""
    names = [ax.name for ax in h.axes]
    if "category" not in names:
        return {"all events": []}
    out: dict[str, list[str]] = defaultdict(list)
    for c in h.axes["category"]:
        out[str(c).split("_")[0]].append(str(c))
    return dict(out)


def _narrow(h, dataset: str | None):
    names = [ax.name for ax in h.axes]
    select = {}
    if dataset is not None and "dataset" in names:
        select["dataset"] = dataset
    if "systematic" in names:
        select["systematic"] = "nominal"
    return h[select] if select else h


def _draw_group(ax, rax, sm, bsm, point_label: str, title: str) -> None:
    import mplhep

    mplhep.histplot(sm, ax=ax, label="SM", color="black", yerr=False, linewidth=2)
    mplhep.histplot(bsm, ax=ax, label=point_label, color="tab:red", yerr=False, linewidth=2,
                    linestyle="--")
    ax.set_ylabel("Events / bin")
    ax.set_ylim(0, 1.45 * max(float(np.max(sm.values())), float(np.max(bsm.values())), 1e-9))
    ax.legend(title=title, loc="upper right", fontsize="small", title_fontsize="small")
    ax.set_xlabel("")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sm.values() > 0, bsm.values() / sm.values(), np.nan)
    edges = sm.axes[0].edges
    rax.stairs(ratio, edges, color="tab:red", linewidth=2, linestyle="--", baseline=None)
    rax.axhline(1.0, color="black", linewidth=1)
    finite = ratio[np.isfinite(ratio)]
    top = max(2.0, 1.1 * float(finite.max())) if finite.size else 2.0
    rax.set_ylim(0, top)
    rax.set_ylabel("EFT / SM")
    rax.set_xlabel(sm.axes[0].label or sm.axes[0].name)


def plot_eft(h, wc_point: dict, path: str | Path, *, dataset: str | None = None,
             lumi: float | None = None, title: str = "") -> str | None:
    """Plot ``h`` per lepton category at the SM point and at ``wc_point``; return the PNG path.

    Parameters
    ----------
    h : hist.Hist
        A histogram with a ``coefficient`` axis (see ``processors.eft``),
        narrowed to ``dataset`` and the nominal systematic where it has those
        axes; its last axis is the plotted variable.
    wc_point : dict
        ``{name: value}`` of the EFT point.
    path : str or Path
        The PNG to write.
    dataset : str, optional
        The dataset shown (written on the plot).
    lumi : float, optional
        Integrated luminosity (fb^-1) in the label.
    title : str
        A heading in place of the dataset name.

    Returns
    -------
    str or None
        The path written; None when ``processors.eft`` cannot be imported.
    """
    import matplotlib.style
    import mplhep
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    try:
        from processors import eft
    except ImportError:
        log.warning("no EFT plot: processors.eft cannot be imported")
        return None
    h = _narrow(h, dataset)
    variable = h.axes[-1].name
    groups = _groups(h)
    point_label = ", ".join(f"{k} = {v:g}" for k, v in wc_point.items())
    with matplotlib.style.context(mplhep.style.CMS):
        fig = Figure(figsize=(7.5 * len(groups), 9), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, len(groups), sharex="col", height_ratios=[3, 1], squeeze=False)
        for i, (group, cats) in enumerate(groups.items()):
            subs = [h[{"category": c}] for c in cats] if cats else [h]
            sm = sum(eft.evaluate(sub, None).project(variable) for sub in subs[1:]) + \
                eft.evaluate(subs[0], None).project(variable)
            bsm = sum(eft.evaluate(sub, wc_point).project(variable) for sub in subs[1:]) + \
                eft.evaluate(subs[0], wc_point).project(variable)
            summed = f"{group}, {len(cats)} jet bins summed" if len(cats) > 1 else (cats[0] if cats else group)
            _draw_group(axes[0, i], axes[1, i], sm, bsm, point_label, summed)
            mplhep.label.exp_label(exp="hep-executor", text="", data=False, lumi=lumi, com=13,
                                   ax=axes[0, i], fontsize=18)
        heading = title or (f"dataset {dataset}" if dataset else "all datasets")
        fig.suptitle(f"{heading}: SM vs {point_label}", fontsize=26)
        fig.savefig(path, dpi=100)
    return str(path)
