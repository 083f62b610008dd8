"""Copy a bundle with each member's training-patient hash added (``training_patients_sha256``), so that its fold
members' encoders can still be proven to belong to their folds after the node features change.

Each fold member is first proven by today's proof (its stored feature scaler equals the scaler of that fold's
training patients, with the features computed now), member 0 by the scaler of every patient; the copy's config
then records the hashes and its manifest is rehashed. The source bundle is not touched; the copy goes to a new
folder. The folds are the benchmark's (``lnmstaging benchmark lidc``: 5 folds, seed 0).

Run: .venv/bin/python scripts/bundle_add_training_hashes.py OUT_DIR [BUNDLE_DIR] [LIDC_DIR]
(defaults: Resources/Models/lidc-vae-mlp and ../shared/data/lidc-nodules)
"""

from __future__ import annotations

import sys
from pathlib import Path

from LNMStagingLib.data.lidc import default_lidc_dir, load_lidc
from LNMStagingLib.errors import LNMStagingError
from LNMStagingLib.evaluation.benchmark import outer_folds
from LNMStagingLib.evaluation.encoder_reuse import add_training_hashes


def main(argv: list[str]) -> int:
    """Write the copy; prints which proof each fold member passed. Exit 2 with one line on bad input."""
    if not argv:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[1]
    out = Path(argv[0])
    bundle = Path(argv[1]) if len(argv) > 1 else root / "Resources" / "Models" / "lidc-vae-mlp"
    data = Path(argv[2]) if len(argv) > 2 else default_lidc_dir()
    try:
        dataset = load_lidc(data)  # as the bundle's recipe (evaluation/lidc_final.py) reads it
        _, folds = outer_folds(dataset)
        proofs = add_training_hashes(bundle, dataset, folds, out)
    except LNMStagingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for fold, proof in sorted(proofs.items()):
        print(f"fold member {fold}: proven by {proof}; hash of its training patients added")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
