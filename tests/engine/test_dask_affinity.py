"""AffinityHints, the DaskManager's placement of affinity keys: pure, no cluster."""

from __future__ import annotations

from hep_executor.engine import AffinityHints

WORKERS = {"tcp://a": 1, "tcp://b": 1}


def test_new_keys_spread_over_the_least_loaded_workers():
    hints = AffinityHints()
    picks = [hints.hint(f"file{i}", WORKERS) for i in range(4)]
    assert sorted(picks) == ["tcp://a", "tcp://a", "tcp://b", "tcp://b"]
    assert hints.hint(None, WORKERS) is None and hints.hint("file0", {}) is None


def test_a_key_goes_back_where_it_is_warm_until_that_worker_holds_its_share():
    hints = AffinityHints(share_per_core=2)
    hints.ran("f", "tcp://b")
    assert [hints.hint("f", WORKERS) for _ in range(2)] == ["tcp://b", "tcp://b"]
    assert hints.hint("f", WORKERS) == "tcp://a"  # b holds its share: f becomes warm on a too
    hints.ran("f", "tcp://a")
    hints.release("tcp://b")
    hints.release("tcp://b")
    assert hints.hint("f", WORKERS) == "tcp://b"  # warm on both: the less loaded one


def test_a_worker_keeps_only_its_last_keys_warm():
    hints = AffinityHints(keys_per_worker=2)
    for key in ("f1", "f2", "f3"):
        hints.ran(key, "tcp://b")
    hints.ran("other", "tcp://a")
    assert hints.hint("f3", WORKERS) == "tcp://b"
    assert hints.hint("f1", WORKERS) == "tcp://a"  # f1 dropped out of b's cache: the least loaded


def test_a_key_follows_its_first_hint_and_a_spill_does_not_move_its_home():
    hints = AffinityHints(share_per_core=2)
    assert [hints.hint("f", WORKERS) for _ in range(2)] == ["tcp://a", "tcp://a"]  # none has ended yet
    assert hints.hint("f", WORKERS) == "tcp://b"  # a holds 2 more than b: spilled to keep b fed
    assert hints.hint("f", WORKERS) == "tcp://a"  # its home, though b is warm too and less loaded (1 to 2)
