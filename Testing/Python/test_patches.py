"""Patch selection, padding and the exact patch-to-image mapping (round trips)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from LNMStagingLib.imaging.case import Case, load_case, prepare_case
from LNMStagingLib.imaging.patches import PatchConfig, extract_patches
from LNMStagingLib.imaging.presets import get_preset
from LNMStagingLib.io.segmentation import nodes_from_label_array, number_nodes
from LNMStagingLib.io.volume import Volume
from LNMStagingLib.synthetic.phantom import PhantomNode, make_phantom


def _image_at(source: np.ndarray, patch) -> np.ndarray:
    """Sample the input image (k, j, i) at every patch pixel through patch_to_image."""
    size = patch.image.shape[0]
    rows, cols = np.mgrid[0:size, 0:size]
    points = np.stack([cols.ravel(), rows.ravel(), np.zeros(rows.size), np.ones(rows.size)])
    i, j, k = (patch.patch_to_image @ points)[:3]
    return ndimage.map_coordinates(source, [k, j, i], order=1, mode="constant", cval=0).reshape(size, size)


def test_patches_are_exact_crops_of_the_input_image(phantom_files):
    case = load_case(phantom_files.image, phantom_files.segmentation)
    patch_set = extract_patches(prepare_case(case))
    source = case.image.array.astype(np.float32)
    for patch in patch_set.patches:
        assert patch.image.shape == (32, 32)
        assert np.array_equal(_image_at(source, patch), patch.image)
        assert np.allclose(patch.patch_to_image[:3, :3] @ [1, 1, 0], np.round(patch.patch_to_image[:3, :3] @ [1, 1, 0]))
        centre = patch.patch_to_image @ np.array([15.5, 15.5, 0, 1])
        node = next(n for n in case.nodes if n.node_id == patch.node_id)
        rows, cols = np.nonzero(node.mask[patch.slice_index - node.offset[0]])
        assert abs(centre[0] - (cols.mean() + node.offset[2])) <= 0.5 and abs(centre[1] - (rows.mean() + node.offset[1])) <= 0.5


def test_selection_rules(phantom_files):
    case = load_case(phantom_files.image, phantom_files.segmentation)
    prepared = prepare_case(case)
    patch_set = extract_patches(prepared)
    for node in prepared.nodes:
        own = [p for p in patch_set.patches if p.node_id == node.node_id]
        assert sum(p.is_primary for p in own) == 1
        largest = max(p.area_mm2 for p in own)
        assert next(p for p in own if p.is_primary).area_mm2 == largest
        areas = node.mask.reshape(node.mask.shape[0], -1).sum(1) * prepared.image.spacing[0] * prepared.image.spacing[1]
        assert len(own) == int(np.sum(areas >= 0.5 * largest))
        assert all(p.mask.sum() > 0 for p in own)
    images, masks, valid = patch_set.stacked()
    assert images.shape == (15, 32, 32) and valid.sum() == min(15, len(patch_set.patches))
    assert not images[~valid].any() and not masks[~valid].any()
    bag_areas = [patch_set.patches[i].area_mm2 for i in patch_set.bag]
    assert bag_areas == sorted(bag_areas, reverse=True)


def test_at_most_fifteen_patches_by_area(tmp_path):
    from LNMStagingLib.synthetic.phantom import random_nodes

    image, labels, nodes = make_phantom(size=(160, 160, 24), spacing=(0.8, 0.8, 3.3), nodes=random_nodes(12, seed=3))
    volume = Volume.from_sitk(image)
    case = Case.from_volume(volume, number_nodes(nodes_from_label_array(sitk.GetArrayFromImage(labels)).nodes))
    patch_set = extract_patches(prepare_case(case))
    assert len(patch_set.patches) > 15
    assert len(patch_set.bag) == 15
    chosen = {patch_set.patches[i].area_mm2 for i in patch_set.bag}
    left_out = [p.area_mm2 for i, p in enumerate(patch_set.patches) if i not in patch_set.bag]
    assert min(chosen) >= max(left_out)


def test_node_near_the_edge_is_padded_not_dropped():
    node = PhantomNode("edge", "ellipsoid", (0.0, 0.0, 0.0), (3.0, 3.0, 4.0))
    image, labels, _ = make_phantom(size=(40, 40, 8), spacing=(0.8, 0.8, 3.3), nodes=(node,))
    array = sitk.GetArrayFromImage(labels)
    shifted = np.roll(array, -15, axis=2)  # node a few voxels from the left edge, not touching it
    assert shifted[:, :, 0].sum() == 0 and shifted[:, :, :5].sum() > 0
    volume = Volume.from_sitk(image)
    case = Case.from_volume(volume, number_nodes(nodes_from_label_array(shifted).nodes))
    patch = extract_patches(prepare_case(case)).patches[0]
    assert patch.mask.sum() == (shifted[patch.slice_index] > 0).sum()
    # the columns left of the image edge are zero padding
    first_column = int(np.floor(patch.patch_to_image[0, 3]))
    assert first_column < 0
    assert not patch.image[:, : -first_column].any()


def test_write_back_round_trip_native_and_resampled(phantom_files):
    case = load_case(phantom_files.image, phantom_files.labelmap)
    source = case.image.array.astype(np.float32)
    patch_set = extract_patches(prepare_case(case))
    painted = patch_set.write_back(np.stack([p.image for p in patch_set.patches]), source.shape)
    covered = painted > 0
    assert covered.sum() > 0
    assert np.allclose(painted[covered], source[covered])

    # a preset grid (0.573 mm, 3.3 mm) and a field of view in mm: maps go back onto the input grid
    prepared = prepare_case(case, get_preset("mri-t2"), intensity=False)
    config = PatchConfig(size=32, fov_mm=20.0)
    patch_set = extract_patches(prepared, config)
    ones = np.ones((len(patch_set.patches), 32, 32), np.float32)
    painted = patch_set.write_back(ones, source.shape)
    spacing = case.image.spacing
    patch_slices = {int(round((p.patch_to_image @ [0, 0, 0, 1])[2])) for p in patch_set.patches}
    assert set(np.flatnonzero(painted.reshape(painted.shape[0], -1).any(1))) == patch_slices
    one_patch_area = painted[next(iter(patch_slices))].sum() * spacing[0] * spacing[1]
    assert one_patch_area >= 20.0 * 20.0 * 0.9
    # every node voxel on a patch slice is covered by its own patch
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_files.labelmap)))
    for patch in patch_set.patches:
        k = int(round((patch.patch_to_image @ [0, 0, 0, 1])[2]))
        assert painted[k][labels[k] == patch.node_id].min() == 1.0


def test_mask_background_preset_keeps_only_the_node(phantom_files):
    case = load_case(phantom_files.image, phantom_files.labelmap)
    patch_set = extract_patches(prepare_case(case, get_preset("lidc-png")))
    for patch in patch_set.patches:
        assert not patch.image[~patch.mask].any()
        assert patch.image.max() <= 1.0 and patch.image[patch.mask].min() > 0


@pytest.mark.parametrize("fov", [None, 24.0])
def test_oblique_and_permuted_storage_map_back_to_the_same_physical_points(fov):
    node = PhantomNode("a", "ellipsoid", (0.0, 0.0, 0.0), (5.0, 3.0, 5.0), angle_deg=30.0)
    image, labels, _ = make_phantom(size=(64, 64, 12), spacing=(0.7, 0.7, 3.3), nodes=(node,))
    volume = Volume.from_sitk(image)
    label_array = sitk.GetArrayFromImage(labels)
    flipped = Volume(np.flip(volume.array, axis=(1, 2)).copy(), volume.spacing,
                     (volume.index_to_lps() @ [63, 63, 0, 1])[:3], np.diag([-1.0, -1.0, 1.0]))
    centres = []
    for vol, lab in ((volume, label_array), (flipped, np.flip(label_array, axis=(1, 2)))):
        case = Case.from_volume(vol, number_nodes(nodes_from_label_array(lab).nodes))
        patch = extract_patches(prepare_case(case), PatchConfig(fov_mm=fov)).patches[0]
        centres.append((vol.index_to_lps() @ patch.patch_to_image @ [15.5, 15.5, 0, 1])[:3])
    assert np.allclose(centres[0], centres[1], atol=1e-6)


@pytest.mark.parametrize("fov", [None, 20.0])
def test_non_square_pixels_give_square_patch_pixels(fov):
    """A round node on 0.5 x 1.0 mm pixels stays round in the patch (patch pixels are square in mm), and the
    patch still maps back onto the image exactly."""
    spacing = (0.5, 1.0, 3.0)
    size = (96, 48, 6)
    k, j, i = np.mgrid[0:size[2], 0:size[1], 0:size[0]]
    disc = ((i - 48) * spacing[0]) ** 2 + ((j - 24) * spacing[1]) ** 2 <= 6.0**2  # 12 mm diameter
    labels = np.where(disc & (k >= 2) & (k <= 3), 1, 0).astype(np.uint8)
    volume = Volume(np.where(labels > 0, 100.0, 10.0).astype(np.float32), spacing, (0.0, 0.0, 0.0), np.eye(3))
    case = Case.from_volume(volume, number_nodes(nodes_from_label_array(labels).nodes))
    patch = extract_patches(prepare_case(case), PatchConfig(fov_mm=fov)).patches[0]
    rows, cols = np.nonzero(patch.mask)
    height, width = int(np.ptp(rows) + 1), int(np.ptp(cols) + 1)
    pixel_mm = spacing[0] if fov is None else fov / 32
    # equal in mm up to the quantisation of the coarser source rows (before the fix: half as many rows)
    assert abs(height - width) * pixel_mm <= max(spacing[:2]) + pixel_mm, (height, width)
    assert abs(width * pixel_mm - 12.0) <= 2 * pixel_mm
    column_mm = np.linalg.norm((volume.index_to_lps() @ patch.patch_to_image)[:3, 0])
    row_mm = np.linalg.norm((volume.index_to_lps() @ patch.patch_to_image)[:3, 1])
    assert column_mm == pytest.approx(pixel_mm) and row_mm == pytest.approx(pixel_mm)
    assert np.allclose(_image_at(volume.array, patch), patch.image, atol=1e-4)  # the mapping is the sampling
