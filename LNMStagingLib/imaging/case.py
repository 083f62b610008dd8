"""A case = an image plus its node regions; preparing it = canonical LPS orientation + a preset.

Canonical orientation is an exact permutation/flip of voxels (no interpolation), so "measured on the
image's own grid" still holds without a preset. Every prepared grid keeps the 4x4 matrix back to the input
image's voxel indices, which is how patch heatmaps return to the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.image import read_image
from ..io.segmentation import NodeRegion, read_segmentation
from ..io.volume import Volume
from .intensity import is_pointwise
from .presets import Preset


@dataclass
class Case:
    image: Volume
    nodes: list[NodeRegion]
    image_source: str = "image"
    segmentation_source: str = "segmentation"
    skipped_segments: list[str] = field(default_factory=list)
    skip_reasons: dict[str, str] = field(default_factory=dict)  # skipped segment -> why (default "is empty")

    @classmethod
    def from_volume(cls, image: Volume, nodes: list[NodeRegion], image_source: str = "image",
                    segmentation_source: str = "segmentation", skipped_segments: list[str] | None = None,
                    skip_reasons: dict[str, str] | None = None) -> Case:
        case = cls(image, nodes, image_source, segmentation_source, list(skipped_segments or []),
                   dict(skip_reasons or {}))
        validate_case(case)
        return case

    def skip_reason(self, name: str) -> str:
        """Why the drawn segment ``name`` gave no node."""
        return self.skip_reasons.get(name, "is empty")


def validate_case(case: Case) -> None:
    """Refuse what cannot be measured reliably: NaN voxels, no node, a node cut by the image border."""
    array = case.image.array
    if array.ndim != 3:
        raise InputError(case.image_source, f"is a {array.ndim}D image; a 3D volume is needed")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(case.image_source, f"has {int(np.count_nonzero(~np.isfinite(array)))} NaN or infinite voxel(s)")
    if not case.nodes:
        raise InputError(case.segmentation_source, "segmentation is empty: it has no labelled voxel")
    shape = array.shape
    for node in case.nodes:
        low = np.array(node.offset)
        high = low + np.array(node.mask.shape)
        if np.any(low < 0) or np.any(high > np.array(shape)):
            raise InputError(case.segmentation_source, f"node '{node.segment_name}' lies partly outside the image grid")
        touching = [axis for axis in range(3) if shape[axis] > 1 and (low[axis] == 0 or high[axis] == shape[axis])]
        if touching:
            axis_names = {0: "slice (k)", 1: "row (j)", 2: "column (i)"}
            raise InputError(
                case.segmentation_source,
                f"node '{node.segment_name}' touches the image border along the {axis_names[touching[0]]} axis, "
                "so it may be cut off; extend the image or remove the node",
            )


def load_case(image_path: str | Path, segmentation_path: str | Path, split_islands: bool = False) -> Case:
    """Read an image and its node segmentation into a :class:`Case`.

    Args:
        image_path: NRRD, NIfTI, MHA or a DICOM series folder (3D scalar).
        segmentation_path: a labelmap or a Slicer ``.seg.nrrd`` (resampled onto the image when on another grid).
        split_islands: every connected component of a label becomes its own node.

    Returns:
        The case; :class:`~LNMStagingLib.errors.InputError` naming the file for unusable input.
    """
    image = read_image(image_path)
    segmentation = read_segmentation(segmentation_path, image, split_islands=split_islands)
    return Case.from_volume(
        Volume.from_sitk(image), segmentation.nodes, str(image_path), str(segmentation_path), segmentation.skipped,
        segmentation.reasons,
    )


@dataclass
class PreparedCase:
    """The case on its canonical (and possibly resampled) grid; intensities per the preset."""

    image: Volume
    nodes: list[NodeRegion]
    source_geometry: Volume  # the input image's geometry (array may be a 1-voxel placeholder)
    source_shape: tuple[int, int, int]  # (k, j, i) of the input image
    preset: Preset | None
    case: Case
    # Pointwise intensity steps not applied to ``image`` but to the voxels each patch reads (extract_patches):
    # the same patch values without a float copy of the whole volume.
    patch_intensity: list[dict] = field(default_factory=list)

    @property
    def grid_to_source_index(self) -> np.ndarray:
        """4x4: prepared continuous index (i, j, k, 1) -> input image continuous index (i, j, k, 1)."""
        return np.linalg.inv(self.source_geometry.index_to_lps()) @ self.image.index_to_lps()


def _lps_orientation(direction: np.ndarray) -> tuple[list[int], list[bool]]:
    """For each new axis (i -> L, j -> P, k -> S) the old index axis feeding it, and whether it is flipped."""
    axes, flips = [], []
    remaining = [0, 1, 2]
    for physical_axis in range(3):
        old_axis = max(remaining, key=lambda a: abs(direction[physical_axis, a]))
        remaining.remove(old_axis)
        axes.append(old_axis)
        flips.append(direction[physical_axis, old_axis] < 0)
    return axes, flips


def _reorient_array(array: np.ndarray, axes: list[int], flips: list[bool]) -> np.ndarray:
    # array is (k, j, i); ijk axis a lives at array axis 2 - a.
    transposed = np.transpose(array, [2 - axes[2], 2 - axes[1], 2 - axes[0]])
    flip_axes = [2 - new_axis for new_axis in range(3) if flips[new_axis]]
    return np.flip(transposed, axis=flip_axes) if flip_axes else transposed


def orient_to_lps(volume: Volume, nodes: list[NodeRegion]) -> tuple[Volume, list[NodeRegion]]:
    """Permute/flip voxels so that i runs to patient Left, j to Posterior, k to Superior (axial = array[k])."""
    axes, flips = _lps_orientation(volume.direction)
    if axes == [0, 1, 2] and not any(flips):
        return volume, nodes
    old_shape_ijk = np.array(volume.shape_ijk)
    new_direction = np.empty((3, 3))
    new_origin_index = np.zeros(3)
    for new_axis, (old_axis, flipped) in enumerate(zip(axes, flips, strict=True)):
        new_direction[:, new_axis] = volume.direction[:, old_axis] * (-1 if flipped else 1)
        if flipped:
            new_origin_index[old_axis] = old_shape_ijk[old_axis] - 1
    origin = (volume.index_to_lps() @ np.append(new_origin_index, 1))[:3]
    spacing = tuple(volume.spacing[a] for a in axes)
    oriented = Volume(np.ascontiguousarray(_reorient_array(volume.array, axes, flips)), spacing, origin, new_direction)
    new_shape_kji = oriented.array.shape
    oriented_nodes = []
    for node in nodes:
        mask = np.ascontiguousarray(_reorient_array(node.mask, axes, flips))
        old_low_ijk = np.array(node.offset[::-1])
        old_high_ijk = old_low_ijk + np.array(node.mask.shape[::-1]) - 1
        new_low_ijk = [
            old_shape_ijk[old_axis] - 1 - old_high_ijk[old_axis] if flipped else old_low_ijk[old_axis]
            for old_axis, flipped in zip(axes, flips, strict=True)
        ]
        offset = tuple(int(v) for v in new_low_ijk[::-1])
        assert all(o + s <= n for o, s, n in zip(offset, mask.shape, new_shape_kji, strict=True))
        oriented_nodes.append(NodeRegion(node.node_id, node.segment_name, node.label_value, offset, mask, node.segment_id))
    return oriented, oriented_nodes


def _resample(volume: Volume, nodes: list[NodeRegion], spacing: tuple[float, float, float]) -> tuple[Volume, list[NodeRegion]]:
    """Resample to ``spacing`` (same direction and physical extent): linear for the image, nearest for nodes."""
    extent = np.array(volume.shape_ijk) * np.array(volume.spacing)
    new_size = [max(1, int(round(e / s))) for e, s in zip(extent, spacing, strict=True)]
    # Keep the physical box: the first new voxel centre sits half a new voxel inside the old box edge.
    corner = np.array(volume.origin) - volume.direction @ (np.array(volume.spacing) / 2)
    new_origin = corner + volume.direction @ (np.array(spacing) / 2)
    reference = sitk.Image(new_size, sitk.sitkUInt8)
    reference.SetSpacing(spacing)
    reference.SetOrigin(tuple(new_origin))
    reference.SetDirection(tuple(volume.direction.ravel()))
    image = volume.to_sitk()
    resampled = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    new_volume = Volume.from_sitk(resampled)
    to_new_index = np.linalg.inv(new_volume.index_to_lps()) @ volume.index_to_lps()
    new_nodes = []
    for node in nodes:
        low = np.array(node.offset[::-1], dtype=float) - 0.5
        high = low + np.array(node.mask.shape[::-1], dtype=float)
        corners = np.array([[low[0] if a else high[0], low[1] if b else high[1], low[2] if c else high[2], 1.0]
                            for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        mapped = (to_new_index @ corners.T).T[:, :3]
        new_low = np.clip(np.floor(mapped.min(axis=0)).astype(int), 0, None)
        new_high = np.minimum(np.ceil(mapped.max(axis=0)).astype(int) + 1, new_size)
        sub_reference = sitk.Image([int(v) for v in new_high - new_low], sitk.sitkUInt8)
        sub_reference.SetSpacing(spacing)
        sub_reference.SetDirection(tuple(volume.direction.ravel()))
        sub_reference.SetOrigin(reference.TransformIndexToPhysicalPoint([int(v) for v in new_low]))
        mask_image = sitk.GetImageFromArray(node.mask.astype(np.uint8))
        mask_image.SetSpacing(volume.spacing)
        mask_image.SetDirection(tuple(volume.direction.ravel()))
        mask_image.SetOrigin(tuple((volume.index_to_lps() @ np.append(node.offset[::-1], 1.0))[:3]))
        mask = sitk.GetArrayFromImage(sitk.Resample(mask_image, sub_reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
        if not mask.any():
            continue  # smaller than one new voxel: reported by the caller through the node count
        new_nodes.append(NodeRegion(node.node_id, node.segment_name, node.label_value, tuple(int(v) for v in new_low[::-1]), mask,
                                    node.segment_id))
    return new_volume, new_nodes


def prepare_case(case: Case, preset: Preset | None = None, intensity: bool = True,
                 pointwise_on_patches: bool = False) -> PreparedCase:
    """Canonical LPS orientation, then the preset's resampling and (when ``intensity``) intensity steps.

    Args:
        case: the case as read.
        preset: the preprocessing preset (None: orientation only).
        intensity: apply the preset's intensity steps.
        pointwise_on_patches: when the preset's intensity steps are pointwise (:func:`is_pointwise`), leave
            ``image`` as read and let :func:`~LNMStagingLib.imaging.patches.extract_patches` apply them to the
            voxels the patches read (same patches; for callers that use the prepared image only for patches).

    Returns:
        The :class:`PreparedCase` (its ``grid_to_source_index`` maps back to the input image's voxels).
    """
    volume, nodes = orient_to_lps(case.image, case.nodes)
    if preset is not None and preset.target_spacing_mm is not None:
        volume, nodes = _resample(volume, nodes, preset.target_spacing_mm)
        if not nodes:
            raise InputError(case.segmentation_source, "every node is smaller than one voxel of the preset's grid")
    deferred: list[dict] = []
    if preset is not None and intensity:
        if pointwise_on_patches and is_pointwise(preset.intensity):
            deferred = [dict(step) for step in preset.intensity]
        else:
            volume = volume.with_array(preset.apply_intensity(volume.array))
    geometry = Volume(np.zeros((1, 1, 1), dtype=np.uint8), case.image.spacing, case.image.origin, case.image.direction)
    return PreparedCase(volume, nodes, geometry, case.image.array.shape, preset, case, deferred)
