"""``hep-executor run``: a whole analysis from a YAML config or from ``--fileset`` and
``--processor``, into a new run folder, with progress, a summary and outputs.

Each run gets its own folder (:mod:`hep_executor.cli._rundir`) holding ``run.log``
(DEBUG) and ``report.json``, written also when the run fails or is interrupted; the
partial output it has then is saved beside them (``partial_output.coffea``,
``partial_histograms.root``). A config error (the fileset or processor cannot be
loaded) is raised before any run folder is made.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from hep_executor.analysis import PRELOAD, WORKER_SETUP
from hep_executor.analysis import dashboard_port, normalize_fileset, run, serving
from hep_executor.cli._config import RunConfig, load_config
from hep_executor.cli._eft_plot import plot_eft
from hep_executor.cli._outputs import save_histograms, save_report
from hep_executor.cli._progress import RunProgress
from hep_executor.cli._resume import load_resume, save_resume_info
from hep_executor.cli._rundir import DEFAULT_BASE, failure_report, link_latest, new_run_dir, run_log, write_json
from hep_executor.cli._summary import print_summary
from hep_executor.cli._usercode import search_dirs
from hep_executor.errors import ConfigError

__all__ = ["OWN_CHECKPOINT", "run_main", "run_config", "runs_base"]

log = logging.getLogger(__name__)

#: the run folder's checkpoint where the config names none: a Ctrl-C leaves the partial output
#: there (and as partial_output.coffea, partial_histograms.root); removed when the run finishes
OWN_CHECKPOINT = "checkpoint"


def runs_base(config: RunConfig) -> Path:
    """The folder that holds the run folders: ``output.dir``, else ``./hep-executor-runs``."""
    if config.output.dir:
        return Path(config.resolve(config.output.dir))
    return Path.cwd() / DEFAULT_BASE


def _start_manager(config: RunConfig, run_dir: Path):
    """A manager with the config's workers: local children, or batch jobs it submits."""
    from hep_executor.batch import WorkerSpec, get_batch_system, write_runner
    from hep_executor.engine import Manager

    w = config.workers
    if w.dask:  # a Dask cluster's workers; the manager's close() closes its client, not the cluster
        from hep_executor.engine import connect_dask

        return connect_dask(w.dask, worker_keys=WORKER_SETUP["worker_slot_keys"]), None, []
    env = config.worker_env()
    if env and w.batch == "local":
        log.info("workers.env %s: local workers run in this process's environment; batch jobs run from it", env)
    if w.batch == "local":
        return Manager(local_workers=w.count, worker_cores=w.cores, worker_memory_mb=w.memory,
                       host=w.host, port=w.port, **WORKER_SETUP), None, []
    key_file = config.resolve(w.key_file) if w.key_file else str(run_dir / "run.key")
    host = "0.0.0.0" if w.host == "127.0.0.1" and w.batch == "condor" else w.host
    python = {"python": str(write_runner(env, setting="workers.env"))} if env else {}
    manager = Manager(local_workers=0, host=host, port=w.port, key_file=key_file)
    batch = get_batch_system(w.batch)
    spec = WorkerSpec(manager=manager.address, key_file=key_file, cores=w.cores, **python,
                      memory_mb=w.memory or 2000, disk_mb=w.disk, walltime=w.walltime,
                      extra_args=("--preload", ",".join(PRELOAD),
                                  "--slot-keys", str(WORKER_SETUP["worker_slot_keys"])))
    jobs = batch.submit(spec, w.count or 1)
    log.info("submitted %d %s worker jobs: %s", len(jobs), w.batch, " ".join(jobs))
    return manager, batch, jobs


def run_config(config: RunConfig, *, run_dir: str | Path | None = None, name: str | None = None,
               show_progress: bool = True, console: Console | None = None,
               search_path: list[str] | None = None, dashboard: bool | int | None = False,
               force: bool = False):
    """Run the analysis ``config`` describes in a new run folder; return the RunResult.

    Parameters
    ----------
    config : RunConfig
    run_dir : str or Path, optional
        Use this (existing, empty) folder; default: a new one under :func:`runs_base`.
    name : str, optional
        The run folder's name stem (default: the processor class, lower case).
    show_progress : bool
        Draw the progress bar.
    console : rich Console, optional
    search_path : list of str, optional
        Extra folders to look for the processor module in (``--path``).
    dashboard : bool or int
        Serve a live status page on 127.0.0.1 (True or 0: any free port; an int: that
        port) while the run goes on; its URL printed and written to ``dashboard.url``
        in the run folder.
    force : bool
        Start over where the checkpoint folder holds another run (``--force``).

    Raises
    ------
    ConfigError
        The fileset or processor cannot be loaded, or the dashboard's port is in use:
        raised before any run folder is made.
    HepExecutorError, KeyboardInterrupt
        What ended the run; ``report.json`` and ``run.log`` are written first.
    """
    console = console or Console(stderr=True)
    work, port = _Work.load(config, search_path), dashboard_port(dashboard)
    tracker = RunProgress(n_files=work.n_files, chunksize=config.chunking.chunksize,
                          maxchunks=config.chunking.maxchunks, console=console, show=show_progress)
    with serving(tracker, port) as board:  # a port in use fails here, before any run folder
        if run_dir is None:
            stem = name or config.processor.cls.rpartition(":")[2].lower() or "run"
            run_dir = new_run_dir(runs_base(config), stem)
        run_dir = Path(run_dir)
        link_latest(run_dir)
        console.print(f"run folder: {run_dir}", highlight=False, soft_wrap=True)
        with run_log(run_dir / "run.log"):
            log.info("run folder %s", run_dir)
            if board is not None:
                _announce(board, run_dir, console)
            try:
                result = _execute(config, run_dir, tracker, work, search_path, force)
            except BaseException as exc:
                _write_failure(config, run_dir, exc, tracker)
                if getattr(exc, "checkpoint", None):
                    console.print(f"to resume: hep-executor run --resume {exc.checkpoint}", highlight=False,
                                  soft_wrap=True)
                raise
            _drop_own_checkpoint(config, run_dir, result)
            paths = _write_outputs(config, run_dir, result, tracker)
            log.info("run done: %s", run_dir)
    print_summary(console, result, paths, summarize=getattr(work.module, "summarize", None))
    return result


