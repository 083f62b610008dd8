"""`lnmstaging measure`, `lnmstaging phantom` and `lnmstaging preset`."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from ..errors import InputError
from ..imaging.case import load_case, prepare_case
from ..imaging.measure import MEASUREMENT_COLUMNS, measure_nodes
from ..imaging.presets import get_preset, train_landmarks
from ..io.atomic import write_text_atomic
from ..synthetic.phantom import write_phantom


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
    if min(args.size) < 8 or min(args.spacing) <= 0:
        raise InputError(None, "--size needs at least 8 voxels per axis and --spacing positive millimetres")
    files = write_phantom(args.outdir, size=tuple(args.size), spacing=tuple(args.spacing), extra_nodes=args.extra_nodes, seed=args.seed)
    print(f"phantom written: {files.image}, {files.labelmap}, {files.segmentation}, {files.truth}")
    return 0


def _preset_landmarks(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..io.cohort import read_manifest
    from ..io.image import read_image
    from ..io.volume import Volume

    preset = get_preset(args.base)
    steps = [step for step in preset.intensity if step["type"] == "histogram_standardization"]
    if not steps:
        raise InputError(None, f"preset {preset.name!r} has no histogram standardisation step")
    entries = read_manifest(args.manifest)
    arrays = [Volume.from_sitk(read_image(entry.image)).array for entry in tqdm(entries, desc="reading training images", unit="image")]
    for step in steps:
        step["landmarks"] = train_landmarks(arrays)
    preset.name = args.name or f"{preset.name}-{Path(args.manifest).stem}"
    preset.description += f" Landmarks learned from {len(arrays)} images of {Path(args.manifest).name}."
    write_text_atomic(args.out, preset.to_json())
    print(f"preset '{preset.name}' with landmarks from {len(arrays)} images -> {args.out}")
    return 0


def add_case_arguments(parser: argparse.ArgumentParser) -> None:
    """IMAGE SEGMENTATION [--split-islands]: how every per-case command names its input."""
    parser.add_argument("image", type=Path, help="image: NRRD, NIfTI, MHA or a DICOM series folder")
    parser.add_argument("segmentation", type=Path, help="labelmap (one node per label) or Slicer .seg.nrrd")
    parser.add_argument("--split-islands", action="store_true", help="each connected component is its own node")


def register(subparsers: argparse._SubParsersAction) -> None:
    measure = subparsers.add_parser(
        "measure", help="measure every node of a segmentation (sizes and border features, mm)",
        description="One CSV row per node: short/long axis on the largest axial cross-section, ratio, convexity, "
        "compactness, volume, number of slices and centroid (LPS mm).",
    )
    add_case_arguments(measure)
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

    preset = subparsers.add_parser(
        "preset", help="learn a preset's histogram-standardisation landmarks from a training cohort",
        description="Writes a preset JSON (for training and for model bundles) whose histogram standardisation "
        "landmarks are learned from the images of a cohort manifest: use the TRAINING patients only.",
    )
    preset.add_argument("--manifest", type=Path, required=True, help="cohort CSV (patient_id, image, segmentation, ...)")
    preset.add_argument("--base", default="mri-t2", help="preset to start from (default: mri-t2)")
    preset.add_argument("--name", help="name of the new preset (default: <base>-<manifest name>)")
    preset.add_argument("--out", type=Path, required=True, help="output preset .json")
    preset.set_defaults(handler=_preset_landmarks)
