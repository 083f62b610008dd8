"""MRML <-> LNMStagingLib conversion and the prediction outputs of the LNMStaging module.

This file must run both inside 3D Slicer and on Kitware's ``slicer-core`` wheel (MRML without the
application), so it imports only numpy, vtk, the ``slicer`` MRML/logic classes and LNMStagingLib. It never
touches qt, ctk, ``slicer.app``, ``slicer.modules``, ``slicer.mrmlScene`` or ``slicer.ScriptedLoadableModule``:
the scene always comes from the input nodes (``node.GetScene()``).

Geometry conventions: MRML stores voxels in RAS, LNMStagingLib in LPS (ITK). Arrays are ``(k, j, i)`` in both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from LNMStagingLib.errors import InputError, LNMStagingError
from LNMStagingLib.segmentation import NodeRegion, number_nodes, regions_from_mask
from LNMStagingLib.volume import Volume

# Attribute put on every node the module creates, valued with the node's role; a rerun finds its outputs
# through it (together with the scope attribute) and updates them in place instead of adding new nodes.
OUTPUT_ATTRIBUTE = "LNMStaging.Output"
# Outputs belong to one segmentation: predicting on another segmentation keeps the first one's results.
SCOPE_ATTRIBUTE = "LNMStaging.Segmentation"
# Segment tag holding the node's predicted probability (for split islands: the highest of its islands).
PROBABILITY_TAG = "LNMStaging.probability"
# Segment tag remembering the user's colour before the first recolouring, so it can be restored.
ORIGINAL_COLOR_TAG = "LNMStaging.originalColor"

HEATMAP_COLOR_NODE_IDS = ("vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeRainbow")
HEATMAP_FOREGROUND_OPACITY = 0.4

# MRML is RAS, ITK/LNMStagingLib is LPS: the same matrix flips the first two world axes both ways.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

ProgressCallback = Callable[[float, str], None]
CancelCallback = Callable[[], bool]


@dataclass
class PreparedInputs:
    """What the main thread extracts from the scene; ``runPrediction`` needs nothing else (thread-safe)."""

    volumeNode: Any
    segmentationNode: Any
    volume: Volume
    nodes: list[NodeRegion]
    skipped: list[str]
    segmentIds: dict[int, str]  # node_id -> ID of the segment it came from
    ijkToWorld: np.ndarray  # 4x4, RAS, the parent transform included

    @property
    def skippedMessage(self) -> str:
        if not self.skipped:
            return ""
        return "Skipped (no voxel inside the image): " + ", ".join(self.skipped)


@dataclass
class PredictionOutputs:
    """The library's result and the scene nodes that show it."""

    result: Any
    skipped: list[str]
    tableNode: Any
    patientTableNode: Any
    heatmapNode: Any | None
    sequenceNodes: dict[int, Any] = field(default_factory=dict)  # node_id -> vtkMRMLSequenceNode
    browserNodes: dict[int, Any] = field(default_factory=dict)  # node_id -> vtkMRMLSequenceBrowserNode


def predictionLibraryAvailable() -> bool:
    """True once ``LNMStagingLib.prediction.predict_case`` is importable (it needs torch)."""
    try:
        from LNMStagingLib.prediction import predict_case  # noqa: F401
    except ImportError:
        return False
    return True


def matrixToNumpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def numpyToMatrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def probabilityColor(probability: float) -> tuple[float, float, float]:
    """Green (0) through yellow (0.5) to red (1): the traffic-light reading clinicians expect."""
    p = float(np.clip(probability, 0.0, 1.0))
    return (min(1.0, 2.0 * p), min(1.0, 2.0 * (1.0 - p)), 0.0)


