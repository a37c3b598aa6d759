"""CondorBatch's submit description, checked with HTCondor's own parser.

HTCondor's schedd cannot run on this machine (no Debian package; the
PyPI ``htcondor`` wheel holds the Python bindings only), so jobs are not
submitted here: these tests build the description and parse it back with
``htcondor.Submit``, the same parser ``condor_submit`` uses, and check that
submitting without a schedd fails with a clear :class:`BatchError`.
"""

from __future__ import annotations

import shutil

import pytest

from hep_executor.batch import WorkerSpec, get_batch_system
from hep_executor.batch import CondorBatch, parse_terse, condor_arguments
from hep_executor.errors import BatchError, ConfigError

htcondor = pytest.importorskip("htcondor2", reason="htcondor bindings (pip install htcondor) not installed")

SPEC = WorkerSpec(manager="tcp://manager.example.org:51234", key_file="/secrets/run.key",
                  cores=4, memory_mb=8000, disk_mb=20000, python="/cvmfs/sw/bin/python3")


def parse(text: str):
    return htcondor.Submit(text)


def test_description_parses_with_htcondor(tmp_path):
    text = CondorBatch(log_dir=tmp_path).submit_description(SPEC, 7)
    sub = parse(text)
    assert sub.getQArgs().strip() == "7"
    assert sub.expand("request_cpus") == "4"
    assert sub.expand("request_memory") == "8000MB"
    assert sub.expand("request_disk") == "20000MB"
    assert sub.expand("executable") == "/cvmfs/sw/bin/python3"
    assert sub.expand("transfer_executable").lower() == "false"
    assert sub.expand("universe") == "vanilla"
    assert sub.expand("getenv").lower() == "true"
    for name in ("output", "error", "log"):
        assert sub.expand(name).startswith(str(tmp_path))
    assert "$(ProcId)" in sub["output"]


def test_arguments_carry_the_worker_command(tmp_path):
    sub = parse(CondorBatch(log_dir=tmp_path).submit_description(SPEC, 1))
    args = sub["arguments"].strip('"').split()
    assert args[:2] == ["-m", "hep_executor.worker"]
    assert args[args.index("--manager") + 1] == "tcp://manager.example.org:51234"
    assert args[args.index("--cores") + 1] == "4"
    assert args[args.index("--memory") + 1] == "8000"
    # the key file travels with the job and is found in its scratch folder
    assert args[args.index("--key-file") + 1] == "run.key"
    assert sub["transfer_input_files"] == "/secrets/run.key"
    assert sub["should_transfer_files"] == "YES"


def test_key_on_a_shared_file_system(tmp_path):
    sub = parse(CondorBatch(log_dir=tmp_path, transfer_key=False).submit_description(SPEC, 1))
    assert "/secrets/run.key" in sub["arguments"]
    assert "transfer_input_files" not in sub.keys()


def test_walltime_and_extra_commands(tmp_path):
    spec = WorkerSpec(manager="tcp://m:1", walltime="1-01:00:00")
    batch = get_batch_system("condor", log_dir=tmp_path,
                             extra_submit={"+JobFlavour": '"longlunch"', "request_memory": "4GB"})
    sub = parse(batch.submit_description(spec, 2))
    assert sub["allowed_execute_duration"] == str(25 * 3600)
    assert sub["MY.JobFlavour"] == '"longlunch"'  # htcondor's spelling of +JobFlavour
    assert sub["request_memory"] == "4GB"  # extra commands win


def test_arguments_with_spaces_and_quotes():
    text = condor_arguments(["-c", "print('a b')", 'say "hi"', ""])
    sub = parse(f"executable = /bin/python3\narguments = {text}\nqueue 1\n")
    assert sub["arguments"] == text
    assert text == '''"-c 'print(''a b'')' 'say ""hi""' ''"'''


def test_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="queue"):
        CondorBatch(extra_submit={"queue": "5"})
    with pytest.raises(ConfigError, match="count"):
        CondorBatch(log_dir=tmp_path).submit_description(SPEC, 0)
    with pytest.raises(ConfigError, match="walltime"):
        CondorBatch(log_dir=tmp_path).submit_description(WorkerSpec(manager="tcp://m:1", walltime="2h"), 1)


@pytest.mark.skipif(shutil.which("condor_submit") is not None, reason="an HTCondor client is installed here")
def test_submit_without_a_schedd(tmp_path):
    with pytest.raises(BatchError, match="no HTCondor schedd is reachable") as info:
        CondorBatch(log_dir=tmp_path).submit(SPEC, 2)
    written = list(tmp_path.glob("*.sub"))
    assert len(written) == 1 and str(written[0]) in str(info.value)
    assert parse(written[0].read_text()).getQArgs().strip() == "2"


def test_terse_output_gives_one_id_per_job():
    assert parse_terse("4711.0 - 4711.2\n") == ["4711.0", "4711.1", "4711.2"]
    assert parse_terse("") == []
