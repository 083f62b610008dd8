"""Typed results of one prediction (what the CLI writes and the Slicer module shows).

``PredictionResult.to_report_dict()`` is the content of ``report.json``: JSON-serialisable, and every
probability in it travels with the model's data, intended use and the words "research use only".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..imaging.measure import NodeMeasurement

REPORT_FORMAT = "lnmstaging-prediction-report"
REPORT_FORMAT_VERSION = 1
DISCLAIMER = (
    "Research use only. Not a medical device: these probabilities and explanations must not be used for "
    "diagnosis or treatment decisions. Every result needs review by a qualified radiologist."
)
UNCERTAIN_RANGE = (0.33, 0.66)  # Keel et al. 2025, section 4.4: predictions in this range deserve expert review
NOT_STATED = "not stated in the model card"


@dataclass
class ModelInfo:
    name: str
    version: str
    manifest_sha256: str
    path: str
    preset: str
    threshold: float
    threshold_source: str
    eta: float
    n_members: int
    card_summary: dict[str, Any]  # summary, intended use, data, evaluation, limits (from model_card.json)

    @property
    def intended_use(self) -> str:
        use = self.card_summary.get("intended_use")
        if isinstance(use, list | tuple):  # model cards list it as sentences
            use = " ".join(str(item) for item in use)
        return str(use) if use else NOT_STATED

    @property
    def model_data(self) -> Any:
        return self.card_summary.get("data") or NOT_STATED

    def context_line(self) -> str:
        """One line to print beside a probability: the model, its training data, intended use, research only."""
        data = self.model_data
        data = data.get("source", data) if isinstance(data, dict) else data
        use = self.card_summary.get("intended_use") or NOT_STATED
        use = str(use[0] if isinstance(use, list) else use).strip()
        use = use if use.endswith((".", "!", "?")) else use + "."
        return (f"model {self.name} {self.version}; trained on: {data}; intended use: {use} "
                "Research use only, not a medical device.")


@dataclass
class ClinicalUse:
    """Which clinical inputs the model uses and what was given; missing ones are declared, never zero."""

    used_by_model: list[str]  # the bundle's clinical_inputs names, [] when the model uses none
    values: dict[str, Any]  # given values of the used inputs (None = missing)
    declared_missing: list[str]  # used inputs that were not given
    note: str
    out_of_range: list[str] = field(default_factory=list)  # values outside the trained range (seen clipped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "used_by_model": list(self.used_by_model),
            "values": dict(self.values),
            "declared_missing": list(self.declared_missing),
            "note": self.note,
            "out_of_range": list(self.out_of_range),
        }


@dataclass
class PatientResult:
    probability: float  # ensemble mean of the final (patient) probability
    std: float  # ensemble standard deviation
    per_member: list[float]
    threshold: float
    positive: bool  # probability >= threshold
    uncertain: bool
    uncertainty_reasons: list[str]
    clinical: ClinicalUse
    nodes_in_bag: list[int]  # node ids whose patches entered the patient bag (at most max_patches patches)
    # the usable nodes none of whose patches entered the bag: {"node_id", "segment_name", "reason"}
    nodes_left_out_of_bag: list[dict] = field(default_factory=list)
    # why this case is not the model's intended input (prediction/inputs.py input_caveats): said beside P
    input_caveats: list[str] = field(default_factory=list)

    @property
    def decision(self) -> str:
        return "N+ (node positive)" if self.positive else "N0 (node negative)"


@dataclass
class NodePrediction:
    """One node's prediction: its :class:`~LNMStagingLib.imaging.measure.NodeMeasurement` (on the preset's grid, and on
    the image's own grid) with the ensemble's probability, the criteria and the Grad-CAM share.

    The measurement's fields read through (``node.short_axis_mm``); report.json keeps them flat.
    """

    measurement: NodeMeasurement
    probability: float  # ensemble mean of the node probability (mean over the node's patches)
    std: float  # ensemble standard deviation
    per_member: list[float]
    n_patches: int
    in_patient_bag: bool
    heterogeneity_cv: float  # intensity coefficient of variation on the original image (criteria.py)
    criteria: dict[str, Any]
    native: NodeMeasurement | None = None  # on the image's own grid
    gradcam_in_node_fraction: float = 0.0  # share of the node's Grad-CAM mass inside its own outline
    segment_id: str = ""  # the .seg.nrrd segment the node came from ("" for a labelmap): lets a viewer map back
    # direction -> the primary member's probability of each traversal frame (report.json, under every frame)
    traversal_probabilities: dict[str, list[float]] = field(default_factory=dict)

    MEASUREMENT_KEYS = ("short_axis_mm", "long_axis_mm", "axis_ratio", "convexity", "compactness", "volume_mm3",
                        "n_slices", "centroid_x", "centroid_y", "centroid_z", "area_mm2")

    def __getattr__(self, name: str) -> Any:
        # only reached for names the dataclass lacks: the measurement's (node_id, segment_name, sizes, ...)
        if name != "measurement" and name in NodeMeasurement.__dataclass_fields__:
            return getattr(self.measurement, name)
        raise AttributeError(name)

    @property
    def native_measurement(self) -> dict[str, Any]:
        """The measurement on the image's own grid as report.json writes it ({} when there is none)."""
        return {key: getattr(self.native, key) for key in self.MEASUREMENT_KEYS} if self.native else {}

    def to_dict(self) -> dict[str, Any]:
        data = {
            "node_id": self.node_id,
            "segment_name": self.segment_name,
            "segment_id": self.segment_id or None,
            "probability": _round(self.probability),
            "std": _round(self.std),
            "per_member": [_round(p) for p in self.per_member],
            "n_patches": self.n_patches,
            "in_patient_bag": self.in_patient_bag,
        }
        data.update({key: _round(getattr(self.measurement, key)) for key in self.MEASUREMENT_KEYS})
        data["heterogeneity_cv"] = _round(self.heterogeneity_cv)
        data["gradcam_in_node_fraction"] = _round(self.gradcam_in_node_fraction)
        data["criteria"] = self.criteria
        data["native_grid_measurement"] = {k: _round(v) for k, v in self.native_measurement.items()}
        data["traversal_probabilities"] = {k: [_round(p) for p in v] for k, v in self.traversal_probabilities.items()}
        return data


