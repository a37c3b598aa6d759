"""Plots of a run report: chunk sizes, task model, memory allocation, worker timeline.

:func:`write_plots` turns the report dict of :func:`hep_executor.analysis.run`
into PNGs; :func:`report_main` is the ``hep-executor report RUN.json``
command. A plot whose data the report lacks (no ``sizing`` with a fixed
chunk size, no ``allocation_history`` without an allocator) is left out
and logged. Figures are drawn on the Agg canvas without pyplot, so
nothing global changes; the mplhep style is used when mplhep imports.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from hep_executor.errors import ConfigError

__all__ = ["report_main", "write_plots"]

logger = logging.getLogger(__name__)

KIND_COLORS = {"process": "tab:blue", "accumulate": "tab:orange", "preprocess": "tab:green"}
OTHER_COLOR = "tab:gray"
KIND_LABELS = {"process": "process (a chunk)", "accumulate": "merge", "preprocess": "preprocess (file metadata)"}
RESOURCE_LABELS = {"wall_time": "wall time [s]", "memory": "peak memory [MB]"}
TASK_FIELDS = {"wall_time": "wall", "memory": "peak_mb"}
HINT = "give the report.json that 'hep-executor run' wrote (in its output folder)"


def write_plots(report: dict, out_dir: str | Path, notes: dict[str, str] | None = None) -> dict[str, str]:
    """Write the PNGs of a run report.

    Parameters
    ----------
    report : dict
        The report of :func:`hep_executor.analysis.run` (``RunResult.report``
        or the ``RUN.json`` the CLI writes).
    out_dir : str or Path
        Folder for the PNGs; created when missing.
    notes : dict, optional
        Filled with ``{name: why}`` for each plot not written (e.g. the task
        model when every task had the same size: nothing to fit).

    Returns
    -------
    dict of str to str
        ``{name: path}`` of the plots written, among ``chunksize``,
        ``task_model``, ``allocation`` and ``timeline``. A plot whose data
        the report lacks is not written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    with _style():
        colors = _category_colors(report)
        for name, draw in _PLOTS.items():
            try:
                fig = draw(report, colors)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                logger.warning("%s.png not written: the report's data for it is malformed (%r)", name, exc)
                continue
            if fig is None or isinstance(fig, str):
                why = fig or "the report has no data for it"
                logger.info("%s.png not written: %s", name, why)
                if notes is not None:
                    notes[name] = why
                continue
            path = out / f"{name}.png"
            fig.savefig(path, dpi=90)
            written[name] = str(path)
            logger.debug("wrote %s", path)
    return written


def report_main(args) -> int:
    """Run ``hep-executor report RUN.json [--out DIR]``: write the plots and print their paths.

    Parameters
    ----------
    args : argparse.Namespace
        ``report_file`` (the run report JSON) and ``out`` (folder for the
        PNGs; None: the report's folder).

    Returns
    -------
    int
        0.

    Raises
    ------
    ConfigError
        The report file is missing, unreadable or not a run report.
    """
    path = Path(args.report_file)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        msg = f"run report {path} not found; {HINT}"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"run report {path} cannot be read as JSON ({exc}); {HINT}"
        raise ConfigError(msg) from None
    if not isinstance(report, dict) or not isinstance(report.get("tasks"), list):
        msg = f"{path} is not a run report (no 'tasks' list); {HINT}"
        raise ConfigError(msg)
    written = write_plots(report, args.out or path.parent)
    if not written:
        print(f"no plots written: {path} holds no task data")
    for name, png in written.items():
        print(f"{name}: {png}")
    return 0


# -- the plots ----------------------------------------------------------------
def _chunksize(report: dict, colors: dict[str, str]):
    history = report.get("chunk_history") or []
    if not history:
        return None
    series: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for seq, category, size in history:
        series[category].append((seq, size))
    n_process = sum(1 for t in report.get("tasks", []) if t.get("kind") == "process")
    last = max(max(seq for seq, _, _ in history), n_process)
    fig, ax = _figure()
    for category, points in series.items():
        xs = [p[0] for p in points] + [last]
        ys = [p[1] for p in points] + [points[-1][1]]
        ax.step(xs, ys, where="post", color=colors[category], label=category)
        ax.plot(xs[:-1], ys[:-1], "o", color=colors[category], markersize=4)
    sizes = [size for _, _, size in history]
    if max(sizes) > 4 * max(min(sizes), 1):  # log only where it helps: clean ticks otherwise
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1.1 * max(sizes))
    _sequence_axis(ax)
    ax.set_ylabel("chunk size [events]")
    ax.set_title("Predicted chunk size")
    ax.legend(fontsize="small")
    return fig


