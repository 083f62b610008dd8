"""Test scenarios of the LNMStaging module, shared by the pytest suite (headless, ``slicer-core``) and the
module's self-test inside 3D Slicer (``LNMStagingTest``). One copy: each scenario takes a ``SceneContext``
and a scratch folder, and raises ``AssertionError`` (or ``Skip``) itself.

Like LNMStagingLogic, this file uses no Slicer application API: files are read through storage nodes and
the segmentations logic's static methods, so the same code runs in both places.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from LNMStagingSlicerLib import scene_inputs
from LNMStagingSlicerLib.errors import ModuleError, PredictionCancelled, PredictionFailed, SceneInputError
from LNMStagingSlicerLib.logic import ClinicalInputs, LNMStagingLogic, PredictionRequest
from LNMStagingSlicerLib.process import childEnvironment, libraryRoot
from LNMStagingSlicerLib.scene_outputs import (
    MODEL_CONTEXT_COLUMN,
    OUTPUT_ATTRIBUTE,
    PROBABILITY_TAG,
    SceneOutputs,
)

from LNMStagingLib.io.image import read_image
from LNMStagingLib.io.segmentation import read_segmentation
from LNMStagingLib.io.volume import Volume

TRAVERSAL_FRAMES = 7
STAND_IN_PATCH = (32, 28.8)  # the stand-in outputs' patches: 32 x 32 pixels of 0.9 mm
STAND_IN_CONTEXT = ("model stand-in 0; trained on: nothing (a test stand-in); intended use: software tests. "
                    "Research use only, not a medical device.")
# MRML is RAS, ITK/LNMStagingLib is LPS: the same matrix flips the first two world axes both ways.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
PREDICTION_TIMEOUT_S = 600.0


class Skip(Exception):
    """A scenario that cannot run here (the reason is the message); pytest turns it into a skip."""


@dataclass
class SceneContext:
    """A scene plus the logic objects registered on it (kept referenced: VTK would free them otherwise)."""

    scene: Any
    logics: dict[str, Any]
    python: str | None = None  # the child's interpreter (None: Slicer's launcher); needs the library's packages


def makeHeadlessScene(python: str | None = None) -> SceneContext:
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
    return SceneContext(scene, logics, python)


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
        from LNMStagingLib.synthetic.phantom import write_phantom
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


def _expectError(call: Callable[[], Any], errorType: type, fragment: str) -> ModuleError:
    try:
        call()
    except errorType as error:
        assert fragment in str(error), f"message {str(error)!r} lacks {fragment!r}"
        assert "\n" not in str(error).strip() and "Traceback" not in str(error), f"not one line: {str(error)!r}"
        return error
    raise AssertionError(f"no {errorType.__name__} (expected one mentioning {fragment!r})")


def exportTo(folder: Path, volumeNode: Any, segmentationNode: Any) -> scene_inputs.ExportedInputs:
    folder.mkdir(parents=True, exist_ok=True)
    return scene_inputs.exportInputs(volumeNode, segmentationNode, folder)


def libraryNodes(exported: scene_inputs.ExportedInputs, splitIslands: bool = False) -> list:
    """The nodes the child will see: the library's reading of the exported files."""
    return read_segmentation(exported.segmentationPath, read_image(exported.imagePath), split_islands=splitIslands).nodes


# ---------------------------------------------------------------------------------------------- inputs


def scenarioExportVolume(context: SceneContext, folder: Path) -> None:
    """The exported volume reads, through the library, as the library reads the original file (voxels and LPS
    geometry; the phantom and an oblique anisotropic grid)."""
    for oblique in (False, True):
        files = writeTestCase(folder / ("oblique" if oblique else "phantom"), oblique)
        volumeNode = loadVolume(context.scene, files.image)
        segmentationNode = loadSegmentation(context.scene, files.segnrrd)
        exported = exportTo(folder / f"export{int(oblique)}", volumeNode, segmentationNode)
        volume, expected = Volume.from_sitk(read_image(exported.imagePath)), Volume.from_sitk(read_image(files.image))
        assert np.array_equal(volume.array, expected.array), "voxel values differ"
        assert np.allclose(volume.spacing, expected.spacing, atol=1e-5), (volume.spacing, expected.spacing)
        assert np.allclose(volume.origin, expected.origin, atol=1e-4), (volume.origin, expected.origin)
        assert np.allclose(volume.direction, expected.direction, atol=1e-5), (volume.direction, expected.direction)