@dataclass
class NodePatch:
    """The node's primary patch (largest cross-section) as the model saw it, for the report."""

    image: np.ndarray  # (H, W) float32 in [0, 1]
    mask: np.ndarray  # (H, W) bool
    slice_index: int  # axial slice on the preset grid
    pixel_mm: float  # patch pixel size
    # 4x4: pixel (col, row, 0, 1) of ``image`` -> continuous index (i, j, k, 1) of the input image (the case's
    # own grid, before the canonical LPS orientation and the preset), e.g. to place the patch or a
    # traversal frame in world coordinates: image IJK-to-world @ patch_to_image.
    patch_to_image: np.ndarray

    @staticmethod
    def resized_mapping(patch_to_image: np.ndarray, shape: tuple[int, ...], new_shape: tuple[int, ...]) -> np.ndarray:
        """The ``patch_to_image`` of a patch of ``shape`` (rows, cols) resampled to ``new_shape`` over the same
        field of view (the model's input size, a traversal frame's size).

        Pixel-centre convention of the bilinear resizing with ``align_corners=False`` and of the area resizing
        used for the model input and the Grad-CAM maps (and of ``PatchSet.write_back``): an n-pixel axis spans
        -0.5 .. n - 0.5, so pixel c of the new grid is c * s + (s - 1) / 2 of the old, s = old / new size.
        """
        scale = np.eye(4)
        for axis, (old, new) in enumerate(zip(tuple(shape)[::-1], tuple(new_shape)[::-1], strict=True)):  # cols, rows
            step = float(old) / float(new)
            scale[axis, axis], scale[axis, 3] = step, (step - 1.0) / 2.0
        return np.asarray(patch_to_image, dtype=np.float64) @ scale

    def frame_to_image(self, frame_shape: tuple[int, ...]) -> np.ndarray:
        """4x4: pixel (col, row, 0, 1) of a frame of ``frame_shape`` (rows, cols) over this patch's field of view
        (a traversal frame, a Grad-CAM map) -> continuous index (i, j, k, 1) of the input image."""
        return self.resized_mapping(self.patch_to_image, self.image.shape[-2:], tuple(frame_shape)[-2:])


