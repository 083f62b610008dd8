"""Reading images and segmentations through real SimpleITK / Slicer I/O."""

from __future__ import annotations

import locale

import numpy as np
import pytest
import SimpleITK as sitk

from LNMStagingLib.errors import InputError
from LNMStagingLib.imaging.case import load_case
from LNMStagingLib.imaging.presets import BUILTIN_PRESETS, Preset, get_preset
from LNMStagingLib.io.cohort import read_manifest
from LNMStagingLib.io.image import read_image, read_modality
from LNMStagingLib.io.segmentation import read_segmentation


def _full_masks(nodes, shape):
    masks = []
    for node in nodes:
        full = np.zeros(shape, bool)
        full[node.slices()] = node.mask
        masks.append(full)
    return masks


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
def test_formats_read_the_same_voxels(phantom_files, tmp_path, suffix):
    reference = sitk.ReadImage(str(phantom_files.image))
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(reference, str(path))
    image = read_image(path)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))
    assert np.allclose(image.GetSpacing(), reference.GetSpacing())
    assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)


def test_dicom_series_folder(phantom_files, tmp_path, write_dicom_series):
    encoding = locale.getpreferredencoding(False)
    reference = sitk.ReadImage(str(phantom_files.image))
    folder = write_dicom_series(reference, tmp_path / "dicom", "MR")
    image = read_image(folder)
    assert image.GetSize() == reference.GetSize()
    assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))
    assert read_modality(folder) == "MR"
    assert locale.getpreferredencoding(False) == encoding


def test_labelmap_and_seg_nrrd_give_the_same_nodes(phantom_files):
    by_labels = load_case(phantom_files.image, phantom_files.labelmap)
    by_segments = load_case(phantom_files.image, phantom_files.segmentation)
    assert len(by_labels.nodes) == len(by_segments.nodes) == 7
    shape = by_labels.image.array.shape
    for a, b in zip(_full_masks(by_labels.nodes, shape), _full_masks(by_segments.nodes, shape), strict=True):
        assert np.array_equal(a, b)
    assert by_segments.nodes[0].segment_name == "Node small round"
    assert by_labels.nodes[0].segment_name == "Label_1"


def test_segmentation_on_another_grid_is_resampled(phantom_files, tmp_path):
    image = sitk.ReadImage(str(phantom_files.image))
    labels = sitk.ReadImage(str(phantom_files.labelmap))
    # crop and offset: the segmentation covers only part of the image (as Slicer writes cropped .seg.nrrd)
    cropped = labels[30:180, 20:180, 2:22]
    path = tmp_path / "cropped.nrrd"
    sitk.WriteImage(cropped, str(path))
    resampled = read_segmentation(path, image)
    direct = read_segmentation(phantom_files.labelmap, image)
    shape = sitk.GetArrayViewFromImage(image).shape
    for a, b in zip(_full_masks(resampled.nodes, shape), _full_masks(direct.nodes, shape), strict=True):
        assert np.array_equal(a, b)
    # a finer grid: nearest neighbour back onto the image grid keeps the node's voxels
    fine = sitk.Resample(labels, [s * 2 for s in labels.GetSize()[:2]] + [labels.GetSize()[2]], sitk.Transform(),
                         sitk.sitkNearestNeighbor, labels.GetOrigin(), [labels.GetSpacing()[0] / 2, labels.GetSpacing()[1] / 2, labels.GetSpacing()[2]],
                         labels.GetDirection(), 0, labels.GetPixelID())
    fine.SetOrigin([o - s / 4 for o, s in zip(labels.GetOrigin()[:2], labels.GetSpacing()[:2], strict=True)] + [labels.GetOrigin()[2]])
    path = tmp_path / "fine.nii.gz"
    sitk.WriteImage(fine, str(path))
    again = read_segmentation(path, image)
    for a, b in zip(_full_masks(again.nodes, shape), _full_masks(direct.nodes, shape), strict=True):
        assert np.count_nonzero(a ^ b) <= 0.1 * np.count_nonzero(b)


def test_segmentation_outside_the_image_is_refused(phantom_files, tmp_path):
    labels = sitk.ReadImage(str(phantom_files.labelmap))
    labels.SetOrigin([o + 1000 for o in labels.GetOrigin()])
    path = tmp_path / "far.nrrd"
    sitk.WriteImage(labels, str(path))
    with pytest.raises(InputError, match="does not overlap the image"):
        read_segmentation(path, sitk.ReadImage(str(phantom_files.image)))


def test_split_islands(phantom_files, tmp_path):
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_files.labelmap)))
    merged = (labels > 0).astype(np.uint8)  # one label for every node
    image = sitk.ReadImage(str(phantom_files.labelmap))
    merged_image = sitk.GetImageFromArray(merged)
    merged_image.CopyInformation(image)
    path = tmp_path / "merged.nrrd"
    sitk.WriteImage(merged_image, str(path))
    assert len(read_segmentation(path, image).nodes) == 1
    islands = read_segmentation(path, image, split_islands=True).nodes
    assert len(islands) == 7
    assert [n.segment_name for n in islands[:2]] == ["Label_1_1", "Label_1_2"]
    sizes = [n.voxel_count for n in islands]
    assert sizes == sorted(sizes, reverse=True)


