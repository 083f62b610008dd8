"""Test scenarios of the LNMStaging module, shared by the pytest suite (headless, ``slicer-core``) and the
module's self-test inside 3D Slicer (``LNMStagingTest``). One copy: each scenario takes a ``SceneContext``
and a scratch folder, and raises ``AssertionError`` (or ``Skip``) itself.

Like LNMStagingLogic, this file uses no Slicer application API: files are read through storage nodes and
the segmentations logic's static methods, so the same code runs in both places.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from LNMStagingLogic import (
    MODEL_CONTEXT_COLUMN,
    OUTPUT_ATTRIBUTE,
    PROBABILITY_TAG,
    RAS_TO_LPS,
    LNMStagingLogic,
    PreparedInputs,
    predictionLibraryAvailable,
)

from LNMStagingLib.errors import InputError
from LNMStagingLib.imageio import read_image
from LNMStagingLib.segmentation import read_segmentation
from LNMStagingLib.volume import Volume

PREDICTION_MISSING = "prediction library not available yet"
TRAVERSAL_FRAMES = 7
STAND_IN_PATCH = (32, 28.8)  # the stand-in result's patches: 32 x 32 pixels of 0.9 mm
STAND_IN_CONTEXT = ("model stand-in 0; trained on: nothing (a test stand-in); intended use: software tests. "
                    "Research use only, not a medical device.")


class Skip(Exception):
    """A scenario that cannot run here (the reason is the message); pytest turns it into a skip."""


@dataclass
class SceneContext:
    """A scene plus the logic objects registered on it (kept referenced: VTK would free them otherwise)."""

    scene: Any
    logics: dict[str, Any]


def makeHeadlessScene() -> SceneContext:
    """A scene with the module logics Slicer would register, on ``slicer-core`` (no application)."""
    scene = slicer.vtkMRMLScene()
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    colors = appLogic.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    appLogic.SetModuleLogic("Colors", colors)
    logics: dict[str, Any] = {"Application": appLogic, "Colors": colors}
    for name, logicClass in (
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Sequences", slicer.vtkSlicerSequencesLogic),
    ):
        logic = logicClass()
        logic.SetMRMLApplicationLogic(appLogic)
        logic.SetMRMLScene(scene)
        appLogic.SetModuleLogic(name, logic)
        logics[name] = logic
    return SceneContext(scene, logics)


# ---------------------------------------------------------------------------------------------- test data


@dataclass
class CaseFiles:
    image: Path
    labelmap: Path
    segnrrd: Path


def _syntheticCase(folder: Path) -> CaseFiles:
    """A small oblique MRI-like volume with three nodes; node 3 has two islands. The grid is rotated and
    anisotropic so that RAS/LPS or axis-order slips show."""
    rng = np.random.default_rng(5)
    shape = (12, 48, 40)  # (k, j, i)
    labels = np.zeros(shape, np.uint8)
    kk, jj, ii = np.indices(shape)
    for label, (k, j, i), (rk, rj, ri) in (
        (1, (4, 14, 12), (2.2, 5, 6)),
        (2, (6, 30, 26), (2.5, 7, 5)),
        (3, (8, 12, 30), (1.6, 3, 3)),
        (3, (3, 38, 8), (1.6, 3, 3)),
    ):
        labels[((kk - k) / rk) ** 2 + ((jj - j) / rj) ** 2 + ((ii - i) / ri) ** 2 <= 1.0] = label
    image = rng.normal(100.0, 10.0, shape) + 150.0 * (labels > 0)
    angle = math.radians(20.0)
    direction = np.array([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    volume = Volume(image.astype(np.float32), (0.7, 0.8, 3.0), (10.0, -20.0, 30.0), direction)
    files = CaseFiles(folder / "image.nrrd", folder / "labels.nrrd", folder / "nodes.seg.nrrd")
    sitk.WriteImage(volume.to_sitk(), str(files.image))
    sitk.WriteImage(volume.with_array(labels).to_sitk(), str(files.labelmap), True)
    _writeSegNrrdWithSlicer(files.labelmap, files.segnrrd)
    return files


def _writeSegNrrdWithSlicer(labelmapPath: Path, segnrrdPath: Path) -> None:
    # A private scene: the .seg.nrrd is written exactly as Slicer's Save would write it.
    scene = slicer.vtkMRMLScene()
    labelmapNode = loadLabelmap(scene, labelmapPath)
    segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nodes")
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmapNode, segmentationNode)
    for index in range(segmentationNode.GetSegmentation().GetNumberOfSegments()):
        segmentationNode.GetSegmentation().GetNthSegment(index).SetName(f"Node {index + 1}")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(segnrrdPath))
    if not storage.WriteData(segmentationNode):
        raise RuntimeError(f"cannot write {segnrrdPath}")


def writeTestCase(folder: Path, oblique: bool = False) -> CaseFiles:
    """The library's phantom case (axis-aligned), or the small oblique synthetic one."""
    folder.mkdir(parents=True, exist_ok=True)
    if oblique:
        return _syntheticCase(folder)
    try:
        from LNMStagingLib.phantom import write_phantom
    except ImportError:
        return _syntheticCase(folder)
    phantom = write_phantom(folder)
    return CaseFiles(Path(phantom.image), Path(phantom.labelmap), Path(phantom.segmentation))


