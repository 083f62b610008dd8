"""Node measurements in millimetres, on the axial cross-section with the largest area.

Definitions (docs/measurements.md gives them with the accuracy measured on analytic shapes):
- boundary: the marching-squares contour of the mask at level 0.5 (sub-pixel, half-way between inside
  and outside pixel centres), scaled by the pixel spacing, so anisotropic pixels are handled exactly;
- long axis: the largest Feret (caliper) diameter of that boundary;
- long-axis direction (near-tie rule): among the pairs of hull points whose distance is within
  ``AXIS_TIE_TOLERANCE_PIXELS`` (one pixel, the larger pixel side; at most ``AXIS_TIE_MAX_FRACTION`` of the
  long axis) of the largest, the pair across whose direction the node is narrowest: on round-ended and
  two-lobed nodes many near-equal Feret pairs compete, and taking the single largest one tilts the axis;
- short axis (the radiological one): the longest segment inside the node (inside the boundary, even-odd, so
  holes are outside) on a line perpendicular to the long-axis direction;
- convexity: convex-hull perimeter / perimeter (1 for a convex node, lower for a lobulated one);
- compactness: perimeter^2 / (4 pi area) (1 for a disc, higher when elongated or irregular).
The two border features use the boundary with each vertex averaged once with its neighbours (1, 2, 1) / 4
and then simplified by Douglas-Peucker with a tolerance of ``BORDER_SIMPLIFY_PIXELS`` (half a pixel): that
removes the pixel staircase (which would add about 10 % of perimeter to every node) but keeps real corners and
notches, which smoothing the image would round off; the area is the unrelaxed contour's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from skimage.measure import find_contours

from .case import PreparedCase

MEASUREMENT_COLUMNS = (
    "node_id", "segment_name", "short_axis_mm", "long_axis_mm", "axis_ratio", "convexity", "compactness",
    "volume_mm3", "n_slices", "centroid_x", "centroid_y", "centroid_z",
)

AXIS_TIE_TOLERANCE_PIXELS = 1.0
AXIS_TIE_MAX_FRACTION = 0.25
BORDER_SIMPLIFY_PIXELS = 0.5


@dataclass(frozen=True)
class CrossSection:
    short_axis_mm: float
    long_axis_mm: float
    axis_ratio: float  # short / long, in (0, 1]
    convexity: float
    compactness: float
    area_mm2: float
    perimeter_mm: float


@dataclass(frozen=True)
class NodeMeasurement:
    node_id: int
    segment_name: str
    short_axis_mm: float
    long_axis_mm: float
    axis_ratio: float
    convexity: float
    compactness: float
    volume_mm3: float
    n_slices: int
    centroid_x: float  # LPS millimetres
    centroid_y: float
    centroid_z: float
    largest_slice: int  # axial slice index k on the prepared grid
    area_mm2: float

    def row(self) -> dict:
        return {key: getattr(self, key) for key in MEASUREMENT_COLUMNS}

    def to_dict(self) -> dict:
        return asdict(self)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex-hull vertices of 2D points, counter-clockwise, without points on the hull's edges (Andrew's
    monotone chain). Own code rather than scipy.spatial: importing that (and scipy.linalg with it) costs about a
    third of a second of every ``predict`` start-up, for hulls of a few hundred contour points.

    Collinear or fewer than three distinct points: those points (a one-pixel-wide node is its own hull).
    """
    unique = np.unique(np.asarray(points, dtype=np.float64), axis=0)  # sorted by x, then y
    if len(unique) < 3:
        return unique
    span = float(np.ptp(unique, axis=0).max()) or 1.0
    tolerance = 1e-12 * span * span  # cross products this small are collinear (float noise of mm scaling)

    def chain(ordered: list[list[float]]) -> list[list[float]]:
        kept: list[list[float]] = []
        for x, y in ordered:  # plain floats: indexing numpy scalars in this loop was 5x slower
            while len(kept) >= 2:
                (ax, ay), (bx, by) = kept[-2], kept[-1]
                if (bx - ax) * (y - ay) - (by - ay) * (x - ax) > tolerance:
                    break
                kept.pop()
            kept.append([x, y])
        return kept

    ordered = unique.tolist()
    lower, upper = chain(ordered), chain(ordered[::-1])
    hull = np.array(lower[:-1] + upper[:-1])
    return hull if len(hull) >= 3 else unique


def _closed(points: np.ndarray) -> np.ndarray:
    return points if np.array_equal(points[0], points[-1]) else np.vstack([points, points[:1]])


def _closed_length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(_closed(points), axis=0), axis=1).sum())


def _to_mm(contour_px: np.ndarray, column_mm: float, row_mm: float) -> np.ndarray:
    """(row, col) pixel contour -> closed (x mm, y mm) polygon."""
    return _closed(np.column_stack([contour_px[:, 1] * column_mm, contour_px[:, 0] * row_mm]))


