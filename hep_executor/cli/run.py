"""``hep-executor run [CONFIG]``: a whole analysis from a YAML config, with progress and outputs."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hep_executor.analysis.runner import run
from hep_executor.analysis.chunk_tasks import PRELOAD, WORKER_SETUP
from hep_executor.cli.config import RunConfig, load_config
from hep_executor.cli.outputs import plot_eft, save_histograms, save_report

__all__ = ["run_main", "run_config"]

log = logging.getLogger(__name__)


def _start_manager(config: RunConfig):
    """A manager with the config's workers: local children, or batch jobs it submits."""
    from hep_executor.batch import WorkerSpec, get_batch_system
    from hep_executor.engine.manager import Manager

    w = config.workers
    if w.batch == "local":
        return Manager(local_workers=w.count, worker_cores=w.cores, worker_memory_mb=w.memory,
                       host=w.host, port=w.port, **WORKER_SETUP), None, []
    key_file = config.resolve(w.key_file or str(Path(config.resolve(config.output.dir)) / "run.key"))
    host = "0.0.0.0" if w.host == "127.0.0.1" and w.batch == "condor" else w.host
    manager = Manager(local_workers=0, host=host, port=w.port, key_file=key_file)
    batch = get_batch_system(w.batch)
    spec = WorkerSpec(manager=manager.address, key_file=key_file, cores=w.cores,
                      memory_mb=w.memory or 2000, disk_mb=w.disk, walltime=w.walltime,
                      extra_args=("--preload", ",".join(PRELOAD),
                                  "--slot-keys", str(WORKER_SETUP["worker_slot_keys"])))
    jobs = batch.submit(spec, w.count or 1)
    log.info("submitted %d %s worker jobs: %s", len(jobs), w.batch, " ".join(jobs))
    return manager, batch, jobs


def run_config(config: RunConfig, *, show_progress: bool = True, console: Console | None = None):
    """Run the analysis a config describes; write its outputs; return the RunResult."""
    console = console or Console(stderr=True)
    fileset = config.load_fileset()
    processor_instance = config.processor.build()
    out_dir = Path(config.resolve(config.output.dir))
    total_events = None
    manager, batch, jobs = _start_manager(config)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                      console=console, disable=not show_progress, transient=False) as bar:
            n_files = sum(len(v) for v in fileset.values())
            pre = bar.add_task("files", total=n_files, rate="")
            chunks = bar.add_task("chunks", total=None, rate="")
            events = bar.add_task("events", total=None, rate="")
            t0 = time.time()

            def progress(stage, result, item=None):
                nonlocal total_events
                if stage == "preprocess":
                    bar.advance(pre)
                    if result.ok:
                        total_events = (total_events or 0) + result.value["entries"]
                        bar.update(events, total=total_events)
                    return
                bar.advance(chunks)
                if result.ok:
                    bar.advance(events, item.events)
                    done = bar.tasks[events].completed
                    bar.update(events, rate=f"{done / max(time.time() - t0, 1e-9):,.0f} ev/s")

            memory = config.resources.memory if config.resources.mode == "fixed" else 0
            result = run(fileset, processor_instance, config.treename, manager=manager,
                         schema=config.schema_class(), chunksize=config.chunking.chunksize,
                         dynamic_chunksize=config.chunking.targets, maxchunks=config.chunking.maxchunks,
                         fan_in=config.chunking.fan_in, skipbadfiles=config.skipbadfiles,
                         align_clusters=config.chunking.align_clusters, timeout=config.timeout,
                         memory_mb=memory or 0, resources_mode=config.resources.mode, progress=progress)
            bar.update(chunks, total=bar.tasks[chunks].completed)
    finally:
        manager.close()
        if batch is not None:
            batch.cancel(jobs)
    result.report["config"] = dataclasses.asdict(config)
    paths = save_histograms(result.output, out_dir)
    paths["report"] = save_report(result.report, out_dir / "report.json")
    png = _plot(config, result.output, out_dir)
    if png:
        paths["eft plot"] = png
    from hep_executor.cli.plots import write_plots

    paths.update(write_plots(result.report, out_dir))
    _summary(console, config, result, paths)
    return result


def _plot(config: RunConfig, output, out_dir: Path) -> str | None:
    """The config's EFT plot: ``output.plot_hist`` is a path into the output (``hists/l0pt``)."""
    name = config.output.plot_hist
    if not name or not config.output.wc_point:
        return None
    h = output
    for part in name.split("/"):
        if not isinstance(h, dict) or part not in h:
            log.warning("no histogram %r in the output: no EFT plot", name)
            return None
        h = h[part]
    leaf = name.split("/")[-1]
    return plot_eft(h, dict(config.output.wc_point), out_dir / f"{leaf}_eft.png",
                    dataset=config.output.plot_dataset,
                    title=f"{leaf} ({config.output.plot_dataset or 'all datasets'})")


def _summary(console: Console, config: RunConfig, result, paths: dict) -> None:
    totals = result.report["totals"]
    table = Table(title="hep-executor run")
    module = importlib.import_module(config.processor.cls.partition(":")[0])
    summarize = getattr(module, "summarize", None)
    per_dataset = summarize(result.output) if summarize is not None else {}
    categories = sorted({k for row in per_dataset.values() for k in row} - {"events", "sumw"})
    table.add_column("dataset")
    table.add_column("events", justify="right")
    for c in categories:
        table.add_column(f"selected {c}", justify="right")
    table.add_column("time (s)", justify="right")
    table.add_column("events/s", justify="right")
    wall = totals["wall_s"]
    for ds in sorted({f["dataset"] for f in result.report["files"]}):
        row = per_dataset.get(ds, {})
        n = sum(r[1] - r[0] for f in result.report["files"] if f["dataset"] == ds for r in f["ranges"])
        table.add_row(ds, f"{n:,}", *[f"{row.get(c, 0):,}" for c in categories], "", "")
    table.add_row("total", f"{totals['events']:,}", *[""] * len(categories), f"{wall:.1f}",
                  f"{totals['events_per_s']:,.0f}")
    console.print(table)
    console.print(f"{totals['chunks']} chunks, {totals['merges']} merges on workers, "
                  f"{totals['workers']} workers")
    for s in result.skipped:
        console.print(f"[yellow]skipped[/] {s['file']}: {s['error']}")
    for kind, path in paths.items():
        console.print(f"{kind:>7}: {path}")


def run_main(args: argparse.Namespace) -> int:
    """Entry of ``hep-executor run``."""
    config = load_config(args.config)
    changes = {}
    if args.out:
        changes["output"] = dataclasses.replace(config.output, dir=str(Path(args.out).resolve()))
    if args.workers is not None:
        changes["workers"] = dataclasses.replace(config.workers, count=args.workers)
    if args.chunksize:
        changes["chunking"] = dataclasses.replace(config.chunking, chunksize=args.chunksize)
    config = config.replace(**changes)
    run_config(config, show_progress=not args.no_progress, console=Console())
    return 0