def loadVolume(scene: Any, path: Path, name: str = "image") -> Any:
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    _read(scene, node, slicer.vtkMRMLVolumeArchetypeStorageNode(), path)
    return node


def loadLabelmap(scene: Any, path: Path, name: str = "labels") -> Any:
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    _read(scene, node, slicer.vtkMRMLVolumeArchetypeStorageNode(), path)
    return node


def loadSegmentation(scene: Any, path: Path, name: str = "segmentation") -> Any:
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    _read(scene, node, slicer.vtkMRMLSegmentationStorageNode(), path)
    return node


def _read(scene: Any, node: Any, storage: Any, path: Path) -> None:
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        raise AssertionError(f"{path}: the MRML storage node cannot read it")


def segmentationFromLabelmap(scene: Any, labelmapNode: Any, name: str = "nodes") -> Any:
    segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmapNode, segmentationNode):
        raise AssertionError("labelmap import into the segmentation failed")
    return segmentationNode


def fullMask(region: Any, shape: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[region.slices()] = region.mask
    return mask


def assertSameNodes(nodes: list, expected: list, shape: tuple[int, int, int], compareNames: bool = True) -> None:
    assert len(nodes) == len(expected), f"{len(nodes)} nodes from the scene, {len(expected)} from the files"
    for node, reference in zip(nodes, expected, strict=True):
        assert node.node_id == reference.node_id, (node.node_id, reference.node_id)
        if compareNames:
            assert node.segment_name == reference.segment_name, (node.segment_name, reference.segment_name)
        assert np.array_equal(fullMask(node, shape), fullMask(reference, shape)), f"node {node.node_id} mask differs"


# ---------------------------------------------------------------------------------------------- scenarios


def scenarioVolumeRoundTrip(context: SceneContext, folder: Path) -> None:
    """Volume from a node equals the library's reading of the same file (phantom and an oblique grid)."""
    logic = LNMStagingLogic()
    for oblique in (False, True):
        files = writeTestCase(folder / ("oblique" if oblique else "phantom"), oblique)
        volume = logic.volumeFromNode(loadVolume(context.scene, files.image))
        expected = Volume.from_sitk(read_image(files.image))
        assert volume.array.shape == expected.array.shape, (volume.array.shape, expected.array.shape)
        assert np.array_equal(volume.array, expected.array), "voxel values differ"
        assert np.allclose(volume.spacing, expected.spacing, atol=1e-5), (volume.spacing, expected.spacing)
        assert np.allclose(volume.origin, expected.origin, atol=1e-4), (volume.origin, expected.origin)
        assert np.allclose(volume.direction, expected.direction, atol=1e-5), (volume.direction, expected.direction)


def scenarioSegmentationFromLabelmap(context: SceneContext, folder: Path) -> None:
    files = writeTestCase(folder)
    volumeNode = loadVolume(context.scene, files.image)
    segmentationNode = segmentationFromLabelmap(context.scene, loadLabelmap(context.scene, files.labelmap))
    reference = read_image(files.image)
    logic = LNMStagingLogic()
    for splitIslands in (False, True):
        nodes, skipped, segmentIds = logic.nodeRegionsFromSegmentation(segmentationNode, volumeNode, splitIslands)
        expected = read_segmentation(files.labelmap, reference, split_islands=splitIslands)
        # Slicer names imported labels after its colour table, the library "Label_<n>": compare masks.
        assertSameNodes(nodes, expected.nodes, sitk.GetArrayViewFromImage(reference).shape, compareNames=False)
        assert skipped == [], skipped
        assert set(segmentIds) == {node.node_id for node in nodes}


def scenarioSegmentationFromSegNrrd(context: SceneContext, folder: Path) -> None:
    files = writeTestCase(folder)
    volumeNode = loadVolume(context.scene, files.image)
    segmentationNode = loadSegmentation(context.scene, files.segnrrd)
    reference = read_image(files.image)
    logic = LNMStagingLogic()
    for splitIslands in (False, True):
        nodes, skipped, _ = logic.nodeRegionsFromSegmentation(segmentationNode, volumeNode, splitIslands)
        expected = read_segmentation(files.segnrrd, reference, split_islands=splitIslands)
        assertSameNodes(nodes, expected.nodes, sitk.GetArrayViewFromImage(reference).shape)
        assert skipped == expected.skipped, (skipped, expected.skipped)


def scenarioSegmentationOtherGeometry(context: SceneContext, folder: Path) -> None:
    """A segmentation on a finer, shifted grid is resampled onto the volume like the library does."""
    files = writeTestCase(folder)
    reference = read_image(files.image)
    labels = sitk.ReadImage(str(files.labelmap))
    finer = sitk.Image([2 * s + 3 for s in labels.GetSize()[:2]] + [labels.GetSize()[2]], labels.GetPixelID())
    finer.SetSpacing([s / 2 for s in labels.GetSpacing()[:2]] + [labels.GetSpacing()[2]])
    # Shifted by 0.24 of the volume's voxel in-plane: every volume voxel centre then lies 0.48 of a finer
    # voxel from its nearest neighbour, never half-way, so VTK's and ITK's nearest-neighbour agree.
    direction = np.array(labels.GetDirection()).reshape(3, 3)
    offset = np.array(labels.GetSpacing()) * np.array([-0.24, -0.24, 0.0])
    finer.SetOrigin(tuple(np.array(labels.GetOrigin()) + direction @ offset))
    finer.SetDirection(labels.GetDirection())
    finer = sitk.Resample(labels, finer, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    finerPath = folder / "labels_finer.nrrd"
    sitk.WriteImage(finer, str(finerPath), True)

    volumeNode = loadVolume(context.scene, files.image)
    segmentationNode = segmentationFromLabelmap(context.scene, loadLabelmap(context.scene, finerPath))
    nodes, _, _ = LNMStagingLogic().nodeRegionsFromSegmentation(segmentationNode, volumeNode)
    expected = read_segmentation(finerPath, reference)
    assertSameNodes(nodes, expected.nodes, sitk.GetArrayViewFromImage(reference).shape, compareNames=False)


def scenarioEmptySegmentSkipped(context: SceneContext, folder: Path) -> None:
    files = writeTestCase(folder)
    volumeNode = loadVolume(context.scene, files.image)
    segmentationNode = loadSegmentation(context.scene, files.segnrrd)
    segmentation = segmentationNode.GetSegmentation()
    count = segmentation.GetNumberOfSegments()
    segmentation.AddEmptySegment("empty", "Empty node")
    logic = LNMStagingLogic()
    nodes, skipped, _ = logic.nodeRegionsFromSegmentation(segmentationNode, volumeNode)
    assert skipped == ["Empty node"], skipped
    assert len(nodes) == count, (len(nodes), count)
    prepared = logic.prepareInputs(volumeNode, segmentationNode)
    assert "Empty node" in prepared.skippedMessage

    onlyEmpty = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "only empty")
    onlyEmpty.GetSegmentation().AddEmptySegment("e1", "e1")
    _expectInputError(lambda: logic.nodeRegionsFromSegmentation(onlyEmpty, volumeNode), "no labelled voxel")
    _expectInputError(lambda: logic.nodeRegionsFromSegmentation(None, volumeNode), "Select a segmentation")
    _expectInputError(lambda: logic.volumeFromNode(None), "Select an input volume")
    labelmapNode = loadLabelmap(context.scene, files.labelmap)
    _expectInputError(lambda: logic.volumeFromNode(labelmapNode), "labelmap")


def scenarioTransforms(context: SceneContext, folder: Path) -> None:
    """Linear parent transforms are applied (node untouched); non-linear ones are refused with the fix."""
    files = writeTestCase(folder)
    scene = context.scene
    volumeNode = loadVolume(scene, files.image)
    segmentationNode = loadSegmentation(scene, files.segnrrd)
    logic = LNMStagingLogic()
    before = logic.volumeFromNode(volumeNode)
    expectedNodes, _, _ = logic.nodeRegionsFromSegmentation(segmentationNode, volumeNode)

    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 12.5)  # +12.5 mm towards Right = -12.5 mm in LPS x
    transform.SetMatrixTransformToParent(matrix)
    volumeNode.SetAndObserveTransformNodeID(transform.GetID())
    segmentationNode.SetAndObserveTransformNodeID(transform.GetID())
    after = logic.volumeFromNode(volumeNode)
    assert np.allclose(np.array(after.origin) - np.array(before.origin), [-12.5, 0.0, 0.0], atol=1e-6), (before.origin, after.origin)
    assert np.array_equal(after.array, before.array)
    assert volumeNode.GetParentTransformNode() is transform, "the input volume must not be hardened"
    # Both under the same transform: the nodes stay where they were on the image grid.
    nodes, _, _ = logic.nodeRegionsFromSegmentation(segmentationNode, volumeNode)
    assertSameNodes(nodes, expectedNodes, before.array.shape)

    # The segmentation moved away from the image: said, not silently empty.
    away = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "away")
    farMatrix = vtk.vtkMatrix4x4()
    farMatrix.SetElement(2, 3, 5000.0)
    away.SetMatrixTransformToParent(farMatrix)
    segmentationNode.SetAndObserveTransformNodeID(away.GetID())
    _expectInputError(lambda: logic.nodeRegionsFromSegmentation(segmentationNode, volumeNode), "does not overlap")

    warp = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    volumeNode.SetAndObserveTransformNodeID(warp.GetID())
    _expectInputError(lambda: logic.volumeFromNode(volumeNode), "Harden transform")