def _announce(board, run_dir: Path, console: Console) -> None:
    """Print the dashboard's URL and write it to ``dashboard.url`` in the run folder."""
    log.info("dashboard %s (written to dashboard.url)", board.url)
    (run_dir / "dashboard.url").write_text(board.url + "\n")
    console.print(f"dashboard: {board.url}", highlight=False, soft_wrap=True)


@dataclasses.dataclass(frozen=True)
class _Work:
    """What a run works on, loaded before its run folder is made: a config error makes none."""

    fileset: dict
    n_files: int
    processor: Any
    module: Any

    @classmethod
    def load(cls, config: RunConfig, search_path: list[str] | None) -> _Work:
        """The config's fileset (checked whole) and processor instance, or the ConfigError naming the fault."""
        fileset = config.load_fileset()
        n_files = len(normalize_fileset(fileset, config.treename))
        dirs = search_dirs(config_dir=config.base_dir, fileset_path=config.fileset_path(), extra=search_path)
        processor_instance, module = config.processor.build(dirs)
        return cls(fileset, n_files, processor_instance, module)


def _execute(config: RunConfig, run_dir: Path, tracker: RunProgress, work: _Work,
             search_path: list[str] | None = None, force: bool = False):
    """Start the workers and run ``work``; return the RunResult."""
    fileset, processor_instance = work.fileset, work.processor
    files = config.worker_files()
    checkpoint = config.checkpoint_dir() or str(run_dir / OWN_CHECKPOINT)
    save_resume_info(checkpoint, config, search_path, run_dir)  # what --resume reads back
    manager, batch, jobs = _start_manager(config, run_dir)
    tracker.manager = manager
    try:
        with tracker:
            result = run(fileset, processor_instance, config.treename, manager=manager,
                         schema=config.schema_class(), chunksize=config.chunking.chunksize,
                         dynamic_chunksize=config.chunking.targets, maxchunks=config.chunking.maxchunks,
                         fan_in=config.chunking.fan_in, skipbadfiles=config.skipbadfiles,
                         align_clusters=config.chunking.align_clusters, timeout=config.timeout,
                         resources_mode=config.resources.mode, memory_mb=config.resources.memory,
                         progress=tracker.progress, checkpoint=checkpoint, force=force,
                         **_checkpoint_every(config),
                         metadata_cache=config.metadata_cache(), files=files or None)
    finally:
        manager.close()
        if batch is not None:
            batch.cancel(jobs)
    return result


def _checkpoint_every(config: RunConfig) -> dict:
    """run()'s checkpoint_every_s / checkpoint_every_chunks where the config sets them."""
    every = {"checkpoint_every_s": config.checkpoint_every_s, "checkpoint_every_chunks": config.checkpoint_every_chunks}
    return {k: v for k, v in every.items() if v is not None}


def _drop_own_checkpoint(config: RunConfig, run_dir: Path, result) -> None:
    """A finished run's own checkpoint (there for Ctrl-C) goes: its output holds the same."""
    if config.checkpoint_dir() is None:
        shutil.rmtree(run_dir / OWN_CHECKPOINT, ignore_errors=True)
        if not result.report.get("checkpoint", {}).get("resumed_entries"):  # a resumed run says what it took
            result.report.pop("checkpoint", None)


