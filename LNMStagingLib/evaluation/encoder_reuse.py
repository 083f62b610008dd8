"""The VAE encoders of an earlier bundle, reused to refit only the classifier stage (MIL head, gate, calibration,
threshold) of the benchmark's ``vae`` row and of the shipped bundle.

Training the VAEs is most of the benchmark's time; when only the stages after the encoder change, the encoders of
a bundle built by the same recipe on the same folds give the same training-patient separation: fold member ``k``
of the bundle was trained on outer fold ``k``'s training patients only. That is checked, not assumed: each fold
member's stored feature scaler must equal the scaler of that fold's training patients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle import load_bundle
from ..data.dataset import PatchDataset
from ..errors import BundleError
from ..models.mil import FeatureScaler


def bundle_encoders(bundle_path: str | Path) -> tuple[object, dict[int, object], object]:
    """The bundle's member-0 VAE and its fold members' VAEs by fold index (verified by the manifest).

    Returns:
        (member 0's VAE, {fold: VAE}, the loaded bundle).
    """
    bundle = load_bundle(bundle_path)
    folds = {}
    primary = None
    for spec, member in zip(bundle.config.members, bundle.ensemble.members, strict=True):
        vae = member.vae.cpu().eval()
        if spec.role == "final":
            primary = vae
        elif spec.fold is not None:
            folds[int(spec.fold)] = vae
    if primary is None:
        raise BundleError(Path(bundle_path), "no member with role final to reuse")
    return primary, folds, bundle


def check_fold_encoders(bundle, dataset: PatchDataset, folds: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """:class:`BundleError` unless each fold member's feature scaler is the one of that fold's training patients
    (the proof that the member's encoder never saw the fold's test patients)."""
    for spec in bundle.config.members:
        if spec.role != "fold" or spec.fold is None:
            continue
        train, _ = folds[int(spec.fold)]
        scaler = FeatureScaler.fit(dataset.feature_names, dataset.features[dataset.subset_patients(train)])
        if not (np.allclose(scaler.minimum, spec.feature_min, atol=1e-5)
                and np.allclose(scaler.maximum, spec.feature_max, atol=1e-5)):
            raise BundleError(bundle.path, f"fold member {spec.fold} was not trained on this run's fold "
                                           f"{spec.fold} training patients (feature ranges differ)")


__all__ = ["bundle_encoders", "check_fold_encoders"]