def scenarioExportSegmentation(context: SceneContext, folder: Path) -> None:
    """Nodes from a .seg.nrrd and from an imported labelmap: the exported file gives the library the same nodes
    (masks, names, split islands) as the original file, and every node keeps its segment's ID."""
    files = writeTestCase(folder)
    reference = read_image(files.image)
    shape = sitk.GetArrayViewFromImage(reference).shape
    volumeNode = loadVolume(context.scene, files.image)
    for source, segmentationNode in (
        (files.segnrrd, loadSegmentation(context.scene, files.segnrrd)),
        (files.labelmap, segmentationFromLabelmap(context.scene, loadLabelmap(context.scene, files.labelmap))),
    ):
        exported = exportTo(folder / f"export-{source.stem}", volumeNode, segmentationNode)
        assert exported.skipped == [], exported.skipped
        for splitIslands in (False, True):
            nodes = libraryNodes(exported, splitIslands)
            expected = read_segmentation(source, reference, split_islands=splitIslands).nodes
            # Slicer names imported labels after its colour table, the library "Label_<n>": names only for .seg.nrrd.
            assertSameNodes(nodes, expected, shape, compareNames=source == files.segnrrd)
            segmentation = segmentationNode.GetSegmentation()
            for node in nodes:
                segment = segmentation.GetSegment(node.segment_id)
                assert segment is not None, f"node {node.node_id}: segment ID {node.segment_id!r} not in the scene"
                assert node.segment_name.startswith(segment.GetName()), (node.segment_name, segment.GetName())


def scenarioExportOtherGeometry(context: SceneContext, folder: Path) -> None:
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
    exported = exportTo(folder / "export", volumeNode, segmentationNode)
    expected = read_segmentation(finerPath, reference).nodes
    assertSameNodes(libraryNodes(exported), expected, sitk.GetArrayViewFromImage(reference).shape, compareNames=False)


def scenarioEmptySegmentSkipped(context: SceneContext, folder: Path) -> None:
    """Empty segments are named as skipped; unusable inputs are refused in one sentence, nothing written."""
    files = writeTestCase(folder)
    volumeNode = loadVolume(context.scene, files.image)
    segmentationNode = loadSegmentation(context.scene, files.segnrrd)
    segmentation = segmentationNode.GetSegmentation()
    count = segmentation.GetNumberOfSegments()
    segmentation.AddEmptySegment("empty", "Empty node")
    exported = exportTo(folder / "export", volumeNode, segmentationNode)
    assert [name for name in exported.skipped if name.startswith("Empty node")] == exported.skipped and exported.skipped, exported.skipped
    assert len(libraryNodes(exported)) == count

    onlyEmpty = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "only empty")
    onlyEmpty.GetSegmentation().AddEmptySegment("e1", "e1")
    for name, call, fragment in (
        ("only empty", lambda: exportTo(folder / "e1", volumeNode, onlyEmpty), "no labelled voxel"),
        ("no segmentation", lambda: exportTo(folder / "e2", volumeNode, None), "Select a segmentation"),
        ("no volume", lambda: exportTo(folder / "e3", None, segmentationNode), "Select an input volume"),
        ("labelmap", lambda: exportTo(folder / "e4", loadLabelmap(context.scene, files.labelmap), segmentationNode), "labelmap"),
    ):
        _expectError(call, SceneInputError, fragment)
        assert not [path for path in folder.glob("e[1-4]/*")], f"{name}: files written for a refused input"


def scenarioTransforms(context: SceneContext, folder: Path) -> None:
    """Linear parent transforms are applied to the exported geometry (the nodes stay untouched); a
    segmentation moved off the image and a non-linear transform are refused in one sentence."""
    files = writeTestCase(folder)
    scene = context.scene
    volumeNode = loadVolume(scene, files.image)
    segmentationNode = loadSegmentation(scene, files.segnrrd)
    before = exportTo(folder / "before", volumeNode, segmentationNode)
    beforeVolume = Volume.from_sitk(read_image(before.imagePath))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 12.5)  # +12.5 mm towards Right = -12.5 mm in LPS x
    transform.SetMatrixTransformToParent(matrix)
    volumeNode.SetAndObserveTransformNodeID(transform.GetID())
    segmentationNode.SetAndObserveTransformNodeID(transform.GetID())
    after = exportTo(folder / "after", volumeNode, segmentationNode)
    afterVolume = Volume.from_sitk(read_image(after.imagePath))
    assert np.allclose(np.array(afterVolume.origin) - np.array(beforeVolume.origin), [-12.5, 0.0, 0.0], atol=1e-5)
    assert np.array_equal(afterVolume.array, beforeVolume.array)
    assert volumeNode.GetParentTransformNode() is transform, "the input volume must not be hardened"
    # Both under the same transform: the nodes stay where they were on the image grid.
    assertSameNodes(libraryNodes(after), libraryNodes(before), beforeVolume.array.shape)

    away = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "away")
    farMatrix = vtk.vtkMatrix4x4()
    farMatrix.SetElement(2, 3, 5000.0)
    away.SetMatrixTransformToParent(farMatrix)
    segmentationNode.SetAndObserveTransformNodeID(away.GetID())
    _expectError(lambda: exportTo(folder / "away", volumeNode, segmentationNode), SceneInputError, "does not overlap")
    warp = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    volumeNode.SetAndObserveTransformNodeID(warp.GetID())
    _expectError(lambda: exportTo(folder / "warp", volumeNode, segmentationNode), SceneInputError, "Harden transform")


