"""Checkpoint files of a run: merged partial outputs with their coverage, written atomically.

A checkpoint folder holds a few files, never one per chunk:

- ``manifest.json``: what the run is: its files (dataset, file, tree), the
  tree name, the processor (class and a SHA-256 of its pickled state), the
  schema and the package versions. :func:`manifest_differences` names what
  differs between two manifests, so a resume can refuse another run.
- ``state-NNNNNN.ckpt``: one checkpoint: a JSON header (the coverage of each
  partial output as ``{file: [(start, stop)]}``, the files' UUIDs) followed
  by the partial outputs' bytes exactly as the manager holds them (never
  deserialized here), the pickled sizing model, and a SHA-256 of all that.
  Each is written under a temporary name, fsynced, renamed and its folder
  fsynced; the newest :data:`KEEP` are kept, so a file cut short (killed
  mid-write, a full disk) falls back to the one before.

:func:`uncovered_segments` subtracts what a checkpoint covers from a plan.
The run-time side (when to write, resume, Ctrl-C) is in
:mod:`hep_executor.analysis._checkpoint_run`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import struct
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from hep_executor.engine import pickle_bytes
from hep_executor.planning import Coverage

__all__ = ["CheckpointStore", "Part", "Snapshot", "compact", "make_manifest", "manifest_differences",
           "uncovered_segments"]

log = logging.getLogger(__name__)

MAGIC = b"HEPXCKP1"
FORMAT = 1
#: checkpoint files kept: the newest, and the one before in case the newest is cut short
KEEP = 2
_STATE = re.compile(r"state-(\d{6,})\.ckpt$")
_PACKAGES = ("hep_executor", "coffea", "awkward", "uproot", "numpy")

Ranges = dict[str, list[tuple[int, int]]]


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read back (cut short, or not ours)."""


@dataclass
class Part:
    """One partial output as the manager holds it: ``(bytes, compressed)`` and what it covers."""

    payload: tuple[bytes, bool]
    coverage: Ranges


@dataclass
class Snapshot:
    """What one checkpoint file holds."""

    parts: list[Part] = field(default_factory=list)
    uuids: dict[str, str] = field(default_factory=dict)
    planner: bytes = b""
    complete: bool = False
    seq: int = 0
    path: Path | None = None

    def covered(self) -> Ranges:
        """Every part's coverage together, ``{file: [(start, stop)]}`` sorted and compacted."""
        out: Ranges = {}
        for part in self.parts:
            for name, ranges in part.coverage.items():
                out.setdefault(name, []).extend(ranges)
        return {name: compact(rs) for name, rs in out.items()}

    @property
    def events(self) -> int:
        return sum(b - a for rs in self.covered().values() for a, b in rs)


def compact(ranges) -> list[tuple[int, int]]:
    """Sort ranges and join those that touch (overlaps are kept, so doubling stays visible)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges):
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def uncovered_segments(segments: list, covered: Ranges) -> list:
    """The parts of ``segments`` (:class:`~hep_executor.analysis._sources.Segment`) not in ``covered``."""
    out = []
    for seg in segments:
        name = seg.template.filename
        have = covered.get(name)
        if not have:
            out.append(seg)
            continue
        gaps = Coverage.check({name: have}, {name: [(seg.start, seg.stop)]}).missing.get(name, [])
        out.extend(dataclasses.replace(seg, start=a, stop=b) for a, b in gaps)
    return out


# ------------------------------------------------------------------ manifest
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib_metadata.version(name.replace("_", "-"))
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _processor_state(processor: Any) -> str:
    data = processor if isinstance(processor, bytes) else pickle_bytes(processor)
    return hashlib.sha256(data).hexdigest()


def _instance(processor: Any) -> Any:
    """The instance of coffea's lz4-compressed cloudpickle bytes (the bytes if they do not load).

    The state is hashed from the instance, not from coffea's bytes: those change
    when the processor's module is later pickled by value (see analysis.usercode).
    """
    if not isinstance(processor, bytes):
        return processor
    import cloudpickle
    import lz4.frame

    try:
        return cloudpickle.loads(lz4.frame.decompress(processor))
    except Exception:  # noqa: BLE001 - unknown bytes: hash them as they are
        return processor


def make_manifest(files, treename: str | None, processor: Any, schema: Any = None) -> dict:
    """The manifest of a run over ``files``, ``(dataset, filename, treename)`` tuples.

    ``processor`` is the processor instance, or coffea's pickled bytes of it.
    """
    processor = _instance(processor)
    cls = type(processor)
    return {
        "format": FORMAT,
        "files": sorted([str(d), str(f), str(t)] for d, f, t in files),
        "treename": treename,
        "processor": {"class": f"{cls.__module__}.{cls.__qualname__}" if not isinstance(processor, bytes)
                      else "pickled", "state_sha256": _processor_state(processor)},
        "schema": None if schema is None else getattr(schema, "__name__", repr(schema)),
        "versions": _versions(),
    }


def _listed(rows: list[tuple[str, str]], limit: int = 3) -> str:
    text = ", ".join(f"{f} ({d})" for d, f in rows[:limit])
    return text + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def manifest_differences(old: dict, new: dict) -> list[str]:
    """What makes ``new`` another run than ``old``, one phrase each (empty: the same run).

    Package versions are not compared here (a new version resumes, with a warning).
    """
    out = []
    old_files = {(d, f): t for d, f, t in old.get("files", [])}
    new_files = {(d, f): t for d, f, t in new.get("files", [])}
    if gone := sorted(set(old_files) - set(new_files)):
        out.append(f"files not in this fileset: {_listed(gone)}")
    if added := sorted(set(new_files) - set(old_files)):
        out.append(f"files new in this fileset: {_listed(added)}")
    if trees := sorted(k for k in set(old_files) & set(new_files) if old_files[k] != new_files[k]):
        d, f = trees[0]
        out.append(f"tree of {len(trees)} file(s) differs, e.g. {f}: {old_files[(d, f)]!r} then, "
                   f"{new_files[(d, f)]!r} now")
    if not trees and old.get("treename") != new.get("treename"):
        out.append(f"treename {old.get('treename')!r} then, {new.get('treename')!r} now")
    was, now = old.get("processor", {}), new.get("processor", {})
    if was.get("class") != now.get("class"):
        out.append(f"processor class {was.get('class')} then, {now.get('class')} now")
    elif was.get("state_sha256") != now.get("state_sha256"):
        out.append(f"processor {now.get('class')} has another state (its pickled attributes differ)")
    if old.get("schema") != new.get("schema"):
        out.append(f"schema {old.get('schema')} then, {new.get('schema')} now")
    return out


# ------------------------------------------------------------------ files
def _atomic_write(path: Path, chunks) -> int:
    """Write ``chunks`` to ``path`` via a temporary name, fsync and rename; return the bytes written."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    with open(tmp, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            n += len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return n


