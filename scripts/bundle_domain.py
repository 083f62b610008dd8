"""Record the input domain (domain.json) of the shipped LIDC bundle from its training data and rehash its
manifest; the weights, config and card stay as they are.

Run: .venv/bin/python scripts/bundle_domain.py [BUNDLE_DIR] [LIDC_DIR]
(defaults: Resources/Models/lidc-vae-mlp and ../shared/data/lidc-nodules)
"""

from __future__ import annotations

import sys
from pathlib import Path

from LNMStagingLib.data.lidc import default_lidc_dir, load_lidc
from LNMStagingLib.training.bundling import backfill_domain


def main(argv: list[str]) -> int:
    """Backfill the domain of one bundle; prints the file written."""
    root = Path(__file__).resolve().parents[1]
    bundle = Path(argv[0]) if argv else root / "Resources" / "Models" / "lidc-vae-mlp"
    data = Path(argv[1]) if len(argv) > 1 else default_lidc_dir()
    dataset = load_lidc(data)  # as the bundle's recipe (evaluation/lidc_final.py) reads it
    print(backfill_domain(bundle, dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
