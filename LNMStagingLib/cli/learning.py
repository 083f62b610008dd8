"""Learning sub-commands: ``train``, ``models``, ``evaluate``, ``benchmark``."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from ..errors import InputError
from ..io.atomic import write_text_atomic

PREDICTIONS_HEADER = "patient_id,n_stage_label,probability,std,positive,uncertain,n_nodes,max_node_probability"
# Measured, not guessed (Testing/Benchmarks/bench_vae_training.py --threads 1 2, on the project's 2-core machine
# shared with other jobs): train_vae 147 images/s with 1 torch thread, 27 images/s with 2.
DEFAULT_THREADS = 1
THREADS_HELP = f"torch threads (default {DEFAULT_THREADS}: fastest on the 2-core machine it was measured on)"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a VAE, a classifier, or both (a model bundle) from LIDC-layout data or a cohort",
        description="Train the VAE-MLP. --stage vae: the encoder only; --stage classifier: the MIL classifier on "
                    "a VAE trained before (--encoder); --stage both (default): everything, written as a bundle.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="folder with nodules.npz (+ nodules.csv), the LIDC layout")
    source.add_argument("--manifest", type=Path, help="cohort manifest CSV (patient_id, image, segmentation, ...)")
    p.add_argument("--preset", default=None, help="preprocessing preset for --manifest (default mri-t2)")
    p.add_argument("--fov-mm", type=float, default=None, help="patch field of view in mm for --manifest")
    p.add_argument("--out", type=Path, required=True, help="output folder (a bundle for --stage both)")
    p.add_argument("--stage", choices=("vae", "classifier", "both"), default="both")
    p.add_argument("--encoder", type=Path, help="for --stage classifier: the output folder of --stage vae")
    p.add_argument("--method", choices=("vae", "dirvae"), default="vae", help="Gaussian (vae) or Dirichlet VAE")
    p.add_argument("--members", type=int, default=0,
                   help="cross-validation fold models added to the bundle as an ensemble (0-10)")
    p.add_argument("--name", default=None, help="bundle name (default: the output folder's name)")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--config", type=Path, help="JSON file of PipelineConfig overrides")
    p.add_argument("--epochs", type=int, help="maximum VAE epochs")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds; for trying the command)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--lidc-final", action="store_true",
                   help="build the shipped LIDC bundle: member 0 on all data (resumable, in --work-dir) + the "
                        "VAE-MLP fold models and nested-CV figures of a benchmark run (--benchmark-dir)")
    p.add_argument("--benchmark-dir", type=Path, help="with --lidc-final: the `benchmark lidc` run folder")
    p.add_argument("--work-dir", type=Path, help="with --lidc-final: checkpoints of member 0 (default <out>.work)")
    p.add_argument("--encoders-from", default=None,
                   help="with --lidc-final: bundle whose member-0 VAE is reused (only the classifier is refitted)")
    p.add_argument("--wait-minutes", type=float, default=0.0,
                   help="with --lidc-final: wait this long for the benchmark's VAE folds to finish")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser("models", help="list the installed model bundles")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, path, default}")
    p.add_argument("--verify", action="store_true", help="also check every bundle's files against its manifest")
    p.set_defaults(handler=_models)

    p = subparsers.add_parser("evaluate", help="evaluate a bundle (unchanged) on LIDC-layout data or a labelled cohort")
    p.add_argument("--model", default=None, help="bundle folder or name (default: the default bundle)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="folder with nodules.npz (+ nodules.csv): node and patient metrics")
    source.add_argument("--manifest", type=Path,
                        help="cohort manifest CSV with n_stage: every patient predicted as `predict` does, "
                             "patient metrics")
    p.add_argument("--out", type=Path, required=True, help="metrics.json to write")
    p.add_argument("--predictions", type=Path, default=None,
                   help="with --manifest: also write one CSV row per patient (label, probability, SD, decision)")
    p.add_argument("--plots", type=Path, default=None, help="folder for ROC and reliability plots")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--allow-out-of-domain", action="store_true", help="go on when more than 5%% of the patients lie "
                   "outside the model's training domain (recorded in metrics.json)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out/--predictions files even when "
                   "they are not recognisably earlier evaluate outputs (an input is never replaced)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_evaluate)

    p = subparsers.add_parser("benchmark", help="nested cross-validation benchmark")
    sub = p.add_subparsers(dest="benchmark_name", metavar="DATASET")
    b = sub.add_parser("lidc", help="size-only, CNN + MIL, VAE-MLP, DirVAE-MLP on the same nested folds")
    b.add_argument("--data", type=Path, required=True, help="LIDC folder (nodules.npz + nodules.csv)")
    _benchmark_arguments(b, "size,vae,cnn,dirvae,vae_max,vae_mlp_only")
    b = sub.add_parser("cohort", help="the same rows on your own cohort manifest (patient labels from the N stage)")
    b.add_argument("--manifest", type=Path, required=True, help="cohort manifest CSV (patient_id, image, "
                   "segmentation, age, sex, t_stage, n_stage)")
    b.add_argument("--preset", default="mri-t2", help="preprocessing preset (default mri-t2)")
    b.add_argument("--fov-mm", type=float, default=None, help="patch field of view in mm")
    _benchmark_arguments(b, "size,vae,cnn,dirvae,vae_max,vae_mlp_only,vae_no_clinical")
    from .rectal import register_rectal_benchmarks

    register_rectal_benchmarks(sub, _command_line)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _benchmark_arguments(parser, methods: str) -> None:
    parser.add_argument("--out", type=Path, required=True, help="run folder (results per fold; reruns resume)")
    parser.add_argument("--methods", default=methods,
                        help=f"comma-separated, from: {methods} (vae_* are ablations reusing the vae row's encoders)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny settings (minutes; for trying the command)")
    parser.add_argument("--max-patients", type=int, default=None, help="random subset of patients (quick tries)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--encoders-from", default=None,
                        help="bundle whose fold members' VAEs the vae row reuses (only the classifier is refitted)")
    parser.set_defaults(handler=_benchmark)


def _command_line() -> str:
    return "lnmstaging " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _models(args) -> int:
    from ..bundle import list_bundles, verify_bundle

    bundles = list_bundles()
    if args.verify:
        for info in bundles:
            verify_bundle(info.path)
    if args.json:
        print(json.dumps([b.to_json() for b in bundles], indent=2))
        return 0
    if not bundles:
        print("no model bundles installed")
        return 0
    for b in bundles:
        print(f"{'*' if b.default else ' '} {b.name}\t{b.path}")
    return 0


def _evaluate(args) -> int:
    import torch

    from ..bundle import load_bundle
    from ..evaluation.evaluate import evaluate_bundle, evaluate_bundle_on_cohort

    torch.set_num_threads(2)
    if args.predictions and not args.manifest:
        raise InputError(None, "--predictions goes with --manifest")
    _check_evaluate_outputs(args)
    bundle = load_bundle(args.model)
    source = args.data or args.manifest
    if args.data:
        if not args.data.is_dir():
            raise InputError(args.data, "data folder not found")
        result = evaluate_bundle(bundle, args.data, n_boot=args.bootstrap, plots_dir=args.plots,
                                 allow_out_of_domain=args.allow_out_of_domain)
    else:
        result, rows = evaluate_bundle_on_cohort(bundle, args.manifest, n_boot=args.bootstrap, plots_dir=args.plots,
                                                 progress=not args.no_progress,
                                                 allow_out_of_domain=args.allow_out_of_domain)
        if args.predictions:
            write_text_atomic(args.predictions, _predictions_csv(rows))
    write_text_atomic(args.out, json.dumps(_nan_to_null(result), indent=2, default=float, allow_nan=False) + "\n")
    n, p = result["nodule"], result["patient"]
    domain = result["input_domain"]
    if domain.get("patients_out_of_domain"):
        print(f"lnmstaging: warning: {domain['patients_out_of_domain']} of {domain['patients']} patients lie outside "
              f"the input domain of {bundle.name} (e.g. {domain['examples'][0]})", file=sys.stderr)
    seen = result["data"]["patients_seen_in_training"]
    if seen:
        print(f"lnmstaging: warning: {seen} of {result['data']['patients']} patients in {source} were used to "
              f"train {bundle.name}: these figures are in-sample, not a test result", file=sys.stderr)
    for level, metrics in (("nodule", n), ("patient", p)):
        if metrics and metrics["n_positive"] in (0, metrics["n"]):
            print(f"lnmstaging: warning: {source} has only one class at the {level} level ({metrics['n_positive']} "
                  f"positive of {metrics['n']}): AUC and sensitivity or specificity are undefined (nan)",
                  file=sys.stderr)
    nodule = f"nodule AUC {n['auc']:.3f}, " if n else ""
    print(f"{bundle.name}: {nodule}patient AUC {p['auc']:.3f} "
          f"(sens {p['sensitivity']:.3f}, spec {p['specificity']:.3f}, uncertain "
          f"{100 * p['uncertain_fraction']:.0f}%) -> {args.out}")
    return 0


def _check_evaluate_outputs(args) -> None:
    """metrics.json, the predictions CSV and the plots folder: never an input, never a user's file."""
    from ..io.cohort import read_manifest
    from ..io.outputs import check_output_file, first_line_is, json_with_keys, refuse_input_as_output

    inputs = [args.data, args.manifest, args.model and Path(args.model)]
    if args.manifest and args.manifest.is_file():
        inputs += [path for entry in read_manifest(args.manifest) for path in (entry.image, entry.segmentation)]
    outputs = [args.out] + ([args.predictions] if args.predictions else [])
    if len({Path(o).resolve() for o in outputs}) < len(outputs):
        raise InputError(args.out, "--out and --predictions name the same file")
    check_output_file(args.out, inputs, json_with_keys("nodule", "patient", "data"), "an lnmstaging evaluate "
                      "metrics file", args.overwrite)
    if args.predictions:
        check_output_file(args.predictions, inputs, first_line_is(PREDICTIONS_HEADER), "an lnmstaging evaluate "
                          "predictions CSV", args.overwrite, option="--predictions")
    if args.plots:
        refuse_input_as_output(args.plots, inputs + outputs, option="--plots")