def _expectInputError(call: Callable[[], Any], fragment: str) -> None:
    try:
        call()
    except InputError as error:
        assert fragment in str(error), f"message {str(error)!r} lacks {fragment!r}"
        return
    raise AssertionError(f"no InputError (expected one mentioning {fragment!r})")


@dataclass
class StandInNodePatch:
    """LNMStagingLib's NodePatch where the prediction library (torch) is missing: the same fields the module
    reads and the same resizing of ``patch_to_image`` (pixel centres as in ``NodePatch.resized_mapping``)."""

    image: np.ndarray
    mask: np.ndarray
    slice_index: int
    pixel_mm: float
    patch_to_image: np.ndarray

    def frame_to_image(self, frame_shape: tuple[int, ...]) -> np.ndarray:
        scale = np.eye(4)
        for axis, (old, new) in enumerate(zip(self.image.shape[::-1], tuple(frame_shape)[-2:][::-1], strict=True)):
            scale[axis, axis], scale[axis, 3] = old / new, (old / new - 1.0) / 2.0
        return self.patch_to_image @ scale


def libraryNodePatches(prepared: PreparedInputs) -> dict[int, Any]:
    """Each node's primary patch cut by the library itself (canonical LPS orientation, patch sampling) as the
    prediction reports it, so that the stand-in result places frames exactly as a real one."""
    from LNMStagingLib.case import Case, prepare_case
    from LNMStagingLib.patches import PatchConfig, extract_patches

    try:
        from LNMStagingLib.prediction.results import NodePatch
    except ImportError:  # no torch here: the stand-in
        NodePatch = StandInNodePatch
    size, fovMm = STAND_IN_PATCH
    patchSet = extract_patches(prepare_case(Case.from_volume(prepared.volume, prepared.nodes), None), PatchConfig(size, fovMm))
    return {patch.node_id: NodePatch(patch.image, patch.mask, patch.slice_index, fovMm / size, patch.patch_to_image)
            for patch in patchSet.patches if patch.is_primary}


