"""Tests of the dynamic chunk sizer (hep_executor.planning._sizing)."""

from __future__ import annotations

import numpy as np
import pytest

from hep_executor.errors import ConfigError
from hep_executor.planning import ChunkSizer, SizingTargets, theil_sen

MEMORY_TARGET = 1500.0
HEADROOM = 0.1  # the sizer's default memory_headroom


def true_time(events):
    return 0.5 + 2e-5 * events


def true_memory(events):
    return 200.0 + 0.002 * events


def optimum(targets):
    """The size the sizer aims at: time target, or 90 % of the memory target."""
    sizes = []
    if targets.get("wall_time") is not None:
        sizes.append((targets["wall_time"] - 0.5) / 2e-5)
    if targets.get("memory") is not None:
        sizes.append((targets["memory"] * (1 - HEADROOM) - 200.0) / 0.002)
    return min(sizes)


def report(rng, size):
    """One task's (wall_time, memory): 5 % noise, 10 % of tasks 5x slower."""
    t = true_time(size) * rng.normal(1.0, 0.05)
    if rng.random() < 0.1:
        t *= 5.0
    return t, true_memory(size) * rng.normal(1.0, 0.02)


def run_rounds(targets, start, *, seed, rounds=20, width=8):
    """Rounds of ``width`` tasks cut at the current size; returns sizes and the sizer."""
    rng = np.random.default_rng(seed)
    sizer = ChunkSizer(targets, initial=start, min_size=10, max_size=10**10)
    sizes, model_memory = [], []
    for _ in range(rounds):
        size = sizer.predict("c")
        sizes.append(size)
        for _ in range(width):
            sizer.observe("c", size, *report(rng, size))
            model = sizer.model("c")
            if "memory" in model:
                m = model["memory"]
                model_memory.append(m["intercept"] + m["slope"] * sizer.predict("c"))
    return np.array(sizes), sizer, model_memory


def sign_changes(sizes):
    steps = np.sign(np.diff(sizes))
    steps = steps[steps != 0]
    return int(np.sum(steps[1:] != steps[:-1]))


TARGETS = {
    "wall_time": {"wall_time": 60.0},
    "memory": {"memory": MEMORY_TARGET},
    "both, memory binds": {"wall_time": 60.0, "memory": MEMORY_TARGET},
    "both, time binds": {"wall_time": 10.0, "memory": MEMORY_TARGET},
}


@pytest.mark.parametrize("name", list(TARGETS))
@pytest.mark.parametrize("factor", [0.01, 100.0])
def test_converges_from_a_bad_start(name, factor):
    targets = TARGETS[name]
    best = optimum(targets)
    for seed in range(5):
        sizes, sizer, model_memory = run_rounds(targets, int(best * factor), seed=seed)
        rel = sizes / best
        # within 15 % of the optimum from round 6 on, and it stays there
        assert np.all(np.abs(rel[5:] - 1) <= 0.15), (seed, rel.round(3))
        assert sign_changes(sizes) <= 2, (seed, rel.round(3))
        # growth is bounded: at most max_growth (8) per round
        assert np.all(sizes[1:] <= sizer.max_growth * sizes[:-1])
        # never a size the model expects above the memory target
        assert all(m <= MEMORY_TARGET + 1e-6 for m in model_memory)
        if "memory" in targets:
            # nor, after the first round, above it in truth
            assert max(true_memory(s) for s in sizes[1:]) <= MEMORY_TARGET


def test_asynchronous_reports():
    """Eight tasks in flight, reports of older sizes arriving late."""
    targets = {"wall_time": 10.0, "memory": MEMORY_TARGET}
    best = optimum(targets)
    for start in (0.01, 100.0):
        for seed in range(4):
            rng = np.random.default_rng(seed)
            sizer = ChunkSizer(targets, initial=int(best * start), min_size=10, max_size=10**10)
            in_flight = [sizer.predict("c") for _ in range(8)]
            sizes = []
            for _ in range(200):
                size = in_flight.pop(rng.integers(len(in_flight)))
                sizer.observe("c", size, *report(rng, size))
                in_flight.append(sizer.predict("c"))
                sizes.append(in_flight[-1])
            rel = np.array(sizes) / best
            assert np.all(np.abs(rel[40:] - 1) <= 0.15), (start, seed)
            assert sign_changes([h[2] for h in sizer.history]) <= 6


def test_memory_failure_cuts_at_once():
    sizer = ChunkSizer({"memory": 2000}, initial=100_000, min_size=10)
    for _ in range(5):
        sizer.observe("c", 100_000, 10.0, 400.0)
    grown = sizer.predict("c")
    assert grown > 100_000
    sizer.observe("c", grown, 5.0, 1900.0, failed_memory=True)
    after = sizer.predict("c")
    assert after <= grown // 2
    assert sizer.model("c")["n_failed"] == 1
    # a later success never lifts it to the failed size again
    for _ in range(10):
        sizer.observe("c", after, 10.0, 400.0)
        assert sizer.predict("c") <= 0.9 * grown


def test_memory_overshoot_goes_down_at_once():
    sizer = ChunkSizer({"memory": 1000}, initial=100_000, min_size=10)
    for _ in range(4):
        sizer.observe("c", 100_000, 1.0, 500.0)
    before = sizer.predict("c")
    sizer.observe("c", before, 1.0, 1400.0)  # one task over the target
    assert sizer.predict("c") < before


