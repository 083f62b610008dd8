"""`lnmstaging benchmark lidc` and `lnmstaging benchmark cohort`: size-only, CNN + MIL head, VAE-MLP
(Gaussian) and DirVAE-MLP on the same patient-grouped, stratified, nested 5-fold cross-validation, with resume.

``lidc`` reads a folder in the layout of ``../shared/data/lidc-nodules`` (node and patient labels); ``cohort``
a user's cohort manifest (patient labels from the N stage only, so node-level metrics are not available, and
clinical data, so the "without clinical data" ablation is a real row).

Each (method, fold) writes ``<out>/<method>/fold_<k>/result.json`` (+ the fitted model); a rerun skips what
is done. The outer test fold is used once, for the reported predictions; everything that is chosen
(encoder epoch, MIL hyperparameters, MIL epochs, threshold) is chosen on the training patients only.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import PatchDataset
from ..data.lidc import load_lidc
from ..data.splits import patient_folds
from ..io.atomic import write_text_atomic
from ..training.config import PipelineConfig
from ..training.context import RunContext
from ..training.fingerprint import array_digest, fingerprint
from ..training.fitted import FittedModel
from ..training.pipeline import CROSS_FITTED, fit
from ..training.recipes import benchmark_configs
from ..training.vae_train import reconstruction_metrics
from .baselines import BASELINES, run_baseline_fold
from .benchmark_table import LIDC_LABELS, LIDC_TITLE, METHOD_LABELS, json_default, write_table
from .comparison import fold_mean_interval, paired_auc_difference
from .metrics import binary_metrics, summarise_folds

# ablations reuse the encoder of another row's fold (only the MIL head is refitted)
ENCODER_FROM = {"vae_max": "vae", "vae_mlp_only": "vae", "vae_no_clinical": "vae"}
DEFAULT_ORDER = ("area", "logreg", "size", "vae", "cnn", "dirvae", "vae_max", "vae_mlp_only")
# the rows the VAE-MLP is compared with by a paired bootstrap of the AUC difference
COMPARED_WITH = ("area", "logreg", "size")
COHORT_ORDER = (*DEFAULT_ORDER, "vae_no_clinical")


def run_fold(dataset: PatchDataset, method: str, config: PipelineConfig, train, test, context: RunContext,
             encoder=None) -> dict:
    """Fit on ``train`` patients, predict the ``test`` patients once, write ``result.json``.

    Args:
        dataset: the patches of every patient.
        method: the benchmark row.
        config: its pipeline configuration.
        train: the training patients.
        test: the test patients (predicted once, never seen by the fit).
        context: progress, log; ``work_dir`` is the fold's folder (checkpoints, model, result.json).
        encoder: another row's fitted encoder of this fold (the ablations), or None.

    Returns:
        The fold's result (also written to ``result.json``).
    """
    t0 = time.time()
    fold_dir, log = context.work_dir, context.log
    model_dir = fold_dir / "model"
    if (model_dir / "fitted.json").is_file():
        fitted = FittedModel.load(model_dir)
        log(f"[{method} fold] reusing fitted model {model_dir}")
    else:
        fitted = fit(dataset, train, config, context, encoder)
        fitted.save(model_dir, config)
    pred = fitted.predict(dataset, test)
    node_known = np.asarray(pred["nodule_label"]) >= 0  # cohorts: node labels unknown (-1)
    result = {
        "method": method,
        "train_patients": sorted(map(str, train)),
        "test_patients": sorted(map(str, test)),
        "threshold": fitted.threshold,
        "selection": fitted.selection,
        "encoder": fitted.history,
        "patient": binary_metrics(pred["patient_label"], pred["patient_prob"], fitted.threshold),
        "nodule": binary_metrics(pred["nodule_label"][node_known], pred["nodule_prob"][node_known],
                                 fitted.threshold) if node_known.any() else None,
        "predictions": {k: np.asarray(v).tolist() for k, v in pred.items()},
        "wall_seconds": time.time() - t0 + _resumed_seconds(fitted.history),
        "torch_threads": torch.get_num_threads(),
    }
    if method not in ENCODER_FROM and fitted.encoder is not None and hasattr(fitted.encoder, "decode"):
        idx = dataset.subset_patients(test)
        result["reconstruction_test"] = reconstruction_metrics(fitted.encoder, torch.as_tensor(dataset.patches[idx]))
    fold_dir.mkdir(parents=True, exist_ok=True)
    if fitted.inner_mils:
        write_text_atomic(fold_dir / RAW_PREDICTIONS_FILE,
                          json.dumps(_raw_predictions(fitted, dataset, train, test)))
    (fold_dir / "result.json").write_text(json.dumps(result, indent=1, default=json_default), encoding="utf-8")
    return result


RAW_PREDICTIONS_FILE = "raw_predictions.json"


def _raw_predictions(fitted: FittedModel, dataset: PatchDataset, train, test) -> dict:
    """The uncalibrated patient outputs a calibration strategy is compared on without retraining.

    Args:
        fitted: the fold's model with its inner-fold classifiers.
        dataset: the patches.
        train: the fold's training patients.
        test: its test patients.

    Returns:
        ``train`` and ``test`` (each :meth:`~LNMStagingLib.training.fitted.FittedModel.raw_predictions`: the
        final and every inner-fold classifier's output) and ``inner_validation`` (each inner classifier's
        held-out training patients).
    """
    return {"train": fitted.raw_predictions(dataset, train), "test": fitted.raw_predictions(dataset, test),
            "inner_validation": fitted.selection.get("inner_validation", [])}


def _resumed_seconds(history: dict) -> float:
    """VAE training time spent by earlier, interrupted runs (the checkpoint keeps the cumulative time)."""
    total = sum(h.get("train_seconds", 0.0) for h in [history.get("vae", {}), *history.get("em", [])])
    return max(0.0, total - history.get("encoder_seconds", total))


def summarise(results: list[dict], n_boot: int = 1000) -> dict:
    """Mean +/- SD over folds, pooled bootstrap 95% intervals (patients resampled), SSIM."""
    out: dict = {"folds": len(results), "wall_seconds": float(sum(r["wall_seconds"] for r in results)),
                 "notes": [f"fold {i + 1} of 5: {r['wall_seconds_note']}" for i, r in enumerate(results) if r.get("wall_seconds_note")],
                 "torch_threads": sorted({r.get("torch_threads", 0) for r in results})}
    for level in ("patient", "nodule"):
        if any(r[level] is None for r in results):  # no node labels (cohorts)
            out[level] = None
            continue
        out[level] = summarise_folds([r[level] for r in results])
        out[f"{level}_fold_mean_ci95"] = {key: fold_mean_interval([r[level][key] for r in results])
                                          for key in ("auc", "ece")}
        y = np.concatenate([r["predictions"][f"{level}_label"] for r in results])
        p = np.concatenate([r["predictions"][f"{level}_prob"] for r in results])
        # pooled predictions: each fold used its own inner-chosen threshold -> predicted labels per fold
        decided = np.concatenate([np.asarray(r["predictions"][f"{level}_prob"]) >=
                                  r.get(f"{level}_threshold", r["threshold"]) for r in results])
        groups = np.concatenate([r["predictions"]["patient_id" if level == "patient" else "nodule_patient"]
                                 for r in results])
        known = y >= 0
        y, p, decided, groups = y[known], p[known], decided[known], groups[known]
        out[f"{level}_pooled"] = _pooled_metrics(y, p, decided)
        out[f"{level}_ci95"] = _bootstrap_decided(y, p, decided, groups, n_boot=n_boot)
    ssims = [r["reconstruction_test"]["ssim"] for r in results if "reconstruction_test" in r]
    if ssims:
        out["ssim_test"] = [float(np.mean(ssims)), float(np.std(ssims, ddof=1)) if len(ssims) > 1 else 0.0]
        for key in ("psnr", "mse", "mae"):
            out[f"{key}_test"] = float(np.mean([r["reconstruction_test"][key] for r in results]))
    return out


def _pooled_metrics(y, p, decided) -> dict:
    """Metrics of pooled out-of-fold predictions; decisions use each fold's own threshold."""
    m = binary_metrics(y, p, 0.5)
    d = binary_metrics(y, decided.astype(float), 0.5)
    for key in ("sensitivity", "specificity", "accuracy", "f1", "balanced_accuracy"):
        m[key] = d[key]
    m["threshold"] = "per fold (inner validation)"
    return m


