"""Tests of the analysis processors (processors.topeft_like, processors.dimuon, processors.eft)."""

from __future__ import annotations

import cloudpickle
import hist
import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from hep_executor.demo import samples
from hep_executor.errors import ConfigError
from processors import DimuonProcessor, TopEFTLikeProcessor, eft, summarize
from processors.topeft_like import CATEGORIES, SYSTEMATICS

EVENTS = 400


@pytest.fixture(scope="module")
def fileset(tmp_path_factory):
    out = tmp_path_factory.mktemp("processor_samples")
    return samples.make_samples(out, events_per_file=EVENTS, files_per_dataset=2, extra_branches=20, block_size=200)


def run(fileset, processor_instance, chunksize):
    runner = processor.Runner(executor=processor.IterativeExecutor(), schema=NanoAODSchema, chunksize=chunksize)
    return runner(fileset, processor_instance=processor_instance, treename="Events")


@pytest.fixture(scope="module")
def topeft_whole(fileset):
    return run(fileset, TopEFTLikeProcessor(), chunksize=10**6)


@pytest.fixture(scope="module")
def dimuon_whole(fileset):
    return run(fileset, DimuonProcessor(), chunksize=10**6)


def assert_same_output(whole, chunked):
    assert whole["cutflow"] == chunked["cutflow"]  # integers: exactly equal
    assert whole["sumw"].keys() == chunked["sumw"].keys()
    for dataset, value in whole["sumw"].items():
        assert chunked["sumw"][dataset] == pytest.approx(value, rel=1e-9)
    assert whole["hists"].keys() == chunked["hists"].keys()
    for name, h in whole["hists"].items():
        other = chunked["hists"][name]
        assert sorted(h.axes["dataset"]) == sorted(other.axes["dataset"])
        for dataset in h.axes["dataset"]:
            a, b = h[{"dataset": dataset}].values(flow=True), other[{"dataset": dataset}].values(flow=True)
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=f"{name} {dataset}")


def test_topeft_output_structure(topeft_whole):
    out = topeft_whole
    assert set(out) == {"hists", "cutflow", "sumw"}
    assert set(out["hists"]) == {"l0pt", "ht", "njets", "met"}
    h = out["hists"]["ht"]
    assert [a.name for a in h.axes] == ["dataset", "category", "systematic", "coefficient", "ht"]
    assert list(h.axes["category"]) == list(CATEGORIES) and list(h.axes["systematic"]) == list(SYSTEMATICS)
    assert h.axes["coefficient"].wc_names == ("ctG", "ctp") and len(h.axes["coefficient"]) == 6
    for dataset, cutflow in out["cutflow"].items():
        assert all(isinstance(v, int) for v in cutflow.values())
        assert cutflow["all"] == 2 * EVENTS
        assert cutflow["all"] >= cutflow["filters"] >= cutflow["trigger"]
        for category in ("2lss", "3l", "4l"):
            steps = [cutflow["trigger"], cutflow[f"{category}_leptons"], cutflow[f"{category}_btag"], cutflow[category]]
            assert steps == sorted(steps, reverse=True)
        # each selected event is one fill of the constant term (weight 1 for data)
        if dataset == "data":
            njets = out["hists"]["njets"][{"dataset": dataset, "systematic": "nominal", "coefficient": 0}]
            assert njets.values(flow=True).sum() == cutflow["2lss"] + cutflow["3l"] + cutflow["4l"]
    assert out["sumw"]["data"] == 2 * EVENTS


def test_categories_non_empty_on_signal(topeft_whole):
    summary = summarize(topeft_whole)
    assert set(summary) == set(samples.DATASETS)
    signal = summary["ttH_EFT"]
    assert signal["events"] == 2 * EVENTS
    assert signal["2lss"] > 0 and signal["3l"] > 0 and signal["4l"] > 0
    assert signal["sumw"] == pytest.approx(2 * EVENTS * 0.05, rel=1e-6)
    h = topeft_whole["hists"]["njets"][{"dataset": "ttH_EFT", "systematic": "nominal", "coefficient": 0}]
    filled = dict(zip(CATEGORIES, h.values(flow=True).sum(axis=-1) > 0))
    for lepton_category in ("2lss", "3l", "4l"):
        assert any(ok for label, ok in filled.items() if label.startswith(f"{lepton_category}_"))


def test_chunked_equals_whole(fileset, topeft_whole, dimuon_whole):
    assert_same_output(topeft_whole, run(fileset, TopEFTLikeProcessor(), chunksize=150))
    assert_same_output(dimuon_whole, run(fileset, DimuonProcessor(), chunksize=150))