def fakePredictionResult(prepared: PreparedInputs, frameSize: int = 32) -> SimpleNamespace:
    """A stand-in with the fields of LNMStagingLib's PredictionResult that the module reads, to test the
    scene outputs without a model (the real result goes through the same checks in scenarioPredict). The
    node patches are the library's own; ``frameSize`` other than the patch size exercises the resizing."""
    shape = prepared.volume.array.shape
    heatmap = np.zeros(shape, np.float32)
    rows, traversals = [], {}
    for index, region in enumerate(prepared.nodes):
        probability = (index + 1) / (len(prepared.nodes) + 1)
        heatmap[region.slices()][region.mask] = probability
        esgar = {"suspicious": index % 2 == 1, "round": True, "irregular_border": index % 3 == 0, "heterogeneous": False}
        rows.append(SimpleNamespace(
            node_id=region.node_id, segment_name=region.segment_name, probability=probability, std=0.05,
            short_axis_mm=4.0 + index, long_axis_mm=6.0 + index, axis_ratio=0.7, convexity=0.95, compactness=1.1,
            criteria={"esgar": esgar, "lateral_short_axis_7mm": 4.0 + index >= 7.0},
        ))
        frames = np.random.default_rng(index).random((TRAVERSAL_FRAMES, frameSize, frameSize)).astype(np.float32)
        traversals[region.node_id] = {"growth": frames, "border_irregularity": frames[::-1]}
    patient = SimpleNamespace(probability=0.7, std=0.1, decision="N+ (node positive)", threshold=0.5, uncertain=False,
                              uncertainty_reasons=[])
    model = SimpleNamespace(name="stand-in", version="0", context_line=lambda: STAND_IN_CONTEXT)
    return SimpleNamespace(patient=patient, nodes=rows, heatmap=heatmap, traversals=traversals,
                           node_patches=libraryNodePatches(prepared), skipped_nodes=[], model=model)


