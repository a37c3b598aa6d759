"""The public face: the curated ``__all__`` and a worker's import cost."""

import subprocess
import sys

import hep_executor

DOCUMENTED = {
    "HepExecutor", "run_uproot_job", "run", "RunResult", "Manager", "TaskResult", "TaskReport",
    "WorkerSpec", "errors", "__version__",
    "HepExecutorError", "ConfigError", "InputError", "FileMissingError", "CoverageError",
    "TaskError", "ChunkError", "WorkerLostError", "ResourceExhaustedError", "TaskTimeoutError",
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


LAYERS = ("engine", "analysis", "planning", "batch", "cli", "demo")


def _private_imports(path, root):
    """Yield each ``hep_executor.LAYER._name`` that ``path`` imports from outside LAYER."""
    import ast

    rel = path.relative_to(root).parts
    home = rel[1] if rel[0] == "hep_executor" and len(rel) > 2 else None
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if (len(parts) > 2 and parts[0] == "hep_executor" and parts[1] in LAYERS
                    and parts[2].startswith("_") and parts[1] != home):
                yield name


def test_private_modules_are_imported_only_in_their_layer():
    import pathlib

    root = pathlib.Path(hep_executor.__file__).parent.parent
    found = {}
    for folder in ("hep_executor", "tests", "benchmarks", "processors"):
        for path in (root / folder).rglob("*.py"):
            hits = sorted(set(_private_imports(path, root)))
            if hits:
                found[str(path.relative_to(root))] = hits
    assert not found, found


def test_every_layer_export_resolves():
    import importlib

    for layer in LAYERS:
        package = importlib.import_module(f"hep_executor.{layer}")
        assert package.__all__, layer
        for name in package.__all__:
            assert getattr(package, name) is not None, (layer, name)
