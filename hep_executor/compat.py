"""``run_uproot_job``: coffea 0.7's entry point, working on coffea 2026.

Older analysis scripts (TopEFT among them) call::

    run_uproot_job(fileset, "Events", processor_instance, executor=SomeExecutor,
                   executor_args={"schema": NanoAODSchema, ...}, chunksize=100000)

As in 0.7, ``executor_args`` keys that are fields of the executor go to
its constructor and the rest to the Runner (``schema``, ``savemetrics``,
``skipbadfiles``, ``xrootdtimeout``, ``align_clusters``, ...); a key that
is neither is an error naming it.

On HepExecutor's own path (:func:`hep_executor.run`), the run's task rows
are kept as :func:`~hep_executor.run` keeps them (the first
``keep_tasks`` in memory, every one in ``task_log``), and they are the
executor's :attr:`~hep_executor.executor.HepExecutor.task_report`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

from hep_executor.errors import ConfigError

__all__ = ["run_uproot_job"]


def _split_args(executor_cls: type, executor_args: dict) -> tuple[dict, dict]:
    from coffea import processor

    exe_fields = {f.name for f in dataclasses.fields(executor_cls)}
    runner_fields = {f.name for f in dataclasses.fields(processor.Runner)} - {"executor", "pre_executor"}
    exe, runner = {}, {}
    for key, value in executor_args.items():
        if key in exe_fields:
            exe[key] = value
        elif key in runner_fields:
            runner[key] = value
        else:
            msg = (f"executor_args key {key!r} is neither an option of {executor_cls.__name__} "
                   f"nor of coffea's Runner")
            raise ConfigError(msg)
    return exe, runner


_OWN_PATH_RUNNER_ARGS = {"schema", "skipbadfiles", "xrootdtimeout", "align_clusters", "savemetrics"}


def _own_path(exe, fileset, treename, processor_instance, runner_args: dict, chunksize: int,
              maxchunks: int | None, dynamic_chunksize: dict | None):
    """Run on HepExecutor's own path; return what Runner would."""
    from coffea.nanoevents import NanoAODSchema

    from hep_executor.analysis import run

    from hep_executor.analysis import read_rows

    dynamic = exe.dynamic
    exe._warn_once()
    start = os.path.getsize(exe.task_log) if exe.task_log and os.path.isfile(exe.task_log) else 0
    result = run(fileset, processor_instance, treename, manager=exe.pool.get(exe),
                 schema=runner_args.get("schema", NanoAODSchema),
                 chunksize=None if dynamic else chunksize, initial_chunksize=chunksize,
                 dynamic_chunksize=dynamic_chunksize or exe.dynamic_chunksize, maxchunks=maxchunks,
                 fan_in=exe.fan_in, skipbadfiles=bool(runner_args.get("skipbadfiles", False)),
                 align_clusters=bool(runner_args.get("align_clusters", False)),
                 timeout=float(runner_args.get("xrootdtimeout") or 60),
                 resources_mode=exe.resources_mode, memory_mb=exe.memory,
                 split_on_exhaustion=exe.split_on_exhaustion, retries=exe.retries,
                 metadata_cache=exe.metadata_cache, task_log=exe.task_log, keep_tasks=exe.keep_tasks)
    report, totals = result.report, result.report["totals"]
    rows = {key: report[key] for key in ("tasks", "tasks_left_out", "task_log", "task_summary")}
    exe.pool.task_report = rows
    every = read_rows(rows["task_log"], start if exe.task_log else 0) if rows["tasks_left_out"] else rows["tasks"]
    described = {key: rows[key] for key in ("tasks_left_out", "task_log", "task_summary")}
    exe.write_logs(every, {"processed": totals["chunks"], "merges": totals["merges"],
                           "failures": 0, "wall_s": totals["wall_s"], **totals, **described})
    if runner_args.get("savemetrics"):
        return result.output, {**totals, **described}
    return result.output


