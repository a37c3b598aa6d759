"""The transport encrypted with ZeroMQ CURVE: workers and status queries with --curve, refused without."""

import subprocess
import sys

import pytest

from hep_executor import Manager
from hep_executor.engine import curve_keys, keys, query_status
from hep_executor.errors import RemoteAccessError
from tests.engine import tasks
from tests.helpers import drain


def test_the_managers_curve_keys_follow_from_the_run_key():
    public, secret = curve_keys(b"k" * 32)
    assert len(public) == len(secret) == 40  # Z85 of 32 bytes
    assert curve_keys(b"k" * 32) == (public, secret) and curve_keys(b"j" * 32)[0] != public


def test_local_workers_of_a_curve_manager_run_its_tasks():
    with Manager(local_workers=1, curve=True) as m:
        assert m.endpoint.sock.curve_server
        m.submit(tasks.square, 12)
        (result,) = drain(m)
        assert result.value == 144


def _worker(address, key_file, *extra):
    return subprocess.Popen([sys.executable, "-m", "hep_executor.worker", "--manager", address,
                             "--key-file", str(key_file), "--manager-timeout", "4", *extra],
                            stderr=subprocess.PIPE, text=True)


def test_a_remote_worker_needs_curve_to_join_a_curve_manager(tmp_path):
    key_file = tmp_path / "run.key"
    keys.write_key_file(key_file)
    with Manager(local_workers=0, key_file=str(key_file), curve=True) as m:
        plain = _worker(m.address, key_file)
        assert m.wait_for_workers(1, timeout=6) == 0
        assert plain.wait(timeout=30) != 0
        assert "--curve given to both or neither" in plain.stderr.read()
        secure = _worker(m.address, key_file, "--curve")
        try:
            assert m.wait_for_workers(1, timeout=30) == 1
            m.submit(tasks.square, 3)
            (result,) = drain(m)
            assert result.value == 9
        finally:
            m.close()
            assert secure.wait(timeout=30) == 0


def test_status_queries_of_a_curve_manager_need_curve():
    import threading

    with Manager(local_workers=0, curve=True) as m:
        m.submit(tasks.square, 1)
        answers = []
        asker = threading.Thread(target=lambda: answers.append(query_status(m.address, m.key, 10, curve=True)))
        asker.start()
        asker.join(20)  # the manager's keeper answers while this thread waits
        assert answers and answers[0]["tasks_waiting"] == 1
        with pytest.raises(RemoteAccessError):
            query_status(m.address, m.key, timeout=2)
