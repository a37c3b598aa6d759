"""Tests of entry-range planning and coverage (hep_executor.planning._chunking)."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hep_executor.planning import Coverage, CoverageReport, FileCursor, plan_ranges, split_range
from hep_executor.errors import ConfigError


def assert_exact_cover(ranges, start, stop):
    assert ranges[0][0] == start and ranges[-1][1] == stop
    for (a, b), (c, _) in zip(ranges, ranges[1:]):
        assert b == c
    assert all(a < b for a, b in ranges)


def test_plan_is_balanced():
    ranges = plan_ranges(1001, 100)
    assert len(ranges) == 11
    assert_exact_cover(ranges, 0, 1001)
    lengths = [b - a for a, b in ranges]
    assert max(lengths) <= 100 and max(lengths) - min(lengths) <= 1  # no tiny last range


def test_plan_edges():
    assert plan_ranges(0, 10) == []
    assert plan_ranges(50, 10, start=50) == []
    assert plan_ranges(7, 100) == [(0, 7)]
    assert plan_ranges(100, 10, start=95) == [(95, 100)]
    assert plan_ranges(30, 10, start=10) == [(10, 20), (20, 30)]
    with pytest.raises(ConfigError, match="chunksize"):
        plan_ranges(10, 0)
    with pytest.raises(ConfigError, match="start"):
        plan_ranges(10, 5, start=11)


def test_plan_aligned_to_clusters():
    clusters = list(range(0, 1000, 30))  # 30-entry clusters
    ranges = plan_ranges(1000, 100, cluster_starts=clusters)
    assert_exact_cover(ranges, 0, 1000)
    assert all(b in clusters or b == 1000 for _, b in ranges)
    assert all(60 <= b - a <= 130 for a, b in ranges[:-1])
    # clusters larger than the chunk size: one cluster per range
    assert plan_ranges(100, 10, cluster_starts=[0, 40, 70]) == [(0, 40), (40, 70), (70, 100)]
    # a start inside a cluster keeps the start, then follows the boundaries
    assert plan_ranges(100, 40, start=5, cluster_starts=[0, 50]) == [(5, 50), (50, 100)]


@settings(max_examples=300, deadline=None)
@given(
    entries=st.integers(1, 5000),
    chunksize=st.integers(1, 800),
    start_frac=st.floats(0, 0.99),
    clusters=st.one_of(st.none(), st.lists(st.integers(1, 5000), max_size=40)),
)
def test_plan_properties(entries, chunksize, start_frac, clusters):
    start = int(start_frac * entries)
    cluster_starts = None if clusters is None else sorted({0, *clusters})
    ranges = plan_ranges(entries, chunksize, start=start, cluster_starts=cluster_starts)
    assert_exact_cover(ranges, start, entries)
    if cluster_starts is None:
        assert len(ranges) == math.ceil((entries - start) / chunksize)
        assert all(b - a <= chunksize for a, b in ranges)
    else:
        assert all(b in cluster_starts for _, b in ranges[:-1])
        assert len(ranges) <= math.ceil((entries - start) / chunksize)


def test_cursor_constant_size_is_balanced():
    cursor = FileCursor("a.root", 1001)
    ranges = []
    while (r := cursor.next(100)) is not None:
        ranges.append(r)
    assert_exact_cover(ranges, 0, 1001)
    assert len(ranges) == 11
    lengths = [b - a for a, b in ranges]
    assert max(lengths) <= 100 and max(lengths) - min(lengths) <= 1
    assert cursor.done and cursor.remaining == 0 and cursor.position == 1001
    assert cursor.next(100) is None


def test_cursor_changing_sizes_and_clusters():
    cursor = FileCursor("b.root", 1000, start=100, cluster_starts=range(0, 1000, 50))
    assert cursor.position == 100 and cursor.remaining == 900 and not cursor.done
    ranges = [cursor.next(size) for size in (10, 200, 400, 10_000)]
    # balanced: 850 left at 200 -> 5 ranges of 170, snapped to 300; 700 at 400 -> 2 of 350
    assert ranges == [(100, 150), (150, 300), (300, 650), (650, 1000)]
    assert cursor.done and cursor.next(5) is None
    assert "b.root" in repr(cursor)


@settings(max_examples=200, deadline=None)
@given(
    entries=st.integers(1, 3000),
    sizes=st.lists(st.integers(1, 500), min_size=1, max_size=20),
    clusters=st.one_of(st.none(), st.lists(st.integers(1, 3000), max_size=30)),
)
def test_cursor_properties(entries, sizes, clusters):
    cluster_starts = None if clusters is None else sorted({0, *clusters})
    cursor = FileCursor("c.root", entries, cluster_starts=cluster_starts)
    ranges, i = [], 0
    while not cursor.done:
        size = sizes[i % len(sizes)]
        a, b = cursor.next(size)
        if cluster_starts is None:
            assert b - a <= size
        else:
            assert b in cluster_starts or b == entries
        ranges.append((a, b))
        i += 1
    assert_exact_cover(ranges, 0, entries)


def test_split_range():
    assert split_range(0, 10) == [(0, 5), (5, 10)]
    assert split_range(3, 6) == [(3, 4), (4, 6)]
    assert split_range(0, 3, parts=5) == [(0, 1), (1, 2), (2, 3)]
    assert split_range(0, 100, parts=3) == [(0, 33), (33, 66), (66, 100)]
    with pytest.raises(ValueError, match=r"\[7, 8\)"):
        split_range(7, 8)
    with pytest.raises(ValueError, match="parts"):
        split_range(0, 10, parts=1)


def test_coverage_roundtrip_and_merge():
    a = Coverage()
    a.add("f.root", 0, 10)
    b = Coverage.from_ranges({"f.root": [(10, 20)], "g.root": [[0, 5]]})
    assert len(b) == 15 and "2 files" in repr(b)
    merged = {k: a.to_dict().get(k, []) + b.to_dict().get(k, []) for k in ("f.root", "g.root")}
    assert merged == {"f.root": [(0, 10), (10, 20)], "g.root": [(0, 5)]}
    assert pickle.loads(pickle.dumps(a.to_dict())) == a.to_dict()
    d = a.to_dict()
    d["f.root"].append((99, 100))  # a copy: the coverage is unchanged
    assert a.to_dict() == {"f.root": [(0, 10)]}
    with pytest.raises(ValueError, match="f.root"):
        a.add("f.root", 5, 4)


def test_coverage_merges_with_coffea_accumulate():
    accumulate = pytest.importorskip("coffea.processor").accumulate
    parts = [Coverage.from_ranges({"f.root": [r]}).to_dict() for r in [(0, 10), (10, 20), (20, 35)]]
    parts.append(Coverage.from_ranges({"g.root": [(0, 5)]}).to_dict())
    total = accumulate(parts)
    assert Coverage.check(total, {"f.root": 35, "g.root": 5}).ok
    doubled = accumulate([*parts, parts[1]])
    assert Coverage.check(doubled, {"f.root": 35, "g.root": 5}).doubled == {"f.root": [(10, 20)]}


def test_check_equivalent_chunkings():
    recorded = {"f.root": [(10, 20), (0, 10), (20, 25)], "g.root": [(0, 7)]}
    assert Coverage.check(recorded, {"f.root": 25, "g.root": [(0, 3), (3, 7)]}).ok
    assert Coverage.check(Coverage.from_ranges(recorded), {"f.root": [(0, 25)], "g.root": 7}).ok
    report = Coverage.check({}, {})
    assert report.ok and "exactly once" in report.describe()


def test_check_finds_missing_doubled_unexpected():
    recorded = {
        "f.root": [(0, 10), (5, 15), (20, 30)],  # [5, 10) twice, [15, 20) missing
        "x.root": [(0, 3)],  # not in the plan
        "g.root": [(0, 12)],  # plan says 10 entries
    }
    report = Coverage.check(recorded, {"f.root": 30, "g.root": 10, "h.root": 4})
    assert isinstance(report, CoverageReport) and not report.ok
    assert report.missing == {"f.root": [(15, 20)], "h.root": [(0, 4)]}
    assert report.doubled == {"f.root": [(5, 10)]}
    assert report.unexpected == {"g.root": [(10, 12)], "x.root": [(0, 3)]}
    text = report.describe()
    for piece in ("f.root [15, 20)", "h.root [0, 4)", "f.root [5, 10)", "x.root [0, 3)", "9 entries missing"):
        assert piece in text
    with pytest.raises(AttributeError):
        report.missing = {}  # frozen


def test_describe_truncates_long_lists():
    recorded = {"f.root": [(i, i + 1) for i in range(0, 40, 2)]}
    text = Coverage.check(recorded, {"f.root": 40}).describe()
    assert "and 14 more" in text


def test_cursor_stop_hands_out_nothing_more():
    cursor = FileCursor("f.root", 100)
    assert cursor.next(30) == (0, 25)
    assert cursor.stop() == (25, 100)
    assert cursor.done and cursor.next(30) is None and cursor.stop() is None


def test_subtract_ranges():
    from hep_executor.planning import subtract_ranges

    assert subtract_ranges([(0, 10), (10, 30)], [(5, 12), (25, 40)]) == [(0, 5), (12, 25)]
    assert subtract_ranges([(0, 10)], []) == [(0, 10)]
    assert subtract_ranges([(0, 10)], [(0, 10)]) == []


def test_check_reports_what_the_output_holds():
    report = Coverage.check({"a": [(0, 10), (10, 20), (30, 40)]}, {"a": 40, "b": 5})
    assert report.held == {"a": [(0, 20), (30, 40)]}
    assert report.missing == {"a": [(20, 30)], "b": [(0, 5)]}
