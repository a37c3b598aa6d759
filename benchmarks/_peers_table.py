"""The peers benchmark's numbers: medians and ratios per table, the printed tables, and the verdicts."""

from __future__ import annotations

from benchmarks._peers_runs import OURS, PARALLEL
from benchmarks._stats import median, print_table

__all__ = ["TARGET_EFFICIENCY", "TARGET_SMALL_RUNNER_VS_POOL", "TARGET_SMALL_RUNNER_VS_RUN",
           "TARGET_SMALL_VS_FUTURES", "TARGET_VS_FUTURES", "TARGET_VS_POOL", "print_summary", "summarize",
           "verdicts"]

TARGET_VS_FUTURES = 1.3
TARGET_EFFICIENCY = 0.90
TARGET_VS_POOL = 1.0
TARGET_SMALL_VS_FUTURES = 3.0
TARGET_SMALL_RUNNER_VS_RUN = 0.9
TARGET_SMALL_RUNNER_VS_POOL = 1.5


def summarize(results: dict, startup: dict, events: int, workers: int) -> dict:
    """Medians, start-up, efficiency, and the ratios of each of ours to each peer and to hep-run."""
    single = median(results["single"]["events_per_s"]) if "single" in results else float("nan")
    warm = median(results["single-warm"]["events_per_s"]) if "single-warm" in results else float("nan")
    rows = {}
    for name, r in results.items():
        rate = median(r["events_per_s"])
        t = median(r["time_s"])
        up = startup.get(name, 0.0)
        rows[name] = {
            "events_per_s": rate, "min": min(r["events_per_s"]), "max": max(r["events_per_s"]),
            "time_s": t, "preprocess_s": median(r["preprocess_s"]), "cpu_s": median(r["cpu_s"]), "startup_s": up,
            "events_per_s_with_startup": events / (t + up),
            "efficiency": rate / (workers * single) if name in PARALLEL else float("nan"),
            "efficiency_vs_warm": rate / (workers * warm) if name in PARALLEL else float("nan"),
            "output_ok": all(r["output_ok"]), "failed_reps": len(r["errors"]),
        }

    def ratio(ours, peer):
        return {"warm": rows[ours]["events_per_s"] / rows[peer]["events_per_s"],
                "with_startup": rows[ours]["events_per_s_with_startup"] / rows[peer]["events_per_s_with_startup"]}

    ratios = {ours: {peer: ratio(ours, peer) for peer in rows if peer not in OURS or
                     (peer == "hep-run" and ours == "hep-runner")}
              for ours in OURS if ours in rows}
    return {"executors": rows, "ratios": ratios, "single_events_per_s": single}


def print_summary(title: str, summary: dict, workers: int) -> None:
    rows = [[n, s["events_per_s"], s["min"], s["max"], s["time_s"], s["preprocess_s"], s["cpu_s"],
             "in run" if n == "futures" else s["startup_s"], s["events_per_s_with_startup"], s["efficiency"],
             s["efficiency_vs_warm"], "yes" if s["output_ok"] else "NO", s["failed_reps"]]
            for n, s in summary["executors"].items()]
    print_table(title, ["executor", "events/s", "min", "max", "time s", "preproc s", "work CPU s", "start-up s",
                        "events/s w/ start-up", f"efficiency (/{workers}x single)",
                        f"efficiency (/{workers}x single-warm)", "output = single", "failed reps"], rows)
    ratios = summary["ratios"]
    if ratios:
        peers = list(dict.fromkeys(p for r in ratios.values() for p in r))
        rows = [[f"{ours} / peer{suffix}"] + [ratios[ours].get(p, {}).get(key, float("nan")) for p in peers]
                for ours in ratios for suffix, key in (("", "warm"), (" (w/ start-up)", "with_startup"))]
        print_table(f"{title}: ratios (events/s of ours / events/s of peer)", ["", *peers], rows)


def _clean(table: dict, *names: str) -> bool:
    """Every repetition of ``names`` ran and gave the reference output."""
    rows = table["executors"]
    return all(n in rows and rows[n]["output_ok"] and not rows[n]["failed_reps"] for n in names)


def _ratio_verdict(table: dict, ours: str, peer: str, target: float) -> dict:
    r = table["ratios"].get(ours, {}).get(peer, {})
    gated = r.get("with_startup", float("nan"))
    return {"value": gated, "without_startup": r.get("warm", float("nan")),
            "pass": bool(gated >= target) and _clean(table, ours, peer)}


def verdicts(tables: dict) -> dict:
    """Each target: the gating value (start-up counted), the value without, and whether it holds."""
    verdicts = {}
    large, small = tables.get("large"), tables.get("small")
    if large:
        verdicts[f"large: hep-run >= {TARGET_VS_FUTURES}x futures"] = _ratio_verdict(
            large, "hep-run", "futures", TARGET_VS_FUTURES)
        for ours in ("hep-run", "hep-runner"):
            e = large["executors"].get(ours, {}).get("efficiency_vs_warm", float("nan"))
            verdicts[f"large: {ours} efficiency (/2x single-warm) >= {TARGET_EFFICIENCY:.0%}"] = {
                "value": e, "pass": bool(e >= TARGET_EFFICIENCY) and _clean(large, ours, "single-warm")}
            verdicts[f"large: {ours} >= {TARGET_VS_POOL}x futures-pool"] = _ratio_verdict(
                large, ours, "futures-pool", TARGET_VS_POOL)
    if small:
        verdicts[f"small: hep-run >= {TARGET_SMALL_VS_FUTURES}x futures"] = _ratio_verdict(
            small, "hep-run", "futures", TARGET_SMALL_VS_FUTURES)
        verdicts[f"small: hep-runner >= {TARGET_SMALL_RUNNER_VS_RUN}x hep-run"] = _ratio_verdict(
            small, "hep-runner", "hep-run", TARGET_SMALL_RUNNER_VS_RUN)
        verdicts[f"small: hep-runner >= {TARGET_SMALL_RUNNER_VS_POOL}x futures-pool"] = _ratio_verdict(
            small, "hep-runner", "futures-pool", TARGET_SMALL_RUNNER_VS_POOL)
    return verdicts

