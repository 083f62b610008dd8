"""The one forward path of LNMStaging's models: an ensemble of members, each with its own feature scaler,
and the calibrated decision threshold.

Prediction (one case), evaluation (a data set) and training (a fitted fold model, a one-member ensemble)
all run their patches and bags through :class:`Ensemble`, so the three cannot compute differently:

* :meth:`Ensemble.latents` / :meth:`Ensemble.encode` / :meth:`Ensemble.decode`: the members' latent codes;
* :meth:`Ensemble.patch_probabilities`: every member's probability of every patch (K, N);
* :meth:`Ensemble.bag_outputs`: every member's multiple-instance outputs of a batch of patient bags;
* :func:`node_means`: the one aggregation of patch probabilities into node probabilities.

A member is a ``torch.nn.Module`` with ``mil`` (a :class:`~LNMStagingLib.models.mil.MILModel`) and
``latent(patches)`` (latent means, or None for a model without an encoder): a bundle's
:class:`~LNMStagingLib.models.member.ModelMember`, or a training :class:`~LNMStagingLib.models.member.EncoderMember`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .calibration import Calibration
from .member import mean_patch_probability
from .mil import FeatureScaler, clinical_vector


@dataclass
class LatentCodes:
    """``mu`` (N, D): the primary member's latent means (member 0, trained on all data);
    ``per_member`` (K, N, D). Members' latent spaces are trained separately and are NOT aligned, so
    a mean over members would be meaningless: use ``mu`` for traversals and the latent directions."""

    mu: Any
    per_member: Any


@dataclass
class BagBatch:
    """Patient bags as indices into one flat array of patches (see :func:`LNMStagingLib.data.bags.bag_slots`).

    ``slots`` (B, M) int64: the patch index of each slot, -1 = padding; ``node_index`` (B, M) int64: patches of
    one node share an index (padding 0); ``clinical``: one dict of named clinical values per bag (None or a
    missing key = missing), or None when no bag has any.
    """

    slots: np.ndarray
    node_index: np.ndarray
    clinical: Sequence[dict | None] | None = None

    @property
    def valid(self) -> np.ndarray:
        return self.slots >= 0


@dataclass
class PatientPrediction:
    """The ensemble's result for one bag."""

    probability: float  # ensemble mean of the members' calibrated final probabilities
    std: float  # ensemble standard deviation of the calibrated probabilities (uncertainty)
    per_member: list[float]  # each member's calibrated final probability
    positive: bool  # probability >= threshold
    threshold: float
    node_probabilities: dict  # node id -> ensemble mean probability over the node's patches in the bag


