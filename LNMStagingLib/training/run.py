"""The stages of ``lnmstaging train``: the configuration, the training data, the encoder alone
(``--stage vae``), a trained encoder read back (``--stage classifier``), and the whole bundle; the command
line only handles its arguments.

:class:`~LNMStagingLib.training.context.RunContext` carries what every stage needs besides its data.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import BundleError, InputError
from .config import PipelineConfig
from .context import RunContext
from .fitted import FittedModel, new_encoder
from .pipeline import fit, fit_encoder
from .recipes import benchmark_configs

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_META = "encoder.json"


def pipeline_config(method: str, quick: bool, seed: int, config_file: Path | None = None,
                    epochs: int | None = None) -> PipelineConfig:
    """The recipe of ``method`` with the overrides of a JSON file (nested objects merged), the VAE epochs and
    the seed of every stage.

    Args:
        method: a recipe name (:func:`~LNMStagingLib.training.recipes.benchmark_configs`).
        quick: the tiny settings.
        seed: the seed of the pipeline, VAE and MIL training.
        config_file: a JSON object of ``PipelineConfig`` fields, or None.
        epochs: the maximum VAE epochs, or None.

    Returns:
        The configuration; :class:`InputError` naming ``config_file`` when it does not fit.
    """
    config = benchmark_configs(quick)[method]
    if config_file:
        try:
            overrides = json.loads(config_file.read_text(encoding="utf-8"))
            if not isinstance(overrides, dict):
                raise ValueError("expected a JSON object of PipelineConfig fields")
            merged = config.to_dict()
            for key, value in overrides.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key].update(value)
                else:
                    merged[key] = value
            config = PipelineConfig.from_dict(merged)
        except (OSError, ValueError, TypeError) as error:
            raise InputError(config_file, f"invalid pipeline configuration ({error})") from None
    if epochs:
        config = replace(config, vae_train=replace(config.vae_train, epochs=epochs))
    return replace(config, seed=seed, vae_train=replace(config.vae_train, seed=seed),
                   mil_train=replace(config.mil_train, seed=seed))


def training_data(data: Path | None, manifest: Path | None, preset: str | None, fov_mm: float | None,
                  progress: bool):
    """The training set: an LIDC-layout folder (``data``) or a cohort manifest.

    Returns:
        (dataset, preset name, patch field of view in mm or None); :class:`InputError` when it lacks a class.
    """
    if data:
        from ..data.lidc import load_lidc

        dataset = load_lidc(data)
        preset, fov = preset or "lidc-png", round(dataset.fov_mm(), 3)
    else:
        from ..data.cohort import load_cohort

        preset = preset or "mri-t2"
        dataset, fov = load_cohort(manifest, preset=preset, fov_mm=fov_mm, progress=progress), fov_mm
    if len(set(dataset.patient_labels().values())) < 2:
        raise InputError(data or manifest, "training needs positive and negative patients")
    return dataset, preset, fov


def check_enough_patients(dataset, config: PipelineConfig, source: Path | None) -> None:
    """Refuse a training set too small for the nested selection: every class needs at least as many patients as
    there are inner folds (and two), else a fold or the validation hold-out is empty.

    Args:
        dataset: the training data.
        config: the pipeline configuration (its inner folds).
        source: the data folder or manifest, for the message.
    """
    labels = list(dataset.patient_labels().values())
    needed = max(2, int(config.inner_folds))
    counts = {label: labels.count(label) for label in (0, 1)}
    if min(counts.values()) < needed:
        raise InputError(source, f"has {counts[1]} positive and {counts[0]} negative patient(s); training needs at "
                                 f"least {needed} of each ({config.inner_folds} inner folds and a validation hold-out)")


def train_encoder_only(dataset, config: PipelineConfig, method: str, out: Path, context: RunContext) -> dict:
    """``--stage vae``: the encoder on a patient hold-out, written to ``out`` (weights + description).

    Returns:
        The training information (epochs, losses, validation reconstruction).
    """
    from safetensors.torch import save_file

    from ..data.splits import holdout_split
    from ..models.mil import FeatureScaler, MILConfig

    labels = dataset.patient_labels()
    patients = dataset.patients
    train, val = holdout_split(patients, [labels[p] for p in patients], config.val_fraction, config.seed)
    scaler = FeatureScaler.fit(dataset.feature_names, dataset.features)
    mil_template = MILConfig(latent_dim=config.vae.latent_dim, feature_names=dataset.feature_names)
    encoder, info = fit_encoder(dataset, train, val, config, scaler, mil_template,
                                replace(context, work_dir=out / "checkpoints"))
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(out / ENCODER_WEIGHTS))
    (out / ENCODER_META).write_text(json.dumps({"pipeline": config.to_dict(), "method": method, "info": info},
                                               indent=1, default=float), encoding="utf-8")
    return info


def read_encoder(folder: Path | None):
    """``--stage classifier``: the configuration and the encoder written by :func:`train_encoder_only`.

    Returns:
        (PipelineConfig, encoder); :class:`InputError` naming the file that is missing or does not fit.
    """
    from safetensors.torch import load_file

    if folder is None:
        raise InputError(None, "--stage classifier needs --encoder (the folder written by --stage vae)")
    meta_path = folder / ENCODER_META
    if not meta_path.is_file():
        raise InputError(meta_path, "not found (train the VAE first with --stage vae)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        config = PipelineConfig.from_dict(meta["pipeline"])
        encoder = new_encoder(meta["method"], config)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(meta_path, f"not a VAE description written by --stage vae ({error!r})") from None
    try:
        encoder.load_state_dict(load_file(str(folder / ENCODER_WEIGHTS)))
    except (OSError, RuntimeError) as error:
        raise InputError(folder / ENCODER_WEIGHTS, f"cannot load the VAE ({error})") from None
    return config, encoder


def train_members(dataset, config: PipelineConfig, n_folds: int, seed: int, context: RunContext,
                  encoder=None) -> tuple[FittedModel, list[FittedModel]]:
    """Member 0 on every patient, plus ``n_folds`` cross-validation fold models (an ensemble for uncertainty).

    Returns:
        (member 0, fold members).
    """
    from ..data.splits import patient_folds

    if n_folds > 10:
        raise InputError(None, "--members must be at most 10")
    patients = dataset.patients
    labels = dataset.patient_labels()
    primary = fit(dataset, patients, config, context, encoder)
    folds = []
    if n_folds > 0:
        splits = patient_folds(patients, [labels[p] for p in patients], max(n_folds, 2), seed)
        for k, (train, test) in enumerate(splits[:n_folds]):
            context.log(f"fold member {k + 1}/{n_folds}")
            fitted = fit(dataset, train, config, replace(context, work_dir=None), encoder)
            # the ensemble's threshold is chosen on these patients' calibrated predictions (bundling)
            fitted.selection["held_out_patients"] = np.asarray(test).tolist()
            folds.append(fitted)
    return primary, folds


def write_trained_bundle(out: Path, name: str, version: str, primary: FittedModel, folds: list[FittedModel],
                         dataset, preset: str, fov: float | None, config: PipelineConfig, source: str,
                         command: str) -> Path:
    """The bundle of ``lnmstaging train`` with a card naming the command and the data."""
    from .bundling import build_bundle, held_out_threshold

    card = {
        "summary": f"VAE-MLP trained with `{command}`.",
        "intended_use": "Research use only; not a medical device.",
        "data": {"source": source, "patients": int(len(dataset.patients)), "patches": int(len(dataset))},
        "evaluation": {"note": "evaluate with `lnmstaging evaluate` or a nested benchmark; no figures here"},
        "limits": ["research use only, not a medical device"],
    }
    return build_bundle(out, name, version, primary, folds, dataset, preset, fov, card,
                        training={"pipeline": config.to_dict(), "command": command},
                        clinical_absent_reason="" if dataset.clinical else "no clinical data in the training data",
                        threshold=held_out_threshold(folds, dataset))


def check_bundle_folder(out: Path) -> None:
    """A bundle is written into a new (or empty) folder: never over a user's files."""
    if out.exists() and any(out.iterdir()):
        raise BundleError(out, "output folder is not empty (a bundle is written into a new folder)")


__all__ = ["RunContext", "check_bundle_folder", "pipeline_config", "read_encoder", "train_encoder_only",
           "train_members", "training_data", "write_trained_bundle"]