def test_layered_seg_nrrd_from_slicer_with_overlapping_segments(phantom_files, tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is needed to write a layered .seg.nrrd")
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    volumes = slicer.vtkSlicerVolumesLogic()
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    for logic, name in ((volumes, "Volumes"), (segmentations, "Segmentations")):
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
    labelmap = volumes.AddArchetypeVolume(str(phantom_files.labelmap), "labels", 1)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentations.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    labels = slicer.util.arrayFromVolume(labelmap)
    overlap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    import vtk

    matrix = vtk.vtkMatrix4x4()
    labelmap.GetIJKToRASMatrix(matrix)
    overlap.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(overlap, (((labels == 2) | (labels == 4)) * 5).astype(np.uint8))
    segmentations.ImportLabelmapToSegmentationNode(overlap, segmentation)
    assert segmentation.GetSegmentation().GetNumberOfLayers() == 2
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    path = tmp_path / "layers.seg.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(segmentation)
    result = read_segmentation(path, sitk.ReadImage(str(phantom_files.image)))
    assert len(result.nodes) == 8
    masks = _full_masks(result.nodes, labels.shape)
    assert np.array_equal(masks[7], (labels == 2) | (labels == 4))
    assert all(np.array_equal(masks[v - 1], labels == v) for v in range(1, 8))


def test_empty_segments_of_a_seg_nrrd_are_skipped_and_reported(phantom_files, tmp_path):
    from LNMStagingLib.synthetic.phantom import labelmap_to_seg_nrrd

    labels = sitk.ReadImage(str(phantom_files.labelmap))
    path = tmp_path / "with_empty.seg.nrrd"
    names = [f"n{i}" for i in range(1, 8)] + ["forgotten"]
    labelmap_to_seg_nrrd(labels, names, path)
    result = read_segmentation(path, sitk.ReadImage(str(phantom_files.image)))
    assert len(result.nodes) == 7
    assert result.skipped == ["forgotten"]


def test_presets_round_trip_and_refuse_bad_json():
    for name, preset in BUILTIN_PRESETS.items():
        again = Preset.from_json(preset.to_json())
        assert again == get_preset(name)
    with pytest.raises(InputError, match="unknown intensity step"):
        Preset.from_dict({"name": "x", "modality": "CT", "intensity": [{"type": "exec"}]})
    with pytest.raises(InputError, match="unknown field"):
        Preset.from_dict({"name": "x", "modality": "CT", "code": "import os"})
    with pytest.raises(InputError, match="not valid JSON"):
        Preset.from_json("{", "bundle/preset.json")


def test_intensity_presets():
    ct = get_preset("ct").apply_intensity(np.array([[[-2000.0, -1000.0, -300.0, 400.0, 3000.0]]]))
    assert np.allclose(ct, [[[0.0, 0.0, 0.5, 1.0, 1.0]]])
    lidc = get_preset("lidc-png").apply_intensity(np.array([[[0.0, 51.0, 255.0]]]))
    assert np.allclose(lidc, [[[0.0, 0.2, 1.0]]])
    from LNMStagingLib.imaging.presets import train_landmarks

    rng = np.random.default_rng(0)
    training = [rng.gamma(2.0 + i, 40.0, (8, 32, 32)) for i in range(3)]
    preset = get_preset("mri-t2")
    preset.intensity[0]["landmarks"] = train_landmarks(training)
    out = preset.apply_intensity(training[0])
    assert out.min() >= 0 and out.max() <= 1 and out.std() > 0.05


def test_manifest(tmp_path):
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "patient_id,image,segmentation,age,sex,t_stage,n_stage\n"
        "p1,a.nrrd,a.seg.nrrd,64,M,T3,N1b\n"
        "p2,b.nrrd,b.seg.nrrd,,F,pT2,N0\n"
        "p3,c.nrrd,c.seg.nrrd,70,,,\n"
    )
    entries = read_manifest(manifest)
    assert [e.label for e in entries] == [1, 0, None]
    assert entries[1].clinical.age is None and entries[1].clinical.missing == ["age"]
    assert entries[0].clinical.t_stage == "T3" and entries[1].clinical.t_stage == "T2"
    assert entries[0].image == tmp_path / "a.nrrd"
    manifest.write_text("patient_id,image,segmentation,t_stage\np1,a,b,T7\n")
    with pytest.raises(InputError, match="line 2"):
        read_manifest(manifest)
    manifest.write_text("patient,image\n")
    with pytest.raises(InputError, match="lacks column"):
        read_manifest(manifest)
    manifest.write_text("patient_id,image,segmentation\np1,a,b\np2,a,b,extra\n")
    with pytest.raises(InputError, match="line 3: more fields than the header"):
        read_manifest(manifest)