def test_single_target_and_prior():
    sizer = ChunkSizer({"wall_time": 30}, initial=50_000, min_size=10)
    assert sizer.predict("process:a") == 50_000
    for _ in range(3):
        sizer.observe("process:a", 50_000, 1.0, 300.0)
    assert sizer.predict("process:a") == 400_000  # x8 at most
    # a new category starts from the smallest size of the others
    sizer2 = ChunkSizer({"wall_time": 30}, initial=50_000, min_size=10)
    sizer2.observe("process:a", 50_000, 150.0, 300.0)
    assert sizer2.predict("process:b") == sizer2.predict("process:a") < 50_000
    assert set(sizer2.categories) == {"process:a"}


def test_model_history_and_bounds():
    sizer = ChunkSizer(SizingTargets(wall_time=60, memory=None), initial=1000, min_size=100, max_size=3000)
    assert sizer.model("x") == {"size": 1000, "n_reports": 0, "n_failed": 0}
    for _ in range(4):
        sizer.observe("x", 1000, 0.1, 200.0)
    assert sizer.predict("x") == 3000  # capped by max_size
    model = sizer.model("x")
    assert model["n_reports"] == 4 and model["wall_time"]["slope"] > 0
    assert [h[1:] for h in sizer.history] == [("x", 1000), ("x", 3000)]
    assert all(isinstance(h[0], int) for h in sizer.history)


def test_align_pow2():
    sizer = ChunkSizer({"wall_time": 60}, initial=100_000, align_pow2=True)
    assert sizer.predict("c") == 65536
    sizer.observe("c", 65536, 1.0, 100.0)
    size = sizer.predict("c")
    assert size & (size - 1) == 0


def test_targets_validation():
    assert SizingTargets().items() == [("wall_time", 60.0), ("memory", 1500.0)]
    assert SizingTargets.from_dict({"memory": 2000}).items() == [("memory", 2000)]
    with pytest.raises(ConfigError, match="'walltime'"):
        SizingTargets.from_dict({"walltime": 60})
    with pytest.raises(ConfigError, match="at least one target"):
        SizingTargets(wall_time=None, memory=None)
    with pytest.raises(ConfigError, match="memory"):
        SizingTargets(memory=-5)
    with pytest.raises(ConfigError, match="walltime"):
        ChunkSizer({"walltime": 60})
    with pytest.raises(ConfigError, match="max_growth"):
        ChunkSizer({"wall_time": 60}, max_growth=1.0)


def test_theil_sen_is_robust():
    rng = np.random.default_rng(3)
    x = rng.uniform(1e3, 1e6, 60)
    y = 5.0 + 1e-3 * x
    y[:10] *= 5  # 17 % outliers
    a, b = theil_sen(x, y)
    assert b == pytest.approx(1e-3, rel=0.05)
    assert theil_sen(np.array([3.0, 3.0]), np.array([1.0, 2.0])) is None


def test_two_small_reports_do_not_extrapolate_past_the_memory_target():
    # 200 MB of baseline + 0.1 MB per event: 1000 MB at 8000 events. From a report at 1000 events
    # alone the baseline is unknown; the chord of the two reports gives the slope.
    sizer = ChunkSizer({"memory": 1000}, initial=1000)
    sizer.observe("process:bkg", 1000, 0.2, 300.0)
    size = sizer.observe("process:bkg", 3800, 0.4, 580.0)
    assert size <= 8000 * 0.95, size
    assert 200.0 + 0.1 * size <= 1000.0


def test_theil_sen_matches_the_plain_numpy_estimator():
    rng = np.random.default_rng(3)
    for n in (4, 5, 17, 64):
        x = rng.integers(100, 10_000, n).astype(float)
        y = 0.3 + 1e-4 * x * rng.lognormal(0, 0.2, n)
        i, j = np.triu_indices(n, k=1)
        b = float(np.median((y[j] - y[i]) / (x[j] - x[i])))
        assert theil_sen(x, y) == (float(np.median(y - b * x)), b)


@pytest.mark.parametrize("refit_every", [0, -1])
def test_refit_every_must_be_positive(refit_every):
    with pytest.raises(ConfigError, match="refit_every"):
        ChunkSizer({"wall_time": 5.0}, refit_every=refit_every)


def test_refitting_the_intercept_every_8_reports_predicts_as_refitting_each():
    """Past the window the intercept is refitted every 8 reports: the sizes stay within 15 % of refitting each."""
    rng = np.random.default_rng(11)
    every, each = (ChunkSizer({"wall_time": 5.0, "memory": MEMORY_TARGET}, initial=1000, refit_every=k)
                   for k in (8, 1))
    worst = 0.0
    for _ in range(400):
        n = each.predict("c")
        worst = max(worst, abs(every.predict("c") - n) / n)
        events = max(1, int(n * rng.uniform(0.3, 1.0)))  # file ends cut smaller chunks
        wall, memory = true_time(events) * rng.lognormal(0, 0.15), true_memory(events)
        for sizer in (every, each):
            sizer.observe("c", events, wall, memory)
    assert worst < 0.15
    assert abs(each.predict("c") - optimum({"wall_time": 5.0, "memory": MEMORY_TARGET})) \
        < 0.25 * optimum({"wall_time": 5.0, "memory": MEMORY_TARGET})
