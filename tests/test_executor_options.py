"""HepExecutor's WorkQueueExecutor options: each does what it says or is named in the warning."""

import hashlib
import json
import os
import warnings

import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hep_executor import HepExecutor, run_uproot_job
from hep_executor.engine import read_password_file
from hep_executor.errors import ConfigError
from tests.helpers import drain
from tests.analysis.simple_processor import MuonPtProcessor


class FlakyProcessor(processor.ProcessorABC):
    """Fails the first time it sees each chunk (a marker file per chunk remembers), then counts events."""

    def __init__(self, folder: str):
        self.folder = folder

    def process(self, events):
        m = events.metadata
        marker = os.path.join(self.folder, f"{os.path.basename(m['filename'])}-{m['entrystart']}")
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("first attempt fails")
        return {"events": {m["dataset"]: len(events)}}

    def postprocess(self, accumulator):
        return accumulator


def test_password_file_any_bytes_hashed_into_the_key(tmp_path):
    wq = tmp_path / "wq.password"
    wq.write_bytes(b"\x00\xffa Work Queue password\n")
    assert read_password_file(wq) == hashlib.sha256(wq.read_bytes()).digest()
    hexkey = tmp_path / "hex.key"
    hexkey.write_text("ab" * 32 + "\n")
    assert read_password_file(hexkey) == bytes.fromhex("ab" * 32)
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(ConfigError, match="empty"):
        read_password_file(tmp_path / "empty")


def test_password_file_runs_a_job(samples, tmp_path):
    wq = tmp_path / "wq.password"
    wq.write_bytes(b"not hex at all")
    with HepExecutor(workers=1, password_file=str(wq), status=False) as ex:
        out = processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1500)(
            {"ttbar": samples["ttbar"][:1]}, treename="Events", processor_instance=MuonPtProcessor())
        assert ex.pool.manager.key == hashlib.sha256(b"not hex at all").digest()
    assert out["events"] == {"ttbar": 3000}


def test_unused_options_named_in_the_warning(samples, manager):
    ex = HepExecutor(manager=manager, status=False, disk=1000, manager_name="topeft", resource_monitor="off")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=3000)(
            {"ttbar": samples["ttbar"][:1]}, treename="Events", processor_instance=MuonPtProcessor())
    text = " ".join(str(w.message) for w in seen if "ignores" in str(w.message))
    for name in ("disk", "manager_name", "resource_monitor='off'"):
        assert name in text


@pytest.mark.parametrize("face", ["runner", "run_uproot_job"])
def test_retries_rerun_a_failed_chunk(samples, manager, tmp_path, face):
    fileset = {"ttbar": samples["ttbar"][:1]}
    ex = HepExecutor(manager=manager, status=False, retries=1, dynamic=False)
    if face == "runner":
        out = processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1000, metadata_cache={})(
            fileset, treename="Events", processor_instance=FlakyProcessor(str(tmp_path)))
    else:
        out = run_uproot_job(fileset, "Events", FlakyProcessor(str(tmp_path)), executor=ex,
                             executor_args={"schema": NanoAODSchema}, chunksize=1000)
    assert out["events"] == {"ttbar": 3000}
    assert len(list(tmp_path.iterdir())) == 3  # every chunk failed once


def test_own_path_writes_the_logs(samples, manager, tmp_path):
    logs = {name: str(tmp_path / f"{name}.jsonl") for name in ("transactions_log", "stats_log", "tasks_accum_log")}
    ex = HepExecutor(manager=manager, status=False, **logs)
    run_uproot_job({"ttbar": samples["ttbar"]}, "Events", MuonPtProcessor(), executor=ex,
                   executor_args={"schema": NanoAODSchema}, chunksize=1000)
    tasks = [json.loads(line) for line in open(logs["transactions_log"])]
    kinds = {t["category"].split(":")[0] for t in tasks}
    # preprocessing shows only when the metadata cache does not hold the files yet
    assert kinds - {"preprocess"} == {"process", "accumulate"}, kinds
    assert all(json.loads(line)["category"] == "accumulate" for line in open(logs["tasks_accum_log"]))
    stats = json.loads(open(logs["stats_log"]).read().splitlines()[-1])
    assert stats["events"] == 6000 and stats["merges"] >= 1


def _proxy_seen():
    import os

    return os.environ.get("X509_USER_PROXY")


def test_x509_proxy_reaches_local_workers_and_a_missing_one_is_named(tmp_path):
    from hep_executor.errors import ConfigError

    with pytest.raises(ConfigError, match="x509_proxy.*nope"):
        HepExecutor(x509_proxy=str(tmp_path / "nope"))
    proxy = tmp_path / "x509up_test"
    proxy.write_text("proxy")
    ex = HepExecutor(x509_proxy=str(proxy), workers=1, status=False)
    try:
        manager = ex.pool.get(ex)
        manager.submit(_proxy_seen)
        (result,) = drain(manager)
        assert result.value == str(proxy)
    finally:
        ex.close()


def _started_before_the_first_report(tasks: list[dict]) -> int:
    """How many process tasks started before the first process task ended (worker timestamps)."""
    process = [t for t in tasks if t["category"].startswith("process")]
    first_end = min(t["started"] + t["wall"] for t in process)
    return sum(t["started"] < first_end for t in process)


@pytest.mark.parametrize("face", ["run", "runner"])
def test_default_resources_mode_starts_a_wave_before_the_first_chunk_reports(samples, manager, tmp_path, face):
    from hep_executor import run

    fileset = {"ttbar": samples["ttbar"], "data": samples["data"]}
    if face == "run":
        # preprocessing first, so that both slots are free for the first wave of chunks
        result = run(fileset, MuonPtProcessor(), "Events", manager=manager, chunksize=1000,
                     streaming=False, metadata_cache=False)
        tasks = result.report["tasks"]
    else:
        log = tmp_path / "tasks.jsonl"
        ex = HepExecutor(manager=manager, status=False, dynamic=False, transactions_log=str(log))
        assert ex.resources_mode == "auto"
        processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=1000, metadata_cache={})(
            fileset, MuonPtProcessor(), treename="Events")
        tasks = [json.loads(line) for line in open(log)]
    # the first wave fills both workers: the run does not hold its first chunk alone until it reports
    assert _started_before_the_first_report(tasks) >= 2, sorted((t["started"], t["wall"]) for t in tasks)
