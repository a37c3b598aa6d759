"""HepExecutor: the coffea executor face (``processor.Runner(executor=HepExecutor(...))``).

coffea's Runner calls an executor twice per run: once to read file
metadata (``function_name="get_metadata"``), once to process chunks. It
clones executors with ``copy(**kw)``, so every attribute here is a
dataclass field, and the workers live in a shared :class:`WorkerPool`
that all clones hold: they persist across both calls and across runs
until :meth:`HepExecutor.close` (or the ``with`` block ends).

The fields of coffea 0.7's WorkQueueExecutor that TopEFT-style scripts
pass are accepted with the same meaning where it applies; those that do
not apply here are named once in a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

from coffea.processor.executor import ExecutorBase

from hep_executor.analysis.checkpoint_run import RunCheckpoint
from hep_executor.analysis.pipeline import ReducePipeline
from hep_executor.analysis.preprocess import gather
from hep_executor.analysis.sources import ChunkSource, Segment, build_source, segments_of_workitems

__all__ = ["HepExecutor", "WorkerPool"]

log = logging.getLogger(__name__)

# WorkQueueExecutor fields that have no meaning here: (name, value that means "unused")
_IGNORED = {
    "gpus": None, "filepath": None, "environment_file": None, "extra_input_files": (),
    "x509_proxy": None, "fast_terminate_workers": None, "print_stdout": False,
    "chunks_accum_in_mem": None, "wrapper": None, "ssl": None, "custom_init": None,
    "bar_format": None,
}


class WorkerPool:
    """The manager and workers that an executor and all its clones share.

    Started on first use; closed by :meth:`close`.
    """

    def __init__(self):
        self.manager = None
        self.owned = False
        self.warned = False

    def get(self, executor: HepExecutor):
        if executor.manager is not None:
            return executor.manager
        if self.manager is None:
            from hep_executor.engine.manager import Manager

            from hep_executor.analysis.chunk_tasks import WORKER_SETUP

            self.manager = Manager(local_workers=executor.workers, host=executor.host, **WORKER_SETUP,
                                   port=executor.port, key_file=executor.password_file or executor.key_file,
                                   address_file=executor.address_file)
            self.owned = True
        return self.manager

    def close(self) -> None:
        if self.manager is not None and self.owned:
            self.manager.close()
        self.manager = None


@dataclass
class HepExecutor(ExecutorBase):
    """Run coffea's chunks on hep_executor workers, merging results on the workers.

    Parameters
    ----------
    workers : int, optional
        Local workers to start (default: one per core; 0: remote workers only).
    manager : Manager, optional
        Use an existing :class:`~hep_executor.manager.Manager` instead.
    host, port : str, int or [low, high]
        Where the manager listens (port 0: any free port).
    key_file, password_file : str, optional
        Shared key for remote workers (``password_file`` is the 0.7 name).
    address_file : str, optional
        Write the manager's address here for submit scripts.
    treereduction, chunks_per_accum : int
        Fan-in of the merge tree on workers (default 20).
    cores, memory, disk : int, optional
        Per-task resources (memory, disk in MB); with ``resources_mode="fixed"``
        they are used as given, otherwise as the first allocation.
    resources_mode : str
        ``auto`` (default), ``max-seen`` or ``fixed``.
    split_on_exhaustion : bool
        Split a chunk that runs out of memory in two (default True).
    dynamic : bool
        Cut each file's entries anew at the predicted chunk size (default True;
        Runner's chunk size is the first guess). False runs Runner's chunks as given.
    dynamic_chunksize : dict, optional
        Targets per task, ``{"wall_time": s, "memory": MB}`` (either alone works).
    retries : int
        Read by coffea's Runner, which retries inside the task function.
    verbose : bool
        Log each task at INFO level.
    debug_log, transactions_log, stats_log, tasks_accum_log : str, optional
        Files for debug logging, one JSON line per task, run statistics,
        and one JSON line per accumulate task.
    checkpoint : str, optional
        Checkpoint folder of the processing call (as ``run(checkpoint=...)``):
        a call with the same folder runs only the entry ranges not covered yet.
    """

    workers: int | None = None
    manager: Any = None
    host: str = "127.0.0.1"
    port: Any = 0
    key_file: str | None = None
    address_file: str | None = None
    treereduction: int = 20
    cores: int | None = None
    memory: int | None = None
    disk: int | None = None
    resources_mode: str = "auto"
    resource_monitor: Any = True
    split_on_exhaustion: bool = True
    retries: int = 2
    verbose: bool = False
    manager_name: str | None = None
    master_name: str | None = None
    password_file: str | None = None
    chunks_per_accum: int | None = None
    debug_log: str | None = None
    transactions_log: str | None = None
    stats_log: str | None = None
    tasks_accum_log: str | None = None
    dynamic: bool = True
    dynamic_chunksize: dict | None = None
    gpus: int | None = None
    filepath: str | None = None
    environment_file: Any = None
    extra_input_files: Any = ()
    x509_proxy: Any = None
    fast_terminate_workers: Any = None
    print_stdout: bool = False
    chunks_accum_in_mem: int | None = None
    wrapper: str | None = None
    ssl: Any = None
    custom_init: Any = None
    bar_format: str | None = None
    checkpoint: str | None = None
    pool: WorkerPool = field(default_factory=WorkerPool, repr=False)

    # -- lifetime
    def close(self) -> None:
        """Stop the workers this executor started."""
        self.pool.close()

    def __enter__(self) -> HepExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def fan_in(self) -> int:
        return int(self.chunks_per_accum or self.treereduction or 20)

    def ignored_fields(self) -> list[str]:
        """Names of set fields that have no effect with this executor."""
        return [name for name, unused in _IGNORED.items()
                if getattr(self, name) not in (unused, None, (), [], 0, False)]

    def _warn_once(self) -> None:
        if self.pool.warned:
            return
        self.pool.warned = True
        ignored = self.ignored_fields()
        if ignored:
            warnings.warn(f"HepExecutor ignores these WorkQueueExecutor options: {', '.join(ignored)}",
                          stacklevel=3)
        if self.debug_log:
            handler = logging.FileHandler(self.debug_log)
            handler.setLevel(logging.DEBUG)
            logging.getLogger("hep_executor").addHandler(handler)
            logging.getLogger("hep_executor").setLevel(logging.DEBUG)
        if self.verbose:
            logging.getLogger("hep_executor").setLevel(logging.INFO)

    # -- coffea's calls
    def __call__(self, items, function, accumulator):
        self._warn_once()
        items = list(items)
        if not items:
            return accumulator, 0
        manager = self.pool.get(self)
        if self.function_name == "get_metadata":
            return self._preprocess(manager, items, function, accumulator)
        return self._process(manager, items, function, accumulator)

    def _preprocess(self, manager, items, function, accumulator):
        """Read file metadata with coffea's function; an error is raised naming its file."""
        from coffea.processor import accumulate

        with _progress(self, len(items)) as advance:
            values, _ = gather(manager, function, [((item,), item.filename) for item in items],
                               progress=lambda result: advance())
        return accumulate([values[i] for i in sorted(values)], accumulator), 0

    def make_source(self, manager, items) -> ChunkSource:
        """The chunks to run: Runner's items, or (dynamic) their files' entries cut anew."""
        common = dict(resources_mode=self.resources_mode, memory_mb=self.memory, cores=self.cores or 1,
                      split_on_exhaustion=self.split_on_exhaustion)
        if self.dynamic:
            return build_source(manager, segments_of_workitems(items), dynamic_chunksize=self.dynamic_chunksize,
                                initial_chunksize=max((len(i) for i in items), default=1), **common)
        return build_source(manager, [Segment(i, i.entrystart, i.entrystop) for i in items],
                            chunksize=2**62, spread=False, **common)

    def _process(self, manager, items, function, accumulator):
        from coffea.processor import accumulate

        resume = None if self.checkpoint is None else RunCheckpoint.for_items(self.checkpoint, items, function)
        if resume is not None:
            items = resume.remaining_items(items)
        source = self.make_source(manager, items)
        if resume is not None:
            resume.restore_planner(source)
        with _progress(self, sum(len(i) for i in items)) as advance:
            def on_result(result, item):
                if result.ok:
                    advance(len(item))

            make = ReducePipeline if resume is None else resume.make_pipeline
            pipeline = make(manager, function, fan_in=self.fan_in, on_result=on_result)
            with contextlib.nullcontext() if resume is None else resume.ctrl_c():
                outcome = pipeline.run(source)
        if resume is not None:
            resume.finish(outcome, complete=outcome.error is None)
        self._write_logs(outcome)
        out = outcome.output
        if accumulator is not None and out is not None:
            out = accumulate([out], accumulator)
        return out, (outcome.error or 0)

    def _write_logs(self, outcome) -> None:
        if self.transactions_log or self.tasks_accum_log:
            for path, kind in ((self.transactions_log, None), (self.tasks_accum_log, "accumulate")):
                if not path:
                    continue
                with open(path, "a") as fh:
                    for report in outcome.reports:
                        if kind is None or report.category == kind:
                            fh.write(json.dumps(report.as_dict()) + "\n")
        if self.stats_log:
            with open(self.stats_log, "a") as fh:
                fh.write(json.dumps({"processed": outcome.processed, "merges": outcome.merges,
                                     "failures": len(outcome.failures), "wall_s": outcome.wall}) + "\n")


class _progress:
    """A rich progress bar when the executor's ``status`` is on."""

    def __init__(self, executor: HepExecutor, total: int):
        self.executor, self.total = executor, total
        self.bar = None

    def __enter__(self):
        if self.executor.status:
            from rich.progress import Progress

            self.bar = Progress(transient=False)
            self.bar.start()
            self.task = self.bar.add_task(self.executor.desc, total=self.total)
        return self.advance

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
