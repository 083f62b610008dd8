"""A real pelvic T2 MRI (ProstateX-0000, DICOM, oblique) through reading, the ``mri-t2`` preset, measuring,
patch cutting and ``predict``.

Data: ``../shared/data/pelvic-mri/ProstateX-0000-t2-tra`` (or ``$LNMSTAGING_PELVIC_DIR``); the tests skip with a
stated reason when it is absent. The scan has no node labels: the test draws small ellipsoid "nodes" (labels
only, the image is unchanged) at fixed LPS points in the mesorectal fat, with their axes along the image's
own (oblique) axes, so their in-plane sizes are known.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from LNMStagingLib.cli.main import main
from LNMStagingLib.imaging.case import Case, prepare_case
from LNMStagingLib.imaging.measure import measure_nodes
from LNMStagingLib.imaging.patches import extract_patches
from LNMStagingLib.imaging.presets import get_preset
from LNMStagingLib.io.image import read_image, read_modality
from LNMStagingLib.io.segmentation import nodes_from_label_array, number_nodes
from LNMStagingLib.io.volume import Volume

REPOSITORY = Path(__file__).resolve().parents[2]
# (label, centre LPS mm, semi-axes mm along the image's i, j, k axes): left and right of the rectum and behind
# it, in the mesorectal fat of slices 8-12
NODES = (
    (1, (17.3, 60.4, -49.6), (4.0, 3.0, 5.0)),  # 8 x 6 mm in plane, oval
    (2, (58.4, 62.2, -44.0), (3.0, 3.0, 4.5)),  # 6 mm, round
    (3, (38.4, 79.8, -43.5), (5.0, 3.5, 6.0)),  # 10 x 7 mm
)


@pytest.fixture(scope="module")
def pelvic_dir() -> Path:
    env = os.environ.get("LNMSTAGING_PELVIC_DIR")
    base = Path(env) if env else REPOSITORY.parent / "shared" / "data" / "pelvic-mri"
    folder = base / "ProstateX-0000-t2-tra"
    if not folder.is_dir() or not any(folder.glob("*.dcm")):
        pytest.skip(f"real pelvic MRI not found at {folder} (set LNMSTAGING_PELVIC_DIR); these tests need it")
    return folder


def _draw_nodes(volume: Volume) -> np.ndarray:
    """Label array (k, j, i) with one ellipsoid per entry of NODES, in mm along the image axes."""
    k, j, i = np.indices(volume.array.shape)
    index = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    lps = (volume.index_to_lps() @ index)[:3]
    labels = np.zeros(volume.array.size, np.uint8)
    for label, centre, semi in NODES:
        along = volume.direction.T @ (lps - np.asarray(centre)[:, None])  # mm along the image's own axes
        labels[np.sum((along / np.asarray(semi)[:, None]) ** 2, axis=0) <= 1.0] = label
    return labels.reshape(volume.array.shape)


@pytest.fixture(scope="module")
def pelvic_case(pelvic_dir, tmp_path_factory):
    image = read_image(pelvic_dir)
    volume = Volume.from_sitk(image)
    labels = _draw_nodes(volume)
    path = tmp_path_factory.mktemp("pelvic") / "nodes.nrrd"
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    sitk.WriteImage(label_image, str(path))
    case = Case.from_volume(volume, number_nodes(nodes_from_label_array(labels).nodes), str(pelvic_dir), str(path))
    return image, volume, case, path


def test_reads_as_one_oblique_mr_series_with_the_facts_the_phantom_hides(pelvic_dir, pelvic_case):
    image, volume, _, _ = pelvic_case
    assert read_modality(pelvic_dir) == "MR"
    assert image.GetSize() == (384, 384, 19) and image.GetNumberOfComponentsPerPixel() == 1
    assert np.allclose(image.GetSpacing(), (0.5, 0.5, 3.0), atol=1e-6)
    # oblique: the slice normal is tilted about 18.5 degrees from the scanner z axis (phantom: identity)
    tilt = np.degrees(np.arccos(abs(volume.direction[2, 2])))
    assert 18.0 < tilt < 19.0
    # slice order: index 0 is the most caudal slice and z grows with k (superior), i.e. already LPS-like
    z = [(volume.index_to_lps() @ [191.5, 191.5, k, 1])[2] for k in (0, 18)]
    assert z[1] - z[0] > 50
    # intensities: unsigned 12-bit scanner units up to about 1100, not the phantom's small int16 range
    assert volume.array.dtype == np.uint16 and volume.array.min() == 0 and 1000 < volume.array.max() < 4096


def test_mri_t2_preset_keeps_physical_positions_sizes_and_patch_centres(pelvic_case):
    _, volume, case, _ = pelvic_case
    preset = get_preset("mri-t2")
    prepared = prepare_case(case, preset, intensity=False)
    assert np.allclose(prepared.image.spacing, preset.target_spacing_mm)
    assert np.allclose(prepared.image.direction, volume.direction, atol=1e-6)  # the obliquity is kept
    half = np.asarray(preset.target_spacing_mm) / 2  # half a voxel of the preset's grid (i, j, k), mm
    measurements = {m.node_id: m for m in measure_nodes(prepared)}
    patch_set = extract_patches(prepared)
    assert len(measurements) == len(NODES)
    for label, centre, semi in NODES:
        node_id = next(n.node_id for n in prepared.nodes if n.label_value == label)
        m = measurements[node_id]
        drawn_short, drawn_long = 2 * min(semi[:2]), 2 * max(semi[:2])
        # the largest cross-section lies within half a preset slice of the centre, where the ellipsoid's
        # section is at least this fraction of the drawn one; the pixel outline adds up to a pixel or two
        shrink = np.sqrt(1 - (half[2] / semi[2]) ** 2)
        pixel = preset.target_spacing_mm[0]
        for measured, drawn in ((m.short_axis_mm, drawn_short), (m.long_axis_mm, drawn_long)):
            assert drawn * shrink - pixel <= measured <= drawn + 2 * pixel, (label, measured, drawn)
        centroid = volume.direction.T @ (np.array([m.centroid_x, m.centroid_y, m.centroid_z]) - centre)
        assert np.all(np.abs(centroid) <= half + 1e-6), (label, centroid)
        patch = patch_set.patches[patch_set.primary_index(node_id)]
        source = patch.patch_to_image @ [15.5, 15.5, 0, 1]  # continuous (i, j, k) in the DICOM image
        patch_centre = (volume.index_to_lps() @ source)[:3]
        offset = volume.direction.T @ (patch_centre - np.asarray(centre))  # mm along the image axes
        assert np.all(np.abs(offset) <= half + 1e-6), (label, offset)
        assert patch.mask[15:17, 15:17].all()  # the node fills the patch centre


@pytest.fixture(scope="module")
def mri_bundle(tmp_path_factory) -> Path:
    """A tiny real bundle with the mri-t2 preset (landmarks of the phantoms), trained in seconds on phantom cases
    (not a useful model)."""
    import csv

    from LNMStagingLib.synthetic.phantom import write_phantom

    root = tmp_path_factory.mktemp("mri_cohort")
    rows = []
    for n in range(6):
        write_phantom(root / f"p{n}", extra_nodes=n % 3, seed=n)
        rows.append({"patient_id": f"P{n}", "image": f"p{n}/image.nrrd", "segmentation": f"p{n}/segmentation.seg.nrrd",
                     "n_stage": "N1" if n % 2 else "N0"})
    with open(root / "cohort.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out, preset = root / "bundle", root / "mri-t2-phantoms.json"
    # the mri-t2 histogram landmarks are learned from the training images, as a user does for a cohort
    assert main(["preset", "--manifest", str(root / "cohort.csv"), "--out", str(preset)]) == 0
    assert main(["train", "--manifest", str(root / "cohort.csv"), "--preset", str(preset), "--out", str(out), "--epochs", "6",
                 "--no-progress", "--threads", "1"]) == 0  # 6 VAE epochs: --quick's VAE gives an all-zero Grad-CAM
    # Trained on phantoms, this fixture is rightly refused on the real MRI by the input-domain check (issue 11);
    # these tests are about geometry, so it drops its domain.json, like the tiny test bundle it records none
    # (its predictions then say that the domain was not checked).
    from LNMStagingLib.bundle.domain import DOMAIN_FILE
    from LNMStagingLib.bundle.format import write_manifest

    manifest = json.loads((out / "manifest.json").read_text())
    (out / DOMAIN_FILE).unlink()
    write_manifest(out, manifest["name"], manifest["version"])
    return out


def test_predict_on_the_dicom_series_writes_its_heatmap_on_the_dicom_grid(pelvic_dir, pelvic_case, mri_bundle, tmp_path):
    image, _, _, labels = pelvic_case
    out = tmp_path / "prediction"
    assert main(["predict", str(pelvic_dir), str(labels), "--model", str(mri_bundle), "--age", "63", "--sex", "M",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["nodes"]) == len(NODES) and 0.0 <= report["patient"]["probability"] <= 1.0
    short = sorted(node["short_axis_mm"] for node in report["nodes"])
    assert short == pytest.approx(sorted(2 * min(s[:2]) for _, _, s in NODES), abs=1.0)
    assert all("esgar" in node["criteria"] and "sets" in node["criteria"] for node in report["nodes"])
    heatmap = sitk.ReadImage(str(out / "gradcam.nrrd"))
    assert heatmap.GetSize() == image.GetSize()
    assert np.allclose(heatmap.GetSpacing(), image.GetSpacing(), atol=1e-6)
    assert np.allclose(heatmap.GetOrigin(), image.GetOrigin(), atol=1e-4)
    assert np.allclose(heatmap.GetDirection(), image.GetDirection(), atol=1e-6)
    values = sitk.GetArrayFromImage(heatmap)
    drawn = sitk.GetArrayFromImage(sitk.ReadImage(str(labels))) > 0
    assert values.max() > 0 and values[drawn].max() > 0  # the heatmap covers the drawn nodes
    near = ndimage.binary_dilation(drawn, iterations=40)  # patches reach 16 preset pixels (9.2 mm) around a node
    assert not values[~near].any()


def test_patch_maps_written_back_land_on_the_drawn_nodes(pelvic_case):
    """A map of ones on every primary patch, painted back onto the DICOM grid, covers each drawn node's
    largest cross-section and stays within the patch's reach (the oblique geometry is undone exactly)."""
    _, volume, case, _ = pelvic_case
    prepared = prepare_case(case, get_preset("mri-t2"), intensity=False)
    patch_set = extract_patches(prepared)
    primary = [patch_set.primary_index(n.node_id) for n in prepared.nodes]
    painted = patch_set.write_back(np.ones((len(primary), 32, 32), np.float32), volume.array.shape, indices=primary)
    labels = _draw_nodes(volume)
    for label, _, _ in NODES:
        drawn = labels == label
        largest = int(np.argmax(drawn.sum(axis=(1, 2))))
        assert painted[largest][drawn[largest]].min() > 0.99, label
    assert not painted[~ndimage.binary_dilation(labels > 0, iterations=40)].any()


