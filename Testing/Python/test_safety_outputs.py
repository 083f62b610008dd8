"""Issue 11, data loss: no command replaces or deletes a file it did not write, never one of its inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from LNMStagingLib.cli.main import main
from LNMStagingLib.errors import InputError
from LNMStagingLib.io.atomic import OUTPUT_LISTING, atomic_directory, write_text_atomic


def _bytes(path):
    return path.read_bytes()


def _refused(capsys, argv, fragment: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert fragment in err, err
    return err


def test_measure_never_replaces_its_own_input(phantom_files, tmp_path, capsys):
    before = _bytes(phantom_files.image)
    _refused(capsys, ["measure", str(phantom_files.image), str(phantom_files.labelmap), "--out",
                      str(phantom_files.image)], "one of this command's inputs")
    # --overwrite never makes an input replaceable
    _refused(capsys, ["measure", str(phantom_files.image), str(phantom_files.labelmap), "--out",
                      str(phantom_files.labelmap), "--overwrite"], "one of this command's inputs")
    assert _bytes(phantom_files.image) == before


def test_measure_replaces_only_its_own_csv_or_with_overwrite(phantom_files, tmp_path, capsys):
    victim = tmp_path / "victim.nrrd"
    victim.write_bytes(b"the user's file")
    _refused(capsys, ["measure", str(phantom_files.image), str(phantom_files.labelmap), "--out", str(victim)],
             "is not an lnmstaging measure CSV")
    assert victim.read_bytes() == b"the user's file"
    own = tmp_path / "nodes.csv"
    argv = ["measure", str(phantom_files.image), str(phantom_files.labelmap), "--out", str(own)]
    assert main(argv) == 0 and main(argv) == 0  # an earlier measure CSV is recognised and replaced
    assert main(argv[:-1] + [str(victim), "--overwrite"]) == 0
    assert victim.read_text().startswith("node_id,")


def test_preset_and_evaluate_never_replace_inputs_or_user_files(phantom_files, tmp_path, capsys):
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"patient_id,image,segmentation,n_stage\np1,{phantom_files.image},{phantom_files.labelmap},N1\n")
    before = _bytes(phantom_files.image)
    _refused(capsys, ["preset", "--manifest", str(manifest), "--out", str(phantom_files.image)],
             "one of this command's inputs")
    _refused(capsys, ["preset", "--manifest", str(manifest), "--out", str(manifest), "--overwrite"],
             "one of this command's inputs")
    _refused(capsys, ["evaluate", "--manifest", str(manifest), "--out", str(phantom_files.image)],
             "one of this command's inputs")
    _refused(capsys, ["evaluate", "--manifest", str(manifest), "--out", str(tmp_path / "m.json"), "--predictions",
                      str(phantom_files.labelmap)], "one of this command's inputs")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    _refused(capsys, ["evaluate", "--manifest", str(manifest), "--out", str(notes)], "is not an lnmstaging evaluate")
    assert _bytes(phantom_files.image) == before and notes.read_text() == '{"mine": 1}'


def test_phantom_never_replaces_a_users_image_of_the_same_name(tmp_path, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    (folder / "image.nrrd").write_bytes(b"my scan")
    _refused(capsys, ["phantom", str(folder)], "earlier lnmstaging phantom")
    assert (folder / "image.nrrd").read_bytes() == b"my scan" and sorted(os.listdir(folder)) == ["image.nrrd"]
    fresh = tmp_path / "ph"
    assert main(["phantom", str(fresh)]) == 0 and main(["phantom", str(fresh)]) == 0  # its own files: replaced


def test_output_folder_with_user_files_is_never_replaced(tmp_path):
    out = tmp_path / "run"
    with atomic_directory(out, marker="report.json") as folder:
        (folder / "report.json").write_text("{}")
        (folder / "traversal").mkdir()
        (folder / "traversal" / "a.png").write_bytes(b"png")
    assert json.loads((out / OUTPUT_LISTING).read_text())["files"] == ["report.json", "traversal/", "traversal/a.png"]
    with atomic_directory(out, marker="report.json") as folder:  # only its own files: replaced
        (folder / "report.json").write_text('{"second": 1}')
    assert (out / "report.json").read_text() == '{"second": 1}' and not (out / "traversal").exists()
    (out / "notes.txt").write_text("the user's notes")
    (out / "DICOM").mkdir()
    (out / "DICOM" / "IM0001").write_bytes(b"dicom")
    with pytest.raises(InputError, match="did not write") as refused:
        with atomic_directory(out, marker="report.json") as folder:
            (folder / "report.json").write_text("{}")
    assert "\n" not in str(refused.value)
    assert (out / "notes.txt").read_text() == "the user's notes" and (out / "DICOM" / "IM0001").is_file()
    assert not list(tmp_path.glob(".*partial*"))


def test_predict_keeps_the_users_files_in_an_earlier_output_folder(phantom_files, tiny_bundle_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["predict", str(phantom_files.image), str(phantom_files.segmentation), "--model", str(tiny_bundle_dir),
            "--quiet", "--out", str(out)]
    assert main(argv) == 0
    (out / "notes.txt").write_text("mine")
    (out / "DICOM").mkdir()
    (out / "DICOM" / "IM1").write_bytes(b"x")
    _refused(capsys, argv, "did not write")
    assert (out / "notes.txt").read_text() == "mine" and (out / "DICOM" / "IM1").read_bytes() == b"x"
    _refused(capsys, argv[:-1] + [str(phantom_files.image.parent)], "one of this command's inputs")


def test_read_only_folder_names_the_users_path(tmp_path, monkeypatch):
    import errno

    def refuse(*_args, dir=None, **_kwargs):  # what a read-only folder does (tests run as root, chmod is moot)
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/.nodes.csv.abc.partial.csv")

    monkeypatch.setattr("LNMStagingLib.io.atomic.tempfile.mkstemp", refuse)
    with pytest.raises(InputError, match="permission denied") as refused:
        write_text_atomic(tmp_path / "nodes.csv", "x")
    assert str(refused.value).startswith(str(tmp_path / "nodes.csv")) and ".partial" not in str(refused.value)


def test_disk_full_is_one_line_naming_the_output(tmp_path, monkeypatch):
    import errno

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".x.partial"))

    monkeypatch.setattr("LNMStagingLib.io.atomic.os.replace", full)
    with pytest.raises(InputError, match="no space left") as refused:
        write_text_atomic(tmp_path / "nodes.csv", "x")
    assert ".partial" not in str(refused.value) and not list(tmp_path.glob(".*partial*"))


def test_sigterm_while_writing_leaves_no_partial_file(tmp_path):
    script = (
        "import sys, time\n"
        "from LNMStagingLib.cli import main as cli\n"
        "from LNMStagingLib.io.atomic import atomic_path\n"
        "def slow(args):\n"
        "    with atomic_path(args.out) as temporary:\n"
        "        temporary.write_text('half')\n"
        "        print('writing', flush=True)\n"
        "        time.sleep(30)\n"
        "    return 0\n"
        "import argparse\n"
        "parser = argparse.ArgumentParser(); parser.add_argument('--out')\n"
        "cli.build_parser = lambda: parser\n"
        "parser.set_defaults(handler=slow)\n"
        "sys.exit(cli.main(['--out', sys.argv[1]]))\n"
    )
    target = tmp_path / "out.csv"
    process = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 143, err
    assert "SIGTERM" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
