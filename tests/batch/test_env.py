"""Packed environments: pack, unpack once per node (a lock), run a worker from the copy with ``env -i``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hep_executor import ConfigError, HepExecutor, Manager, run
from hep_executor.batch import LAUNCHER, archive_digest, find_x509_proxy, pack, unpack, write_runner
from hep_executor.cli import load_config
from tests.helpers import children

ROOT = Path(__file__).resolve().parents[2]


def _fake_archive(folder: Path) -> Path:
    """An archive shaped like a packed environment: a launcher that echoes, and 64 MB of filler."""
    env = folder / "fake-env"
    (env / "bin").mkdir(parents=True)
    launcher = env / LAUNCHER
    launcher.write_text('#!/bin/sh\necho "ran $*"\n')
    launcher.chmod(0o755)
    (env / "filler").write_bytes(os.urandom(64 * 2**20))
    archive = folder / "fake.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(env, arcname=".")
    return archive


def test_three_jobs_on_one_node_unpack_once(tmp_path):
    archive = _fake_archive(tmp_path)
    scratch = tmp_path / "scratch"
    runner = write_runner(archive, proxy=None)
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(ROOT)}
    code = ("import os, sys; from hep_executor.batch._env import unpack; d = unpack(sys.argv[1], sys.argv[2]); "
            "print(d, (d / '.complete').read_text().strip() == str(os.getpid()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(archive), str(scratch)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    procs.append(subprocess.Popen([str(runner), "hello"], env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    target = scratch / f"hep-env-{archive_digest(archive)}"
    assert outs[2] == ["ran", "hello"]
    assert [o[0] for o in outs[:2]] == [str(target)] * 2
    pid = (target / ".complete").read_text().strip()
    assert [p.pid for p in procs if str(p.pid) == pid] != []  # the one that unpacked, by its pid
    assert (outs[0][1:] + outs[1][1:]).count("True") == (pid != str(procs[2].pid))
    assert sorted(p.name for p in scratch.iterdir()) == [target.name, target.name + ".lock"]
    assert unpack(archive, scratch) == target  # a later job reuses it


def test_runner_ships_the_x509_proxy(tmp_path, monkeypatch):
    archive = _fake_archive(tmp_path)
    proxy = tmp_path / "x509up_test"
    proxy.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("X509_USER_PROXY", str(proxy))
    assert find_x509_proxy() == str(proxy)
    runner = write_runner(archive)
    copy = Path(str(archive) + ".x509")
    assert copy.read_text() == proxy.read_text() and (copy.stat().st_mode & 0o777) == 0o600
    assert f"export X509_USER_PROXY={copy}" in runner.read_text()


def _same(a, b):
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _same(a[k], b[k])
    elif hasattr(a, "values") and hasattr(a, "axes"):  # a hist: datasets grow in fill order
        names = [ax.name for ax in a.axes]
        if "dataset" not in names:
            np.testing.assert_allclose(a.values(), b.values(), rtol=1e-9)
            return
        assert set(a.axes["dataset"]) == set(b.axes["dataset"])
        for ds in a.axes["dataset"]:
            np.testing.assert_allclose(a[{"dataset": ds}].values(), b[{"dataset": ds}].values(), rtol=1e-9)
    else:
        assert a == pytest.approx(b, rel=1e-9)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A real archive of this environment, and the scratch folder it is unpacked into once."""
    folder = tmp_path_factory.mktemp("packed")
    archive = pack(folder / "env.tar")
    return archive, folder / "scratch", unpack(archive, folder / "scratch")


@pytest.fixture(scope="module")
def unpacked_env(packed):
    return packed[2]


def test_worker_from_the_unpacked_env_with_env_i_runs_the_demo_processor(samples, unpacked_env, tmp_path):
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    from processors.topeft_like import TopEFTLikeProcessor

    empty = tmp_path / "empty"
    empty.mkdir()
    key_file = tmp_path / "key"
    with Manager(local_workers=0, key_file=str(key_file)) as manager:
        cmd = ["env", "-i", str(unpacked_env / LAUNCHER), "-m", "hep_executor.worker", "--manager",
               manager.address, "--key-file", str(key_file), "--cores", "2"]
        worker = subprocess.Popen(cmd, cwd=empty)
        try:
            assert manager.wait_for_workers(1, timeout=180) == 1
            result = run(samples, TopEFTLikeProcessor(), manager=manager, chunksize=1500)
            proc = psutil_process(worker.pid)
            assert proc.exe().startswith(str(unpacked_env))  # the copy's interpreter, not ours
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    ref = processor.Runner(executor=processor.IterativeExecutor(status=False), schema=NanoAODSchema,
                           chunksize=1500)(samples, treename="Events", processor_instance=TopEFTLikeProcessor())
    _same(result.output, ref)


