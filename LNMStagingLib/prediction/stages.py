"""The stages of one case's prediction: :func:`prepare` (preset, measurements, patches, features, criteria),
:func:`infer` (node and patient probabilities), :func:`explain` (Grad-CAM, latent traversals).
:func:`~LNMStagingLib.prediction.pipeline.predict_case` runs them in order and assembles the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..bundle import ModelBundle
from ..bundle.domain import domain_mismatches
from ..data.bags import Bag
from ..errors import BundleError, InputError
from ..imaging import criteria
from ..imaging.case import Case, PreparedCase, prepare_case
from ..imaging.measure import NodeMeasurement, measure_nodes
from ..imaging.patches import PatchConfig, PatchSet, extract_patches, patch_features
from ..imaging.presets import Preset
from ..io.cohort import ClinicalData
from ..models.ensemble import PatientPrediction, node_means
from .gradcam import node_gradcam
from .inputs import clinical_inputs
from .results import ClinicalUse
from .traversal import traverse

Steps = Callable[[float, str], None]


@dataclass
class PreparedInputs:
    """What :func:`prepare` gives: the case on the preset's grid and the model-ready patches of its nodes."""

    preset: Preset
    patch_config: PatchConfig
    prepared: PreparedCase
    usable: list[NodeMeasurement]  # the nodes the model can see, in measurement order
    native_by_id: dict[int, NodeMeasurement]  # measurements on the image's own grid
    patch_set: PatchSet
    features: np.ndarray  # (P, F) raw features of every patch
    model_input: Any  # (P, 1, S, S) tensor
    criteria_by_id: dict[int, tuple[float, dict]]  # node -> (heterogeneity CV, criteria)
    skipped: list[dict[str, str]]
    pixel_mm: float  # patch pixel size as sampled
    domain_mismatches: list[str] = field(default_factory=list)  # how the case differs from the training data

    @property
    def patch_node(self) -> np.ndarray:
        return np.array([p.node_id for p in self.patch_set.patches])


@dataclass
class Inference:
    """What :func:`infer` gives: per node the members' probabilities, the patient's prediction."""

    node_member_probs: dict[int, np.ndarray]  # node -> (K,) mean over the node's patches, per member
    patient: PatientPrediction
    bag_nodes: list[int]
    clinical_use: ClinicalUse


@dataclass
class Explanations:
    """What :func:`explain` gives, per usable node (row order of ``PreparedInputs.usable``)."""

    primary: list[int]  # index of each node's primary patch
    cams: np.ndarray  # (N, S, S) Grad-CAM maps as the model saw the patches
    heatmap: np.ndarray  # on the input image's grid
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # direction -> (N, F, S, S)
    frame_probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # direction -> (N, F)


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


