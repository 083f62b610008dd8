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


EMPTY = "is empty"
LOST_ON_GRID = ("has no voxel left on the image grid (it lies outside the image, or is thinner than a voxel "
                "there, when put on the image's grid)")


@dataclass
class SegmentationResult:
    """The nodes read from a segmentation, and every drawn segment or label that did not become a node.

    ``skipped`` names them (in file order); ``reasons`` maps each of those names to why (default "is empty").
    """

    nodes: list[NodeRegion]
    skipped: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def skip(self, name: str, reason: str) -> None:
        """Record that ``name`` was drawn but gives no node, and why."""
        self.skipped.append(name)
        self.reasons[name] = reason

    def extend(self, other: SegmentationResult) -> None:
        self.nodes.extend(other.nodes)
        for name in other.skipped:
            self.skip(name, other.reasons.get(name, EMPTY))


def regions_from_mask(mask: np.ndarray, name: str, label_value: int, split_islands: bool,
                      origin: tuple[int, int, int] = (0, 0, 0)) -> list[tuple[str, int, tuple, np.ndarray]]:
    """Crop a boolean mask to its bounding box; optionally one region per connected component, largest first,
    named ``<name>_<n>``.

    Args:
        mask: the label's voxels (full size, or already cropped: then ``origin`` is the crop's image index).
        name: the segment's name.
        label_value: the segment's label value.
        split_islands: one region per 26-connected component.
        origin: image index (k, j, i) of ``mask[0, 0, 0]``.

    Returns:
        (name, label value, offset, cropped mask) per region.
    """
    def shifted(box) -> tuple[int, ...]:
        return tuple(o + s.start for o, s in zip(origin, box, strict=True))

    if not split_islands:
        box = ndimage.find_objects(mask.astype(np.uint8))
        if not box or box[0] is None:
            return []
        region = box[0]
        return [(name, label_value, shifted(region), mask[region].copy())]
    components, count = ndimage.label(mask, structure=ISLAND_CONNECTIVITY)
    if count == 0:
        return []
    boxes = ndimage.find_objects(components)
    sizes = ndimage.sum_labels(mask, components, index=np.arange(1, count + 1))
    order = sorted(range(count), key=lambda c: (-sizes[c], c))
    regions = []
    for rank, component in enumerate(order, start=1):
        box = boxes[component]
        regions.append((f"{name}_{rank}", label_value, shifted(box), components[box] == component + 1))
    return regions


# Above this label value a per-value scan is cheaper than find_objects' list of one box per possible value.
_MAX_INDEXED_LABEL = 1 << 20


def _indexable(labels: np.ndarray) -> bool:
    """Whether ``labels`` can go to find_objects / bincount as they are: integers in 0..2**20."""
    return (np.issubdtype(labels.dtype, np.integer) and labels.size > 0 and int(labels.min()) >= 0
            and int(labels.max()) <= _MAX_INDEXED_LABEL)


def present_values(labels: np.ndarray) -> list[int]:
    """The non-zero label values in ``labels``, ascending (one find_objects pass, not a sort, for ordinary
    maps)."""
    labels = np.asarray(labels)
    if _indexable(labels):
        return [index + 1 for index, box in enumerate(ndimage.find_objects(labels)) if box is not None]
    return [int(v) for v in np.unique(labels) if v != 0]


def _label_boxes(labels: np.ndarray, values: list[int]) -> dict[int, tuple[slice, ...] | None]:
    """The bounding box of every label value in one pass over the volume (None: the value is absent)."""
    if labels.size == 0 or not values:
        return {value: None for value in values}
    if min(values) > 0 and _indexable(labels):
        objects = ndimage.find_objects(labels)
        return {value: objects[value - 1] if value <= len(objects) else None for value in values}
    boxes = {}
    for value in values:
        found = ndimage.find_objects((labels == value).astype(np.uint8))
        boxes[value] = found[0] if found else None
    return boxes


