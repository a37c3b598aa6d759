"""The user's own code on workers: files shipped with a task function, modules pickled by value.

:class:`ShippedFiles` holds the bytes of some files (a helper module, a
corrections JSON). It travels inside a task function
(:func:`with_files`), which goes once per worker and is cached there, so
the files cost one transfer per worker. Unpickled in a slot, it writes
them once per worker into ``SANDBOX/.hep-files/HASH/`` (a lock, then an
atomic rename, so slots that unpickle at once write once), puts that
folder first on ``sys.path``, and links each file into the sandbox,
which is the worker's working directory unless ``$HEP_EXECUTOR_SANDBOX``
names another. The function's own pickle comes after the files, so its
imports find them.

:func:`register_by_value` makes cloudpickle ship a module's code by value
when it is not part of an installed distribution (a processor module
beside the run script), so a worker that cannot import it still can run it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import cloudpickle

from hep_executor.errors import ConfigError

__all__ = ["SANDBOX_ENV", "ShippedFiles", "register_by_value", "sandbox_root", "with_files"]

log = logging.getLogger(__name__)

#: environment variable naming a worker's sandbox folder (default: its working directory)
SANDBOX_ENV = "HEP_EXECUTOR_SANDBOX"


class ShippedFiles:
    """Files to materialise on every worker that runs a function carrying them.

    Parameters
    ----------
    paths : list of str or Path
        Files or folders; each arrives under its base name.
    """

    def __init__(self, paths):
        self.contents: dict[str, bytes] = {}
        for path in map(Path, paths):
            _read_into(self.contents, path)
        digest = hashlib.blake2b(digest_size=12)
        for name in sorted(self.contents):
            digest.update(name.encode() + b"\0" + hashlib.blake2b(self.contents[name]).digest())
        self.digest = digest.hexdigest()
        self.folder: str | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of file contents shipped to each worker."""
        return sum(map(len, self.contents.values()))

    @property
    def names(self) -> list[str]:
        return sorted(self.contents)

    def __reduce__(self):
        return (_materialise, (self.digest, self.contents))


def _read_into(contents: dict[str, bytes], path: Path) -> None:
    if path.is_dir():
        for sub in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            contents[str(Path(path.name) / sub.relative_to(path))] = sub.read_bytes()
    elif path.is_file():
        contents[path.name] = path.read_bytes()
    else:
        msg = f"files= / extra_input_files: {str(path)!r} is no file or folder (from {os.getcwd()})"
        raise ConfigError(msg)


def sandbox_root() -> Path:
    """This worker's sandbox: ``$HEP_EXECUTOR_SANDBOX`` or the working directory."""
    return Path(os.environ.get(SANDBOX_ENV) or os.getcwd())


def _materialise(digest: str, contents: dict[str, bytes]) -> ShippedFiles:
    """On a worker: write the files once into the sandbox, put them on ``sys.path``."""
    root = sandbox_root()
    folder = root / ".hep-files" / digest
    if not folder.is_dir():
        _write_once(folder, contents)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    for top in {Path(name).parts[0] for name in contents}:
        link = root / top
        if not os.path.lexists(link):
            try:
                link.symlink_to(folder / top)
            except OSError as exc:  # another slot made it first, or a read-only folder
                log.debug("cannot link %s: %s", link, exc)
    shipped = ShippedFiles.__new__(ShippedFiles)
    shipped.contents, shipped.digest, shipped.folder = {}, digest, str(folder)
    return shipped


def _write_once(folder: Path, contents: dict[str, bytes]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.is_dir():
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            for name, data in contents.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class _WithFiles:
    """``fn`` that brings ``files`` along; the files unpickle first."""

    def __init__(self, files: ShippedFiles, fn):
        self.files, self.fn = files, fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __reduce__(self):
        return (_WithFiles, (self.files, self.fn))


def with_files(fn, files: ShippedFiles | None):
    """``fn``, carrying ``files`` to every worker it runs on (``fn`` itself if there are none)."""
    if files is None or not files.contents:
        return fn
    return _WithFiles(files, fn)


def register_by_value(*objects) -> list[str]:
    """Have cloudpickle ship by value the modules defining ``objects`` that are not installed.

    A module counts as installed when its file lies in the interpreter's
    own folders (standard library, site-packages) or its top-level
    package belongs to an installed distribution (editable ones too).
    Returns the names of the modules registered.
    """
    names = []
    for obj in objects:
        module = _module_of(obj)
        if module is None or module.__name__ in ("__main__", "builtins") or _installed(module):
            continue
        cloudpickle.register_pickle_by_value(module)
        names.append(module.__name__)
    return names


def _module_of(obj):
    if isinstance(obj, functools.partial):
        obj = obj.func
    if not isinstance(obj, type) and not inspect.isfunction(obj):
        obj = type(obj)
    return sys.modules.get(getattr(obj, "__module__", None) or "")


def _installed(module) -> bool:
    path = getattr(module, "__file__", None)
    if not path:
        return True
    real = os.path.realpath(path)
    if any(real.startswith(prefix + os.sep) for prefix in _interpreter_dirs() + _pth_dirs()):
        return True
    return module.__name__.partition(".")[0] in _distribution_packages()


@functools.lru_cache(maxsize=1)
def _interpreter_dirs() -> tuple[str, ...]:
    import site

    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")} | set(site.getsitepackages())
    return tuple(sorted(os.path.realpath(d) for d in dirs))


@functools.lru_cache(maxsize=1)
def _pth_dirs() -> tuple[str, ...]:
    """Folders that ``.pth`` files in site-packages put on every interpreter's path (path-based editables)."""
    dirs = set()
    for site_dir in _interpreter_dirs():
        for pth in Path(site_dir).glob("*.pth"):
            for line in _read_lines(pth):
                if line and not line.startswith(("#", "import ", "import\t")) and os.path.isdir(line):
                    dirs.add(os.path.realpath(line))
    return tuple(sorted(dirs))


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return []


@functools.lru_cache(maxsize=1)
def _distribution_packages() -> frozenset[str]:
    """Top-level names of installed distributions that may live outside site-packages.

    Only an editable install puts a distribution's code outside the
    interpreter's folders, so its names come from ``top_level.txt`` and
    from the mapping of setuptools' editable finders: a few ms, where
    ``importlib.metadata.packages_distributions()`` reads every
    distribution's RECORD (0.3-0.5 s at each manager start here).
    """
    import importlib.metadata

    names = set()
    for dist in importlib.metadata.distributions():
        names.update((dist.read_text("top_level.txt") or "").split())
    for name, finder in list(sys.modules.items()):
        if name.startswith("__editable__") and isinstance(getattr(finder, "MAPPING", None), dict):
            names.update(finder.MAPPING)
    return frozenset(names)
