"""The run's key: kept private on disk, warned about when readable, never handed to user code."""

import logging
import os
import stat

from hep_executor import Manager
from hep_executor.cli.main import main as cli_main
from hep_executor.engine import keys
from tests.helpers import drain


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keygen_over_a_readable_file_makes_it_0600(tmp_path, capsys):
    path = tmp_path / "run.key"
    path.write_text("00" * 32 + "\n")
    path.chmod(0o644)
    assert cli_main(["keygen", str(path)]) == 0
    assert _mode(path) == 0o600
    assert "mode 0600" in capsys.readouterr().out
    assert keys.read_key_file(path) != bytes(32)


def test_a_key_file_others_can_read_is_used_with_a_warning(tmp_path, caplog):
    path = tmp_path / "run.key"
    key = keys.write_key_file(path)
    with caplog.at_level(logging.WARNING, logger="hep_executor.engine"):
        assert keys.read_key_file(path) == key
    assert not caplog.records
    path.chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="hep_executor.engine"):
        assert keys.read_key_file(path) == key
    (record,) = caplog.records
    assert str(path) in record.getMessage() and "0640" in record.getMessage()


def _key_seen_by_task():
    return os.environ.get("HEP_EXECUTOR_KEY")


def test_slots_running_user_code_never_see_the_key():
    with Manager(local_workers=1) as m:
        m.submit(_key_seen_by_task)
        (result,) = drain(m)
    assert result.ok
    assert result.value is None
