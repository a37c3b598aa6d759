"""Files shipped with ``Manager(files=...)``: once per worker, on its path, in a content-hash folder."""

from __future__ import annotations

import importlib
import os
import pickle
import sys

import pytest

from hep_executor import Manager
from hep_executor.engine import SANDBOX_ENV, ShippedFiles, with_files
from hep_executor.errors import ConfigError
from tests.helpers import drain


def read_shipped(name: str):
    """Runs on a worker: import the shipped module, report where it came from."""
    module = importlib.import_module(name)
    return module.VALUE, module.__file__, os.environ.get(SANDBOX_ENV)


def test_manager_files_reach_every_worker_once(tmp_path):
    helper = tmp_path / "shipped_helper_x1.py"
    helper.write_text("VALUE = 41 + 1\n")
    assert "shipped_helper_x1" not in sys.modules
    with Manager(local_workers=2, files=[str(helper)]) as manager:
        assert manager.wait_for_workers(2, timeout=120) == 2
        for _ in range(6):
            manager.submit(read_shipped, "shipped_helper_x1")
        results = drain(manager, timeout=120)
        sent = manager.stats["function_bytes_sent"]
    values = [r.value for r in results]
    assert [v[0] for v in values] == [42] * 6
    digest = ShippedFiles([helper]).digest
    sandbox = values[0][2]
    assert {v[1] for v in values} == {os.path.join(sandbox, ".hep-files", digest, "shipped_helper_x1.py")}
    assert 0 < sent <= 2 * len(pickle.dumps(with_files(read_shipped, ShippedFiles([helper])))) + 200
    assert not os.path.exists(sandbox)  # removed with the manager's local workers


def test_unpickling_materialises_files_in_the_sandbox(tmp_path, monkeypatch):
    data = tmp_path / "src" / "corr"
    data.mkdir(parents=True)
    (data / "table.json").write_text("{}")
    monkeypatch.setenv(SANDBOX_ENV, str(tmp_path / "box"))
    shipped = pickle.loads(pickle.dumps(ShippedFiles([data])))
    try:
        assert shipped.folder in sys.path
        assert (tmp_path / "box" / "corr" / "table.json").read_text() == "{}"  # linked into the sandbox
        again = pickle.loads(pickle.dumps(ShippedFiles([data])))
        assert again.folder == shipped.folder and sorted(os.listdir(tmp_path / "box" / ".hep-files")) == \
            [os.path.basename(shipped.folder), os.path.basename(shipped.folder) + ".lock"]
    finally:
        sys.path.remove(shipped.folder)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nothere.py"):
        ShippedFiles([tmp_path / "nothere.py"])


def test_register_by_value_takes_user_modules_and_leaves_installed_ones(tmp_path, monkeypatch):
    import subprocess

    import cloudpickle

    from hep_executor.engine import register_by_value

    (tmp_path / "user_analysis_x1.py").write_text("class Proc:\n    MARK = 'shipped-by-value-77'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    user = importlib.import_module("user_analysis_x1")
    try:
        # a module of the user's own folder ships by value (its class body travels in the pickle);
        # the standard library and hep_executor (an editable install, outside site-packages) do not
        assert register_by_value(user.Proc(), subprocess.run, Manager) == ["user_analysis_x1"]
        assert b"shipped-by-value-77" in cloudpickle.dumps(user.Proc)
    finally:
        cloudpickle.unregister_pickle_by_value(user)
