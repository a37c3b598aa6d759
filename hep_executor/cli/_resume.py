"""``hep-executor run --resume DIR``: what a checkpoint folder keeps of the command that wrote it.

Before a run starts, :func:`save_resume_info` writes ``run_config.json`` into its
checkpoint folder: the whole run config, the extra processor search folders
and the run folder. :func:`load_resume` reads it back from ``DIR``, which is
that checkpoint folder or the run folder holding it (a run without
``--checkpoint`` keeps its checkpoint in ``<run folder>/checkpoint``), so
``--resume DIR`` needs no other argument.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hep_executor.cli._config import RunConfig, _build
from hep_executor.cli._rundir import write_json
from hep_executor.errors import ConfigError

__all__ = ["RESUME_FILE", "Resumed", "load_resume", "save_resume_info"]

RESUME_FILE = "run_config.json"
#: the checkpoint folder inside a run folder (the run names no other)
OWN_FOLDER = "checkpoint"


@dataclasses.dataclass(frozen=True)
class Resumed:
    """A run to resume: its config, processor search folders, and the run folder to reuse (or None)."""

    config: RunConfig
    search_path: list[str]
    run_dir: Path | None
    folder: Path


def save_resume_info(folder: str | Path, config: RunConfig, search_path: list[str] | None, run_dir: Path) -> None:
    """Write ``run_config.json`` into the checkpoint ``folder`` (made if missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"config": dataclasses.asdict(config), "search_path": list(search_path or []), "run_dir": str(run_dir)}
    write_json(data, folder / RESUME_FILE)


def _checkpoint_folder(path: Path) -> Path:
    """``path`` itself or ``path/checkpoint``, whichever holds ``run_config.json``."""
    for folder in (path, path / OWN_FOLDER):
        if (folder / RESUME_FILE).is_file():
            return folder
    if (path / "manifest.json").is_file():
        msg = (f"--resume {path}: this checkpoint was written by run(..., checkpoint=...) and holds no run "
               f"config; resume it with the same call, or with 'hep-executor run ... --checkpoint {path}'")
    else:
        msg = (f"--resume {path}: no checkpoint there (neither {path / RESUME_FILE} nor "
               f"{path / OWN_FOLDER / RESUME_FILE}); give the run folder or its checkpoint folder "
               f"(a finished run keeps none)")
    raise ConfigError(msg)


def _config(data: dict, where: Path) -> RunConfig:
    """The RunConfig of ``dataclasses.asdict`` output read back from JSON."""
    data = dict(data)
    base_dir = data.pop("base_dir", ".")
    try:
        config = _build(RunConfig, data, "")
    except ConfigError as exc:
        msg = f"--resume: the run config in {where} cannot be read back: {exc}"
        raise ConfigError(msg) from exc
    return dataclasses.replace(config, base_dir=base_dir)


def load_resume(path: str | Path) -> Resumed:
    """The run whose checkpoint is in ``path`` (its checkpoint folder or its run folder).

    Raises
    ------
    ConfigError
        ``path`` holds no checkpoint of ``hep-executor run`` (the message names it).
    """
    path = Path(path).resolve()
    folder = _checkpoint_folder(path)
    file = folder / RESUME_FILE
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        msg = f"--resume {path}: cannot read {file}: {exc}"
        raise ConfigError(msg) from exc
    config = _config(data["config"], file)
    own = config.checkpoint_dir() is None  # the checkpoint lives in its run folder: finish there
    run_dir = folder.parent if own else None
    return Resumed(config, list(data.get("search_path") or []), run_dir, folder)
