"""Work Queue's wait_retrieve_many benchmark, on the Manager.

Run from the repository root::

    python -m benchmarks.wait_retrieve_many            # full sweep, 3 repetitions
    python -m benchmarks.wait_retrieve_many --quick    # smaller scale, 1 repetition

The synthetic benchmark published with Work Queue's wait_retrieve_many
mode. Four parameters: max tasks ``N``, concurrent tasks ``W`` (one
worker each), task time ``T`` (a sleep on the worker) and post-process
time ``P`` (a ``time.sleep`` in the caller for every result ``wait``
returns). Base point: 100 tasks, 5 workers, 1 s tasks, 1 s
post-processing; each parameter is swept in turn around it (tasks
25/50/100/200, workers 1/2/5/10, task and post-process time x0.25 to
x4). ``--scale`` multiplies both times (default 0.02: 20 ms tasks) so the
sweep takes minutes. The caller loop is the same in every mode::

    for i in range(N):
        m.submit(sleep_task, T, i)
    while not m.empty():
        for r in m.wait(timeout=...):
            time.sleep(P)
            r.value

Workers are started once per worker count and mode, and have joined and
run a warm-up task each, before the clock starts; the total time runs from the first submit to the end of the
last post-processing. Modes:

- ``plain``: ``Manager(wait_retrieve_many=False)``;
- ``many``: ``Manager(wait_retrieve_many=True)``;
- ``one`` (reference, ``--modes`` to drop it): Work Queue's default
  retrieve-one ``wait``, which returns each result as soon as it is
  received and dispatches waiting tasks only when no result is pending.
  It is emulated by :class:`RetrieveOneManager` over the Manager's own
  dispatch steps, so the three modes differ in nothing but ``wait``.

The ideal time: the i-th result to finish cannot arrive before
``a_i = ceil(i / W) * T`` (workers fed at once, W tasks at a time), and
the caller post-processes results one after another, so the post-processing
of results i..N (``(N - i + 1) * P``) cannot start before ``a_i``::

    ideal = max over i = 1..N of ( ceil(i / W) * T + (N - i + 1) * P )

``i = 1`` gives the post-processing bound ``T + N * P``; ``i = N`` the
worker bound ``ceil(N / W) * T + P``. It is reached only by a manager
that keeps dispatching while the caller post-processes.

Targets: ``many`` is never slower than ``plain`` beyond a tolerance
(``--tolerance``, 5%), and at least 20% faster where tasks are long
relative to post-processing: points with ``1/3 <= T / (W * P) <= 3``,
a task lasting at least a third of the post-processing of one round of W
results (there, Work Queue's retrieve-one loop idles the workers for the
post-processing of each round, and a loop that refills them first saves
``min(T, W * P) / (T + W * P)``, at least 25%).

By default the Manager's prefetch (queueing extra work on workers when
tasks take under 50 ms) is switched off: at the published, unscaled times
it never applies, and at a small ``--scale`` it would hide the effect
being measured. ``--prefetch`` turns it on.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make ``benchmarks._tasks`` importable as such
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hep_executor import Manager
from hep_executor.errors import BatchError, ConfigError, TaskError

from benchmarks._stats import RESULTS_DIR, median, print_table, quiet_logging, write_json
from benchmarks._tasks import sleep_task

__all__ = ["BASE", "MODES", "Point", "RetrieveOneManager", "ideal_time", "main", "run_points",
           "sweep_points"]

log = logging.getLogger(__name__)

MODES = ("plain", "many", "one")
FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
GAIN_TARGET = 0.20
LONG_TASKS = (1 / 3, 3.0)  # T / (W * P) range where the gain target applies


@dataclass(frozen=True)
class Point:
    """One benchmark configuration (times in seconds, already scaled)."""

    tasks: int
    workers: int
    task_s: float
    post_s: float

    def __post_init__(self):
        if self.tasks < 1 or self.workers < 1 or self.task_s < 0 or self.post_s < 0:
            msg = f"a benchmark point needs tasks, workers >= 1 and times >= 0 (got {self})"
            raise ConfigError(msg)

    @property
    def long_tasks(self) -> bool:
        """Whether the gain target applies here (see the module docstring)."""
        if self.post_s == 0:
            return False
        ratio = self.task_s / (self.workers * self.post_s)
        return LONG_TASKS[0] - 1e-9 <= ratio <= LONG_TASKS[1] + 1e-9


def base_point(scale: float) -> Point:
    """The published base point (100 tasks, 5 workers, 1 s, 1 s), times multiplied by ``scale``."""
    return Point(100, 5, 1.0 * scale, 1.0 * scale)


BASE = base_point(1.0)


def sweep_points(scale: float, quick: bool = False) -> dict[str, list[tuple[float, Point]]]:
    """The four sweeps: ``{name: [(x value, point), ...]}`` around the base point.

    ``quick`` keeps three values per sweep (x0.25, x1, x4; 25, 100, 200 tasks; 1, 5, 10 workers).
    """
    base = base_point(scale)
    tasks = (25, 100, 200) if quick else (25, 50, 100, 200)
    workers = (1, 5, 10) if quick else (1, 2, 5, 10)
    factors = (0.25, 1.0, 4.0) if quick else FACTORS
    return {
        "tasks": [(n, replace(base, tasks=n)) for n in tasks],
        "workers": [(w, replace(base, workers=w)) for w in workers],
        "task time": [(f * base.task_s, replace(base, task_s=f * base.task_s)) for f in factors],
        "post-process time": [(f * base.post_s, replace(base, post_s=f * base.post_s)) for f in factors],
    }


def ideal_time(p: Point) -> float:
    """The makespan bound of the module docstring: max over i of ceil(i/W)*T + (N-i+1)*P."""
    return max(math.ceil(i / p.workers) * p.task_s + (p.tasks - i + 1) * p.post_s
               for i in range(1, p.tasks + 1))


class RetrieveOneManager(Manager):
    """The Manager with Work Queue's default (retrieve-one) ``wait``: a reference, not a product.

    Each call returns one result as soon as one is received; waiting tasks
    are dispatched only in a pass that has no result to return. Built on
    the Manager's private dispatch steps, so that it differs from the
    other modes in ``wait`` alone.
    """

    def wait(self, timeout: float | None = None) -> list:
        """Return one finished task, or none at the timeout or when nothing is left."""
        self._check_open()
        deadline = float("inf") if timeout is None else time.monotonic() + timeout
        while True:
            if self._done:
                return [self._done.popleft()]
            if self._process_worker_messages(limit=1):
                continue
            self._dispatch_waiting_tasks()
            self._look_after_workers()
            if self.table.empty():
                return []
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self.endpoint.poll(min(remaining, 0.2))


def _drain(m: Manager, expected: int, post_s: float, timeout: float) -> None:
    got = 0
    while not m.empty():
        for r in m.wait(timeout=timeout):
            if post_s:
                time.sleep(post_s)
            r.value  # noqa: B018 (deserialize, as a caller would)
            got += 1
    if got != expected:
        msg = f"the manager returned {got} results for {expected} tasks"
        raise TaskError(msg)


def run_points(points: list[Point], mode: str, reps: int, prefetch: bool) -> dict[Point, list[float]]:
    """Total times of ``reps`` runs of each point in ``mode``; one Manager per worker count.

    Before a point is timed, every worker runs one warm-up task of its task time.
    """
    cls = RetrieveOneManager if mode == "one" else Manager
    out: dict[Point, list[float]] = {}
    for workers in dict.fromkeys(p.workers for p in points):
        with cls(local_workers=workers, wait_retrieve_many=mode == "many", prefetch=prefetch) as m:
            if m.wait_for_workers(workers, timeout=60) < workers:
                msg = (f"only {len(m.workers())} of {workers} local workers joined within 60 s; "
                       "see their errors above")
                raise BatchError(msg)
            for p in (p for p in points if p.workers == workers):
                timeout = max(1.0, 10 * p.task_s)
                for i in range(workers):
                    m.submit(sleep_task, p.task_s, i)
                _drain(m, workers, 0.0, timeout)
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    for i in range(p.tasks):
                        m.submit(sleep_task, p.task_s, i)
                    _drain(m, p.tasks, p.post_s, timeout)
                    times.append(time.perf_counter() - t0)
                out[p] = times
                log.info("%s %s: %s", p, mode, ", ".join(f"{t:.3f}" for t in times))
    return out


def _gain(faster: float, slower: float) -> float:
    return 1.0 - faster / slower if slower > 0 else float("nan")


def _plot(sweeps, measured, modes, path: Path, scale: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    units = {"tasks": "max tasks", "workers": "concurrent tasks (workers)",
             "task time": "task time [s]", "post-process time": "post-process time [s]"}
    styles = {"plain": ("o-", "wait_retrieve_many=False"), "many": ("s-", "wait_retrieve_many=True"),
              "one": ("^--", "retrieve-one (Work Queue default)")}
    for ax, (name, points) in zip(axes.flat, sweeps.items()):
        xs = [x for x, _ in points]
        for mode in modes:
            style, label = styles[mode]
            ax.plot(xs, [measured[(p, mode)]["median"] for _, p in points], style, label=label)
        ax.plot(xs, [ideal_time(p) for _, p in points], "k:", label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(units[name])
        ax.set_ylabel("total time [s]")
        ax.set_title(f"sweep: {name}")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"wait_retrieve_many benchmark (times x{scale:g} of the published ones)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wait_retrieve_many",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.02, help="multiply task and post times (0.02)")
    parser.add_argument("--reps", type=int, default=3, help="runs per point and mode; medians (3)")
    parser.add_argument("--quick", action="store_true",
                        help="scale 0.01, 1 repetition, three values per sweep")
    parser.add_argument("--modes", default="plain,many,one",
                        help="comma-separated, of plain, many, one (default: all three)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="'never slower' allows many up to this fraction slower than plain (0.05)")
    parser.add_argument("--prefetch", action="store_true", help="leave the Manager's prefetch on")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder for wait_retrieve_many.json and .png")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.reps = 0.01, 1
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes) or not {"plain", "many"} <= set(args.modes):
        parser.error(f"--modes must name plain and many, and may add one (got {args.modes!r})")
    if args.scale <= 0 or args.reps < 1:
        parser.error("--scale must be > 0 and --reps >= 1")
    return args


def _print_sweeps(sweeps: dict, measured: dict, modes: list, reps: int) -> None:
    for name, points in sweeps.items():
        rows = []
        for x, p in points:
            t = {mode: measured[(p, mode)]["median"] for mode in modes}
            row = [f"{x:g}", ideal_time(p)] + [t[mode] for mode in modes]
            row += [f"{100 * _gain(t['many'], t['plain']):+.1f}%"]
            if "one" in modes:
                row += [f"{100 * _gain(t['many'], t['one']):+.1f}%"]
            row += [f"{p.task_s / (p.workers * p.post_s):.2g}" + (" *" if p.long_tasks else "")]
            rows.append(row)
        columns = [name, "ideal s"] + [f"{mode} s" for mode in modes] + ["many vs plain"]
        if "one" in modes:
            columns += ["many vs one"]
        columns += ["T/(W*P)"]
        print_table(f"Sweep: {name} (median of {reps}; gain = 1 - many/other; "
                    f"* = long tasks, gain target applies)", columns, rows)


def _verdicts(args, unique: list, measured: dict, started: float, load_before) -> dict:
    """Print the targets; return which hold."""
    def med(p, mode):
        return measured[(p, mode)]["median"]

    never = [med(p, "many") <= med(p, "plain") * (1 + args.tolerance) for p in unique]
    long_points = [p for p in unique if p.long_tasks]
    gain = [_gain(med(p, "many"), med(p, "plain")) >= GAIN_TARGET for p in long_points]
    never_ok, gain_ok = all(never), bool(gain) and all(gain)
    region = f"{LONG_TASKS[0]:.2g} <= T/(W*P) <= {LONG_TASKS[1]:g}"
    print(f"\nsweep took {time.perf_counter() - started:.0f} s ({len(unique)} distinct points); "
          f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (1 min)")
    print(f"target many never slower than plain (tolerance {100 * args.tolerance:g}%): "
          f"{'HOLDS' if never_ok else 'MISSED'} ({sum(never)}/{len(never)} points)")
    print(f"target many >= {100 * GAIN_TARGET:g}% faster than plain where {region}: "
          f"{'HOLDS' if gain_ok else 'MISSED'} ({sum(gain)}/{len(gain)} points)")
    if "one" in args.modes:
        vs_one = [_gain(med(p, "many"), med(p, "one")) >= GAIN_TARGET for p in long_points]
        print(f"reference: many >= {100 * GAIN_TARGET:g}% faster than retrieve-one where {region}: "
              f"{sum(vs_one)}/{len(vs_one)} points")
    return {"never_slower": never_ok, "gain_where_long_tasks": gain_ok}


def main(argv=None) -> int:
    """Command-line entry: run the sweeps, print tables and targets, write JSON and a PNG."""
    args = _parse(argv)
    modes = args.modes
    quiet_logging(args.log_level)
    sweeps = sweep_points(args.scale, args.quick)
    unique = list(dict.fromkeys(p for points in sweeps.values() for _, p in points))
    load_before = os.getloadavg()
    print(f"wait_retrieve_many: {len(unique)} points x {len(modes)} modes x {args.reps} runs, "
          f"scale {args.scale:g}, prefetch {'on' if args.prefetch else 'off'}; "
          f"{os.cpu_count()} cores, load {load_before[0]:.2f}")
    measured: dict[tuple[Point, str], dict] = {}
    started = time.perf_counter()
    for mode in modes:
        for p, times in run_points(unique, mode, args.reps, args.prefetch).items():
            measured[(p, mode)] = {"times": times, "median": median(times)}
    _print_sweeps(sweeps, measured, modes, args.reps)
    targets = _verdicts(args, unique, measured, started, load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    png = _plot(sweeps, measured, modes, args.out / "wait_retrieve_many.png", args.scale)
    data = {
        "config": {"scale": args.scale, "reps": args.reps, "modes": modes, "quick": args.quick,
                   "tolerance": args.tolerance, "prefetch": args.prefetch, "cpu_count": os.cpu_count(),
                   "load_before": load_before, "load_after": os.getloadavg()},
        "sweeps": {name: [{"x": x, **asdict(p), "ideal_s": ideal_time(p), "long_tasks": p.long_tasks,
                           **{f"{mode}_s": measured[(p, mode)]["times"] for mode in modes}}
                          for x, p in points] for name, points in sweeps.items()},
        "targets": targets,
    }
    path = write_json(args.out / "wait_retrieve_many.json", data)
    print(f"wrote {path} and {png}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