def _canonicalAxes(ijkToLps: np.ndarray) -> list[tuple[int, float]]:
    """For LPS x, y, z: the volume's index axis (0 = i, 1 = j, 2 = k) closest to it and the sign along which
    it runs that way, chosen greedily in that order: the library's canonical orientation, written out here
    independently of it."""
    directions = ijkToLps[:3, :3] / np.linalg.norm(ijkToLps[:3, :3], axis=0)
    remaining, axes = [0, 1, 2], []
    for worldAxis in range(3):
        axis = max(remaining, key=lambda a: abs(directions[worldAxis, a]))
        remaining.remove(axis)
        axes.append((axis, 1.0 if directions[worldAxis, axis] > 0 else -1.0))
    return axes


def checkTraversalGeometry(prepared: PreparedInputs, outputs: Any) -> None:
    """Every traversal frame lies where the model's patch was cut: its centre on the centroid of the node's
    largest axial cross-section (within half a patch pixel in-plane, in its plane), its columns running to
    the patient's left and its rows to posterior (the patch convention of the report: patient right on the
    left, anterior at the top), one patch pixel per frame pixel (rescaled when the frame has another size)."""
    ijkToLps = RAS_TO_LPS @ prepared.ijkToWorld
    (axisL, signL), (axisP, signP), (axisS, signS) = _canonicalAxes(ijkToLps)
    unit = ijkToLps[:3, :3] / np.linalg.norm(ijkToLps[:3, :3], axis=0)
    regions = {region.node_id: region for region in prepared.nodes}
    for nodeId, sequenceNode in outputs.sequenceNodes.items():
        frames = np.asarray(outputs.result.traversals[nodeId]["growth"])
        rows, cols = frames.shape[-2:]
        patch = outputs.result.node_patches[nodeId]
        pixelMm = patch.pixel_mm * patch.image.shape[-1] / cols
        matrix = vtk.vtkMatrix4x4()
        sequenceNode.GetNthDataNode(0).GetIJKToRASMatrix(matrix)
        frameToLps = RAS_TO_LPS @ slicer.util.arrayFromVTKMatrix(matrix)
        column, row = frameToLps[:3, 0], frameToLps[:3, 1]
        assert np.allclose(column, pixelMm * signL * unit[:, axisL], atol=1e-4), f"node {nodeId}: column {column} (mirrored or turned)"
        assert np.allclose(row, pixelMm * signP * unit[:, axisP], atol=1e-4), f"node {nodeId}: row {row} (mirrored or turned)"
        # The node's largest cross-section across the S axis (the first one in the S direction on a tie).
        region = regions[nodeId]
        ijk = (np.argwhere(region.mask) + np.array(region.offset))[:, ::-1]  # (i, j, k) of every node voxel
        planes, counts = np.unique(ijk[:, axisS], return_counts=True)
        largest = planes[counts == counts.max()]
        plane = largest.min() if signS > 0 else largest.max()
        centroid = (ijkToLps @ np.append(ijk[ijk[:, axisS] == plane].mean(axis=0), 1.0))[:3]
        centre = (frameToLps @ np.array([(cols - 1) / 2.0, (rows - 1) / 2.0, 0.0, 1.0]))[:3]
        offset = centre - centroid
        inPlane = [abs(float(offset @ unit[:, axis])) for axis in (axisL, axisP)]
        assert max(inPlane) <= pixelMm / 2 + 1e-6, f"node {nodeId}: frame centre {centre} is {inPlane} mm off the node's centroid {centroid}"
        assert abs(float(offset @ np.cross(column, row) / np.linalg.norm(np.cross(column, row)))) < 1e-3, f"node {nodeId}: frame out of the node's plane"


