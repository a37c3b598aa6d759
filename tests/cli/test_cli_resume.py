"""``hep-executor run --resume DIR``: a CLI run killed midway (SIGKILL) is finished from its
run folder alone; a checkpoint of another run is refused naming the difference, or
discarded with ``--force``; a folder with no checkpoint is an error naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from coffea.util import load

from hep_executor import run
from hep_executor.analysis import CheckpointStore
from hep_executor.cli.main import main as cli_main
from tests.analysis.simple_processor import MuonPtProcessor
from tests.helpers import try_assert

REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
fileset: {fileset}
processor: {{class: "tests.analysis.simple_processor:SlowProcessor", options: {{delay: 0.3}}}}
workers: {{count: 2}}
chunking: {{chunksize: 500}}
checkpoint_every_chunks: 2
cache: {{metadata: false}}
"""


@pytest.fixture(scope="module")
def reference(samples, manager):
    return run(samples, MuonPtProcessor(), manager=manager, chunksize=500).output


@pytest.fixture
def run_yaml(samples, tmp_path):
    (tmp_path / "fs.json").write_text(json.dumps(samples))
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.format(fileset=tmp_path / "fs.json"))
    return path


def cli(*args, timeout=300):
    """``hep-executor`` in a process of its own, in the repository (the processor's module is there)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "hep_executor.cli.main", *map(str, args), "--no-progress"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc, timeout=300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def kill_midway(run_yaml, out: Path, ckpt: Path | None = None) -> Path:
    """Start the config's run, SIGKILL it once a checkpoint (in ``ckpt``, else in the run folder) holds
    some chunks; return its run folder."""
    proc = cli("run", run_yaml, "--out", out)
    try:
        def checkpointed():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            # a glob, not a CheckpointStore: opening one removes the temporary files of a write under way
            pattern = "state-*.ckpt" if ckpt else "*/checkpoint/state-*.ckpt"
            return any((ckpt or out).glob(pattern))
        try_assert(checkpointed, timeout=180, interval=0.05, message="no checkpoint written")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    return run_dir


def assert_same(a, b):
    assert a["events"] == b["events"]
    for ds in b["sumpt"]:
        assert a["sumpt"][ds] == pytest.approx(b["sumpt"][ds], rel=1e-9)
    for ds in b["pt"].axes["dataset"]:
        np.testing.assert_allclose(a["pt"][{"dataset": ds}].values(), b["pt"][{"dataset": ds}].values(),
                                   rtol=1e-9)


def test_killed_cli_run_resumes_from_its_run_folder(run_yaml, tmp_path, reference):
    run_dir = kill_midway(run_yaml, tmp_path / "runs")
    covered = CheckpointStore(run_dir / "checkpoint").load().covered()
    done = sum(b - a for rs in covered.values() for a, b in rs)
    assert 0 < done < 18000
    code, err = finish(cli("run", "--resume", run_dir, "--chunksize", 700))  # another chunk size
    assert code == 0, err[-3000:]
    assert_same(load(run_dir / "output.coffea"), reference)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "ok" and report["coverage_ok"]
    assert report["checkpoint"]["resumed_entries"] == done
    session = [(f["file"], a, b) for f in report["files"] for a, b in f["ranges"]]
    assert not [(f, a, b) for f, a, b in session for c, d in covered.get(f, []) if a < d and c < b]
    assert sum(b - a for _, a, b in session) == 18000 - done
    assert 500 < max(b - a for _, a, b in session) <= 700  # cut at the new size (evened per file)
    assert report["checkpoint"]["processed_entries"] == 18000 - done
    assert report["checkpoint"]["reprocessed_entries"] == 0
    assert not (run_dir / "checkpoint").exists()  # the finished run's own checkpoint is dropped


def test_resume_of_another_run_is_refused_then_forced(run_yaml, tmp_path, samples, reference):
    ckpt = tmp_path / "ckpt"
    run_yaml.write_text(run_yaml.read_text() + f"checkpoint: {ckpt}\n")
    kill_midway(run_yaml, tmp_path / "runs", ckpt)
    fewer = {k: v for k, v in samples.items() if k != "data"}
    (tmp_path / "fs.json").write_text(json.dumps(fewer))  # the fileset changed since
    code, err = finish(cli("run", "--resume", ckpt, "--out", tmp_path / "again"))
    assert code == 2, err[-3000:]
    assert "files not in this fileset" in err and "data_0.root (data)" in err, err[-3000:]
    code, err = finish(cli("run", "--resume", ckpt, "--force", "--out", tmp_path / "forced"))
    assert code == 0, err[-3000:]
    discarded = [line for line in err.splitlines() if "discarded, starting over" in line]
    assert len(discarded) == 1 and "files not in this fileset" in discarded[0], err[-3000:]
    (run_dir,) = [p for p in (tmp_path / "forced").iterdir() if p.is_dir() and not p.is_symlink()]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["checkpoint"]["resumed_entries"] == 0
    out = load(run_dir / "output.coffea")
    assert out["events"] == {k: v for k, v in reference["events"].items() if k != "data"}


def test_resume_of_a_folder_with_no_checkpoint_names_it(tmp_path, capsys):
    assert cli_main(["run", "--resume", str(tmp_path), "--no-progress"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--resume {tmp_path}: no checkpoint there" in line, line
