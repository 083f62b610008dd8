"""Node segmentations: a labelmap (one node per label value) or a Slicer ``.seg.nrrd`` (one node per segment).

Every node becomes a :class:`NodeRegion` on the image grid: a cropped boolean mask plus its offset, so
overlapping segments (Slicer layers) and many nodes cost little memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from .image import read_any

_SEGMENT_KEY = re.compile(r"^Segment(\d+)_ID$")
# 26-connectivity: with thick MRI slices a node's cross-sections often touch only diagonally.
ISLAND_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass
class NodeRegion:
    """One lymph node: ``mask`` (k, j, i) cropped; ``offset`` is the image index (k, j, i) of mask[0, 0, 0]."""

    node_id: int
    segment_name: str
    label_value: int
    offset: tuple[int, int, int]
    mask: np.ndarray
    segment_id: str = ""  # the segment's ID in a .seg.nrrd (SegmentN_ID); "" for a plain labelmap

    @property
    def voxel_count(self) -> int:
        return int(np.count_nonzero(self.mask))

    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.mask.shape, strict=True))


@dataclass
class SegmentInfo:
    name: str
    label_value: int
    layer: int
    color: tuple[float, float, float] | None = None
    segment_id: str = ""


@dataclass
class SegmentationResult:
    nodes: list[NodeRegion]
    skipped: list[str] = field(default_factory=list)  # empty segments / labels, reported to the user


def regions_from_mask(mask: np.ndarray, name: str, label_value: int, split_islands: bool) -> list[tuple[str, int, tuple, np.ndarray]]:
    """Crop a full-size boolean mask to its bounding box; optionally one region per connected component,
    largest first, named ``<name>_<n>``."""
    if not split_islands:
        box = ndimage.find_objects(mask.astype(np.uint8))
        if not box or box[0] is None:
            return []
        region = box[0]
        return [(name, label_value, tuple(s.start for s in region), mask[region].copy())]
    components, count = ndimage.label(mask, structure=ISLAND_CONNECTIVITY)
    if count == 0:
        return []
    boxes = ndimage.find_objects(components)
    sizes = ndimage.sum_labels(mask, components, index=np.arange(1, count + 1))
    order = sorted(range(count), key=lambda c: (-sizes[c], c))
    regions = []
    for rank, component in enumerate(order, start=1):
        box = boxes[component]
        regions.append((f"{name}_{rank}", label_value, tuple(s.start for s in box), components[box] == component + 1))
    return regions


def nodes_from_label_array(
    labels: np.ndarray, segments: list[SegmentInfo] | None = None, split_islands: bool = False
) -> SegmentationResult:
    """Nodes from one labelmap array (k, j, i). ``segments`` names the label values (a .seg.nrrd layer);
    without it every non-zero label is a node named ``Label_<value>``."""
    labels = np.asarray(labels)
    if segments is None:
        values = [int(v) for v in np.unique(labels) if v != 0]
        segments = [SegmentInfo(f"Label_{v}", v, 0) for v in values]
    result = SegmentationResult(nodes=[])
    for segment in segments:
        mask = labels == segment.label_value
        regions = regions_from_mask(mask, segment.name, segment.label_value, split_islands)
        if not regions:
            result.skipped.append(segment.name)
        for name, value, offset, region_mask in regions:
            result.nodes.append(NodeRegion(0, name, value, offset, region_mask, segment.segment_id))
    return result


def number_nodes(nodes: list[NodeRegion]) -> list[NodeRegion]:
    for node_id, node in enumerate(nodes, start=1):
        node.node_id = node_id
    return nodes


def read_segment_infos(image: sitk.Image) -> list[SegmentInfo] | None:
    """Segment metadata of a Slicer ``.seg.nrrd`` (None for a plain labelmap)."""
    keys = set(image.GetMetaDataKeys())
    indices = sorted(int(m.group(1)) for key in keys if (m := _SEGMENT_KEY.match(key)))
    if not indices:
        return None
    infos = []
    for index in indices:
        def value(field_name: str, default: str, _index: int = index) -> str:
            key = f"Segment{_index}_{field_name}"
            return image.GetMetaData(key) if key in keys else default

        color = None
        try:
            color = tuple(float(c) for c in value("Color", "").split()[:3]) or None
        except ValueError:
            color = None
        infos.append(
            SegmentInfo(
                name=value("Name", f"Segment_{index}"),
                label_value=int(float(value("LabelValue", "1"))),
                layer=int(float(value("Layer", "0"))),
                color=color,
                segment_id=value("ID", ""),
            )
        )
    return infos


def _split_layers(image: sitk.Image, source: Path) -> list[sitk.Image]:
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 3 and components == 1:
        return [image]
    if image.GetDimension() == 3:
        return [sitk.VectorIndexSelectionCast(image, layer) for layer in range(components)]
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        layers = []
        for layer in range(size[3]):
            extract_size = size[:3] + [0]
            layers.append(sitk.Extract(image, extract_size, [0, 0, 0, layer]))
        return layers
    raise InputError(source, f"is a {image.GetDimension()}D segmentation; a 3D labelmap or .seg.nrrd is needed")


def _physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    size = np.array(image.GetSize()[:3], dtype=float)
    corners = []
    for corner in np.ndindex(2, 2, 2):
        index = (np.array(corner) * (size - 1)).tolist()
        corners.append(image.TransformContinuousIndexToPhysicalPoint([c for c in index]))
    corners = np.array(corners)
    half_voxel = np.abs(np.array(image.GetDirection()).reshape(3, 3) @ np.array(image.GetSpacing()[:3])) / 2
    return corners.min(axis=0) - half_voxel, corners.max(axis=0) + half_voxel


def _on_reference_grid(layer: sitk.Image, reference: sitk.Image, source: Path) -> np.ndarray:
    same_grid = (
        layer.GetSize() == reference.GetSize()
        and np.allclose(layer.GetSpacing(), reference.GetSpacing(), atol=1e-4)
        and np.allclose(layer.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        and np.allclose(layer.GetDirection(), reference.GetDirection(), atol=1e-4)
    )
    if same_grid:
        return sitk.GetArrayFromImage(layer)
    low, high = _physical_bounds(layer)
    reference_low, reference_high = _physical_bounds(reference)
    if np.any(high <= reference_low) or np.any(low >= reference_high):
        raise InputError(source, "does not overlap the image in physical space")
    resampled = sitk.Resample(layer, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, layer.GetPixelID())
    return sitk.GetArrayFromImage(resampled)


def read_segmentation(
    path: str | Path, reference: sitk.Image, split_islands: bool = False
) -> SegmentationResult:
    """Read a labelmap or ``.seg.nrrd`` onto ``reference``'s grid (nearest neighbour when the grids differ).

    Args:
        path: the segmentation file.
        reference: the image whose grid the nodes are put on.
        split_islands: every connected component of a label becomes its own node.

    Returns:
        The nodes and the names of empty segments that were skipped.

    Raises InputError for an unreadable file, one outside the image, or one without any labelled voxel.
    """
    path = Path(path)
    image = read_any(path)
    infos = read_segment_infos(image)
    layers = _split_layers(image, path)
    if layers[0].GetDimension() != 3:
        raise InputError(path, f"is a {layers[0].GetDimension()}D segmentation; a 3D one is needed")
    if layers[0].GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        values = sitk.GetArrayViewFromImage(layers[0])
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            raise InputError(path, "holds non-integer labels; a labelmap needs integer label values")
    if all(not np.any(sitk.GetArrayViewFromImage(layer)) for layer in layers):
        raise InputError(path, "segmentation is empty: it has no labelled voxel")
    result = SegmentationResult(nodes=[])
    for layer_index, layer in enumerate(layers):
        array = _on_reference_grid(layer, reference, path)
        layer_segments = None if infos is None else [s for s in infos if s.layer == layer_index]
        if infos is not None and not layer_segments:
            continue
        layer_result = nodes_from_label_array(array, layer_segments, split_islands)
        result.nodes.extend(layer_result.nodes)
        result.skipped.extend(layer_result.skipped)
    if not result.nodes:
        raise InputError(path, "no labelled voxel lies inside the image (segmentation does not overlap the image)")
    number_nodes(result.nodes)
    return result