def checkOutputs(context: SceneContext, prepared: PreparedInputs, outputs: Any, expectedProbabilities: dict[str, float] | None = None) -> None:
    """What every prediction must leave in the scene."""
    volumeNode = prepared.volumeNode
    assert outputs.tableNode.GetNumberOfRows() == len(prepared.nodes), (outputs.tableNode.GetNumberOfRows(), len(prepared.nodes))
    table = outputs.tableNode.GetTable()
    names = [table.GetColumnByName("Segment").GetValue(r) for r in range(table.GetNumberOfRows())]
    probabilities = [table.GetColumnByName("Probability").GetValue(r) for r in range(table.GetNumberOfRows())]
    assert names == [node.segment_name for node in prepared.nodes], names
    if expectedProbabilities is not None:
        for name, probability in zip(names, probabilities, strict=True):
            assert abs(probability - expectedProbabilities[name]) <= 1e-5, (name, probability, expectedProbabilities[name])
    assert outputs.patientTableNode.GetNumberOfRows() == 1
    # Every table with a probability carries the model's training data, intended use and "research use only".
    context = outputs.result.model.context_line()
    assert "trained on" in context and "intended use" in context and "Research use only" in context, context
    for tableNode in (outputs.tableNode, outputs.patientTableNode):
        column = tableNode.GetTable().GetColumnByName(MODEL_CONTEXT_COLUMN)
        assert column is not None, f"{tableNode.GetName()} has no '{MODEL_CONTEXT_COLUMN}' column"
        values = [column.GetValue(r) for r in range(tableNode.GetNumberOfRows())]
        assert values and all(value == context for value in values), values

    # Heatmap: the input volume's geometry exactly, its mass on the nodes.
    heatmapNode = outputs.heatmapNode
    assert heatmapNode is not None
    assert heatmapNode.GetImageData().GetDimensions() == volumeNode.GetImageData().GetDimensions()
    assert np.allclose(heatmapNode.GetSpacing(), volumeNode.GetSpacing())
    assert np.allclose(heatmapNode.GetOrigin(), volumeNode.GetOrigin())
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    heatmapNode.GetIJKToRASMatrix(a)
    volumeNode.GetIJKToRASMatrix(b)
    assert all(abs(a.GetElement(r, c) - b.GetElement(r, c)) < 1e-9 for r in range(4) for c in range(4)), "IJK-to-RAS differs"
    assert heatmapNode.GetTransformNodeID() == volumeNode.GetTransformNodeID()
    heat = np.clip(slicer.util.arrayFromVolume(heatmapNode), 0, None)
    near = np.zeros(heat.shape, bool)
    spacing = prepared.volume.spacing
    for region in prepared.nodes:
        # The field the model saw around the node: its patches (pixel size x frame size), on its slices
        # (+-1 for interpolation), centred on its box.
        patch = outputs.result.node_patches[region.node_id]
        side = patch.pixel_mm * patch.image.shape[-1]
        halfI, halfJ = (int(np.ceil(side / 2 / spacing[axis])) + 1 for axis in (0, 1))
        k, j, i = region.offset
        nk, nj, ni = region.mask.shape
        ci, cj = i + ni // 2, j + nj // 2
        near[max(k - 1, 0):k + nk + 1, max(cj - halfJ, 0):cj + halfJ + 1, max(ci - halfI, 0):ci + halfI + 1] = True
    total = float(heat.sum())
    assert total > 0, "the heatmap is empty"
    onNodes = float(heat[near].sum()) / total
    assert onNodes >= 0.99, f"only {onNodes:.1%} of the heatmap's mass lies on the nodes' patches"
    assert heatmapNode.GetDisplayNode() is not None and heatmapNode.GetDisplayNode().GetColorNodeID()

    # Segments recoloured and tagged.
    segmentation = prepared.segmentationNode.GetSegmentation()
    for segmentId in set(prepared.segmentIds.values()):
        assert segmentation.GetSegment(segmentId).HasTag(PROBABILITY_TAG), segmentId

    # One traversal sequence (+ browser) per node.
    assert set(outputs.sequenceNodes) == {node.node_id for node in prepared.nodes}
    for nodeId, sequenceNode in outputs.sequenceNodes.items():
        frames = outputs.result.traversals[nodeId]["growth"]
        assert sequenceNode.GetNumberOfDataNodes() == len(frames), (sequenceNode.GetNumberOfDataNodes(), len(frames))
        assert outputs.browserNodes[nodeId].GetMasterSequenceNode() is sequenceNode
    checkTraversalGeometry(prepared, outputs)
    for node in (outputs.tableNode, heatmapNode, *outputs.sequenceNodes.values()):
        assert node.GetAttribute(OUTPUT_ATTRIBUTE), node.GetName()


def scenarioOutputsAndRerun(context: SceneContext, folder: Path) -> None:
    """Scene outputs on a stand-in result (no model needed); a rerun replaces them, with fewer nodes too."""
    files = writeTestCase(folder)
    scene = context.scene
    volumeNode = loadVolume(scene, files.image)
    segmentationNode = loadSegmentation(scene, files.segnrrd)
    logic = LNMStagingLogic()
    prepared = logic.prepareInputs(volumeNode, segmentationNode)
    result = fakePredictionResult(prepared)
    outputs = logic.writeOutputs(prepared, result)
    checkOutputs(context, prepared, outputs, {row.segment_name: row.probability for row in result.nodes})
    count = scene.GetNumberOfNodes()
    outputs2 = logic.writeOutputs(prepared, fakePredictionResult(prepared))
    assert scene.GetNumberOfNodes() == count, f"rerun changed the node count: {count} -> {scene.GetNumberOfNodes()}"
    assert outputs2.tableNode is outputs.tableNode and outputs2.heatmapNode is outputs.heatmapNode

    # Fewer nodes (one segment emptied): its sequence, browser and proxy go, the rest stay.
    if len(prepared.nodes) > 1:
        removed = segmentationNode.GetSegmentation().GetNthSegmentID(0)
        segmentationNode.GetSegmentation().RemoveSegment(removed)
        prepared3 = logic.prepareInputs(volumeNode, segmentationNode)
        logic.writeOutputs(prepared3, fakePredictionResult(prepared3))
        perNode = (count - scene.GetNumberOfNodes())
        assert perNode > 0, "the outputs of the removed node were left in the scene"
        logic.writeOutputs(prepared3, fakePredictionResult(prepared3))
        assert count - scene.GetNumberOfNodes() == perNode


