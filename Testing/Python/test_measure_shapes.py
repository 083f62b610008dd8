"""Measurements against analytic shapes rasterised at many angles, sub-pixel shifts and anisotropic pixels.

Each shape is an exact outline (a dense polygon in mm, from its parametric form); it is rasterised by the
pixel-centre inside test (even-odd scanline fill, this file's own code), measured, and compared with the
truth of the same definitions (docs/measurements.md): the analytic axes for ellipses, stadiums and two-lobed
nodes; for the bean and the irregular polygons the long axis = the outline's largest Feret diameter and the
short axis = its longest in-node chord perpendicular to that direction. Border features are compared with
the outline's own perimeter, area and convex-hull perimeter.

Run as a script to print the accuracy table of docs/measurements.md:
``.venv/bin/python Testing/Python/test_measure_shapes.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from LNMStagingLib.imaging.criteria import DEFAULT_CUTOFFS
from LNMStagingLib.imaging.measure import longest_chord, measure_cross_section

SPACINGS = ((1.0, 1.0), (0.5, 0.8), (0.8, 0.5))
# polygons with a clear long axis (largest corner pair >= 1 mm longer than the next): where two pairs tie within
# a pixel the short axis is ambiguous by definition
POLYGON_SEEDS = (0, 2, 5, 7, 10, 11)
# a pointed corner narrower than a pixel is lost by the rasteriser itself (no pixel centre inside it), so the
# polygons' axes are held to two pixels, the smooth shapes' to one
OUTLINE_POINTS = 1440
# the stated tolerances of the border features on this shape set (docs/measurements.md)
# (mean over placements, every placement): compactness relative, convexity absolute. Outlines with corners
# (two-lobed, polygons) read low: the raster itself loses what of a corner is narrower than a pixel
COMPACTNESS_TOLERANCE = {"smooth": (0.03, 0.12), "corners": (0.13, 0.25)}
CONVEXITY_TOLERANCE = (0.04, 0.06)
SMOOTH_FAMILIES = ("ellipse", "stadium", "bean")


@dataclass(frozen=True)
class Shape:
    family: str
    outline: np.ndarray  # closed (x, y) polygon in mm, centred near 0, first point repeated last
    long_mm: float
    short_mm: float
    direction: np.ndarray  # unit vector of the truth's long axis

    def rotated(self, degrees: float) -> np.ndarray:
        t = np.deg2rad(degrees)
        rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        return self.outline @ rotation.T


def _close(points: np.ndarray) -> np.ndarray:
    return np.vstack([points, points[:1]])


def _arc(centre: tuple[float, float], radius: float, start: float, stop: float, count: int) -> np.ndarray:
    t = np.linspace(start, stop, count, endpoint=False)
    return np.column_stack([centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t)])


def ellipse(a: float, b: float) -> Shape:
    t = np.linspace(0, 2 * np.pi, OUTLINE_POINTS, endpoint=False)
    return Shape("ellipse", _close(np.column_stack([a * np.cos(t), b * np.sin(t)])), 2 * a, 2 * b, np.array([1.0, 0.0]))


def stadium(length: float, width: float) -> Shape:
    """A rectangle with semicircular ends: ``length`` end to end, ``width`` across."""
    r, half = width / 2, (length - width) / 2
    n = OUTLINE_POINTS // 2
    right = _arc((half, 0.0), r, -np.pi / 2, np.pi / 2, n)
    left = _arc((-half, 0.0), r, np.pi / 2, 3 * np.pi / 2, n)
    return Shape("stadium", _close(np.vstack([right, left])), length, width, np.array([1.0, 0.0]))


def two_lobed(length: float, width: float) -> Shape:
    """Two overlapping discs of diameter ``width`` whose union is ``length`` long."""
    r, half = width / 2, (length - width) / 2
    phi = np.arccos(min(half / r, 1.0))  # where the circles cross, seen from either centre
    n = OUTLINE_POINTS // 2
    right = _arc((half, 0.0), r, phi - np.pi, np.pi - phi, n)
    left = _arc((-half, 0.0), r, phi, 2 * np.pi - phi, n)
    return Shape("two-lobed", _close(np.vstack([right, left])), length, width, np.array([1.0, 0.0]))


def _from_outline(family: str, outline: np.ndarray) -> Shape:
    """Truth of a polygonal outline: its largest Feret pair and the longest perpendicular in-node chord."""
    hull = outline[ConvexHull(outline[:-1]).vertices]
    distances = np.linalg.norm(hull[:, None] - hull[None], axis=-1)
    i, j = np.unravel_index(np.argmax(distances), distances.shape)
    direction = (hull[j] - hull[i]) / distances[i, j]
    return Shape(family, outline, float(distances[i, j]), longest_chord([outline], direction), direction)


def bean(a: float = 6.0, b: float = 3.6, depth: float = 0.75) -> Shape:
    """An ellipse whose upper side is pushed in at the middle (a kidney bean, the hilum notch)."""
    t = np.linspace(0, 2 * np.pi, OUTLINE_POINTS, endpoint=False)
    notch = depth * np.exp(-(((t - np.pi / 2 + np.pi) % (2 * np.pi) - np.pi) / 0.55) ** 2)
    return _from_outline("bean", _close(np.column_stack([a * np.cos(t), b * (np.sin(t) - notch)])))


def irregular_polygon(seed: int, radius: float = 6.0, vertices: int = 8) -> Shape:
    """An elongated star-shaped polygon with seeded radii: real corners and notches."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    r = radius * rng.uniform(0.7, 1.2, vertices)
    corners = np.column_stack([1.5 * r * np.cos(t), r * np.sin(t)])
    # densify the edges so that the outline's Feret pairs and chords are exact to 1e-3 mm
    edges = [np.linspace(corners[k], corners[(k + 1) % vertices], 40, endpoint=False) for k in range(vertices)]
    return _from_outline("polygon", _close(np.vstack(edges)))