def _encode(snapshot: Snapshot) -> list[bytes]:
    header = {"format": FORMAT, "seq": snapshot.seq, "time": time.time(), "complete": snapshot.complete,
              "uuids": snapshot.uuids, "planner": len(snapshot.planner),
              "parts": [{"length": len(p.payload[0]), "compressed": bool(p.payload[1]),
                         "coverage": {f: compact(rs) for f, rs in p.coverage.items()}} for p in snapshot.parts]}
    head = json.dumps(header, separators=(",", ":")).encode()
    chunks = [MAGIC, struct.pack("<Q", len(head)), head, *(p.payload[0] for p in snapshot.parts), snapshot.planner]
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return [*chunks, digest.digest()]


def _decode(data: bytes, path: Path) -> Snapshot:
    if len(data) < 48 or data[:8] != MAGIC:
        msg = f"{path}: not a checkpoint file"
        raise CorruptCheckpoint(msg)
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        msg = f"{path}: checksum mismatch (cut short while written?)"
        raise CorruptCheckpoint(msg)
    (n,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16:16 + n])
    pos, parts = 16 + n, []
    for p in header["parts"]:
        payload = (data[pos:pos + p["length"]], p["compressed"])
        parts.append(Part(payload, {f: [tuple(r) for r in rs] for f, rs in p["coverage"].items()}))
        pos += p["length"]
    planner = data[pos:pos + header["planner"]]
    return Snapshot(parts, header["uuids"], planner, header["complete"], header["seq"], path)


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in a temporary file's name (``.NAME.tmp-PID``) still runs (may be writing)."""
    pid = tmp.name.rpartition("-")[2]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class CheckpointStore:
    """The checkpoint folder of one run: its manifest and its newest checkpoint files.

    Parameters
    ----------
    folder : str or Path
        Created if missing (on the manager's disk; workers never read it).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".*.tmp-*"):  # left by a run killed mid-write
            if not _writer_alive(stale):
                stale.unlink(missing_ok=True)
        self.files_written = 0
        self.bytes_written = 0
        self.write_s = 0.0

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def read_manifest(self) -> dict | None:
        """The stored manifest, or None when there is none."""
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return None

    def write_manifest(self, manifest: dict) -> None:
        self._write(self.manifest_path, [json.dumps(manifest, indent=1, sort_keys=True).encode()])

    def states(self) -> list[Path]:
        """The checkpoint files, oldest first."""
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _STATE.match(p.name))]
        return [p for _, p in sorted(found)]

    def load(self) -> Snapshot | None:
        """The newest checkpoint that reads back whole (older ones are the fallback); None if none."""
        for path in reversed(self.states()):
            try:
                return _decode(path.read_bytes(), path)
            except (CorruptCheckpoint, ValueError, KeyError, OSError) as exc:
                log.warning("checkpoint %s cannot be read (%s): falling back to the one before", path, exc)
        return None

    def save(self, snapshot: Snapshot) -> Path:
        """Write ``snapshot`` as the next checkpoint file; drop all but the newest :data:`KEEP`."""
        states = self.states()
        last = int(_STATE.match(states[-1].name).group(1)) if states else 0
        snapshot.seq = max(snapshot.seq, last + 1)
        path = self.folder / f"state-{snapshot.seq:06d}.ckpt"
        self._write(path, _encode(snapshot))
        for old in self.states()[:-KEEP]:
            old.unlink(missing_ok=True)
        return path

    def clear(self) -> None:
        """Remove the manifest and every checkpoint file (a run started over)."""
        for path in self.states():
            path.unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)

    def _write(self, path: Path, chunks) -> None:
        t0 = time.perf_counter()
        self.bytes_written += _atomic_write(path, chunks)
        self.files_written += 1
        self.write_s += time.perf_counter() - t0