def _reportProbabilities(files: CaseFiles, folder: Path) -> dict[str, float]:
    """Per-node probabilities in the report.json that ``lnmstaging predict`` writes for the same files (and the
    same default model), by segment name."""
    from LNMStagingLib.cli import main

    out = folder / "cli-prediction"
    code = main(["predict", str(files.image), str(files.segnrrd), "--quiet", "--out", str(out)])
    assert code == 0, f"lnmstaging predict exited with {code}"
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {node["segment_name"]: node["probability"] for node in report["nodes"]}


def scenarioPredict(context: SceneContext, folder: Path) -> None:
    """The full module path on the phantom with the default model (pytest points LNMSTAGING_MODEL_PATH at
    the tiny test bundle when none is installed): the numbers of ``lnmstaging predict``'s report.json, the
    outputs, and a rerun that leaves the scene's node count unchanged."""
    if not predictionLibraryAvailable():
        raise Skip(PREDICTION_MISSING)
    from LNMStagingLib.bundle import list_bundles

    if not list_bundles():
        raise Skip("no model bundle installed (Resources/Models or LNMSTAGING_MODEL_PATH)")
    files = writeTestCase(folder)
    scene = context.scene
    volumeNode = loadVolume(scene, files.image)
    segmentationNode = loadSegmentation(scene, files.segnrrd)
    logic = LNMStagingLogic()
    messages: list[str] = []
    outputs = logic.predict(volumeNode, segmentationNode, progress=lambda fraction, message: messages.append(message))
    prepared = logic.prepareInputs(volumeNode, segmentationNode)
    checkOutputs(context, prepared, outputs, _reportProbabilities(files, folder))
    assert messages, "no progress was reported"
    count = scene.GetNumberOfNodes()
    logic.predict(volumeNode, segmentationNode, clinical={"age": 61, "sex": "female", "t_stage": "T3"})
    assert scene.GetNumberOfNodes() == count, f"rerun changed the node count: {count} -> {scene.GetNumberOfNodes()}"


# Volumes stored along other axes than LPS (k, j, i) -> direction columns i, j, k in LPS, spacing, and the
# size of the stand-in traversal frames (other than the 32-pixel patch: the mapping is rescaled).
REORIENTED_GRIDS = {
    "i to the patient's right": (np.diag([-1.0, 1.0, 1.0]), (0.7, 0.8, 2.5), 32),
    "j to anterior": (np.diag([1.0, -1.0, 1.0]), (0.7, 0.8, 2.5), 16),
    "coronal, j to inferior": (np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]), (0.7, 0.8, 2.0), 48),
}


