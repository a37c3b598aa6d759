"""Filesets: every malformed one refused before any task, duplicates, coffea's JSON forms, .txt files."""

import json
import logging

import pytest

from hep_executor import run
from hep_executor.analysis import load_fileset, normalize_fileset
from hep_executor.errors import DuplicateFileError, EmptyInputError, FilesetError
from tests.analysis.simple_processor import MuonPtProcessor


@pytest.fixture(scope="module")
def two(samples):
    return [str(f) for f in samples["ttbar"]]


MALFORMED = [
    ("int-spec", lambda f: {"ds": 5}, "dataset 'ds': expected a list of files or a dict with 'files', not int 5"),
    ("int-tree", lambda f: {"ds": {"files": {f: 5}}}, f"dataset 'ds', file '{{f}}': the tree name must be a string, not int 5"),
    ("int-file", lambda f: {"ds": [f, 7]}, "dataset 'ds', file #1: a file must be a path or URL string, not int 7"),
    ("none-file", lambda f: {"ds": [None]}, "dataset 'ds', file #0: a file must be a path or URL string, not NoneType None"),
    ("int-key", lambda f: {"ds": {"files": {3: "Events"}}}, "dataset 'ds', key 3: a file must be a path or URL string, not int 3"),
    ("files-int", lambda f: {"ds": {"files": 3}}, "dataset 'ds': 'files' must be a list of paths or a {path: tree} dict, not int 3"),
    ("no-files-key", lambda f: {"ds": {"treename": "Events"}}, "dataset 'ds': no 'files' key"),
    ("unknown-key", lambda f: {"ds": {"files": [f], "tree": "Events"}}, "dataset 'ds': unknown key(s) ['tree']"),
    ("treename-int", lambda f: {"ds": {"files": [f], "treename": 1}}, "dataset 'ds', key 'treename': must be a string, not int 1"),
    ("metadata-list", lambda f: {"ds": {"files": [f], "metadata": [1]}}, "dataset 'ds', key 'metadata': must be a dict, not list"),
    ("dataset-int", lambda f: {1: [f]}, "dataset names must be non-empty strings, not int 1"),
    ("not-a-dict", lambda f: [f], "the fileset must be a non-empty dict {dataset: [files]}, not list"),
    ("empty", lambda f: {}, "the fileset must be a non-empty dict {dataset: [files]}, not dict"),
]


@pytest.mark.parametrize("name, make, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_fileset_refused_before_any_task(manager, two, name, make, message):
    before = manager.stats["submitted"]
    with pytest.raises(FilesetError) as info:
        run(make(two[0]), MuonPtProcessor(), manager=manager, chunksize=1000)
    text = str(info.value)
    assert text.startswith(message.replace("{f}", two[0])), text
    assert "\n" not in text
    assert manager.stats["submitted"] == before


def test_dataset_with_no_files_names_it(manager, two):
    with pytest.raises(EmptyInputError, match="dataset 'nothing' has no files"):
        run({"good": {"files": [two[0]]}, "nothing": {"files": []}}, MuonPtProcessor(), manager=manager)


def test_file_twice_in_one_dataset_is_refused(manager, two):
    before = manager.stats["submitted"]
    with pytest.raises(DuplicateFileError) as info:
        run({"ttbar": [two[0], two[1], two[0]]}, MuonPtProcessor(), manager=manager, chunksize=1000)
    assert info.value.path == two[0]
    assert f"'{two[0]}' is listed twice in dataset 'ttbar'" in str(info.value)
    assert manager.stats["submitted"] == before


def test_file_in_two_datasets_is_refused_also_under_another_spelling(manager, two, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import os

    relative = os.path.relpath(two[1], tmp_path)
    with pytest.raises(DuplicateFileError) as info:
        run({"a": [two[1]], "b": {"files": {relative: "Events"}}}, MuonPtProcessor(), manager=manager)
    assert f"'{relative}' (as '{two[1]}') is listed in datasets 'a' and 'b'" in str(info.value)


def test_dedupe_keeps_the_first_with_a_warning(manager, two, caplog):
    clean = run({"ttbar": two}, MuonPtProcessor(), manager=manager, chunksize=1000)
    with caplog.at_level(logging.WARNING, logger="hep_executor.analysis._fileset"):
        result = run({"ttbar": two, "again": [two[0]]}, MuonPtProcessor(), manager=manager,
                     chunksize=1000, dedupe=True)
    assert result.output["events"] == clean.output["events"] == {"ttbar": 6000}
    assert result.output["sumpt"] == clean.output["sumpt"]
    assert result.coverage.ok
    warned = [r.getMessage() for r in caplog.records]
    assert any(two[0] in m and "'ttbar' and 'again'" in m for m in warned), warned


@pytest.mark.parametrize("form", ["coffea", "coffea-0.7", "list", "dataset_tools"])
def test_json_fileset_forms_give_the_same_output(manager, two, tmp_path, form):
    files = {
        "coffea": {"ttbar": {"files": {two[0]: "Events", two[1]: "Events"}, "metadata": {"xs": 1.0}}},
        "coffea-0.7": {"ttbar": {"files": two, "treename": "Events"}},
        "list": {"ttbar": two},
        "dataset_tools": {"ttbar": {"files": {f: {"object_path": "Events", "num_entries": 3000} for f in two}}},
    }[form]
    path = tmp_path / "fileset.json"
    path.write_text(json.dumps(files))
    treename = "Events" if form == "list" else None  # the other forms name the tree themselves
    result = run(str(path), MuonPtProcessor(), treename, manager=manager, chunksize=1500)
    assert result.output["events"] == {"ttbar": 6000}
    assert sorted(f["file"] for f in result.report["files"]) == sorted(two)


def test_txt_fileset_dataset_from_file_name_relative_paths(manager, two, tmp_path):
    import os

    path = tmp_path / "ttbar.txt"
    rel = os.path.relpath(two[1], tmp_path)
    path.write_text(f"# ttbar, two files\n{two[0]}\n\n  {rel}  \n")
    assert load_fileset(path) == {"ttbar": [two[0], two[1]]}
    result = run(path, MuonPtProcessor(), manager=manager, chunksize=1500)
    assert result.output["events"] == {"ttbar": 6000}


def test_fileset_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"ttbar": ["a.root",]}')
    with pytest.raises(FilesetError, match=r"broken.json': not valid JSON \(.* at line 1, column 21\)"):
        load_fileset(bad)
    with pytest.raises(FilesetError, match="missing.json' not found"):
        load_fileset(tmp_path / "missing.json")
    other = tmp_path / "fileset.yaml"
    other.write_text("ttbar: [a.root]\n")
    with pytest.raises(FilesetError, match="expected a .json or a .txt file"):
        load_fileset(other)
    listed = tmp_path / "list.json"
    listed.write_text('["a.root"]')
    with pytest.raises(FilesetError, match="list.json': expected a non-empty {dataset: files} object, not list"):
        load_fileset(listed)
    nested = tmp_path / "nested.json"
    nested.write_text('{"ttbar": {"files": {"a.root": 5}}}')
    with pytest.raises(FilesetError, match="dataset 'ttbar', file '.*a.root': the tree name must be a string"):
        normalize_fileset(nested)
