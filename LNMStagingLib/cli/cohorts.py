"""`lnmstaging survival`, `lnmstaging predict-cohort` and `lnmstaging export-dicom`.

Heavy modules (lifelines, torch, highdicom, dask) are imported inside the handlers so that other commands
start fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def _references(pairs: list[str]) -> dict[str, str]:
    """--reference COL=LEVEL ... -> {COL: LEVEL}."""
    found = {}
    for pair in pairs:
        column, sep, level = pair.partition("=")
        if not sep or not column.strip() or not level.strip():
            raise InputError(None, f"--reference takes COLUMN=LEVEL, not {pair!r}")
        found[column.strip()] = level.strip()
    return found


def _survival(args: argparse.Namespace) -> int:
    from ..io.atomic import atomic_directory, check_output_directory
    from ..io.outputs import refuse_input_as_output
    from ..survival import SURVIVAL_FILE, analyse, horizon_key, read_survival_table, write_survival_outputs

    refuse_input_as_output(args.out, (args.table,))
    check_output_directory(args.out, SURVIVAL_FILE)
    if any(t < 0 for t in args.at):
        raise InputError(None, "--at horizons must not be negative")
    table = read_survival_table(args.table, args.time, args.event, args.group, args.covariates,
                                categorical=args.categorical, reference=_references(args.reference))
    analysis = analyse(table, sorted(set(args.at)), args.time_unit)
    title = args.title or f"{args.event} by {args.group} ({Path(args.table).name})"
    with atomic_directory(args.out, SURVIVAL_FILE) as folder:
        write_survival_outputs(analysis, folder, title)
    s = analysis.summary
    print(f"{s['n']} rows, {s['events']} events ({s['excluded']['rows_excluded']} of {s['excluded']['rows_read']} rows "
          f"excluded for missing values); time in {args.time_unit}")
    for level, group in s["groups"].items():
        at = ", ".join(f"S({horizon_key(float(h))}) {v['estimate']:.3f} ({v['ci95'][0]:.3f}-{v['ci95'][1]:.3f})"
                       for h, v in group["survival_at"].items())
        print(f"  {args.group} = {level}: n {group['n']}, events {group['events']}" + (f"; {at}" if at else ""))
    print(f"log-rank: chi2 {s['logrank']['statistic']:.3f}, p {s['logrank']['p']:.3g}")
    for name, term in s["cox_multivariable"]["terms"].items():
        print(f"  Cox (multivariable) {name}: HR {term['hr']:.3f} ({term['ci95'][0]:.3f}-{term['ci95'][1]:.3f}), "
              f"p {term['p']:.3g}")
    print(f"concordance {s['cox_multivariable']['concordance']:.3f}; proportional-hazards flags: "
          f"{', '.join(s['proportional_hazards']['flagged']) or 'none'} -> {args.out}")
    return 0


def _predict_cohort(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..cohort_prediction import SUMMARY_CSV, SUMMARY_PARQUET, run_cohort
    from ..io.cohort import read_manifest
    from ..io.outputs import refuse_input_as_output

    inputs = [args.manifest, args.model and Path(args.model)]
    inputs += [path for entry in read_manifest(args.manifest) for path in (entry.image, entry.segmentation)]
    refuse_input_as_output(args.out, inputs)
    # Dask's scheduler and workers must shut down through the interpreter's teardown (cli/main.py: fast_exit)
    args.fast_exit = not args.cluster
    bar = None

    def progress(done: int, total: int, status: dict | None) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="predict-cohort", unit="case", disable=True if args.quiet else None)
        if status is not None:
            bar.set_postfix_str(f"{status['patient_id']}: {status['status']}")
            bar.update(1)

    try:
        run = run_cohort(args.manifest, args.out, args.model, split_islands=args.split_islands, preset=args.preset,
                         dicom_export=args.dicom_export, cluster=args.cluster, progress=progress,
                         allow_out_of_domain=args.allow_out_of_domain)
    finally:
        if bar is not None:
            bar.close()
    for patient, reason in run.failed.items():
        print(f"failed: {patient}: {reason}")
    if args.dicom_export:
        written = [p for p, record in run.dicom.items() if record.get("written")]
        print(f"DICOM export: {len(written)} case(s) written (cases/<patient>/dicom/seg.dcm, sr.dcm)")
        for patient, record in run.dicom.items():
            if not record.get("written"):
                print(f"  {patient}: {record.get('reason')}")
    print(f"{len(run.predicted)} case(s) predicted, {len(run.skipped)} unchanged and kept, {len(run.failed)} failed; "
          f"summary: {run.patient_rows} patient and {run.node_rows} node rows -> {args.out / SUMMARY_CSV}, "
          f"{args.out / SUMMARY_PARQUET}")
    print("Research use only, not a medical device.")
    return 1 if run.failed and not run.predicted and not run.skipped else 0


def _export_dicom(args: argparse.Namespace) -> int:
    from ..export.dicom import export_case

    result = export_case(args.report_dir, split_islands=args.split_islands)
    if not result["written"]:
        print(result["reason"])
        return 1
    print(f"DICOM SEG ({result['segments']} segments) -> {args.report_dir / result['seg']}; "
          f"DICOM SR TID 1500 -> {args.report_dir / result['sr']}. Research use only, not a medical device.")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    cohort = subparsers.add_parser(
        "predict-cohort", help="predict every case of a cohort manifest (resumable; optional Dask cluster)",
        description="Predict every case of MANIFEST.csv (patient_id, image, segmentation[, age, sex, t_stage, "
        "n_stage]) as `predict` does, into DIR/cases/<patient>/, with DIR/summary.csv and DIR/summary.parquet "
        "(a patient row per case, then its node rows). A rerun redoes only cases whose input files, model or "
        "options changed (and failed ones); one case's failure is recorded with its reason and the others go on.",
    )
    cohort.add_argument("manifest", type=Path, help="cohort manifest CSV")
    cohort.add_argument("--model", help="model bundle folder or installed bundle name (default: the default bundle)")
    cohort.add_argument("--split-islands", action="store_true", help="each connected component is its own node")
    cohort.add_argument("--preset", help="the preprocessing preset the images are meant for (as for predict)")
    cohort.add_argument("--allow-out-of-domain", action="store_true", help="predict cases outside the model's "
                        "training domain (else each is recorded as failed with the mismatch); every output of such "
                        "a case carries the warning")
    cohort.add_argument("--dicom-export", action="store_true", help="also write DICOM SEG and SR (TID 1500) for "
                        "cases whose image is a DICOM series (see export-dicom)")
    cohort.add_argument("--cluster", metavar="local[:N]|ADDRESS", help="distribute the cases with Dask: a local "
                        "cluster of N worker processes (default 2) or a scheduler address such as tcp://host:8786")
    cohort.add_argument("--quiet", action="store_true", help="no progress bar")
    cohort.add_argument("--out", type=Path, required=True, help="output folder (new, empty or an earlier run's)")
    cohort.set_defaults(handler=_predict_cohort, fast_exit=True)

    export = subparsers.add_parser(
        "export-dicom", help="a predict output as DICOM SEG (one segment per node) and SR TID 1500 (node results)",
        description="For a `predict` output folder whose image was a DICOM series: write REPORT_DIR/dicom/seg.dcm "
        "(DICOM SEG, one segment per node, its probability in the segment's tracking id) and REPORT_DIR/dicom/sr.dcm "
        "(Comprehensive 3D SR, TID 1500 measurement report: probability, short and long axis per node, each "
        "referencing its segment and the source series). Without DICOM input it says why and exits 1.",
    )
    export.add_argument("report_dir", type=Path, help="a predict output folder (holding report.json)")
    export.add_argument("--split-islands", action="store_true", help="as given to predict")
    export.set_defaults(handler=_export_dicom)

    survival = subparsers.add_parser(
        "survival", help="Kaplan-Meier, log-rank and Cox PH of a cohort table (lifelines)",
        description="Survival analysis of any CSV table (e.g. the predict-cohort summary joined with follow-up): "
        "Kaplan-Meier per group with 95%% bands and numbers at risk, survival at --at horizons, the log-rank test, "
        "univariable and multivariable Cox proportional hazards (the group first, then the covariates) with a "
        "proportional-hazards check. Writes DIR/survival.json, DIR/km.png, DIR/cox_forest.png, DIR/survival.html. "
        "Rows missing an analysed value are excluded and counted.",
    )
    survival.add_argument("table", type=Path, help="CSV table, one row per patient")
    survival.add_argument("--time", required=True, help="follow-up time column (in --time-unit)")
    survival.add_argument("--event", required=True, help="event column: 1 = event, 0 = censored")
    survival.add_argument("--group", required=True, help="column whose levels get one Kaplan-Meier curve each")
    survival.add_argument("--covariates", nargs="*", default=[], metavar="COL",
                          help="further Cox covariates; text columns are categorical (one term per level)")
    survival.add_argument("--categorical", nargs="*", default=[], metavar="COL",
                          help="treat these numeric columns as categorical too")
    survival.add_argument("--reference", nargs="*", default=[], metavar="COL=LEVEL",
                          help="reference level of a categorical column (default: its first level in sorted order)")
    survival.add_argument("--at", nargs="*", type=float, default=[], metavar="T",
                          help="horizons (in the time unit) at which survival is estimated per group")
    survival.add_argument("--time-unit", default="days", help="unit of the time column, stated in the outputs "
                          "(default: days)")
    survival.add_argument("--title", help="title of the plot and the HTML page")
    survival.add_argument("--out", type=Path, required=True, help="output folder (replaced as a whole, atomically)")
    survival.set_defaults(handler=_survival)