def test_slicer_logic_puts_the_results_on_the_dicom_volume(pelvic_case, mri_bundle, tmp_path):
    """The Slicer module's path on the real oblique MRI (slicer-core; the series converted to NRRD because
    slicer-core has no DICOM reader, the modality set in the subject hierarchy as Slicer's DICOM import
    does): the child's prediction lands on that volume: one table row per drawn node, the heatmap on exactly
    the volume's IJK-to-RAS and over the drawn nodes, one placed traversal sequence per node."""
    pytest.importorskip("slicer", reason="slicer-core (Kitware's Slicer core libraries) is not installed")
    import sys

    module_dir = REPOSITORY / "LNMStaging"
    for path in (module_dir, module_dir / "Testing" / "Python"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import LNMStagingScenarios as scenarios
    import slicer
    from LNMStagingSlicerLib.logic import ClinicalInputs, LNMStagingLogic, PredictionRequest

    image, _, _, labels = pelvic_case
    volume_path = tmp_path / "t2.nrrd"
    sitk.WriteImage(image, str(volume_path))
    context = scenarios.makeHeadlessScene(python=sys.executable)
    scene = context.scene
    volume_node = scenarios.loadVolume(scene, volume_path, "ProstateX-0000 T2")
    segmentation_node = scenarios.segmentationFromLabelmap(scene, scenarios.loadLabelmap(scene, labels), "drawn nodes")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = sh.GetItemByDataNode(volume_node) or sh.CreateItem(sh.GetSceneItemID(), volume_node)
    sh.SetItemAttribute(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName(), "MR")
    request = PredictionRequest(ClinicalInputs(63, "M", None), modelPath=str(mri_bundle), python=sys.executable,
                                workRoot=tmp_path)
    run = LNMStagingLogic().startPrediction(volume_node, segmentation_node, request)
    assert "--modality" in run.child.command and "MR" in run.child.command
    exported = run.exported
    run.wait(timeout=600)
    nodes = scenarios.libraryNodes(exported)
    outputs = run.finish()
    assert outputs.tableNode.GetNumberOfRows() == len(NODES) == len(nodes)
    dims = volume_node.GetImageData().GetDimensions()
    assert dims == image.GetSize()
    a, b = vtk_matrix(outputs.heatmapNode), vtk_matrix(volume_node)
    assert np.allclose(a, b, atol=1e-9)
    heat = slicer.util.arrayFromVolume(outputs.heatmapNode)
    drawn = sitk.GetArrayFromImage(sitk.ReadImage(str(labels))) > 0
    assert heat.max() > 0 and heat[drawn].max() > 0
    assert len(outputs.sequenceNodes) == len(NODES)
    # The mri-t2 preset resamples to 3.3 mm slices: the patch lies on its grid's largest slice of the node.
    slice_mm = get_preset("mri-t2").target_spacing_mm[2]
    scenarios.checkTraversalGeometry(exported, outputs, nodes, planeToleranceMm=slice_mm)


def vtk_matrix(volume_node) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)
