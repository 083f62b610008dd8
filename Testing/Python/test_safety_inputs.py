"""Issue 11, silent wrong answers and one-line errors on input: every drawn node is measured or named with
its reason, DICOM gaps are refused, constant images, truncated files and bad manifests give one line."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from LNMStagingLib.cli.main import main
from LNMStagingLib.errors import InputError
from LNMStagingLib.io.cohort import read_manifest
from LNMStagingLib.io.image import read_image
from LNMStagingLib.io.segmentation import LOST_ON_GRID, nodes_from_label_array, read_segmentation
from LNMStagingLib.synthetic.phantom import labelmap_to_seg_nrrd


def _one_line(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert fragment in err, err
    return err


def _reference_split(labels: np.ndarray):
    """The former way: a full-volume comparison and find_objects per label (the masks must stay identical)."""
    out = []
    for value in [int(v) for v in np.unique(labels) if v]:
        mask = labels == value
        box = ndimage.find_objects(mask.astype(np.uint8))[0]
        out.append((value, tuple(s.start for s in box), mask[box]))
    return out


@pytest.mark.parametrize("split_islands", [False, True])
def test_one_pass_split_gives_identical_masks_and_is_faster(split_islands):
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 256, 256), np.uint16)
    for value in range(1, 41):
        k, j, i = rng.integers(2, 36), rng.integers(5, 245), rng.integers(5, 245)
        labels[k:k + 3, j:j + 6, i:i + 5] = value
        labels[k + 1, j + 8, i + 2] = value  # a second island for --split-islands
    started = time.perf_counter()
    nodes = nodes_from_label_array(labels, split_islands=split_islands).nodes
    fast = time.perf_counter() - started
    if not split_islands:
        expected = _reference_split(labels)
        assert [(n.label_value, n.offset) for n in nodes] == [(v, o) for v, o, _ in expected]
        assert all(np.array_equal(n.mask, m) for n, (_, _, m) in zip(nodes, expected, strict=True))
        started = time.perf_counter()
        _reference_split(labels)
        assert fast < time.perf_counter() - started
    else:
        assert len(nodes) == 80 and all(n.mask.any() for n in nodes)
        rebuilt = np.zeros_like(labels)
        for n in nodes:
            rebuilt[n.slices()][n.mask] = n.label_value
        assert np.array_equal(rebuilt, labels)


def test_labels_lost_on_the_image_grid_are_named(phantom_files, tmp_path):
    image = sitk.ReadImage(str(phantom_files.image))
    labels = sitk.ReadImage(str(phantom_files.labelmap))
    array = sitk.GetArrayFromImage(labels)
    array[1, 100, 100] = 20  # a one-voxel label on slice 1
    shifted = sitk.GetImageFromArray(array)
    shifted.CopyInformation(labels)
    origin = list(labels.GetOrigin())
    origin[2] -= 2.0 * labels.GetSpacing()[2]  # two slices below: slice 1 falls outside the image
    shifted.SetOrigin(origin)
    path = tmp_path / "shifted.nrrd"
    sitk.WriteImage(shifted, str(path))
    result = read_segmentation(path, image)
    assert "Label_20" in result.skipped and result.reasons["Label_20"] == LOST_ON_GRID
    assert len(result.nodes) + len(result.skipped) == 8


def _seg(phantom_files, tmp_path, edit):
    labels = sitk.ReadImage(str(phantom_files.labelmap))
    names = [f"Node {v}" for v in range(1, 8)]
    path = tmp_path / "odd.seg.nrrd"
    labelmap_to_seg_nrrd(labels, names, path)
    image = sitk.ReadImage(str(path))
    edit(image)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def test_seg_nrrd_oddities_never_drop_or_double_nodes_silently(phantom_files, tmp_path):
    image = sitk.ReadImage(str(phantom_files.image))

    def undeclared(seg):  # the last segment's header is removed: its voxels are still in the file
        for key in [k for k in seg.GetMetaDataKeys() if k.startswith("Segment6_")]:
            seg.EraseMetaData(key)
    result = read_segmentation(_seg(phantom_files, tmp_path, undeclared), image)
    assert len(result.nodes) == 6 and result.skipped == ["Label_7 (layer 0)"]
    assert "no segment declares it" in result.reasons["Label_7 (layer 0)"]

    result = read_segmentation(_seg(phantom_files, tmp_path, lambda s: s.SetMetaData("Segment2_Layer", "3")), image)
    assert "Node 3" in result.skipped and "layer the file does not have" in result.reasons["Node 3"]
    assert "Label_3 (layer 0)" in result.skipped  # its voxels, now undeclared in layer 0, are named too

    with pytest.raises(InputError, match="share label value 2"):
        read_segmentation(_seg(phantom_files, tmp_path, lambda s: s.SetMetaData("Segment0_LabelValue", "2")), image)
    with pytest.raises(InputError, match="label value 0"):
        read_segmentation(_seg(phantom_files, tmp_path, lambda s: s.SetMetaData("Segment0_LabelValue", "0")), image)


def test_measure_names_every_skipped_node_with_its_reason(phantom_files, tmp_path, capsys):
    def undeclared(seg):
        for key in [k for k in seg.GetMetaDataKeys() if k.startswith("Segment6_")]:
            seg.EraseMetaData(key)
    path = _seg(phantom_files, tmp_path, undeclared)
    assert main(["measure", str(phantom_files.image), str(path), "--out", str(tmp_path / "m.csv")]) == 0
    err = capsys.readouterr().err
    assert "Label_7 (layer 0)' is drawn in the file but no segment declares it" in err


def test_dicom_series_with_a_missing_slice_is_refused(phantom_files, tmp_path, write_dicom_series, capsys):
    image = sitk.ReadImage(str(phantom_files.image))
    folder = write_dicom_series(image, tmp_path / "series")
    assert read_image(folder).GetSize() == image.GetSize()  # the whole series reads
    (folder / "slice010.dcm").unlink()
    with pytest.raises(InputError, match="not evenly spaced") as refused:
        read_image(folder)
    assert "\n" not in str(refused.value)
    _one_line(capsys, ["measure", str(folder), str(phantom_files.labelmap), "--out", str(tmp_path / "m.csv")],
              "a missing slice?")


@pytest.mark.parametrize("value", [0, 1000])
def test_constant_images_are_refused(phantom_files, tmp_path, capsys, value):
    image = sitk.ReadImage(str(phantom_files.image))
    constant = sitk.GetImageFromArray(np.full(sitk.GetArrayFromImage(image).shape, value, np.int16))
    constant.CopyInformation(image)
    path = tmp_path / "constant.nrrd"
    sitk.WriteImage(constant, str(path))
    _one_line(capsys, ["measure", str(path), str(phantom_files.labelmap), "--out", str(tmp_path / "m.csv")],
              "is a constant image")


def test_truncated_nrrd_says_why(phantom_files, tmp_path, capsys):
    path = tmp_path / "truncated.nrrd"
    path.write_bytes(phantom_files.image.read_bytes()[:3000])
    err = _one_line(capsys, ["measure", str(path), str(phantom_files.labelmap), "--out", str(tmp_path / "m.csv")],
                    "truncated.nrrd: cannot be read as an image")
    assert "expected" in err and "bytes" in err and "0x" not in err


def test_non_utf8_manifest_is_one_line(tmp_path):
    path = tmp_path / "cohort.csv"
    path.write_bytes("patient_id,image,segmentation\nJos\xe9,a.nrrd,a.seg.nrrd\n".encode("latin-1"))
    with pytest.raises(InputError, match="is not UTF-8"):
        read_manifest(path)
    path.write_bytes(b"patient_id,image,segmentation\x00\n")
    with pytest.raises(InputError, match="NUL"):
        read_manifest(path)


@pytest.mark.parametrize("options, fragment", [
    (["--extra-nodes", "1000"], "--extra-nodes"),
    (["--seed", "-1"], "--seed"),
    (["--spacing", "nan", "0.8", "3.3"], "--spacing"),
    (["--size", "64", "64", "8"], "touch the border"),
])
def test_phantom_options_are_checked(tmp_path, capsys, options, fragment):
    _one_line(capsys, ["phantom", str(tmp_path / "ph"), *options], fragment)
    assert not (tmp_path / "ph").exists()


def test_a_two_patient_manifest_is_one_line(phantom_files, tmp_path, capsys):
    manifest = tmp_path / "two.csv"
    manifest.write_text("patient_id,image,segmentation,n_stage\n"
                        f"p1,{phantom_files.image},{phantom_files.segmentation},N0\n"
                        f"p2,{phantom_files.image},{phantom_files.labelmap},N1\n")
    assert main(["preset", "--manifest", str(manifest), "--out", str(tmp_path / "preset.json")]) == 0
    capsys.readouterr()  # the preset's progress bar
    _one_line(capsys, ["train", "--manifest", str(manifest), "--preset", str(tmp_path / "preset.json"), "--quick",
                       "--no-progress", "--out", str(tmp_path / "model")], "training needs at least 2 of each")
    assert not (tmp_path / "model").exists()
