"""The example configs run for real: configs/xrootd.yaml against the local XRootD server,
configs/slurm.yaml against the local Slurm."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from hep_executor.cli import load_config
from hep_executor.cli import run_config

REPO = Path(__file__).resolve().parents[2]


def _with_out(config, out: Path):
    return config.replace(output=dataclasses.replace(config.output, dir=str(out)))


def _events(out: Path) -> int:
    return json.loads((out / "latest" / "report.json").read_text())["totals"]["events"]


def test_xrootd_config(tmp_path, monkeypatch):
    from tests.servers import ServiceUnavailable
    from tests.servers.xrootd import XRootDServer

    if os.environ.get("HEP_EXECUTOR_NO_REMOTE"):
        pytest.skip("server tests off: tests/run.sh --no-remote (HEP_EXECUTOR_NO_REMOTE=1)")
    try:
        server = XRootDServer()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    try:
        for path in sorted((REPO / "sample_data").glob("*.root")):
            server.add_file(path)
        server.start()
        monkeypatch.setenv("HEP_XROOTD", server.url_prefix)
        config = _with_out(load_config(REPO / "configs" / "xrootd.yaml"), tmp_path)
        result = run_config(config, show_progress=False)
        assert result.coverage.ok
        assert all(f["file"].startswith("root://127.0.0.1:") for f in result.report["files"])
        assert _events(tmp_path) == 18000
    finally:
        server.cleanup()


def test_slurm_config(slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf_path))
    monkeypatch.chdir(tmp_path)  # Slurm job logs land here
    config = _with_out(load_config(REPO / "configs" / "slurm.yaml"), tmp_path)
    result = run_config(config, show_progress=False)
    assert result.coverage.ok and _events(tmp_path) == 18000
    assert result.report["totals"]["workers"] >= 1
    from tests.helpers import try_assert

    try_assert(lambda: not slurm.job_ids(), timeout=20, message=f"jobs left: {slurm.job_ids()}")


def test_unset_variable_is_named(monkeypatch):
    from hep_executor.errors import ConfigError

    monkeypatch.delenv("HEP_XROOTD", raising=False)
    with pytest.raises(ConfigError, match="HEP_XROOTD"):
        load_config(REPO / "configs" / "xrootd.yaml")


def test_checkpoint_and_cache_keys(tmp_path):
    (tmp_path / "a.yaml").write_text("checkpoint: ckpt\ncache: {metadata: false}\n")
    config = load_config(tmp_path / "a.yaml")
    assert config.checkpoint_dir() == str(tmp_path / "ckpt")  # from the config's folder
    assert config.metadata_cache() is False
    (tmp_path / "b.yaml").write_text("cache: {metadata: meta.sqlite}\n")
    config = load_config(tmp_path / "b.yaml")
    assert config.checkpoint_dir() is None and config.metadata_cache() == str(tmp_path / "meta.sqlite")
    assert load_config().metadata_cache() is None  # the demo: the default cache file
    from hep_executor.errors import ConfigError

    (tmp_path / "c.yaml").write_text("cache: {metadata: 3}\n")
    with pytest.raises(ConfigError, match="cache.metadata must be true, false or a path"):
        load_config(tmp_path / "c.yaml")
