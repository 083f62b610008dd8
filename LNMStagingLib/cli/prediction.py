"""`lnmstaging predict` and `lnmstaging explain clusters`.

Heavy modules (torch, MONAI) are imported inside the handlers so that other commands start fast; `predict` sets
``fast_exit`` (see cli/main.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import InputError
from ..io.cohort import ClinicalData
from .case import add_case_arguments


def _clinical(args: argparse.Namespace) -> ClinicalData:
    """Clinical values from the command line; absent or 'unknown' values are declared missing (None)."""
    try:
        return ClinicalData.from_text(args.age, args.sex, args.t_stage, labels=("--age", "--sex", "--t-stage"))
    except ValueError as error:
        raise InputError(None, str(error)) from None


def _predict(args: argparse.Namespace) -> int:
    from ..imaging.case import load_case
    from ..io.atomic import check_output_directory
    from ..io.outputs import refuse_input_as_output
    from ..io.progress_lines import print_progress
    from ..prediction.writers import REPORT_FILE

    clinical = _clinical(args)
    refuse_input_as_output(args.out, (args.image, args.segmentation, args.model and Path(args.model)))
    check_output_directory(args.out, REPORT_FILE)  # before the work: never replace a folder of other files
    if args.progress_lines:
        print_progress(0.0, "reading the image and the segmentation")
    case = load_case(args.image, args.segmentation, split_islands=args.split_islands)
    started = time.perf_counter()
    import torch  # noqa: F401  (imported here so that the timings below exclude it)
    from tqdm.auto import tqdm

    from ..prediction import image_modality, load_bundle_for_case, predict_case, write_outputs
    from ..prediction.pipeline import torch_threads

    imports = time.perf_counter() - started
    clock = time.perf_counter()
    with torch_threads():  # the single-threaded setting of the inference, for loading the weights as well
        bundle = load_bundle_for_case(args.model, args.preset, image_modality(args.image) or args.modality)
    load_time = time.perf_counter() - clock
    clock = time.perf_counter()
    quiet = args.quiet or args.progress_lines
    with tqdm(total=100, desc="predict", unit="%", disable=None if not quiet else True, leave=False) as bar:
        def progress(fraction: float, message: str) -> None:
            if args.progress_lines:
                print_progress(fraction, message)
            bar.set_postfix_str(message)
            bar.update(round(100 * fraction) - bar.n)

        result = predict_case(case, clinical, bundle=bundle, progress=progress,
                              allow_out_of_domain=args.allow_out_of_domain)
    predict_time = time.perf_counter() - clock
    result.timings.model_load_s = load_time
    clock = time.perf_counter()
    write_outputs(result, case, args.out)
    write_time = time.perf_counter() - clock
    for name in case.skipped_segments:
        print(f"lnmstaging: warning: segment '{name}' {case.skip_reason(name)}: no prediction", file=sys.stderr)
    for skipped in result.skipped_nodes:
        print(f"lnmstaging: warning: node '{skipped['segment_name']}' {skipped['reason']}: no prediction", file=sys.stderr)
    patient = result.patient
    flag = " UNCERTAIN (" + "; ".join(patient.uncertainty_reasons) + ")" if patient.uncertain else ""
    print(f"patient: probability {patient.probability:.3f} +/- {patient.std:.3f}, {patient.decision} at threshold "
          f"{patient.threshold:.3f}{flag}")
    for caveat in patient.input_caveats:  # beside the probability, where the reader looks
        print(f"caution: {caveat}")
    for left_out in patient.nodes_left_out_of_bag:
        print(f"node {left_out['node_id']} ({left_out['segment_name']}) not in the patient bag: {left_out['reason']}")
    for warning in result.input_warnings:  # beside the probability, on stdout with it
        print(f"  warning: {warning}")
    print(f"{len(result.nodes)} node(s) -> {args.out}")
    print(result.model.context_line())
    t = result.timings
    print(f"times: imports {imports:.2f} s, model load {load_time:.2f} s, inference {predict_time:.2f} s "
          f"(preprocessing {t.preprocessing_s:.2f}, probabilities {t.inference_s:.2f}, heatmap {t.gradcam_s:.2f}, "
          f"traversals {t.traversal_s:.2f}), writing {write_time:.2f} s")
    return 0


def _clusters(args: argparse.Namespace) -> int:
    from ..io.atomic import check_output_directory
    from ..io.outputs import refuse_input_as_output
    from ..prediction.clusters import CLUSTERS_FILE, run_cluster_analysis

    refuse_input_as_output(args.out, (args.data, args.manifest, args.model and Path(args.model)))
    check_output_directory(args.out, CLUSTERS_FILE)

    summary = run_cluster_analysis(args.model, args.data, args.out, k=args.k, k_max=args.k_max, seed=args.seed,
                                   manifest=args.manifest, progress=not args.no_progress,
                                   allow_out_of_domain=args.allow_out_of_domain)
    print(f"k = {summary['k']} ({summary['k_choice']}); {summary['n_nodules']} nodules -> {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser(
        "predict", help="node and patient metastasis probabilities with a node heatmap, traversals, criteria and a report",
        description="Predict one segmented case. Writes DIR/report.json, DIR/gradcam.nrrd (on the image grid), "
        "DIR/traversal/ and DIR/report.html. Research use only, not a medical device.",
    )
    add_case_arguments(predict)
    predict.add_argument("--age", help="age in years (absent = declared missing)")
    predict.add_argument("--sex", help="F or M (absent = declared missing)")
    predict.add_argument("--t-stage", help="primary tumour T stage, T1..T4 (absent = declared missing)")
    predict.add_argument("--model", help="model bundle folder or installed bundle name (default: the default bundle)")
    predict.add_argument("--preset", help="the preprocessing preset the image is meant for; refused when the bundle "
                         "expects another one")
    predict.add_argument("--modality", help="the image's modality as DICOM names it (MR, CT) when its file carries none "
                         "(NRRD, NIfTI); refused when the bundle expects another one")
    predict.add_argument("--allow-out-of-domain", action="store_true", help="predict a case outside the model's "
                         "training domain (intensities, spacing) instead of refusing it; every output then carries "
                         "the warning beside the probability")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.add_argument("--progress-lines", action="store_true", help="instead of the bar, one machine-readable line "
                         "per step on stdout: 'lnmstaging-progress {\"fraction\": F, \"message\": M}' (for a parent "
                         "process such as the Slicer module)")
    predict.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole, atomically)")
    predict.set_defaults(handler=_predict, fast_exit=True)

    explain = subparsers.add_parser("explain", help="explore a model's latent space")
    explain_commands = explain.add_subparsers(dest="explain_command", metavar="WHAT")
    clusters = explain_commands.add_parser(
        "clusters", help="k-means clusters of node latents with size/border statistics (Keel et al. 2025, Table 4)",
        description="Encode every nodule's largest cross-section, cluster the latents with k-means (k chosen at the "
        "elbow of the within-cluster short-axis SD, as in the paper, unless --k is given), and write the per-cluster "
        "statistics (JSON, Markdown) and 2D latent maps (PNG).",
    )
    clusters.add_argument("--model", help="model bundle folder or installed bundle name (default: the default bundle)")
    source = clusters.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="folder in the LIDC layout (nodules.npz, nodules.csv)")
    source.add_argument("--manifest", type=Path, help="cohort manifest CSV: every case's nodes, prepared as `predict` "
                        "does; the label map shows the patients' N stage")
    clusters.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole, atomically)")
    clusters.add_argument("--k", type=int, help="use this number of clusters instead of choosing it")
    clusters.add_argument("--k-max", type=int, default=60, help="largest k tried when choosing k (default 60)")
    clusters.add_argument("--seed", type=int, default=0)
    clusters.add_argument("--no-progress", action="store_true")
    clusters.add_argument("--allow-out-of-domain", action="store_true", help="go on when more than 5%% of the "
                          "patients lie outside the model's training domain (recorded in clusters.json)")
    clusters.set_defaults(handler=_clusters)
    explain.set_defaults(handler=lambda _args: explain.print_help() or 2)
