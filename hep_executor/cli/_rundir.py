"""A run's own folder: ``<base>/<name>-<time>/``, never an earlier run's, with a ``latest``
link beside it; the DEBUG ``run.log`` written there while the run goes on; and the
``report.json`` written whatever the ending (done, failed, interrupted).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DEFAULT_BASE", "failure_report", "link_latest", "new_run_dir", "run_log", "write_json"]

DEFAULT_BASE = "hep-executor-runs"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def new_run_dir(base: str | Path, name: str) -> Path:
    """Create and return ``base/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if taken).

    The folder is created with ``exist_ok=False``, so two runs started in
    the same second get different folders and none writes over another.
    """
    base = Path(base).resolve()
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name) or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        path = base / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    msg = f"no free run folder name under {base}"
    raise FileExistsError(msg)


def link_latest(run_dir: Path) -> Path:
    """Point ``<base>/latest`` at ``run_dir`` (replaced atomically); return the link.

    A ``latest`` that is not a link (the user's own folder or file) is left alone.
    """
    link = run_dir.parent / "latest"
    if link.exists() and not link.is_symlink():
        logging.getLogger(__name__).warning("%s is not a link: not pointing it at %s", link, run_dir.name)
        return link
    tmp = run_dir.parent / f".latest-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, link)
    return link


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[Path]:
    """Send log records to ``path`` while the block runs: hep_executor's from DEBUG up, others' from INFO.

    The root logger is opened to DEBUG for the file; handlers already on it
    (the console's) keep their own levels.
    """
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_ours_or_info)
    old_level = root.level
    opened = [h for h in root.handlers if h.level == logging.NOTSET]
    for h in opened:  # they saw what the root's level let through: keep it so
        h.setLevel(old_level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for h in opened:
            h.setLevel(logging.NOTSET)
        handler.close()


def _ours_or_info(record: logging.LogRecord) -> bool:
    """DEBUG records of hep_executor; INFO and up of the libraries (font caches are noise)."""
    return record.levelno >= logging.INFO or record.name.split(".")[0] in ("hep_executor", "processors")


def failure_report(exc: BaseException, status: str, progress: dict, report: dict | None) -> dict:
    """The report of a run that ended in ``exc``: status, error with traceback, partial state.

    Parameters
    ----------
    exc : BaseException
        What ended the run.
    status : str
        ``failed`` or ``interrupted``.
    progress : dict
        What the run had done (files, chunks, events), from the progress tracker.
    report : dict, optional
        The runner's own report where it got that far.
    """
    out = dict(report or {})
    out["status"] = status
    out["error"] = {"type": type(exc).__name__, "message": str(exc),
                    "traceback": "".join(traceback.format_exception(exc))}
    out["partial"] = progress
    return out


def write_json(data: dict, path: Path) -> str:
    """Write ``data`` as indented JSON (atomically: a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)
    return str(path)
