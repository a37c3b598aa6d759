"""Tests of the NanoAOD-like sample generator (hep_executor.demo._samples)."""

from __future__ import annotations

import json
import math
import warnings

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from hep_executor.demo import samples
from hep_executor.errors import ConfigError, FileMissingError, InputError
from processors import eft

EVENTS, BLOCK, EXTRA = 300, 100, 60


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("samples")
    fileset = samples.make_samples(
        out, events_per_file=EVENTS, files_per_dataset=1, extra_branches=EXTRA, block_size=BLOCK, seed=7, n_wc=3
    )
    return out, fileset


def events_of(path, dataset="x"):
    return NanoEventsFactory.from_root(
        {path: "Events"}, schemaclass=NanoAODSchema, mode="virtual", metadata={"dataset": dataset}
    ).events()


def test_fileset_json_round_trip(tiny):
    out, fileset = tiny
    assert list(fileset) == list(samples.DATASETS)
    raw = json.loads((out / "fileset.json").read_text())
    assert raw == {ds: [f"{ds}_0.root"] for ds in samples.DATASETS}  # relative to the folder
    assert samples.load_fileset(out / "fileset.json") == fileset


def test_nanoaod_schema_reads_every_dataset_without_warnings(tiny):
    _, fileset = tiny
    for dataset, (path,) in fileset.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a missing cross-reference target would warn
            events = events_of(path, dataset)
            assert len(events) == EVENTS
            for name in ("Muon", "Electron", "Jet", "MET", "HLT", "Flag", "run", "luminosityBlock", "event"):
                assert name in events.fields
            tree = uproot.open(path)["Events"]
            for collection in ("Muon", "Electron", "Jet"):
                counts = tree[f"n{collection}"].array(library="np")
                assert np.array_equal(ak.to_numpy(ak.num(events[collection])), counts)
            assert ak.all(events.Muon.pt[:, 1:] <= events.Muon.pt[:, :-1])  # pt-ordered
            assert ak.all(abs(events.Muon.eta) < 2.4) and ak.all(abs(events.Electron.eta) < 2.5)
            assert ak.all(abs(events.Jet.eta) < 4.7)
            if dataset == "data":
                assert "genWeight" not in events.fields and "GenPart" not in events.fields
            else:
                assert ak.all(events.genWeight != 0)
                prompt = events.Muon[events.Muon.genPartIdx >= 0]
                assert ak.all(prompt.matched_gen.pdgId == prompt.pdgId)
            assert ("EFTfitCoefficients" in events.fields) == (dataset == "ttH_EFT")


def test_branch_count_and_baskets(tiny, tmp_path):
    _, fileset = tiny
    tree = uproot.open(fileset["ttbar"][0])["Events"]
    bare = samples.make_samples(tmp_path, events_per_file=20, files_per_dataset=1, datasets=["ttbar"], extra_branches=0)
    core = len(uproot.open(bare["ttbar"][0])["Events"].keys())
    assert core > 100
    assert len(tree.keys()) == core + EXTRA
    assert len(set(tree.keys())) == len(tree.keys())
    assert {tree[name].num_baskets for name in tree.keys()} == {math.ceil(EVENTS / BLOCK)}


def test_default_branch_count_is_nanoaod_like(tmp_path):
    fileset = samples.make_samples(tmp_path, events_per_file=10, files_per_dataset=1, datasets=["data"])
    tree = uproot.open(fileset["data"][0])["Events"]
    assert len(tree.keys()) >= samples.DEFAULT_EXTRA_BRANCHES + 80 >= 580  # data: no generator branches
    assert sum(name.startswith("HLT_") for name in tree.keys()) >= 150


