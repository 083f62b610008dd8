"""Axial node patches for the models, each with the exact map back to the input image.

Per node: the slice with the largest cross-section plus secondary slices whose area is at least half of
it (configurable). Per patient the largest patches (by node area on that slice) fill at most
``max_patches`` places; the rest is zero padding with ``valid = False``.
``patch_to_image @ (col, row, 0, 1)`` is the continuous index (i, j, k, 1) in the ORIGINAL input image, so a
heatmap computed on a patch can be written back onto the image (``PatchSet.write_back``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .case import PreparedCase
from .intensity import apply_steps
from .measure import CrossSection, measure_cross_section, slice_areas_mm2


@dataclass(frozen=True)
class PatchConfig:
    size: int = 32
    # None: patch pixels of the prepared grid's column spacing (one per image pixel where pixels are square)
    fov_mm: float | None = None
    max_patches: int = 15
    secondary_area_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 4 or self.max_patches < 1 or not 0 < self.secondary_area_fraction <= 1:
            raise ValueError(f"invalid patch configuration: {self}")
        if self.fov_mm is not None and self.fov_mm <= 0:
            raise ValueError("fov_mm must be positive")


@dataclass
class Patch:
    node_id: int
    segment_name: str
    slice_index: int  # axial slice k on the prepared grid
    area_mm2: float
    is_primary: bool
    image: np.ndarray  # (size, size) float32, row = j (anterior at the top), col = i (patient right on the left)
    mask: np.ndarray  # (size, size) bool, this node only
    patch_to_image: np.ndarray  # 4x4


@dataclass
class PatchSet:
    patches: list[Patch]  # every candidate patch of every node, largest first
    config: PatchConfig
    bag: list[int] = field(default_factory=list)  # indices into patches: the patient's <= max_patches

    def stacked(self, bag_only: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images, masks, valid): (M, H, W) float32, (M, H, W) bool, (M,) bool; M = max_patches when
        ``bag_only`` (zero padding), else every patch."""
        chosen = [self.patches[i] for i in self.bag] if bag_only else self.patches
        count = self.config.max_patches if bag_only else len(chosen)
        size = self.config.size
        images = np.zeros((count, size, size), np.float32)
        masks = np.zeros((count, size, size), bool)
        valid = np.zeros(count, bool)
        for index, patch in enumerate(chosen):
            images[index], masks[index], valid[index] = patch.image, patch.mask, True
        return images, masks, valid

    def primary_index(self, node_id: int) -> int:
        return next(i for i, p in enumerate(self.patches) if p.node_id == node_id and p.is_primary)

    def write_back(self, values: np.ndarray, reference_shape: tuple[int, int, int], indices: list[int] | None = None) -> np.ndarray:
        """Paint per-patch maps (P, H, W) onto an image of ``reference_shape`` (k, j, i), the input image's.

        Each input voxel takes the bilinear sample of the patch it falls in (within half a prepared slice
        of the patch plane); where patches overlap the maximum wins. Elsewhere the result is 0.
        """
        indices = list(range(len(self.patches))) if indices is None else indices
        output = np.zeros(reference_shape, np.float32)
        size = self.config.size
        for value_map, patch_index in zip(values, indices, strict=True):
            mapping = self.patches[patch_index].patch_to_image
            corners = np.array([[c, r, d, 1.0] for c in (-0.5, size - 0.5) for r in (-0.5, size - 0.5) for d in (-0.5, 0.5)])
            mapped = (mapping @ corners.T).T[:, :3]
            low = np.maximum(np.floor(mapped.min(axis=0)).astype(int), 0)
            high = np.minimum(np.ceil(mapped.max(axis=0)).astype(int), np.array(reference_shape[::-1]) - 1)
            if np.any(high < low):
                continue
            grid = np.mgrid[low[2]:high[2] + 1, low[1]:high[1] + 1, low[0]:high[0] + 1]  # k, j, i
            ijk = np.stack([grid[2].ravel(), grid[1].ravel(), grid[0].ravel(), np.ones(grid[0].size)])
            column, row, depth = (np.linalg.inv(mapping) @ ijk)[:3]
            inside = (np.abs(depth) <= 0.5 + 1e-6) & (column >= -0.5) & (column <= size - 0.5) & (row >= -0.5) & (row <= size - 0.5)
            if not inside.any():
                continue
            sampled = ndimage.map_coordinates(
                np.asarray(value_map, np.float32), [row[inside], column[inside]], order=1, mode="nearest"
            )
            k, j, i = grid[0].ravel()[inside], grid[1].ravel()[inside], grid[2].ravel()[inside]
            np.maximum.at(output, (k, j, i), sampled)
        return output