def _task_model(report: dict, colors: dict[str, str]):
    sizing = report.get("sizing") or {}
    tasks = [t for t in report.get("tasks", []) if t.get("kind") == "process" and "events" in t]
    if not sizing or not tasks:
        return None
    targets = (((report.get("config") or {}).get("chunking") or {}).get("targets")) or {}
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for t in tasks:
        by_cat[t["category"]].append(t)
    varied = {c for c, group in by_cat.items() if len({t["events"] for t in group}) > 1}
    if not varied:
        sizes = sorted({t["events"] for t in tasks})
        return (f"every process task of a category had one size ({', '.join(f'{s:,}' for s in sizes[:4])} "
                "events): no spread to fit a time or memory model to")
    x_max = 1.1 * max(max(t["events"] for t in tasks), 1)
    fig, axes = _figure(ncols=2, figsize=(13, 5.5))
    for ax, resource in zip(axes, ("wall_time", "memory"), strict=True):
        for category in sorted(set(by_cat) | set(sizing)):
            group = by_cat.get(category, [])
            ok = [t for t in group if t.get("status") == "ok"]
            bad = [t for t in group if t.get("status") != "ok"]
            field = TASK_FIELDS[resource]
            color = colors[category]
            ax.scatter([t["events"] for t in ok], [t[field] for t in ok], s=14, color=color, label=category)
            if bad:
                ax.scatter([t["events"] for t in bad], [t[field] for t in bad], marker="x", s=40,
                           color=color, label=f"{category} (failed)")
            fit = (sizing.get(category) or {}).get(resource) if category in varied else None
            if fit:
                a, b = fit["intercept"], fit["slope"]
                ax.plot([0, x_max], [a, a + b * x_max], "--", color=color, linewidth=1)
        target = targets.get(resource)
        if target is not None:
            ax.axhline(target, color="tab:red", linestyle=":", label=f"target {target:g}")
        ax.set_xlim(0, x_max)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("events per task")
        ax.set_ylabel(RESOURCE_LABELS[resource])
        ax.legend(fontsize="x-small")
    fixed = sorted(set(by_cat) - varied)
    axes[0].set_title("Process tasks and fitted model (dashed)"
                      + (f"; no fit for {', '.join(fixed)}: one size" if fixed else ""), loc="left")
    return fig


def _allocation(report: dict, colors: dict[str, str]):
    history = report.get("allocation_history") or []
    if not history:
        return None
    # A fifth field, when present, marks an exhausted task; else match one by its peak.
    exhausted_peaks = {(t.get("category"), round(float(t.get("peak_mb", 0)), 3))
                       for t in report.get("tasks", []) if t.get("status") == "exhausted"}
    flags = [bool(e[4]) if len(e) > 4 else (e[1], round(float(e[3]), 3)) in exhausted_peaks for e in history]
    from matplotlib.lines import Line2D

    fig, ax = _figure(figsize=(10, 5.5))
    for (seq, category, given, peak, *_), bad in zip(history, flags, strict=True):
        color = colors[category]
        if given > 0:  # 0: unlimited, nothing to draw
            ax.vlines(seq, min(peak, given), max(peak, given), color=color, alpha=0.4)
            ax.plot(seq, given, "_", color=color, markersize=14, markeredgewidth=2)
        ax.plot(seq, peak, "X" if bad else "o", color="black" if bad else color, markersize=10 if bad else 5)
    handles = [Line2D([], [], color=colors[c], linewidth=6, label=c) for c in sorted({e[1] for e in history})]
    handles += [Line2D([], [], marker="_", color="black", linestyle="none", markersize=14,
                       markeredgewidth=2, label="allocated"),
                Line2D([], [], marker="o", color="black", linestyle="none", label="observed peak")]
    if any(flags):
        handles.append(Line2D([], [], marker="X", color="black", linestyle="none", markersize=10,
                              label="exhausted"))
    ax.set_yscale("log")
    _sequence_axis(ax)
    ax.set_ylabel("memory [MB]")
    ax.set_title("Memory allocated and observed peak per task")
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def slot_names(tasks: list[dict]) -> dict[str, str]:
    """Readable names of worker slots: ``worker 1 / slot 0 (host)``, workers numbered by first task."""
    first: dict[str, float] = {}
    hosts: dict[str, str] = {}
    for t in tasks:
        worker = str(t["slot"]).rpartition("/")[0] or str(t["slot"])
        first[worker] = min(first.get(worker, t["started"]), t["started"])
        hosts.setdefault(worker, str(t.get("host") or ""))
    number = {w: i for i, w in enumerate(sorted(first, key=first.get), 1)}
    names = {}
    for t in tasks:
        worker, _, slot = str(t["slot"]).rpartition("/")
        worker = worker or str(t["slot"])
        host = f" ({hosts[worker]})" if hosts[worker] else ""
        names[t["slot"]] = f"worker {number[worker]} / slot {slot or 0}{host}"
    return names


