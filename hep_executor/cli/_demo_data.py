"""The demo's input: the seeded sample set of :mod:`hep_executor.demo._samples`, written once
to the user's cache (``$HEP_EXECUTOR_CACHE``, else ``$XDG_CACHE_HOME/hep_executor``, else
``~/.cache/hep_executor``) so that an installed package runs the demo anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "demo_fileset"]

log = logging.getLogger(__name__)

SAMPLE_SET = "demo-samples-v1"


def cache_dir() -> Path:
    """The user's cache folder of hep_executor (not created)."""
    if os.environ.get("HEP_EXECUTOR_CACHE"):
        return Path(os.environ["HEP_EXECUTOR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hep_executor"


def demo_fileset(*, say=None) -> dict[str, list[str]]:
    """``{dataset: [paths]}`` of the demo samples, written on first use.

    Parameters
    ----------
    say : callable, optional
        Called with one line when the samples are written (default: print
        to stderr), so the user knows where 7 MB went and why the first run waits.
    """
    from hep_executor.demo import samples

    folder = cache_dir() / f"{SAMPLE_SET}-seed{samples.DEFAULT_SEED}"
    index = folder / "fileset.json"
    if not index.exists():
        (say or (lambda line: print(line, file=sys.stderr)))(
            f"hep-executor: writing the demo samples (seeded, about 7 MB, once) to {folder}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=folder.parent))
        try:
            samples.make_samples(tmp)
            try:
                tmp.rename(folder)
            except OSError:  # another run wrote it meanwhile
                log.debug("demo samples already written by another run at %s", folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raw = json.loads(index.read_text())
    return {ds: [str(folder / f) for f in files] for ds, files in raw.items()}
