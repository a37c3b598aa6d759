"""A checkpointed run: when checkpoints are written, how a run resumes, what Ctrl-C does.

:class:`CheckpointPipeline` is the :class:`~hep_executor.analysis._pipeline.ReducePipeline`
of a checkpointed run. It knows the coverage of every partial output it
holds as bytes (a chunk's range, joined as outputs are merged on the
workers), and every ``every_s`` seconds or ``every_chunks`` chunks it
writes those bytes and their coverage as one checkpoint file, from a
background thread (the bytes do not change; the dispatch loop goes on).
Between those, a checkpoint is written sooner when writing is cheap: once
at least :data:`MIN_EVERY_S` has passed and the last write took at most
``write_share`` (default :data:`DEFAULT_WRITE_SHARE`) of the time since, so
a kill loses little more than the chunks that were running, while the
writer's time stays a small share of the run's.
It starts from the partial outputs of a loaded checkpoint, which join the
merge tree like any other result.

:class:`RunCheckpoint` ties a run to its folder: it checks the manifest
(a folder of another run is refused, naming what differs, unless
``force``), loads the newest readable checkpoint, subtracts what it
covers from the plan, restores the sizing model, and writes the last
checkpoint when the run ends.

Ctrl-C (SIGINT) once: no new chunks are sent; the chunks in flight are
waited for (at most ``grace_s``, logged), merged, and the checkpoint is
written; :class:`~hep_executor.errors.RunInterrupted` says how to resume.
A second Ctrl-C stops at once with a checkpoint of what was merged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import pickle
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hep_executor.analysis._checkpoint import (CheckpointStore, Part, Snapshot, compact, make_manifest,
                                              manifest_differences, uncovered_segments)
from hep_executor.analysis._pipeline import ReducePipeline
from hep_executor.engine import dumps, pickle_bytes
from hep_executor.errors import CheckpointMismatchError, RunInterrupted

__all__ = ["DEFAULT_EVERY_CHUNKS", "DEFAULT_EVERY_S", "DEFAULT_GRACE_S", "DEFAULT_WRITE_SHARE", "MIN_EVERY_S",
           "CheckpointPipeline", "RunCheckpoint"]

log = logging.getLogger(__name__)

#: seconds between checkpoints
DEFAULT_EVERY_S = 60.0
#: chunks that came back between checkpoints (whichever comes first)
DEFAULT_EVERY_CHUNKS = 300
#: after a first Ctrl-C, seconds to wait for the chunks in flight
DEFAULT_GRACE_S = 30.0
#: a checkpoint is also due once the last write took at most this share of the time since it
DEFAULT_WRITE_SHARE = 0.005
#: ... but never sooner than this many seconds after the last one
MIN_EVERY_S = 1.0


class CheckpointPipeline(ReducePipeline):
    """A :class:`ReducePipeline` that writes checkpoints; see the module docstring.

    Parameters
    ----------
    checkpoint : RunCheckpoint
    resumed : Snapshot, optional
        Partial outputs to start from.
    **kwargs
        As :class:`ReducePipeline`.
    """

    def __init__(self, manager, process_fn, *, checkpoint: RunCheckpoint, resumed: Snapshot | None = None,
                 **kwargs):
        super().__init__(manager, process_fn, **kwargs)
        self.checkpoint = checkpoint
        self.coverage: dict[Any, dict] = {}
        self.interrupts = 0
        self.deadline: float | None = None
        self._since = 0
        #: entries of the chunks this run processed, and of those the entries the loaded checkpoint held
        self.processed_entries = self.reprocessed_entries = 0
        self._last_write = time.monotonic()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None
        self._last_cost = 0.0  # seconds the last write took
        for i, part in enumerate(resumed.parts if resumed else []):
            key = -(i + 1)
            self._payloads[key] = part.payload
            self.coverage[key] = part.coverage
            self.reducer.add(key, len(part.payload[0]))

    # -- hooks in the pipeline's steps
    def _feed(self, state) -> None:
        if self.interrupts:
            self._on_interrupt(state)
        super()._feed(state)
        if self._due():
            self.save_async()

    def _file_processed(self, state, item, result) -> bool:
        again = super()._file_processed(state, item, result)
        if result.ok:
            self.coverage[result.id] = {item.filename: [(item.entrystart, item.entrystop)]}
            self._since += 1
            self.processed_entries += item.entrystop - item.entrystart
            self.reprocessed_entries += _overlap(self.checkpoint.covered.get(item.filename, ()),
                                                 item.entrystart, item.entrystop)
        return again

    def _file_merged(self, state, group, result) -> None:
        super()._file_merged(state, group, result)
        if result.ok:
            joined: dict[str, list] = {}
            for key in group:
                for name, ranges in self.coverage.pop(key, {}).items():
                    joined.setdefault(name, []).extend(ranges)
            self.coverage[result.id] = {name: compact(rs) for name, rs in joined.items()}

    # -- checkpoints
    def _due(self) -> bool:
        c = self.checkpoint
        if self._since <= 0:
            return False
        elapsed = time.monotonic() - self._last_write
        cheap = c.write_share > 0 and elapsed >= MIN_EVERY_S and self._last_cost <= c.write_share * elapsed
        return cheap or self._since >= c.every_chunks or elapsed >= c.every_s

    def snapshot(self, complete: bool = False) -> Snapshot:
        """The partial outputs held now, with their coverage (bytes are shared, not copied)."""
        parts = [Part(self._here(payload), self.coverage[key]) for key, payload in self._payloads.items()]
        return Snapshot(parts, dict(self.checkpoint.uuids), self.checkpoint.planner_state(), complete)

    def _here(self, payload: tuple) -> tuple[bytes, bool]:
        """``payload`` as bytes here: a result kept in a Dask worker's memory is fetched and serialized."""
        if isinstance(payload[0], (bytes, bytearray, memoryview)):
            return payload
        return dumps(self.manager.load_payload(payload))

    def save_async(self) -> None:
        """Write a checkpoint from the writer thread, unless the last one is still being written."""
        if self._pending is not None and not self._pending.done():
            return
        snap = self.snapshot()
        self._since, self._last_write = 0, time.monotonic()
        self._pending = self._writer.submit(self._timed_save, snap)

    def _timed_save(self, snap: Snapshot) -> Path:
        start = time.perf_counter()
        try:
            return self.checkpoint.store.save(snap)
        finally:
            self._last_cost = time.perf_counter() - start

    def save_now(self, complete: bool = False) -> Path:
        """Wait for a write in progress, then write the state of now; return the file."""
        if self._pending is not None:
            self._pending.result()
        self._since, self._last_write = 0, time.monotonic()
        path = self.checkpoint.store.save(self.snapshot(complete))
        self._writer.shutdown(wait=True)
        return path

    # -- Ctrl-C
    def interrupt(self) -> None:
        """Called on SIGINT: the first stops dispatch, the second stops at the next step."""
        self.interrupts += 1

    def _on_interrupt(self, state) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.checkpoint.grace_s
            state.stopped = True
            log.warning("Ctrl-C: no new chunks; waiting up to %.0f s for the %d chunk(s) in flight "
                        "(Ctrl-C again to stop now)", self.checkpoint.grace_s, len(state.in_flight))
        if self.interrupts > 1 or time.monotonic() > self.deadline:
            why = "second Ctrl-C" if self.interrupts > 1 else f"{self.checkpoint.grace_s:.0f} s passed"
            for tid in [*state.in_flight, *state.merges]:
                self.manager.cancel(tid)
            log.warning("%s: stopping now, %d chunk(s) and %d merge(s) dropped", why,
                        len(state.in_flight), len(state.merges))
            state.in_flight.clear()
            state.merges.clear()
            raise self.checkpoint.interrupted(self.save_now())


