"""`lnmstaging measure` and `lnmstaging phantom`."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from ..atomic import write_text_atomic
from ..case import load_case, prepare_case
from ..measure import MEASUREMENT_COLUMNS, measure_nodes
from ..phantom import write_phantom
from ..presets import get_preset


def _measure(args: argparse.Namespace) -> int:
    case = load_case(args.image, args.segmentation, split_islands=args.split_islands)
    preset = get_preset(args.preset) if args.preset else None
    # Measuring needs geometry only: intensity steps (which may need trained landmarks) are not applied.
    measurements = measure_nodes(prepare_case(case, preset, intensity=False))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MEASUREMENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for measurement in measurements:
        row = measurement.row()
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(args.out, buffer.getvalue())
    for name in case.skipped_segments:
        print(f"lnmstaging: warning: segment '{name}' is empty and was skipped", file=sys.stderr)
    print(f"{len(measurements)} node(s) measured -> {args.out}")
    return 0


def _phantom(args: argparse.Namespace) -> int:
    files = write_phantom(args.outdir, size=tuple(args.size), spacing=tuple(args.spacing), extra_nodes=args.extra_nodes, seed=args.seed)
    print(f"phantom written: {files.image}, {files.labelmap}, {files.segmentation}, {files.truth}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    measure = subparsers.add_parser(
        "measure", help="measure every node of a segmentation (sizes and border features, mm)",
        description="One CSV row per node: short/long axis on the largest axial cross-section, ratio, convexity, "
        "compactness, volume, number of slices and centroid (LPS mm).",
    )
    measure.add_argument("image", type=Path, help="image: NRRD, NIfTI, MHA or a DICOM series folder")
    measure.add_argument("segmentation", type=Path, help="labelmap (one node per label) or Slicer .seg.nrrd")
    measure.add_argument("--split-islands", action="store_true", help="each connected component is its own node")
    measure.add_argument("--preset", help="measure on a preset's grid (mri-t2, ct, lidc-png or a preset .json)")
    measure.add_argument("--out", type=Path, required=True, help="output CSV (written atomically)")
    measure.set_defaults(handler=_measure)

    phantom = subparsers.add_parser(
        "phantom", help="write the deterministic synthetic pelvic phantom (test fixture, not training data)"
    )
    phantom.add_argument("outdir", type=Path)
    phantom.add_argument("--size", type=int, nargs=3, default=(192, 192, 24), metavar=("I", "J", "K"))
    phantom.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 3.3), metavar=("SI", "SJ", "SK"))
    phantom.add_argument("--extra-nodes", type=int, default=0, help="additional seeded ellipsoidal nodes")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.set_defaults(handler=_phantom)
