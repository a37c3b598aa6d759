"""Packed environments: one archive of the interpreter and its packages, unpacked once per node.

``hep-executor pack-env OUT`` writes a tar of this Python's prefix (the
interpreter, its standard library and site-packages; a copy of
hep_executor's source in ``lib/hep-site``, which comes first on the path,
stands in for an editable install), bytecode compiled,
with a launcher ``bin/hep-python`` that sets ``PYTHONHOME`` and the
library path from wherever the archive is unpacked, so it runs with no
environment at all (``env -i``). ``--from conda`` hands the work to
conda-pack (a conda environment is relocatable by its design);
``--spec requirements.txt`` installs the listed packages into the
archive's site-packages instead of copying this one's.

Why a prefix copy for venvs, measured (this environment, 174 packages; 2 cores, load 0.3-1.6;
see benchmarks/README.md, "Packed environments"): a venv is not relocatable (it points at its
base interpreter, which a worker node may lack) and venv-pack is unmaintained since 2018. Against
pex 2.105 in venv mode (``pex -r requirements.txt --venv --venv-site-packages-copies --compile``):

- building: pex 164 s with its download cache warm (288 s cold), re-resolving every requirement
  from the index; ``pack-env`` 11.5 s (one ``tar`` pass);
- size: pex 343 MB, the tar 1.6 GB (1.2 GB and 1.7 GB once installed or unpacked on a node);
- on a node with no environment (``env -i``): the pex does not start (its shebang is
  ``#!/usr/bin/env python3.11``, and with no ``PATH`` its re-exec fails); with ``PATH`` it runs
  on whatever ``python3.11`` the node has (Debian's 3.11.2 here, not the 3.11.7 it was built
  with) and its first run takes 12 s; the archive unpacks and starts in 6.2 s and needs only
  ``sh``, ``tar`` and ``flock``;
- a worker's start (``-m hep_executor.worker --help``, median of 5): pex 651 ms and 2,187 file
  calls, the unpacked archive 149 ms and 1,511.

On a node, :func:`unpack` (and the same steps in the shell runner that
:func:`write_runner` writes for batch jobs) extracts the archive into
local scratch at ``SCRATCH/hep-env-HASH`` keyed by the archive's content
hash, under a lock, so two jobs on one node unpack once and later jobs
reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

from hep_executor.errors import BatchError, ConfigError

__all__ = ["LAUNCHER", "add_pack_arguments", "archive_digest", "check_archive", "find_x509_proxy", "pack",
           "pack_main", "unpack", "write_runner"]

log = logging.getLogger(__name__)

#: the launcher inside an unpacked environment
LAUNCHER = "bin/hep-python"

_LAUNCHER_TEXT = """#!/bin/sh
# run this environment's Python from wherever it was unpacked
# (${{0%/*}}, not dirname: no process and no PATH needed before Python starts)
case "$0" in */*) HERE=${{0%/*}} ;; *) HERE=. ;; esac
HERE=$(cd "$HERE/.." && pwd)
export PYTHONHOME="$HERE" PYTHONNOUSERSITE=1 PYTHONPATH="$HERE/lib/hep-site"
export LD_LIBRARY_PATH="$HERE/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
exec "$HERE/bin/{python}" "$@"
"""

#: left out of a prefix copy: never needed by a worker
_EXCLUDE = ("__editable__*", "*/lib/python3*/test", "*/lib/python3*/idlelib", "*/lib/python3*/ensurepip",
            "*/lib/python3*/tkinter", "*/lib/python3*/lib2to3", "*/share/man")


def pack(out: str | Path, *, source: str = "venv", spec: str | None = None) -> Path:
    """Write a relocatable archive of this environment (or of ``spec``) to ``out``.

    Parameters
    ----------
    out : path
        The archive to write (a ``.tar``).
    source : str
        ``venv`` (this interpreter's prefix) or ``conda`` (the active conda
        environment, through conda-pack).
    spec : str, optional
        A requirements file: its packages are installed into the archive
        instead of this environment's site-packages.
    """
    out = Path(out).absolute()
    if source == "conda":
        return _pack_conda(out)
    if source != "venv":
        msg = f"pack-env --from must be venv or conda, not {source!r}"
        raise ConfigError(msg)
    prefix = Path(sys.base_prefix)
    with tempfile.TemporaryDirectory(prefix="hep-pack-") as stage:
        extra = _stage_extras(Path(stage), prefix, spec)
        _tar(out, prefix, extra, skip_site=spec is not None)
    log.info("packed %s (%.0f MB)", out, out.stat().st_size / 2**20)
    return out


def _stage_extras(stage: Path, prefix: Path, spec: str | None) -> Path:
    """The files added to the prefix copy: launcher, our package (or the spec's packages), bytecode."""
    site = stage / "lib" / "hep-site"  # first on the launcher's path
    site.mkdir(parents=True)
    (stage / "bin").mkdir()
    launcher = stage / LAUNCHER
    launcher.write_text(_LAUNCHER_TEXT.format(python=Path(sys.executable).name))
    launcher.chmod(0o755)
    if spec is not None:
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site), "-r", spec])
    root = Path(__file__).resolve().parents[2]
    for name in ("hep_executor", "processors"):
        if (root / name).is_dir():
            shutil.copytree(root / name, site / name, ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(site)])
    return stage


