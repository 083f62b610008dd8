"""The command-line contract: `lnmstaging measure` output and one-line errors with exit code 2."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from LNMStagingLib.cli.main import main

COLUMNS = ["node_id", "segment_name", "short_axis_mm", "long_axis_mm", "axis_ratio", "convexity", "compactness",
           "volume_mm3", "n_slices", "centroid_x", "centroid_y", "centroid_z"]


def test_measure_writes_the_contract_columns(phantom_files, tmp_path):
    out = tmp_path / "nodes.csv"
    assert main(["measure", str(phantom_files.image), str(phantom_files.segmentation), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0].keys()) == COLUMNS
    assert len(rows) == 7 and rows[0]["segment_name"] == "Node small round"
    assert float(rows[3]["short_axis_mm"]) == pytest.approx(10.0, abs=0.8)
    assert not list(tmp_path.glob(".*partial*"))


def test_console_script_runs_as_a_process(phantom_files, tmp_path):
    out = tmp_path / "nodes.csv"
    result = subprocess.run([sys.executable, "-m", "LNMStagingLib.cli.main", "measure", str(phantom_files.image),
                             str(phantom_files.labelmap), "--split-islands", "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list(csv.DictReader(out.open()))) == 7


def _write(array, path, like=None, spacing=None):
    image = sitk.GetImageFromArray(array, isVector=False)
    if like is not None:
        image.CopyInformation(like)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _bad_inputs(phantom_files, tmp_path):
    image = sitk.ReadImage(str(phantom_files.image))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_files.labelmap)))
    image_path, labels_path = str(phantom_files.image), str(phantom_files.labelmap)
    nan_image = sitk.GetArrayFromImage(image).astype(np.float32)
    nan_image[3, 4, 5] = np.nan
    border = labels.copy()
    border[12, 96, 0] = 9
    far = sitk.ReadImage(labels_path)
    far.SetOrigin([1000.0, 1000.0, 1000.0])
    sitk.WriteImage(far, str(tmp_path / "far.nrrd"))
    (tmp_path / "garbage.nrrd").write_bytes(b"NRRD0004\nthis is not an image\n")
    return {
        "missing image": ([str(tmp_path / "nope.nrrd"), labels_path], "nope.nrrd: file not found"),
        "unreadable": ([str(tmp_path / "garbage.nrrd"), labels_path], "garbage.nrrd: cannot be read"),
        "2D image": ([str(_write(np.zeros((20, 20), np.int16), tmp_path / "flat.nrrd")), labels_path], "is a 2D image"),
        "4D image": ([str(_write(np.zeros((2, 3, 20, 20), np.int16), tmp_path / "4d.nii.gz")), labels_path], "is a 4D image"),
        "empty segmentation": ([image_path, str(_write(np.zeros_like(labels), tmp_path / "empty.nrrd", like=image))], "segmentation is empty"),
        "outside": ([image_path, str(tmp_path / "far.nrrd")], "does not overlap the image"),
        "NaN voxels": ([str(_write(nan_image, tmp_path / "nan.nrrd", like=image)), labels_path], "NaN"),
        "touching the border": ([image_path, str(_write(border, tmp_path / "border.nrrd", like=image))], "touches the image border"),
    }


@pytest.mark.parametrize("case", ["missing image", "unreadable", "2D image", "4D image", "empty segmentation",
                                  "outside", "NaN voxels", "touching the border"])
def test_bad_input_gives_one_line_exit_2_and_no_output(phantom_files, tmp_path, case):
    arguments, expected = _bad_inputs(phantom_files, tmp_path)[case]
    out = tmp_path / "out" / "nodes.csv"
    result = subprocess.run([sys.executable, "-m", "LNMStagingLib.cli.main", "measure", *arguments, "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()
    assert not list(out.parent.glob("*")) if out.parent.exists() else True


def test_preset_landmarks_from_a_cohort(phantom_files, tmp_path):
    from LNMStagingLib.imaging.case import load_case, prepare_case
    from LNMStagingLib.imaging.presets import get_preset

    manifest = tmp_path / "cohort.csv"
    manifest.write_text("patient_id,image,segmentation\n"
                        f"p1,{phantom_files.image},{phantom_files.segmentation}\n"
                        f"p2,{phantom_files.image},{phantom_files.labelmap}\n")
    out = tmp_path / "mri-t2-mine.json"
    assert main(["preset", "--manifest", str(manifest), "--out", str(out)]) == 0
    preset = get_preset(str(out))
    assert preset.name == "mri-t2-cohort" and len(preset.intensity[0]["landmarks"]) > 3
    prepared = prepare_case(load_case(phantom_files.image, phantom_files.segmentation), preset)
    assert prepared.image.array.min() >= 0.0 and prepared.image.array.max() <= 1.0
    assert prepared.image.spacing == pytest.approx((0.573, 0.573, 3.3))


def test_atomic_outputs_have_ordinary_permissions(tmp_path):
    import os
    import stat

    from LNMStagingLib.io.atomic import atomic_directory, write_text_atomic

    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "d", marker="f") as folder:
            (folder / "f").write_text("y")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "d"]


def test_an_output_folder_with_other_files_is_never_replaced(phantom_files, tiny_bundle_dir, tmp_path, capsys):
    """`predict --out` replaces its folder as a whole: pointing it at the folder of the inputs (or any folder
    that is not an earlier prediction) must be refused before anything is touched."""
    import shutil

    case = tmp_path / "case"
    case.mkdir()
    image, segmentation = case / "image.nrrd", case / "segmentation.seg.nrrd"
    shutil.copy(phantom_files.image, image)
    shutil.copy(phantom_files.segmentation, segmentation)
    before = sorted(p.name for p in case.iterdir())
    for out in (case, tmp_path / "case" / "image.nrrd"):
        code = main(["predict", str(image), str(segmentation), "--model", str(tiny_bundle_dir), "--quiet",
                     "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and str(out.resolve()) in err, err
        assert sorted(p.name for p in case.iterdir()) == before
    # an earlier prediction is replaced as a whole (rerunning into the same folder is the normal use)
    out = tmp_path / "prediction"
    for _ in range(2):
        assert main(["predict", str(image), str(segmentation), "--model", str(tiny_bundle_dir), "--quiet",
                     "--out", str(out)]) == 0
    assert (out / "report.json").is_file()
    # a file system refusal the checks cannot foresee is one line too, not a traceback
    (tmp_path / "plain").write_text("x")
    code = main(["measure", str(image), str(segmentation), "--out", str(tmp_path / "plain" / "nodes.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err


def test_phantom_refuses_impossible_geometry(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "p"), "--spacing", "0", "1", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--spacing" in err and not (tmp_path / "p").exists()
