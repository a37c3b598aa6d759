"""The run's histograms as a ROOT file a ROOT user opens without surprises: TH1D/TH2D with
titles and ROOT-style axis titles (``#it{p}_{T}``, not ``$p_T$``), one per combination
of the categorical axes in folders ``name/dataset/category/systematic``, the cutflow as a
labelled TH1D per dataset and the sum of weights.

A histogram with an EFT ``coefficient`` axis is written at the SM point (TH1D) and as
its coefficient structure (TH2D, x: the quadratic terms, labelled).
"""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["root_title", "write_root"]

log = logging.getLogger(__name__)

_GREEK = {"alpha", "beta", "gamma", "delta", "eta", "theta", "phi", "mu", "nu", "tau", "sigma", "chi",
          "Delta", "Phi", "pi", "rho", "omega", "Omega", "lambda", "ell"}


def _math_to_root(expr: str) -> str:
    r"""``p_T^{miss}`` -> ``#it{p}_{T}^{miss}``; ``\eta`` -> ``#eta``."""
    expr = re.sub(r"\\(mathrm|text|rm)\{([^}]*)\}", r"\2", expr)
    expr = re.sub(r"\\([A-Za-z]+)", lambda m: f"#{m.group(1)}" if m.group(1) in _GREEK else m.group(1), expr)
    expr = re.sub(r"([_^])([A-Za-z0-9#]+?)(?=[_^ ]|$)", r"\1{\2}", expr)
    return re.sub(r"(?<![#{A-Za-z])([A-Za-z])(?=[_^])", r"#it{\1}", expr)


def root_title(label: str) -> str:
    """A matplotlib (LaTeX ``$...$``) label in ROOT's TLatex: ``$p_T$ [GeV]`` -> ``#it{p}_{T} [GeV]``."""
    return re.sub(r"\$([^$]*)\$", lambda m: _math_to_root(m.group(1)), label or "")


def _axis(ax, name: str, labels: list[str] | None = None):
    from uproot.writing.identify import to_TAxis, to_THashList, to_TObjString

    edges = np.asarray(ax.edges, dtype=np.float64)
    widths = np.diff(edges)
    uniform = bool(np.allclose(widths, widths[0]))
    hashed = to_THashList([to_TObjString(s) for s in labels]) if labels else None
    return to_TAxis(name, root_title(getattr(ax, "label", "") or ax.name), len(widths), float(edges[0]),
                    float(edges[-1]), None if uniform else edges, fLabels=hashed)


def _with_flow(h, values: np.ndarray) -> np.ndarray:
    """``values`` (flow=True) padded with zeros where an axis has no under/overflow bin."""
    for i, ax in enumerate(h.axes):
        pad = (0 if ax.traits.underflow else 1, 0 if ax.traits.overflow else 1)
        if pad != (0, 0):
            widths = [(0, 0)] * values.ndim
            widths[i] = pad
            values = np.pad(values, widths)
    return values


def _moments(values: np.ndarray, centers: list[np.ndarray]) -> dict[str, float]:
    inner = values[tuple(slice(1, -1) for _ in centers)]
    grids = np.meshgrid(*centers, indexing="ij")
    out = {"sumw": float(inner.sum())}
    for name, g in zip("xy", grids):
        out[f"sumw{name}"] = float((inner * g).sum())
        out[f"sumw{name}2"] = float((inner * g * g).sum())
    if len(grids) == 2:
        out["sumwxy"] = float((inner * grids[0] * grids[1]).sum())
    return out


def to_root_hist(h, name: str, title: str, *, x_labels: list[str] | None = None, y_title: str = "Events"):
    """A 1D or 2D numeric ``hist.Hist`` as an uproot TH1D/TH2D with titles (axis titles in TLatex)."""
    from uproot.writing.identify import to_TH1x, to_TH2x

    values = _with_flow(h, np.asarray(h.values(flow=True), dtype=np.float64))
    variances = h.variances(flow=True)
    sumw2 = values if variances is None else _with_flow(h, np.asarray(variances, dtype=np.float64))
    m = _moments(values, [np.asarray(ax.centers, dtype=np.float64) for ax in h.axes])
    entries = float(values.sum())
    tsumw2 = float(sumw2[tuple(slice(1, -1) for _ in h.axes)].sum())
    if h.ndim == 1:
        x = _axis(h.axes[0], "xaxis", x_labels)
        y = _axis_plain("yaxis", y_title)
        return to_TH1x(name, title, values, entries, m["sumw"], tsumw2, m["sumwx"], m["sumwx2"],
                       sumw2, x, y, _axis_plain("zaxis", ""))
    x, y = _axis(h.axes[0], "xaxis", x_labels), _axis(h.axes[1], "yaxis")
    flat = np.ascontiguousarray(values.T).ravel()
    return to_TH2x(name, title, flat, entries, m["sumw"], tsumw2, m["sumwx"], m["sumwx2"], m["sumwy"],
                   m["sumwy2"], m["sumwxy"], np.ascontiguousarray(sumw2.T).ravel(), x, y,
                   _axis_plain("zaxis", y_title))


