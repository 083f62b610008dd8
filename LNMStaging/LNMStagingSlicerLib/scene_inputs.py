"""From the scene to files the prediction child reads: the volume as NRRD, the nodes as a ``.seg.nrrd``.

Runs inside Slicer and on ``slicer-core`` alike: only the MRML classes, vtk and numpy; the scene comes from
the input nodes, never from ``slicer.mrmlScene``. The user's nodes are only read: the files are written
from nodes of a private scene.

Geometry: the files carry the world geometry the user sees (a linear parent transform applied), so the
child's outputs (heatmap, traversal placement) come back in world coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .errors import SceneInputError

IMAGE_NAME = "image.nrrd"
SEGMENTATION_NAME = "nodes.seg.nrrd"


@dataclass
class ExportedInputs:
    """What the child needs, written to ``folder``, and what mapping its results back needs.

    Attributes:
        imagePath / segmentationPath: the written files.
        segmentNames: segment ID -> name, of every segment written.
        skipped: names of segments not written, each with why ("Node 3 (empty)").
        ijkToWorld: the volume's IJK -> world (RAS) matrix, the parent transform included.
        modality: the volume's DICOM modality ("MR", "CT") or None when unknown.
    """

    imagePath: Path
    segmentationPath: Path
    segmentNames: dict[str, str]
    skipped: list[str] = field(default_factory=list)
    ijkToWorld: np.ndarray = field(default_factory=lambda: np.eye(4))
    modality: str | None = None


def checkVolumeNode(volumeNode: Any) -> None:
    """Refuse what is not a grey-level image volume the child could read, in one sentence."""
    if volumeNode is None:
        raise SceneInputError("Select an input volume (the T2 MRI).")
    name = volumeNode.GetName()
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise SceneInputError(f"{name} is not a scalar volume; select the T2 MRI volume.")
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise SceneInputError(f"{name} is a labelmap; select the image volume and put the nodes in the segmentation.")
    image = volumeNode.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise SceneInputError(f"{name} has no voxels.")
    if image.GetNumberOfScalarComponents() != 1:
        raise SceneInputError(f"{name} has {image.GetNumberOfScalarComponents()} components per voxel; a scalar "
                              "(grey-level) volume is needed.")
    transformNode = volumeNode.GetParentTransformNode()
    if transformNode is not None and not transformNode.IsTransformToWorldLinear():
        # A warping transform would need the voxels resampled; doing it silently would change the image the
        # model sees, so the user decides.
        raise SceneInputError(f"{name} is under the non-linear transform '{transformNode.GetName()}'; harden it "
                              "first (Data module: right-click the volume > Harden transform), then predict again.")


def ijkToWorldMatrix(volumeNode: Any) -> np.ndarray:
    """IJK -> world (RAS) of the volume, a linear parent transform included: the geometry the user sees."""
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    matrix = slicer.util.arrayFromVTKMatrix(ijkToRas)
    transformNode = volumeNode.GetParentTransformNode()
    if transformNode is not None:
        toWorld = vtk.vtkMatrix4x4()
        transformNode.GetMatrixTransformToWorld(toWorld)
        matrix = slicer.util.arrayFromVTKMatrix(toWorld) @ matrix
    return matrix


def volumeModality(volumeNode: Any) -> str | None:
    """The DICOM modality Slicer's DICOM import put on the volume's series (subject hierarchy), else None."""
    scene = volumeNode.GetScene()
    shNode = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode") if scene is not None else None
    if shNode is None:
        return None
    item = shNode.GetItemByDataNode(volumeNode)
    if not item:
        return None
    attribute = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName()
    return (shNode.GetItemAttribute(item, attribute) or "").strip().upper() or None


def orderedSegmentIds(segmentation: Any) -> list[str]:
    """Segment IDs layer by layer, as a ``.seg.nrrd`` stores them."""
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    return sorted(ids, key=lambda segmentId: (segmentation.GetLayerIndex(segmentId), ids.index(segmentId)))


def referenceImage(volumeNode: Any, ijkToWorld: np.ndarray) -> Any:
    """An empty oriented image with the volume's extent and world geometry."""
    reference = slicer.vtkOrientedImageData()
    i, j, k = volumeNode.GetImageData().GetDimensions()
    reference.SetExtent(0, i - 1, 0, j - 1, 0, k - 1)
    reference.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijkToWorld))
    return reference


def _emptyExtent(extent: tuple[int, ...]) -> bool:
    return extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]


def layerOnReference(segmentationNode: Any, segmentId: str, reference: Any) -> Any | None:
    """The shared labelmap layer holding the segment, resampled nearest-neighbour onto the reference grid in
    world space (the segmentation's own geometry and parent transform, linear or not, honoured) and cropped to
    where it has data; None when it is empty or lies outside the reference. One layer holds several segments,
    each under its label value."""
    layerImage = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(segmentationNode, segmentId, layerImage, True)
    if _emptyExtent(layerImage.GetExtent()):
        return None
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(layerImage, reference, resampled, False, False):
        return None
    if _emptyExtent(resampled.GetExtent()) or resampled.GetPointData().GetScalars() is None:
        return None
    return resampled


