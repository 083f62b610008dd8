"""``predict_case``: one segmented case -> node and patient probabilities with explanations.

Used by both the command line (``lnmstaging predict``) and the Slicer module. Steps: the bundle's preset
(canonical orientation, resampling, intensities) -> node measurements -> every node's patches -> node
probabilities (mean over each node's patches, every ensemble member) and the patient probability (bag of
the largest patches) -> Grad-CAM of each node's primary patch, written back onto the input image grid ->
latent traversals -> rule-based criteria.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..bundle import ModelBundle, load_bundle
from ..case import Case, PreparedCase, prepare_case
from ..cohort import ClinicalData
from ..errors import BundleError, CancelledError, InputError
from ..measure import NodeMeasurement, measure_nodes
from ..patches import PatchConfig, PatchSet, extract_patches, patch_features
from ..presets import Preset
from . import criteria
from .gradcam import node_gradcam
from .inputs import clinical_inputs
from .results import (
    UNCERTAIN_RANGE,
    ModelInfo,
    NodePatch,
    NodePrediction,
    PatientResult,
    PredictionResult,
    Timings,
)
from .traversal import TRAVERSAL_STEPS, traverse

ProgressCallback = Callable[[float, str], None]
CancelCallback = Callable[[], bool]
CARD_SUMMARY_KEYS = ("summary", "intended_use", "data", "evaluation", "limits")
# One case is a few dozen 32 x 32 patches: every operation is so small that splitting it across threads
# costs more than it gains, and on a busy machine (Slicer, other jobs) spinning worker threads make it
# several times slower. Inference runs single-threaded and the caller's setting is restored afterwards.
INFERENCE_THREADS = 1


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
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


def _usable_patches(prepared: PreparedCase, measurements: list[NodeMeasurement], patch_set: PatchSet,
                    pixel_mm: float) -> tuple[PatchSet, list[dict[str, str]]]:
    """Drop nodes smaller than one patch pixel in-plane (the model cannot see them)."""
    skipped, keep_ids = [], set()
    for measurement in measurements:
        has_pixel = any(p.mask.any() for p in patch_set.patches if p.node_id == measurement.node_id)
        if measurement.area_mm2 < pixel_mm**2 or not has_pixel:
            skipped.append({"segment_name": measurement.segment_name,
                            "reason": f"smaller than one pixel in-plane of the model's patch grid ({pixel_mm:.3g} mm)"})
        else:
            keep_ids.add(measurement.node_id)
    if not keep_ids:
        raise InputError(
            prepared.case.segmentation_source,
            f"every node is smaller than one voxel in-plane for this model ({pixel_mm:.3g} mm patch pixels): nothing to predict",
        )
    patches = [p for p in patch_set.patches if p.node_id in keep_ids]
    bag = list(range(min(patch_set.config.max_patches, len(patches))))
    return PatchSet(patches, patch_set.config, bag), skipped


def _resize(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) maps to (N, size, size), bilinear; unchanged when already that size."""
    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps
    import torch
    import torch.nn.functional as F

    resized = F.interpolate(torch.as_tensor(maps)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return resized[:, 0].numpy().astype(np.float32)


def _uncertainty(probability: float, per_member: list[float], threshold: float) -> list[str]:
    reasons = []
    low, high = UNCERTAIN_RANGE
    if low <= probability <= high:
        reasons.append(f"probability {probability:.2f} lies in {low}-{high}")
    above = sum(p >= threshold for p in per_member)
    if 0 < above < len(per_member):
        reasons.append(f"the ensemble disagrees: {above} of {len(per_member)} members at or above the threshold {threshold:.2f}")
    return reasons


def predict_case(
    case: Case,
    clinical: ClinicalData | None = None,
    bundle_path: Path | str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    bundle: ModelBundle | None = None,
) -> PredictionResult:
    """Predict one segmented case with the bundle at ``bundle_path`` (default bundle when None), or with an
    already loaded ``bundle``. Raises InputError/BundleError for unusable input, CancelledError when
    ``cancel()`` turns true between steps."""
    with _torch_threads(INFERENCE_THREADS):
        return _predict(case, clinical, bundle_path, progress, cancel, bundle)


def _predict(case: Case, clinical: ClinicalData | None, bundle_path: Path | str | None,
             progress: ProgressCallback | None, cancel: CancelCallback | None,
             bundle: ModelBundle | None) -> PredictionResult:
    from ..data.bags import Bag

    steps = _Steps(progress, cancel)
    timings = Timings()
    started = time.perf_counter()
    steps(0.0, "loading the model")
    if bundle is None:
        bundle = load_bundle(bundle_path)
        timings.model_load_s = time.perf_counter() - started
    steps(0.1, "preparing the image with the model's preset")
    clock = time.perf_counter()
    preset, patch_config = bundle_settings(bundle)
    prepared = prepare_case(case, preset)
    native = prepare_case(case, None, intensity=False)  # canonical orientation only: the acquired voxels
    steps(0.2, "measuring the nodes")
    measurements = measure_nodes(prepared)
    native_by_id = {m.node_id: m for m in measure_nodes(native)}
    native_nodes = {node.node_id: node for node in native.nodes}
    prepared_ids = {node.node_id for node in prepared.nodes}
    skipped = [{"segment_name": node.segment_name, "reason": "smaller than one voxel of the preset's grid"}
               for node in case.nodes if node.node_id not in prepared_ids]
    steps(0.3, "cutting the node patches")
    pixel_mm = patch_config.fov_mm / patch_config.size if patch_config.fov_mm else prepared.image.spacing[0]
    patch_set, too_small = _usable_patches(prepared, measurements, extract_patches(prepared, patch_config), pixel_mm)
    skipped += too_small
    names = list(bundle.config.feature_names)
    try:
        features = patch_features(prepared, patch_set.patches, names)
    except ValueError as error:
        raise BundleError(bundle.path / "config.json", f"the model needs a node feature this version cannot measure ({error})") from None
    images, masks, _ = patch_set.stacked(bag_only=False)
    model_input = bundle.prepare_patches(images, masks)
    usable = [m for m in measurements if any(p.node_id == m.node_id for p in patch_set.patches)]
    criteria_by_id = {}
    for m in usable:
        cv = criteria.heterogeneity_cv(native.image, native_nodes[m.node_id])
        criteria_by_id[m.node_id] = (cv, criteria.evaluate(m, cv))
    timings.preprocessing_s = time.perf_counter() - clock

    steps(0.4, "predicting node and patient probabilities")
    clock = time.perf_counter()
    patch_probs = bundle.ensemble.patch_probabilities(model_input, features).cpu().numpy().astype(np.float64)  # (K, P)
    patch_node = np.array([p.node_id for p in patch_set.patches])
    values, clinical_use = clinical_inputs(bundle, clinical)
    bag = Bag.from_patches(
        model_input[:, 0].cpu().numpy(), features, patch_node.tolist(),
        areas=[p.area_mm2 for p in patch_set.patches],
        max_patches=int(bundle.config.mil.max_patches),
        clinical=values,
    )
    patient = bundle.ensemble.predict_bag(bag)
    bag_nodes = [int(n) for n in bag.node_ids]
    timings.inference_s = time.perf_counter() - clock

    steps(0.6, "Grad-CAM of every node")
    clock = time.perf_counter()
    primary = [patch_set.primary_index(m.node_id) for m in usable]
    primary_input = model_input[primary]
    cams = node_gradcam(bundle, primary_input, features[primary])
    # the model may see the patches resized (bundle patch_size != sampled size): map back at the sampled size
    heatmap = patch_set.write_back(_resize(cams, patch_config.size), case.image.array.shape, indices=primary)
    timings.gradcam_s = time.perf_counter() - clock

    steps(0.8, "latent growth and border traversals")
    clock = time.perf_counter()
    frames = traverse(bundle, primary_input)
    timings.traversal_s = time.perf_counter() - clock

    nodes, patch_maps, traversals, node_patches = [], {}, {}, {}
    segment_ids = {node.node_id: node.segment_id for node in case.nodes}
    for row, m in enumerate(usable):
        member_probs = patch_probs[:, patch_node == m.node_id].mean(axis=1)
        cv, node_criteria = criteria_by_id[m.node_id]
        native_m = native_by_id.get(m.node_id)
        nodes.append(NodePrediction(
            node_id=m.node_id, segment_name=m.segment_name, probability=float(member_probs.mean()),
            std=float(member_probs.std()), per_member=member_probs.tolist(),
            n_patches=int(np.count_nonzero(patch_node == m.node_id)), in_patient_bag=m.node_id in bag_nodes,
            **{key: getattr(m, key) for key in NodePrediction.MEASUREMENT_KEYS},
            largest_slice=m.largest_slice, heterogeneity_cv=cv, criteria=node_criteria,
            native_measurement={key: getattr(native_m, key) for key in NodePrediction.MEASUREMENT_KEYS} if native_m else {},
            segment_id=segment_ids.get(m.node_id, ""),
        ))
        patch_maps[m.node_id] = cams[row]
        traversals[m.node_id] = {name: frames[name][row] for name in frames}
        patch = patch_set.patches[primary[row]]
        mask = _resize(patch.mask[None].astype(np.float32), cams.shape[-1])[0] > 0.5
        total = float(cams[row].sum())
        nodes[-1].gradcam_in_node_fraction = float(cams[row][mask].sum()) / total if total > 0 else 0.0
        model_pixel_mm = pixel_mm * patch_config.size / cams.shape[-1]  # the image as the model saw it
        node_patches[m.node_id] = NodePatch(model_input[primary[row], 0].cpu().numpy(), mask,
                                            patch.slice_index, float(model_pixel_mm),
                                            NodePatch.resized_mapping(patch.patch_to_image, patch.image.shape, cams.shape[-2:]))

    per_member = [float(p) for p in patient.per_member]
    reasons = _uncertainty(patient.probability, per_member, patient.threshold)
    patient_result = PatientResult(
        probability=float(patient.probability), std=float(patient.std), per_member=per_member,
        threshold=float(patient.threshold), positive=bool(patient.positive), uncertain=bool(reasons),
        uncertainty_reasons=reasons, clinical=clinical_use, nodes_in_bag=bag_nodes,
    )
    image = case.image
    input_info = {
        "image": case.image_source,
        "segmentation": case.segmentation_source,
        "size_ijk": list(image.shape_ijk),
        "spacing_mm": list(image.spacing),
        "origin_lps_mm": list(image.origin),
        "direction": image.direction.ravel().tolist(),
        "measurement_grid": {"preset": preset.name, "spacing_mm": list(prepared.image.spacing)},
        "patch_pixel_mm": float(pixel_mm),
        "empty_segments": list(case.skipped_segments),
    }
    timings.total_s = time.perf_counter() - started
    steps(1.0, "done")
    return PredictionResult(
        model=model_info(bundle), patient=patient_result, nodes=nodes, heatmap=heatmap.astype(np.float32),
        patch_heatmaps=patch_maps, traversals=traversals, traversal_steps=list(TRAVERSAL_STEPS),
        node_patches=node_patches, skipped_nodes=skipped, input_info=input_info,
        criteria_definitions=criteria.definitions(), timings=timings,
    )
