"""``predict_case``: one segmented case -> node and patient probabilities with explanations.

Used by both the command line (``lnmstaging predict``) and the Slicer module. Steps: the bundle's preset
(canonical orientation, resampling, intensities) -> node measurements -> every node's patches -> node
probabilities (mean over each node's patches, every ensemble member) and the patient probability (bag of
the largest patches) -> the node heatmap (integrated gradients) of each node's primary patch, written back onto the input image grid ->
latent traversals -> rule-based criteria.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..bundle import ModelBundle
from ..errors import CancelledError
from ..imaging import criteria
from ..imaging.case import Case
from ..imaging.patches import PatchConfig
from ..imaging.presets import Preset
from ..io.cohort import ClinicalData
from .inputs import check_case_domain, input_caveats, load_bundle_for_case
from .results import (
    UNCERTAIN_RANGE,
    ModelInfo,
    NodePatch,
    NodePrediction,
    PatientResult,
    PredictionResult,
    Timings,
)
from .stages import Explanations, Inference, PreparedInputs, explain, infer, prepare, resize_maps
from .traversal import TRAVERSAL_STEPS

ProgressCallback = Callable[[float, str], None]
CancelCallback = Callable[[], bool]
CARD_SUMMARY_KEYS = ("summary", "intended_use", "data", "evaluation", "limits")
# One case is a few dozen 32 x 32 patches: every operation is so small that splitting it across threads
# costs more than it gains, and on a busy machine (Slicer, other jobs) spinning worker threads make it
# several times slower. Inference runs single-threaded and the caller's setting is restored afterwards.
INFERENCE_THREADS = 1


@contextlib.contextmanager
def torch_threads(count: int = INFERENCE_THREADS) -> Iterator[None]:
    """Run the block with ``count`` torch threads (loading a bundle too: 2 threads made it 5x slower here); the
    caller's setting is restored afterwards.

    Args:
        count: torch's intra-op thread count inside the block.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Steps:
    """Reports progress and honours cancellation between steps."""

    def __init__(self, progress: ProgressCallback | None, cancel: CancelCallback | None) -> None:
        self.progress, self.cancel = progress, cancel

    def __call__(self, fraction: float, message: str) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError()
        if self.progress is not None:
            self.progress(float(fraction), message)


def model_info(bundle: ModelBundle) -> ModelInfo:
    config = bundle.config
    return ModelInfo(
        name=bundle.name, version=bundle.version, manifest_sha256=bundle.manifest_sha256, path=str(bundle.path),
        preset=config.preprocessing.name, threshold=float(config.threshold),
        threshold_source=str(config.threshold_source), eta=float(config.eta), n_members=bundle.n_members,
        card_summary={key: bundle.card[key] for key in CARD_SUMMARY_KEYS if key in bundle.card},
    )


def bundle_settings(bundle: ModelBundle) -> tuple[Preset, PatchConfig]:
    """The bundle's preprocessing preset and patch sampling (parsed once, when the bundle was loaded)."""
    return bundle.config.preprocessing, bundle.config.patch_sampling


def uncertainty_reasons(probability: float, per_member: list[float], threshold: float) -> list[str]:
    """Why a patient's result is flagged uncertain (empty: not uncertain).

    Args:
        probability: the ensemble's (calibrated) patient probability.
        per_member: each member's calibrated probability (disagreement is judged on these).
        threshold: the decision threshold.

    Returns:
        The reasons: the probability in :data:`UNCERTAIN_RANGE`, members on both sides of the threshold.
    """
    reasons = []
    low, high = UNCERTAIN_RANGE
    if low <= probability <= high:
        reasons.append(f"probability {probability:.2f} lies in {low}-{high}")
    above = sum(p >= threshold for p in per_member)
    if 0 < above < len(per_member):
        reasons.append(f"the ensemble disagrees: {above} of {len(per_member)} members at or above the threshold {threshold:.2f}")
    return reasons


def left_out_of_bag(inputs, bag_nodes: list[int]) -> list[dict]:
    """The usable nodes that none of the patient bag's patches come from, each with the reason.

    Args:
        inputs: the prepared inputs (their patches, largest first; the bag is the first ``max_patches``).
        bag_nodes: the node ids in the bag.

    Returns:
        ``{"node_id", "segment_name", "reason"}`` per left-out node, in measurement order.
    """
    patches = inputs.patch_set.patches
    size = inputs.patch_config.max_patches
    smallest = min((p.area_mm2 for p in patches[:size]), default=0.0)
    out = []
    for m in inputs.usable:
        if m.node_id in bag_nodes:
            continue
        largest = max(p.area_mm2 for p in patches if p.node_id == m.node_id)
        out.append({"node_id": int(m.node_id), "segment_name": m.segment_name,
                    "reason": f"none of its cross-sections is among the patient's {size} largest (the patient bag): "
                              f"its largest is {largest:.1f} mm2, the bag's smallest {smallest:.1f} mm2"})
    return out


def predict_case(
    case: Case,
    clinical: ClinicalData | None = None,
    bundle_path: Path | str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    bundle: ModelBundle | None = None,
    allow_out_of_domain: bool = False,
) -> PredictionResult:
    """Predict one segmented case.

    Args:
        case: the image and its nodes.
        clinical: the patient's clinical data (None: all missing).
        bundle_path: the bundle to load (a folder or name; None: the default) when ``bundle`` is not given.
        progress: called with (fraction, message) before each step.
        cancel: polled between steps; True raises :class:`CancelledError`.
        bundle: an already loaded bundle.
        allow_out_of_domain: predict a case outside the bundle's training domain (else refused); the
            mismatch is then in ``input_warnings``, beside the probability in every output.

    Returns:
        The :class:`PredictionResult` (report.json is its ``to_report_dict()``).

    Raises InputError/BundleError for unusable input, CancelledError when ``cancel()`` turns true between steps.
    """
    with torch_threads(INFERENCE_THREADS):
        return _predict(case, clinical, bundle_path, progress, cancel, bundle, allow_out_of_domain)