def segmentOfLayer(layer: Any, labelValue: int) -> Any | None:
    """The segment of ``labelValue`` as a binary (0/1) oriented image on the layer's grid; None when the layer
    holds no voxel of it."""
    binary = (numpy_support.vtk_to_numpy(layer.GetPointData().GetScalars()) == labelValue).astype(np.uint8)
    if not binary.any():
        return None
    segmentImage = slicer.vtkOrientedImageData()
    segmentImage.ShallowCopy(layer)
    segmentImage.CopyDirections(layer)
    segmentImage.GetPointData().SetScalars(numpy_support.numpy_to_vtk(binary, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    return segmentImage


def _writeNode(node: Any, storage: Any, path: Path) -> None:
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)  # written once and read once: speed over size
    if not storage.WriteData(node):
        raise SceneInputError(f"Cannot write the prediction input {path} (is the temporary folder full or read-only?).")


def exportInputs(volumeNode: Any, segmentationNode: Any, folder: Path) -> ExportedInputs:
    """Write the volume and every non-empty segment on the volume's grid into ``folder``.

    Args:
        volumeNode: the T2 volume (a linear parent transform is applied to the written geometry).
        segmentationNode: one segment per lymph node, on any geometry.
        folder: an existing, empty folder the caller owns.

    Returns:
        The written files and the mapping back (see ``ExportedInputs``).

    Raises:
        SceneInputError: an unusable volume or segmentation, in one sentence.
    """
    checkVolumeNode(volumeNode)
    if segmentationNode is None:
        raise SceneInputError("Select a segmentation with one segment per lymph node.")
    segmentation = segmentationNode.GetSegmentation()
    name = segmentationNode.GetName()
    if segmentation is None or segmentation.GetNumberOfSegments() == 0:
        raise SceneInputError(f"{name} has no segments; draw the lymph nodes with the Segment Editor first.")
    labelmapName = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if not segmentation.ContainsRepresentation(labelmapName) and not segmentation.CreateRepresentation(labelmapName):
        raise SceneInputError(f"{name} cannot be converted to a binary labelmap.")

    ijkToWorld = ijkToWorldMatrix(volumeNode)
    reference = referenceImage(volumeNode, ijkToWorld)
    privateScene = slicer.vtkMRMLScene()  # nothing is added to the user's scene
    exportNode = privateScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    exportNode.GetSegmentation().SetSourceRepresentationName(labelmapName)
    segmentNames: dict[str, str] = {}
    skipped: list[str] = []
    layers: dict[int, Any] = {}  # resampled once per shared layer, not once per segment
    for segmentId in orderedSegmentIds(segmentation):
        source = segmentation.GetSegment(segmentId)
        layerIndex = segmentation.GetLayerIndex(segmentId)
        if layerIndex not in layers:
            layers[layerIndex] = layerOnReference(segmentationNode, segmentId, reference)
        image = None if layers[layerIndex] is None else segmentOfLayer(layers[layerIndex], source.GetLabelValue())
        if image is None:
            skipped.append(f"{source.GetName()} (empty, or outside the volume)")
            continue
        segment = slicer.vtkSegment()
        segment.SetName(source.GetName())
        segment.SetColor(source.GetColor())
        segment.AddRepresentation(labelmapName, image)
        exportNode.GetSegmentation().AddSegment(segment, segmentId)
        segmentNames[segmentId] = source.GetName()
    if not segmentNames:
        raise SceneInputError(f"{name} has no labelled voxel inside the volume (empty segments, or the segmentation "
                              "does not overlap the image).")

    folder = Path(folder)
    imagePath, segmentationPath = folder / IMAGE_NAME, folder / SEGMENTATION_NAME
    imageNode = privateScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", volumeNode.GetName())
    imageNode.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToWorld))
    imageNode.SetAndObserveImageData(volumeNode.GetImageData())  # shared, not copied: only read here
    _writeNode(imageNode, slicer.vtkMRMLVolumeArchetypeStorageNode(), imagePath)
    segmentationStorage = slicer.vtkMRMLSegmentationStorageNode()
    # The whole reference grid, so that the child finds the segmentation on exactly the image's grid.
    segmentationStorage.SetCropToMinimumExtent(False)
    exportNode.SetReferenceImageGeometryParameterFromVolumeNode(imageNode)
    _writeNode(exportNode, segmentationStorage, segmentationPath)
    return ExportedInputs(imagePath, segmentationPath, segmentNames, skipped, ijkToWorld, volumeModality(volumeNode))
