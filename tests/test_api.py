"""The public face: the curated ``__all__`` and a worker's import cost."""

import subprocess
import sys

import hep_executor

DOCUMENTED = {
    "HepExecutor", "run_uproot_job", "run", "RunResult", "Manager", "TaskResult", "TaskReport",
    "WorkerSpec", "errors", "__version__",
    "HepExecutorError", "ConfigError", "InputError", "FileMissingError", "CoverageError",
    "TaskError", "ChunkError", "WorkerLostError", "ResourceExhaustedError",
}


def test_all_is_the_documented_list():
    assert set(hep_executor.__all__) == DOCUMENTED
    assert len(hep_executor.__all__) == len(DOCUMENTED)


def test_every_public_name_resolves():
    for name in hep_executor.__all__:
        assert getattr(hep_executor, name) is not None, name
    assert hep_executor.errors.ChunkError is hep_executor.ChunkError
    assert issubclass(hep_executor.ChunkError, hep_executor.HepExecutorError)


def test_unknown_name_is_an_attribute_error():
    try:
        hep_executor.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("hep_executor.NoSuchThing did not raise")


def _imported_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_worker_imports_no_analysis_library():
    mods = _imported_by("hep_executor.engine.worker")
    heavy = {m for m in mods if m.split(".")[0] in {"coffea", "uproot", "awkward", "numba", "hist"}}
    assert not heavy, sorted(heavy)[:10]
    ours = {m for m in mods if m.startswith("hep_executor.")}
    assert not {m for m in ours if m.split(".")[1] in {"analysis", "planning", "cli", "batch"}}, ours
    assert "hep_executor.engine.worker" in mods


def test_the_batch_entry_point_is_the_engine_worker():
    from hep_executor import worker
    from hep_executor.engine import worker as engine_worker

    assert worker.main is engine_worker.main
    out = subprocess.run([sys.executable, "-m", "hep_executor.worker", "--help"], capture_output=True,
                         text=True, check=True)
    assert "--manager" in out.stdout