def _timeline(report: dict, colors: dict[str, str]):  # noqa: ARG001 (colored by kind)
    tasks = [t for t in report.get("tasks", []) if t.get("slot") and t.get("started") is not None]
    if not tasks:
        return None
    from matplotlib.patches import Patch

    t0 = min(t["started"] for t in tasks)
    names = slot_names(tasks)
    slots = sorted(set(names.values()), key=lambda n: [int(x) if x.isdigit() else x for x in n.split()])
    fig, ax = _figure(figsize=(11, max(3.0, 1.4 + 0.5 * len(slots))))
    span = max(t["started"] + float(t.get("wall", 0)) for t in tasks) - t0
    kinds_seen: set[str] = set()
    for t in tasks:
        kind = t.get("kind") or str(t.get("category", "")).split(":")[0]
        kinds_seen.add(kind)
        bad = t.get("status") != "ok"  # a short merge stays visible: at least 0.5% of the span
        ax.barh(slots.index(names[t["slot"]]), max(float(t.get("wall", 0)), 0.005 * span), left=t["started"] - t0,
                height=0.7, color=KIND_COLORS.get(kind, OTHER_COLOR),
                edgecolor="tab:red" if bad else "black", linewidth=1.5 if bad else 0.3,
                hatch="///" if bad else None)
    handles = [Patch(color=KIND_COLORS.get(k, OTHER_COLOR), label=KIND_LABELS.get(k, k)) for k in sorted(kinds_seen)]
    if any(t.get("status") != "ok" for t in tasks):
        handles.append(Patch(facecolor="white", edgecolor="tab:red", hatch="///", label="failed"))
    ax.set_yticks(range(len(slots)), slots, fontsize="small")
    ax.set_ylim(len(slots) - 0.4, -0.6)  # worker 1 on top
    ax.set_xlabel("time since the first task started [s]")
    ax.set_title(f"Worker timeline: {len(tasks)} tasks on {len(slots)} slots")
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


_PLOTS = {"chunksize": _chunksize, "task_model": _task_model, "allocation": _allocation,
          "timeline": _timeline}


# -- helpers ------------------------------------------------------------------
def _category_colors(report: dict) -> dict[str, str]:
    """One color per category, the same in every plot (from the style's color cycle)."""
    import matplotlib

    cats: set[str] = set(report.get("sizing") or {})
    cats.update(h[1] for h in report.get("chunk_history") or [])
    cats.update(h[1] for h in report.get("allocation_history") or [])
    cats.update(t["category"] for t in report.get("tasks", []) if "category" in t)
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {c: cycle[i % len(cycle)] for i, c in enumerate(sorted(cats))}


def _figure(ncols: int = 1, figsize: tuple[float, float] = (9, 5.5)):
    """A Figure on the Agg canvas (no pyplot: no global state) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _sequence_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("task report (sequence)")


def _style() -> contextlib.AbstractContextManager[Any]:
    """The mplhep ROOT style with readable font sizes, or matplotlib's default."""
    import matplotlib.style

    try:
        import mplhep
    except ImportError:
        return contextlib.nullcontext()
    return matplotlib.style.context([mplhep.style.ROOT, {"font.size": 12, "axes.titlesize": 13}])