def psutil_process(pid):
    import psutil

    return psutil.Process(pid)


def _reference(samples):
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    from processors.topeft_like import TopEFTLikeProcessor

    return processor.Runner(executor=processor.IterativeExecutor(status=False), schema=NanoAODSchema,
                            chunksize=1500)(samples, treename="Events", processor_instance=TopEFTLikeProcessor())


def test_executor_batch_jobs_run_from_environment_file(samples, packed, tmp_path, monkeypatch):
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    from processors.topeft_like import TopEFTLikeProcessor

    archive, scratch, target = packed
    monkeypatch.setenv("TMPDIR", str(scratch))  # the node's scratch, where the fixture unpacked it once
    monkeypatch.chdir(tmp_path)
    stamp = (target / ".complete").read_text()
    executor = HepExecutor(batch="local", workers=2, environment_file=str(archive), status=False)
    with executor:
        runner = processor.Runner(executor=executor, schema=NanoAODSchema, chunksize=1500)
        out = runner(samples, treename="Events", processor_instance=TopEFTLikeProcessor())
        jobs = list(executor.pool.jobs.ids)
        exes = {psutil_process(int(job)).exe() for job in jobs}
        key = executor.pool.jobs.own_key
        assert key is not None and os.path.exists(key)
    assert len(jobs) == 2
    assert {os.path.dirname(os.path.dirname(e)) for e in exes} == {str(target)}  # the unpacked copy's python
    assert (target / ".complete").read_text() == stamp  # reused, not unpacked again
    assert not os.path.exists(key) and sorted(os.listdir(tmp_path)) == []  # key gone; nothing in the cwd
    assert [job for job in jobs if psutil_exists(int(job))] == []  # jobs cancelled on close
    _same(out, _reference(samples))


def psutil_exists(pid):
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_missing_environment_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "env.tar"
    with pytest.raises(ConfigError, match=f"environment_file {missing}: no such archive"):
        HepExecutor(workers=0, environment_file=str(missing))
    not_tar = tmp_path / "env.tar"
    not_tar.write_text("not an archive\n")
    with pytest.raises(ConfigError, match=f"environment_file {not_tar}: not a tar archive"):
        HepExecutor(workers=0, environment_file=str(not_tar))


def test_bad_batch_settings_are_errors_naming_batch(manager):
    with pytest.raises(ConfigError, match="HepExecutor batch='pbs': choose 'local', 'slurm' or 'condor'"):
        HepExecutor(batch="pbs")
    with pytest.raises(ConfigError, match="batch='slurm'.*give no manager or client"):
        HepExecutor(batch="slurm", manager=manager)


def test_local_workers_use_this_environment_and_say_so(tmp_path, caplog):
    archive = _fake_archive(tmp_path)
    executor = HepExecutor(workers=1, environment_file=str(archive), status=False)
    with executor, caplog.at_level("INFO", logger="hep_executor.executor"):
        manager = executor.pool.get(executor)
        assert manager.wait_for_workers(1, timeout=120) == 1
        ours = [p for p in children() if "hep_executor" in " ".join(p.cmdline())]  # not other tests' servers
        assert len(ours) >= 2 and {p.exe() for p in ours} == {os.path.realpath(sys.executable)}  # worker, slot
    said = [r.getMessage() for r in caplog.records if "environment_file" in r.getMessage()]
    assert said == [f"environment_file {archive}: local workers run in this process's environment (its "
                    f"sys.path and working directory); jobs of batch=... or of 'hep-executor submit-workers "
                    f"--env {archive}' run from the archive"]
    assert "environment_file" not in " ".join(executor.ignored_fields())


# ---------------------------------------------------------------- the run config's workers.env / workers.files

_PROCESSOR = '''
import sys

from coffea import processor


class WhereAmI(processor.ProcessorABC):
    """Counts events times the shipped helper's factor, and names the interpreter that ran each chunk."""

    def process(self, events):
        import scale_helper  # only in workers.files: on no worker's path otherwise

        return {"scaled": len(events) * scale_helper.FACTOR, "pythons": {sys.executable}}

    def postprocess(self, accumulator):
        return accumulator
'''


def _config_folder(folder: Path, samples, workers: str) -> Path:
    """A config beside its processor module; the helper module in lib/, named by workers.files only."""
    (folder / "lib").mkdir(parents=True)
    (folder / "lib" / "scale_helper.py").write_text("FACTOR = 7\n")
    (folder / "whereami.py").write_text(_PROCESSOR)
    fileset = json.dumps({"ttbar": [str(samples["ttbar"][0])]})
    config = folder / "run.yaml"
    config.write_text(f"fileset: {fileset}\nprocessor: {{class: whereami:WhereAmI}}\n"
                      f"chunking: {{chunksize: 1000}}\noutput: {{dir: out}}\nworkers:\n{workers}")
    return config


