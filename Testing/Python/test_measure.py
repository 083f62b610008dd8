"""Measurements against analytic shapes, oblique and permuted storage, anisotropic spacing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from LNMStagingLib.imaging.case import Case, load_case, prepare_case
from LNMStagingLib.imaging.measure import measure_cross_section, measure_nodes
from LNMStagingLib.io.segmentation import nodes_from_label_array, number_nodes
from LNMStagingLib.io.volume import Volume
from LNMStagingLib.synthetic.phantom import PhantomNode, make_phantom


def ellipse(shape, centre, semi_axes_px, angle_deg, spacing=(1.0, 1.0)):
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    x = (cols - centre[1]) * spacing[0]
    y = (rows - centre[0]) * spacing[1]
    t = np.deg2rad(angle_deg)
    u = x * np.cos(t) + y * np.sin(t)
    v = -x * np.sin(t) + y * np.cos(t)
    return (u / semi_axes_px[0]) ** 2 + (v / semi_axes_px[1]) ** 2 <= 1.0


@pytest.mark.parametrize("angle", [0, 17, 30, 45, 90, 123])
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 0.5), (0.6, 0.9)])
def test_ellipse_axes_within_one_voxel(angle, spacing):
    a_mm, b_mm = 11.0, 6.0
    mask = ellipse((120, 120), (60.3, 59.7), (a_mm, b_mm), angle, spacing)
    section = measure_cross_section(mask, spacing)
    voxel = max(spacing)
    assert abs(section.long_axis_mm - 2 * a_mm) <= voxel
    assert abs(section.short_axis_mm - 2 * b_mm) <= voxel
    assert section.axis_ratio == pytest.approx(section.short_axis_mm / section.long_axis_mm)
    assert section.convexity > 0.98  # convex shape
    # Ramanujan's perimeter of the ellipse gives its analytic compactness
    h = ((a_mm - b_mm) / (a_mm + b_mm)) ** 2
    perimeter = np.pi * (a_mm + b_mm) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h)))
    assert section.compactness == pytest.approx(perimeter**2 / (4 * np.pi**2 * a_mm * b_mm), rel=0.05)


def test_disc_is_compact_and_lobulated_shape_is_not():
    disc = ellipse((64, 64), (32, 32), (12, 12), 0)
    section = measure_cross_section(disc)
    assert section.compactness == pytest.approx(1.0, abs=0.03)
    assert section.convexity == pytest.approx(1.0, abs=0.01)
    lobes = disc.copy()
    lobes[:, 30:34] = False  # a deep notch: concave border
    lobes |= ellipse((64, 64), (32, 50), (6, 6), 0)
    irregular = measure_cross_section(lobes)
    assert irregular.convexity < 0.95
    assert irregular.compactness > 1.3


def test_single_pixel_and_line():
    pixel = np.zeros((5, 5), bool)
    pixel[2, 2] = True
    section = measure_cross_section(pixel, (0.7, 0.7))
    assert section.long_axis_mm == pytest.approx(0.7)
    assert section.short_axis_mm == pytest.approx(0.7)
    line = np.zeros((5, 12), bool)
    line[2, 1:11] = True
    section = measure_cross_section(line, (0.5, 0.5))
    assert section.long_axis_mm == pytest.approx(5.0)
    assert section.short_axis_mm == pytest.approx(0.5)


def test_phantom_nodes_match_truth(phantom_files):
    truth = json.loads(phantom_files.truth.read_text())["nodes"]
    measurements = measure_nodes(prepare_case(load_case(phantom_files.image, phantom_files.segmentation)))
    assert [m.segment_name for m in measurements] == [t["name"] for t in truth]
    voxel = max(json.loads(phantom_files.truth.read_text())["spacing_mm"][:2])
    for measured, expected in zip(measurements, truth, strict=True):
        assert np.allclose([measured.centroid_x, measured.centroid_y, measured.centroid_z], expected["centre_mm"], atol=0.5)
        assert abs(measured.short_axis_mm - expected["short_axis_mm"]) <= voxel, expected["name"]
        assert abs(measured.long_axis_mm - expected["long_axis_mm"]) <= voxel, expected["name"]
        if expected["kind"] == "lobulated":
            assert measured.convexity < 0.985
            continue
        a, b, c = expected["semi_axes_mm"]
        assert measured.volume_mm3 == pytest.approx(4 / 3 * np.pi * a * b * c, rel=0.25)
        assert measured.convexity > 0.98


def _rotation(axis: str, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def _case_from_arrays(image: np.ndarray, labels: np.ndarray, spacing, origin, direction) -> Case:
    volume = Volume(image, spacing, origin, direction)
    nodes = number_nodes(nodes_from_label_array(labels).nodes)
    return Case.from_volume(volume, nodes)


def test_storage_order_and_oblique_direction_do_not_change_measurements():
    nodes = (PhantomNode("a", "ellipsoid", (0.0, 0.0, 0.0), (6.0, 3.5, 5.0), angle_deg=25.0),
             PhantomNode("b", "lobulated", (20.0, 10.0, 6.6), (6.0, 4.5, 4.0)))
    image, labels, _ = make_phantom(size=(96, 96, 16), spacing=(0.7, 0.7, 3.3), nodes=nodes)
    reference = Volume.from_sitk(image)
    label_array = sitk.GetArrayFromImage(labels)
    base = measure_nodes(prepare_case(_case_from_arrays(reference.array, label_array, reference.spacing, reference.origin, np.eye(3))))

    # the same voxels stored sagittally-ordered with flips: index axes permuted, direction compensates
    permuted_image = np.flip(np.transpose(reference.array, (2, 0, 1)), axis=2)
    permuted_labels = np.flip(np.transpose(label_array, (2, 0, 1)), axis=2)
    # new i' = old j reversed, new j' = old k, new k' = old i
    direction = np.zeros((3, 3))
    direction[:, 0] = [0, -1, 0]
    direction[:, 1] = [0, 0, 1]
    direction[:, 2] = [1, 0, 0]
    spacing = (reference.spacing[1], reference.spacing[2], reference.spacing[0])
    origin = np.array(reference.origin) + np.array([0, (reference.array.shape[1] - 1) * reference.spacing[1], 0])
    permuted = measure_nodes(prepare_case(_case_from_arrays(permuted_image, permuted_labels, spacing, origin, direction)))
    for expected, measured in zip(base, permuted, strict=True):
        for field in ("short_axis_mm", "long_axis_mm", "convexity", "compactness", "volume_mm3", "n_slices",
                      "centroid_x", "centroid_y", "centroid_z"):
            assert getattr(measured, field) == pytest.approx(getattr(expected, field), abs=1e-6), field

    # an oblique acquisition: same voxels, rotated grid; sizes stay, centroids rotate with the grid
    rotation = _rotation("z", 20) @ _rotation("x", 12)
    oblique = measure_nodes(prepare_case(_case_from_arrays(reference.array, label_array, reference.spacing, reference.origin, rotation)))
    for expected, measured in zip(base, oblique, strict=True):
        assert measured.short_axis_mm == pytest.approx(expected.short_axis_mm)
        assert measured.long_axis_mm == pytest.approx(expected.long_axis_mm)
        centre = np.array([expected.centroid_x, expected.centroid_y, expected.centroid_z]) - np.array(reference.origin)
        rotated = rotation @ centre + np.array(reference.origin)
        assert np.allclose([measured.centroid_x, measured.centroid_y, measured.centroid_z], rotated, atol=1e-6)


def test_anisotropic_in_plane_spacing():
    node = PhantomNode("a", "ellipsoid", (0.0, 0.0, 0.0), (7.0, 4.0, 5.0), angle_deg=40.0)
    image, labels, _ = make_phantom(size=(120, 70, 12), spacing=(0.5, 0.9, 3.0), nodes=(node,))
    volume = Volume.from_sitk(image)
    measured = measure_nodes(prepare_case(_case_from_arrays(volume.array, sitk.GetArrayFromImage(labels), volume.spacing, volume.origin, np.eye(3))))[0]
    assert abs(measured.long_axis_mm - 14.0) <= 0.9
    assert abs(measured.short_axis_mm - 8.0) <= 0.9


def test_preset_grid_measurements_close_to_native(phantom_files):
    from LNMStagingLib.imaging.presets import get_preset

    case = load_case(phantom_files.image, phantom_files.labelmap)
    native = measure_nodes(prepare_case(case))
    prepared = prepare_case(case, get_preset("mri-t2"), intensity=False)
    assert prepared.image.spacing == pytest.approx((0.573, 0.573, 3.3))
    resampled = measure_nodes(prepared)
    for a, b in zip(native, resampled, strict=True):
        assert abs(a.short_axis_mm - b.short_axis_mm) <= 0.8
        assert abs(a.long_axis_mm - b.long_axis_mm) <= 0.8
        assert np.allclose([a.centroid_x, a.centroid_y, a.centroid_z], [b.centroid_x, b.centroid_y, b.centroid_z], atol=0.6)


def test_own_convex_hull_has_qhulls_vertices():
    """measure.py's monotone-chain hull (kept off scipy.spatial for start-up time) gives Qhull's vertex set on
    half-pixel contour-like points with anisotropic spacing, and degenerate inputs are their own hull."""
    from scipy.spatial import ConvexHull

    from LNMStagingLib.imaging.measure import _hull

    rng = np.random.default_rng(7)
    for _ in range(100):
        points = np.round(rng.normal(size=(int(rng.integers(3, 200)), 2)) * 8) / 2 * np.array([0.7, 1.3])
        ours = {tuple(p) for p in np.round(_hull(points), 9)}
        qhull = {tuple(p) for p in np.round(points[ConvexHull(points).vertices], 9)}
        assert ours == qhull
    line = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert len(_hull(line)) == 3  # collinear: the points themselves