def _sample(slice_array: np.ndarray, start: np.ndarray, step: np.ndarray, size: int, order: int) -> np.ndarray:
    """Patch pixel (r, c) <- slice continuous index (start_j + r * step_j, start_i + c * step_i); zero outside."""
    if np.all(step == 1.0) and np.allclose(start, np.round(start)):
        j0, i0 = int(round(start[1])), int(round(start[0]))
        patch = np.zeros((size, size), slice_array.dtype)
        rows, cols = slice_array.shape
        src_j = slice(max(j0, 0), min(j0 + size, rows))
        src_i = slice(max(i0, 0), min(i0 + size, cols))
        if src_j.start < src_j.stop and src_i.start < src_i.stop:
            patch[src_j.start - j0:src_j.stop - j0, src_i.start - i0:src_i.stop - i0] = slice_array[src_j, src_i]
        return patch
    offsets = np.arange(size)
    rr, cc = np.meshgrid(start[1] + offsets * step[1], start[0] + offsets * step[0], indexing="ij")
    return ndimage.map_coordinates(slice_array, [rr, cc], order=order, mode="constant", cval=0)


def _source_box(start: np.ndarray, step: np.ndarray, size: int, shape: tuple[int, int], margin: int = 2) -> tuple[slice, slice]:
    """The (rows, columns) of a slice that a patch's samples read, with a margin for the interpolation, clipped
    to the slice: sampling the crop gives exactly what sampling the whole slice gives."""
    last = start + (size - 1) * step  # (i, j) of the last patch pixel
    boxes = []
    for axis, length in ((1, shape[0]), (0, shape[1])):
        low = int(np.floor(min(start[axis], last[axis]))) - margin
        high = int(np.ceil(max(start[axis], last[axis]))) + margin + 1
        low, high = min(max(low, 0), length - 1), min(max(high, 1), length)
        boxes.append(slice(low, max(high, low + 1)))
    return boxes[0], boxes[1]


def _crop_mask(node_offset: tuple[int, int, int], section: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """The node's cross-section painted on the crop ``rows`` x ``cols`` of its slice (float32 0/1)."""
    crop = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.float32)
    r0, c0 = max(node_offset[1], rows.start), max(node_offset[2], cols.start)
    r1 = min(node_offset[1] + section.shape[0], rows.stop)
    c1 = min(node_offset[2] + section.shape[1], cols.stop)
    if r0 < r1 and c0 < c1:
        crop[r0 - rows.start:r1 - rows.start, c0 - cols.start:c1 - cols.start] = \
            section[r0 - node_offset[1]:r1 - node_offset[1], c0 - node_offset[2]:c1 - node_offset[2]]
    return crop


