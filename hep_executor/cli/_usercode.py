"""Finding the user's processor: ``module:Class`` looked up beside the config or fileset,
in the working directory, on ``--path`` folders, then among installed packages.

A module found in one of those folders (not installed) is registered with
cloudpickle to travel by value, so workers that cannot import it by name
(remote ones, or local ones started from another folder) still run it.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from types import ModuleType

from hep_executor.errors import ConfigError

__all__ = ["import_processor_module", "load_processor", "search_dirs"]

log = logging.getLogger(__name__)


def search_dirs(*, config_dir: str | None = None, fileset_path: str | None = None,
                extra: list[str] | None = None) -> list[Path]:
    """The folders a processor module is looked for in, in order, without repeats.

    Parameters
    ----------
    config_dir : str, optional
        Folder of the run config.
    fileset_path : str, optional
        The fileset JSON file (its folder is searched).
    extra : list of str, optional
        ``--path`` folders.
    """
    dirs = []
    if config_dir:
        dirs.append(Path(config_dir))
    if fileset_path and "://" not in fileset_path:
        dirs.append(Path(fileset_path).resolve().parent)
    dirs.append(Path.cwd())
    dirs.extend(Path(p) for p in extra or [])
    seen: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d not in seen:
            seen.append(d)
    return seen


def _split(spec: str) -> tuple[str, str]:
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        msg = f"the processor must be given as 'module:Class' (e.g. myproc:MyProcessor), got {spec!r}"
        raise ConfigError(msg)
    return module_name, name


def _local_file(module_name: str, dirs: list[Path]) -> tuple[Path, Path] | None:
    """``(folder, file)``: the first ``folder/mod/path.py`` or ``folder/mod/path/__init__.py``."""
    rel = Path(*module_name.split("."))
    for d in dirs:
        for candidate in (d / rel.with_suffix(".py"), d / rel / "__init__.py"):
            if candidate.is_file():
                return d, candidate
    return None


def import_processor_module(spec: str, dirs: list[Path]) -> ModuleType:
    """Import the module of ``spec`` (``module:Class``), searching ``dirs`` first.

    Raises
    ------
    ConfigError
        The module is in none of ``dirs`` nor installed (the message lists
        the folders searched), or it failed to import (names its file).
    """
    module_name, _ = _split(spec)
    found = _local_file(module_name, dirs)
    local = found[1] if found else None
    if found is not None and str(found[0]) not in sys.path:
        sys.path.insert(0, str(found[0]))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.split(".")[0] == exc.name.split(".")[0]:
            searched = ", ".join(str(d) for d in dirs)
            msg = (f"processor module {module_name!r} (from {spec!r}) not found: looked for "
                   f"{module_name.replace('.', '/')}.py in {searched} and among installed packages; "
                   "put it beside the config or fileset, or add its folder with --path DIR")
            raise ConfigError(msg) from exc
        msg = f"processor module {module_name!r} ({local or 'installed'}) failed to import: {exc}"
        raise ConfigError(msg) from exc
    except Exception as exc:
        msg = f"processor module {module_name!r} ({local or 'installed'}) failed to import: {type(exc).__name__}: {exc}"
        raise ConfigError(msg) from exc
    _send_by_value(module, dirs)
    return module


def _send_by_value(module: ModuleType, dirs: list[Path]) -> None:
    """Pickle a module found in ``dirs`` (not installed) by value for the workers."""
    import cloudpickle

    path = Path(getattr(module, "__file__", "") or "").resolve()
    if any(d == path.parent or d in path.parents for d in dirs) and "site-packages" not in path.parts:
        top = sys.modules[module.__name__.split(".")[0]]
        cloudpickle.register_pickle_by_value(top)
        log.debug("processor module %s (%s) travels to workers by value", module.__name__, path)


def load_processor(spec: str, options: dict, dirs: list[Path]):
    """Import ``spec`` (``module:Class``) and build it with ``options``; return (instance, module).

    Raises
    ------
    ConfigError
        The module cannot be imported (see :func:`import_processor_module`), it
        has no such class, or the class refused the options.
    """
    module_name, name = _split(spec)
    module = import_processor_module(spec, dirs)
    cls = getattr(module, name, None)
    if cls is None:
        public = sorted(n for n in dir(module) if not n.startswith("_") and isinstance(getattr(module, n), type))
        msg = f"processor module {module_name!r} ({module.__file__}) has no {name!r}; it defines: {', '.join(public)}"
        raise ConfigError(msg)
    try:
        return cls(**options), module
    except TypeError as exc:
        msg = f"processor {spec!r} refused its options {options}: {exc}"
        raise ConfigError(msg) from exc
