"""``hep-executor run`` with a fileset JSON and ``--processor module:Class``: coffea's fileset
forms, the processor module looked up beside the fileset or on ``--path``, the run folders,
and the report and log a failed or interrupted run leaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from coffea.util import load

from hep_executor.cli.main import main as cli_main
from tests.helpers import try_assert

REPO = Path(__file__).resolve().parents[2]

PROCESSOR = '''
import os
import time

from coffea import processor


class {name}(processor.ProcessorABC):
    def __init__(self):
        pass

    def process(self, events):
        name = events.metadata["filename"]
        if {fail!r} and {fail!r} in name:
            raise ValueError("bad chunk on purpose in " + name)
        if {marker!r}:
            open({marker!r}, "a").close()
            time.sleep({sleep})
        return {{"events": {{events.metadata["dataset"]: len(events)}}}}

    def postprocess(self, accumulator):
        return accumulator
'''


def write_processor(folder: Path, module: str, name: str = "Counter", *, fail: str = "",
                    marker: str = "", sleep: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    path.write_text(PROCESSOR.format(name=name, fail=fail, marker=marker, sleep=sleep))
    return path


def only_run(base: Path) -> Path:
    runs = [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, runs
    return runs[0]


def test_coffea_files_map_form_module_beside_fileset(sample_files, tmp_path, monkeypatch, capsys):
    inputs = tmp_path / "inputs"
    write_processor(inputs, "cli_counter_a")
    fileset = {"ttbar": {"files": {str(sample_files["good"]): "Events",
                                   os.path.relpath(sample_files["other"], inputs): "Events"},
                         "metadata": {"xsec": 831.8}}}
    (inputs / "fileset.json").write_text(json.dumps(fileset))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code = cli_main(["run", "--fileset", str(inputs / "fileset.json"), "--processor", "cli_counter_a:Counter",
                     "--workers", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    run_dir = only_run(elsewhere / "hep-executor-runs")
    assert run_dir.name.startswith("counter-")
    assert (elsewhere / "hep-executor-runs" / "latest").resolve() == run_dir
    assert load(run_dir / "output.coffea") == {"events": {"ttbar": 4000}}
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "ok" and report["totals"]["events"] == 4000
    assert "checkpoint" not in report and not (run_dir / "checkpoint").exists()  # kept only when interrupted
    out = capsys.readouterr().out
    merges = report["totals"]["merges"]
    assert f"{merges} merge{'' if merges == 1 else 's'} on workers" in out
    assert "4,000 events in" in out


def test_coffea_07_form_module_on_path_and_new_folder_each_run(sample_files, tmp_path, monkeypatch, capsys):
    code_dir = tmp_path / "code"
    write_processor(code_dir, "cli_counter_b", "Count07")
    fileset = {"ttbar": {"files": [str(sample_files["good"])], "treename": "Events"}}
    (tmp_path / "fs.json").write_text(json.dumps(fileset))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv = ["run", "--fileset", str(tmp_path / "fs.json"), "--processor", "cli_counter_b:Count07",
            "--path", str(code_dir), "--workers", "1", "--no-progress", "--out", str(tmp_path / "runs"),
            "--chunksize", "700", "--schema", "Base"]
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert cli_main(argv) == 0, capsys.readouterr().err
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if not p.is_symlink())
    assert len(runs) == 2 and runs[0] != runs[1]
    assert (tmp_path / "runs" / "latest").resolve() in runs
    for run_dir in runs:
        assert load(run_dir / "output.coffea") == {"events": {"ttbar": 2000}}
        report = json.loads((run_dir / "report.json").read_text())
        assert report["totals"]["chunks"] == 3  # 2000 events at 700: 700 + 700 + 600
    assert not (cwd / "hep-executor-runs").exists()


def test_missing_module_names_paths_searched(sample_files, tmp_path, monkeypatch, capsys):
    (tmp_path / "fs.json").write_text(json.dumps({"ttbar": [str(sample_files["good"])]}))
    extra = tmp_path / "extra"
    extra.mkdir()
    monkeypatch.chdir(tmp_path)
    code = cli_main(["run", "--fileset", str(tmp_path / "fs.json"), "--processor", "no_such_mod_xyz:P",
                     "--path", str(extra), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "no_such_mod_xyz" in line and str(extra) in line and str(tmp_path) in line
    assert "Traceback" not in err


def test_failing_run_leaves_log_and_report_with_traceback(sample_files, tmp_path, monkeypatch, capsys):
    write_processor(tmp_path, "cli_failing", "Failing", fail="ttbar_1")
    fileset = {"ttbar": [str(sample_files["good"]), str(sample_files["other"])]}
    (tmp_path / "fs.json").write_text(json.dumps(fileset))
    monkeypatch.chdir(tmp_path)
    code = cli_main(["run", "--fileset", "fs.json", "--processor", "cli_failing:Failing", "--workers", "1",
                     "--no-progress", "--chunksize", "1000"])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad chunk on purpose" in err and "Traceback" not in err
    run_dir = only_run(tmp_path / "hep-executor-runs")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "failed"
    assert "bad chunk on purpose" in report["error"]["traceback"]
    assert "Traceback" in report["error"]["traceback"]
    assert report["partial"]["files_preprocessed"] == 2
    log = (run_dir / "run.log").read_text()
    assert "run failed" in log and "bad chunk on purpose" in log


SLOW_HIST_PROCESSOR = '''
import os
import time

import awkward as ak
import hist
from coffea import processor


class SlowHist(processor.ProcessorABC):
    def process(self, events):
        open({marker!r}, "a").close()
        time.sleep(1.0)
        h = hist.Hist.new.Reg(20, 0, 200, name="pt", label="$p_T$ [GeV]").Double()
        h.fill(pt=ak.flatten(events.Muon.pt))
        return {{"pt": h, "events": {{events.metadata["dataset"]: len(events)}}}}

    def postprocess(self, accumulator):
        return accumulator
'''


def test_interrupted_run_leaves_log_report_and_partial_histograms(sample_files, tmp_path):
    import uproot

    marker = tmp_path / "started"
    (tmp_path / "cli_slow.py").write_text(SLOW_HIST_PROCESSOR.format(marker=str(marker)))
    (tmp_path / "fs.json").write_text(json.dumps({"ttbar": [str(sample_files["good"])]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "hep_executor.cli.main", "run", "--fileset", "fs.json",
                             "--processor", "cli_slow:SlowHist", "--workers", "1", "--chunksize", "100",
                             "--no-progress"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        try_assert(marker.exists, timeout=120, message="the processor never started")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    run_dir = only_run(tmp_path / "hep-executor-runs")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "interrupted"
    assert report["error"]["type"] == "RunInterrupted" and "RunInterrupted" in report["error"]["traceback"]
    assert report["partial"]["files_preprocessed"] == 1
    done = report["partial"]["events_done"]
    assert 0 < done < 2000 and report["partial"]["chunks_done"] < 20
    assert "run interrupted" in (run_dir / "run.log").read_text()
    # what was merged when Ctrl-C came: every chunk done, as coffea output and as ROOT histograms
    partial = load(run_dir / "partial_output.coffea")
    assert partial["events"] == {"ttbar": done}
    with uproot.open(report["partial"]["histograms"]) as f:
        assert f["pt/pt"].values().sum() == partial["pt"].values().sum() > 0
        assert f["pt/pt"].member("fXaxis").member("fTitle") == "#it{p}_{T} [GeV]"
    assert report["partial"]["checkpoint"] == str(run_dir / "checkpoint")


@pytest.mark.parametrize("case", ["bad key", "missing fileset", "no files key", "missing module", "port in use"])
def test_a_config_error_makes_no_run_folder(sample_files, tmp_path, monkeypatch, capsys, case):
    from hep_executor.analysis import Dashboard

    monkeypatch.chdir(tmp_path)
    taken = Dashboard()  # holds a port that --dashboard PORT cannot have
    (tmp_path / "fs.json").write_text(json.dumps({"ttbar": [str(sample_files["good"])]}))
    write_processor(tmp_path, "cli_counter_cfg", "CountCfg")
    argv = {"bad key": ["run", "run.yaml"],
            "missing fileset": ["run", "--fileset", "nope.json", "--processor", "cli_counter_cfg:CountCfg"],
            "no files key": ["run", "--fileset", "empty.json", "--processor", "cli_counter_cfg:CountCfg"],
            "missing module": ["run", "--fileset", "fs.json", "--processor", "cli_nowhere:P"],
            "port in use": ["run", "--fileset", "fs.json", "--processor", "cli_counter_cfg:CountCfg",
                            "--dashboard", str(taken.port)]}[case]
    (tmp_path / "run.yaml").write_text("fileset: fs.json\nprocessor: {class: 'cli_counter_cfg:CountCfg'}\n"
                                       "chunking: {chunksiz: 1000}\n")
    (tmp_path / "empty.json").write_text(json.dumps({"ttbar": {"treename": "Events"}}))
    try:
        assert cli_main([*argv, "--no-progress"]) == 2
    finally:
        taken.close()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    named = {"bad key": "chunking.chunksiz", "missing fileset": "nope.json", "no files key": "'files'",
             "missing module": "cli_nowhere", "port in use": f"127.0.0.1:{taken.port}"}[case]
    assert named in line, line
    assert not (tmp_path / "hep-executor-runs").exists()


def test_version(capsys):
    import hep_executor

    with pytest.raises(SystemExit) as info:
        cli_main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip().startswith(f"hep-executor {hep_executor.__version__}")


def test_config_and_cli_fileset_json_forms(tmp_path):
    from hep_executor.cli import load_config

    (tmp_path / "fs.json").write_text(json.dumps({"a": {"files": {"x.root": "T"}, "metadata": {"k": 1}},
                                                  "b": {"files": ["y.root"], "treename": "U"},
                                                  "c": ["root://host//z.root"]}))
    (tmp_path / "run.yaml").write_text(textwrap.dedent("""\
        fileset: fs.json
        processor: {class: "mymod:P"}
    """))
    fileset = load_config(tmp_path / "run.yaml").load_fileset()
    assert fileset == {"a": {"files": {str(tmp_path / "x.root"): "T"}, "metadata": {"k": 1}},
                       "b": {"files": [str(tmp_path / "y.root")], "treename": "U"},
                       "c": ["root://host//z.root"]}


def test_checkpoint_folder_is_resumed_by_a_second_run(sample_files, tmp_path, monkeypatch, capsys):
    write_processor(tmp_path, "cli_counter_ckpt", "CountCkpt")
    (tmp_path / "fs.json").write_text(json.dumps({"ttbar": [str(sample_files["good"]), str(sample_files["other"])]}))
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--fileset", "fs.json", "--processor", "cli_counter_ckpt:CountCkpt", "--workers", "1",
            "--no-progress", "--chunksize", "700", "--checkpoint", "ckpt"]
    assert cli_main([*argv, "--out", "first"]) == 0, capsys.readouterr().err
    assert any((tmp_path / "ckpt").iterdir())
    assert cli_main([*argv, "--out", "second"]) == 0, capsys.readouterr().err
    first, second = (json.loads((only_run(tmp_path / d) / "report.json").read_text()) for d in ("first", "second"))
    ckpt = str(tmp_path / "ckpt")
    assert first["totals"]["events"] == 4000 and first["totals"]["chunks"] == 3 + 3
    assert first["checkpoint"]["folder"] == ckpt and first["checkpoint"]["resumed_entries"] == 0
    # the second run processes nothing: everything comes from the first run's checkpoint
    assert second["checkpoint"]["folder"] == ckpt and second["checkpoint"]["resumed_seq"] is not None
    assert second["checkpoint"]["resumed_entries"] + second["totals"]["events"] == first["totals"]["events"]
    assert second["totals"]["chunks"] == 0
    assert load(only_run(tmp_path / "second") / "output.coffea") == {"events": {"ttbar": 4000}}


def test_no_cache_reads_every_files_metadata(sample_files, tmp_path, monkeypatch, capsys):
    write_processor(tmp_path, "cli_counter_nocache", "CountNoCache")
    (tmp_path / "fs.json").write_text(json.dumps({"ttbar": [str(sample_files["good"]), str(sample_files["other"])]}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    argv = ["run", "--fileset", "fs.json", "--processor", "cli_counter_nocache:CountNoCache", "--workers", "1",
            "--no-progress"]
    totals = []
    for out, extra in (("a", []), ("b", ["--no-cache"]), ("c", [])):
        assert cli_main([*argv, *extra, "--out", out]) == 0, capsys.readouterr().err
        totals.append(json.loads((only_run(tmp_path / out) / "report.json").read_text())["totals"])
    # b follows a run that filled the cache, yet reads both files; c (cache on again) reads none
    assert [t["metadata_cached"] for t in totals] == [0, 0, 2]
    assert [t["preprocess_tasks"] for t in totals] == [2, 2, 0]
    assert [t["events"] for t in totals] == [4000] * 3
