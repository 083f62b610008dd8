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

from ..bundle import load_bundle, training_set_sha256
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


def _scaler_matches(dataset: PatchDataset, patients, feature_min, feature_max) -> bool:
    """Whether the feature scaler of ``patients`` is the stored one (the scaler proof of the training patients)."""
    scaler = FeatureScaler.fit(dataset.feature_names, dataset.features[dataset.subset_patients(patients)])
    return bool(np.allclose(scaler.minimum, feature_min, atol=1e-5)
                and np.allclose(scaler.maximum, feature_max, atol=1e-5))


def check_fold_encoders(bundle, dataset: PatchDataset, folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[int, str]:
    """:class:`BundleError` unless each fold member was trained on that fold's training patients only (the proof
    that the member's encoder never saw the fold's test patients): by the recorded hash of its training patients
    when the member has one, else by its stored feature scaler.

    Args:
        bundle: the loaded bundle.
        dataset: this run's data (the features of the scaler proof).
        folds: this run's (train, test) patients of each outer fold.

    Returns:
        {fold: "training_patients_sha256" or "feature_scaler"}: which proof each fold member passed.
    """
    proofs = {}
    for spec in bundle.config.members:
        if spec.role != "fold" or spec.fold is None:
            continue
        if int(spec.fold) >= len(folds):
            raise BundleError(bundle.path, f"fold member {spec.fold} has no fold in this run ({len(folds)} folds)")
        train, _ = folds[int(spec.fold)]
        if spec.training_patients_sha256 is not None:
            if spec.training_patients_sha256 != training_set_sha256(train):
                raise BundleError(bundle.path, f"fold member {spec.fold} was not trained on this run's fold "
                                               f"{spec.fold} training patients (training-patient hash differs)")
            proofs[int(spec.fold)] = "training_patients_sha256"
            continue
        if not _scaler_matches(dataset, train, spec.feature_min, spec.feature_max):
            raise BundleError(bundle.path, f"fold member {spec.fold} was not trained on this run's fold "
                                           f"{spec.fold} training patients (feature ranges differ)")
        proofs[int(spec.fold)] = "feature_scaler"
    return proofs


def add_training_hashes(bundle_dir: str | Path, dataset: PatchDataset, folds: list[tuple[np.ndarray, np.ndarray]],
                        out_dir: str | Path) -> dict[int, str]:
    """A copy of a bundle whose members record ``training_patients_sha256``, proven first by the feature scalers.

    Each fold member must pass :func:`check_fold_encoders` by its scaler with ``dataset``'s features (members that
    already record a hash: by the hash), and member 0 (role final) must have the scaler of every patient of
    ``dataset``; then the copy's config gives fold member ``k`` the hash of fold ``k``'s training patients and
    member 0 the hash of every patient, and its manifest is rehashed. The weights, card and domain are copied
    byte for byte; the bundle itself is left as it is.

    Args:
        bundle_dir: the bundle to copy (verified by its manifest).
        dataset: the data its members were trained on, with the features they were trained with.
        folds: the (train, test) patients of the outer folds its fold members were trained on.
        out_dir: the new bundle folder (must not exist).

    Returns:
        {fold: the proof each fold member passed before the hash was added}.
    """
    import dataclasses
    import json
    import os
    import shutil
    import tempfile

    from ..bundle.format import CONFIG, rehash_manifest

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise BundleError(out_dir, "exists: the copy with training hashes goes to a new folder")
    bundle = load_bundle(bundle_dir)
    proofs = check_fold_encoders(bundle, dataset, folds)
    if not _scaler_matches(dataset, dataset.patients, bundle.config.feature_min, bundle.config.feature_max):
        raise BundleError(bundle.path, "member 0 was not trained on every patient of this data set "
                                       "(feature ranges differ)")
    specs = []
    for spec in bundle.config.members:
        patients = dataset.patients if spec.role == "final" else folds[int(spec.fold)][0]
        specs.append(dataclasses.replace(spec, training_patients_sha256=training_set_sha256(patients)))
    config = dataclasses.replace(bundle.config, members=specs)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # a private folder beside the copy, renamed at the end (never a name a user's folder could have)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    partial = staging / "bundle"
    shutil.copytree(bundle.path, partial)
    try:
        (partial / CONFIG).write_text(json.dumps(config.to_json(), indent=2) + "\n", encoding="utf-8")
        rehash_manifest(partial, bundle.manifest)
        copied = load_bundle(partial)  # the copy verifies and its members pass by the hash
        if set(check_fold_encoders(copied, dataset, folds).values()) - {"training_patients_sha256"}:
            raise BundleError(partial, "a fold member of the copy was not proven by its training-patient hash")
        os.replace(partial, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return proofs


__all__ = ["add_training_hashes", "bundle_encoders", "check_fold_encoders"]
