"""Run configuration: frozen dataclasses that YAML configs map onto one to one.

An unknown key anywhere is an error that names it (with its dotted path);
relative paths in a config are taken from the config file's folder, and
``${VAR}`` in a string value is replaced by that environment variable
(an unset one is an error naming it).
``hep_executor/cli/demo.yaml`` (linked as ``configs/demo.yaml``) is the
embedded default of ``hep-executor run``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hep_executor.analysis import load_fileset, resolve_paths
from hep_executor.errors import ConfigError

DEMO_FILESET = "demo"
SCHEMA_ALIASES = {"NanoAOD": "NanoAODSchema", "Base": "BaseSchema", "PFNano": "PFNanoAODSchema"}

__all__ = ["DEMO_FILESET", "SCHEMA_ALIASES", "CacheConfig", "ChunkingConfig", "OutputConfig", "ProcessorConfig",
           "ResourcesConfig", "RunConfig", "WorkersConfig", "default_config_path", "load_config"]


@dataclass(frozen=True)
class ProcessorConfig:
    """Which processor to run: ``module:Class`` and its constructor options."""

    cls: str = "processors.topeft_like:TopEFTLikeProcessor"
    options: dict = field(default_factory=dict)

    def build(self, dirs: list[Path] | None = None):
        """Import the class (looked for in ``dirs`` first) and make an instance.

        Returns ``(instance, module)``; see :func:`hep_executor.cli._usercode.load_processor`.
        """
        from hep_executor.cli._usercode import load_processor

        return load_processor(self.cls, dict(self.options), list(dirs or []))


@dataclass(frozen=True)
class WorkersConfig:
    """Where workers come from.

    ``batch`` is ``local`` (child processes of this run), ``slurm`` or
    ``condor`` (``count`` jobs submitted for the run and cancelled after).
    ``env`` is an archive from ``hep-executor pack-env`` that batch jobs
    unpack once per node and run from (local workers use this process's
    environment); ``files`` are files or folders shipped once to every
    worker, on its ``sys.path`` and in its working directory. Both are
    relative to the config's folder (see :meth:`RunConfig.worker_env`,
    :meth:`RunConfig.worker_files`).
    ``dask`` is a Dask scheduler's address: the run goes to that cluster's
    workers instead (``batch`` stays ``local``; ``count`` and the rest do not apply);
    ``gateway://HOST:PORT`` or ``{gateway: URL, cluster: NAME, auth: TYPE, workers: N,
    proxy: ADDRESS}`` is a dask-gateway's (a new cluster of N workers unless NAME is given).
    """

    batch: str = "local"
    count: int | None = None
    cores: int = 1
    memory: int | None = None
    disk: int = 4000
    host: str = "127.0.0.1"
    port: Any = 0
    key_file: str | None = None
    walltime: str | None = None
    env: str | None = None
    files: list = field(default_factory=list)
    dask: str | dict | None = None

    def __post_init__(self):
        if not isinstance(self.files, list) or not all(isinstance(f, str) for f in self.files):
            msg = f"workers.files must be a list of paths, not {self.files!r}"
            raise ConfigError(msg)
        if self.env is not None and not isinstance(self.env, str):
            msg = f"workers.env must be the path of an archive from hep-executor pack-env, not {self.env!r}"
            raise ConfigError(msg)
        if self.batch not in ("local", "slurm", "condor"):
            msg = f"workers.batch must be 'local', 'slurm' or 'condor', not {self.batch!r}"
            raise ConfigError(msg)
        if isinstance(self.dask, dict) and (not isinstance(self.dask.get("gateway"), str)
                                            or set(self.dask) - {"gateway", "cluster", "auth", "workers", "proxy"}):
            msg = ("workers.dask as a mapping is a dask-gateway's {gateway: URL, cluster: NAME, auth: TYPE, "
                   f"workers: N, proxy: ADDRESS}}, not {self.dask!r}")
            raise ConfigError(msg)
        if self.dask is not None and not isinstance(self.dask, dict) and (
                not isinstance(self.dask, str) or not self.dask.strip()):
            msg = f"workers.dask must be a Dask scheduler's address (tcp://HOST:PORT), not {self.dask!r}"
            raise ConfigError(msg)
        if self.dask and self.batch != "local":
            msg = (f"workers.dask ({self.dask}) runs on that Dask cluster's workers; "
                   f"it cannot go with workers.batch {self.batch!r} (leave batch at 'local')")
            raise ConfigError(msg)
        if self.count is not None and self.count < 0:
            msg = f"workers.count must be >= 0, not {self.count}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class ChunkingConfig:
    """Chunk sizes: fixed (``chunksize``) or dynamic toward ``targets``."""

    chunksize: int | None = None
    targets: dict = field(default_factory=lambda: {"wall_time": 30.0, "memory": 2000.0})
    maxchunks: int | None = None
    align_clusters: bool = False
    fan_in: int = 20

    def __post_init__(self):
        if self.chunksize is not None and self.chunksize < 1:
            msg = f"chunking.chunksize must be >= 1, not {self.chunksize}"
            raise ConfigError(msg)
        if self.fan_in < 2:
            msg = f"chunking.fan_in must be >= 2, not {self.fan_in}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class ResourcesConfig:
    """Task memory allocation: ``auto``, ``max-seen`` or ``fixed`` (with ``memory`` MB)."""

    mode: str = "auto"
    memory: int | None = None

    def __post_init__(self):
        if self.mode not in ("auto", "max-seen", "fixed"):
            msg = f"resources.mode must be 'auto', 'max-seen' or 'fixed', not {self.mode!r}"
            raise ConfigError(msg)
        if self.mode == "fixed" and not self.memory:
            msg = "resources.mode 'fixed' needs resources.memory (MB)"
            raise ConfigError(msg)


@dataclass(frozen=True)
class CacheConfig:
    """What is kept between runs: ``metadata`` is the SQLite file-metadata cache.

    True: the default cache file; False: every file's metadata is read and
    none kept; a path: that cache file.
    """

    metadata: Any = True

    def __post_init__(self):
        if not isinstance(self.metadata, (bool, str)):
            msg = f"cache.metadata must be true, false or a path, not {self.metadata!r}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class OutputConfig:
    """Where results go and what to plot.

    ``dir`` is the folder that holds one new sub-folder per run (default:
    ``hep-executor-runs`` in the working directory); ``lumi`` (fb^-1) is
    written on the plots.
    """

    dir: str | None = None
    lumi: float | None = None
    plot_hist: str | None = None
    plot_dataset: str | None = None
    wc_point: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """A whole run."""

    fileset: Any = DEMO_FILESET
    treename: str = "Events"
    schema: str = "NanoAODSchema"
    skipbadfiles: bool = False
    timeout: float = 60.0
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoint: str | None = None
    checkpoint_every_s: float | None = None
    checkpoint_every_chunks: int | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    base_dir: str = "."

    def resolve(self, path: str) -> str:
        """A path from the config, made absolute against the config's folder (URLs unchanged)."""
        if "://" in str(path) or Path(path).is_absolute():
            return str(path)
        return str((Path(self.base_dir) / path).resolve())

    def checkpoint_dir(self) -> str | None:
        """The checkpoint folder's absolute path (None: the run keeps no checkpoint)."""
        return self.resolve(self.checkpoint) if self.checkpoint else None

    def metadata_cache(self):
        """The runner's ``metadata_cache=`` setting: None (default file), False (none) or a path."""
        setting = self.cache.metadata
        if setting is True:
            return None
        return False if setting is False else self.resolve(setting)

    def worker_env(self) -> str | None:
        """``workers.env``'s absolute path, checked to be a readable tar archive (None: not set).

        Raises
        ------
        ConfigError
            Naming ``workers.env`` and the path, when it is missing or no archive.
        """
        if self.workers.env is None:
            return None
        from hep_executor.batch import check_archive

        return str(check_archive(self.resolve(self.workers.env), "workers.env"))

    def worker_files(self) -> list[str]:
        """``workers.files`` as absolute paths, each checked to exist.

        Raises
        ------
        ConfigError
            Naming ``workers.files`` and the first path that does not exist.
        """
        paths = [self.resolve(f) for f in self.workers.files]
        for path in paths:
            if not os.path.exists(path):
                msg = f"workers.files: {path}: no such file or folder"
                raise ConfigError(msg)
        return paths

    def fileset_path(self) -> str | None:
        """The fileset JSON file's absolute path (None: inline or the demo samples)."""
        if isinstance(self.fileset, dict) or self.fileset == DEMO_FILESET:
            return None
        return self.resolve(self.fileset)

    def load_fileset(self) -> dict:
        """The fileset dict, relative file paths made absolute against its JSON's folder.

        ``fileset`` is inline, a file that :func:`hep_executor.analysis.load_fileset`
        reads (JSON in one of coffea's forms, ``{ds: [files]}``,
        ``{ds: {"files": {url: tree}, "metadata": ...}}``,
        ``{ds: {"files": [...], "treename": ...}}``, or a ``.txt`` list), or
        ``demo`` (the seeded demo samples, written to the user's cache on first use).

        Raises
        ------
        ConfigError
            The file is missing or unreadable (a FilesetError naming it), or
            ``fileset`` is of another type.
        """
        if isinstance(self.fileset, dict):
            return resolve_paths(self.fileset, self.base_dir)
        if self.fileset == DEMO_FILESET:
            from hep_executor.cli._demo_data import demo_fileset

            return demo_fileset()
        if not isinstance(self.fileset, str):
            msg = (f"config key 'fileset' must be a fileset file (.json, .txt), a {{dataset: files}} mapping "
                   f"or 'demo', not {type(self.fileset).__name__}")
            raise ConfigError(msg)
        return load_fileset(self.resolve(self.fileset))

    def schema_class(self):
        from coffea.nanoevents import schemas

        name = SCHEMA_ALIASES.get(self.schema, self.schema)
        try:
            return getattr(schemas, name)
        except AttributeError:
            msg = (f"schema {self.schema!r} is not a coffea.nanoevents schema; "
                   f"use one of {', '.join(SCHEMA_ALIASES)} or a class name of coffea.nanoevents.schemas")
            raise ConfigError(msg) from None

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


