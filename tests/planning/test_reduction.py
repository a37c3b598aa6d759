"""Tests of the merge-tree planner (hep_executor.planning._reduction)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from hep_executor.errors import ConfigError
from hep_executor.planning import TreeReducer


def simulate(n_inputs, fan_in, *, seed, output_size="sum"):
    """Feed a reducer inputs and merge completions in random order.

    The inputs are closed (:meth:`TreeReducer.finish`) as soon as the last
    one has arrived. Returns the reducer, the lineage (Counter of input ids)
    and merge depth of every result, and the list of merge groups issued.
    """
    rng = random.Random(seed)
    r = TreeReducer(fan_in)
    sizes, lineage, depth, merges = {}, {}, {}, []
    if n_inputs == 0:
        r.finish()
    to_arrive = [f"in{i}" for i in range(n_inputs)]
    rng.shuffle(to_arrive)
    running = []  # (group, output key)
    out_id = 0
    while to_arrive or running:
        # Completion order is random: an input or a running merge finishes next.
        if to_arrive and (not running or rng.random() < 0.6):
            key = to_arrive.pop()
            sizes[key] = rng.randint(1, 10_000)
            lineage[key] = Counter({key: 1})
            depth[key] = 0
            r.add(key, sizes[key])
        else:
            group, out = running.pop(rng.randrange(len(running)))
            total = Counter()
            for k in group:
                total += lineage[k]
            lineage[out] = total
            depth[out] = 1 + max(depth[k] for k in group)
            member = [sizes[k] for k in group]
            sizes[out] = sum(member) if output_size == "sum" else max(member)
            r.add(out, sizes[out], merged_from=group)
        if not to_arrive and not r.inputs_closed:
            r.finish()
        for group in r.groups():
            merges.append(group)
            out_id += 1
            running.append((group, f"m{out_id}"))
    return r, lineage, depth, merges


@pytest.mark.parametrize("fan_in", [2, 3, 20])
@pytest.mark.parametrize("output_size", ["sum", "max"])
def test_every_input_merged_exactly_once(fan_in, output_size):
    for n in range(1, 201):
        r, lineage, depth, merges = simulate(n, fan_in, seed=1000 * fan_in + n, output_size=output_size)
        assert r.done, (n, r)
        assert r.in_flight_count == 0
        final = r.result_key
        assert final is not None
        assert lineage[final] == Counter({f"in{i}": 1 for i in range(n)}), n
        for group in merges:
            assert 2 <= len(group) <= fan_in
            assert len(set(group)) == len(group)
        # each result (input or merge output) is merged at most once
        used = Counter(k for g in merges for k in g)
        assert max(used.values(), default=1) == 1
        assert len(merges) == math.ceil((n - 1) / (fan_in - 1))
        assert r.n_merges == len(merges)
        # depth stays near log_k(N), even when outputs do not grow (histograms)
        log_depth = math.ceil(math.log(n, fan_in) - 1e-9) if n > 1 else 0
        assert log_depth <= depth[final] <= log_depth + 1, (n, depth[final])


def test_all_at_once_depth_is_log():
    r = TreeReducer(fan_in=4)
    for i in range(64):
        r.add(i, 100)
    r.finish()
    level = 0
    while not r.done:
        groups = r.groups()
        assert groups, "no progress"
        level += 1
        for j, g in enumerate(groups):
            r.add(("m", level, j), 100, merged_from=g)
    assert level == 3
    assert r.result_key == ("m", 3, 0)


def test_smallest_first():
    r = TreeReducer(fan_in=3)
    for key, n in [("a", 50), ("b", 10), ("c", 40), ("d", 20), ("e", 30)]:
        r.add(key, n)
    assert r.groups() == [["b", "d", "e"]]
    assert r.pending_count == 2 and r.in_flight_count == 1
    r.finish()
    # a merge in flight will join the last two: wait for it
    assert r.groups() == []
    r.add("bde", 60, merged_from=["b", "d", "e"])
    assert r.groups() == [["c", "a", "bde"]]
    r.add("final", 150, merged_from=["a", "bde", "c"])
    assert r.done and r.result_key == "final"


def test_zero_and_one_input():
    r = TreeReducer()
    r.finish()
    assert r.done and r.result_key is None and r.groups() == []
    r = TreeReducer()
    r.add("only", 5)
    assert not r.done
    r.finish()
    assert r.groups() == []
    assert r.done and r.result_key == "only"


def test_not_done_until_inputs_closed():
    r = TreeReducer(fan_in=5)
    r.add("a", 1)
    r.add("b", 2)
    assert r.groups() == [] and not r.done
    r.finish()
    assert r.groups() == [["a", "b"]]


def test_merge_failed_requeues():
    r = TreeReducer(fan_in=2)
    r.add("a", 1)
    r.add("b", 2)
    r.finish()
    (group,) = r.groups()
    r.merge_failed(group)
    assert r.pending_count == 2 and r.in_flight_count == 0
    (again,) = r.groups()
    assert sorted(again) == ["a", "b"]
    r.add("ab", 3, merged_from=again)
    assert r.done and r.result_key == "ab"


def test_errors():
    with pytest.raises(ConfigError, match="fan_in"):
        TreeReducer(fan_in=1)
    r = TreeReducer(fan_in=2)
    r.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.add("a", 1)
    with pytest.raises(ValueError, match="not in flight"):
        r.add("x", 1, merged_from=["a", "b"])
