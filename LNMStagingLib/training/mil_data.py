"""Training bags of the MIL classifier from a :class:`~LNMStagingLib.data.dataset.PatchDataset`, and synthetic
positive patients (TorchIO augmentation of their patches, re-encoded)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.bags import bag_slots
from ..data.dataset import PatchDataset
from ..models.ensemble import gather_slots
from ..models.mil import FeatureScaler, clinical_vector
from .mil_train import MILData
from .vae_train import encode_images


def _clinical(dataset: PatchDataset, patients, specs) -> torch.Tensor | None:
    if not specs:
        return None
    table = dataset.clinical or {}
    return torch.as_tensor(np.stack([clinical_vector(specs, table.get(str(p))) for p in patients]))


def make_mil_data(dataset: PatchDataset, patients, latent: torch.Tensor | None, scaler: FeatureScaler,
                  max_patches: int, clinical_specs=()) -> MILData:
    """Bags of ``patients`` (largest slices first, padded) as :class:`MILData`."""
    patients = np.asarray(list(patients))
    slots, nodes = bag_slots(dataset.patient_id, dataset.nodule_id, dataset.area_mm2, patients, max_patches)
    feats = gather_slots(scaler.transform(dataset.features), slots)
    lat = None if latent is None else torch.as_tensor(gather_slots(latent.numpy(), slots))
    labels = dataset.patient_labels()
    return MILData(
        latent=lat,
        features=torch.as_tensor(feats),
        valid=torch.as_tensor(slots >= 0),
        node_index=torch.as_tensor(nodes),
        labels=torch.as_tensor([float(labels[p]) for p in patients]),
        patch_labels=torch.as_tensor(np.where(slots >= 0, gather_slots(dataset.slice_label, slots), -1)),
        clinical=_clinical(dataset, patients, clinical_specs),
    )


def augment_patches(patches: np.ndarray, masks: np.ndarray, seed: int) -> np.ndarray:
    """TorchIO augmentation of (P, 1, S, S) lesion-only patches: flips, translation, Gaussian noise, gamma,
    bias field; the result is re-masked with the (moved) lesion mask so that it stays lesion-only."""
    import torchio as tio

    torch.manual_seed(seed)
    spatial = tio.Compose([tio.RandomFlip(axes=(0, 1), flip_probability=0.5),
                           tio.RandomAffine(scales=0, degrees=0, translation=(2, 2, 0), p=0.7)])
    intensity = tio.Compose([tio.RandomGamma(log_gamma=(-0.2, 0.2), p=0.7),
                             tio.RandomBiasField(coefficients=0.2, order=2, p=0.5),
                             tio.RandomNoise(std=(0, 0.03), p=0.7)])
    out = np.zeros_like(patches)
    for i in range(patches.shape[0]):
        subject = tio.Subject(
            image=tio.ScalarImage(tensor=torch.as_tensor(patches[i][..., None], dtype=torch.float32)),
            mask=tio.LabelMap(tensor=torch.as_tensor(masks[i][None, ..., None].astype(np.int16))),
        )
        subject = spatial(subject)
        image = intensity(subject["image"]).data[0, ..., 0].numpy()
        mask = subject["mask"].data[0, ..., 0].numpy() > 0
        out[i, 0] = np.clip(image, 0, 1) * mask
    return out


def synthetic_patients(dataset: PatchDataset, patients, n: int, encoder, scaler: FeatureScaler,
                       max_patches: int, seed: int, clinical_specs=()) -> tuple[MILData | None, np.ndarray]:
    """``n`` synthetic positive patients: augmented copies of randomly drawn positive training patients.
    Returns (bags, source patient of each) so that inner folds keep a copy with its source."""
    labels = dataset.patient_labels()
    positives = np.asarray([p for p in patients if labels[p] == 1])
    if n <= 0 or len(positives) == 0:
        return None, np.asarray([])
    rng = np.random.default_rng(seed)
    sources = positives[rng.integers(0, len(positives), n)]
    slots, nodes = bag_slots(dataset.patient_id, dataset.nodule_id, dataset.area_mm2, sources, max_patches)
    valid = slots >= 0
    flat = slots[valid]
    augmented = augment_patches(dataset.patches[flat], dataset.masks[flat], seed)
    lat = None
    if encoder is not None:
        z = encode_images(encoder, torch.as_tensor(augmented)).numpy()
        full = np.zeros((*slots.shape, z.shape[1]), dtype=np.float32)
        full[valid] = z
        lat = torch.as_tensor(full)
    feats = gather_slots(scaler.transform(dataset.features), slots)
    data = MILData(lat, torch.as_tensor(feats), torch.as_tensor(valid), torch.as_tensor(nodes),
                   torch.ones(n), torch.as_tensor(np.where(valid, gather_slots(dataset.slice_label, slots), -1)),
                   _clinical(dataset, sources, clinical_specs))
    return data, sources
