"""A tiny but real model bundle, trained in seconds on synthetic 32x32 blobs (no LIDC data needed).

Tests of prediction and of the Slicer module use it; it is NOT a useful model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.lidc import build_dataset
from ..data.splits import patient_folds
from ..models.vae import VAEConfig
from ..synthetic.nodules import make_synthetic_nodules
from .bundling import build_bundle
from .config import PipelineConfig
from .context import RunContext
from .mil_train import MILTrainConfig
from .pipeline import fit
from .vae_train import VAETrainConfig

TINY_NAME = "tiny-synthetic"


def tiny_pipeline_config(seed: int = 0) -> PipelineConfig:
    return PipelineConfig(
        method="vae",
        vae=VAEConfig(base=4, latent_size=4),
        vae_train=VAETrainConfig(epochs=4, min_epochs=2, patience=2, batch_size=32, seed=seed),
        mil={"patch_hidden": 16, "patient_hidden": 8},
        mil_train=MILTrainConfig(epochs=40, seed=seed),  # 15 left fold members collapsed (the quality gate)
        mil_grid=[{"eta": 0.8}],
        inner_folds=2,
        synthetic_patients=4,
        seed=seed,
    )


def build_tiny_bundle(out_dir: Path, seed: int = 0, n_members: int = 2) -> Path:
    """Train a tiny VAE-MLP (member 0 on all data + ``n_members - 1`` fold models) on synthetic blobs.

    Args:
        out_dir: the bundle folder (created; must be empty or absent).
        seed: every seed of the run (the same seed gives the same weights).
        n_members: ensemble members.

    Returns:
        ``out_dir``, a complete, valid bundle.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and spin under CPU contention)
    try:
        return _build(Path(out_dir), seed, n_members)
    finally:
        torch.set_num_threads(previous_threads)


def _build(out_dir: Path, seed: int, n_members: int) -> Path:
    arrays, diameters = make_synthetic_nodules(n_patients=30, seed=seed)
    dataset = build_dataset(arrays, diameters, patch_size=32)
    config = tiny_pipeline_config(seed)
    quiet = lambda *_: None  # noqa: E731
    patients = dataset.patients
    primary = fit(dataset, patients, config, RunContext(progress=False, log=quiet))
    labels = dataset.patient_labels()
    folds = []
    splits = patient_folds(patients, [labels[p] for p in patients], max(n_members - 1, 2), seed)
    for train, _ in splits[: n_members - 1]:
        folds.append(fit(dataset, train, config, RunContext(progress=False, log=quiet)))
    card = {
        "summary": "Tiny synthetic test model: trained for seconds on synthetic blobs. NOT for any real use.",
        "intended_use": "Software tests of the prediction command and the Slicer module only.",
        "intended_input": {"description": "synthetic blobs (software tests)", "lymph_nodes": False},
        "data": {"source": "LNMStagingLib.synthetic.nodules.make_synthetic_nodules", "seed": seed,
                 "patients": int(len(patients)), "slices": int(len(dataset))},
        "evaluation": {"note": "none: this model is not evaluated"},
        "limits": ["synthetic data", "research and testing only, not a medical device",
                   "records no input domain: its blobs cover one narrow intensity band, so as a test fixture it must "
                   "accept the phantom; predictions say that the domain was not checked"],
    }
    return build_bundle(out_dir, TINY_NAME, "0.0.1", primary, folds, dataset, "lidc-png",
                        float(np.round(dataset.fov_mm(), 3)), card,
                        training={"pipeline": config.to_dict(), "seed": seed},
                        clinical_absent_reason="synthetic data has no clinical data", record_domain=False)
