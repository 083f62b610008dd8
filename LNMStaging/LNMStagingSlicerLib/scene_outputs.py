"""From the prediction child's files (report.json, gradcam.nrrd, traversal stacks) to scene nodes.

Tables (one row per node, and the patient), segments recoloured green to red by probability, the node
heatmap as a semi-transparent foreground, and per node a sequence of growth-traversal frames with a
browser. A rerun on the same segmentation updates its earlier nodes in place and removes those it no
longer needs. MRML classes, vtk and numpy only (runs on ``slicer-core`` too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk

from .errors import OutputError
from .scene_inputs import ExportedInputs

REPORT_NAME = "report.json"
# Attribute put on every node the module creates, valued with the node's role; a rerun finds its outputs
# through it (together with the scope attribute) and updates them in place instead of adding new nodes.
OUTPUT_ATTRIBUTE = "LNMStaging.Output"
# Outputs belong to one segmentation: predicting on another segmentation keeps the first one's results.
SCOPE_ATTRIBUTE = "LNMStaging.Segmentation"
# Segment tag holding the node's predicted probability (for split islands: the highest of its islands).
PROBABILITY_TAG = "LNMStaging.probability"
# Segment tag remembering the user's colour before the first recolouring, so it can be restored.
ORIGINAL_COLOR_TAG = "LNMStaging.originalColor"
# Column of every results table holding the model's training data, intended use and "research use only":
# a probability is never shown without it.
MODEL_CONTEXT_COLUMN = "Model context"
HEATMAP_COLOR_NODE_IDS = ("vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeRainbow")
HEATMAP_FOREGROUND_OPACITY = 0.4
RESEARCH_USE = "Research use only, not a medical device."


@dataclass
class PredictionOutputs:
    """The child's report and the scene nodes that show it.

    Attributes:
        report: report.json as a dictionary (``patient``, ``nodes``, ``model``, ...).
        skipped: segments without a prediction, each with why.
        tableNode / patientTableNode: the node and patient tables.
        heatmapNode: the heatmap volume (gradcam.nrrd) on the input volume's grid.
        sequenceNodes / browserNodes: per node ID, its growth traversal and browser.
    """

    report: dict[str, Any]
    skipped: list[str]
    tableNode: Any
    patientTableNode: Any
    heatmapNode: Any
    sequenceNodes: dict[int, Any] = field(default_factory=dict)
    browserNodes: dict[int, Any] = field(default_factory=dict)


def probabilityColor(probability: float) -> tuple[float, float, float]:
    """Green (0) through yellow (0.5) to red (1): the traffic-light reading clinicians expect."""
    p = float(np.clip(probability, 0.0, 1.0))
    return (min(1.0, 2.0 * p), min(1.0, 2.0 * (1.0 - p)), 0.0)


def readReport(outputDir: Path) -> dict[str, Any]:
    path = Path(outputDir) / REPORT_NAME
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise OutputError(f"The prediction wrote no readable {REPORT_NAME} ({error}).") from None
    if not isinstance(report, dict) or not isinstance(report.get("patient"), dict) or not isinstance(report.get("nodes"), list):
        raise OutputError(f"{path} is not a prediction report (no patient or nodes).")
    return report


def modelContext(report: Mapping[str, Any]) -> str:
    """The line that must accompany every probability: model, training data, intended use, research use only."""
    model = report.get("model") or {}
    line = str(model.get("context") or "").strip()
    if not line:  # a report without the line: say what is known, never nothing
        line = (f"model {model.get('name', '?')} {model.get('version', '')}; trained on: "
                f"{report.get('model_data', 'not stated')}; intended use: {report.get('intended_use', 'not stated')}.")
    return line if "research use only" in line.lower() else f"{line} {RESEARCH_USE}"


def criteriaText(criteria: Mapping[str, Any]) -> str:
    """The radiological criteria of one node in words (ESGAR size + morphology; lateral short axis)."""
    parts = []
    esgar = criteria.get("esgar")
    if isinstance(esgar, Mapping):
        features = [label for key, label in (("round", "round"), ("irregular_border", "irregular border"),
                                             ("heterogeneous", "heterogeneous")) if esgar.get(key)]
        verdict = "suspicious" if esgar.get("suspicious") else "not suspicious"
        parts.append(f"ESGAR {verdict}" + (f" ({', '.join(features)})" if features else ""))
    if criteria.get("lateral_short_axis_7mm"):
        parts.append("lateral rule: short axis >= 7 mm")
    return "; ".join(parts)


def nodeTableColumns(report: Mapping[str, Any]) -> list[tuple[str, list]]:
    rows = list(report["nodes"])
    context = modelContext(report)
    return [
        ("Node", [int(row["node_id"]) for row in rows]),
        ("Segment", [str(row["segment_name"]) for row in rows]),
        ("Probability", [float(row["probability"]) for row in rows]),
        ("Std", [float(row["std"]) for row in rows]),
        ("Short axis (mm)", [float(row["short_axis_mm"]) for row in rows]),
        ("Long axis (mm)", [float(row["long_axis_mm"]) for row in rows]),
        ("Axis ratio", [float(row["axis_ratio"]) for row in rows]),
        ("Convexity", [float(row["convexity"]) for row in rows]),
        ("Compactness", [float(row["compactness"]) for row in rows]),
        ("Criteria", [criteriaText(row.get("criteria") or {}) for row in rows]),
        (MODEL_CONTEXT_COLUMN, [context for _ in rows]),
    ]


def inputCaveats(report: Mapping[str, Any]) -> list[str]:
    """Why this case is not the model's intended or usual input (another organ, outside the training domain),
    each a sentence to show beside the probability; empty when there is none."""
    patient = report.get("patient") or {}
    caveats = []
    for key in ("input_caveats", "input_warnings"):
        caveats += [str(item) for item in patient.get(key) or [] if str(item).strip()]
    return caveats


def uncertaintyText(patient: Mapping[str, Any]) -> str:
    return "; ".join(patient.get("uncertainty_reasons") or []) if patient.get("uncertain") else "no"


def patientTableColumns(report: Mapping[str, Any], skipped: list[str]) -> list[tuple[str, list]]:
    patient, model = report["patient"], report.get("model") or {}
    return [
        ("Probability", [float(patient["probability"])]),
        ("Std", [float(patient["std"])]),
        ("Decision", [str(patient["decision"])]),
        ("Input caveats", ["; ".join(inputCaveats(report)) or "none"]),
        ("Threshold", [float(patient["threshold"])]),
        ("Uncertain", [uncertaintyText(patient)]),
        ("Model", [f"{model.get('name', '?')} {model.get('version', '')}".strip()]),
        ("Skipped", [", ".join(skipped)]),
        (MODEL_CONTEXT_COLUMN, [modelContext(report)]),
    ]


def skippedSegments(exported: ExportedInputs, report: Mapping[str, Any]) -> list[str]:
    """Segments not sent to the child, and nodes the child could not predict, each with why."""
    left = [f"{item['segment_name']} (not in the patient bag: {item['reason']})"
            for item in (report.get("patient") or {}).get("nodes_left_out_of_bag") or []
            if isinstance(item, Mapping) and "segment_name" in item and "reason" in item]
    return list(exported.skipped) + [f"{item['segment_name']} ({item['reason']})" for item in report.get("skipped_nodes") or []] + left


class SceneOutputs:
    """Writes one prediction's outputs into the scene of the input volume."""

    def __init__(self, volumeNode: Any, segmentationNode: Any) -> None:
        self.volumeNode = volumeNode
        self.segmentationNode = segmentationNode
        self.scene = volumeNode.GetScene()
        self.scope = segmentationNode.GetID()
        self.used: set[str] = set()

    def load(self, outputDir: Path, exported: ExportedInputs) -> PredictionOutputs:
        """Read the child's outputs from ``outputDir`` and show them (call on the main thread).

        Raises:
            OutputError: a missing or inconsistent output file.
        """
        outputDir = Path(outputDir)
        report = readReport(outputDir)
        baseName = self.segmentationNode.GetName()
        skipped = skippedSegments(exported, report)
        # Read every file before touching the scene: a bad file leaves the scene as it was.
        heatmap = self._readArray(outputDir / ((report.get("outputs") or {}).get("gradcam") or "gradcam.nrrd"))[0]
        dims = self.volumeNode.GetImageData().GetDimensions()
        if heatmap.shape != (dims[2], dims[1], dims[0]):
            raise OutputError(f"the heatmap has shape {heatmap.shape}, the volume (k, j, i) {(dims[2], dims[1], dims[0])}")
        traversals = self._readTraversals(outputDir, report)

        tableNode = self._output("vtkMRMLTableNode", "nodes", f"{baseName} LNM nodes")
        fillTable(tableNode, nodeTableColumns(report))
        patientTableNode = self._output("vtkMRMLTableNode", "patient", f"{baseName} LNM patient")
        fillTable(patientTableNode, patientTableColumns(report, skipped))
        self._recolorSegments(report)
        heatmapNode = self._output("vtkMRMLScalarVolumeNode", "heatmap", f"{baseName} LNM heatmap")
        self._fillHeatmap(heatmapNode, heatmap.astype(np.float32))
        outputs = PredictionOutputs(report, skipped, tableNode, patientTableNode, heatmapNode)
        names = {int(row["node_id"]): str(row["segment_name"]) for row in report["nodes"]}
        for nodeId, (frames, frameToWorld) in sorted(traversals.items()):
            name = names.get(nodeId, f"node {nodeId}")
            sequenceNode = self._output("vtkMRMLSequenceNode", f"traversal:{nodeId}", f"{name} growth traversal")
            fillSequence(sequenceNode, frames, frameToWorld, name)
            browserNode = self._output("vtkMRMLSequenceBrowserNode", f"browser:{nodeId}", f"{name} growth traversal browser")
            self._connectBrowser(browserNode, sequenceNode, f"proxy:{nodeId}")
            outputs.sequenceNodes[nodeId] = sequenceNode
            outputs.browserNodes[nodeId] = browserNode
        self._removeStaleOutputs()
        return outputs

    # ------------------------------------------------------------------ files

    @staticmethod
    def _readArray(path: Path) -> tuple[np.ndarray, np.ndarray]:
        """(voxels (k, j, i), IJK -> RAS) of an image file, read through a private scene's storage node."""
        if not path.is_file():
            raise OutputError(f"The prediction did not write {path.name}.")
        scene = slicer.vtkMRMLScene()
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            raise OutputError(f"The prediction's {path.name} cannot be read.")
        ijkToRas = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(ijkToRas)
        return slicer.util.arrayFromVolume(node).copy(), slicer.util.arrayFromVTKMatrix(ijkToRas)

    def _readTraversals(self, outputDir: Path, report: Mapping[str, Any]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per node: the growth frames (F, H, W) and the 4x4 taking a frame's (col, row, 0, 1) to world RAS,
        both from the node's traversal stack, which carries the placement of the patch it was decoded from."""
        files = ((report.get("outputs") or {}).get("traversal")) or {}
        traversals = {}
        for nodeId, directions in files.items():
            growth = (directions or {}).get("growth")
            if not growth or not growth.get("nrrd"):
                continue
            frames, ijkToRas = self._readArray(outputDir / growth["nrrd"])
            traversals[int(nodeId)] = (frames.astype(np.float32), ijkToRas)
        return traversals

    # ------------------------------------------------------------------ nodes

    def _output(self, className: str, role: str, name: str) -> Any:
        self.used.add(role)
        for index in range(self.scene.GetNumberOfNodesByClass(className)):
            node = self.scene.GetNthNodeByClass(index, className)
            # GetNthNodeByClass also returns subclasses; the exact class keeps roles unambiguous.
            if (node.GetClassName() == className and node.GetAttribute(SCOPE_ATTRIBUTE) == self.scope
                    and node.GetAttribute(OUTPUT_ATTRIBUTE) == role):
                node.SetName(name)
                return node
        node = self.scene.AddNewNodeByClass(className, name)
        node.SetAttribute(OUTPUT_ATTRIBUTE, role)
        node.SetAttribute(SCOPE_ATTRIBUTE, self.scope)
        return node

    def _removeStaleOutputs(self) -> None:
        stale = []
        for index in range(self.scene.GetNumberOfNodes()):
            node = self.scene.GetNthNode(index)
            if node.GetAttribute(SCOPE_ATTRIBUTE) == self.scope and node.GetAttribute(OUTPUT_ATTRIBUTE) not in (None, *self.used):
                stale.append(node)
        for node in stale:
            removeNodeWithDependents(self.scene, node)

    def _recolorSegments(self, report: Mapping[str, Any]) -> None:
        segmentation = self.segmentationNode.GetSegmentation()
        best: dict[str, float] = {}
        for row in report["nodes"]:  # split islands share a segment: it shows its most suspicious island
            segmentId = row.get("segment_id")
            if segmentId and segmentation.GetSegment(segmentId) is not None:
                best[segmentId] = max(best.get(segmentId, 0.0), float(row["probability"]))
        for segmentId, probability in best.items():
            segment = segmentation.GetSegment(segmentId)
            if not segment.HasTag(ORIGINAL_COLOR_TAG):
                segment.SetTag(ORIGINAL_COLOR_TAG, " ".join(f"{c:.6g}" for c in segment.GetColor()))
            segment.SetTag(PROBABILITY_TAG, f"{probability:.6f}")
            segment.SetColor(*probabilityColor(probability))

    def _fillHeatmap(self, heatmapNode: Any, heatmap: np.ndarray) -> None:
        # The input volume's own IJK -> RAS and parent transform: identical geometry in every respect.
        ijkToRas = vtk.vtkMatrix4x4()
        self.volumeNode.GetIJKToRASMatrix(ijkToRas)
        heatmapNode.SetIJKToRASMatrix(ijkToRas)
        heatmapNode.SetAndObserveTransformNodeID(self.volumeNode.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(heatmapNode, heatmap)
        heatmapNode.CreateDefaultDisplayNodes()
        display = heatmapNode.GetDisplayNode()
        colorId = next((nodeId for nodeId in HEATMAP_COLOR_NODE_IDS if self.scene.GetNodeByID(nodeId) is not None), None)
        if colorId:
            display.SetAndObserveColorNodeID(colorId)
        high = float(heatmap.max()) if heatmap.size and heatmap.max() > 0 else 1.0
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, high)
        # Low attributions transparent, so the image stays readable under the overlay.
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(0.1 * high)
        display.SetUpperThreshold(max(high, 1.0))
        # Slice composite nodes exist only where there are slice views (Slicer); a bare scene has none.
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            composite.SetBackgroundVolumeID(self.volumeNode.GetID())
            composite.SetForegroundVolumeID(heatmapNode.GetID())
            composite.SetForegroundOpacity(HEATMAP_FOREGROUND_OPACITY)

    def _connectBrowser(self, browserNode: Any, sequenceNode: Any, proxyRole: str) -> None:
        if browserNode.GetMasterSequenceNode() is not sequenceNode:
            browserNode.SetAndObserveMasterSequenceNodeID(sequenceNode.GetID())
        browserNode.SetPlaybackLooped(True)
        browserNode.SetSelectedItemNumber(0)
        # The Sequences logic (registered in Slicer, or by the caller of slicer-core) creates the proxy node;
        # tag it so a rerun keeps it and a stale one is removed with the others.
        proxy = browserNode.GetProxyNode(sequenceNode)
        if proxy is not None:
            proxy.SetAttribute(OUTPUT_ATTRIBUTE, proxyRole)
            proxy.SetAttribute(SCOPE_ATTRIBUTE, self.scope)
            self.used.add(proxyRole)


def removeNodeWithDependents(scene: Any, node: Any) -> None:
    """Remove a node and its display and storage nodes (MRML's RemoveNode leaves them behind)."""
    dependents = []
    if node.IsA("vtkMRMLDisplayableNode"):
        dependents += [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        dependents += [node.GetNthStorageNode(n) for n in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for dependent in dependents:
        if dependent is not None and dependent.GetScene() is scene:
            scene.RemoveNode(dependent)


def fillTable(tableNode: Any, columns: list[tuple[str, list]]) -> None:
    table = vtk.vtkTable()
    for name, values in columns:
        if values and all(isinstance(value, int | np.integer) for value in values):
            array = vtk.vtkIntArray()
        elif values and all(isinstance(value, float | np.floating) for value in values):
            array = vtk.vtkDoubleArray()
        else:
            array = vtk.vtkStringArray()
        array.SetName(name)
        array.SetNumberOfValues(len(values))
        for row, value in enumerate(values):
            array.SetValue(row, value)
        table.AddColumn(array)
    tableNode.SetAndObserveTable(table)
    tableNode.SetUseColumnTitleAsColumnHeader(True)
    tableNode.SetLocked(True)  # results, not user data: keep them from accidental edits


def fillSequence(sequenceNode: Any, frames: np.ndarray, frameToWorld: np.ndarray, name: str) -> None:
    """One single-slice volume per frame, each placed by ``frameToWorld`` (frame (col, row, 0) -> RAS)."""
    sequenceNode.RemoveAllDataNodes()
    sequenceNode.SetIndexName("frame")
    sequenceNode.SetIndexUnit("")
    sequenceNode.SetIndexType(sequenceNode.NumericIndex)
    for frameIndex, frame in enumerate(frames):
        frameNode = slicer.vtkMRMLScalarVolumeNode()
        frameNode.SetName(f"{name} frame {frameIndex}")
        frameNode.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(frameToWorld))
        slicer.util.updateVolumeFromArray(frameNode, frame[np.newaxis])  # a one-slice volume
        sequenceNode.SetDataNodeAtValue(frameNode, str(frameIndex))
