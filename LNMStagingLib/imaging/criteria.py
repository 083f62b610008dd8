"""Rule-based node criteria radiologists use today, as ONE function of a node's reads.

A node's reads are its short axis and its morphological features (round, irregular border, heterogeneous,
and the T2 signal where a rule uses it), see :class:`NodeReads`. Every criteria set is a rule on these reads
(:data:`CRITERIA_SETS`, :func:`meets`). ``predict`` computes the reads from the measurements
(:func:`reads_from_measurement`, cut-offs in :class:`CriteriaCutoffs`); the rectal benchmark
(``lnmstaging benchmark criteria``) passes the radiologists' reads. Both go through :func:`node_criteria`,
so what is validated on patients is what users get.

ESGAR 2016 consensus for rectal cancer (Beets-Tan et al., Eur Radiol 2018;28:1465-1475), mesorectal nodes,
primary staging: short axis >= 9 mm is suspicious; 5 to < 9 mm is suspicious with at least 2 of the 3
morphological features (round shape, irregular border, heterogeneous signal); < 5 mm needs all 3. Lateral
nodes: short axis >= 7 mm (the size rule of the lateral node studies, e.g. Ogura et al., J Clin Oncol
2019;37:33-43). The other sets and their references are in docs/rectal.md.

The consensus names the morphological features without numbers; the cut-offs below make them reproducible
from measurements (see docs/prediction.md for the reasoning) and every node's report states which rule decided.
"""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..io.segmentation import NodeRegion
from ..io.volume import Volume
from .measure import NodeMeasurement, slice_areas_mm2


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
        "sets": "; ".join(f"{s.name}: {s.definition}" for s in CRITERIA_SETS.values())
                + " (per node under criteria.sets; references in docs/rectal.md)",
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
        image_minimum: ``image.array.min()`` when the caller has it (one full-volume pass per case instead of
            one per node); None computes it here.

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


@dataclass(frozen=True)
class NodeReads:
    """What a criteria rule looks at for one node.

    ``signal``: T2 signal relative to muscle, ``"low"``, ``"intermediate"``, ``"high"`` or None (not read or
    not assessable; never meets a signal rule). Measurements give no signal read (None).
    """

    short_axis_mm: float
    round: bool
    irregular_border: bool
    heterogeneous: bool
    signal: str | None = None

    @property
    def n_features(self) -> int:
        """How many of the three ESGAR morphological features are present."""
        return int(self.round) + int(self.irregular_border) + int(self.heterogeneous)


SIGNALS = ("low", "intermediate", "high")


def reads_from_measurement(measurement: NodeMeasurement, cv: float,
                           cutoffs: CriteriaCutoffs = DEFAULT_CUTOFFS) -> NodeReads:
    """The reads of a measured node: round, irregular and heterogeneous from the documented cut-offs.

    Args:
        measurement: the node's size and shape measurements.
        cv: its intensity coefficient of variation (:func:`heterogeneity_cv`).
        cutoffs: the feature cut-offs.

    Returns:
        The node's reads (no signal read: measurements have none).
    """
    c = cutoffs
    return NodeReads(
        short_axis_mm=float(measurement.short_axis_mm),
        round=bool(measurement.axis_ratio >= c.round_axis_ratio),
        irregular_border=bool(measurement.convexity < c.irregular_convexity_below
                              or measurement.compactness > c.irregular_compactness_above),
        heterogeneous=bool(cv > c.heterogeneous_cv_above),
    )


def esgar_rule(reads: NodeReads, size_positive_mm: float = 9.0, size_low_mm: float = 5.0) -> tuple[bool, str]:
    """The ESGAR 2016 primary-staging rule on one node.

    Args:
        reads: the node's reads.
        size_positive_mm: short axis at or above which the node is suspicious on size alone (9 mm).
        size_low_mm: short axis below which all three features are needed (5 mm).

    Returns:
        (suspicious, the rule that decided, in words).
    """
    short, count = reads.short_axis_mm, reads.n_features
    if short >= size_positive_mm:
        return True, f"short axis {short:.1f} mm >= {size_positive_mm:g} mm"
    if short >= size_low_mm:
        return count >= 2, (f"short axis {short:.1f} mm in {size_low_mm:g}-{size_positive_mm:g} mm with {count} "
                            "of 3 features (needs >= 2)")
    return count == 3, f"short axis {short:.1f} mm < {size_low_mm:g} mm with {count} of 3 features (needs 3)"


@dataclass(frozen=True)
class CriteriaSet:
    """A published node rule: ``rule(reads) -> suspicious``; ``setting`` says which patients it was made for."""

    name: str
    definition: str
    reference: str
    setting: str
    rule: Callable[[NodeReads], bool]
    uses: tuple[str, ...]  # the reads the rule looks at (the data must hold them)