def _tar(out: Path, prefix: Path, stage: Path, *, skip_site: bool) -> None:
    excludes = [f"--exclude={p}" for p in _EXCLUDE]
    if skip_site:
        excludes.append(f"--exclude=./{Path(sysconfig.get_paths()['purelib']).relative_to(prefix)}")
    _run(["tar", "-cf", str(out), *excludes, "-C", str(prefix), ".", "-C", str(stage), "."])


def _pack_conda(out: Path) -> Path:
    try:
        import conda_pack
    except ImportError:
        msg = "pack-env --from conda needs conda-pack in this environment (conda install conda-pack)"
        raise ConfigError(msg) from None
    conda_pack.pack(output=str(out), force=True)
    return out


def archive_digest(archive: str | Path) -> str:
    """The content hash that names an archive's unpacked folder."""
    digest = hashlib.blake2b(digest_size=10)
    with open(archive, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def unpack(archive: str | Path, scratch: str | Path | None = None, digest: str | None = None) -> Path:
    """Unpack ``archive`` into ``scratch/hep-env-HASH`` once; return that folder.

    Concurrent callers on one node wait on a lock and find it done;
    later callers reuse it. ``scratch`` defaults to ``$TMPDIR`` or ``/tmp``.
    """
    scratch = Path(scratch or os.environ.get("TMPDIR") or "/tmp")
    target = scratch / f"hep-env-{digest or archive_digest(archive)}"
    if (target / ".complete").exists():
        return target
    scratch.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        shutil.rmtree(f"{target}.tmp", ignore_errors=True)
        os.makedirs(f"{target}.tmp")
        _run(["tar", "-xf", str(archive), "-C", f"{target}.tmp"])
        Path(f"{target}.tmp/.complete").write_text(f"{os.getpid()}\n")  # who unpacked it
        os.rename(f"{target}.tmp", target)
    log.info("unpacked %s into %s", archive, target)
    return target


def find_x509_proxy() -> str | None:
    """The grid proxy, found as coffea does: ``$X509_USER_PROXY``, else ``/tmp/x509up_u$UID``."""
    path = os.environ.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}"
    return path if os.path.isfile(path) else None


def check_archive(archive: str | os.PathLike, setting: str = "--env") -> Path:
    """The absolute path of ``archive`` once it is known to be a readable tar archive.

    Raises
    ------
    ConfigError
        No such file, a file that cannot be read, or one that is not a tar
        archive; the message names ``setting`` and the path.
    """
    path = Path(archive).expanduser().absolute()
    hint = "make one with hep-executor pack-env"
    if not path.is_file():
        msg = f"{setting} {path}: no such archive ({hint})"
        raise ConfigError(msg)
    try:
        is_tar = tarfile.is_tarfile(path)
    except OSError as exc:
        msg = f"{setting} {path}: cannot read the archive: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    if not is_tar:
        msg = f"{setting} {path}: not a tar archive ({hint})"
        raise ConfigError(msg)
    return path


def write_runner(archive: str | Path, *, proxy: str | None = None, setting: str = "--env") -> Path:
    """Write ``ARCHIVE.run``: a shell script that unpacks once per node and runs its Python.

    Batch jobs use it as their interpreter (``WorkerSpec.python``). The
    grid proxy (``proxy``, default :func:`find_x509_proxy`) is copied next
    to the archive, readable by its owner only, and exported to the worker.
    ``setting`` names the option that gave the archive in errors
    (see :func:`check_archive`).
    """
    archive = check_archive(archive, setting)
    digest = archive_digest(archive)
    proxy = proxy or find_x509_proxy()
    lines = ["#!/bin/sh", "# unpack the environment once per node, then run its Python", "set -e",
             f'D="${{TMPDIR:-/tmp}}/hep-env-{digest}"',
             'if [ ! -e "$D/.complete" ]; then', '  mkdir -p "$(dirname "$D")"',
             '  ( flock 9; if [ ! -e "$D/.complete" ]; then rm -rf "$D.tmp"; mkdir -p "$D.tmp";',
             f'    tar -xf {shlex.quote(str(archive))} -C "$D.tmp"; echo $$ > "$D.tmp/.complete";'
             ' mv "$D.tmp" "$D"; fi ) 9>"$D.lock"',
             "fi"]
    if proxy:
        copy = archive.with_name(archive.name + ".x509")
        shutil.copyfile(proxy, copy)
        copy.chmod(0o600)
        lines.append(f"export X509_USER_PROXY={shlex.quote(str(copy))}")
    lines.append(f'exec "$D/{LAUNCHER}" "$@"')
    runner = archive.with_name(archive.name + ".run")
    runner.write_text("\n".join(lines) + "\n")
    runner.chmod(0o755)
    return runner


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        msg = f"{shlex.join(cmd[:4])} ... failed ({done.returncode}): {done.stderr.strip()[-800:]}"
        raise BatchError(msg)


def add_pack_arguments(parser) -> None:
    """Options of ``hep-executor pack-env``."""
    parser.add_argument("out", help="the archive to write (.tar)")
    parser.add_argument("--from", dest="source", choices=("venv", "conda"), default="venv",
                        help="pack this interpreter's prefix (venv, default) or the conda environment")
    parser.add_argument("--spec", help="requirements.txt whose packages go in instead of this site-packages")


def pack_main(args) -> int:
    """``hep-executor pack-env``: write the archive and say where."""
    out = pack(args.out, source=args.source, spec=args.spec)
    log.warning("wrote %s (%.0f MB); use it with submit-workers --env %s", out, out.stat().st_size / 2**20, out)
    return 0