def test_eft_evaluation_at_sm_is_constant_term(topeft_whole):
    h = topeft_whole["hists"]["l0pt"]
    constant = h[{"coefficient": 0}]
    for point in (None, {"ctG": 0.0}, [0.0, 0.0]):
        sm = eft.evaluate(h, point)
        assert [a.name for a in sm.axes] == [a.name for a in constant.axes]
        np.testing.assert_allclose(sm.values(flow=True), constant.values(flow=True), rtol=1e-12)
    # samples without coefficients fill only the constant term: no EFT dependence
    moved = eft.evaluate(h, {"ctG": 2.0, "ctp": -1.0})
    for dataset in ("ttbar", "data"):
        np.testing.assert_allclose(
            moved[{"dataset": dataset}].values(flow=True), constant[{"dataset": dataset}].values(flow=True)
        )
    signal = (moved[{"dataset": "ttH_EFT"}].values(flow=True), constant[{"dataset": "ttH_EFT"}].values(flow=True))
    assert not np.allclose(*signal) and np.all(signal[0] >= 0)


def test_data_fills_nominal_only(topeft_whole):
    h = topeft_whole["hists"]["met"][{"dataset": "data"}]
    assert h[{"systematic": "nominal"}].values(flow=True).sum() > 0
    assert h[{"systematic": "lepSFUp"}].values(flow=True).sum() == 0
    mc = topeft_whole["hists"]["met"][{"dataset": "ttbar", "coefficient": 0}]
    up, nominal, down = (mc[{"systematic": s}].values(flow=True).sum() for s in ("lepSFUp", "nominal", "lepSFDown"))
    assert up > nominal > down > 0


def test_n_wc_mismatch_is_a_clear_error(fileset):
    path = fileset["ttH_EFT"][0]
    events = NanoEventsFactory.from_root(
        {path: "Events"}, schemaclass=NanoAODSchema, mode="virtual", metadata={"dataset": "ttH_EFT", "filename": path}
    ).events()
    with pytest.raises(ConfigError, match=r"EFTfitCoefficients has 6 coefficients per event \(n_wc=2\).*n_wc=3"):
        TopEFTLikeProcessor(n_wc=3).process(events)
    with pytest.raises(ConfigError):
        TopEFTLikeProcessor(n_wc=0)
    with pytest.raises(ConfigError):
        TopEFTLikeProcessor(n_wc=2, wc_names=["a", "a"])


def test_dimuon_output(dimuon_whole):
    out = dimuon_whole
    for dataset, cutflow in out["cutflow"].items():
        assert cutflow["all"] == 2 * EVENTS >= cutflow["two_muons"] >= cutflow["opposite_sign"] > 0
    mass = out["hists"]["mass"]
    assert mass[{"dataset": "data"}].values(flow=True).sum() == out["cutflow"]["data"]["opposite_sign"]


def test_processors_survive_cloudpickle(fileset):
    for instance in (TopEFTLikeProcessor(n_wc=2, wc_names=["cA", "cB"]), DimuonProcessor()):
        clone = cloudpickle.loads(cloudpickle.dumps(instance))
        assert type(clone) is type(instance) and vars(clone) == vars(instance)
    clone = cloudpickle.loads(cloudpickle.dumps(TopEFTLikeProcessor(n_wc=2, wc_names=["cA", "cB"])))
    out = run({"ttH_EFT": fileset["ttH_EFT"][:1]}, clone, chunksize=10**6)
    assert out["hists"]["ht"].axes["coefficient"].wc_names == ("cA", "cB")


def test_eft_helpers():
    assert [eft.n_coefficients(n) for n in range(4)] == [1, 3, 6, 10]
    assert [eft.n_wc_from_coefficients(k) for k in (1, 3, 6, 10, 7)] == [0, 1, 2, 3, None]
    np.testing.assert_array_equal(eft.quadratic_terms([2.0, 3.0]), [1, 2, 3, 4, 6, 9])
    axis = eft.coefficient_axis(2, ["a", "b"])
    h = hist.Hist(hist.axis.Regular(2, 0, 2, name="x"), axis)
    h.fill(x=[0.5, 0.5, 1.5], coefficient=[0, 4, 5], weight=[1.0, 2.0, 3.0])
    at = eft.evaluate(h, {"a": 1.0, "b": 2.0})  # 1*1 + 2*(a*b) in bin 0; 3*(b*b) in bin 1
    np.testing.assert_allclose(at.values(), [1.0 + 2.0 * 2.0, 3.0 * 4.0])
    with pytest.raises(ConfigError, match="unknown Wilson"):
        eft.evaluate(h, {"c": 1.0})
    with pytest.raises(ConfigError, match="needs 2"):
        eft.evaluate(h, [1.0])
    with pytest.raises(ConfigError, match="no 'coefficient' axis"):
        eft.evaluate(hist.Hist(hist.axis.Regular(2, 0, 2, name="x")), None)
