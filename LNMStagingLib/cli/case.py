"""`lnmstaging measure`, `lnmstaging phantom` and `lnmstaging preset`."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..imaging.case import load_case, prepare_case
from ..imaging.measure import MEASUREMENT_COLUMNS, measure_nodes
from ..imaging.presets import get_preset, train_landmarks
from ..io.atomic import write_text_atomic
from ..io.outputs import check_output_file, first_line_is, json_with_keys
from ..synthetic.phantom import PHANTOM_FILES, write_phantom

MEASURE_CSV = "an lnmstaging measure CSV"
PRESET_JSON = "an lnmstaging preset JSON"


def _measure(args: argparse.Namespace) -> int:
    check_output_file(args.out, (args.image, args.segmentation, args.preset and Path(args.preset)),
                      first_line_is(",".join(MEASUREMENT_COLUMNS)), MEASURE_CSV, args.overwrite)
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
        print(f"lnmstaging: warning: segment '{name}' {case.skip_reason(name)}: not measured", file=sys.stderr)
    print(f"{len(measurements)} node(s) measured -> {args.out}")
    return 0


def _phantom(args: argparse.Namespace) -> int:
    check_phantom_options(args.size, args.spacing, args.extra_nodes, args.seed)
    for name in PHANTOM_FILES:  # the folder may hold the user's own image.nrrd: replace only phantom outputs
        check_output_file(args.outdir / name, (), _phantom_file_recogniser(args.outdir), "a file of an earlier "
                          "lnmstaging phantom (no phantom truth.json beside it)", args.overwrite, option="OUTDIR")
    files = write_phantom(args.outdir, size=tuple(args.size), spacing=tuple(args.spacing), extra_nodes=args.extra_nodes, seed=args.seed)
    print(f"phantom written: {files.image}, {files.labelmap}, {files.segmentation}, {files.truth}")
    return 0


def check_phantom_options(size, spacing, extra_nodes: int, seed: int) -> None:
    """One line for phantom options that would give an empty, degenerate or border-touching phantom.

    Args:
        size: (i, j, k) voxels; spacing: (i, j, k) mm; extra_nodes: random nodes added; seed: the noise seed.
    """
    import math

    if min(size) < 8 or max(size) > 1024:
        raise InputError(None, "--size needs 8 to 1024 voxels per axis")
    if not all(math.isfinite(s) and 0.05 <= s <= 20 for s in spacing):
        raise InputError(None, "--spacing needs finite millimetres between 0.05 and 20 per axis")
    from ..synthetic.phantom import node_extent_mm

    extent = [n * s for n, s in zip(size, spacing, strict=True)]
    # every fixed node must keep two voxels from the border, else it touches it and is refused later
    needed = [2 * (reach + 2 * s) for reach, s in zip(node_extent_mm(), spacing, strict=True)]
    if any(e < n for e, n in zip(extent, needed, strict=True)):
        raise InputError(None, f"--size x --spacing gives {extent[0]:.0f} x {extent[1]:.0f} x {extent[2]:.0f} mm; "
                               f"the phantom's nodes need at least {needed[0]:.0f} x {needed[1]:.0f} x {needed[2]:.0f} "
                               "mm (else they touch the border)")
    if not 0 <= extra_nodes <= 50:
        raise InputError(None, "--extra-nodes must be between 0 and 50")
    if not 0 <= seed < 2**32:
        raise InputError(None, "--seed must be between 0 and 2**32 - 1")


def _phantom_file_recogniser(outdir: Path):
    truth = json_with_keys("description", "size_ijk", "spacing_mm", "nodes")

    def recognise(_path: Path) -> bool:
        return (outdir / "truth.json").is_file() and truth(outdir / "truth.json") and \
            "phantom" in json.loads((outdir / "truth.json").read_text(encoding="utf-8"))["description"].lower()
    return recognise


def _preset_landmarks(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..io.cohort import read_manifest
    from ..io.image import read_image
    from ..io.volume import Volume

    entries = read_manifest(args.manifest)
    inputs = [args.manifest] + [path for entry in entries for path in (entry.image, entry.segmentation)]
    check_output_file(args.out, inputs, json_with_keys("name", "intensity", "modality"), PRESET_JSON, args.overwrite)
    preset = get_preset(args.base)
    steps = [step for step in preset.intensity if step["type"] == "histogram_standardization"]
    if not steps:
        raise InputError(None, f"preset {preset.name!r} has no histogram standardisation step")
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


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """--overwrite: replace an existing output file that is not recognisably this command's (never an input)."""
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file even when it is "
                        "not recognisably this command's own earlier output (an input is never replaced)")


def register(subparsers: argparse._SubParsersAction) -> None:
    measure = subparsers.add_parser(
        "measure", help="measure every node of a segmentation (sizes and border features, mm)",
        description="One CSV row per node: short/long axis on the largest axial cross-section, ratio, convexity, "
        "compactness, volume, number of slices and centroid (LPS mm).",
    )
    add_case_arguments(measure)
    measure.add_argument("--preset", help="measure on a preset's grid (mri-t2, ct, lidc-png or a preset .json)")
    measure.add_argument("--out", type=Path, required=True, help="output CSV (written atomically)")
    add_overwrite_argument(measure)
    measure.set_defaults(handler=_measure)

    phantom = subparsers.add_parser(
        "phantom", help="write the deterministic synthetic pelvic phantom (test fixture, not training data)"
    )
    phantom.add_argument("outdir", type=Path)
    phantom.add_argument("--size", type=int, nargs=3, default=(192, 192, 24), metavar=("I", "J", "K"))
    phantom.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 3.3), metavar=("SI", "SJ", "SK"))
    phantom.add_argument("--extra-nodes", type=int, default=0, help="additional seeded ellipsoidal nodes")
    phantom.add_argument("--seed", type=int, default=0)
    add_overwrite_argument(phantom)
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
    add_overwrite_argument(preset)
    preset.set_defaults(handler=_preset_landmarks)