def _writeReorientedCase(folder: Path, direction: np.ndarray, spacing: tuple[float, float, float]) -> tuple[Path, Path]:
    """Three ellipsoid nodes (one off the voxel centres) on a volume with the given axes, sized in mm so that
    every node spans several voxels whatever axis it lies along."""
    folder.mkdir(parents=True, exist_ok=True)
    extent_mm = np.array([40.0, 36.0, 44.0])  # along i, j, k
    shape_ijk = np.maximum(np.round(extent_mm / np.array(spacing)).astype(int), 12)
    kk, jj, ii = np.indices(tuple(shape_ijk[::-1]))
    position = [ii * spacing[0], jj * spacing[1], kk * spacing[2]]  # mm along each index axis
    labels = np.zeros(kk.shape, np.uint8)
    for label, centre, radii in ((1, (12.3, 11.6, 14.0), (5.0, 4.0, 6.0)), (2, (27.0, 24.4, 28.0), (6.5, 5.0, 7.0)),
                                 (3, (28.5, 10.2, 18.0), (4.0, 6.0, 5.0))):
        inside = sum(((position[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0
        labels[inside] = label
    image = np.random.default_rng(7).normal(100.0, 10.0, labels.shape) + 150.0 * (labels > 0)
    volume = Volume(image.astype(np.float32), spacing, (-15.0, 20.0, -30.0), direction)
    imagePath, labelmapPath = folder / "image.nrrd", folder / "labels.nrrd"
    sitk.WriteImage(volume.to_sitk(), str(imagePath))
    sitk.WriteImage(volume.with_array(labels).to_sitk(), str(labelmapPath), True)
    return imagePath, labelmapPath


def scenarioTraversalFramesOnReorientedGrids(context: SceneContext, folder: Path) -> None:
    """Volumes whose axes are mirrored or permuted against LPS: every traversal frame lies on its node's
    largest axial cross-section, centred on it, with the report's orientation (not mirrored, not in the
    volume's own slice plane); with the library's patches on a stand-in result and, when a model is
    installed, on a real prediction."""
    logic = LNMStagingLogic()
    predictHere = predictionLibraryAvailable()
    if predictHere:
        from LNMStagingLib.bundle import list_bundles

        predictHere = bool(list_bundles())
    for index, (name, (direction, spacing, frameSize)) in enumerate(REORIENTED_GRIDS.items()):
        imagePath, labelmapPath = _writeReorientedCase(folder / f"grid{index}", direction, spacing)
        volumeNode = loadVolume(context.scene, imagePath, f"grid {index}")
        segmentationNode = segmentationFromLabelmap(context.scene, loadLabelmap(context.scene, labelmapPath), f"grid {index} nodes")
        prepared = logic.prepareInputs(volumeNode, segmentationNode)
        assert len(prepared.nodes) == 3, (name, len(prepared.nodes))
        result = fakePredictionResult(prepared, frameSize)
        try:
            checkOutputs(context, prepared, logic.writeOutputs(prepared, result), {r.segment_name: r.probability for r in result.nodes})
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error
        if predictHere and np.allclose(np.abs(direction), np.eye(3)):  # checkOutputs' heatmap box assumes axial grids
            try:
                checkOutputs(context, prepared, logic.predict(volumeNode, segmentationNode))
            except AssertionError as error:
                raise AssertionError(f"{name}, predicted: {error}") from error


def scenarioIntendedInput(context: SceneContext, folder: Path) -> None:
    """As ``lnmstaging predict``: a bundle made for another modality than the volume's (the DICOM modality
    Slicer's DICOM import puts in the subject hierarchy) or for another preset than the declared one is
    refused with the library's sentence, and nothing is added to the scene."""
    if not predictionLibraryAvailable():
        raise Skip(PREDICTION_MISSING)
    from LNMStagingLib.bundle import list_bundles, load_bundle

    if not list_bundles():
        raise Skip("no model bundle installed (Resources/Models or LNMSTAGING_MODEL_PATH)")
    preset = load_bundle(None).config.preset
    expected = str(preset.get("modality", "")).strip().upper()
    files = writeTestCase(folder)
    scene = context.scene
    volumeNode = loadVolume(scene, files.image)
    segmentationNode = loadSegmentation(scene, files.segnrrd)
    logic = LNMStagingLogic()
    assert logic.volumeModality(volumeNode) is None, "an NRRD file carries no modality"
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = shNode.GetItemByDataNode(volumeNode) or shNode.CreateItem(shNode.GetSceneItemID(), volumeNode)
    attribute = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName()
    count = scene.GetNumberOfNodes()
    if expected:
        other = "MR" if expected != "MR" else "CT"
        shNode.SetItemAttribute(item, attribute, other.lower())
        assert logic.volumeModality(volumeNode) == other
        _expectInputError(lambda: logic.predict(volumeNode, segmentationNode), f"expects {expected} images")
        shNode.SetItemAttribute(item, attribute, expected)
    _expectInputError(lambda: logic.predict(volumeNode, segmentationNode, declaredPreset="another-preset"),
                      "the image was declared another-preset")
    assert scene.GetNumberOfNodes() == count, "a refused prediction changed the scene"


# Scenarios that predict with a model (pytest points LNMSTAGING_MODEL_PATH at the tiny test bundle when none
# is installed).
MODEL_SCENARIOS = {"scenarioPredict", "scenarioTraversalFramesOnReorientedGrids", "scenarioIntendedInput"}

SCENARIOS: list[Callable[[SceneContext, Path], None]] = [
    scenarioVolumeRoundTrip,
    scenarioSegmentationFromLabelmap,
    scenarioSegmentationFromSegNrrd,
    scenarioSegmentationOtherGeometry,
    scenarioEmptySegmentSkipped,
    scenarioTransforms,
    scenarioOutputsAndRerun,
    scenarioTraversalFramesOnReorientedGrids,
    scenarioPredict,
    scenarioIntendedInput,
]