_SECTIONS = {"processor": ProcessorConfig, "workers": WorkersConfig, "chunking": ChunkingConfig,
             "resources": ResourcesConfig, "output": OutputConfig, "cache": CacheConfig}
_RENAMES = {"processor": {"class": "cls"}}


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        msg = f"{where or 'config'} must be a mapping, not {type(data).__name__}"
        raise ConfigError(msg)
    names = {f.name for f in dataclasses.fields(cls)} - {"base_dir"}
    renames = _RENAMES.get(where, {})
    kwargs = {}
    for key, value in data.items():
        name = renames.get(key, key)
        if name not in names:
            path = f"{where}.{key}" if where else key
            allowed = sorted(set(names) - set(renames.values()) | set(renames))
            msg = f"unknown config key {path!r}; allowed here: {', '.join(allowed)}"
            raise ConfigError(msg)
        if not where and key in _SECTIONS:
            value = _build(_SECTIONS[key], value or {}, key)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        msg = f"bad value in {where or 'config'}: {exc}"
        raise ConfigError(msg) from exc


def _expand(value, where: str = "config"):
    """Replace ``${VAR}`` in every string of ``value`` by the environment variable."""
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match):
        name = match.group(1)
        if name not in os.environ:
            msg = f"{where} uses ${{{name}}} but the environment variable {name} is not set"
            raise ConfigError(msg)
        return os.environ[name]

    return re.sub(r"\$\{(\w+)\}", sub, value)


def load_config(path: str | Path | None = None) -> RunConfig:
    """Read a YAML run config (default: the embedded demo)."""
    path = Path(path) if path is not None else default_config_path()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        msg = f"cannot read config {str(path)!r}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    except yaml.YAMLError as exc:
        msg = f"config {str(path)!r} is not valid YAML: {exc}"
        raise ConfigError(msg) from exc
    config = _build(RunConfig, _expand(data, "config"), "")
    return dataclasses.replace(config, base_dir=str(path.resolve().parent))


def default_config_path() -> Path:
    """The embedded demo config (``configs/demo.yaml`` links to it)."""
    return Path(__file__).resolve().parent / "demo.yaml"