def _bootstrap_decided(y, p, decided, groups, n_boot: int = 1000, seed: int = 0) -> dict:
    """Patient-level bootstrap of pooled out-of-fold predictions (vectorised metrics)."""
    from .metrics import expected_calibration_error, fast_auc

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    decided = np.asarray(decided, dtype=bool)
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    samples: dict[str, list] = {k: [] for k in ("auc", "sensitivity", "specificity", "accuracy", "f1",
                                                "balanced_accuracy", "ece")}
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        yy, pp, dd = y[idx], p[idx], decided[idx]
        pos, neg = yy == 1, yy == 0
        if not pos.any() or not neg.any():
            continue
        tp, fn = np.sum(dd & pos), np.sum(~dd & pos)
        tn, fp = np.sum(~dd & neg), np.sum(dd & neg)
        sens, spec = tp / (tp + fn), tn / (tn + fp)
        prec = tp / (tp + fp) if tp + fp else 0.0
        samples["auc"].append(fast_auc(yy, pp))
        samples["ece"].append(expected_calibration_error(yy, pp))
        samples["sensitivity"].append(sens)
        samples["specificity"].append(spec)
        samples["accuracy"].append((tp + tn) / len(yy))
        samples["f1"].append(2 * prec * sens / (prec + sens) if prec + sens else 0.0)
        samples["balanced_accuracy"].append((sens + spec) / 2)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items() if v}