def _relax(contour_px: np.ndarray) -> np.ndarray:
    """One pass of (1, 2, 1) / 4 averaging of a closed contour's vertices (each moves by at most a quarter pixel).

    Marching squares puts the vertices on pixel-edge midpoints, a staircase whose 45-degree teeth
    Douglas-Peucker alone leaves in on curved borders (compactness 7 % high on small ellipses); one pass
    halves the teeth without moving a real corner by more than a quarter pixel.
    """
    ring = contour_px[:-1] if np.array_equal(contour_px[0], contour_px[-1]) else contour_px
    ring = 0.25 * np.roll(ring, 1, axis=0) + 0.5 * ring + 0.25 * np.roll(ring, -1, axis=0)
    return np.vstack([ring, ring[:1]])


def simplify_closed(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker simplification of a closed polygon (first point repeated last).

    Args:
        ring: (N, 2) closed polygon.
        tolerance: the largest distance a removed vertex may have from the simplified polygon.

    Returns:
        The kept vertices, closed; the first vertex and the one farthest from it are always kept.
    """
    points = ring[:-1]
    if len(points) < 4:
        return ring
    far = int(np.argmax(np.linalg.norm(points - points[0], axis=1)))
    closed = np.vstack([points, points[:1]])
    keep = np.zeros(len(closed), bool)
    keep[[0, far, len(closed) - 1]] = True
    stack = [(0, far), (far, len(closed) - 1)]
    while stack:
        start, stop = stack.pop()
        if stop - start < 2:
            continue
        chord = closed[stop] - closed[start]
        offsets = closed[start + 1:stop] - closed[start]
        length = float(np.hypot(*chord))
        distance = (np.abs(offsets[:, 0] * chord[1] - offsets[:, 1] * chord[0]) / length if length > 0
                    else np.hypot(offsets[:, 0], offsets[:, 1]))
        worst = int(np.argmax(distance))
        if distance[worst] > tolerance:
            middle = start + 1 + worst
            keep[middle] = True
            stack += [(start, middle), (middle, stop)]
    return closed[keep]


def longest_chord(polygons: list[np.ndarray], direction: np.ndarray) -> float:
    """The longest segment inside closed polygons (even-odd rule) on a line perpendicular to ``direction``.

    Args:
        polygons: closed (x, y) polygons (first point repeated last), in mm.
        direction: unit vector; the chords run along its normal.

    Returns:
        The length of the longest inside segment (0 if the polygons enclose nothing).
    """
    normal = np.array([-direction[1], direction[0]])
    starts = np.concatenate([p[:-1] for p in polygons])
    ends = np.concatenate([p[1:] for p in polygons])
    t0, t1 = starts @ direction, ends @ direction
    s0, s1 = starts @ normal, ends @ normal
    # along a line t = const the inside segments change length linearly between two vertices' positions, so
    # the longest is found just beside a vertex: probe both sides of each vertex position
    positions = np.unique(t0)
    eps = 1e-7 * max(float(positions[-1] - positions[0]), 1e-9)
    probes = np.concatenate([positions - eps, positions + eps])[:, None]
    crossing = (t0 - probes) * (t1 - probes) < 0
    span = np.where(t1 != t0, t1 - t0, 1.0)
    s = np.where(crossing, s0 + (probes - t0) / span * (s1 - s0), np.inf)
    s.sort(axis=1)
    s[~np.isfinite(s)] = 0.0  # the unused slots past each line's crossings (masked out below)
    count = crossing.sum(axis=1)
    pairs = min(int(count.max()) // 2, s.shape[1] // 2)
    if pairs == 0:
        return 0.0
    lengths = s[:, 1:2 * pairs:2] - s[:, 0:2 * pairs:2]
    valid = np.arange(pairs)[None, :] < (count // 2)[:, None]
    return float(np.where(valid, lengths, 0.0).max())


def outline_axes(polygons: list[np.ndarray], tolerance_mm: float) -> tuple[float, float]:
    """(long axis, short axis) of closed polygons (mm), by the module docstring's definitions.

    Args:
        polygons: closed (x, y) polygons, first point repeated last.
        tolerance_mm: the near-tie tolerance of the long axis (0: the single largest Feret pair).

    Returns:
        (long axis, short axis) in mm.
    """
    hull = _hull(np.concatenate(polygons))  # _hull takes the distinct points itself
    offsets = hull[:, None, :] - hull[None, :, :]
    distances = np.linalg.norm(offsets, axis=-1)
    first, second = np.unravel_index(np.argmax(distances), distances.shape)
    long_axis = float(distances[first, second])
    if long_axis <= 0:
        return 0.0, 0.0
    # near ties: every pair of hull points nearly as far apart as the largest (within the tolerance) is a
    # candidate long axis; on a digitised round end or two lobes the single largest pair tilts at random, and
    # the untilted candidate is the one across which the node is narrowest
    # (never more than a quarter of the long axis: on a node a few pixels across every pair would tie)
    tolerance_mm = min(tolerance_mm, AXIS_TIE_MAX_FRACTION * long_axis)
    first_index, second_index = np.nonzero(np.triu(distances >= long_axis - tolerance_mm, 1))
    pairs = offsets[first_index, second_index] / distances[first_index, second_index][:, None]
    across = hull @ np.column_stack([-pairs[:, 1], pairs[:, 0]]).T
    direction = pairs[int(np.argmin(across.max(axis=0) - across.min(axis=0)))]
    return long_axis, longest_chord(polygons, direction)


def measure_cross_section(mask2d: np.ndarray, spacing_xy: tuple[float, float] = (1.0, 1.0)) -> CrossSection:
    """Size and border features of one 2D cross-section.

    Args:
        mask2d: (rows, cols) boolean mask.
        spacing_xy: (column mm, row mm) pixel spacing.

    Returns:
        The cross-section's axes, border features, area (pixel count x pixel area) and perimeter.
    """
    mask = np.asarray(mask2d, dtype=bool)
    pixel_count = int(np.count_nonzero(mask))
    if pixel_count == 0:
        raise ValueError("empty cross-section")
    column_mm, row_mm = float(spacing_xy[0]), float(spacing_xy[1])
    raw_px = [c for c in find_contours(np.pad(mask, 1).astype(np.float32), 0.5) if len(c) >= 3]
    raw = [_to_mm(c, column_mm, row_mm) for c in raw_px]
    long_axis, short_axis = outline_axes(raw, AXIS_TIE_TOLERANCE_PIXELS * max(column_mm, row_mm))

    simplified = [_to_mm(simplify_closed(_relax(c), BORDER_SIMPLIFY_PIXELS), column_mm, row_mm) for c in raw_px]
    simplified = [p for p in simplified if len(p) >= 4] or raw  # a closed triangle or more
    perimeter = float(sum(_closed_length(p) for p in simplified))
    # the area from the unrelaxed contour: averaging and the Douglas-Peucker chords both cut into every convex
    # stretch, which would shrink the area (compactness 4 % high on ellipses); holes have the other orientation
    enclosed = abs(sum(_polygon_area(p[:-1]) for p in raw))
    hull = _hull(np.concatenate(simplified))
    hull_perimeter = _closed_length(hull) if len(hull) >= 3 else perimeter
    return CrossSection(
        short_axis_mm=short_axis,
        long_axis_mm=long_axis,
        axis_ratio=short_axis / long_axis if long_axis > 0 else 1.0,
        convexity=min(1.0, hull_perimeter / perimeter) if perimeter > 0 else 1.0,
        # no outline is more compact than a disc (isoperimetric inequality): a reading below 1 is the estimate's
        # error on a node a few pixels across, so it is clamped like the convexity
        compactness=max(1.0, perimeter**2 / (4 * np.pi * enclosed)) if enclosed > 0 else 1.0,
        area_mm2=pixel_count * column_mm * row_mm,
        perimeter_mm=perimeter,
    )


def slice_areas_mm2(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Cross-section area of each axial slice of a (k, j, i) mask."""
    return mask.reshape(mask.shape[0], -1).sum(axis=1) * spacing[0] * spacing[1]


def measure_node(prepared: PreparedCase, node_index: int) -> NodeMeasurement:
    node = prepared.nodes[node_index]
    volume = prepared.image
    spacing = volume.spacing
    areas = slice_areas_mm2(node.mask, spacing)
    largest = int(np.argmax(areas))
    section = measure_cross_section(node.mask[largest], (spacing[0], spacing[1]))
    k, j, i = np.nonzero(node.mask)
    centroid_index = np.array([i.mean(), j.mean(), k.mean()]) + np.array(node.offset[::-1])
    centroid = (volume.index_to_lps() @ np.append(centroid_index, 1.0))[:3]
    return NodeMeasurement(
        node_id=node.node_id,
        segment_name=node.segment_name,
        short_axis_mm=section.short_axis_mm,
        long_axis_mm=section.long_axis_mm,
        axis_ratio=section.axis_ratio,
        convexity=section.convexity,
        compactness=section.compactness,
        volume_mm3=float(len(k) * spacing[0] * spacing[1] * spacing[2]),
        n_slices=int(np.count_nonzero(areas)),
        centroid_x=float(centroid[0]),
        centroid_y=float(centroid[1]),
        centroid_z=float(centroid[2]),
        largest_slice=node.offset[0] + largest,
        area_mm2=section.area_mm2,
    )


def measure_nodes(prepared: PreparedCase) -> list[NodeMeasurement]:
    return [measure_node(prepared, index) for index in range(len(prepared.nodes))]
