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
    OUTPUT_ATTRIBUTE,
    PROBABILITY_TAG,
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


def fakePredictionResult(prepared: PreparedInputs) -> SimpleNamespace:
    """A stand-in with the fields of LNMStagingLib's PredictionResult that the module reads, to test the
    scene outputs without a model (the real result goes through the same checks in scenarioPredict)."""
    shape = prepared.volume.array.shape
    heatmap = np.zeros(shape, np.float32)
    rows, traversals, patches = [], {}, {}
    for index, region in enumerate(prepared.nodes):
        probability = (index + 1) / (len(prepared.nodes) + 1)
        heatmap[region.slices()][region.mask] = probability
        esgar = {"suspicious": index % 2 == 1, "round": True, "irregular_border": index % 3 == 0, "heterogeneous": False}
        rows.append(SimpleNamespace(
            node_id=region.node_id, segment_name=region.segment_name, probability=probability, std=0.05,
            short_axis_mm=4.0 + index, long_axis_mm=6.0 + index, axis_ratio=0.7, convexity=0.95, compactness=1.1,
            criteria={"esgar": esgar, "lateral_short_axis_7mm": 4.0 + index >= 7.0},
        ))
        frames = np.random.default_rng(index).random((TRAVERSAL_FRAMES, 32, 32)).astype(np.float32)
        traversals[region.node_id] = {"growth": frames, "border_irregularity": frames[::-1]}
        patches[region.node_id] = SimpleNamespace(pixel_mm=0.9)
    patient = SimpleNamespace(probability=0.7, std=0.1, decision="N+ (node positive)", threshold=0.5, uncertain=False,
                              uncertainty_reasons=[])
    return SimpleNamespace(patient=patient, nodes=rows, heatmap=heatmap, traversals=traversals, node_patches=patches,
                           skipped_nodes=[], model=SimpleNamespace(name="stand-in", version="0"))


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
        side = outputs.result.node_patches[region.node_id].pixel_mm * outputs.result.traversals[region.node_id]["growth"].shape[-1]
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


SCENARIOS: list[Callable[[SceneContext, Path], None]] = [
    scenarioVolumeRoundTrip,
    scenarioSegmentationFromLabelmap,
    scenarioSegmentationFromSegNrrd,
    scenarioSegmentationOtherGeometry,
    scenarioEmptySegmentSkipped,
    scenarioTransforms,
    scenarioOutputsAndRerun,
    scenarioPredict,
]