def rasterise(outline_mm: np.ndarray, spacing: tuple[float, float], shift_px: tuple[float, float],
              margin_px: int = 4) -> np.ndarray:
    """Pixels whose centre lies inside the closed outline (even-odd scanline fill); spacing = (col, row) mm."""
    column_mm, row_mm = spacing
    x = outline_mm[:, 0] / column_mm + shift_px[0]
    y = outline_mm[:, 1] / row_mm + shift_px[1]
    x0, y0 = np.floor(x.min()) - margin_px, np.floor(y.min()) - margin_px
    x, y = x - x0, y - y0
    cols, rows = int(np.ceil(x.max())) + margin_px, int(np.ceil(y.max())) + margin_px
    mask = np.zeros((rows, cols), bool)
    xa, xb, ya, yb = x[:-1], x[1:], y[:-1], y[1:]
    centres_x = np.arange(cols)
    for row in range(rows):
        crossing = (ya <= row) != (yb <= row)
        if not crossing.any():
            continue
        xs = np.sort(xa[crossing] + (row - ya[crossing]) / (yb[crossing] - ya[crossing]) * (xb[crossing] - xa[crossing]))
        inside = np.searchsorted(xs, centres_x, side="right") % 2 == 1
        mask[row] = inside
    return mask


def outline_features(outline: np.ndarray) -> tuple[float, float]:
    """(convexity, compactness) of the exact outline."""
    perimeter = float(np.linalg.norm(np.diff(outline, axis=0), axis=1).sum())
    x, y = outline[:-1, 0], outline[:-1, 1]
    area = abs(0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    hull = outline[ConvexHull(outline[:-1]).vertices]
    hull_perimeter = float(np.linalg.norm(np.diff(_close(hull), axis=0), axis=1).sum())
    return hull_perimeter / perimeter, perimeter**2 / (4 * np.pi * area)


def placements(count: int, seed: int, spacings=SPACINGS) -> Iterator[tuple[float, tuple[float, float], tuple[float, float]]]:
    """Seeded (angle in degrees, sub-pixel shift, spacing) triples, cycling through ``spacings``."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        yield float(rng.uniform(0, 180)), tuple(rng.uniform(0, 1, 2)), spacings[index % len(spacings)]


def shape_set() -> list[Shape]:
    return [ellipse(5.5, 3.0), ellipse(4.0, 3.6), ellipse(8.0, 4.0), stadium(12.0, 6.0), stadium(16.0, 8.0),
            two_lobed(11.0, 6.0), two_lobed(14.0, 8.0), bean(), bean(7.0, 4.0, 0.9),
            *[irregular_polygon(seed) for seed in POLYGON_SEEDS]]


def measured(shape: Shape, count: int, seed: int, spacings=SPACINGS) -> list[tuple[object, float]]:
    """(CrossSection, larger pixel side) of ``shape`` at ``count`` seeded placements."""
    out = []
    for angle, shift, spacing in placements(count, seed, spacings):
        out.append((measure_cross_section(rasterise(shape.rotated(angle), spacing, shift), spacing), max(spacing)))
    return out


@pytest.mark.parametrize("shape", shape_set(), ids=lambda s: f"{s.family}-{s.long_mm:.1f}x{s.short_mm:.1f}")
def test_axes_within_one_pixel_and_border_within_tolerance(shape):
    convexity, compactness = outline_features(shape.outline)
    pixels = 2 if shape.family == "polygon" else 1
    sections = measured(shape, 24, seed=1)
    for section, pixel in sections:
        assert abs(section.long_axis_mm - shape.long_mm) <= pixels * pixel
        assert abs(section.short_axis_mm - shape.short_mm) <= pixels * pixel
    compactness_error = np.array([s.compactness / compactness - 1 for s, _ in sections])
    convexity_error = np.array([s.convexity - convexity for s, _ in sections])
    mean_tolerance, each_tolerance = COMPACTNESS_TOLERANCE["smooth" if shape.family in SMOOTH_FAMILIES else "corners"]
    assert abs(compactness_error.mean()) <= mean_tolerance
    assert np.abs(compactness_error).max() <= each_tolerance
    assert abs(convexity_error.mean()) <= CONVEXITY_TOLERANCE[0]
    assert np.abs(convexity_error).max() <= CONVEXITY_TOLERANCE[1]


# MRI-like pixels for the cut-off cases (the pelvic T2 grids are 0.5 to 0.8 mm)
MRI_SPACINGS = ((0.8, 0.8), (0.5, 0.8), (0.6, 0.6))


def _short_axes(shape: Shape, count: int = 60) -> np.ndarray:
    return np.array([section.short_axis_mm for section, _ in measured(shape, count, seed=7, spacings=MRI_SPACINGS)])


def test_issue_two_lobed_12x6_never_crosses_the_lateral_cut_off():
    # issue 10: main read 8.04 mm on a 12 x 6 mm two-lobed node (Feret pair tilted, caliper width)
    assert _short_axes(two_lobed(12.0, 6.0)).max() < DEFAULT_CUTOFFS.lateral_short_axis_mm


def test_issue_stadium_6mm_wide_never_reads_7mm():
    # issue 10: main read >= 7 mm in 40 % of placements
    assert _short_axes(stadium(12.0, 6.0)).max() < DEFAULT_CUTOFFS.lateral_short_axis_mm


def test_issue_stadium_16x8_never_crosses_the_esgar_9mm_cut_off():
    # issue 10: main read >= 9 mm in 51 % of placements
    assert _short_axes(stadium(16.0, 8.0)).max() < DEFAULT_CUTOFFS.size_positive_mm


def _irregular(section) -> bool:
    return bool(section.convexity < DEFAULT_CUTOFFS.irregular_convexity_below
                or section.compactness > DEFAULT_CUTOFFS.irregular_compactness_above)


def test_irregular_border_flag_follows_the_truth():
    # the beans keep their flag; smooth outlines up to 2:1 (compactness up to 1.19, the 1.25 cut-off's margin)
    # never get one
    for shape in (bean(), bean(7.0, 4.0, 0.9), ellipse(5.5, 3.0), ellipse(4.0, 3.6), ellipse(8.0, 4.0),
                  stadium(12.0, 6.0)):
        convexity, compactness = outline_features(shape.outline)
        truth = (convexity < DEFAULT_CUTOFFS.irregular_convexity_below
                 or compactness > DEFAULT_CUTOFFS.irregular_compactness_above)
        assert truth is (shape.family == "bean"), shape.family  # the shape set is what the test assumes
        assert all(_irregular(section) is truth for section, _ in measured(shape, 30, seed=3)), shape.family


def test_rasteriser_fills_the_pixel_centres_inside():
    mask = rasterise(ellipse(10.0, 10.0).outline, (1.0, 1.0), (0.0, 0.0), margin_px=0)
    assert abs(mask.sum() - np.pi * 100) < 0.05 * np.pi * 100
    assert mask.sum(axis=1).max() in (19, 20, 21)  # the widest row spans the diameter


def accuracy_table(count: int = 60) -> list[str]:
    """Per family: mean and max |error| of both axes (mm), mean error of compactness and convexity."""
    rows = ["| family | placements | long axis mean / max abs error (mm) | short axis mean / max abs error (mm) "
            "| short axis error > 1 px | compactness mean error (relative) | convexity mean error |",
            "|---|---|---|---|---|---|---|"]
    families: dict[str, list] = {}
    for index, shape in enumerate(shape_set()):
        convexity, compactness = outline_features(shape.outline)
        for section, pixel in measured(shape, count, seed=100 + index):
            families.setdefault(shape.family, []).append((
                section.long_axis_mm - shape.long_mm, section.short_axis_mm - shape.short_mm, pixel,
                section.compactness / compactness - 1, section.convexity - convexity))
    for family, values in families.items():
        v = np.array(values)
        rows.append(f"| {family} | {len(v)} | {np.abs(v[:, 0]).mean():.2f} / {np.abs(v[:, 0]).max():.2f} "
                    f"| {np.abs(v[:, 1]).mean():.2f} / {np.abs(v[:, 1]).max():.2f} "
                    f"| {np.mean(np.abs(v[:, 1]) > v[:, 2]):.0%} | {v[:, 3].mean():+.3f} | {v[:, 4].mean():+.3f} |")
    return rows


if __name__ == "__main__":
    print("\n".join(accuracy_table()))