def _make_executor(executor, args: dict):
    if isinstance(executor, type):
        return executor(**args), True
    if args:
        return executor.copy(**args), False
    return executor, False


def run_uproot_job(fileset: dict, treename: str, processor_instance: Any, executor: Any,
                   executor_args: dict | None = None, pre_executor: Any = None,
                   pre_args: dict | None = None, chunksize: int = 100000,
                   maxchunks: int | None = None, metadata_cache: Any = None,
                   dynamic_chunksize: dict | None = None, task_log: str | None = None):
    """Run a processor over a fileset with the coffea 0.7 call.

    Parameters
    ----------
    fileset : dict
        ``{dataset: [files]}`` or ``{dataset: {"files": ..., "treename": ...}}``.
    treename : str
        Tree to read where the fileset names none.
    processor_instance : coffea ProcessorABC
    executor : executor class or instance
        ``HepExecutor`` or any coffea executor.
    executor_args : dict
        Options for the executor and the Runner (split as coffea 0.7 did).
    pre_executor, pre_args : optional
        Executor (and its options) for preprocessing; default: the executor.
    chunksize, maxchunks, metadata_cache : as coffea's Runner
    dynamic_chunksize : dict, optional
        ``{"wall_time": s, "memory": MB}`` targets; honoured by HepExecutor.
    task_log : str, optional
        HepExecutor's ``task_log``: one JSON line per finished task goes there
        (``executor_args={"keep_tasks": n}`` sets how many rows the executor's
        ``task_report`` holds). Ignored, with a warning, by other executors.

    Returns
    -------
    The processor's accumulated output (``(output, metrics)`` with ``savemetrics``;
    on HepExecutor's own path the metrics are :func:`hep_executor.run`'s totals with
    ``tasks_left_out``, ``task_log`` and ``task_summary``).
    """
    from coffea import processor

    executor_args = dict(executor_args or {})
    exe_cls = executor if isinstance(executor, type) else type(executor)
    exe_args, runner_args = _split_args(exe_cls, executor_args)
    if dynamic_chunksize is not None:
        if "dynamic_chunksize" in {f.name for f in dataclasses.fields(exe_cls)}:
            exe_args["dynamic_chunksize"] = dynamic_chunksize
        else:
            warnings.warn(f"{exe_cls.__name__} does not size chunks dynamically: "
                          "dynamic_chunksize is ignored", stacklevel=2)
    if task_log is not None:
        if "task_log" in {f.name for f in dataclasses.fields(exe_cls)}:
            exe_args["task_log"] = task_log
        else:
            warnings.warn(f"{exe_cls.__name__} keeps no task log: task_log is ignored", stacklevel=2)
    exe, own_exe = _make_executor(executor, exe_args)
    from hep_executor.executor import HepExecutor

    if (isinstance(exe, HepExecutor) and pre_executor is None and metadata_cache is None
            and set(runner_args) <= _OWN_PATH_RUNNER_ARGS):
        try:
            return _own_path(exe, fileset, treename, processor_instance, runner_args, chunksize,
                             maxchunks, dynamic_chunksize)
        finally:
            if own_exe:
                exe.close()
    pre, own_pre = None, False
    if pre_executor is not None:
        pre_cls = pre_executor if isinstance(pre_executor, type) else type(pre_executor)
        pre_exe_args, _ = _split_args(pre_cls, dict(pre_args or {}))
        pre, own_pre = _make_executor(pre_executor, pre_exe_args)
    try:
        runner = processor.Runner(executor=exe, pre_executor=pre, chunksize=chunksize,
                                  maxchunks=maxchunks, metadata_cache=metadata_cache, **runner_args)
        return runner(fileset, processor_instance=processor_instance, treename=treename)
    finally:
        for obj, own in ((exe, own_exe), (pre, own_pre)):
            if own and hasattr(obj, "close"):
                obj.close()