def extract_patches(prepared: PreparedCase, config: PatchConfig | None = None) -> PatchSet:
    """Cut the patches of every node of a prepared case.

    Args:
        prepared: the case on the preset's grid.
        config: size, field of view, bag size and which secondary slices to keep (default :class:`PatchConfig`).

    Returns:
        The :class:`PatchSet`: every node's patches, largest first; ``bag`` the patient's largest ones.
    """
    config = config or PatchConfig()
    volume = prepared.image
    spacing = volume.spacing
    # (i, j) steps in image pixels per patch pixel: square patch pixels of the same size in mm along rows
    # and columns, whatever the in-plane spacing (non-square pixels, or reoriented sagittal/coronal images)
    pixel_mm = spacing[0] if config.fov_mm is None else config.fov_mm / config.size
    step = np.array([pixel_mm / spacing[0], pixel_mm / spacing[1]])
    mask_background = bool(prepared.preset and prepared.preset.mask_background)
    grid_to_source = prepared.grid_to_source_index
    patches: list[Patch] = []
    for node in prepared.nodes:
        areas = slice_areas_mm2(node.mask, spacing)
        largest = int(np.argmax(areas))
        for local_k in np.flatnonzero(areas >= config.secondary_area_fraction * areas[largest]):
            k = node.offset[0] + int(local_k)
            cross_section = node.mask[local_k]
            rows, cols = np.nonzero(cross_section)
            centre = np.array([cols.mean() + node.offset[2], rows.mean() + node.offset[1]])  # (i, j)
            start = centre - (config.size - 1) / 2 * step
            if np.all(step == 1.0):
                start = np.floor(start + 0.5)  # whole pixels: the patch is an exact crop of the slice
            # only the part of the slice the patch reads: a whole 1024 x 1024 slice per patch added up
            rows, cols = _source_box(start, step, config.size, volume.array.shape[1:])
            region = volume.array[k, rows, cols].astype(np.float32)
            if prepared.patch_intensity:
                region = apply_steps(region, prepared.patch_intensity)
            local_start = start - np.array([cols.start, rows.start])
            image = _sample(region, local_start, step, config.size, order=1)
            mask = _sample(_crop_mask(node.offset, cross_section, rows, cols), local_start, step, config.size, order=0) > 0.5
            if mask_background:
                image = np.where(mask, image, 0).astype(np.float32)
            patch_to_grid = np.array([[step[0], 0, 0, start[0]], [0, step[1], 0, start[1]], [0, 0, 1, k], [0, 0, 0, 1.0]])
            patches.append(Patch(node.node_id, node.segment_name, k, float(areas[local_k]), local_k == largest,
                                 image.astype(np.float32), mask, grid_to_source @ patch_to_grid))
    order = sorted(range(len(patches)), key=lambda p: (-patches[p].area_mm2, patches[p].node_id, patches[p].slice_index))
    patches = [patches[p] for p in order]
    return PatchSet(patches, config, bag=list(range(min(config.max_patches, len(patches)))))


def patch_features(prepared: PreparedCase, patches: list[Patch], names) -> np.ndarray:
    """Raw size/border features (P, F) of each patch's own cross-section: ``measure_cross_section`` of the
    patch's node on the patch's slice, on the prepared grid (mm). The models' node features, in training on a
    cohort and at prediction alike.

    Args:
        prepared: the case the patches were cut from.
        patches: the patches.
        names: ``CrossSection`` fields (another name raises ValueError).

    Returns:
        (P, F) float32.
    """
    unknown = [name for name in names if name not in CrossSection.__dataclass_fields__]
    if unknown:
        raise ValueError(f"unknown node feature(s) {', '.join(unknown)}")
    nodes = {node.node_id: node for node in prepared.nodes}
    spacing = prepared.image.spacing
    sections: dict[tuple[int, int], CrossSection] = {}
    rows = []
    for patch in patches:
        key = (patch.node_id, patch.slice_index)
        if key not in sections:
            node = nodes[patch.node_id]
            sections[key] = measure_cross_section(node.mask[patch.slice_index - node.offset[0]], (spacing[0], spacing[1]))
        rows.append([float(getattr(sections[key], name)) for name in names])
    return np.asarray(rows, dtype=np.float32).reshape(len(patches), len(names))
