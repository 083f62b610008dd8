"""MRML <-> LNMStagingLib conversion and the prediction outputs of the LNMStaging module.

This file must run both inside 3D Slicer and on Kitware's ``slicer-core`` wheel (MRML without the
application), so it imports only numpy, vtk, the ``slicer`` MRML/logic classes and LNMStagingLib. It never
touches qt, ctk, ``slicer.app``, ``slicer.modules``, ``slicer.mrmlScene`` or ``slicer.ScriptedLoadableModule``:
the scene always comes from the input nodes (``node.GetScene()``).

Geometry conventions: MRML stores voxels in RAS, LNMStagingLib in LPS (ITK). Arrays are ``(k, j, i)`` in both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from LNMStagingLib.errors import InputError, LNMStagingError
from LNMStagingLib.volume import Volume

if TYPE_CHECKING:
    from LNMStagingLib.segmentation import NodeRegion

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
    volumeName: str = "volume"  # copied here so the worker thread never reads a MRML node
    segmentationName: str = "segmentation"
    modality: str | None = None  # DICOM modality of the volume ("MR", "CT"), None when unknown

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


def probabilityColor(probability: float) -> tuple[float, float, float]:
    """Green (0) through yellow (0.5) to red (1): the traffic-light reading clinicians expect."""
    p = float(np.clip(probability, 0.0, 1.0))
    return (min(1.0, 2.0 * p), min(1.0, 2.0 * (1.0 - p)), 0.0)


class LNMStagingLogic:
    """Converts MRML nodes to LNMStagingLib objects, runs the prediction and writes its results to the scene.

    ``predict`` does the three steps at once; the module widget calls them separately so that only
    ``runPrediction`` (pure library code, no MRML) runs in a background thread.
    """

    def __init__(self, parent: Any = None) -> None:
        # Slicer loads every .py file beside LNMStaging.py as a candidate module and instantiates the class
        # named like the file with its module object as ``parent``. Marking that module hidden keeps this
        # logic out of the module list and Slicer's start-up free of "failed to instantiate" errors.
        if parent is not None and hasattr(parent, "hidden"):
            parent.hidden = True

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
        matrix = slicer.util.arrayFromVTKMatrix(ijkToRas)
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is not None:
            toWorld = vtk.vtkMatrix4x4()
            transformNode.GetMatrixTransformToWorld(toWorld)
            matrix = slicer.util.arrayFromVTKMatrix(toWorld) @ matrix
        return matrix

    def volumeFromNode(self, volumeNode: Any) -> Volume:
        """The volume as LNMStagingLib sees it: voxels (k, j, i), LPS geometry.

        A linear parent transform is applied to the geometry (the node itself is left untouched); a non-linear
        one is refused by ``checkVolumeNode``.
        """
        self.checkVolumeNode(volumeNode)
        array = slicer.util.arrayFromVolume(volumeNode).copy()
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
        reference.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijkToWorld))
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
        # Imported here: LNMStagingLib.segmentation needs scipy, which Slicer installs on first use only,
        # while this file is loaded at Slicer's start-up (see __init__).
        from LNMStagingLib.segmentation import NodeRegion, number_nodes, regions_from_mask

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

    @staticmethod
    def volumeModality(volumeNode: Any) -> str | None:
        """The volume's DICOM modality ("MR", "CT", ...): the subject hierarchy attribute Slicer's DICOM import
        sets on the series, else the header of the file the volume was read from (as ``lnmstaging predict``
        reads it); None when neither says (NRRD, NIfTI... carry no modality)."""
        scene = volumeNode.GetScene()
        shNode = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode") if scene is not None else None
        if shNode is not None:
            item = shNode.GetItemByDataNode(volumeNode)
            if item:
                name = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName()
                modality = (shNode.GetItemAttribute(item, name) or "").strip().upper()
                if modality:
                    return modality
        storageNode = volumeNode.GetStorageNode()
        fileName = storageNode.GetFileName() if storageNode is not None else None
        if fileName and Path(fileName).exists():
            from LNMStagingLib.imageio import read_modality

            return read_modality(fileName)
        return None

    def prepareInputs(self, volumeNode: Any, segmentationNode: Any, splitIslands: bool = False) -> PreparedInputs:
        """Main-thread step: read everything the prediction needs out of the scene."""
        volume = self.volumeFromNode(volumeNode)
        nodes, skipped, segmentIds = self.nodeRegionsFromSegmentation(segmentationNode, volumeNode, splitIslands)
        return PreparedInputs(
            volumeNode, segmentationNode, volume, nodes, skipped, segmentIds, self.ijkToWorldMatrix(volumeNode),
            volumeNode.GetName(), segmentationNode.GetName(), self.volumeModality(volumeNode),
        )

    # ------------------------------------------------------------------ prediction (no MRML: thread-safe)

    @staticmethod
    def clinicalData(clinical: Any) -> Any:
        """LNMStagingLib's ClinicalData from a ClinicalData or a mapping with ``age`` (years), ``sex`` ("F",
        "M", "female", "male") and ``t_stage`` ("T1".."T4"); missing or empty values stay missing."""
        if clinical is None or not isinstance(clinical, Mapping):
            return clinical
        from LNMStagingLib.cohort import ClinicalData

        try:  # the same reading of typed values as a manifest and the command line
            return ClinicalData.from_text(clinical.get("age"), clinical.get("sex"), clinical.get("t_stage"),
                                          labels=("Age", "Sex", "T stage"))
        except ValueError as error:
            raise InputError(None, str(error)) from None

    @staticmethod
    def runPrediction(
        prepared: PreparedInputs,
        clinical: Any = None,
        modelPath: str | Path | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
        declaredPreset: str | None = None,
    ) -> Any:
        """Library step (may run in a worker thread): returns LNMStagingLib's PredictionResult.

        As ``lnmstaging predict``: the bundle is loaded, then refused when it was made for another preset than
        ``declaredPreset`` (optional, like ``--preset``) or for another modality than the volume's
        (``PreparedInputs.modality``), with the library's one-sentence BundleError."""
        try:
            from LNMStagingLib import bundle, case, prediction  # one statement: import sorting stays stable
        except ImportError as error:
            raise LNMStagingError(
                f"The prediction library cannot be loaded ({error}). Install the dependencies (PyTorch and "
                "Resources/requirements.txt) from the LNMStaging module, then try again."
            ) from error
        inputCase = case.Case.from_volume(
            prepared.volume, prepared.nodes, prepared.volumeName, prepared.segmentationName, prepared.skipped
        )
        if progress is not None:
            progress(0.0, "loading the model")
        started = time.perf_counter()
        modelBundle = bundle.load_bundle(Path(modelPath) if modelPath else None)
        loadTime = time.perf_counter() - started
        prediction.check_intended_input(modelBundle, declaredPreset, prepared.modality)
        result = prediction.predict_case(
            inputCase, LNMStagingLogic.clinicalData(clinical), progress=progress, cancel=cancel, bundle=modelBundle
        )
        result.timings.model_load_s = loadTime
        return result

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

        skipped = self.skippedSegments(prepared, result)
        tableNode = output("vtkMRMLTableNode", "nodes", f"{baseName} LNM nodes")
        self._fillTable(tableNode, self.nodeTableColumns(result))
        patientTableNode = output("vtkMRMLTableNode", "patient", f"{baseName} LNM patient")
        self._fillTable(patientTableNode, self.patientTableColumns(result, skipped))
        self._recolorSegments(prepared, result)

        heatmapNode = output("vtkMRMLScalarVolumeNode", "heatmap", f"{baseName} Grad-CAM")
        self._fillHeatmap(heatmapNode, prepared.volumeNode, np.asarray(result.heatmap, dtype=np.float32))
        self._showHeatmap(scene, prepared.volumeNode, heatmapNode)

        outputs = PredictionOutputs(result, skipped, tableNode, patientTableNode, heatmapNode)
        regions = {node.node_id: node for node in prepared.nodes}
        for nodeId, traversal in sorted(result.traversals.items()):
            frames = traversal.get("growth")
            if frames is None or nodeId not in regions or nodeId not in result.node_patches:
                continue
            region = regions[nodeId]
            sequenceNode = output("vtkMRMLSequenceNode", f"traversal:{nodeId}", f"{region.segment_name} growth traversal")
            geometry = self.frameToWorld(prepared.ijkToWorld, result.node_patches[nodeId], np.asarray(frames).shape[1:])
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
        declaredPreset: str | None = None,
    ) -> PredictionOutputs:
        """Predict on a volume + segmentation and show the results in their scene (blocking)."""
        prepared = self.prepareInputs(volumeNode, segmentationNode, splitIslands)
        result = self.runPrediction(prepared, clinical, modelPath, progress, cancel, declaredPreset)
        return self.writeOutputs(prepared, result)

    # LNMStagingLib's PredictionResult is read in the next three methods and in writeOutputs only.
    @staticmethod
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

    @staticmethod
    def modelContext(result: Any) -> str:
        """The line that must accompany every probability shown: the model, its training data, its intended
        use and "research use only" (LNMStagingLib's ``ModelInfo.context_line``)."""
        return str(result.model.context_line())

    @staticmethod
    def nodeTableColumns(result: Any) -> list[tuple[str, list]]:
        rows = list(result.nodes)
        context = LNMStagingLogic.modelContext(result)
        return [
            ("Node", [int(row.node_id) for row in rows]),
            ("Segment", [str(row.segment_name) for row in rows]),
            ("Probability", [float(row.probability) for row in rows]),
            ("Std", [float(row.std) for row in rows]),
            ("Short axis (mm)", [float(row.short_axis_mm) for row in rows]),
            ("Long axis (mm)", [float(row.long_axis_mm) for row in rows]),
            ("Axis ratio", [float(row.axis_ratio) for row in rows]),
            ("Convexity", [float(row.convexity) for row in rows]),
            ("Compactness", [float(row.compactness) for row in rows]),
            ("Criteria", [LNMStagingLogic.criteriaText(row.criteria) for row in rows]),
            (MODEL_CONTEXT_COLUMN, [context for _ in rows]),
        ]

    @staticmethod
    def patientTableColumns(result: Any, skipped: list[str]) -> list[tuple[str, list]]:
        patient = result.patient
        return [
            ("Probability", [float(patient.probability)]),
            ("Std", [float(patient.std)]),
            ("Decision", [str(patient.decision)]),
            ("Threshold", [float(patient.threshold)]),
            ("Uncertain", ["; ".join(patient.uncertainty_reasons) if patient.uncertain else "no"]),
            ("Model", [f"{result.model.name} {result.model.version}"]),
            ("Skipped", [", ".join(skipped)]),
            (MODEL_CONTEXT_COLUMN, [LNMStagingLogic.modelContext(result)]),
        ]

    @staticmethod
    def skippedSegments(prepared: PreparedInputs, result: Any) -> list[str]:
        """Empty segments (skipped here) and nodes the library could not predict, each with why."""
        return [f"{name} (empty)" for name in prepared.skipped] + [
            f"{item['segment_name']} ({item['reason']})" for item in result.skipped_nodes
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
        for row in result.nodes:  # split islands share a segment: it shows its most suspicious island
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
        slicer.util.updateVolumeFromArray(heatmapNode, heatmap)
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

    @staticmethod
    def frameToWorld(ijkToWorld: np.ndarray, nodePatch: Any, frameShape: tuple[int, ...]) -> np.ndarray:
        """4x4 taking a traversal frame's (col, row, 0, 1) to world RAS: the frame lies exactly where the model's
        patch was cut (the node's largest axial cross-section, centred on it, in the library's canonical LPS
        orientation: patient right on the left, anterior at the top, whatever the volume's own axes).

        ``ijkToWorld``: the input volume's IJK -> world (``PreparedInputs.ijkToWorld``), the grid the library's
        ``NodePatch.patch_to_image`` maps to; ``frame_to_image`` rescales it when the frame has another size."""
        return np.asarray(ijkToWorld, dtype=float) @ np.asarray(nodePatch.frame_to_image(tuple(frameShape)), dtype=float)

    @staticmethod
    def _fillSequence(sequenceNode: Any, frames: np.ndarray, frameToWorld: np.ndarray, name: str) -> None:
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
