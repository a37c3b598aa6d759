"""Workloads of the self-tuning benchmarks (``chunksize.py``, ``allocation.py``).

- :func:`sample_fileset`: NanoAOD-like samples made once by
  :func:`hep_executor.demo._samples.make_samples` and kept in a cache folder
  (one folder per setting, under ``benchmarks/results/samples/``).
- :class:`MemoryHungry`: wraps a processor and holds a buffer that grows
  with the chunk (MB per 1000 events), for the whole of the wrapped
  ``process``. The TopEFT-like processor reads events lazily and its
  peak memory barely depends on the chunk size; the wrapper stands for
  the analyses whose memory does (systematic variations, big arrays).
- :class:`JetMemoryProcessor`: a light synthetic processor whose memory
  is proportional to the number of jets in the chunk, with a cost per jet
  that differs per dataset (signal, background and data differ), so
  that task categories need different allocations.

The classes live in an importable module: the worker processes load
them by reference (the repository root is on their ``PYTHONPATH``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from benchmarks._stats import RESULTS_DIR

__all__ = ["JetMemoryProcessor", "MemoryHungry", "hold_memory", "ready_manager", "sample_fileset"]

log = logging.getLogger(__name__)

#: default cache of generated samples
SAMPLES_DIR = RESULTS_DIR / "samples"

_MB = 2**20


def sample_fileset(events_per_file: int, files_per_dataset: int, *, extra_branches: int | None = None,
                   seed: int | None = None, cache: Path = SAMPLES_DIR) -> dict[str, list[str]]:
    """The fileset of cached samples with these settings; written on first use.

    Parameters
    ----------
    events_per_file, files_per_dataset : int
        As in :func:`hep_executor.demo._samples.make_samples`.
    extra_branches, seed : int, optional
        As there; the library defaults when None.
    cache : Path
        Folder holding one sub-folder per setting.

    Returns
    -------
    dict of str to list of str
        ``{dataset: [absolute paths]}`` for datasets ``ttH_EFT``, ``ttbar`` and ``data``.
    """
    from hep_executor.demo import samples

    extra = samples.DEFAULT_EXTRA_BRANCHES if extra_branches is None else extra_branches
    seed = samples.DEFAULT_SEED if seed is None else seed
    folder = Path(cache) / f"nano_{events_per_file}x{files_per_dataset}_b{extra}_s{seed}"
    index = folder / "fileset.json"  # written last by make_samples: its presence means complete
    if index.exists():
        return samples.load_fileset(index)
    log.warning("writing %d x %d sample files per dataset into %s (once; later runs reuse them)",
                files_per_dataset, events_per_file, folder)
    t0 = time.perf_counter()
    fileset = samples.make_samples(folder, events_per_file=events_per_file,
                                   files_per_dataset=files_per_dataset, extra_branches=extra, seed=seed)
    log.warning("samples written in %.0f s", time.perf_counter() - t0)
    return fileset


def ready_manager(workers: int):
    """A ``Manager`` with ``workers`` local workers that have joined, preloaded as ``run()``'s own."""
    from hep_executor import Manager
    from hep_executor.analysis import WORKER_SETUP

    manager = Manager(local_workers=workers, **WORKER_SETUP)
    if manager.wait_for_workers(workers, timeout=120) < workers:
        joined = len(manager.workers())
        manager.close()
        msg = f"only {joined} of {workers} local workers joined within 120 s"
        raise RuntimeError(msg)
    return manager


def hold_memory(megabytes: float, *, steps: int = 1, pause_s: float = 0.0) -> list[np.ndarray]:
    """Allocate and touch ``megabytes`` of memory in ``steps`` blocks; return the blocks.

    With ``pause_s``, sleep that long after each block, so the memory
    grows over the task as a real one's does (and a watcher polling the
    resident size sees it).
    """
    blocks = []
    per_block = max(0, int(megabytes * _MB / max(1, steps) / 8))
    for _ in range(max(1, steps)):
        blocks.append(np.ones(per_block))  # ones, not empty: the pages must be resident
        if pause_s:
            time.sleep(pause_s)
    return blocks


class MemoryHungry:
    """A processor wrapper holding ``mb_per_kevent`` MB per 1000 events while ``inner`` runs.

    Parameters
    ----------
    inner : processor
        A coffea processor (``process``, ``postprocess``).
    mb_per_kevent : float
        Extra memory per 1000 events of the chunk, in MB.
    """

    def __init__(self, inner, mb_per_kevent: float):
        if mb_per_kevent < 0:
            msg = f"MemoryHungry: mb_per_kevent must be >= 0, got {mb_per_kevent}"
            raise ValueError(msg)
        self.inner = inner
        self.mb_per_kevent = float(mb_per_kevent)

    def process(self, events):
        """Hold the chunk's extra memory, run the wrapped processor, let go."""
        blocks = hold_memory(self.mb_per_kevent * len(events) / 1000.0)
        try:
            return self.inner.process(events)
        finally:
            del blocks

    def postprocess(self, accumulator):
        """The wrapped processor's ``postprocess``."""
        return self.inner.postprocess(accumulator)


class JetMemoryProcessor:
    """Count events and jets; hold ``kb_per_jet[dataset]`` KB per jet of the chunk.

    Parameters
    ----------
    kb_per_jet : mapping of str to float
        Extra memory per jet, per dataset (a dataset left out holds none).
    hold_s : float
        The memory grows in 4 steps over this many seconds (stands for the
        computation, without loading the shared cores).
    """

    def __init__(self, kb_per_jet: Mapping[str, float], hold_s: float = 0.2):
        self.kb_per_jet = dict(kb_per_jet)
        self.hold_s = float(hold_s)

    def process(self, events):
        """Return ``{"events": {dataset: n}, "jets": {dataset: n}, "sum_pt": {dataset: GeV}}``."""
        import awkward as ak

        dataset = events.metadata["dataset"]
        pt = events.Jet.pt
        jets = int(ak.sum(ak.num(pt)))
        extra_mb = self.kb_per_jet.get(dataset, 0.0) * jets / 1024.0
        blocks = hold_memory(extra_mb, steps=4, pause_s=self.hold_s / 4)
        del blocks
        return {"events": {dataset: len(events)}, "jets": {dataset: jets},
                "sum_pt": {dataset: float(ak.sum(pt))}}

    def postprocess(self, accumulator):
        """Nothing to do; returns ``accumulator``."""
        return accumulator