def _write_failure(config: RunConfig, run_dir: Path, exc: BaseException, tracker: RunProgress) -> None:
    """report.json of a failed or interrupted run, and its partial output where there is one."""
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    log.info("run %s: %s: %s (report.json in %s)", status, type(exc).__name__, exc, run_dir)
    log.debug("traceback of the run's end", exc_info=exc)  # the file only: the console gets one line
    report = failure_report(exc, status, tracker.state(), None)
    report["config"] = dataclasses.asdict(config)
    report["tasks"] = list(tracker.preprocess_tasks)
    partial = getattr(exc, "partial_output", None)
    if partial is not None:
        from coffea.util import save

        from hep_executor.cli._root_out import write_root

        save(partial, run_dir / "partial_output.coffea")
        write_root(partial, run_dir / "partial_histograms.root")
        report["partial"]["output"] = str(run_dir / "partial_output.coffea")
        report["partial"]["histograms"] = str(run_dir / "partial_histograms.root")
    if getattr(exc, "checkpoint", None):
        report["partial"]["checkpoint"] = exc.checkpoint  # --checkpoint DIR resumes from it
    write_json(report, run_dir / "report.json")


def _write_outputs(config: RunConfig, run_dir: Path, result, tracker: RunProgress) -> dict[str, str]:
    """The output (coffea, ROOT), report.json and plots of a finished run; ``{kind: path}``."""
    report = result.report
    report["status"] = "ok"
    report["config"] = dataclasses.asdict(config)
    if not any(t.get("kind") == "preprocess" for t in report.get("tasks", [])):
        report["tasks"] = tracker.preprocess_tasks + report.get("tasks", [])
    paths = save_histograms(result.output, run_dir)
    paths["report"] = save_report(report, run_dir / "report.json")
    png = _plot(config, result.output, run_dir)
    if png:
        paths["eft plot"] = png
    from hep_executor.cli._plots import write_plots

    notes: dict[str, str] = {}
    paths.update(write_plots(report, run_dir, notes))
    paths.update({f"no {name}.png": why for name, why in notes.items()})
    paths["run.log"] = str(run_dir / "run.log")
    return paths


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
                    dataset=config.output.plot_dataset, lumi=config.output.lumi)


def _config_from_args(args: argparse.Namespace) -> tuple[RunConfig, str]:
    """The config the command line describes, and the run's name."""
    if args.config:
        config, name = load_config(args.config), Path(args.config).stem
    elif args.fileset or args.processor:
        if not (args.fileset and args.processor):
            msg = "without a config, 'hep-executor run' needs both --fileset FILE.json and --processor module:Class"
            raise ConfigError(msg)
        config, name = RunConfig(base_dir=str(Path.cwd())), ""
    else:
        config, name = load_config(), "demo"
    changes: dict = {}
    if args.fileset:
        changes["fileset"] = str(Path(args.fileset).resolve())
    if args.processor:
        same = args.processor == config.processor.cls
        changes["processor"] = dataclasses.replace(config.processor, cls=args.processor,
                                                   options=config.processor.options if same else {})
        name = name or args.processor.rpartition(":")[2].lower()
    if args.treename:
        changes["treename"] = args.treename
    if args.schema:
        changes["schema"] = args.schema
    if args.out:
        changes["output"] = dataclasses.replace(config.output, dir=str(Path(args.out).resolve()))
    if args.workers is not None:
        changes["workers"] = dataclasses.replace(config.workers, count=args.workers)
    if getattr(args, "dask", None):
        changes["workers"] = dataclasses.replace(changes.get("workers", config.workers), dask=args.dask)
    if args.chunksize:
        changes["chunking"] = dataclasses.replace(config.chunking, chunksize=args.chunksize)
    if args.checkpoint:
        changes["checkpoint"] = str(Path(args.checkpoint).resolve())
    if args.no_cache:
        changes["cache"] = dataclasses.replace(config.cache, metadata=False)
    return config.replace(**changes), name


def _resumed_config(args: argparse.Namespace):
    """``--resume DIR``: the config kept in DIR (with --workers, --chunksize, --out applied), run folder, path."""
    if args.config or args.fileset or args.processor or args.checkpoint:
        msg = ("--resume DIR takes the run's config, fileset, processor and checkpoint from DIR; "
               "give none of them with it")
        raise ConfigError(msg)
    resumed = load_resume(args.resume)
    changes: dict = {}
    if args.workers is not None:
        changes["workers"] = dataclasses.replace(resumed.config.workers, count=args.workers)
    if args.chunksize:
        changes["chunking"] = dataclasses.replace(resumed.config.chunking, chunksize=args.chunksize)
    if args.out:
        changes["output"] = dataclasses.replace(resumed.config.output, dir=str(Path(args.out).resolve()))
    log.info("resuming the run of checkpoint folder %s", resumed.folder)
    return resumed.config.replace(**changes), resumed.run_dir, [*resumed.search_path, *args.path]


def run_main(args: argparse.Namespace) -> int:
    """Entry of ``hep-executor run``."""
    run_dir, search_path = None, args.path
    if getattr(args, "resume", None):
        (config, run_dir, search_path), name = _resumed_config(args), ""
    else:
        config, name = _config_from_args(args)
    config.schema_class()  # a bad --schema fails before a run folder is made
    run_config(config, run_dir=run_dir, name=name, show_progress=not args.no_progress, console=Console(),
               search_path=search_path, dashboard=args.dashboard, force=getattr(args, "force", False))
    return 0