def _axis_plain(name: str, title: str):
    from uproot.writing.identify import to_TAxis

    return to_TAxis(name, title, 1, 0.0, 1.0)


def _labelled(name: str, title: str, counts: dict[str, float], y_title: str):
    """A TH1D of one bin per key, the bins labelled with the keys."""
    import hist

    h = hist.Hist(hist.axis.Regular(len(counts), 0, len(counts), name="x", label=""),
                  storage=hist.storage.Double())
    h.view()[...] = [float(v) for v in counts.values()]
    return to_root_hist(h, name, title, x_labels=[str(k) for k in counts], y_title=y_title)


def _iter_hists(output: Any, prefix: str = ""):
    import hist

    if isinstance(output, hist.Hist):
        yield prefix or "hist", output
    elif isinstance(output, dict):
        for key, value in output.items():
            yield from _iter_hists(value, f"{prefix}/{key}" if prefix else str(key))


def _eft():
    try:
        from processors import eft
    except ImportError:
        return None
    return eft


def _write_one(f, path: str, h) -> int:
    """Write ``h`` (one folder level per categorical axis); return the objects written."""
    import hist

    cats = [ax for ax in h.axes if isinstance(ax, (hist.axis.StrCategory, hist.axis.IntCategory))]
    numeric = [ax.name for ax in h.axes if ax not in cats]
    eft = _eft() if "coefficient" in numeric else None
    shown = [n for n in numeric if n != "coefficient"] if eft is not None else numeric
    if not 1 <= len(shown) <= 2 or (eft is None and len(numeric) > 2):
        log.info("not writing %s to ROOT: %d numeric axes (TH1/TH2 only)", path, len(numeric))
        return 0
    leaf = path.rsplit("/", 1)[-1]
    label = re.sub(r"\s*\[[^]]*\]$", "", root_title(h.axes[shown[-1]].label or leaf))  # the unit: on the axis
    written = 0
    for values in itertools.product(*[list(ax) for ax in cats]):
        sub = h[dict(zip([ax.name for ax in cats], values))] if cats else h
        folder = "/".join([path, *map(str, values)]).replace(" ", "_")
        where = ", ".join(map(str, values))
        title = f"{label} ({where})" if where else label
        if eft is not None:
            f[f"{folder}/{leaf}"] = to_root_hist(eft.evaluate(sub, None), leaf, f"{title}, SM")
            f[f"{folder}/{leaf}_coefficients"] = to_root_hist(
                sub.project("coefficient", *shown), f"{leaf}_coefficients",
                f"{title}: EFT quadratic-fit coefficients")
            written += 2
        else:
            f[f"{folder}/{leaf}"] = to_root_hist(sub, leaf, title)
            written += 1
    return written


def write_root(output: Any, path: str | Path) -> int:
    """Write ``output``'s histograms, cutflow and sum of weights to ``path``; return objects written."""
    import uproot

    written = 0
    with uproot.recreate(path) as f:
        for name, h in _iter_hists(output):
            written += _write_one(f, name, h)
        if isinstance(output, dict):
            written += _write_bookkeeping(f, output)
    return written


def _write_bookkeeping(f, output: dict) -> int:
    """``cutflow/<dataset>`` (labelled steps) and ``sumw`` (one bin per dataset)."""
    written = 0
    cutflow = output.get("cutflow")
    if isinstance(cutflow, dict):
        for dataset, steps in cutflow.items():
            if isinstance(steps, dict) and steps:
                f[f"cutflow/{dataset}"] = _labelled(str(dataset), f"Cutflow of {dataset}", steps, "Events")
                written += 1
    sumw = output.get("sumw")
    if isinstance(sumw, dict) and sumw:
        f["sumw"] = _labelled("sumw", "Sum of generator weights per dataset", sumw,
                              "#Sigma #it{w}_{gen}")
        written += 1
    return written