def _predict(case: Case, clinical: ClinicalData | None, bundle_path: Path | str | None,
             progress: ProgressCallback | None, cancel: CancelCallback | None,
             bundle: ModelBundle | None, allow_out_of_domain: bool) -> PredictionResult:
    steps = _Steps(progress, cancel)
    timings = Timings()
    with timings.measure("total_s"):
        steps(0.0, "loading the model")
        if bundle is None:
            with timings.measure("model_load_s"):
                bundle = load_bundle_for_case(bundle_path)
        with timings.measure("preprocessing_s"):
            inputs = prepare(case, bundle, steps)
        warnings = check_case_domain(case.image_source, bundle, inputs.domain_mismatches, allow_out_of_domain)
        with timings.measure("inference_s"):
            inference = infer(bundle, inputs, clinical, steps)
        explanations = explain(case, bundle, inputs, timings, steps)
        result = assemble(case, bundle, inputs, inference, explanations, timings)
        result.input_warnings = warnings + list(inference.clinical_use.out_of_range)
    steps(1.0, "done")
    return result


def _node_result(case: Case, inputs: PreparedInputs, inference: Inference, explanations: Explanations,
                 row: int, segment_ids: dict[int, str]) -> tuple[NodePrediction, NodePatch]:
    """One usable node's prediction and the patch the model saw (row: its place in ``inputs.usable``)."""
    m = inputs.usable[row]
    cams, patch_config = explanations.cams, inputs.patch_config
    member_probs = inference.node_member_probs[m.node_id]
    cv, node_criteria = inputs.criteria_by_id[m.node_id]
    patch_index = explanations.primary[row]
    patch = inputs.patch_set.patches[patch_index]
    mask = resize_maps(patch.mask[None].astype(np.float32), cams.shape[-1])[0] > 0.5
    total = float(cams[row].sum())
    node = NodePrediction(
        measurement=m, probability=float(member_probs.mean()), std=float(member_probs.std()),
        per_member=member_probs.tolist(), n_patches=int(np.count_nonzero(inputs.patch_node == m.node_id)),
        in_patient_bag=m.node_id in inference.bag_nodes, heterogeneity_cv=cv, criteria=node_criteria,
        native=inputs.native_by_id.get(m.node_id),
        gradcam_in_node_fraction=float(cams[row][mask].sum()) / total if total > 0 else 0.0,
        segment_id=segment_ids.get(m.node_id, ""),
        traversal_probabilities={name: [float(v) for v in values[row]]
                                 for name, values in explanations.frame_probabilities.items()},
    )
    model_pixel_mm = inputs.pixel_mm * patch_config.size / cams.shape[-1]  # the image as the model saw it
    node_patch = NodePatch(inputs.model_input[patch_index, 0].cpu().numpy(), mask, patch.slice_index,
                           float(model_pixel_mm),
                           NodePatch.resized_mapping(patch.patch_to_image, patch.image.shape, cams.shape[-2:]))
    return node, node_patch


def assemble(case: Case, bundle: ModelBundle, inputs: PreparedInputs, inference: Inference,
             explanations: Explanations, timings: Timings) -> PredictionResult:
    """The :class:`PredictionResult` of the stages' outputs (nodes in measurement order)."""
    nodes, patch_maps, traversals, node_patches = [], {}, {}, {}
    segment_ids = {node.node_id: node.segment_id for node in case.nodes}
    for row, m in enumerate(inputs.usable):
        node, node_patch = _node_result(case, inputs, inference, explanations, row, segment_ids)
        nodes.append(node)
        node_patches[m.node_id] = node_patch
        patch_maps[m.node_id] = explanations.cams[row]
        traversals[m.node_id] = {name: explanations.frames[name][row] for name in explanations.frames}
    patient = inference.patient
    per_member = [float(p) for p in patient.per_member]
    reasons = uncertainty_reasons(patient.probability, per_member, patient.threshold)
    patient_result = PatientResult(
        probability=float(patient.probability), std=float(patient.std), per_member=per_member,
        threshold=float(patient.threshold), positive=bool(patient.positive), uncertain=bool(reasons),
        uncertainty_reasons=reasons, clinical=inference.clinical_use, nodes_in_bag=inference.bag_nodes,
        nodes_left_out_of_bag=left_out_of_bag(inputs, inference.bag_nodes), input_caveats=input_caveats(bundle),
    )
    image = case.image
    input_info = {
        "image": case.image_source,
        "segmentation": case.segmentation_source,
        "size_ijk": list(image.shape_ijk),
        "spacing_mm": list(image.spacing),
        "origin_lps_mm": list(image.origin),
        "direction": image.direction.ravel().tolist(),
        "measurement_grid": {"preset": inputs.preset.name, "spacing_mm": list(inputs.prepared.image.spacing)},
        "patch_pixel_mm": float(inputs.pixel_mm),
        "empty_segments": list(case.skipped_segments),
        "skipped_segments": [{"segment_name": name, "reason": case.skip_reason(name)} for name in case.skipped_segments],
    }
    return PredictionResult(
        model=model_info(bundle), patient=patient_result, nodes=nodes,
        heatmap=explanations.heatmap.astype(np.float32, copy=False), patch_heatmaps=patch_maps, traversals=traversals,
        traversal_steps=list(TRAVERSAL_STEPS), node_patches=node_patches, skipped_nodes=inputs.skipped,
        input_info=input_info, criteria_definitions=criteria.definitions(), timings=timings,
    )