def resize_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) maps to (N, size, size), bilinear; unchanged when already that size."""
    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps
    import torch
    import torch.nn.functional as F

    resized = F.interpolate(torch.as_tensor(maps)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return resized[:, 0].numpy().astype(np.float32)


def prepare(case: Case, bundle: ModelBundle, steps: Steps) -> PreparedInputs:
    """The bundle's preset, node measurements (preset grid and native grid), usable patches, their features and
    model input, and the rule-based criteria of every usable node."""
    steps(0.1, "preparing the image with the model's preset")
    preset, patch_config = bundle.config.preprocessing, bundle.config.patch_sampling
    # only the patches read the prepared intensities here: a pointwise preset runs on the patches' voxels alone
    prepared = prepare_case(case, preset, pointwise_on_patches=True)
    native = prepare_case(case, None, intensity=False)  # canonical orientation only: the acquired voxels
    steps(0.2, "measuring the nodes")
    measurements = measure_nodes(prepared)
    # Without resampling, and with the intensity steps left to the patches (or none), both prepared cases hold
    # the same oriented voxels, masks and geometry: measuring again would repeat every node's work for
    # identical numbers.
    same_case = preset.target_spacing_mm is None and (bool(prepared.patch_intensity) or not preset.intensity)
    native_by_id = {m.node_id: m for m in (measurements if same_case else measure_nodes(native))}
    native_nodes = {node.node_id: node for node in native.nodes}
    prepared_ids = {node.node_id for node in prepared.nodes}
    skipped = [{"segment_name": node.segment_name, "reason": "smaller than one voxel of the preset's grid"}
               for node in case.nodes if node.node_id not in prepared_ids]
    steps(0.3, "cutting the node patches")
    pixel_mm = patch_config.fov_mm / patch_config.size if patch_config.fov_mm else prepared.image.spacing[0]
    patch_set, too_small = _usable_patches(prepared, measurements, extract_patches(prepared, patch_config), pixel_mm)
    skipped += too_small
    try:
        features = patch_features(prepared, patch_set.patches, bundle.config.feature_names)
    except ValueError as error:
        raise BundleError(bundle.path / "config.json", f"the model needs a node feature this version cannot measure ({error})") from None
    images, masks, _ = patch_set.stacked(bag_only=False)
    mismatches = [] if bundle.domain is None else domain_mismatches(
        bundle.domain, images, masks, float(min(case.image.spacing[:2])))
    model_input = bundle.prepare_patches(images, masks)
    usable = [m for m in measurements if any(p.node_id == m.node_id for p in patch_set.patches)]
    criteria_by_id = {}
    minimum = float(native.image.array.min())  # once per case: a full-volume pass per node added up at 100 nodes
    for m in usable:
        cv = criteria.heterogeneity_cv(native.image, native_nodes[m.node_id], image_minimum=minimum)
        criteria_by_id[m.node_id] = (cv, criteria.evaluate(m, cv))
    return PreparedInputs(preset, patch_config, prepared, usable, native_by_id, patch_set, features, model_input,
                          criteria_by_id, skipped, float(pixel_mm), mismatches)


def infer(bundle: ModelBundle, inputs: PreparedInputs, clinical: ClinicalData | None, steps: Steps) -> Inference:
    """Every member's probability of every patch, node probabilities (:func:`node_means` over all of a node's
    patches) and the patient's prediction from the bag of the largest patches."""
    steps(0.4, "predicting node and patient probabilities")
    ensemble = bundle.ensemble
    patch_probs = ensemble.patch_probabilities(inputs.model_input, inputs.features).cpu().numpy().astype(np.float64)
    patch_node = inputs.patch_node
    node_ids = [m.node_id for m in inputs.usable]
    _, per_node = node_means(patch_probs, patch_node, node_ids)  # (K, nodes)
    values, clinical_use = clinical_inputs(bundle, clinical)
    bag = Bag.from_patches(
        inputs.model_input[:, 0].cpu().numpy(), inputs.features, patch_node.tolist(),
        areas=[p.area_mm2 for p in inputs.patch_set.patches], max_patches=int(bundle.config.mil.max_patches),
        clinical=values,
    )
    patient = ensemble.predict_bag(bag)
    return Inference({node: per_node[:, row] for row, node in enumerate(node_ids)}, patient,
                     [int(n) for n in bag.node_ids], clinical_use)


def explain(case: Case, bundle: ModelBundle, inputs: PreparedInputs, timings, steps: Steps) -> Explanations:
    """The heatmap of each node's primary patch (integrated gradients, :mod:`.gradcam`), written back onto the
    input image grid, and the latent traversals of those patches (timed as ``gradcam_s`` and ``traversal_s``)."""
    steps(0.6, "Grad-CAM of every node")
    with timings.measure("gradcam_s"):
        primary = [inputs.patch_set.primary_index(m.node_id) for m in inputs.usable]
        primary_input = inputs.model_input[primary]
        masks = None
        if bundle.config.masked_input:  # the model sees only the node: heat elsewhere would explain nothing
            masks = np.stack([inputs.patch_set.patches[i].mask for i in primary]).astype(np.float32)
            masks = resize_maps(masks, primary_input.shape[-1]) > 0.5
        cams = node_gradcam(bundle, primary_input, inputs.features[primary], masks)
        # the model may see the patches resized (bundle patch_size != sampled size): map back at the sampled size
        heatmap = inputs.patch_set.write_back(resize_maps(cams, inputs.patch_config.size), case.image.array.shape,
                                              indices=primary)
    steps(0.8, "latent growth and border traversals")
    with timings.measure("traversal_s"):
        frames, frame_probabilities = traverse(bundle, primary_input, inputs.features[primary])
    return Explanations(primary, cams, heatmap, frames, frame_probabilities)
