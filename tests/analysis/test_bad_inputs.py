"""Bad inputs a user can give: each a clear error naming the file; skipbadfiles goes on."""

import subprocess
import sys

import pytest
import uproot

from hep_executor import run
from hep_executor.errors import (EmptyInputError, FileMissingError, NotRootFileError,
                                 TreeNotFoundError, TruncatedFileError)
from tests.analysis.simple_processor import MuonPtProcessor


@pytest.fixture(scope="module")
def bad_files(samples, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    good = samples["ttbar"][0]
    text = d / "notes.root"
    text.write_text("this is not a ROOT file\n" * 100)
    truncated = d / "truncated.root"
    data = open(good, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    empty = d / "empty.root"
    with uproot.recreate(empty) as f:
        f.mktree("Events", {"nMuon": "int32", "Muon_pt": "var * float32"})
    return {"missing": str(d / "missing.root"), "text": str(text), "truncated": str(truncated),
            "empty": str(empty), "good": good}


@pytest.mark.parametrize("kind, error", [
    ("missing", FileMissingError),
    ("text", NotRootFileError),
    ("truncated", TruncatedFileError),
    ("empty", EmptyInputError),
])
def test_bad_file_names_file_and_cause(bad_files, manager, kind, error):
    fileset = {"ttbar": [bad_files["good"], bad_files[kind]]}
    with pytest.raises(error) as info:
        run(fileset, MuonPtProcessor(), manager=manager, chunksize=1000)
    assert bad_files[kind] in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_wrong_tree_name_lists_trees(bad_files, manager):
    with pytest.raises(TreeNotFoundError) as info:
        run({"ttbar": [bad_files["good"]]}, MuonPtProcessor(), "Evnts", manager=manager)
    assert "Evnts" in str(info.value) and "Events" in str(info.value)


def test_dataset_without_files(manager):
    with pytest.raises(EmptyInputError, match="dataset 'nothing' has no files"):
        run({"nothing": []}, MuonPtProcessor(), manager=manager)


def test_skipbadfiles_completes_and_reports_skipped(bad_files, manager):
    fileset = {"ttbar": [bad_files["good"], bad_files["missing"], bad_files["text"],
                         bad_files["truncated"], bad_files["empty"]]}
    result = run(fileset, MuonPtProcessor(), manager=manager, chunksize=1000, skipbadfiles=True)
    assert result.output["events"] == {"ttbar": 3000}
    skipped = {s["file"] for s in result.skipped}
    assert skipped == {bad_files[k] for k in ("missing", "text", "truncated", "empty")}
    assert result.report["skipped"] == result.skipped


def test_cli_bad_config_key_and_bad_file(tmp_path, bad_files):
    cfg = tmp_path / "bad_key.yaml"
    cfg.write_text("fileset: {ttbar: [x.root]}\nchunking: {chunk_size: 10}\n")
    proc = subprocess.run([sys.executable, "-m", "hep_executor.cli.main", "run", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown config key 'chunking.chunk_size'" in proc.stderr

    cfg = tmp_path / "bad_file.yaml"
    cfg.write_text(f"fileset: {{ttbar: [{bad_files['text']}]}}\n"
                   "processor: {class: 'tests.analysis.simple_processor:MuonPtProcessor'}\n"
                   f"workers: {{count: 1}}\noutput: {{dir: {tmp_path / 'out'}}}\n")
    proc = subprocess.run([sys.executable, "-m", "hep_executor.cli.main", "run", "--no-progress", str(cfg)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if "error" in l]
    assert len(lines) == 1 and bad_files["text"] in lines[0], proc.stderr
