"""Ctrl-C typed into a real terminal: ``hep-executor run`` runs in a pseudo-terminal of its own
(session leader, the terminal its controlling one, its progress bar drawn there) and the test
types the interrupt character, as a user does; the terminal, not the test, sends SIGINT to the
run and its workers.

Once: no chunk starts after the ones in flight, those are waited for and merged, the checkpoint
covers every chunk that started, the resume line is printed, the exit code is 130 and none of
the run's processes is left. Twice: the chunks in flight are dropped, the checkpoint holds what
was merged, no process is left. Either way ``--resume`` then finishes the run to the output of
an uninterrupted one, running no range twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
import threading
import time
from pathlib import Path

import psutil
import pytest
from coffea.util import load

from hep_executor import run
from hep_executor.analysis import CheckpointStore
from tests.analysis.simple_processor import MuonPtProcessor
from tests.cli.test_cli_resume import assert_same, cli, finish
from tests.helpers import try_assert

REPO = Path(__file__).resolve().parents[2]
CTRL_C = b"\x03"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")

CONFIG = """\
fileset: {fileset}
processor: {{class: "tests.cli.ctrl_c_processor:StartNotingProcessor", options: {{delay: 1.0, log: "{log}"}}}}
workers: {{count: 2}}
chunking: {{chunksize: 500}}
checkpoint_every_chunks: 2
cache: {{metadata: false}}
"""


class Terminal:
    """``hep-executor ARGS`` in a pseudo-terminal: type into it, read what it shows, watch its processes."""

    def __init__(self, *args: str, cwd: Path):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
        argv = [sys.executable, "-m", "hep_executor.cli.main", *map(str, args)]
        self.pid, self.fd = pty.fork()  # the child: a new session whose controlling terminal is the pty
        if self.pid == 0:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 220, 0, 0))
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.output = bytearray()
        self.seen: dict[int, psutil.Process] = {}
        self.returncode: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:  # drained all along: a full terminal buffer would block the run
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the run and all it started closed the terminal
                return
            if not data:
                return
            self.output.extend(data)

    def text(self) -> str:
        """What the terminal showed, without its control sequences."""
        return ANSI.sub("", self.output.decode(errors="replace"))

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def watch(self) -> bool:
        """Note the run's descendants now (workers, their slots); return whether the run still runs."""
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass
        return self.poll() is None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        try_assert(lambda: not self.watch(), timeout=timeout, interval=0.05,
                   message=f"the run did not end within {timeout} s:\n{self.text()[-3000:]}")
        self._reader.join(timeout=10)
        return self.returncode

    def left(self, timeout: float = 30.0) -> list[psutil.Process]:
        """The run's processes still alive ``timeout`` s after it ended (zombies count as gone)."""
        _, alive = psutil.wait_procs(list(self.seen.values()), timeout=timeout)
        return [p for p in alive if _living(p)]

    def close(self) -> None:
        if self.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        for proc in self.seen.values():
            if _living(proc):
                proc.kill()
        os.close(self.fd)


def _living(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def small_fileset(samples):
    """One file of each of two datasets: 6000 events, 12 chunks of 500."""
    return {ds: files[:1] for ds, files in list(samples.items())[:2]}


@pytest.fixture(scope="module")
def reference(small_fileset, manager):
    return run(small_fileset, MuonPtProcessor(), manager=manager, chunksize=500).output


@pytest.fixture
def started(tmp_path, small_fileset):
    """A run in a terminal, once its first checkpoint is written; yields (terminal, starts log, runs folder)."""
    (tmp_path / "fs.json").write_text(json.dumps(small_fileset))
    starts = tmp_path / "starts.txt"
    (tmp_path / "run.yaml").write_text(CONFIG.format(fileset=tmp_path / "fs.json", log=starts))
    term = Terminal("run", tmp_path / "run.yaml", "--out", tmp_path / "runs", cwd=tmp_path)
    try:
        def checkpointed():
            assert term.watch(), term.text()[-3000:]
            return any((tmp_path / "runs").glob("*/checkpoint/state-*.ckpt"))  # a glob: leave its writes alone
        try_assert(checkpointed, timeout=180, message=f"no checkpoint written:\n{term.text()[-3000:]}")
        assert len(term.seen) >= 2, "the run's workers were not seen"
        yield term, starts, tmp_path / "runs"
    finally:
        term.close()


def chunk_starts(path: Path) -> list[tuple[float, str, int, int]]:
    rows = (line.split() for line in path.read_text().splitlines() if line)
    return [(float(t), f, int(a), int(b)) for t, f, a, b in rows]


def joined(ranges) -> dict[str, list[tuple[int, int]]]:
    """``{file: ranges}`` of ``(file, start, stop)`` rows, sorted, touching ones joined."""
    out: dict[str, list[tuple[int, int]]] = {}
    for f, a, b in sorted(ranges):
        rs = out.setdefault(f, [])
        if rs and rs[-1][1] >= a:
            rs[-1] = (rs[-1][0], max(rs[-1][1], b))
        else:
            rs.append((a, b))
    return out


def resume_and_compare(run_dir: Path, held: dict, reference) -> None:
    """``--resume RUN_DIR`` finishes the run: the reference output, nothing the checkpoint held run again."""
    code, err = finish(cli("run", "--resume", run_dir))
    assert code == 0, err[-3000:]
    assert_same(load(run_dir / "output.coffea"), reference)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["coverage_ok"]
    assert report["checkpoint"]["resumed_entries"] == sum(b - a for rs in held.values() for a, b in rs) > 0
    assert report["checkpoint"]["reprocessed_entries"] == 0


def test_ctrl_c_once_stops_dispatch_waits_and_resumes(started, reference):
    term, starts, runs = started
    t_typed = time.time()
    term.type(CTRL_C)
    assert term.wait(timeout=120) == 130, term.text()[-3000:]
    text = term.text()
    waited = re.search(r"waiting up to (\d+) s for the (\d+) chunk\(s\) in flight", text)
    assert waited, text[-3000:]
    rows = chunk_starts(starts)
    assert len([r for r in rows if r[0] > t_typed]) <= int(waited.group(2))  # none beyond those in flight
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()]
    assert f"to resume: hep-executor run --resume {run_dir / 'checkpoint'}" in text, text[-3000:]
    held = CheckpointStore(run_dir / "checkpoint").load().covered()
    assert held == joined((f, a, b) for _, f, a, b in rows)  # every chunk that started was waited for
    assert sum(b - a for rs in held.values() for a, b in rs) < 6000
    assert term.left() == []
    resume_and_compare(run_dir, held, reference)


def test_ctrl_c_twice_stops_at_once_and_resumes(started, reference):
    term, starts, runs = started
    term.type(CTRL_C)
    try_assert(lambda: "Ctrl-C again to stop now" in term.text(), timeout=60,
               message=f"the first Ctrl-C was not acknowledged:\n{term.text()[-3000:]}")
    term.type(CTRL_C)
    assert term.wait(timeout=60) == 130, term.text()[-3000:]
    text = term.text()
    dropped = re.search(r"second Ctrl-C: stopping now, (\d+) chunk", text)
    assert dropped and int(dropped.group(1)) >= 1, text[-3000:]
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()]
    assert f"to resume: hep-executor run --resume {run_dir / 'checkpoint'}" in text, text[-3000:]
    held = CheckpointStore(run_dir / "checkpoint").load().covered()
    began = joined((f, a, b) for _, f, a, b in chunk_starts(starts))
    assert all(any(c <= a and b <= d for c, d in began[f]) for f, rs in held.items() for a, b in rs)
    assert term.left() == []
    resume_and_compare(run_dir, held, reference)
