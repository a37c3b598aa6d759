"""Tests of the adaptive resource allocator (hep_executor.planning._allocation)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hep_executor.planning import (
    MIN_MEMORY_MB,
    Allocator,
    Resources,
    exhaustive_buckets,
    greedy_buckets,
    ladder_cost,
)
from hep_executor.errors import ConfigError

CAP = Resources(cores=4, memory_mb=8000)
FINDERS = {"greedy": greedy_buckets, "exhaustive": exhaustive_buckets}


def test_resources_validation():
    assert Resources() == Resources(1, 2000, 0)
    assert Resources(2, 3000).capped(Resources(1, 2500, 0)) == Resources(1, 2500, 0)
    assert Resources(1, 100).fits_in(CAP) and not CAP.fits_in(Resources(1, 100))
    for bad in ({"cores": 0}, {"memory_mb": 0}, {"disk_mb": -1}, {"memory_mb": 1.5}, {"cores": True}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Resources(**bad)


def test_ladder_cost_by_hand():
    values, weights = np.array([1.0, 3.0]), np.ones(2)
    # one rung at 3: the small task wastes 2
    assert ladder_cost(values, weights, np.array([3.0]), 1.0) == pytest.approx(1.0)
    # rungs 1, 3: the large task holds 1 while it runs out, then fits
    assert ladder_cost(values, weights, np.array([1.0, 3.0]), 1.0) == pytest.approx(0.5)
    # steady growth: it held 1 for a third of its run
    assert ladder_cost(values, weights, np.array([1.0, 3.0])) == pytest.approx(1 / 6)
    batch = ladder_cost(values, weights, np.array([[3.0, 3.0], [1.0, 3.0]]), 1.0)
    assert batch == pytest.approx([1.0, 0.5])


@pytest.mark.parametrize("name", list(FINDERS))
def test_bimodal_gives_two_buckets(name):
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(500, 20, 100), rng.normal(2000, 50, 100)])
    buckets = FINDERS[name](values)
    assert len(buckets) == 2
    (low, p_low), (high, p_high) = buckets
    assert 500 <= low <= 600 and 2000 <= high <= 2200
    assert p_low == pytest.approx(0.5, abs=0.06) and p_low + p_high == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(FINDERS))
def test_uniform_gives_a_few_buckets(name):
    values = np.random.default_rng(2).uniform(200, 2000, 300)
    buckets = FINDERS[name](values)
    assert 2 <= len(buckets) <= 5
    allocations = [b for b, _ in buckets]
    assert allocations == sorted(allocations) and allocations[-1] == values.max()
    assert sum(p for _, p in buckets) == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(FINDERS))
def test_narrow_distribution_has_one_main_bucket(name):
    values = np.random.default_rng(3).normal(600, 30, 200)
    buckets = FINDERS[name](values)
    assert buckets[0][1] >= 0.9  # few tasks ever need a retry
    assert buckets[-1][0] == values.max()


def bimodal_allocator(**kw):
    a = Allocator("auto", max_resources=CAP, **kw)
    rng = np.random.default_rng(4)
    for v in np.concatenate([rng.normal(500, 20, 30), rng.normal(2000, 50, 30)]):
        a.observe("process:x", float(v))
    return a


def test_exhaustion_escalates_then_caps():
    a = bimodal_allocator()
    first = a.allocate("process:x")
    assert 500 < first.memory_mb < 700 and not a.at_cap("process:x", first)
    second = a.allocate("process:x", previous=first)
    assert 2000 < second.memory_mb < 2400
    assert a.allocate("process:x", attempt=1) == second
    third = a.allocate("process:x", previous=second)  # past the top bucket: doubles
    assert third.memory_mb == 2 * second.memory_mb and not a.at_cap("process:x", third)
    fourth = a.allocate("process:x", previous=third)
    assert fourth.memory_mb == CAP.memory_mb and a.at_cap("process:x", fourth)
    assert a.allocate("process:x", attempt=5).memory_mb == CAP.memory_mb
    assert a.allocate("process:x", previous=CAP).memory_mb == CAP.memory_mb


def test_retry_always_grows_or_caps():
    a = bimodal_allocator()
    for mb in (100, 550, 600, 1999, 2100, 2500, 7999):
        nxt = a.allocate("process:x", previous=Resources(1, mb))
        assert nxt.memory_mb > mb and nxt.memory_mb <= CAP.memory_mb


@pytest.mark.parametrize("mode", ["auto", "max-seen"])
def test_a_learned_allocation_is_never_under_the_memory_floor(mode):
    a = Allocator(mode, max_resources=CAP)
    for _ in range(6):
        a.observe("tiny", 2.0)  # a task whose own memory is within a slot's noise
    assert a.allocate("tiny").memory_mb == MIN_MEMORY_MB
    assert Allocator(mode, max_resources=CAP, min_memory_mb=1).allocate("tiny").memory_mb == CAP.memory_mb
    b = Allocator(mode, max_resources=CAP, min_memory_mb=1)
    for _ in range(6):
        b.observe("tiny", 2.0)
    assert b.allocate("tiny").memory_mb == 3  # 2 MB and the margin, rounded up


def test_warm_up_then_buckets():
    a = Allocator("auto", max_resources=CAP)
    assert a.allocate("c") == CAP  # nothing seen: the largest worker
    a.observe("c", 300.0)
    assert a.allocate("c").memory_mb == 450  # warm-up: 1.5 times the largest peak
    assert a.allocate("new").memory_mb == 450  # a new category starts from the others' peaks
    assert a.buckets("c") == []
    for _ in range(4):
        a.observe("c", 300.0)
    assert a.allocate("c").memory_mb == 315  # one bucket, with the 5 % margin
    guessed = Allocator("auto", max_resources=CAP, first_guess=Resources(1, 1000))
    assert guessed.allocate("c") == Resources(1, 1000)


def test_fixed_mode_is_fixed():
    fixed = Resources(2, 3000)
    a = Allocator("fixed", fixed=fixed, max_resources=CAP)
    for v in (100.0, 5000.0, 20000.0):
        a.observe("c", v)
        assert a.allocate("c") == fixed
    assert a.allocate("c", previous=fixed) == fixed and a.at_cap("c", fixed)
    with pytest.raises(ConfigError, match="fixed"):
        Allocator("fixed")


def test_max_seen_tracks_max():
    a = Allocator("max-seen", max_resources=CAP)
    assert a.allocate("c") == CAP
    a.observe("c", 700.0)
    assert a.allocate("c").memory_mb == 735
    a.observe("c", 900.0)
    a.observe("c", 400.0)
    assert a.allocate("c").memory_mb == 945
    assert a.allocate("c", previous=a.allocate("c")).memory_mb == 2 * 945  # then step by step
    assert a.allocate("other") == CAP  # categories are separate


def test_without_cap_retries_double():
    a = Allocator("auto")
    for _ in range(5):
        a.observe("c", 1000.0)
    first = a.allocate("c")
    nxt = a.allocate("c", previous=first)
    assert nxt.memory_mb == 2 * first.memory_mb and not a.at_cap("c", nxt)
    a.max_resources = Resources(1, 1500)  # a larger worker left
    assert a.allocate("c", previous=first) == Resources(1, 1500)


def test_cores_are_the_first_guess_after_observations():
    a = Allocator("auto", max_resources=CAP, first_guess=Resources(2, 500))
    for _ in range(10):
        a.observe("multi", 500.0)
    assert a.allocate("multi").cores == 2
    assert a.allocate("multi").memory_mb >= 500


def test_bad_settings():
    with pytest.raises(ConfigError, match="'best'"):
        Allocator("best")
    with pytest.raises(ConfigError, match="'optimal'"):
        Allocator(bucketing="optimal")
    with pytest.raises(ConfigError, match="failure_fraction"):
        Allocator(failure_fraction=2.0)


def mixed_stream(rng, n):
    """Peaks of a run: processes of different sizes, one with a 5 % heavy tail."""
    draws = {
        "process:ttbar": lambda: rng.normal(900, 40),
        "process:ttH": lambda: rng.normal(1400, 60),
        "process:wjets": lambda: rng.normal(1500, 50) if rng.random() < 0.05 else rng.normal(700, 30),
        "accumulate": lambda: rng.normal(300, 15),
        "preprocess": lambda: rng.normal(250, 10),
    }
    names = list(draws)
    for _ in range(n):
        name = names[rng.integers(len(names))]
        yield name, float(draws[name]())


def simulate(allocator, n, seed):
    """Run a stream through ``allocator``; returns (efficiency, retry fraction)."""
    rng = np.random.default_rng(seed)
    peak_sum = allocated_sum = 0.0
    retries = 0
    for category, peak in mixed_stream(rng, n):
        res = allocator.allocate(category)
        while peak > res.memory_mb:
            assert not allocator.at_cap(category, res)
            retries += 1
            allocated_sum += res.memory_mb
            allocator.observe(category, res.memory_mb, exhausted=True, allocated=res)
            res = allocator.allocate(category, previous=res)
        allocated_sum += res.memory_mb
        peak_sum += peak
        allocator.observe(category, peak, allocated=res)
    return peak_sum / allocated_sum, retries / n


@pytest.mark.parametrize(("bucketing", "n"), [("greedy", 3000), ("exhaustive", 1500)])
def test_auto_is_efficient_on_a_mixed_stream(bucketing, n):
    auto = Allocator("auto", max_resources=CAP, bucketing=bucketing)
    efficiency, retries = simulate(auto, n, seed=7)
    assert efficiency >= 0.8
    assert retries <= 0.05
    max_seen, _ = simulate(Allocator("max-seen", max_resources=CAP), n, seed=7)
    fixed, fixed_retries = simulate(Allocator("fixed", fixed=Resources(1, 2000), max_resources=CAP), n, seed=7)
    assert efficiency > max_seen > fixed and fixed_retries == 0
    summary = auto.summary()
    json.dumps(summary)  # goes into the run report as is
    assert set(summary) == {"process:ttbar", "process:ttH", "process:wjets", "accumulate", "preprocess"}
    wjets = summary["process:wjets"]
    assert len(wjets["buckets"]) >= 2 and wjets["exhausted"] > 0
    assert 0.5 < wjets["efficiency"] <= 1
    assert len(auto.history) == n + sum(s["exhausted"] for s in summary.values())
    seq, category, allocated, observed = auto.history[-1]
    assert seq == len(auto.history) and allocated >= observed
