"""Replacement workers start off the dispatch pass: a slow start does not stall wait()."""

from __future__ import annotations

import os
import signal
import threading
import time

from hep_executor import Manager
from hep_executor.engine import LocalProcesses
from tests.engine import tasks
from tests.helpers import try_assert


class _SlowReplacements(LocalProcesses):
    """Local workers whose replacements (every start after the first) take ``delay_s`` to begin."""

    def __init__(self, delay_s: float):
        super().__init__()
        self.delay_s = delay_s
        self.calls: list[str] = []  # the thread of each submit

    def submit(self, spec, count=1):
        self.calls.append(threading.current_thread().name)
        if len(self.calls) > 1:
            time.sleep(self.delay_s)
        return super().submit(spec, count)


def test_a_slow_replacement_start_does_not_stall_the_dispatch_pass():
    launcher = _SlowReplacements(delay_s=3.0)
    with Manager(local_workers=1, launcher=launcher) as m:
        assert m.wait_for_workers(1, timeout=60) == 1
        first = m.workers()[0]["pid"]
        os.kill(first, signal.SIGKILL)
        try_assert(lambda: len(launcher.calls) == 2, timeout=30, message="no replacement was started")
        t0 = time.monotonic()
        m.wait(timeout=0)  # a pass while the replacement is still starting
        assert time.monotonic() - t0 < 1.0
        assert launcher.calls[0] == threading.current_thread().name
        assert launcher.calls[1].startswith("hep-worker-starts")
        m.submit(tasks.square, 7)
        done = []
        try_assert(lambda: done.extend(m.wait(timeout=0.2)) or done, timeout=60)
        assert done[0].value == 49
        assert m.workers()[0]["pid"] != first