def _nan_to_null(value):
    """Undefined metrics (nan) as JSON null: strict JSON readers refuse NaN."""
    import math

    if isinstance(value, dict):
        return {key: _nan_to_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_null(item) for item in value]
    if hasattr(value, "dtype") and value.shape == ():  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _predictions_csv(rows) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PREDICTIONS_HEADER.split(","))
    for r in rows:
        writer.writerow([r.patient_id, r.label, f"{r.probability:.6f}", f"{r.std:.6f}", int(r.positive),
                         int(r.uncertain), r.n_nodes, f"{max(r.node_probabilities, default=0.0):.6f}"])
    return buffer.getvalue()


def _benchmark(args) -> int:
    import torch

    from ..evaluation.benchmark import METHOD_LABELS, run_benchmark

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHOD_LABELS]
    if unknown:
        raise InputError(None, f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_LABELS)}")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    data, labelling = getattr(args, "data", None), {}
    if args.benchmark_name == "cohort":
        from ..data.cohort import has_clinical_data, load_cohort

        data = load_cohort(args.manifest, preset=args.preset, fov_mm=args.fov_mm, progress=not args.no_progress)
        if "vae_no_clinical" in methods and not has_clinical_data(data):
            print("lnmstaging: the cohort has no clinical data: the 'without clinical data' row would repeat the "
                  "vae row and is left out", file=sys.stderr)
            methods = tuple(m for m in methods if m != "vae_no_clinical")
        labelling = {"title": f"Cohort benchmark ({args.manifest.name}, preset {args.preset})",
                     "label_note": "Labels: the patients' N stage (N0 negative, N1/N2 positive); node labels are "
                                   "unknown, so there are no node-level metrics."}
    path = run_benchmark(data, args.out, methods=methods, n_folds=args.folds, seed=args.seed, quick=args.quick,
                         progress=not args.no_progress, command=_command_line(), max_patients=args.max_patients,
                         encoders_from=args.encoders_from, **labelling)
    print(path.read_text(encoding="utf-8"))
    print(f"benchmark finished in {(time.time() - t0) / 60:.1f} min: {path}")
    return 0