def write_plots(out_dir: Path, results: dict[str, list[dict]]) -> None:
    from .plots import plot_reliability, plot_roc

    for level in ("patient", "nodule"):
        curves = {}
        for method, rs in results.items():
            if rs:
                y = np.concatenate([r["predictions"][f"{level}_label"] for r in rs])
                p = np.concatenate([r["predictions"][f"{level}_prob"] for r in rs])
                if (y >= 0).any():  # cohorts have no node labels
                    curves[METHOD_LABELS.get(method, method).split(" (")[0]] = (y[y >= 0], p[y >= 0])
        if curves:
            plot_roc(curves, out_dir / f"roc_{level}.png", f"ROC, {level} level (out-of-fold)")
            plot_reliability(curves, out_dir / f"reliability_{level}.png", f"Reliability, {level} level")


def outer_folds(dataset: PatchDataset, n_folds: int = 5, seed: int = 0, max_patients: int | None = None
                ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The benchmark's patients and its patient-grouped, stratified outer folds.

    Args:
        dataset: the data set.
        n_folds: outer folds.
        seed: the benchmark's seed.
        max_patients: a random subset of patients (quick tries), or None.

    Returns:
        (the patients used, sorted; [(train, test)] per fold).
    """
    labels = dataset.patient_labels()
    patients = np.asarray(sorted(labels))
    if max_patients:
        rng = np.random.default_rng(seed)
        patients = np.sort(rng.choice(patients, min(max_patients, len(patients)), replace=False))
    return patients, patient_folds(patients, [labels[p] for p in patients], n_folds, seed)


def run_benchmark(data: str | Path | PatchDataset, out_dir, methods=DEFAULT_ORDER, n_folds: int = 5, seed: int = 0,
                  quick: bool = False, progress: bool = True, command: str = "", log=print,
                  max_patients: int | None = None, n_boot: int = 1000, title: str = LIDC_TITLE,
                  label_note: str = LIDC_LABELS, encoders_from: str | Path | None = None) -> Path:
    """Run (or resume) the nested, patient-grouped benchmark.

    Args:
        data: a folder in the LIDC layout or a prepared data set (a cohort).
        out_dir: the run folder (each fold's result.json; a rerun resumes).
        methods: the rows (recipes of :func:`~LNMStagingLib.training.recipes.benchmark_configs`).
        n_folds: outer folds.
        seed: the seed of the folds and the training.
        quick: the tiny settings.
        progress: show progress bars.
        command: the command line recorded in the table.
        log: a print-like function.
        max_patients: a random subset of patients (quick tries), or None.
        n_boot: bootstrap resamples of the intervals.
        title: the table's title.
        label_note: what the labels are.
        encoders_from: a bundle whose fold members' VAEs become the ``vae`` row's encoders (each checked to be
            trained on that fold's training patients only, :mod:`~LNMStagingLib.evaluation.encoder_reuse`): only
            the MIL head, its gate, calibration and threshold are refitted; None trains the encoders.

    Returns:
        The path of the Markdown table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started_file = out_dir / "started.txt"
    if not started_file.is_file():
        started_file.write_text(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), encoding="utf-8")
    started = started_file.read_text(encoding="utf-8").strip()
    dataset = data if isinstance(data, PatchDataset) else load_lidc(data)
    labels = dataset.patient_labels()
    patients, folds = outer_folds(dataset, n_folds, seed, max_patients)
    used = dataset.subset_patients(patients)
    data_fp = fingerprint(patches=array_digest(dataset.patches[used]), features=array_digest(dataset.features[used]),
                          labels=sorted((str(p), int(labels[p])) for p in patients), clinical=dataset.clinical)
    (out_dir / "folds.json").write_text(json.dumps([{"train": tr.tolist(), "test": te.tolist()} for tr, te in folds]),
                                        encoding="utf-8")
    configs = benchmark_configs(quick)
    encoders: dict = {}
    if encoders_from is not None:
        from .encoder_reuse import bundle_encoders, check_fold_encoders

        _, encoders, source = bundle_encoders(encoders_from)
        check_fold_encoders(source, dataset, folds)
        log(f"reusing the VAE encoders of {source.path} for folds {sorted(encoders)}")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for method in methods:
        for k, (train, test) in enumerate(folds):
            fold_dir = out_dir / method / f"fold_{k}"
            source_fp = ""
            if method in ENCODER_FROM:
                source_file = out_dir / ENCODER_FROM[method] / f"fold_{k}" / FINGERPRINT_FILE
                source_fp = source_file.read_text(encoding="utf-8").strip() if source_file.is_file() else ""
            # the simple baselines have no training recipe; reused encoders come from the named bundle
            config = configs[method].to_dict() if method in configs else {"baseline": method}
            fold_fp = fingerprint(data=data_fp, method=method, config=config, seed=seed,
                                  train=sorted(map(str, train)), test=sorted(map(str, test)), encoder=source_fp,
                                  encoders_from=str(encoders_from) if encoders_from is not None else "",
                                  # folds fitted under the earlier calibration are recomputed, not reused
                                  calibration=CROSS_FITTED if method in configs else "")
            _discard_stale_fold(fold_dir, fold_fp, log)
            done = fold_dir / "result.json"
            if done.is_file():
                results[method].append(json.loads(done.read_text(encoding="utf-8")))
                continue
            if method in BASELINES:
                r = run_baseline_fold(dataset, method, train, test)
                fold_dir.mkdir(parents=True, exist_ok=True)
                done.write_text(json.dumps(r, indent=1, default=json_default), encoding="utf-8")
                results[method].append(r)
                continue
            encoder = encoders.get(k) if method == "vae" else None
            if method in ENCODER_FROM:
                source = out_dir / ENCODER_FROM[method] / f"fold_{k}" / "model"
                if not (source / "fitted.json").is_file():
                    log(f"[{method}] fold {k + 1}: skipped, needs the {ENCODER_FROM[method]} row's fold first")
                    continue
                encoder = FittedModel.load(source).encoder
            log(f"[{method}] fold {k + 1}/{len(folds)}: {len(train)} training, {len(test)} test patients")
            fold_dir.mkdir(parents=True, exist_ok=True)
            (fold_dir / FINGERPRINT_FILE).write_text(fold_fp + "\n", encoding="utf-8")
            r = run_fold(dataset, method, configs[method], train, test,
                         RunContext(progress, log=log, work_dir=fold_dir), encoder)
            results[method].append(r)
            nodule = f"nodule AUC {r['nodule']['auc']:.3f}, " if r["nodule"] else ""
            log(f"[{method}] fold {k + 1}: {nodule}patient AUC {r['patient']['auc']:.3f}"
                + (f", test SSIM {r['reconstruction_test']['ssim']:.3f}" if "reconstruction_test" in r else "")
                + f" ({r['wall_seconds'] / 60:.1f} min)")
            every = _all_results(out_dir, len(folds))
            summaries = {m: summarise(rs, n_boot=min(n_boot, 200)) for m, rs in every.items() if rs}
            write_table(out_dir, summaries, command, started, len(folds), dataset, title, label_note,
                        _comparisons(every, min(n_boot, 200)), patients)
    every = _all_results(out_dir, len(folds))
    summaries = {m: summarise(rs, n_boot=n_boot) for m, rs in every.items() if rs}
    path = write_table(out_dir, summaries, command, started, len(folds), dataset, title, label_note,
                       _comparisons(every, max(n_boot, 2000)), patients)
    write_plots(out_dir, {m: rs for m, rs in every.items() if m in ("size", "cnn", "vae", "dirvae")})
    return path


def _comparisons(every: dict[str, list[dict]], n_boot: int) -> dict[str, dict]:
    """The VAE-MLP's paired AUC differences to the simple rows (complete rows only)."""
    vae = every.get("vae", [])
    out = {}
    for other in COMPARED_WITH:
        rows = every.get(other, [])
        if vae and rows and len(vae) == len(rows):
            diff = paired_auc_difference(vae, rows, n_boot=n_boot)
            if diff is not None:
                out[other] = diff
    return out


FINGERPRINT_FILE = "fingerprint.txt"


def _discard_stale_fold(fold_dir: Path, fold_fp: str, log) -> None:
    """Remove a fold folder (this benchmark's own output) left by a run on other data, folds, settings or code,
    so that it is recomputed instead of silently reused; say so.

    Args:
        fold_dir: ``<out>/<method>/fold_<k>``.
        fold_fp: this run's fingerprint of the fold.
        log: a print-like function.
    """
    if not fold_dir.is_dir():
        return
    recorded = fold_dir / FINGERPRINT_FILE
    if recorded.is_file() and recorded.read_text(encoding="utf-8").strip() == fold_fp:
        return
    log(f"{fold_dir}: left by another run (other data, folds, settings or code version): recomputed, not reused")
    shutil.rmtree(fold_dir)


def _all_results(out_dir: Path, n_folds: int) -> dict[str, list[dict]]:
    """Every finished (method, fold) under ``out_dir``, in the table's order."""
    out: dict[str, list[dict]] = {}
    for method in METHOD_LABELS:
        for k in range(n_folds):
            path = out_dir / method / f"fold_{k}" / "result.json"
            if path.is_file():
                out.setdefault(method, []).append(json.loads(path.read_text(encoding="utf-8")))
    return out