# ---------------------------------------------------------------------------------------------- outputs


def writeStandInOutputs(exported: scene_inputs.ExportedInputs, outputDir: Path, frameSize: int = 32) -> dict[str, Any]:
    """The files a prediction writes, without a model: report.json (the fields the module reads), a heatmap
    on the nodes, and per node a traversal stack placed, with the library's own writer geometry, where the
    library's patch sampling cuts the node's primary patch. ``frameSize`` other than the patch size
    exercises the rescaling. Returns the report."""
    from LNMStagingLib.imaging.case import Case, prepare_case
    from LNMStagingLib.imaging.patches import PatchConfig, extract_patches
    from LNMStagingLib.prediction.results import NodePatch
    from LNMStagingLib.prediction.writers import frame_geometry

    outputDir.mkdir(parents=True)
    (outputDir / "traversal").mkdir()
    image = Volume.from_sitk(read_image(exported.imagePath))
    nodes = libraryNodes(exported)
    size, fovMm = STAND_IN_PATCH
    patches = {patch.node_id: patch for patch in extract_patches(prepare_case(Case.from_volume(image, nodes), None),
                                                                  PatchConfig(size, fovMm)).patches if patch.is_primary}
    heatmap = np.zeros(image.array.shape, np.float32)
    rows, traversalFiles = [], {}
    for index, region in enumerate(nodes):
        probability = round((index + 1) / (len(nodes) + 1), 6)
        heatmap[region.slices()][region.mask] = probability
        esgar = {"suspicious": index % 2 == 1, "round": True, "irregular_border": index % 3 == 0, "heterogeneous": False}
        rows.append({"node_id": region.node_id, "segment_name": region.segment_name, "segment_id": region.segment_id,
                     "probability": probability, "std": 0.05, "short_axis_mm": 4.0 + index, "long_axis_mm": 6.0 + index,
                     "axis_ratio": 0.7, "convexity": 0.95, "compactness": 1.1,
                     "criteria": {"esgar": esgar, "lateral_short_axis_7mm": 4.0 + index >= 7.0}})
        frames = np.random.default_rng(index).random((TRAVERSAL_FRAMES, frameSize, frameSize)).astype(np.float32)
        patch = patches[region.node_id]
        nodePatch = NodePatch(patch.image, patch.mask, patch.slice_index, fovMm / size, patch.patch_to_image)
        spacing, origin, direction = frame_geometry(image.index_to_lps() @ nodePatch.frame_to_image(frames.shape[1:]))
        stack = sitk.GetImageFromArray(frames)
        stack.SetSpacing(spacing)
        stack.SetOrigin(origin)
        stack.SetDirection(direction)
        name = f"traversal/node_{region.node_id:03d}_growth.nrrd"
        sitk.WriteImage(stack, str(outputDir / name))
        traversalFiles[str(region.node_id)] = {"growth": {"nrrd": name}}
    sitk.WriteImage(image.with_array(heatmap).to_sitk(), str(outputDir / "gradcam.nrrd"))
    report = {"model": {"name": "stand-in", "version": "0", "context": STAND_IN_CONTEXT},
              "patient": {"probability": 0.7, "std": 0.1, "decision": "N+ (node positive)", "threshold": 0.5,
                          "uncertain": False, "uncertainty_reasons": []},
              "nodes": rows, "skipped_nodes": [],
              "outputs": {"gradcam": "gradcam.nrrd", "traversal": traversalFiles}}
    (outputDir / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return report


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


def checkTraversalGeometry(exported: scene_inputs.ExportedInputs, outputs: Any, nodes: list | None = None,
                           planeToleranceMm: float = 1e-3) -> None:
    """Every traversal frame lies where the model's patch was cut: its centre on the centroid of the node's
    largest axial cross-section (within half a frame pixel in-plane, in its plane), its columns running to
    the patient's left and its rows to posterior (the report's patch convention: patient right on the left,
    anterior at the top), with square pixels. ``planeToleranceMm``: how far off that plane the frame may lie
    (a preset that resamples the slices cuts the patch on its own grid's largest slice: up to one of its
    slices away)."""
    ijkToLps = RAS_TO_LPS @ exported.ijkToWorld
    (axisL, signL), (axisP, signP), (axisS, signS) = _canonicalAxes(ijkToLps)
    unit = ijkToLps[:3, :3] / np.linalg.norm(ijkToLps[:3, :3], axis=0)
    regions = {region.node_id: region for region in (nodes if nodes is not None else libraryNodes(exported))}
    for nodeId, sequenceNode in outputs.sequenceNodes.items():
        frameNode = sequenceNode.GetNthDataNode(0)
        cols, rows = frameNode.GetImageData().GetDimensions()[:2]
        matrix = vtk.vtkMatrix4x4()
        frameNode.GetIJKToRASMatrix(matrix)
        frameToLps = RAS_TO_LPS @ slicer.util.arrayFromVTKMatrix(matrix)
        column, row = frameToLps[:3, 0], frameToLps[:3, 1]
        pixelMm = float(np.linalg.norm(column))
        assert abs(np.linalg.norm(row) - pixelMm) < 1e-4, f"node {nodeId}: non-square frame pixels"
        assert np.allclose(column, pixelMm * signL * unit[:, axisL], atol=1e-4), f"node {nodeId}: column {column} (mirrored or turned)"
        assert np.allclose(row, pixelMm * signP * unit[:, axisP], atol=1e-4), f"node {nodeId}: row {row} (mirrored or turned)"
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
        normal = np.cross(column, row) / np.linalg.norm(np.cross(column, row))
        assert abs(float(offset @ normal)) <= planeToleranceMm, f"node {nodeId}: frame {float(offset @ normal):.3f} mm out of the node's plane"


def checkOutputs(volumeNode: Any, segmentationNode: Any, exported: scene_inputs.ExportedInputs, outputs: Any,
                 expectedProbabilities: dict[str, float] | None = None) -> None:
    """What every prediction must leave in the scene."""
    nodes = libraryNodes(exported)
    table = outputs.tableNode.GetTable()
    assert outputs.tableNode.GetNumberOfRows() == len(nodes), (outputs.tableNode.GetNumberOfRows(), len(nodes))
    names = [table.GetColumnByName("Segment").GetValue(r) for r in range(table.GetNumberOfRows())]
    probabilities = [table.GetColumnByName("Probability").GetValue(r) for r in range(table.GetNumberOfRows())]
    assert names == [node.segment_name for node in nodes], names
    if expectedProbabilities is not None:
        for name, probability in zip(names, probabilities, strict=True):
            assert abs(probability - expectedProbabilities[name]) <= 1e-5, (name, probability, expectedProbabilities[name])
    assert outputs.patientTableNode.GetNumberOfRows() == 1
    # Every table with a probability carries the model's training data, intended use and "research use only".
    for tableNode in (outputs.tableNode, outputs.patientTableNode):
        column = tableNode.GetTable().GetColumnByName(MODEL_CONTEXT_COLUMN)
        assert column is not None, f"{tableNode.GetName()} has no '{MODEL_CONTEXT_COLUMN}' column"
        values = [column.GetValue(r) for r in range(tableNode.GetNumberOfRows())]
        assert values and all("trained on" in v and "intended use" in v and "Research use only" in v for v in values), values

    # Heatmap: the input volume's geometry exactly (IJK-to-RAS and parent transform), mass on the nodes' patches.
    heatmapNode = outputs.heatmapNode
    assert heatmapNode.GetImageData().GetDimensions() == volumeNode.GetImageData().GetDimensions()
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    heatmapNode.GetIJKToRASMatrix(a)
    volumeNode.GetIJKToRASMatrix(b)
    assert all(abs(a.GetElement(r, c) - b.GetElement(r, c)) < 1e-9 for r in range(4) for c in range(4)), "IJK-to-RAS differs"
    assert heatmapNode.GetTransformNodeID() == volumeNode.GetTransformNodeID()
    heat = np.clip(slicer.util.arrayFromVolume(heatmapNode), 0, None)
    near = np.zeros(heat.shape, bool)
    spacing = np.linalg.norm(exported.ijkToWorld[:3, :3], axis=0)
    for region in nodes:
        halfI, halfJ = (int(np.ceil(STAND_IN_PATCH[1] / 2 / spacing[axis])) + 2 for axis in (0, 1))
        k, j, i = region.offset
        nk, nj, ni = region.mask.shape
        ci, cj = i + ni // 2, j + nj // 2
        near[max(k - 1, 0):k + nk + 1, max(cj - halfJ, 0):cj + halfJ + 1, max(ci - halfI, 0):ci + halfI + 1] = True
    total = float(heat.sum())
    assert total > 0, "the heatmap is empty"
    assert float(heat[near].sum()) / total >= 0.99, "the heatmap's mass is not on the nodes' patches"
    assert heatmapNode.GetDisplayNode() is not None and heatmapNode.GetDisplayNode().GetColorNodeID()

    # Segments recoloured and tagged; one traversal sequence (+ browser) per node, placed where it was cut.
    segmentation = segmentationNode.GetSegmentation()
    for node in nodes:
        assert segmentation.GetSegment(node.segment_id).HasTag(PROBABILITY_TAG), node.segment_id
    assert set(outputs.sequenceNodes) == {node.node_id for node in nodes}
    for nodeId, sequenceNode in outputs.sequenceNodes.items():
        assert sequenceNode.GetNumberOfDataNodes() == TRAVERSAL_FRAMES, sequenceNode.GetNumberOfDataNodes()
        assert outputs.browserNodes[nodeId].GetMasterSequenceNode() is sequenceNode
    checkTraversalGeometry(exported, outputs)
    for node in (outputs.tableNode, heatmapNode, *outputs.sequenceNodes.values()):
        assert node.GetAttribute(OUTPUT_ATTRIBUTE), node.GetName()


def scenarioOutputsAndRerun(context: SceneContext, folder: Path) -> None:
    """Scene outputs from stand-in output files (no model needed); a rerun replaces them, with fewer nodes too."""
    files = writeTestCase(folder)
    scene = context.scene
    volumeNode = loadVolume(scene, files.image)
    segmentationNode = loadSegmentation(scene, files.segnrrd)
    exported = exportTo(folder / "export", volumeNode, segmentationNode)
    report = writeStandInOutputs(exported, folder / "out1")
    outputs = SceneOutputs(volumeNode, segmentationNode).load(folder / "out1", exported)
    checkOutputs(volumeNode, segmentationNode, exported, outputs, {row["segment_name"]: row["probability"] for row in report["nodes"]})
    count = scene.GetNumberOfNodes()
    outputs2 = SceneOutputs(volumeNode, segmentationNode).load(folder / "out1", exported)
    assert scene.GetNumberOfNodes() == count, f"rerun changed the node count: {count} -> {scene.GetNumberOfNodes()}"
    assert outputs2.tableNode is outputs.tableNode and outputs2.heatmapNode is outputs.heatmapNode
    # Fewer nodes (one segment removed): its sequence, browser and proxy go, the rest stay.
    segmentationNode.GetSegmentation().RemoveSegment(segmentationNode.GetSegmentation().GetNthSegmentID(0))
    exported3 = exportTo(folder / "export3", volumeNode, segmentationNode)
    writeStandInOutputs(exported3, folder / "out3")
    SceneOutputs(volumeNode, segmentationNode).load(folder / "out3", exported3)
    perNode = count - scene.GetNumberOfNodes()
    assert perNode > 0, "the outputs of the removed node were left in the scene"
    SceneOutputs(volumeNode, segmentationNode).load(folder / "out3", exported3)
    assert count - scene.GetNumberOfNodes() == perNode
    # A broken output folder leaves the scene as it was.
    (folder / "out3" / "gradcam.nrrd").unlink()
    count = scene.GetNumberOfNodes()
    _expectError(lambda: SceneOutputs(volumeNode, segmentationNode).load(folder / "out3", exported3), ModuleError, "gradcam.nrrd")
    assert scene.GetNumberOfNodes() == count


# ---------------------------------------------------------------------------------------------- the child process


def _childEnvironment() -> dict[str, str]:
    """The environment the module gives its child (its own copy of the library first on the path)."""
    return childEnvironment(os.environ, libraryRoot(), ownInterpreter=False)


def _python(context: SceneContext) -> str:
    """The interpreter for the child, or Skip when none with the library's packages is there."""
    python = context.python
    if not python:
        from LNMStagingSlicerLib.logic import slicerPython

        try:
            python = slicerPython()
        except ModuleError as error:
            raise Skip(str(error)) from None
    probe = subprocess.run([python, "-c", "import torch, LNMStagingLib.prediction"], capture_output=True, text=True,
                           env=_childEnvironment())
    if probe.returncode != 0:
        raise Skip(f"{python} cannot import torch and the prediction library (install the dependencies first)")
    models = subprocess.run([python, "-m", "LNMStagingLib", "models", "--json"], capture_output=True, text=True,
                            env=_childEnvironment())
    if models.returncode != 0 or not json.loads(models.stdout or "[]"):
        raise Skip("no model bundle installed (Resources/Models or LNMSTAGING_MODEL_PATH)")
    return python


def cliProbabilities(python: str, image: Path, segmentation: Path, folder: Path, *options: str) -> dict[str, float]:
    """Per-node probabilities of ``lnmstaging predict`` on the same files, by segment name."""
    out = folder / "cli-prediction"
    done = subprocess.run([python, "-m", "LNMStagingLib", "predict", str(image), str(segmentation), "--quiet", *options,
                           "--out", str(out)], capture_output=True, text=True, env=_childEnvironment())
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {node["segment_name"]: node["probability"] for node in report["nodes"]}


def _processGone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _caseInScene(context: SceneContext, folder: Path) -> tuple[CaseFiles, Any, Any, Path]:
    """The phantom case loaded into the scene, and an empty folder for the runs' temporary folders."""
    files = writeTestCase(folder / "case")
    workRoot = folder / "work"
    workRoot.mkdir()
    return files, loadVolume(context.scene, files.image), loadSegmentation(context.scene, files.segnrrd), workRoot


def scenarioPredictInChildProcess(context: SceneContext, folder: Path) -> None:
    """The module's path end to end: export, the child's prediction with progress lines, the outputs in the
    scene equal to ``lnmstaging predict`` on the same case (within 1e-5), no temporary files left; a rerun with
    clinical data leaves the scene's node count unchanged."""
    python = _python(context)
    files, volumeNode, segmentationNode, workRoot = _caseInScene(context, folder)
    scene = context.scene
    logic = LNMStagingLogic()
    run = logic.startPrediction(volumeNode, segmentationNode, PredictionRequest(python=python, workRoot=workRoot))
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    while run.running and time.monotonic() - started < PREDICTION_TIMEOUT_S:
        progress = run.poll()
        if not seen or seen[-1] != progress:
            seen.append(progress)
        time.sleep(0.05)
    run.poll()
    seen.append(run.child.lastProgress)
    exported = run.exported
    nodes = libraryNodes(exported)  # read before finish() removes the folder
    outputs = run.finish()
    assert len({message for _, message in seen if message}) >= 4, f"too few progress lines seen: {seen}"
    assert seen[-1][0] == 1.0, seen
    assert not any(workRoot.iterdir()), f"temporary files left: {list(workRoot.iterdir())}"
    assert [row["segment_name"] for row in outputs.report["nodes"]] == [node.segment_name for node in nodes]
    checkTraversalGeometry(exported, outputs, nodes)  # the real frames, placed by the child's own stacks
    # A mismatch between case and model (e.g. a lung-nodule model on lymph nodes) is beside the probability.
    caveats = outputs.patientTableNode.GetTable().GetColumnByName("Input caveats").GetValue(0)
    expectedCaveats = list((outputs.report["patient"].get("input_caveats") or []) + (outputs.report["patient"].get("input_warnings") or []))
    assert caveats == ("; ".join(expectedCaveats) or "none"), caveats
    expected = cliProbabilities(python, files.image, files.segnrrd, folder)
    table = outputs.tableNode.GetTable()
    for r in range(table.GetNumberOfRows()):
        name, probability = table.GetColumnByName("Segment").GetValue(r), table.GetColumnByName("Probability").GetValue(r)
        assert abs(probability - expected[name]) <= 1e-5, (name, probability, expected[name])
    count = scene.GetNumberOfNodes()
    request = PredictionRequest(ClinicalInputs(61, "F", "T3"), python=python, workRoot=workRoot)
    logic.predict(volumeNode, segmentationNode, request, timeout=PREDICTION_TIMEOUT_S)
    assert scene.GetNumberOfNodes() == count, f"rerun changed the node count: {count} -> {scene.GetNumberOfNodes()}"
    assert not any(workRoot.iterdir())


def scenarioCancelAndFailure(context: SceneContext, folder: Path) -> None:
    """Cancel mid-run ends the child's whole process group, adds nothing, leaves no temporary file; a child
    failure (a model folder that is not a bundle, a bundle for another modality, an image outside the model's
    input domain) reaches the caller as the child's one line, with the scene as it was; allowed, an
    out-of-domain image is predicted with the warning beside the probability."""
    python = _python(context)
    files, volumeNode, segmentationNode, workRoot = _caseInScene(context, folder)
    scene = context.scene
    logic = LNMStagingLogic()
    count = scene.GetNumberOfNodes()
    run = logic.startPrediction(volumeNode, segmentationNode, PredictionRequest(python=python, workRoot=workRoot))
    started = time.monotonic()
    while run.running and not run.poll()[1] and time.monotonic() - started < 60:
        time.sleep(0.02)  # until the child has said something: it is mid-run
    assert run.running, "the child ended before it could be cancelled"
    pid = run.child.pid
    run.cancel()
    assert not run.running and _processGone(pid), "the child's process group outlived Cancel"
    _expectError(run.finish, PredictionCancelled, "cancelled")
    assert scene.GetNumberOfNodes() == count, "a cancelled prediction changed the scene"
    assert not any(workRoot.iterdir()), f"temporary files left: {list(workRoot.iterdir())}"

    notABundle = folder / "not-a-bundle"
    notABundle.mkdir()
    error = _expectError(lambda: logic.predict(volumeNode, segmentationNode, PredictionRequest(
        modelPath=str(notABundle), python=python, workRoot=workRoot), timeout=PREDICTION_TIMEOUT_S), PredictionFailed, str(notABundle))
    assert not str(error).startswith("lnmstaging:"), str(error)
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = shNode.GetItemByDataNode(volumeNode) or shNode.CreateItem(shNode.GetSceneItemID(), volumeNode)
    attribute = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName()
    shNode.SetItemAttribute(item, attribute, "PT")  # no bundle is made for PET
    assert scene_inputs.volumeModality(volumeNode) == "PT"
    _expectError(lambda: logic.predict(volumeNode, segmentationNode, PredictionRequest(python=python, workRoot=workRoot),
                                       timeout=PREDICTION_TIMEOUT_S), PredictionFailed, "the image is DICOM modality PT")
    assert scene.GetNumberOfNodes() == count, "a failed prediction changed the scene"
    assert not any(workRoot.iterdir()), f"temporary files left: {list(workRoot.iterdir())}"

    # An image outside the bundle's input domain (intensities x10): refused with the module's own words, or,
    # when the user allows it, predicted with the warning beside the probability.
    shNode.SetItemAttribute(item, attribute, "")
    scaled = loadVolume(scene, files.image, "scaled x10")
    slicer.util.updateVolumeFromArray(scaled, slicer.util.arrayFromVolume(volumeNode).astype(np.float32) * 10.0)
    count = scene.GetNumberOfNodes()
    try:
        outputs = logic.predict(scaled, segmentationNode, PredictionRequest(python=python, workRoot=workRoot),
                                timeout=PREDICTION_TIMEOUT_S)
    except PredictionFailed as error:
        assert "input domain" in str(error) and "under Advanced" in str(error) and "--allow" not in str(error), str(error)
        assert str(error).startswith("scaled x10: "), f"the message should name the volume, not a temporary file: {error}"
        assert scene.GetNumberOfNodes() == count, "a refused prediction changed the scene"
    else:  # a bundle that records no input domain says so beside the probability instead
        assert "input domain not checked" in outputs.patientTableNode.GetTable().GetColumnByName("Input caveats").GetValue(0)
        return
    outputs = logic.predict(scaled, segmentationNode, PredictionRequest(python=python, workRoot=workRoot, allowOutOfDomain=True),
                            timeout=PREDICTION_TIMEOUT_S)
    caveats = outputs.patientTableNode.GetTable().GetColumnByName("Input caveats").GetValue(0)
    assert "OUT OF THE MODEL'S INPUT DOMAIN" in caveats, caveats
    assert not any(workRoot.iterdir()), f"temporary files left: {list(workRoot.iterdir())}"


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
    volume's own slice plane): from stand-in files placed by the library's writer geometry."""
    for index, (name, (direction, spacing, frameSize)) in enumerate(REORIENTED_GRIDS.items()):
        imagePath, labelmapPath = _writeReorientedCase(folder / f"grid{index}", direction, spacing)
        volumeNode = loadVolume(context.scene, imagePath, f"grid {index}")
        segmentationNode = segmentationFromLabelmap(context.scene, loadLabelmap(context.scene, labelmapPath), f"grid {index} nodes")
        exported = exportTo(folder / f"export{index}", volumeNode, segmentationNode)
        assert len(libraryNodes(exported)) == 3, name
        writeStandInOutputs(exported, folder / f"out{index}", frameSize)
        try:
            outputs = SceneOutputs(volumeNode, segmentationNode).load(folder / f"out{index}", exported)
            checkOutputs(volumeNode, segmentationNode, exported, outputs)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from error


# ---------------------------------------------------------------------------------------------- the panel


def checkWidgetBinding(ui: Any, parameterNode: Any, scene: Any) -> None:
    """The panel's widgets bound to the parameter node (``connectGui``): the combo boxes list the choices, the
    age spin box keeps 0-120, choosing in the widgets reaches the parameter node and back, and the one rule
    for Predict says "" once a volume and a segmentation with a segment are chosen. The caller checks that
    the Predict button follows (the module's ``_checkCanApply`` in Slicer)."""
    from LNMStagingSlicerLib.parameters import (
        AGE_RANGE,
        NOT_GIVEN,
        SEX_CHOICES,
        T_STAGE_CHOICES,
        cannotApplyReason,
    )

    assert [ui.sexComboBox.itemText(i) for i in range(ui.sexComboBox.count)] == list(SEX_CHOICES)
    assert [ui.tStageComboBox.itemText(i) for i in range(ui.tStageComboBox.count)] == list(T_STAGE_CHOICES)
    assert (ui.ageSpinBox.minimum, ui.ageSpinBox.maximum) == AGE_RANGE, (ui.ageSpinBox.minimum, ui.ageSpinBox.maximum)
    assert cannotApplyReason(parameterNode) == "Select the T2 volume."
    volumeNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "binding volume")
    segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "binding nodes")
    ui.volumeSelector.setCurrentNode(volumeNode)
    assert parameterNode.inputVolume is volumeNode, "volume selector -> parameter node"
    ui.segmentationSelector.setCurrentNode(segmentationNode)
    assert parameterNode.inputSegmentation is segmentationNode, "segmentation selector -> parameter node"
    assert "no segments" in cannotApplyReason(parameterNode)
    segmentationNode.GetSegmentation().AddEmptySegment("n1", "Node 1")
    assert cannotApplyReason(parameterNode) == "", cannotApplyReason(parameterNode)
    ui.sexComboBox.currentIndex = list(SEX_CHOICES).index("female")
    ui.tStageComboBox.currentIndex = list(T_STAGE_CHOICES).index("T3")
    ui.ageSpinBox.value = 64
    ui.splitIslandsCheckBox.checked = True
    assert (parameterNode.sex, parameterNode.tStage, parameterNode.age, parameterNode.splitIslands) == ("female", "T3", 64, True)
    parameterNode.sex, parameterNode.age, parameterNode.splitIslands = NOT_GIVEN, 0, False
    assert ui.sexComboBox.currentText == NOT_GIVEN and ui.ageSpinBox.value == 0 and not ui.splitIslandsCheckBox.checked, \
        "parameter node -> widgets"
    ui.allowOutOfDomainCheckBox.checked = True
    assert parameterNode.allowOutOfDomain is True, "out-of-domain checkbox -> parameter node"
    parameterNode.allowOutOfDomain = False
    assert not ui.allowOutOfDomainCheckBox.checked, "parameter node -> out-of-domain checkbox"
    ui.useBundledModelCheckBox.checked = False
    assert "model bundle folder" in cannotApplyReason(parameterNode)
    parameterNode.modelPath = "/some/bundle"
    assert cannotApplyReason(parameterNode) == ""
    ui.useBundledModelCheckBox.checked = True
    parameterNode.modelPath = ""


SCENARIOS: list[Callable[[SceneContext, Path], None]] = [
    scenarioExportVolume,
    scenarioExportSegmentation,
    scenarioExportOtherGeometry,
    scenarioEmptySegmentSkipped,
    scenarioTransforms,
    scenarioOutputsAndRerun,
    scenarioTraversalFramesOnReorientedGrids,
    scenarioPredictInChildProcess,
    scenarioCancelAndFailure,
]
