"""An ensemble over a :class:`~LNMStagingLib.data.lidc.PatchDataset`: slice, nodule and patient probabilities.

One function for evaluating a bundle (many members) and for testing a fitted fold model during training and
benchmarking (a one-member ensemble), so both compute the same way as a single case's prediction does.
"""

from __future__ import annotations

import numpy as np

from ..models.ensemble import BagBatch, Ensemble, node_means
from .bags import bag_slots
from .dataset import PatchDataset


def predict_dataset(ensemble: Ensemble, dataset: PatchDataset, patients=None, batch_size: int = 1024) -> dict:
    """Ensemble predictions for the slices, nodules and patients of ``patients`` (default: all).

    Latents are computed once per member (in batches of ``batch_size``) and shared by the slice and the bag
    outputs; a patient's bag holds its largest slices (:func:`~LNMStagingLib.data.bags.bag_slots`).

    Args:
        ensemble: the members, their scalers and threshold.
        dataset: the slices (patches, raw features, nodule and patient ids, areas, clinical data).
        patients: the patients to predict (default: every patient, sorted).
        batch_size: encoder batch size.

    Returns:
        ``slice_prob`` (K, N) for the selected slices; per nodule (sorted ids) ``nodule_id``, ``nodule_prob``
        (member mean), ``nodule_std`` (member SD), ``nodule_label``, ``nodule_patient``; per patient
        ``patient_id``, ``patient_prob`` and ``patient_std`` (member mean and SD of the calibrated final probability),
        ``patient_prob_uncalibrated`` (member mean before calibration), ``patient_per_member`` (K, B) calibrated,
        ``patient_mlp``, ``patient_max`` (member means) and ``patient_label``.
    """
    patients = np.unique(dataset.patient_id) if patients is None else np.asarray(list(patients))
    idx = dataset.subset_patients(patients)
    features = dataset.features[idx]
    latents = ensemble.latents(dataset.patches[idx], batch_size)
    slice_prob = ensemble.patch_probabilities(None, features, latents).cpu().numpy()
    nodule_of_slice = dataset.nodule_id[idx]
    nodule_ids, per_member = node_means(slice_prob, nodule_of_slice)
    max_patches = int(ensemble.members[0].mil.config.max_patches)
    slots, nodes = bag_slots(dataset.patient_id[idx], nodule_of_slice, dataset.area_mm2[idx], patients, max_patches)
    table = dataset.clinical or {}
    clinical = [table.get(str(p)) for p in patients] if dataset.clinical else None
    out = ensemble.bag_outputs(None, features, BagBatch(slots, nodes, clinical), latents)
    final = out["calibrated"].cpu().numpy()
    nodule_labels = dataset.nodule_labels()
    patient_labels = dataset.patient_labels()
    patient_of_slice = dataset.patient_id[idx]
    return {
        "slice_prob": slice_prob,
        "nodule_id": np.asarray(nodule_ids),
        "nodule_prob": per_member.mean(0),
        "nodule_std": per_member.std(0),
        "nodule_label": np.asarray([nodule_labels[n] for n in nodule_ids]),
        "nodule_patient": np.asarray([patient_of_slice[nodule_of_slice == n][0] for n in nodule_ids]),
        "patient_id": patients,
        "patient_prob": final.mean(0),
        "patient_std": final.std(0),
        "patient_prob_uncalibrated": out["final"].cpu().numpy().mean(0),
        "patient_per_member": final,
        "patient_mlp": out["patient_mlp"].cpu().numpy().mean(0),
        "patient_max": out["node_max"].cpu().numpy().mean(0),
        "patient_label": np.asarray([int(patient_labels[p]) for p in patients]),
    }