def nodes_from_label_array(
    labels: np.ndarray, segments: list[SegmentInfo] | None = None, split_islands: bool = False
) -> SegmentationResult:
    """Nodes from one labelmap array (k, j, i). ``segments`` names the label values (a .seg.nrrd layer);
    without it every non-zero label is a node named ``Label_<value>``.

    Args:
        labels: the integer labelmap.
        segments: the segments of this layer, or None for a plain labelmap.
        split_islands: one node per connected component.

    Returns:
        The nodes (node_id 0 until :func:`number_nodes`) and the segments that are empty.
    """
    labels = np.asarray(labels)
    result = SegmentationResult(nodes=[])
    # one find_objects pass, then each label is compared inside its own box only (not nodes x volume)
    if segments is None and _indexable(labels):
        boxes = {index + 1: box for index, box in enumerate(ndimage.find_objects(labels)) if box is not None}
        segments = [SegmentInfo(f"Label_{v}", v, 0) for v in boxes]
    else:
        if segments is None:
            segments = [SegmentInfo(f"Label_{v}", v, 0) for v in present_values(labels)]
        boxes = _label_boxes(labels, [segment.label_value for segment in segments])
    for segment in segments:
        box = boxes.get(segment.label_value)
        regions = [] if box is None else regions_from_mask(
            labels[box] == segment.label_value, segment.name, segment.label_value, split_islands,
            tuple(s.start for s in box))
        if not regions:
            result.skip(segment.name, EMPTY)
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


def check_segment_infos(infos: list[SegmentInfo], n_layers: int, source: Path) -> list[str]:
    """Refuse segment declarations that would double or invent nodes; name those whose layer is missing.

    Args:
        infos: the declared segments.
        n_layers: layers in the file.
        source: the file, for the messages.

    Returns:
        Names of segments declared on a layer the file does not have.
    """
    seen: dict[tuple[int, int], str] = {}
    for info in infos:
        if info.label_value <= 0:
            raise InputError(source, f"segment '{info.name}' has label value {info.label_value}; 0 is the background "
                                     "and negative values are not labels")
        key = (info.layer, info.label_value)
        if key in seen:
            raise InputError(source, f"segments '{seen[key]}' and '{info.name}' share label value {info.label_value} "
                                     f"in layer {info.layer}: the same voxels would count as two nodes")
        seen[key] = info.name
    return [info.name for info in infos if not 0 <= info.layer < n_layers]


def read_segmentation(
    path: str | Path, reference: sitk.Image, split_islands: bool = False
) -> SegmentationResult:
    """Read a labelmap or ``.seg.nrrd`` onto ``reference``'s grid (nearest neighbour when the grids differ).

    Every segment or label drawn in the file becomes a node or is named in ``skipped`` with the reason:
    empty, lost when put on the image grid, declared on a missing layer, or present in a layer without a
    segment declaring it.

    Args:
        path: the segmentation file.
        reference: the image whose grid the nodes are put on.
        split_islands: every connected component of a label becomes its own node.

    Returns:
        The nodes and the segments or labels that gave none, with the reasons.

    Raises InputError for an unreadable file, one outside the image, one without any labelled voxel, or
    segment declarations that would double nodes (duplicate or zero label values).
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
    missing_layer = [] if infos is None else check_segment_infos(infos, len(layers), path)
    for layer_index, layer in enumerate(layers):
        drawn = set(present_values(sitk.GetArrayViewFromImage(layer)))
        array = _on_reference_grid(layer, reference, path)
        kept = set(present_values(array)) if drawn else set()
        if infos is None:
            layer_segments = None
            declared = drawn
        else:
            layer_segments = [s for s in infos if s.layer == layer_index]
            declared = {s.label_value for s in layer_segments}
            for value in sorted(drawn - declared):
                result.skip(f"Label_{value} (layer {layer_index})",
                            "is drawn in the file but no segment declares it (not a node)")
        if layer_segments is not None and not layer_segments:
            continue
        layer_result = nodes_from_label_array(array, layer_segments, split_islands)
        if layer_segments is None:  # labels the resampling lost do not appear in the resampled array at all
            lost = sorted(drawn - kept)
            layer_result.extend(SegmentationResult([], [f"Label_{v}" for v in lost],
                                                   {f"Label_{v}": LOST_ON_GRID for v in lost}))
        else:
            for segment in layer_segments:
                if segment.label_value in drawn and segment.label_value not in kept:
                    layer_result.reasons[segment.name] = LOST_ON_GRID
        result.extend(layer_result)
    for name in missing_layer:
        result.skip(name, "is declared on a layer the file does not have")
    if not result.nodes:
        raise InputError(path, "no labelled voxel lies inside the image (segmentation does not overlap the image)")
    number_nodes(result.nodes)
    return result