@dataclass
class Timings:
    model_load_s: float = 0.0
    preprocessing_s: float = 0.0  # preset, measurements, patches, criteria
    inference_s: float = 0.0  # node and patient probabilities
    gradcam_s: float = 0.0
    traversal_s: float = 0.0
    total_s: float = 0.0

    @contextlib.contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to the field ``name`` (the one timing mechanism of a
        prediction's stages)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - start)

    def to_dict(self) -> dict[str, float]:
        return {key: round(float(value), 4) for key, value in self.__dict__.items()}


@dataclass
class PredictionResult:
    model: ModelInfo
    patient: PatientResult
    nodes: list[NodePrediction]
    heatmap: np.ndarray  # float32 (k, j, i) on the input case's image grid; 0 away from node patches
    patch_heatmaps: dict[int, np.ndarray]  # node id -> (H, W) float32 in [0, 1] on its primary patch
    traversals: dict[int, dict[str, np.ndarray]]  # node id -> {"growth"|"border_irregularity": (F, H, W)}
    traversal_steps: list[float]  # the multiples t of each direction, one per frame
    node_patches: dict[int, NodePatch]
    skipped_nodes: list[dict[str, str]]  # {"segment_name", "reason"}: nodes no prediction was made for
    input_info: dict[str, Any]
    criteria_definitions: dict[str, Any]
    timings: Timings
    # what every shown probability must carry: out-of-domain input, an unknown domain, clipped clinical values
    input_warnings: list[str] = field(default_factory=list)

    def node(self, node_id: int) -> NodePrediction:
        return next(n for n in self.nodes if n.node_id == node_id)

    def probability_context(self) -> dict[str, Any]:
        """What must accompany every probability shown to a person."""
        return {
            "research_use_only": True,
            "model_data": self.model.model_data,
            "intended_use": self.model.intended_use,
            "disclaimer": DISCLAIMER,
        }

    def to_report_dict(self) -> dict[str, Any]:
        patient = self.patient
        context = self.probability_context()
        return {
            "format": REPORT_FORMAT,
            "format_version": REPORT_FORMAT_VERSION,
            "lnmstaging_version": __version__,
            **context,
            "model": {
                "name": self.model.name,
                "version": self.model.version,
                "manifest_sha256": self.model.manifest_sha256,
                "path": self.model.path,
                "preset": self.model.preset,
                "threshold": _round(self.model.threshold),
                "threshold_source": self.model.threshold_source,
                "eta": _round(self.model.eta),
                "ensemble_members": self.model.n_members,
                "card": self.model.card_summary,
                # the one line every shown probability carries (training data, intended use, research use only)
                "context": self.model.context_line(),
            },
            "input": self.input_info,
            "patient": {
                "probability": _round(patient.probability),
                "decision": patient.decision,
                "positive": patient.positive,
                "threshold": _round(patient.threshold),
                "std": _round(patient.std),
                "per_member": [_round(p) for p in patient.per_member],
                "uncertain": patient.uncertain,
                "uncertainty_reasons": list(patient.uncertainty_reasons),
                "uncertain_range": list(UNCERTAIN_RANGE),
                "clinical": patient.clinical.to_dict(),
                "nodes_in_bag": list(patient.nodes_in_bag),
                "nodes_left_out_of_bag": list(patient.nodes_left_out_of_bag),
                "input_caveats": list(patient.input_caveats),
                "input_warnings": list(self.input_warnings),
                **context,
            },
            "nodes": [node.to_dict() for node in self.nodes],
            "skipped_nodes": list(self.skipped_nodes),
            "criteria_definitions": self.criteria_definitions,
            "traversal_steps": [_round(t) for t in self.traversal_steps],
            "timings_s": self.timings.to_dict(),
        }


def _round(value: Any, digits: int = 6) -> Any:
    """Plain Python numbers (JSON) rounded so that reports are stable and readable."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return round(float(value), digits)
    return value