CRITERIA_SETS: dict[str, CriteriaSet] = {s.name: s for s in (
    CriteriaSet("esgar_2016", "short axis >= 9 mm; or 5 to < 9 mm with >= 2 of round, irregular border, "
                "heterogeneous; or < 5 mm with all 3",
                "Beets-Tan RGH et al., Eur Radiol 2018;28:1465-1475 (ESGAR 2016 consensus), primary staging",
                "primary staging (treatment-naive)", lambda r: esgar_rule(r)[0],
                ("short_axis_mm", "round", "irregular_border", "heterogeneous")),
    CriteriaSet("esgar_2016_restaging", "short axis >= 5 mm",
                "Beets-Tan RGH et al., Eur Radiol 2018;28:1465-1475 (ESGAR 2016 consensus), restaging after "
                "chemoradiotherapy", "restaging after neoadjuvant therapy", lambda r: r.short_axis_mm >= 5.0,
                ("short_axis_mm",)),
    CriteriaSet("lateral_7mm", "short axis >= 7 mm",
                "Ogura A et al., J Clin Oncol 2019;37:33-43 (lateral lymph nodes; here applied to the "
                "mesorectal nodes of the data)", "lateral pelvic nodes", lambda r: r.short_axis_mm >= 7.0,
                ("short_axis_mm",)),
    CriteriaSet("short_axis_5mm", "short axis >= 5 mm", "plain size cut-off", "any",
                lambda r: r.short_axis_mm >= 5.0, ("short_axis_mm",)),
    CriteriaSet("short_axis_7mm", "short axis >= 7 mm", "plain size cut-off", "any",
                lambda r: r.short_axis_mm >= 7.0, ("short_axis_mm",)),
    CriteriaSet("short_axis_9mm", "short axis >= 9 mm", "plain size cut-off", "any",
                lambda r: r.short_axis_mm >= 9.0, ("short_axis_mm",)),
    CriteriaSet("koh_2008", "irregular border or heterogeneous (mixed) signal, any size",
                "Koh DM et al., Int J Radiat Oncol Biol Phys 2008;71:456-461 (the morphological criteria of "
                "Brown G et al., Radiology 2003;227:371-377)", "primary staging and restaging",
                lambda r: r.irregular_border or r.heterogeneous, ("irregular_border", "heterogeneous")),
    CriteriaSet("groene_2017", "irregular border and heterogeneous signal, any size",
                "Groene J et al., J Gastrointest Surg 2018;22:146-153 (online 2017)", "primary staging",
                lambda r: r.irregular_border and r.heterogeneous, ("irregular_border", "heterogeneous")),
    CriteriaSet("almlov_2020", "short axis >= 5 mm, or irregular border, or heterogeneous signal",
                "Almlov K et al., Anticancer Res 2020 (as defined in the data source's criteria list)",
                "restaging after neoadjuvant therapy",
                lambda r: r.short_axis_mm >= 5.0 or r.irregular_border or r.heterogeneous,
                ("short_axis_mm", "irregular_border", "heterogeneous")),
    CriteriaSet("barbaro_2024", "short axis > 2.2 mm",
                "Barbaro B et al., 2024 (ypN0 after chemoradiotherapy; as defined in the data source's criteria "
                "list)", "restaging after neoadjuvant therapy", lambda r: r.short_axis_mm > 2.2,
                ("short_axis_mm",)),
)}


def meets(name: str, reads: NodeReads) -> bool:
    """Whether one node meets criteria set ``name`` (a key of :data:`CRITERIA_SETS`).

    Args:
        name: the criteria set.
        reads: the node's reads.

    Returns:
        True when the node is suspicious under that set.
    """
    return bool(CRITERIA_SETS[name].rule(reads))


def node_criteria(reads: NodeReads, cutoffs: CriteriaCutoffs = DEFAULT_CUTOFFS) -> dict[str, Any]:
    """The criteria of one node from its reads (the one function ``predict`` and the benchmark share).

    Args:
        reads: the node's reads (measured or a radiologist's).
        cutoffs: the ESGAR size cut-offs and the lateral cut-off.

    Returns:
        ``{"esgar": {suspicious, round, irregular_border, heterogeneous, n_features, rule},
        "lateral_short_axis_7mm": bool, "sets": {set name: bool}}``.
    """
    c = cutoffs
    suspicious, rule = esgar_rule(reads, c.size_positive_mm, c.size_low_mm)
    return {
        "esgar": {
            "suspicious": bool(suspicious),
            "round": bool(reads.round),
            "irregular_border": bool(reads.irregular_border),
            "heterogeneous": bool(reads.heterogeneous),
            "n_features": reads.n_features,
            "rule": rule,
        },
        "lateral_short_axis_7mm": bool(reads.short_axis_mm >= c.lateral_short_axis_mm),
        "sets": {name: meets(name, reads) for name in CRITERIA_SETS},
    }


def evaluate(measurement: NodeMeasurement, cv: float, cutoffs: CriteriaCutoffs = DEFAULT_CUTOFFS) -> dict[str, Any]:
    """The criteria of one measured node (reads from :func:`reads_from_measurement`, then :func:`node_criteria`).

    Args:
        measurement: the node's measurements.
        cv: its intensity coefficient of variation (:func:`heterogeneity_cv`).
        cutoffs: feature and size cut-offs.

    Returns:
        See :func:`node_criteria`.
    """
    return node_criteria(reads_from_measurement(measurement, cv, cutoffs), cutoffs)