def test_config_env_and_files_are_relative_to_the_config(tmp_path):
    _fake_archive(tmp_path)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper.py").write_text("")
    (tmp_path / "run.yaml").write_text("workers:\n  env: fake.tar\n  files: [lib/helper.py, lib]\n")
    config = load_config(tmp_path / "run.yaml")
    assert config.worker_env() == str(tmp_path / "fake.tar")
    assert config.worker_files() == [str(tmp_path / "lib" / "helper.py"), str(tmp_path / "lib")]
    assert load_config(None).worker_env() is None and load_config(None).worker_files() == []  # demo.yaml


def test_config_missing_env_or_file_is_an_error_naming_key_and_path(tmp_path):
    (tmp_path / "env.yaml").write_text("workers: {env: packed/env.tar}\n")
    with pytest.raises(ConfigError, match=f"workers.env {tmp_path}/packed/env.tar: no such archive"):
        load_config(tmp_path / "env.yaml").worker_env()
    (tmp_path / "files.yaml").write_text("workers: {files: [helper.py]}\n")
    with pytest.raises(ConfigError, match=f"workers.files: {tmp_path}/helper.py: no such file or folder"):
        load_config(tmp_path / "files.yaml").worker_files()
    (tmp_path / "bad.yaml").write_text("workers: {files: helper.py}\n")
    with pytest.raises(ConfigError, match="workers.files must be a list of paths"):
        load_config(tmp_path / "bad.yaml")


def test_config_files_reach_local_workers_which_keep_this_environment(samples, tmp_path):
    from hep_executor.cli import run_config

    _fake_archive(tmp_path)
    config = load_config(_config_folder(tmp_path, samples, "  count: 1\n  env: fake.tar\n  files: [lib/scale_helper.py]\n"))
    result = run_config(config, show_progress=False)
    assert result.output["scaled"] == 3000 * 7
    assert result.output["pythons"] == {sys.executable}  # local workers: this environment, not the archive's
    assert result.report["shipped"]["files"] == ["scale_helper.py"]


def test_config_env_runs_slurm_jobs_from_the_unpacked_archive(samples, packed, slurm, tmp_path, monkeypatch):
    from hep_executor.cli import run_config

    archive, scratch, target = packed
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf_path))
    monkeypatch.setenv("TMPDIR", str(scratch))  # the node's scratch: unpacked there once already
    monkeypatch.chdir(tmp_path)  # Slurm job logs land here
    stamp = (target / ".complete").read_text()
    config = load_config(_config_folder(tmp_path / "ana", samples,
                                        f"  batch: slurm\n  count: 1\n  env: {archive}\n"
                                        "  files: [lib/scale_helper.py]\n"))
    result = run_config(config, show_progress=False)
    assert result.output["scaled"] == 3000 * 7
    assert [Path(p).parent.parent for p in result.output["pythons"]] == [target]
    assert (target / ".complete").read_text() == stamp  # reused: this node had unpacked it


def _tiny_wheel(folder: Path) -> Path:
    """A wheel of one module (``tinymod``, no dependencies), written by hand so that pip needs no index."""
    import base64
    import hashlib
    import zipfile

    files = {"tinymod.py": b"ANSWER = 42\n",
             "tinymod-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinymod\nVersion: 1.0\n",
             "tinymod-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items())
    wheel = folder / "tinymod-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("tinymod-1.0.dist-info/RECORD", record + "tinymod-1.0.dist-info/RECORD,,\n")
    return wheel


def test_pack_with_a_spec_holds_its_packages_instead_of_this_site_compiled(tmp_path):
    spec = tmp_path / "requirements.txt"
    spec.write_text(f"--no-index\n{_tiny_wheel(tmp_path)}\n")
    env = unpack(pack(tmp_path / "spec.tar", spec=str(spec)), tmp_path / "scratch")
    launcher = str(env / LAUNCHER)
    ok = subprocess.run(["env", "-i", launcher, "-c", "import tinymod, hep_executor; print(tinymod.ANSWER)"],
                        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == "42", ok.stderr
    absent = subprocess.run(["env", "-i", launcher, "-c", "import coffea"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert absent.returncode != 0 and "No module named 'coffea'" in absent.stderr  # this site was left out
    assert list((env / "lib" / "hep-site" / "hep_executor" / "__pycache__").glob("_lazy.*.pyc"))  # compiled


def test_pack_from_conda_without_conda_pack_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "conda_pack", None)  # as in an environment without it
    with pytest.raises(ConfigError, match="conda-pack"):
        pack(tmp_path / "conda.tar", source="conda")
    assert not (tmp_path / "conda.tar").exists()
