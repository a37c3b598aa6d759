"""The run's outputs read back: histograms.root (TH1/TH2 with titles and ROOT-style axis
titles, cutflow, sum of weights), the EFT plot, the timeline's slot names, the task-model
note, the summary's words and the progress bar's chunk estimate."""

from __future__ import annotations

import hist
import numpy as np
import pytest
import uproot

from hep_executor.cli import plot_eft
from hep_executor.cli import slot_names, write_plots
from hep_executor.cli import RunProgress
from hep_executor.cli import root_title, write_root
from hep_executor.cli import plural
from processors import eft
from processors.topeft_like import TopEFTLikeProcessor
from tests.cli.test_plots import assert_png, make_report


def eft_output() -> dict:
    """An output shaped like the TopEFT-like processor's, filled with known numbers."""
    hists = TopEFTLikeProcessor(n_wc=1).empty_hists()
    rng = np.random.default_rng(7)
    n = 500
    coefficients = np.column_stack([np.ones(n), rng.uniform(0.1, 0.5, n), rng.uniform(0.1, 0.3, n)])
    for name, h in hists.items():
        values = {"l0pt": rng.uniform(20, 180, n), "ht": rng.uniform(100, 900, n),
                  "njets": rng.integers(2, 8, n), "met": rng.uniform(0, 250, n)}[name]
        h.fill(dataset="ttH_EFT", category=np.repeat(np.array(["3l_2j", "3l_3j"] * (n // 2)), 3),
               systematic="nominal", coefficient=np.tile(np.arange(3), n), **{name: np.repeat(values, 3)},
               weight=coefficients.ravel())
    return {"hists": hists,
            "cutflow": {"ttH_EFT": {"all": 1000, "filters": 990, "trigger": 800, "3l": 500}},
            "sumw": {"ttH_EFT": 123.5, "ttbar": 4000.0}}


@pytest.mark.parametrize(("label", "expected"), [
    ("Leading lepton $p_T$ [GeV]", "Leading lepton #it{p}_{T} [GeV]"),
    ("$H_T$ [GeV]", "#it{H}_{T} [GeV]"),
    ("$p_T^{miss}$ [GeV]", "#it{p}_{T}^{miss} [GeV]"),
    (r"$\eta$", "#eta"),
    ("Jet multiplicity", "Jet multiplicity"),
])
def test_root_title(label, expected):
    assert root_title(label) == expected


def test_root_file_reads_back_with_titles_cutflow_and_sumw(tmp_path):
    output = eft_output()
    path = tmp_path / "histograms.root"
    assert write_root(output, path) > 0
    with uproot.open(path) as f:
        h = f["hists/l0pt/ttH_EFT/3l_2j/nominal/l0pt"]
        assert h.classname == "TH1D"
        assert h.member("fXaxis").member("fTitle") == "Leading lepton #it{p}_{T} [GeV]"
        assert h.member("fYaxis").member("fTitle") == "Events"
        assert h.title == "Leading lepton #it{p}_{T} (ttH_EFT, 3l_2j, nominal), SM"
        expected = eft.evaluate(output["hists"]["l0pt"][{"dataset": "ttH_EFT", "category": "3l_2j",
                                                         "systematic": "nominal"}], None)
        np.testing.assert_allclose(h.values(), expected.values())
        assert h.values().sum() == pytest.approx(250.0)  # SM weight 1 per event, half the events
        coef = f["hists/l0pt/ttH_EFT/3l_2j/nominal/l0pt_coefficients"]
        assert coef.classname == "TH2D" and coef.values().shape == (3, 20)
        assert coef.member("fYaxis").member("fTitle") == "Leading lepton #it{p}_{T} [GeV]"
        assert "$" not in f["hists/met/ttH_EFT/3l_3j/nominal/met"].member("fXaxis").member("fTitle")
        cutflow = f["cutflow/ttH_EFT"]
        assert cutflow.classname == "TH1D" and cutflow.title == "Cutflow of ttH_EFT"
        assert list(cutflow.axis().labels()) == ["all", "filters", "trigger", "3l"]
        assert list(cutflow.values()) == [1000, 990, 800, 500]
        sumw = f["sumw"]
        assert list(sumw.axis().labels()) == ["ttH_EFT", "ttbar"]
        np.testing.assert_allclose(sumw.values(), [123.5, 4000.0])


def test_plain_histogram_keeps_its_weights(tmp_path):
    h = hist.Hist(hist.axis.StrCategory(["a"], name="ds"), hist.axis.Variable([0, 1, 3, 10], name="x", label="$m$"),
                  storage=hist.storage.Weight())
    h.fill(ds="a", x=[0.5, 2, 2, 5, 20], weight=[1, 2, 2, 3, 4])
    write_root({"m": h}, tmp_path / "h.root")
    with uproot.open(tmp_path / "h.root") as f:
        back = f["m/a/m"]
        np.testing.assert_allclose(back.values(), [1, 4, 3])
        np.testing.assert_allclose(back.variances(), [1, 8, 9])
        np.testing.assert_allclose(back.axis().edges(), [0, 1, 3, 10])
        assert back.values(flow=True)[-1] == 4  # the overflow bin
        assert back.member("fXaxis").member("fTitle") == "m"


def test_eft_plot_per_category(tmp_path):
    path = plot_eft(eft_output()["hists"]["l0pt"], {"ctG": 1.0}, tmp_path / "eft.png", dataset="ttH_EFT",
                    lumi=59.7)
    assert_png(path)
    import matplotlib.image

    height, width = matplotlib.image.imread(path).shape[:2]
    assert width >= 700 and height >= 800  # one category group (3l): one column, main and ratio panels


def test_timeline_slot_names_are_readable():
    tasks = [{"slot": "ab12cd/1", "started": 5.0, "host": "node7"}, {"slot": "ff00aa/0", "started": 1.0, "host": "node8"},
             {"slot": "ab12cd/0", "started": 2.0, "host": "node7"}]
    assert slot_names(tasks) == {"ab12cd/1": "worker 2 / slot 1 (node7)", "ff00aa/0": "worker 1 / slot 0 (node8)",
                                 "ab12cd/0": "worker 2 / slot 0 (node7)"}


def test_task_model_only_where_sizes_vary(tmp_path):
    report = make_report()
    for t in report["tasks"]:
        if t["kind"] == "process":
            t["events"] = 3000
    notes: dict = {}
    written = write_plots(report, tmp_path, notes)
    assert "task_model" not in written
    assert "one size (3,000 events)" in notes["task_model"]


def test_plural():
    assert [plural(n, "merge") for n in (0, 1, 2, 1500)] == ["0 merges", "1 merge", "2 merges", "1,500 merges"]


def test_chunk_total_estimated_from_entries():
    p = RunProgress(n_files=2, chunksize=1000, show=False)
    with p:
        p.entries.update({"a.root": 2500, "b.root": 1000})
        p.dataset_of.update({"a.root": "A", "b.root": "B"})
        assert p.estimated_chunks() == 4  # 3 + 1
        p.maxchunks = 2
        assert p.estimated_chunks() == 3  # A capped at 2


def test_run_folders_never_reused_and_latest_moves(tmp_path):
    from hep_executor.cli import link_latest, new_run_dir

    first = new_run_dir(tmp_path, "demo")
    second = new_run_dir(tmp_path, "demo")  # the same second: a suffix, not the same folder
    assert first != second and first.is_dir() and second.is_dir()
    assert link_latest(first).resolve() == first
    assert link_latest(second).resolve() == second
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name, "latest"])


def test_run_log_is_debug_and_console_level_unchanged(tmp_path):
    import logging

    from hep_executor.cli import run_log

    root = logging.getLogger()
    console = logging.StreamHandler()
    root.addHandler(console)
    old = root.level
    try:
        root.setLevel(logging.WARNING)
        with run_log(tmp_path / "run.log"):
            logging.getLogger("hep_executor.test").debug("a debug line of ours")
            logging.getLogger("matplotlib.font_manager").debug("font noise")
            assert console.level == logging.WARNING
        assert root.level == logging.WARNING and console.level == logging.NOTSET
    finally:
        root.removeHandler(console)
        root.setLevel(old)
    text = (tmp_path / "run.log").read_text()
    assert "a debug line of ours" in text and "font noise" not in text