class LNMStagingLogic:
    """Converts MRML nodes to LNMStagingLib objects, runs the prediction and writes its results to the scene.

    ``predict`` does the three steps at once; the module widget calls them separately so that only
    ``runPrediction`` (pure library code, no MRML) runs in a background thread.
    """

    # ------------------------------------------------------------------ inputs

    def checkVolumeNode(self, volumeNode: Any) -> None:
        if volumeNode is None:
            raise InputError(None, "Select an input volume (the T2 MRI).")
        if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(volumeNode.GetName(), "is not a scalar volume; select the T2 MRI volume")
        if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(volumeNode.GetName(), "is a labelmap; select the image volume and put the nodes in the segmentation")
        image = volumeNode.GetImageData()
        if image is None or image.GetNumberOfPoints() == 0:
            raise InputError(volumeNode.GetName(), "has no voxels")
        if image.GetNumberOfScalarComponents() != 1:
            raise InputError(volumeNode.GetName(), f"has {image.GetNumberOfScalarComponents()} components per voxel; a scalar (grey-level) volume is needed")
        if volumeNode.GetParentTransformNode() is not None and not volumeNode.GetParentTransformNode().IsTransformToWorldLinear():
            # A warping transform would need the voxels resampled; doing it silently would change the image
            # the model sees, so the user decides.
            raise InputError(
                volumeNode.GetName(),
                f"is under the non-linear transform '{volumeNode.GetParentTransformNode().GetName()}'; harden it first "
                "(Data module: right-click the volume > Harden transform), then predict again",
            )

    def ijkToWorldMatrix(self, volumeNode: Any) -> np.ndarray:
        """IJK -> world (RAS) of the volume, including a linear parent transform: the geometry the user sees."""
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        matrix = matrixToNumpy(ijkToRas)
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is not None:
            toWorld = vtk.vtkMatrix4x4()
            transformNode.GetMatrixTransformToWorld(toWorld)
            matrix = matrixToNumpy(toWorld) @ matrix
        return matrix

    def volumeFromNode(self, volumeNode: Any) -> Volume:
        """The volume as LNMStagingLib sees it: voxels (k, j, i), LPS geometry.

        A linear parent transform is applied to the geometry (the node itself is left untouched); a non-linear
        one is refused by ``checkVolumeNode``.
        """
        self.checkVolumeNode(volumeNode)
        image = volumeNode.GetImageData()
        i, j, k = image.GetDimensions()
        array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i).copy()
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(volumeNode.GetName(), f"has {int(np.count_nonzero(~np.isfinite(array)))} NaN or infinite voxel(s)")
        ijkToLps = RAS_TO_LPS @ self.ijkToWorldMatrix(volumeNode)
        axes = ijkToLps[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        direction = axes / spacing
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
            raise InputError(volumeNode.GetName(), "has a non-orthogonal (sheared) grid, which is not supported")
        return Volume(array, tuple(spacing), tuple(ijkToLps[:3, 3]), direction)

    def _referenceImage(self, volumeNode: Any, ijkToWorld: np.ndarray) -> Any:
        reference = slicer.vtkOrientedImageData()
        i, j, k = volumeNode.GetImageData().GetDimensions()
        reference.SetExtent(0, i - 1, 0, j - 1, 0, k - 1)
        reference.SetImageToWorldMatrix(numpyToMatrix(ijkToWorld))
        return reference

    def _orderedSegmentIds(self, segmentation: Any) -> list[str]:
        # The order a .seg.nrrd stores them (layer by layer), so node ids match `lnmstaging` on the saved file.
        ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
        return sorted(ids, key=lambda segmentId: (segmentation.GetLayerIndex(segmentId), ids.index(segmentId)))

    def nodeRegionsFromSegmentation(
        self, segmentationNode: Any, volumeNode: Any, splitIslands: bool = False
    ) -> tuple[list[NodeRegion], list[str], dict[int, str]]:
        """One NodeRegion per non-empty segment (or per island with ``splitIslands``) on the volume's grid.

        Works whatever the segmentation's own geometry or parent transform: each segment's labelmap is
        resampled (nearest neighbour) onto the volume's grid in world space. Returns (nodes, names of the
        skipped empty segments, node_id -> segment ID).
        """
        if segmentationNode is None:
            raise InputError(None, "Select a segmentation with one segment per lymph node.")
        segmentation = segmentationNode.GetSegmentation()
        name = segmentationNode.GetName()
        if segmentation is None or segmentation.GetNumberOfSegments() == 0:
            raise InputError(name, "has no segments; draw the lymph nodes with the Segment Editor first")
        labelmapName = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        if not segmentation.ContainsRepresentation(labelmapName):
            # e.g. segments imported from models: voxelize them (on the segmentation's reference geometry).
            if not segmentation.CreateRepresentation(labelmapName):
                raise InputError(name, "cannot be converted to a binary labelmap")

        ijkToWorld = self.ijkToWorldMatrix(volumeNode)
        reference = self._referenceImage(volumeNode, ijkToWorld)
        nodes: list[NodeRegion] = []
        skipped: list[str] = []
        segmentOfNode: list[str] = []
        layerCache: dict[int, tuple[np.ndarray, tuple[int, int, int]] | None] = {}
        for segmentId in self._orderedSegmentIds(segmentation):
            segment = segmentation.GetSegment(segmentId)
            layer = segmentation.GetLayerIndex(segmentId)
            if layer not in layerCache:
                layerCache[layer] = self._layerOnReference(segmentationNode, segmentId, reference)
            onReference = layerCache[layer]
            regions = []
            if onReference is not None:
                labels, offset = onReference
                mask = labels == segment.GetLabelValue()
                regions = regions_from_mask(mask, segment.GetName(), segment.GetLabelValue(), splitIslands)
            if not regions:
                skipped.append(segment.GetName())
                continue
            for regionName, labelValue, regionOffset, regionMask in regions:
                start = tuple(int(a + b) for a, b in zip(offset, regionOffset, strict=True))
                nodes.append(NodeRegion(0, regionName, int(labelValue), start, regionMask))
                segmentOfNode.append(segmentId)
        if not nodes:
            raise InputError(name, "has no labelled voxel inside the volume (empty segments, or the segmentation does not overlap the image)")
        number_nodes(nodes)
        return nodes, skipped, {node.node_id: segmentId for node, segmentId in zip(nodes, segmentOfNode, strict=True)}

    def _layerOnReference(self, segmentationNode: Any, segmentId: str, reference: Any) -> tuple[np.ndarray, tuple[int, int, int]] | None:
        """The segment's shared labelmap layer resampled on the reference grid, cropped to where it has data.

        Returns (labels (k, j, i), offset (k, j, i)) or None when the layer is empty or outside the image.
        The layer holds every segment of that layer, so callers compare with each segment's label value.
        """
        layerImage = slicer.vtkOrientedImageData()
        # applyParentTransform: the segmentation's own (linear or not) transform is honoured here.
        slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(segmentationNode, segmentId, layerImage, True)
        extent = layerImage.GetExtent()
        if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
            return None
        resampled = slicer.vtkOrientedImageData()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(layerImage, reference, resampled, False, False):
            return None
        e = resampled.GetExtent()
        if e[1] < e[0] or e[3] < e[2] or e[5] < e[4] or resampled.GetPointData().GetScalars() is None:
            return None
        shape = (e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
        labels = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(shape)
        return labels, (e[4], e[2], e[0])

    def prepareInputs(self, volumeNode: Any, segmentationNode: Any, splitIslands: bool = False) -> PreparedInputs:
        """Main-thread step: read everything the prediction needs out of the scene."""
        volume = self.volumeFromNode(volumeNode)
        nodes, skipped, segmentIds = self.nodeRegionsFromSegmentation(segmentationNode, volumeNode, splitIslands)
        return PreparedInputs(volumeNode, segmentationNode, volume, nodes, skipped, segmentIds, self.ijkToWorldMatrix(volumeNode))

    # ------------------------------------------------------------------ prediction (no MRML: thread-safe)

    @staticmethod
    def clinicalData(clinical: Any) -> Any:
        """Clinical variables for the library: a ClinicalData, or a mapping (age, sex, t_stage) turned into one."""
        if clinical is None or not isinstance(clinical, Mapping):
            return clinical
        values = {key: value for key, value in clinical.items() if value not in (None, "")}
        if not values:
            return None
        from LNMStagingLib.prediction import ClinicalData

        return ClinicalData(**values)

    @staticmethod
    def runPrediction(
        prepared: PreparedInputs,
        clinical: Any = None,
        modelPath: str | Path | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
    ) -> Any:
        """Library step (may run in a worker thread): returns LNMStagingLib's PredictionResult."""
        try:
            from LNMStagingLib.case import Case
            from LNMStagingLib.prediction import predict_case
        except ImportError as error:
            raise LNMStagingError(
                f"The prediction library cannot be loaded ({error}). Install the dependencies (PyTorch and "
                "Resources/requirements.txt) from the LNMStaging module, then try again."
            ) from error
        case = Case.from_volume(
            prepared.volume, prepared.nodes, prepared.volumeNode.GetName(), prepared.segmentationNode.GetName(), prepared.skipped
        )
        bundle = Path(modelPath) if modelPath else None
        return predict_case(case, LNMStagingLogic.clinicalData(clinical), bundle, progress, cancel)

    # ------------------------------------------------------------------ outputs

    def writeOutputs(self, prepared: PreparedInputs, result: Any) -> PredictionOutputs:
        """Main-thread step: table, recoloured segments, heatmap volume and traversal sequences.

        A rerun on the same segmentation updates the nodes of the previous run and removes the ones it no
        longer needs, so the scene's node count does not grow.
        """
        scene = prepared.volumeNode.GetScene()
        scope = prepared.segmentationNode.GetID()
        used: set[str] = set()
        baseName = prepared.segmentationNode.GetName()

        def output(className: str, role: str, name: str) -> Any:
            used.add(role)
            return self._outputNode(scene, className, scope, role, name)

        tableNode = output("vtkMRMLTableNode", "nodes", f"{baseName} LNM nodes")
        self._fillTable(tableNode, self.nodeTableColumns(result))
        patientTableNode = output("vtkMRMLTableNode", "patient", f"{baseName} LNM patient")
        self._fillTable(patientTableNode, self.patientTableColumns(result, prepared.skipped))
        self._recolorSegments(prepared, result)

        heatmapNode = None
        heatmap = getattr(result, "heatmap", None)
        if heatmap is not None:
            heatmapNode = output("vtkMRMLScalarVolumeNode", "heatmap", f"{baseName} Grad-CAM")
            self._fillHeatmap(heatmapNode, prepared.volumeNode, np.asarray(heatmap, dtype=np.float32))
            self._showHeatmap(scene, prepared.volumeNode, heatmapNode)

        outputs = PredictionOutputs(result, list(prepared.skipped), tableNode, patientTableNode, heatmapNode)
        regions = {node.node_id: node for node in prepared.nodes}
        for nodeId, traversal in sorted((getattr(result, "traversals", None) or {}).items()):
            frames = traversal.get("growth") if isinstance(traversal, Mapping) else None
            if frames is None or nodeId not in regions:
                continue
            region = regions[nodeId]
            sequenceNode = output("vtkMRMLSequenceNode", f"traversal:{nodeId}", f"{region.segment_name} growth traversal")
            geometry = self.frameToWorld(prepared, region, np.asarray(frames).shape[1:], traversal.get("patch_to_image"))
            self._fillSequence(sequenceNode, np.asarray(frames, dtype=np.float32), geometry, region.segment_name)
            browserNode = output("vtkMRMLSequenceBrowserNode", f"browser:{nodeId}", f"{region.segment_name} growth traversal browser")
            self._connectBrowser(scene, browserNode, sequenceNode, scope, f"proxy:{nodeId}", used)
            outputs.sequenceNodes[nodeId] = sequenceNode
            outputs.browserNodes[nodeId] = browserNode

        self._removeStaleOutputs(scene, scope, used)
        return outputs

    def predict(
        self,
        volumeNode: Any,
        segmentationNode: Any,
        clinical: Any = None,
        modelPath: str | Path | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
        splitIslands: bool = False,
    ) -> PredictionOutputs:
        """Predict on a volume + segmentation and show the results in their scene (blocking)."""
        prepared = self.prepareInputs(volumeNode, segmentationNode, splitIslands)
        result = self.runPrediction(prepared, clinical, modelPath, progress, cancel)
        return self.writeOutputs(prepared, result)

    # The library's PredictionResult is read only here: one place to change if its fields move.
    @staticmethod
    def nodeTableColumns(result: Any) -> list[tuple[str, list]]:
        rows = list(result.nodes)

        def measure(row: Any, name: str) -> float:
            return float(getattr(row.measurements, name))

        def criteria(row: Any) -> str:
            value = row.criteria
            if isinstance(value, Mapping):
                return "; ".join(f"{key}: {item}" for key, item in value.items())
            if isinstance(value, (list, tuple)):
                return "; ".join(str(item) for item in value)
            return "" if value is None else str(value)

        return [
            ("Node", [int(row.node_id) for row in rows]),
            ("Segment", [str(row.segment_name) for row in rows]),
            ("Probability", [float(row.probability) for row in rows]),
            ("Std", [float(row.std) for row in rows]),
            ("Short axis (mm)", [measure(row, "short_axis_mm") for row in rows]),
            ("Long axis (mm)", [measure(row, "long_axis_mm") for row in rows]),
            ("Axis ratio", [measure(row, "axis_ratio") for row in rows]),
            ("Convexity", [measure(row, "convexity") for row in rows]),
            ("Compactness", [measure(row, "compactness") for row in rows]),
            ("Criteria", [criteria(row) for row in rows]),
        ]

    @staticmethod
    def patientTableColumns(result: Any, skipped: list[str]) -> list[tuple[str, list]]:
        return [
            ("Probability", [float(result.probability)]),
            ("Std", [float(result.std)]),
            ("Decision", [str(result.decision)]),
            ("Uncertain", [str(bool(result.uncertain))]),
            ("Skipped segments", [", ".join(skipped)]),
        ]

    def _outputNode(self, scene: Any, className: str, scope: str, role: str, name: str) -> Any:
        for index in range(scene.GetNumberOfNodesByClass(className)):
            node = scene.GetNthNodeByClass(index, className)
            # GetNthNodeByClass also returns subclasses; the exact class keeps roles unambiguous.
            if node.GetClassName() == className and node.GetAttribute(SCOPE_ATTRIBUTE) == scope and node.GetAttribute(OUTPUT_ATTRIBUTE) == role:
                node.SetName(name)
                return node
        node = scene.AddNewNodeByClass(className, name)
        node.SetAttribute(OUTPUT_ATTRIBUTE, role)
        node.SetAttribute(SCOPE_ATTRIBUTE, scope)
        return node

    def _removeStaleOutputs(self, scene: Any, scope: str, used: set[str]) -> None:
        stale = []
        for index in range(scene.GetNumberOfNodes()):
            node = scene.GetNthNode(index)
            if node.GetAttribute(SCOPE_ATTRIBUTE) == scope and node.GetAttribute(OUTPUT_ATTRIBUTE) not in (None, *used):
                stale.append(node)
        for node in stale:
            self.removeNodeWithDependents(scene, node)

    @staticmethod
    def removeNodeWithDependents(scene: Any, node: Any) -> None:
        # MRML's RemoveNode leaves display and storage nodes behind; remove them too.
        dependents = []
        if node.IsA("vtkMRMLDisplayableNode"):
            dependents += [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            dependents += [node.GetNthStorageNode(n) for n in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for dependent in dependents:
            if dependent is not None and dependent.GetScene() is scene:
                scene.RemoveNode(dependent)

    @staticmethod
    def _fillTable(tableNode: Any, columns: list[tuple[str, list]]) -> None:
        table = vtk.vtkTable()
        for name, values in columns:
            if values and all(isinstance(value, (int, np.integer)) for value in values):
                array = vtk.vtkIntArray()
            elif values and all(isinstance(value, (float, np.floating)) for value in values):
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

    def _recolorSegments(self, prepared: PreparedInputs, result: Any) -> None:
        segmentation = prepared.segmentationNode.GetSegmentation()
        best: dict[str, float] = {}
        for row in result.nodes:
            segmentId = prepared.segmentIds.get(int(row.node_id))
            if segmentId is not None:
                best[segmentId] = max(best.get(segmentId, 0.0), float(row.probability))
        for segmentId, probability in best.items():
            segment = segmentation.GetSegment(segmentId)
            if segment is None:
                continue
            if not segment.HasTag(ORIGINAL_COLOR_TAG):
                segment.SetTag(ORIGINAL_COLOR_TAG, " ".join(f"{c:.6g}" for c in segment.GetColor()))
            segment.SetTag(PROBABILITY_TAG, f"{probability:.6f}")
            segment.SetColor(*probabilityColor(probability))

    def _fillHeatmap(self, heatmapNode: Any, volumeNode: Any, heatmap: np.ndarray) -> None:
        dims = volumeNode.GetImageData().GetDimensions()
        if heatmap.shape != (dims[2], dims[1], dims[0]):
            raise LNMStagingError(f"the heatmap has shape {heatmap.shape}, the volume (k, j, i) {(dims[2], dims[1], dims[0])}")
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        heatmapNode.SetIJKToRASMatrix(ijkToRas)
        # Same parent transform as the input: identical geometry in every respect.
        heatmapNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        image = vtk.vtkImageData()
        image.SetDimensions(dims)
        scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(heatmap).ravel(), deep=True, array_type=vtk.VTK_FLOAT)
        image.GetPointData().SetScalars(scalars)
        heatmapNode.SetAndObserveImageData(image)
        heatmapNode.CreateDefaultDisplayNodes()
        display = heatmapNode.GetDisplayNode()
        scene = volumeNode.GetScene()
        colorId = next((nodeId for nodeId in HEATMAP_COLOR_NODE_IDS if scene.GetNodeByID(nodeId) is not None), None)
        if colorId:
            display.SetAndObserveColorNodeID(colorId)
        high = float(heatmap.max()) if heatmap.size and heatmap.max() > 0 else 1.0
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, high)
        # Low attributions transparent, so the image stays readable under the overlay.
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(0.1 * high)
        display.SetUpperThreshold(max(high, 1.0))

    @staticmethod
    def _showHeatmap(scene: Any, volumeNode: Any, heatmapNode: Any) -> None:
        # Slice composite nodes exist only where there are slice views (Slicer); a bare scene has none.
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
            composite.SetBackgroundVolumeID(volumeNode.GetID())
            composite.SetForegroundVolumeID(heatmapNode.GetID())
            composite.SetForegroundOpacity(HEATMAP_FOREGROUND_OPACITY)

    def frameToWorld(self, prepared: PreparedInputs, region: NodeRegion, frameShape: tuple[int, ...], patchToImage: Any = None) -> np.ndarray:
        """4x4 taking a frame's (col, row, 0, 1) to world RAS, so the traversal shows over its node.

        With the patch's ``patch_to_image`` (frame pixel -> input index) the frame lands exactly on the
        patch; without it, the frame spans the node's in-plane bounding box on its middle slice.
        """
        if patchToImage is not None:
            return prepared.ijkToWorld @ np.asarray(patchToImage, dtype=float)
        rows, cols = int(frameShape[0]), int(frameShape[1])
        k0, j0, i0 = region.offset
        nk, nj, ni = region.mask.shape
        side = max(ni, nj) * 1.5  # a margin around the node, as the patches have
        centre = np.array([i0 + (ni - 1) / 2.0, j0 + (nj - 1) / 2.0, k0 + (nk - 1) / 2.0])
        frameToIndex = np.eye(4)
        frameToIndex[0, 0] = side / cols
        frameToIndex[1, 1] = side / rows
        frameToIndex[:3, 3] = centre - np.array([side / cols * (cols - 1) / 2.0, side / rows * (rows - 1) / 2.0, 0.0])
        return prepared.ijkToWorld @ frameToIndex

    @staticmethod
    def _fillSequence(sequenceNode: Any, frames: np.ndarray, frameToWorld: np.ndarray, name: str) -> None:
        sequenceNode.RemoveAllDataNodes()
        sequenceNode.SetIndexName("frame")
        sequenceNode.SetIndexUnit("")
        sequenceNode.SetIndexType(sequenceNode.NumericIndex)
        for frameIndex, frame in enumerate(frames):
            frameNode = slicer.vtkMRMLScalarVolumeNode()
            frameNode.SetName(f"{name} frame {frameIndex}")
            frameNode.SetIJKToRASMatrix(numpyToMatrix(frameToWorld))
            image = vtk.vtkImageData()
            image.SetDimensions(frame.shape[1], frame.shape[0], 1)
            image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(frame).ravel(), deep=True, array_type=vtk.VTK_FLOAT))
            frameNode.SetAndObserveImageData(image)
            sequenceNode.SetDataNodeAtValue(frameNode, str(frameIndex))

    def _connectBrowser(self, scene: Any, browserNode: Any, sequenceNode: Any, scope: str, proxyRole: str, used: set[str]) -> None:
        if browserNode.GetMasterSequenceNode() is not sequenceNode:
            browserNode.SetAndObserveMasterSequenceNodeID(sequenceNode.GetID())
        browserNode.SetPlaybackLooped(True)
        browserNode.SetSelectedItemNumber(0)
        # The Sequences logic (registered in Slicer, or by the caller of slicer-core) creates the proxy node;
        # tag it so a rerun keeps it and a stale one is removed with the others.
        proxy = browserNode.GetProxyNode(sequenceNode)
        if proxy is not None:
            proxy.SetAttribute(OUTPUT_ATTRIBUTE, proxyRole)
            proxy.SetAttribute(SCOPE_ATTRIBUTE, scope)
            used.add(proxyRole)

    # ------------------------------------------------------------------ model

    @staticmethod
    def modelCardText(modelPath: str | Path | None) -> str:
        """The model bundle's card for people (MODEL_CARD.md), or one line saying why there is none."""
        from LNMStagingLib.bundle import CARD_MD, resolve_bundle

        try:
            bundle = resolve_bundle(str(modelPath) if modelPath else None)
        except LNMStagingError as error:
            return str(error)
        card = bundle / CARD_MD
        if not card.is_file():
            return f"{bundle}: this bundle has no {CARD_MD}."
        return card.read_text(encoding="utf-8", errors="replace")
