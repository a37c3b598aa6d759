"""Checkpoints and resume: a run killed or interrupted resumes to the output of an uninterrupted one.

The killed and interrupted runs are processes of their own
(:mod:`tests.analysis.checkpoint_script`) with two local workers each.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from hep_executor import run
from hep_executor.analysis import CheckpointStore
from hep_executor.errors import CheckpointMismatchError, RunInterrupted
from hep_executor.planning import Coverage
from tests.analysis.simple_processor import MuonPtProcessor, SlowProcessor
from tests.helpers import try_assert

ROOT = Path(__file__).resolve().parents[2]


def assert_same(a, b):
    assert a["events"] == b["events"]
    assert set(a["sumpt"]) == set(b["sumpt"])
    for ds in a["sumpt"]:
        assert a["sumpt"][ds] == pytest.approx(b["sumpt"][ds], rel=1e-9)
    for ds in a["pt"].axes["dataset"]:
        np.testing.assert_allclose(a["pt"][{"dataset": ds}].values(), b["pt"][{"dataset": ds}].values(),
                                   rtol=1e-9)


@pytest.fixture(scope="module")
def reference(samples, manager):
    return run(samples, MuonPtProcessor(), manager=manager, chunksize=500).output


@pytest.fixture
def fileset_json(samples, tmp_path):
    path = tmp_path / "fileset.json"
    path.write_text(json.dumps(samples))
    return path


class Script:
    """One run of the checkpoint script as a process; stops what it started."""

    def __init__(self, fileset_json, folder, tmp_path, name, *args):
        self.log = tmp_path / f"{name}.log"
        self.out = tmp_path / f"{name}.pkl"
        self.stderr = tmp_path / f"{name}.err"
        cmd = [sys.executable, "-m", "tests.analysis.checkpoint_script", str(fileset_json), str(folder),
               str(self.log), str(self.out), *map(str, args)]
        self.err_fh = open(self.stderr, "w")
        # a session of its own, so that a Ctrl-C sent to its process group reaches no one else
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.err_fh,
                                     start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)
        self.seen: set[psutil.Process] = set()

    def ranges(self) -> list[tuple[str, int, int]]:
        if not self.log.exists():
            return []
        return [tuple(json.loads(line)) for line in self.log.read_text().splitlines() if line.endswith("]")]

    def watch_children(self) -> None:
        try:
            self.seen.update(self.ps.children(recursive=True))
        except psutil.NoSuchProcess:
            pass

    def wait_for_chunks(self, n: int, timeout: float = 120.0) -> None:
        def ready():
            self.watch_children()
            assert self.proc.poll() is None or len(self.ranges()) >= n, self.stderr.read_text()[-3000:]
            return len(self.ranges()) >= n
        try_assert(ready, timeout=timeout, interval=0.05, message=f"{n} chunks not done within {timeout} s")

    def ctrl_c(self) -> None:
        """SIGINT to the whole process group, as a terminal's Ctrl-C does."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait_watching(self, timeout: float) -> int:
        """Wait for the exit code, noting every process started meanwhile."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"script still running after {timeout} s")
            self.watch_children()
            time.sleep(0.05)
        return self.proc.returncode

    def alive_children(self) -> list[psutil.Process]:
        out = []
        for p in self.seen:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def assert_no_orphans(self, timeout: float = 30.0) -> None:
        try_assert(lambda: not self.alive_children(), timeout=timeout,
                   message=f"processes left behind: {self.alive_children()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for p in self.alive_children():
            p.kill()
        self.err_fh.close()


def _covered(folder) -> dict:
    snap = CheckpointStore(folder).load()
    return snap.covered() if snap is not None else {}


def _overlap(ranges, covered) -> list:
    return [(f, a, b) for f, a, b in ranges for c, d in covered.get(f, []) if a < d and c < b]


def _session_ranges(report) -> list:
    """The ranges a run cut itself (not those it resumed)."""
    return [(f["file"], a, b) for f in report["files"] for a, b in f["ranges"]]


def _union(ranges) -> dict:
    out: dict = {}
    for f, a, b in ranges:
        out.setdefault(f, []).append((a, b))
    return out


def test_sigkill_at_random_points_then_resume(fileset_json, tmp_path, reference):
    folder = tmp_path / "ckpt"
    rng = random.Random(16)
    runs = []
    for i in range(5):
        loaded = _covered(folder)
        chunk = rng.choice([250, 400, 700])
        script = Script(fileset_json, folder, tmp_path, f"kill{i}", "--chunksize", chunk, "--delay", 0.3)
        try:
            script.wait_for_chunks(1)
            time.sleep(rng.uniform(0.2, 1.5))
            script.watch_children()
            script.proc.send_signal(signal.SIGKILL)
            script.proc.wait(timeout=30)
            script.assert_no_orphans()
        finally:
            script.close()
        runs.append((loaded, script.ranges()))
    loaded = _covered(folder)
    assert sum(1 for covered, _ in runs if covered) >= 3, "killed runs resumed from no checkpoint"
    last = Script(fileset_json, folder, tmp_path, "last", "--chunksize", 333, "--delay", 0.3)
    try:
        assert last.proc.wait(timeout=300) == 0, last.stderr.read_text()[-3000:]
    finally:
        last.close()
    runs.append((loaded, last.ranges()))
    for i, (covered, processed) in enumerate(runs):
        assert not _overlap(processed, covered), f"run {i} processed ranges its checkpoint held"
    result = pickle.loads(last.out.read_bytes())
    assert result["coverage_ok"]
    assert_same(result["output"], reference)
    assert result["report"]["checkpoint"]["resumed_entries"] == sum(b - a for rs in loaded.values()
                                                                    for a, b in rs)
    # the last run cut and processed only what its checkpoint did not hold, once
    assert not _overlap(_session_ranges(result["report"]), loaded)
    held = result["report"]["checkpoint"]["resumed_entries"]
    assert result["report"]["checkpoint"]["processed_entries"] == 18000 - held
    assert result["report"]["checkpoint"]["reprocessed_entries"] == 0
    sizes = {b - a for _, a, b in last.ranges()}
    assert sizes and max(sizes) <= 333, sizes


def test_truncated_checkpoint_falls_back_to_the_one_before(samples, manager, tmp_path, reference):
    folder = tmp_path / "ckpt"
    run(samples, MuonPtProcessor(), manager=manager, chunksize=500, maxchunks=3, checkpoint=folder,
        checkpoint_every_chunks=1)
    store = CheckpointStore(folder)
    newest, before = store.states()[-1], store.states()[-2]
    expected = CheckpointStore(folder).load()
    assert expected.path == newest
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    loaded = CheckpointStore(folder).load()
    assert loaded is not None and loaded.path == before
    assert loaded.seq == expected.seq - 1 and loaded.events == 4500
    result = run(samples, MuonPtProcessor(), manager=manager, chunksize=700, checkpoint=folder)
    assert result.coverage.ok
    assert_same(result.output, reference)
    assert result.report["checkpoint"]["resumed_seq"] == loaded.seq
    assert not _overlap(_session_ranges(result.report), loaded.covered())
    assert sum(b - a for _, a, b in _session_ranges(result.report)) == 18000 - loaded.events


def test_manifest_mismatch_names_the_difference(samples, manager, tmp_path, reference):
    folder = tmp_path / "ckpt"
    run(samples, SlowProcessor(0.0), manager=manager, chunksize=500, maxchunks=1, checkpoint=folder)
    with pytest.raises(CheckpointMismatchError, match="another state"):
        run(samples, SlowProcessor(0.01), manager=manager, checkpoint=folder)
    with pytest.raises(CheckpointMismatchError, match="processor class .*SlowProcessor then, .*MuonPtProcessor now"):
        run(samples, MuonPtProcessor(), manager=manager, checkpoint=folder)
    fewer = {k: v for k, v in samples.items() if k != "data"}
    with pytest.raises(CheckpointMismatchError, match=r"files not in this fileset: .*data_0\.root \(data\)"):
        run(fewer, SlowProcessor(0.0), manager=manager, checkpoint=folder)
    result = run(samples, MuonPtProcessor(), manager=manager, chunksize=500, checkpoint=folder, force=True)
    assert result.report["checkpoint"]["resumed_entries"] == 0
    assert result.report["totals"]["chunks"] == 36
    assert_same(result.output, reference)


def test_ctrl_c_once_waits_for_chunks_in_flight_and_resumes(fileset_json, tmp_path, samples, manager,
                                                            reference):
    folder = tmp_path / "ckpt"
    script = Script(fileset_json, folder, tmp_path, "once", "--chunksize", 1000, "--delay", 1.0,
                    "--every-chunks", 1000)
    try:
        script.wait_for_chunks(2)
        before = set(script.seen)
        script.ctrl_c()
        t0 = time.monotonic()
        assert script.wait_watching(90) == 3, script.stderr.read_text()[-3000:]
        took = time.monotonic() - t0
        assert script.seen == before  # the workers kept running their chunks (none restarted)
        script.assert_no_orphans()
    finally:
        script.close()
    err = script.stderr.read_text()
    assert "waiting up to 60 s" in err and "To resume, run the same call" in err, err[-3000:]
    assert took < 60
    covered = _covered(folder)
    done = script.ranges()
    check = Coverage.check(covered, _union(done))
    assert check.ok, check.describe()  # every chunk that came back is in the checkpoint, once
    assert len(done) > 2  # the chunks in flight at Ctrl-C were waited for
    result = run(samples, SlowProcessor(1.0), manager=manager, chunksize=1000, checkpoint=folder)
    assert_same(result.output, reference)
    assert result.coverage.ok
    assert not _overlap(_session_ranges(result.report), covered)
    assert sum(b - a for _, a, b in _session_ranges(result.report)) == 18000 - len(Coverage.from_ranges(covered))


def test_ctrl_c_twice_stops_at_once_with_a_checkpoint(fileset_json, tmp_path):
    folder = tmp_path / "ckpt"
    script = Script(fileset_json, folder, tmp_path, "twice", "--delay", 15.0, "--every-chunks", 1000)
    try:
        script.wait_for_chunks(1, timeout=180)
        script.watch_children()
        script.ctrl_c()
        time.sleep(0.5)
        script.ctrl_c()
        t0 = time.monotonic()
        assert script.proc.wait(timeout=60) == 3, script.stderr.read_text()[-3000:]
        took = time.monotonic() - t0
        script.assert_no_orphans()
    finally:
        script.close()
    err = script.stderr.read_text()
    dropped = re.search(r"second Ctrl-C: stopping now, (\d+) chunk", err)
    assert dropped and int(dropped.group(1)) > 0, err[-3000:]
    # waiting for the chunks in flight (15 s each, two rounds on two workers) would take 30 s;
    # what is left is the workers' shutdown
    assert took < 14
    check = Coverage.check(_covered(folder), _union(script.ranges()))
    assert check.ok, check.describe()


def test_interrupted_run_in_process_raises_with_the_folder(samples, manager, tmp_path):
    folder = tmp_path / "ckpt"
    calls = []

    def progress(stage, result=None, item=None):
        if stage == "process" and result.ok:
            calls.append(item)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunInterrupted) as info:
        run(samples, MuonPtProcessor(), manager=manager, chunksize=500, checkpoint=folder, progress=progress)
    assert info.value.checkpoint == str(folder)
    assert Coverage.check(_covered(folder), _union((i.filename, i.entrystart, i.entrystop) for i in calls)).ok
    assert manager.empty()


def test_runner_with_hep_executor_resumes_within_its_processing_call(samples, manager, tmp_path, reference):
    import threading

    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    from hep_executor import HepExecutor

    folder, stats = tmp_path / "ckpt", tmp_path / "stats.jsonl"

    def runner():
        ex = HepExecutor(manager=manager, status=False, checkpoint=str(folder), stats_log=str(stats),
                         dynamic=False)  # Runner's 500-event chunks as given: one task per 500 entries
        return processor.Runner(executor=ex, schema=NanoAODSchema, chunksize=500)

    base = manager.stats["dispatched"]

    def ctrl_c_after_some_chunks():
        try_assert(lambda: manager.stats["dispatched"] - base >= 6 + 8, timeout=120)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=ctrl_c_after_some_chunks, daemon=True)
    watcher.start()
    with pytest.raises(RunInterrupted):
        runner()(samples, treename="Events", processor_instance=SlowProcessor(0.3))
    watcher.join(timeout=5)
    covered = len(Coverage.from_ranges(_covered(folder)))
    assert 0 < covered < 18000
    out = runner()(samples, treename="Events", processor_instance=SlowProcessor(0.3))
    assert_same(out, reference)
    processed = [json.loads(line)["processed"] for line in stats.read_text().splitlines()]
    assert len(processed) == 1 and processed[0] == (18000 - covered) // 500  # only what was left


def test_resume_after_a_memory_split_with_another_chunk_size_doubles_nothing(samples, manager, tmp_path):
    from tests.analysis.simple_processor import MemoryHungryProcessor

    # a 3000-event chunk holds ~450 MB of its own for 0.3 s: over 420 MB, split
    proc = MemoryHungryProcessor(mb_per_event=0.15, hold_s=0.3)
    reference = run(samples, proc, manager=manager, chunksize=1000, resources_mode="none").output
    folder, done = tmp_path / "ckpt", []

    def progress(stage, result=None, item=None):
        if stage == "process" and result.ok:
            done.append(item)
            if sum(1 for i in done if i.entrystop - i.entrystart < 3000) == 1:  # a part of a split chunk
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunInterrupted):  # only the SIGINT sent once a split chunk's part came back
        run(samples, proc, manager=manager, chunksize=3000, resources_mode="fixed", memory_mb=420,
            checkpoint=folder, checkpoint_every_chunks=1, progress=progress)
    covered = _covered(folder)
    assert Coverage.check(covered, _union((i.filename, i.entrystart, i.entrystop) for i in done)).ok
    held = len(Coverage.from_ranges(covered))
    assert 0 < held < 18000
    result = run(samples, proc, manager=manager, chunksize=700, resources_mode="fixed", memory_mb=420,
                 checkpoint=folder)
    assert result.coverage.ok
    assert result.report["checkpoint"]["resumed_entries"] == held
    session = _session_ranges(result.report)
    assert not _overlap(session, covered)
    assert sum(b - a for _, a, b in session) == 18000 - held
    assert max(b - a for _, a, b in session) <= 700
    assert result.report["checkpoint"]["processed_entries"] == 18000 - held
    assert result.report["checkpoint"]["reprocessed_entries"] == 0
    assert result.output["events"] == reference["events"]  # integer counts: nothing doubled or missed
    for ds in reference["sumpt"]:
        assert result.output["sumpt"][ds] == pytest.approx(reference["sumpt"][ds], rel=1e-9)


def test_opening_a_store_removes_only_temporary_files_of_dead_writers(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = tmp_path / f".state-000001.ckpt.tmp-{gone.stdout.strip()}"
    live = tmp_path / f".state-000002.ckpt.tmp-{os.getpid()}"  # a write under way in a running process
    for path in (dead, live):
        path.write_bytes(b"half")
    CheckpointStore(tmp_path)
    assert not dead.exists() and live.exists()


def test_cheap_checkpoints_are_written_between_the_timed_ones(samples, manager, tmp_path):
    folder = tmp_path / "ckpt"
    # 36 chunks of 0.15 s on 2 workers: about 3 s, far under the hour between timed checkpoints
    result = run(samples, SlowProcessor(0.15), manager=manager, chunksize=500, checkpoint=folder,
                 checkpoint_every_s=3600, checkpoint_every_chunks=10**6)
    summary = result.report["checkpoint"]
    # the last write took milliseconds: one is due each second, besides the final one
    assert summary["files_written"] >= 3, summary
    assert summary["write_s"] < 0.05 * result.report["totals"]["wall_s"], (summary, result.report["totals"])
    assert result.coverage.ok
