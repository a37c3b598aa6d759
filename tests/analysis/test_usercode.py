"""The user's own code reaches the workers.

Local workers see the caller's path and folder; a worker started by hand
in an empty folder gets the processor's module by value and helper files
shipped with ``files=`` / ``extra_input_files``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hep_executor import HepExecutor, Manager, run, run_uproot_job
from hep_executor.analysis import FAIL_FAST_AFTER
from hep_executor.engine import SANDBOX_ENV
from hep_executor.errors import CodeUnavailableError
from tests.analysis import usercode_sources
from tests.analysis.test_analysis import assert_same

ROOT = Path(__file__).resolve().parents[2]


def _write_user_code(folder: Path) -> Path:
    code = folder / "code"
    code.mkdir()
    (code / "userproc.py").write_text(usercode_sources.PROCESSOR)
    (code / "usercuts.py").write_text(usercode_sources.HELPER)
    (code / "userholding.py").write_text(usercode_sources.HOLDING)
    return code


def test_local_workers_import_what_the_caller_imports(samples, tmp_path):
    code = _write_user_code(tmp_path)
    elsewhere = tmp_path / "rundir"
    elsewhere.mkdir()
    (elsewhere / "scale.txt").write_text("2.0")
    script = tmp_path / "script.py"
    script.write_text(usercode_sources.SCRIPT)
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({k: [str(f) for f in v] for k, v in samples.items()}))
    out = tmp_path / "out.pkl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's package, not the user's folder
    proc = subprocess.run([sys.executable, str(script), str(code), str(fileset), str(out)],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = pickle.loads(out.read_bytes())
    assert_same(got["ours"], got["ref"])
    assert sum(got["ours"]["events"].values()) == 6 * 3000
    assert sum(got["ours"]["sumpt"].values()) > 0


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """The user's processor module and helper in a folder of their own, importable here only."""
    code = _write_user_code(tmp_path)
    rundir = tmp_path / "rundir"
    rundir.mkdir()
    (rundir / "scale.txt").write_text("2.0")
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.chdir(rundir)
    yield code, rundir
    for name in ("userproc", "usercuts", "userholding"):
        sys.modules.pop(name, None)


@pytest.fixture
def remote_worker(tmp_path):
    """A manager with no local workers and one worker started by hand in an empty folder."""
    key_file = tmp_path / "key"
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", SANDBOX_ENV)}
    env["PYTHONPATH"] = str(ROOT)  # the package only: not the user's folder
    with Manager(local_workers=0, key_file=str(key_file)) as manager:
        proc = subprocess.Popen([sys.executable, "-m", "hep_executor.worker", "--manager", manager.address,
                                 "--key-file", str(key_file), "--cores", "2"], cwd=empty, env=env)
        try:
            assert manager.wait_for_workers(1, timeout=120) == 1
            yield manager, empty
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _reference(fileset):
    from userproc import UserPtProcessor

    runner = processor.Runner(executor=processor.IterativeExecutor(status=False), schema=NanoAODSchema,
                              chunksize=1000)
    return runner(fileset, treename="Events", processor_instance=UserPtProcessor())


def test_remote_worker_runs_code_it_never_saw(samples, user_code, remote_worker):
    code, rundir = user_code
    manager, sandbox = remote_worker
    from userproc import UserPtProcessor

    files = [str(code / "usercuts.py"), "scale.txt"]
    result = run(samples, UserPtProcessor(), manager=manager, chunksize=1000, files=files)
    assert_same(result.output, _reference(samples))
    shipped = result.report["shipped"]
    assert shipped["modules_by_value"] == ["userproc"]
    assert shipped["files"] == ["scale.txt", "usercuts.py"]
    assert shipped["file_bytes"] == 3 + len(usercode_sources.HELPER)
    assert 0 < shipped["function_bytes_sent"] < 10 * shipped["function_bytes"]
    folders = [p for p in (sandbox / ".hep-files").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders  # written once, though two slots unpickled the function
    assert (sandbox / "scale.txt").read_text() == "2.0"


def test_runner_extra_input_files_on_a_remote_worker(samples, user_code, remote_worker):
    manager, sandbox = remote_worker
    code, _ = user_code
    from userproc import UserPtProcessor

    ex = HepExecutor(manager=manager, status=False, extra_input_files=[str(code / "usercuts.py"), "scale.txt"])
    out = processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1000)(
        samples, treename="Events", processor_instance=UserPtProcessor())
    assert_same(out, _reference(samples))
    assert ex.pool.shipment.modules_by_value == ["userproc"]
    assert (sandbox / "usercuts.py").is_symlink()


def _assert_names_the_module(error, manager, before):
    assert isinstance(error, CodeUnavailableError), repr(error)
    assert error.module == "usercuts"
    message = str(error)
    assert "No module named 'usercuts'" in message and "extra_input_files" in message
    failed = manager.stats["error"] - before
    assert 1 <= failed <= 2 * FAIL_FAST_AFTER + 4, failed  # of 60 chunks planned


def test_run_stops_after_first_tasks_when_workers_cannot_import(samples, user_code, remote_worker):
    manager, _ = remote_worker
    from userholding import HoldingProcessor

    before = manager.stats["error"]
    with pytest.raises(CodeUnavailableError) as info:
        run(samples, HoldingProcessor(), manager=manager, chunksize=300)
    _assert_names_the_module(info.value, manager, before)


def test_run_uproot_job_stops_and_names_the_module(samples, user_code, remote_worker):
    manager, _ = remote_worker
    from userholding import HoldingProcessor

    before = manager.stats["error"]
    with pytest.raises(CodeUnavailableError) as info:
        run_uproot_job(samples, "Events", HoldingProcessor(), executor=HepExecutor,
                       executor_args={"manager": manager, "schema": NanoAODSchema}, chunksize=300)
    _assert_names_the_module(info.value, manager, before)


def test_runner_raises_our_error_not_no_chunks_returned(samples, user_code, remote_worker):
    manager, _ = remote_worker
    from userholding import HoldingProcessor

    before = manager.stats["error"]
    runner = processor.Runner(executor=HepExecutor(manager=manager, status=False, dynamic=False),
                              schema=NanoAODSchema, chunksize=300)
    with pytest.raises(CodeUnavailableError) as info:
        runner(samples, treename="Events", processor_instance=HoldingProcessor())
    _assert_names_the_module(info.value, manager, before)
