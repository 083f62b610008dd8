"""Deletion check of the node heatmap on held-out LIDC patches: each fold member of the default bundle, on 40
random slices of its own outer test patients (``runs/benchmark/folds.json`` of ``lnmstaging benchmark lidc``),
removes (sets to the background value 0) the top 25 % most-heated node pixels, and as many random node pixels,
and compares the drops of its patch logit.

Run:  .venv/bin/python Testing/Benchmarks/lidc_heatmap_deletion.py
"""

from __future__ import annotations

import json

import numpy as np
import torch

from LNMStagingLib.bundle import load_bundle
from LNMStagingLib.data.lidc import load_lidc
from LNMStagingLib.prediction.gradcam import member_attributions


def _logit_drop(member, x: torch.Tensor, features: torch.Tensor, full: float, pixels: np.ndarray) -> float:
    """How much the patch logit falls when ``pixels`` of the (1, 1, S, S) patch are set to 0."""
    kept = x.clone().reshape(-1)
    kept[pixels] = 0.0
    with torch.no_grad():
        return full - float(member(kept.reshape(x.shape), features)[0, 0])


def main() -> None:
    torch.set_num_threads(1)
    bundle, dataset = load_bundle(), load_lidc("../shared/data/lidc-nodules")
    folds = json.loads(open("runs/benchmark/folds.json", encoding="utf-8").read())
    rng = np.random.default_rng(0)
    by_heat, at_random = [], []
    for index, spec in enumerate(bundle.config.members):
        if spec.role != "fold":
            continue
        rows = rng.choice(dataset.subset_patients(folds[spec.fold]["test"]), 40, replace=False)
        member = bundle.ensemble.members[index]
        x = torch.as_tensor(dataset.patches[rows])
        features = bundle.ensemble.normalise_features(dataset.features[rows], index)
        heat = member_attributions(member, x, features)[:, 0].numpy()
        with torch.no_grad():
            full = member(x, features)[:, 0].numpy()
        for i, row in enumerate(rows):
            inside = np.flatnonzero(dataset.masks[row].ravel())
            if len(inside) < 4:
                continue
            count = max(1, len(inside) // 4)
            hottest = inside[np.argsort(-heat[i].ravel()[inside])[:count]]
            random = rng.choice(inside, count, replace=False)
            by_heat.append(_logit_drop(member, x[i:i + 1], features[i:i + 1], float(full[i]), hottest))
            at_random.append(_logit_drop(member, x[i:i + 1], features[i:i + 1], float(full[i]), random))
    wins = sum(h > r for h, r in zip(by_heat, at_random, strict=True))
    print(f"{len(by_heat)} held-out LIDC patches: logit drop removing the top 25% heated node pixels "
          f"{np.mean(by_heat):.3f}, as many random node pixels {np.mean(at_random):.3f}; heated larger in "
          f"{wins}/{len(by_heat)}")


if __name__ == "__main__":
    main()