def _train(args) -> int:
    import torch

    from ..training import run
    from ..training.seed import default_device, seed_everything

    torch.set_num_threads(args.threads)
    context = run.RunContext(progress=not args.no_progress, device=args.device or default_device())
    if args.lidc_final:
        from ..evaluation.lidc_final import train_final_bundle

        if not args.data:
            raise InputError(None, "--lidc-final needs --data (the LIDC folder)")
        work = args.work_dir or args.out.parent / (args.out.name + ".work")
        train_final_bundle(args.data, args.out, work, args.benchmark_dir, wait_seconds=args.wait_minutes * 60,
                           name=args.name or args.out.name, version=args.version, progress=context.progress,
                           quick=args.quick, encoder_from=args.encoders_from)
        return 0
    config = run.pipeline_config(args.method, args.quick, args.seed, args.config, args.epochs)
    seed_everything(args.seed)
    dataset, preset, fov = run.training_data(args.data, args.manifest, args.preset, args.fov_mm, context.progress)
    run.check_enough_patients(dataset, config, args.data or args.manifest)
    out: Path = args.out
    if args.stage != "vae":
        run.check_bundle_folder(out)
    t0 = time.time()
    if args.stage == "vae":
        info = run.train_encoder_only(dataset, config, args.method, out, context)
        print(f"VAE written to {out} in {(time.time() - t0) / 60:.1f} min "
              f"(validation SSIM {info['reconstruction_val']['ssim']:.3f})")
        return 0
    encoder = None
    if args.stage == "classifier":
        config, encoder = run.read_encoder(args.encoder)
    context.work_dir = out.parent / (out.name + ".work")
    primary, folds = run.train_members(dataset, config, args.members, args.seed, context, encoder)
    name = args.name or out.name
    run.write_trained_bundle(out, name, args.version, primary, folds, dataset, preset, fov, config,
                             str(args.data or args.manifest), _command_line())
    print(f"bundle {name} written to {out} in {(time.time() - t0) / 60:.1f} min "
          f"(threshold {primary.threshold:.3f}, {1 + len(folds)} members)")
    return 0
