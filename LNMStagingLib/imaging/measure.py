"""Node measurements in millimetres, on the axial cross-section with the largest area.

Definitions (see docs/measurements.md):
- boundary: the marching-squares contour of the mask at level 0.5 (sub-pixel, half-way between inside
  and outside pixel centres), scaled by the pixel spacing, so anisotropic pixels are handled exactly;
- long axis: the largest Feret diameter of that boundary;
- short axis: the largest width of the cross-section measured perpendicular to the long axis;
- convexity: convex-hull perimeter / perimeter (1 for a convex node, lower for a lobulated one);
- compactness: perimeter^2 / (4 pi area) using the contour's enclosed area (1 for a disc, higher when irregular).
The two border features use the contour of the mask smoothed by a 1-pixel Gaussian: the raw pixel staircase
would add about 20 % of perimeter to every node (a digital disc would score compactness 1.19, convexity 0.95).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours

from .case import PreparedCase

MEASUREMENT_COLUMNS = (
    "node_id", "segment_name", "short_axis_mm", "long_axis_mm", "axis_ratio", "convexity", "compactness",
    "volume_mm3", "n_slices", "centroid_x", "centroid_y", "centroid_z",
)


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
    try:
        hull = ConvexHull(points)
        return points[hull.vertices]
    except (QhullError, ValueError):
        return points  # collinear points (a one-pixel-wide node): the points are their own hull


BORDER_SMOOTHING_PIXELS = 1.0


def _contours_mm(image: np.ndarray, column_mm: float, row_mm: float) -> list[np.ndarray]:
    """Closed iso-0.5 contours of a zero-padded image, as (x mm, y mm) point lists."""
    return [np.column_stack([c[:, 1] * column_mm, c[:, 0] * row_mm]) for c in find_contours(image, 0.5) if len(c) >= 3]


def _perimeter_and_area(contours: list[np.ndarray]) -> tuple[float, float]:
    perimeter = float(sum(np.linalg.norm(np.diff(c, axis=0), axis=1).sum() for c in contours))
    return perimeter, abs(sum(_polygon_area(c) for c in contours))  # holes have the opposite orientation


def _closed_length(points: np.ndarray) -> float:
    closed = np.vstack([points, points[:1]])
    return float(np.linalg.norm(np.diff(closed, axis=0), axis=1).sum())


def measure_cross_section(mask2d: np.ndarray, spacing_xy: tuple[float, float] = (1.0, 1.0)) -> CrossSection:
    """Size and border features of one 2D cross-section (rows, cols); ``spacing_xy`` = (col mm, row mm)."""
    mask = np.asarray(mask2d, dtype=bool)
    pixel_count = int(np.count_nonzero(mask))
    if pixel_count == 0:
        raise ValueError("empty cross-section")
    column_mm, row_mm = float(spacing_xy[0]), float(spacing_xy[1])
    padded = np.pad(mask, 3).astype(np.float32)
    raw = _contours_mm(padded, column_mm, row_mm)
    points = np.unique(np.concatenate(raw), axis=0)
    hull_points = _hull(points)
    distances = np.linalg.norm(hull_points[:, None, :] - hull_points[None, :, :], axis=-1)
    first, second = np.unravel_index(np.argmax(distances), distances.shape)
    long_axis = float(distances[first, second])
    direction = (hull_points[second] - hull_points[first]) / max(long_axis, 1e-12)
    normal = np.array([-direction[1], direction[0]])
    projection = points @ normal
    short_axis = float(projection.max() - projection.min())

    smooth = _contours_mm(ndimage.gaussian_filter(padded, BORDER_SMOOTHING_PIXELS), column_mm, row_mm) or raw
    perimeter, enclosed = _perimeter_and_area(smooth)
    smooth_hull = _hull(np.concatenate(smooth))
    hull_perimeter = _closed_length(smooth_hull) if len(smooth_hull) >= 3 else perimeter
    return CrossSection(
        short_axis_mm=short_axis,
        long_axis_mm=long_axis,
        axis_ratio=short_axis / long_axis if long_axis > 0 else 1.0,
        convexity=min(1.0, hull_perimeter / perimeter) if perimeter > 0 else 1.0,
        compactness=perimeter**2 / (4 * np.pi * enclosed) if enclosed > 0 else 1.0,
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
