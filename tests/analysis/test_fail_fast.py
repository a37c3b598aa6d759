"""FailFast: the first tasks of a category ending with one error stop a run; anything else does not."""

from __future__ import annotations

from hep_executor.analysis import ChunkSpec
from hep_executor.analysis import FailFast
from hep_executor.engine import TaskReport, TaskResult
from hep_executor.errors import ChunkError, CodeUnavailableError, FileMissingError, WorkerLostError


def _result(category: str, error: BaseException | None) -> TaskResult:
    return TaskResult(1, TaskReport(1, category, "ok" if error is None else "error"), error=error)


def _chunk(name: str, start: int) -> ChunkSpec:
    return ChunkSpec("ttbar", name, "Events", start, start + 100)


def _bug(name: str, start: int) -> ChunkError:
    return ChunkError(f"processor P failed on {name} entries {start}-{start + 100} (dataset ttbar): "
                      "KeyError: 'Jet_pt'", name, start, start + 100)


def test_same_error_on_the_first_three_stops_on_the_third():
    watch = FailFast(3)
    missing = CodeUnavailableError("no module named 'usercuts'", "usercuts")
    assert [watch.stops(_result("process:ttbar", missing), _chunk("a.root", i)) for i in range(3)] \
        == [False, False, True]


def test_error_naming_other_files_and_ranges_counts_as_the_same():
    watch = FailFast(2)
    assert not watch.stops(_result("process:ttbar", _bug("a.root", 0)), _chunk("a.root", 0))
    assert watch.stops(_result("process:ttbar", _bug("b.root", 700)), _chunk("b.root", 700))


def test_a_success_first_ends_the_watch_of_that_category_only():
    watch = FailFast(2)
    err = CodeUnavailableError("no module named 'usercuts'", "usercuts")
    assert not watch.stops(_result("process:ttbar", None), _chunk("a.root", 0))
    assert not any(watch.stops(_result("process:ttbar", err), _chunk("a.root", i)) for i in range(5))
    assert not watch.stops(_result("process:dy", err), _chunk("d.root", 0))
    assert watch.stops(_result("process:dy", err), _chunk("d.root", 100))


def test_transient_tolerated_and_differing_errors_never_stop():
    lost = WorkerLostError("task killed its worker 3 times")
    assert not any(FailFast(2).stops(_result("c", lost), _chunk("a.root", i)) for i in range(4))
    missing = FileMissingError("a.root: no such file", "a.root")
    tolerant = FailFast(2)
    assert not any(tolerant.stops(_result("c", missing), _chunk("a.root", i),
                                  tolerate=lambda e: isinstance(e, FileMissingError)) for i in range(4))
    mixed = FailFast(2)
    assert not mixed.stops(_result("c", _bug("a.root", 0)), _chunk("a.root", 0))
    assert not mixed.stops(_result("c", RuntimeError("other")), _chunk("a.root", 100))
    assert not mixed.stops(_result("c", _bug("a.root", 200)), _chunk("a.root", 200))


def test_zero_disables():
    err = CodeUnavailableError("x", "x")
    assert not any(FailFast(0).stops(_result("c", err), _chunk("a.root", i)) for i in range(5))