@contextlib.contextmanager
def channels_last(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run the block with ``module``'s 4-D weights in channels-last layout, restored afterwards (an exact copy).

    Why: with 8 to 32 channels, oneDNN's NCHW convolutions (and above all their backward pass) are slow on
    CPU; a channels-last weight makes every convolution of the module take the NHWC kernels. Measured on the
    default bundle's encoder, 800 32 x 32 patches, forward and input gradient, one thread: 0.33 s instead of
    0.54 s (median of 5). Results differ from the NCHW ones by float rounding only (about 1e-6 of a value
    of 2). Used for the explanations only (the heatmap, the traversal frames); the probabilities keep the
    layout they were validated with.

    Args:
        module: the network (changed in place inside the block, back to contiguous weights after it).

    Yields:
        ``module``.
    """
    module.to(memory_format=torch.channels_last)
    try:
        yield module
    finally:
        module.to(memory_format=torch.contiguous_format)


def gather_slots(values: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """values (N, ...) gathered into (B, M, ...) with zeros at padding (slots == -1)."""
    out = np.zeros((*slots.shape, *values.shape[1:]), dtype=values.dtype)
    keep = slots >= 0
    out[keep] = values[slots[keep]]
    return out


def node_means(probabilities, node_ids: Sequence[Hashable], nodes: Sequence[Hashable] | None = None
               ) -> tuple[list, np.ndarray]:
    """Node probability = the mean of its patches' probabilities.

    Args:
        probabilities: (N,) or (K, N) per-patch probabilities (K members).
        node_ids: the node of each of the N patches.
        nodes: the nodes to report, in this order (default: sorted distinct ``node_ids``).

    Returns:
        (nodes, means): means (n_nodes,) or (K, n_nodes), float64.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    ids = np.asarray(node_ids)
    nodes = list(np.unique(ids)) if nodes is None else list(nodes)
    means = np.stack([p[..., ids == node].mean(-1) for node in nodes], axis=-1) if nodes else \
        np.zeros((*p.shape[:-1], 0))
    return nodes, means


class Ensemble:
    """Members with their feature scalers, their calibrations and the threshold; runs without gradients.

    Args:
        members: modules with ``mil`` and ``latent(patches)`` (see the module docstring).
        scalers: one :class:`FeatureScaler` per member (raw mm features -> [0, 1]).
        threshold: the patient decision threshold (chosen on calibrated out-of-fold predictions).
        device: where the members live.
        calibrations: one :class:`~LNMStagingLib.models.calibration.Calibration` per member, applied to its
            patient probability before members are averaged (None: the identity for every member).
        head_calibrations: per member, one calibration per classifier head (``member.heads``), fitted on that
            head's own held-out patients; a member with heads outputs the mean of its calibrated heads (its
            ``calibrations`` entry and ``mil`` are then not used for the outputs). None: no member has heads.
    """

    def __init__(self, members: Sequence[torch.nn.Module], scalers: Sequence[FeatureScaler], threshold: float,
                 device: str = "cpu", calibrations: Sequence[Calibration] | None = None,
                 head_calibrations: Sequence[Sequence[Calibration]] | None = None) -> None:
        if len(members) != len(scalers) or not members:
            raise ValueError("an ensemble needs one feature scaler per member, and at least one member")
        calibrations = list(calibrations) if calibrations is not None else [Calibration()] * len(members)
        if len(calibrations) != len(members):
            raise ValueError("an ensemble needs one calibration per member")
        heads = [list(getattr(member, "heads", [])) for member in members]
        head_calibrations = [list(c) for c in head_calibrations] if head_calibrations is not None else \
            [[Calibration()] * len(h) for h in heads]
        if [len(c) for c in head_calibrations] != [len(h) for h in heads]:
            raise ValueError("an ensemble needs one calibration per classifier head of each member")
        self.members = list(members)
        self.scalers = list(scalers)
        self.calibrations = calibrations
        self.head_calibrations = head_calibrations
        self.threshold = float(threshold)
        self.device = device

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.scalers[0].names)

    def classifiers(self, k: int) -> list[tuple[torch.nn.Module, Calibration]]:
        """Member ``k``'s classifiers whose outputs are averaged, each with its calibration: its heads when it has
        any, else its ``mil``."""
        member = self.members[k]
        heads = list(getattr(member, "heads", []))
        if heads:
            return list(zip(heads, self.head_calibrations[k], strict=True))
        return [(member.mil, self.calibrations[k])]

    def to(self, device: str) -> Ensemble:
        for member in self.members:
            member.to(device)
        self.device = device
        return self

    def tensor(self, values) -> torch.Tensor:
        """``values`` as a float32 tensor on the ensemble's device."""
        return torch.as_tensor(values if isinstance(values, torch.Tensor) else np.asarray(values),
                               dtype=torch.float32).to(self.device)

    def normalise_features(self, features, member: int = 0) -> torch.Tensor:
        """Raw (N, F) features in ``feature_names`` order -> [0, 1] with ``member``'s stored min/max."""
        return self.scalers[member].transform(self.tensor(features))

    @torch.no_grad()
    def latents(self, patches, batch_size: int | None = None) -> list[torch.Tensor | None]:
        """Every member's latent means of (N, 1, S, S) patches (None for a member without an encoder)."""
        x = self.tensor(patches)
        step = batch_size or max(len(x), 1)
        out: list[torch.Tensor | None] = []
        for member in self.members:
            if len(x) == 0:
                out.append(member.latent(x))
                continue
            parts = [member.latent(x[i : i + step]) for i in range(0, len(x), step)]
            out.append(None if parts[0] is None else torch.cat(parts))
        return out

    def encode(self, patches) -> LatentCodes:
        """Latent means of (N, 1, S, S) patches: :class:`LatentCodes` (primary ``mu`` and ``per_member``)."""
        per = torch.stack(self.latents(patches))
        return LatentCodes(mu=per[0], per_member=per)

    @torch.no_grad()
    def decode(self, z, member: int = 0) -> torch.Tensor:
        """Decode latent codes (N, D) of ``member`` (default the primary) to (N, 1, S, S) images."""
        return self.members[member].vae.decode(self.tensor(z))

    @torch.no_grad()
    def patch_probabilities(self, patches, features, latents: Sequence[torch.Tensor | None] | None = None
                            ) -> torch.Tensor:
        """Per-patch malignancy probability of every member: (K, N).

        Args:
            patches: (N, 1, S, S) model input (unused when ``latents`` are given).
            features: (N, F) raw (mm) size/border features of each patch's cross-section.
            latents: the members' latent means of the patches, when already computed.

        Returns:
            (K, N) probabilities; a node's probability is the mean over its patches (:func:`node_means`).
        """
        if latents is None:
            latents = self.latents(patches)
        probs = []
        for k in range(self.n_members):
            features_k = self.normalise_features(features, k)
            if features_k.shape[0] == 0:
                probs.append(torch.zeros(0, device=self.device))
                continue
            probs.append(mean_patch_probability([mil for mil, _ in self.classifiers(k)], latents[k], features_k))
        return torch.stack(probs)

    @torch.no_grad()
    def bag_outputs(self, patches, features, bags: BagBatch,
                    latents: Sequence[torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
        """Every member's multiple-instance outputs of a batch of bags over one flat set of patches.

        Args:
            patches: (N, 1, S, S) model input; ``bags.slots`` index into it.
            features: (N, F) raw features of the patches.
            bags: the bags (:class:`BagBatch`).
            latents: the members' latent means of all N patches, when already computed (else only the bags'
                patches are encoded).

        Returns:
            Tensors with a leading member axis: ``final`` (K, B) (uncalibrated), ``calibrated`` (K, B) (each
            member's calibration applied to its ``final``), ``patient_mlp`` (K, B), ``node_max`` (K, B),
            ``patch_prob`` and ``patch_logit`` (K, B, M).
        """
        slots = np.asarray(bags.slots)
        valid = torch.as_tensor(slots >= 0, device=self.device)
        node_index = torch.as_tensor(np.asarray(bags.node_index), dtype=torch.long, device=self.device)
        if latents is None:
            latents = self._bag_latents(patches, slots)
            slots_for_latent = np.where(slots >= 0, np.arange(slots.size).reshape(slots.shape), -1)
        else:
            slots_for_latent = slots
        outputs: dict[str, list] = {}
        for k, member in enumerate(self.members):
            config = member.mil.config
            features_k = self.normalise_features(features, k).cpu().numpy()
            latent = None
            if config.use_latent:
                latent = self.tensor(gather_slots(latents[k].cpu().numpy(), slots_for_latent))
            clinical = None
            if config.n_clinical_inputs:
                table = bags.clinical or [None] * len(slots)
                clinical = self.tensor(np.stack([clinical_vector(config.clinical, values) for values in table]))
            feats = self.tensor(gather_slots(features_k, slots))
            heads = [(mil(latent, feats, valid, node_index, clinical), cal) for mil, cal in self.classifiers(k)]
            # a member with several heads: every output is the mean over its heads, the calibrated one the mean of
            # the heads' calibrated probabilities (each head calibrated on patients it never saw)
            for key in heads[0][0]:
                outputs.setdefault(key, []).append(torch.stack([out[key] for out, _ in heads]).mean(0))
            outputs.setdefault("calibrated", []).append(
                torch.stack([cal.apply(out["final"]) for out, cal in heads]).mean(0))
        return {key: torch.stack(values) for key, values in outputs.items()}

    def _bag_latents(self, patches, slots: np.ndarray) -> list[torch.Tensor | None]:
        """Latents of the bags' patches only, as a flat (B * M) array in slot order (zeros at padding)."""
        x = self.tensor(patches)
        flat = slots.reshape(-1)
        keep = flat >= 0
        out = []
        for codes in self.latents(x[flat[keep]]):
            if codes is None:
                out.append(None)
                continue
            full = torch.zeros((flat.size, codes.shape[1]), device=self.device)
            full[torch.as_tensor(keep, device=self.device)] = codes
            out.append(full)
        return out

    def outputs_of_bag(self, bag) -> dict[str, torch.Tensor]:
        """:meth:`bag_outputs` of one padded :class:`~LNMStagingLib.data.bags.Bag`, without the bag axis:
        ``final``, ``calibrated``, ``patient_mlp``, ``node_max`` (K,) and ``patch_prob``, ``patch_logit`` (K, M)."""
        patches = self.tensor(bag.patches)
        if patches.ndim == 3:
            patches = patches[:, None]
        valid = np.asarray(bag.valid, dtype=bool)
        index = np.asarray(bag.node_index)
        batch = BagBatch(np.where(valid, np.arange(len(valid)), -1)[None], np.where(index < 0, 0, index)[None],
                         [bag.clinical])
        return {key: value[:, 0] for key, value in self.bag_outputs(patches, bag.features, batch).items()}

    def predict_bag(self, bag) -> PatientPrediction:
        """Ensemble prediction for one :class:`~LNMStagingLib.data.bags.Bag`, with uncertainty and the
        probabilities of the nodes in the bag (over the bag's patches). The patient probability is the mean of
        the members' calibrated probabilities, so members on different scales neither mix nor disagree falsely."""
        out = self.outputs_of_bag(bag)
        final = out["calibrated"].cpu().numpy().astype(float)
        mean = float(final.mean())
        valid = np.asarray(bag.valid, dtype=bool)
        index = np.asarray(bag.node_index)
        positions = sorted(set(index[valid].tolist()))
        _, means = node_means(out["patch_prob"].mean(0).cpu().numpy()[valid], index[valid], positions)
        names = [bag.node_ids[i] if i < len(bag.node_ids) else i for i in positions]
        return PatientPrediction(mean, float(final.std()), final.tolist(), mean >= self.threshold, self.threshold,
                                 {name: float(value) for name, value in zip(names, means, strict=True)})
