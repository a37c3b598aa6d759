"""A 60-second fault soak (the 10-minute one is ``python -m benchmarks.soak``)."""

from benchmarks.soak import soak


def test_sixty_seconds_of_kills_and_stops_lose_and_double_nothing():
    summary = soak(duration=60, workers=3, cores=2, seed=7, chaos_interval=1.0)
    assert not summary["hung"] and summary["error"] is None, summary
    assert summary["twice"] == [] and summary["n_missing"] == 0, summary
    assert summary["wrong"] == [] and summary["unnamed"] == [], summary
    assert summary["leftover"] == [], summary
    assert summary["returned"] == summary["submitted"] > 100
    hurt = summary["chaos"]
    assert hurt.get("kill-slot", 0) + hurt.get("kill-worker", 0) >= 10, hurt  # the chaos did happen
    assert hurt.get("stop-slot", 0) + hurt.get("stop-worker", 0) >= 5, hurt
