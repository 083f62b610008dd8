"""The patient bag: which patches enter it does not depend on the label numbers (a geometric tie-break for equal
areas), and the nodes left out of it are listed with the reason in report.json and report.html."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from LNMStagingLib.cli.main import main

# sixteen equal squares (9 x 9 voxels on one slice: 16 patches of equal area, one more than the bag holds)
CORNERS = [(20 + 40 * r, 20 + 40 * c) for r in range(4) for c in range(4)]


def _tied_labelmap(reference: sitk.Image, numbering: list[int]) -> sitk.Image:
    array = np.zeros(sitk.GetArrayFromImage(reference).shape, dtype=np.uint16)
    for label, (row, col) in zip(numbering, CORNERS, strict=True):
        array[10, row:row + 9, col:col + 9] = label
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(reference)
    return out


def _predict(phantom_files, bundle_dir, labels: sitk.Image, folder) -> dict:
    folder.mkdir()
    sitk.WriteImage(labels, str(folder / "labels.nrrd"))
    assert main(["predict", str(phantom_files.image), str(folder / "labels.nrrd"), "--model", str(bundle_dir),
                 "--quiet", "--out", str(folder / "out")]) == 0
    return json.loads((folder / "out" / "report.json").read_text())


def test_renumbering_tied_nodes_changes_nothing_and_left_out_nodes_are_listed(phantom_files, tiny_bundle_dir,
                                                                              tmp_path):
    reference = sitk.ReadImage(str(phantom_files.labelmap))
    first = _predict(phantom_files, tiny_bundle_dir, _tied_labelmap(reference, list(range(1, 17))), tmp_path / "a")
    reversed_labels = list(range(16, 0, -1))
    second = _predict(phantom_files, tiny_bundle_dir, _tied_labelmap(reference, reversed_labels), tmp_path / "b")
    assert first["patient"]["probability"] == second["patient"]["probability"]
    # the same places are in the bag: label k of the first run is label 17 - k of the second
    renamed = sorted(17 - n for n in first["patient"]["nodes_in_bag"])
    assert renamed == sorted(second["patient"]["nodes_in_bag"])
    for report in (first, second):
        left_out = report["patient"]["nodes_left_out_of_bag"]
        in_bag = set(report["patient"]["nodes_in_bag"])
        assert left_out and {n["node_id"] for n in left_out} == {n["node_id"] for n in report["nodes"]} - in_bag
        assert all("patient bag" in n["reason"] for n in left_out)
    html = (tmp_path / "a" / "out" / "report.html").read_text(encoding="utf-8")
    assert "Not in the patient bag" in html and left_out[0]["segment_name"] in html
    assert '<span class="yes">yes</span></td></tr>' not in html  # "in patient bag: yes" is not a finding's red
