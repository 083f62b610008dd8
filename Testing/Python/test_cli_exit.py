"""`lnmstaging predict` run as a process ends without the interpreter's teardown (cli/main.py ``_exit_now``):
its outputs and every printed line must still be complete."""

from __future__ import annotations

import json
import subprocess
import sys

from LNMStagingLib.cli import main as cli_main


def test_predict_process_writes_everything_before_it_ends(phantom_files, tiny_bundle_dir, tmp_path):
    out = tmp_path / "prediction"
    done = subprocess.run(
        [sys.executable, "-m", "LNMStagingLib", "predict", str(phantom_files.image), str(phantom_files.segmentation),
         "--model", str(tiny_bundle_dir), "--progress-lines", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("lnmstaging-progress ") and lines[-1].startswith("times: imports ")  # flushed
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["nodes"] and (out / "gradcam.nrrd").stat().st_size > 0 and (out / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prediction"]  # no temporary sibling left behind


def test_an_error_still_exits_with_code_2_and_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "LNMStagingLib", "predict", str(tmp_path / "missing.nrrd"),
                           str(tmp_path / "missing.seg.nrrd"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "missing.nrrd" in done.stderr


def test_in_process_calls_return_instead_of_ending_the_process(monkeypatch, tmp_path):
    ended = []
    monkeypatch.setattr(cli_main.os, "_exit", ended.append)
    # a command with fast_exit called with explicit arguments (tests, the Slicer logic) returns its code
    assert cli_main.main(["predict", str(tmp_path / "missing.nrrd"), str(tmp_path / "missing.seg.nrrd"),
                          "--out", str(tmp_path / "out")]) == 2
    assert ended == []
    if "torch" in sys.modules:
        cli_main._exit_now(3)  # what the command line does: flush, then end with the code
        assert ended == [3]
