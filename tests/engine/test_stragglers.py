"""Stragglers at the end of a run get a copy elsewhere; the first back wins, once."""

import time

from hep_executor import Manager
from tests.engine import tasks
from tests.helpers import drain


def _model(m, n=6):
    """Give the category a mean wall time of a few milliseconds."""
    for i in range(n):
        m.submit(tasks.square, i, category="chunk")
    drain(m)


def test_a_straggler_is_copied_and_the_copy_wins_once(tmp_path):
    with Manager(local_workers=2, straggler_factor=3.0, straggler_min_s=1.0) as m:
        assert m.wait_for_workers(2) == 2
        _model(m)
        start = time.monotonic()
        tid = m.submit(tasks.slow_first_time, str(tmp_path / "marker"), 7, category="chunk")
        results = drain(m, timeout=60)
        took = time.monotonic() - start
        assert [r.id for r in results] == [tid]
        assert results[0].value == 49  # the copy's answer: the first run still hangs
        assert took < 30
        assert m.stats["straggler_copies"] == 1 and m.stats["copies_cancelled"] == 1
        assert all(w["running"] == 0 for w in m.workers())
        m.submit(tasks.square, 5, category="chunk")  # both workers go on
        m.submit(tasks.square, 6, category="chunk")
        assert sorted(r.value for r in drain(m)) == [25, 36]


def test_no_copies_while_work_waits_or_when_turned_off(tmp_path):
    with Manager(local_workers=2, straggler_factor=0, straggler_min_s=0.5) as m:
        assert m.wait_for_workers(2) == 2
        _model(m)
        m.submit(tasks.slow_first_time, str(tmp_path / "marker"), 3, 3.0, category="chunk")
        (result,) = drain(m, timeout=60)
        assert result.value == -1  # the one run it had, slow as it was
        assert m.stats["straggler_copies"] == 0


def test_a_copy_that_dies_leaves_the_original_to_finish_unblamed(tmp_path):
    with Manager(local_workers=2, straggler_factor=3.0, straggler_min_s=1.0) as m:
        assert m.wait_for_workers(2) == 2
        _model(m)
        m.submit(tasks.crash_second_time, str(tmp_path / "marker"), 6.0, category="chunk")
        (result,) = drain(m, timeout=60)
        assert result.ok and result.value == "first"
        assert result.report.attempts == 1
        assert m.stats["straggler_copies"] == 1 and m.stats["lost"] == 0
