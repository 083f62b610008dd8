"""Rule-based node criteria radiologists use today, computed beside the model so it can be read against them.

ESGAR 2016 consensus for rectal cancer (Beets-Tan et al., Eur Radiol 2018;28:1465-1475), mesorectal nodes:
short axis >= 9 mm is suspicious; 5-9 mm is suspicious with at least 2 of the 3 morphological features
(round shape, irregular border, heterogeneous signal); < 5 mm needs all 3. Lateral nodes: short axis >= 7 mm
(the size rule of the lateral node studies, e.g. Ogura et al., J Clin Oncol 2019;37:33-43).

The consensus names the morphological features without numbers; the cut-offs below make them reproducible
(see docs/prediction.md for the reasoning) and every node's report states which rule decided.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..imaging.measure import NodeMeasurement, slice_areas_mm2
from ..io.segmentation import NodeRegion
from ..io.volume import Volume


@dataclass(frozen=True)
class CriteriaCutoffs:
    size_positive_mm: float = 9.0  # short axis at or above: suspicious on size alone
    size_low_mm: float = 5.0  # below: all 3 morphological features needed
    round_axis_ratio: float = 0.8  # short/long at or above: round
    # Irregular border: a smooth ellipse is convex (convexity 1) and has compactness <= 1.19 up to a 2:1
    # axis ratio, so a lower convexity or a higher compactness reflects the border, not the elongation.
    irregular_convexity_below: float = 0.95
    irregular_compactness_above: float = 1.25
    # Heterogeneous signal: coefficient of variation (std / mean) of the node's intensities on its largest
    # cross-section of the original image; noise alone gives about 0.03-0.08 on T2 MRI nodes.
    heterogeneous_cv_above: float = 0.15
    lateral_short_axis_mm: float = 7.0
    min_pixels_after_erosion: int = 9  # erode one pixel (partial volume) only when this many remain

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_CUTOFFS = CriteriaCutoffs()


def definitions(cutoffs: CriteriaCutoffs = DEFAULT_CUTOFFS) -> dict[str, Any]:
    """Human-readable definitions written into every report."""
    c = cutoffs
    return {
        "source": "ESGAR 2016 consensus (Beets-Tan et al., Eur Radiol 2018) for mesorectal nodes; "
                  "lateral node short-axis rule (Ogura et al., J Clin Oncol 2019)",
        "esgar": f"short axis >= {c.size_positive_mm:g} mm: suspicious; {c.size_low_mm:g}-{c.size_positive_mm:g} mm: "
                 f"suspicious with >= 2 of round, irregular border, heterogeneous; < {c.size_low_mm:g} mm: all 3",
        "round": f"axis_ratio (short/long) >= {c.round_axis_ratio:g}",
        "irregular_border": f"convexity < {c.irregular_convexity_below:g} or compactness > {c.irregular_compactness_above:g}",
        "heterogeneous": f"intensity coefficient of variation > {c.heterogeneous_cv_above:g} inside the node on its "
                         "largest axial cross-section of the original image (one-pixel eroded against partial volume "
                         f"when >= {c.min_pixels_after_erosion} pixels remain; signed intensities such as CT HU are taken from the "
                         "image minimum)",
        "lateral_short_axis_7mm": f"short axis >= {c.lateral_short_axis_mm:g} mm (applies to lateral pelvic nodes; "
                                  "the reader decides whether a node is lateral)",
        "measured_on": "the model's preprocessing grid (the same numbers as the node table)",
        "cutoffs": c.to_dict(),
    }


def heterogeneity_cv(image: Volume, node: NodeRegion, cutoffs: CriteriaCutoffs = DEFAULT_CUTOFFS,
                     image_minimum: float | None = None) -> float:
    """Coefficient of variation of the node's intensities on its largest axial cross-section.

    ``image``/``node`` on the canonical grid of the ORIGINAL image (no resampling, no intensity preset), so
    the texture is the acquired one. Border pixels mix node and surrounding tissue (partial volume), which
    would make every small node look heterogeneous, so the cross-section is eroded by one pixel when enough
    pixels remain.

    Args:
        image: the case's image on its canonical grid.
        node: the node on that grid.
        cutoffs: the criteria's cut-offs.
        image_minimum: ``image.array.min()`` when the caller has it (one full-volume pass per case, not per
            node); None computes it here.

    Returns:
        The coefficient of variation (0.0 for fewer than 2 pixels or a mean near 0).
    """
    areas = slice_areas_mm2(node.mask, image.spacing)
    local = int(np.argmax(areas))
    section = node.mask[local]
    k = node.offset[0] + local
    rows = slice(node.offset[1], node.offset[1] + section.shape[0])
    cols = slice(node.offset[2], node.offset[2] + section.shape[1])
    values = image.array[k, rows, cols].astype(np.float64)
    # MRI magnitudes are >= 0 (a ratio scale, so the CV is meaningful); signed intensities such as CT
    # Hounsfield units are measured from the image's minimum (air) instead, so that the mean is not near 0.
    minimum = float(image.array.min()) if image_minimum is None else float(image_minimum)
    if minimum < 0:
        values = values - minimum
    eroded = ndimage.binary_erosion(section)
    inside = eroded if np.count_nonzero(eroded) >= cutoffs.min_pixels_after_erosion else section
    sample = values[inside]
    if sample.size < 2:
        return 0.0
    mean = float(np.mean(sample))
    return float(np.std(sample) / mean) if mean > 1e-6 else 0.0


def evaluate(measurement: NodeMeasurement, cv: float, cutoffs: CriteriaCutoffs = DEFAULT_CUTOFFS) -> dict[str, Any]:
    """The criteria of one node: ``{"esgar": {...}, "lateral_short_axis_7mm": bool}``."""
    c = cutoffs
    short = float(measurement.short_axis_mm)
    round_shape = bool(measurement.axis_ratio >= c.round_axis_ratio)
    irregular = bool(measurement.convexity < c.irregular_convexity_below
                     or measurement.compactness > c.irregular_compactness_above)
    heterogeneous = bool(cv > c.heterogeneous_cv_above)
    count = int(round_shape) + int(irregular) + int(heterogeneous)
    if short >= c.size_positive_mm:
        suspicious, rule = True, f"short axis {short:.1f} mm >= {c.size_positive_mm:g} mm"
    elif short >= c.size_low_mm:
        suspicious = count >= 2
        rule = f"short axis {short:.1f} mm in {c.size_low_mm:g}-{c.size_positive_mm:g} mm with {count} of 3 features (needs >= 2)"
    else:
        suspicious = count == 3
        rule = f"short axis {short:.1f} mm < {c.size_low_mm:g} mm with {count} of 3 features (needs 3)"
    return {
        "esgar": {
            "suspicious": bool(suspicious),
            "round": round_shape,
            "irregular_border": irregular,
            "heterogeneous": heterogeneous,
            "n_features": count,
            "rule": rule,
        },
        "lateral_short_axis_7mm": bool(short >= c.lateral_short_axis_mm),
    }