class RunCheckpoint:
    """A run's checkpoint folder and its settings; see the module docstring.

    Parameters
    ----------
    folder : str or Path
    manifest : dict
        This run's manifest (:func:`~hep_executor.analysis._checkpoint.make_manifest`).
    force : bool
        Start over in a folder of another run (its checkpoints are removed, in one
        logged line naming what differs); a folder of this same run is resumed.
    every_s, every_chunks : float, int
        A checkpoint is written after this many seconds or chunks, whichever first.
    write_share : float
        Sooner when the last write took at most this share of the time since it
        (0: only by ``every_s`` and ``every_chunks``); see the module docstring.
    grace_s : float
        After a first Ctrl-C, how long to wait for the chunks in flight.

    Raises
    ------
    CheckpointMismatchError
        The folder holds a checkpoint of another run (without ``force``).
    """

    def __init__(self, folder, manifest: dict, *, force: bool = False, every_s: float = DEFAULT_EVERY_S,
                 every_chunks: int = DEFAULT_EVERY_CHUNKS, grace_s: float = DEFAULT_GRACE_S,
                 write_share: float = DEFAULT_WRITE_SHARE):
        self.store = CheckpointStore(folder)
        self.every_s, self.every_chunks, self.grace_s = float(every_s), max(1, int(every_chunks)), float(grace_s)
        self.write_share = max(0.0, float(write_share))
        self.uuids: dict[str, str] = {}
        self.sizer = None
        self.pipeline: CheckpointPipeline | None = None
        self.resumed = self._open(manifest, force)
        self._covered = self.resumed.covered() if self.resumed is not None else {}

    def _open(self, manifest: dict, force: bool) -> Snapshot | None:
        old = self.store.read_manifest()
        if old is not None:
            differences = manifest_differences(old, manifest)
            if differences and not force:
                msg = (f"checkpoint folder {self.store.folder} holds another run: " + "; ".join(differences)
                       + ". Use another folder, or force=True to start over.")
                raise CheckpointMismatchError(msg)
            if differences:  # and force
                log.warning("checkpoint folder %s held another run (%s): its checkpoint is discarded, "
                            "starting over (force)", self.store.folder, "; ".join(differences))
                self.store.clear()
                old = None
            elif old.get("versions") != manifest["versions"]:
                log.warning("checkpoint %s was written with other package versions: %s then, %s now",
                            self.store.folder, old.get("versions"), manifest["versions"])
        if old is None:
            self.store.write_manifest(manifest)
            return None
        snap = self.store.load()
        if snap is not None:
            log.warning("resuming from checkpoint %s: %d entries in %d files already done", snap.path,
                        snap.events, len(snap.covered()))
        return snap

    @classmethod
    def for_run(cls, folder, entries, treename, processor, schema, **kwargs) -> RunCheckpoint:
        """For :func:`hep_executor.analysis._runner.run`: ``entries`` from ``normalize_fileset``."""
        files = [(d, f, t) for d, f, t, _ in entries]
        return cls(folder, make_manifest(files, treename, processor, schema), **kwargs)

    @classmethod
    def for_items(cls, folder, items, function, **kwargs) -> RunCheckpoint:
        """For the coffea executor: ``items`` are Runner's WorkItems, ``function`` its task function."""
        files = {(i.dataset, i.filename, i.treename) for i in items}
        trees = {t for _, _, t in files}
        manifest = make_manifest(files, trees.pop() if len(trees) == 1 else None, _processor_in(function))
        return cls(folder, manifest, **kwargs)

    def remaining_items(self, items: list) -> list:
        """``items`` (WorkItems) less what the loaded checkpoint covers, cut where it covers them."""
        segments = [_ItemRange(i, i.entrystart, i.entrystop) for i in items]
        left = self.remaining(segments, {i.filename: _uuid_text(i.fileuuid) for i in items})
        return [dataclasses.replace(s.template, entrystart=s.start, entrystop=s.stop) for s in left]

    @property
    def covered(self) -> dict:
        """What the loaded checkpoint covers (empty when starting afresh)."""
        return self._covered

    def remaining(self, segments: list, uuids: dict[str, str]) -> list:
        """``segments`` less what the loaded checkpoint covers; checks that no file was replaced."""
        self.uuids.update(uuids)  # called once per file when streaming
        if self.resumed is None:
            return segments
        changed = [f for f, u in self.resumed.uuids.items() if u and uuids.get(f) and uuids[f] != u]
        if changed:
            msg = (f"checkpoint {self.store.folder}: file(s) replaced since it was written (another UUID): "
                   f"{', '.join(changed[:3])}. Use another folder, or force=True to start over.")
            raise CheckpointMismatchError(msg)
        return uncovered_segments(segments, self.covered)

    def restore_planner(self, source) -> None:
        """Give ``source`` the checkpointed sizing model (if it sizes chunks with the same targets)."""
        self.sizer = source.sizer
        if self.resumed is None or not self.resumed.planner or source.sizer is None:
            return
        try:
            old = pickle.loads(self.resumed.planner)
        except Exception as exc:  # a model of another version: start sizing afresh
            log.warning("checkpointed sizing model not restored: %s", exc)
            return
        if getattr(old, "targets", None) == source.sizer.targets:
            source.sizer = self.sizer = old
            source.known(old.categories)  # sized from the model at once, not probed again

    def planner_state(self) -> bytes:
        return pickle_bytes(self.sizer) if self.sizer is not None else b""

    def make_pipeline(self, manager, process_fn, **kwargs) -> CheckpointPipeline:
        self.pipeline = CheckpointPipeline(manager, process_fn, checkpoint=self, resumed=self.resumed, **kwargs)
        return self.pipeline

    @contextlib.contextmanager
    def ctrl_c(self):
        """SIGINT goes to the pipeline while the block runs (in the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, lambda signum, frame: self.pipeline.interrupt())
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def interrupted(self, path: Path, partial_output=None) -> RunInterrupted:
        covered = sum(b - a for p in self.pipeline.snapshot().parts for rs in p.coverage.values() for a, b in rs)
        msg = (f"run interrupted; checkpoint {path} holds {covered} entries. To resume, run the same call "
               f"with checkpoint={str(self.store.folder)!r}")
        log.warning("%s", msg)
        return RunInterrupted(msg, str(self.store.folder), partial_output)

    def finish(self, outcome, complete: bool) -> None:
        """After the pipeline returned: write the last checkpoint; raise if Ctrl-C stopped the run."""
        pipeline = self.pipeline
        if pipeline.interrupts:
            out = outcome.output
            raise self.interrupted(pipeline.save_now(), out.get("out") if isinstance(out, dict) else out)
        path = pipeline.save_now(complete=complete)
        log.info("checkpoint %s written (%s)", path, "complete" if complete else "after an error")

    def summary(self) -> dict:
        """The report's ``checkpoint`` entry: what was resumed, what this run processed, what it wrote.

        ``processed_entries`` counts the entries of the chunks this run processed;
        ``reprocessed_entries`` those of them the loaded checkpoint already held (0:
        no range was run twice).
        """
        s, p = self.store, self.pipeline
        return {"folder": str(s.folder), "resumed_seq": self.resumed.seq if self.resumed else None,
                "resumed_entries": self.resumed.events if self.resumed else 0,
                "resumed_ranges": {f: [list(r) for r in rs] for f, rs in self.covered.items()},
                "processed_entries": p.processed_entries if p else 0,
                "reprocessed_entries": p.reprocessed_entries if p else 0,
                "files_written": s.files_written, "bytes_written": s.bytes_written, "write_s": s.write_s}


@dataclasses.dataclass(frozen=True)
class _ItemRange:
    """A WorkItem's range, in the shape of a Segment (template, start, stop)."""

    template: Any
    start: int
    stop: int


def _overlap(ranges, start: int, stop: int) -> int:
    """Entries of ``[start, stop)`` in ``ranges`` (sorted, not overlapping)."""
    return sum(max(0, min(b, stop) - max(a, start)) for a, b in ranges if a < stop and start < b)


def _uuid_text(uuid) -> str:
    return uuid.hex() if isinstance(uuid, bytes) else str(uuid or "")


def _processor_in(function) -> Any:
    """The processor instance inside coffea's task function (nested partials), else the function."""
    todo = [function]
    while todo:
        fn = todo.pop()
        keywords = getattr(fn, "keywords", None) or {}
        if "processor_instance" in keywords:
            return keywords["processor_instance"]
        todo.extend(a for a in (*getattr(fn, "args", ()), *keywords.values()) if isinstance(a, functools.partial))
    return function