def test_same_seed_same_content_other_seed_differs(tiny, tmp_path):
    _, fileset = tiny
    kwargs = dict(events_per_file=EVENTS, files_per_dataset=1, extra_branches=EXTRA, block_size=BLOCK, n_wc=3)
    again = samples.make_samples(tmp_path / "a", seed=7, datasets=["ttH_EFT"], **kwargs)
    other = samples.make_samples(tmp_path / "b", seed=8, datasets=["ttH_EFT"], **kwargs)
    first = uproot.open(fileset["ttH_EFT"][0])["Events"].arrays()
    second = uproot.open(again["ttH_EFT"][0])["Events"].arrays()
    third = uproot.open(other["ttH_EFT"][0])["Events"].arrays()
    assert first.fields == second.fields
    for name in first.fields:
        assert ak.array_equal(first[name], second[name]), name
    assert not ak.array_equal(first["Muon_pt"], third["Muon_pt"])


def test_eft_coefficients_count_and_positive_weights(tiny):
    _, fileset = tiny
    coefficients = uproot.open(fileset["ttH_EFT"][0])["Events"]["EFTfitCoefficients"].array(library="np")
    n_wc = 3
    assert coefficients.shape == (EVENTS, eft.n_coefficients(n_wc)) == (EVENTS, 10)
    assert np.all(coefficients[:, 0] == 1.0)
    # Rebuild each event's symmetric matrix M (weight = s^T M s, s = (1, c)) in the documented order.
    rows, cols = np.triu_indices(n_wc)
    matrix = np.zeros((EVENTS, n_wc + 1, n_wc + 1))
    matrix[:, 0, 0] = coefficients[:, 0]
    matrix[:, 0, 1:] = matrix[:, 1:, 0] = coefficients[:, 1 : n_wc + 1] / 2
    quadratic = coefficients[:, n_wc + 1 :] / np.where(rows == cols, 1.0, 2.0)
    matrix[:, 1 + rows, 1 + cols] = matrix[:, 1 + cols, 1 + rows] = quadratic
    assert np.all(np.linalg.eigvalsh(matrix)[:, 0] > 0)
    points = np.random.default_rng(1).normal(0.0, 10.0, (500, n_wc))
    weights = coefficients @ np.stack([eft.quadratic_terms(p) for p in points]).T
    assert np.all(weights > 0)


def test_multilepton_final_states_present(tiny):
    _, fileset = tiny
    events = events_of(fileset["ttH_EFT"][0])
    muons = events.Muon[events.Muon.tightId & (events.Muon.pt > 10)]
    electrons = events.Electron[(events.Electron.cutBased >= 4) & (events.Electron.pt > 10)]
    charges = ak.concatenate([muons.charge, electrons.charge], axis=1)
    n_leptons = ak.to_numpy(ak.num(charges))
    same_sign = (n_leptons == 2) & ak.to_numpy(abs(ak.sum(charges, axis=1)) == 2)
    assert same_sign.sum() > 0 and (n_leptons == 3).sum() > 0 and (n_leptons >= 4).sum() > 0


@pytest.mark.parametrize(
    "kwargs",
    [{"events_per_file": 0}, {"files_per_dataset": 0}, {"n_wc": 0}, {"block_size": 0}, {"extra_branches": -1},
     {"datasets": ["nope"]}, {"datasets": ["data", "data"]}, {"seed": 1.5}],
)
def test_bad_settings_raise_config_error(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        samples.make_samples(tmp_path, **kwargs)


def test_load_fileset_errors(tmp_path):
    with pytest.raises(FileMissingError, match="does not exist"):
        samples.load_fileset(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        samples.load_fileset(bad)
    bad.write_text('{"ds": "a.root"}')
    with pytest.raises(InputError, match="list of file paths"):
        samples.load_fileset(bad)
    good = tmp_path / "sub" / "fileset.json"
    good.parent.mkdir()
    good.write_text('{"ds": ["a.root", "root://host//b.root"]}')
    assert samples.load_fileset(good) == {"ds": [str(tmp_path / "sub" / "a.root"), "root://host//b.root"]}


def test_main_writes_samples_and_reports_bad_settings(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--events", "20", "--files", "1", "--extra-branches", "5", "--datasets", "data"]
    assert samples.main(argv) == 0
    assert (tmp_path / "data_0.root").exists()
    assert "fileset.json" in capsys.readouterr().out
    assert samples.main(["--out", str(tmp_path), "--events", "0"]) == 2
    assert "events_per_file" in capsys.readouterr().err
