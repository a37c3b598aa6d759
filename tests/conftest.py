"""Fixtures shared by the tests: generated samples, a shared manager, real services.

``samples`` writes small NanoAOD-like files once; ``manager`` is a
Manager with two local workers, one per test module.

``sample_files`` writes the inputs once (NanoAOD-like files from
:mod:`hep_executor.demo._samples`, plus broken ones); ``xrootd_server`` serves a
copy of them on 127.0.0.1; ``slurm_cluster`` runs munged, slurmctld and
slurmd. A fixture skips its tests only when the service's programs are
not installed (or, for Slurm, when not running as root); any other
failure to start is an error.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

# tests.servers must import however pytest is started (python -m pytest or pytest)
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from hep_executor import Manager  # noqa: E402
from tests.servers import ServiceUnavailable  # noqa: E402
from tests.servers.slurm import SlurmCluster  # noqa: E402
from tests.servers.xrootd import XRootDServer  # noqa: E402

EVENTS = 2000
BLOCK = 500


@pytest.fixture(scope="session", autouse=True)
def _metadata_cache_home(tmp_path_factory):
    """The default metadata cache of runs in tests lies in a folder of this session, not ~/.cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache-home"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def sample_files(tmp_path_factory) -> dict[str, Path]:
    """Name -> local path: ``good``, ``other`` (two real files), ``empty``, ``text``, ``half``."""
    from hep_executor.demo import make_samples

    folder = tmp_path_factory.mktemp("samples")
    made = make_samples(folder, events_per_file=EVENTS, files_per_dataset=2, datasets=["ttbar"],
                        extra_branches=0, block_size=BLOCK)
    good, other = (Path(p) for p in made["ttbar"])
    files = {"good": good, "other": other}
    files["empty"] = folder / "empty.root"
    with uproot.recreate(files["empty"]) as f:
        f.mktree("Events", {"Muon_pt": "var * float32", "run": "int32"})
    files["text"] = folder / "text.root"
    files["text"].write_text("not a ROOT file\n" * 100)
    files["half"] = folder / "half.root"
    data = good.read_bytes()
    files["half"].write_bytes(data[: len(data) // 2])
    files["hist"] = folder / "hist.root"
    with uproot.recreate(files["hist"]) as f:
        f["Events"] = np.histogram(np.arange(10), bins=5)
    return files


def _start(factory):
    if os.environ.get("HEP_EXECUTOR_NO_REMOTE"):
        pytest.skip("server tests off: tests/run.sh --no-remote (HEP_EXECUTOR_NO_REMOTE=1)")
    try:
        return factory()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def xrootd_server(sample_files):
    """A running XRootD server serving the sample files; ``.url(name + '.root')`` gives a URL."""
    server = _start(XRootDServer)
    try:
        for name, path in sample_files.items():
            server.add_file(path, f"{name}.root")
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fresh_xrootd_server(sample_files):
    """A server of its own for tests that stop and restart it."""
    server = _start(XRootDServer)
    try:
        server.add_file(sample_files["good"], "good.root")
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-node Slurm; clients need ``cluster.client_env`` (``SLURM_CONF``).

    The node offers at most 2 CPUs whatever the machine, so tests that
    fill it stay small.
    """
    cluster = _start(lambda: SlurmCluster(cpus=min(2, os.cpu_count() or 1)))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def slurm(slurm_cluster):
    """The session cluster, with every job cancelled after the test."""
    yield slurm_cluster
    assert slurm_cluster.cancel_all(), f"jobs left in squeue: {slurm_cluster.job_ids()}"


@pytest.fixture
def shared_dir():
    """A folder that jobs running as another user could read (not under pytest's 0700 tmp)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="hepx-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    from hep_executor.demo import make_samples

    out = tmp_path_factory.mktemp("samples")
    return make_samples(out, events_per_file=3000, files_per_dataset=2, extra_branches=30, seed=7)


@pytest.fixture(scope="module")
def manager():
    with Manager(local_workers=2) as m:
        m.wait_for_workers(2)
        yield m
