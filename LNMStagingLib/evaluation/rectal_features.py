"""`lnmstaging benchmark rectal-features`: learned node-feature models against ESGAR on the rectal T2 reads.

Repeated nested patient-grouped cross-validation (default 5 repeats x 5 outer folds, 3 inner folds; folds
stratified by N status x therapy): the inner folds of each outer training part choose everything (MIL
head size and mixing, epochs, logistic C, thresholds); each outer test fold is predicted once per repeat.
Per repeat the out-of-fold predictions of all 120 patients give AUC and balanced accuracy (at the
inner-chosen thresholds); figures are means over repeats. ESGAR (a yes/no call per patient, so its AUC
equals its balanced accuracy) needs no fitting. Intervals: a seeded paired bootstrap over patients (the
same resampled patients for every method and repeat), of each figure and of each difference to ESGAR.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.rectal import STUDY, RectalPatient, load_rectal
from ..data.splits import patient_folds
from ..io.atomic import atomic_directory
from .criteria_benchmark import patient_rule
from .metrics import fast_auc
from .rectal_models import MILSettings, fit_predict_logistic, fit_predict_mil, strata

MARKER = "features.json"
LEARNED = {"mil": "MIL head, node features only (reads one-hot + short axis; age, sex, therapy)",
           "logistic": "logistic regression, largest node's features + age, sex, therapy"}
REFERENCES = {"esgar_2016": "ESGAR 2016 primary-staging rule (radiologists' reads)",
              "esgar_2016_by_therapy": "ESGAR 2016 by therapy: primary rule before, restaging rule (>= 5 mm) after "
                                          "neoadjuvant therapy"}


@dataclass(frozen=True)
class FeatureBenchmarkConfig:
    """Cross-validation and bootstrap settings."""

    repeats: int = 5
    outer: int = 5
    inner: int = 3
    n_boot: int = 2000
    seed: int = 0
    quick: bool = False


def cross_validate(patients: list[RectalPatient], config: FeatureBenchmarkConfig,
                   log=print) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities and calls of the learned models, per repeat.

    Args:
        patients: all patients.
        config: the folds and seeds.
        log: progress messages.

    Returns:
        ``{"<method>_prob": (R, N), "<method>_call": (R, N) bool, "fold": (R, N)}`` for mil and logistic.
    """
    n, r = len(patients), config.repeats
    out = {f"{m}_{kind}": np.zeros((r, n), dtype=bool if kind == "call" else np.float64)
           for m in LEARNED for kind in ("prob", "call")}
    out["fold"] = np.zeros((r, n), dtype=np.int64)
    out["choices"] = []
    settings = MILSettings.quick() if config.quick else MILSettings()
    for rep in range(r):
        folds = patient_folds(np.arange(n), strata(patients), config.outer, config.seed + 1000 * rep)
        for k, (tr, te) in enumerate(folds):
            t0 = time.time()
            train, test = [patients[i] for i in tr], [patients[i] for i in te]
            seed = config.seed + 1000 * rep + 10 * k
            mil_p, mil_t, mil_choice = fit_predict_mil(train, test, settings, config.inner, seed)
            lr_p, lr_t, lr_choice = fit_predict_logistic(train, test, config.inner, seed)
            out["mil_prob"][rep, te], out["mil_call"][rep, te] = mil_p, mil_p >= mil_t
            out["logistic_prob"][rep, te], out["logistic_call"][rep, te] = lr_p, lr_p >= lr_t
            out["fold"][rep, te] = k
            out["choices"].append({"repeat": rep, "fold": k, "mil": mil_choice, "logistic": lr_choice})
            log(f"repeat {rep + 1}/{r} fold {k + 1}/{len(folds)}: {time.time() - t0:.1f} s")
    return out


def _balanced_accuracy(y: np.ndarray, call: np.ndarray) -> float:
    y, call = y.astype(bool), call.astype(bool)
    if y.all() or (~y).all():
        return float("nan")
    return float((call[y].mean() + (~call[~y]).mean()) / 2)


def _figures(y: np.ndarray, prob: np.ndarray, call: np.ndarray, idx: np.ndarray) -> tuple[float, float]:
    """Mean over repeats of AUC and balanced accuracy on patients ``idx`` (``prob``/``call``: (R, N))."""
    auc = np.mean([fast_auc(y[idx], p[idx]) for p in prob])
    ba = np.mean([_balanced_accuracy(y[idx], c[idx]) for c in call])
    return float(auc), float(ba)


def compare(y: np.ndarray, methods: dict[str, tuple[np.ndarray, np.ndarray]], baseline: str, n_boot: int,
            seed: int) -> dict[str, dict]:
    """Each method's AUC and balanced accuracy, and its differences to ``baseline``, with paired bootstrap
    95 % intervals (percentile; the same resampled patients for every method).

    Args:
        y: labels (N,).
        methods: ``{name: (probabilities (R, N), calls (R, N))}``.
        baseline: the method every other one is compared with.
        n_boot: bootstrap resamples.
        seed: the bootstrap seed.

    Returns:
        ``{name: {"auc", "auc_ci95", "balanced_accuracy", "balanced_accuracy_ci95", "auc_per_repeat", ...,
        and for non-baselines "auc_minus_<baseline>" (+ ci95) and "balanced_accuracy_minus_<baseline>"}}``.
    """
    every = np.arange(len(y))
    point = {m: _figures(y, p, c, every) for m, (p, c) in methods.items()}
    rng = np.random.default_rng(seed)
    samples = {m: [] for m in methods}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        for m, (p, c) in methods.items():
            samples[m].append(_figures(y, p, c, idx))
    out = {}
    base = np.asarray(samples[baseline])
    for m, (p, c) in methods.items():
        s = np.asarray(samples[m])
        row = {"auc": point[m][0], "auc_ci95": np.percentile(s[:, 0], [2.5, 97.5]).tolist(),
               "balanced_accuracy": point[m][1], "balanced_accuracy_ci95": np.percentile(s[:, 1], [2.5, 97.5]).tolist(),
               "auc_per_repeat": [fast_auc(y, pr) for pr in p],
               "balanced_accuracy_per_repeat": [_balanced_accuracy(y, cr) for cr in c]}
        if m != baseline:
            for j, key in enumerate(("auc", "balanced_accuracy")):
                diff = s[:, j] - base[:, j]
                row[f"{key}_minus_{baseline}"] = point[m][j] - point[baseline][j]
                row[f"{key}_minus_{baseline}_ci95"] = np.percentile(diff, [2.5, 97.5]).tolist()
        out[m] = row
    return out


def _markdown(result: dict) -> str:
    rows = result["comparison"]
    lines = ["# Learned node-feature models vs ESGAR on the rectal T2 node reads", "",
             f"Data: {result['data']['patients']} patients, {result['data']['nodes']} T2 nodes (`rectal-t2-nodes`); "
             f"study: {STUDY}.", "",
             f"Protocol: {result['config']['repeats']} repeats x {result['config']['outer']} outer folds, "
             f"{result['config']['inner']} inner folds choosing everything (patient-grouped, stratified by N status "
             "x therapy); figures = mean over repeats of the pooled out-of-fold AUC and balanced accuracy "
             f"(threshold chosen on inner folds); 95% intervals: paired patient bootstrap ({result['config']['n_boot']} "
             f"resamples, seed {result['config']['seed']}). ESGAR is a yes/no call: its AUC equals its balanced accuracy.",
             "", f"Command: `{result['command']}` ({result['wall_time_min']:.1f} min on {result['machine']})", "",
             "| method | AUC (95% CI) | AUC - ESGAR (95% CI) | balanced accuracy (95% CI) | BA - ESGAR (95% CI) |",
             "|---|---|---|---|---|"]

    def ci(v, c):
        return f"{v:.3f} ({c[0]:.3f} to {c[1]:.3f})"

    for name, row in rows.items():
        label = {**LEARNED, **REFERENCES}[name]
        d_auc = ci(row["auc_minus_esgar_2016"], row["auc_minus_esgar_2016_ci95"]) if "auc_minus_esgar_2016" in row else "-"
        d_ba = (ci(row["balanced_accuracy_minus_esgar_2016"], row["balanced_accuracy_minus_esgar_2016_ci95"])
                if "balanced_accuracy_minus_esgar_2016" in row else "-")
        lines.append(f"| `{name}`: {label} | {ci(row['auc'], row['auc_ci95'])} | {d_auc} | "
                     f"{ci(row['balanced_accuracy'], row['balanced_accuracy_ci95'])} | {d_ba} |")
    lines += ["", f"Verdict: {result['verdict']}", ""]
    return "\n".join(lines)


def _verdict(comparison: dict) -> str:
    """Ahead = the whole 95 % interval of the difference to ESGAR above zero, on AUC and balanced accuracy."""
    def above(m, key):
        return comparison[m][f"{key}_minus_esgar_2016_ci95"][0] > 0

    def below(m, key):
        return comparison[m][f"{key}_minus_esgar_2016_ci95"][1] < 0

    ahead = [m for m in LEARNED if above(m, "auc") and above(m, "balanced_accuracy")]
    if ahead:
        return f"{', '.join(ahead)} ahead of ESGAR on AUC and balanced accuracy (both intervals above zero)."
    worse = [f"{m} ({', '.join(k for k in ('auc', 'balanced_accuracy') if below(m, k))})" for m in LEARNED
             if below(m, "auc") or below(m, "balanced_accuracy")]
    text = ("no learned model is ahead of ESGAR: for none is the interval of the difference above zero on both AUC "
            "and balanced accuracy, so no bundle is shipped.")
    if worse:
        text += " Significantly below ESGAR (interval under zero): " + "; ".join(worse) + "."
    return text


def plot_repeats_roc(y: np.ndarray, probabilities: dict[str, np.ndarray], esgar_call: np.ndarray, path: Path) -> Path:
    """Out-of-fold ROC curves of every repeat (one colour per method) and ESGAR's single operating point.

    Args:
        y: labels (N,).
        probabilities: ``{method: (R, N)}``.
        esgar_call: ESGAR's calls (N,).
        path: the PNG to write.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.8, 4.8), dpi=120)
    for colour, (name, prob) in zip(("tab:blue", "tab:orange"), probabilities.items(), strict=False):
        aucs = [fast_auc(y, p) for p in prob]
        for r, p in enumerate(prob):
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, color=colour, lw=0.9, alpha=0.6,
                    label=f"{name}, {len(prob)} repeats (AUC {min(aucs):.3f}-{max(aucs):.3f})" if r == 0 else None)
    call = esgar_call.astype(bool)
    sens, spec = call[y == 1].mean(), (~call[y == 0]).mean()
    ax.plot([1 - spec], [sens], "o", color="crimson", label=f"ESGAR 2016 (sens {sens:.3f}, spec {spec:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1),
           title="Rectal T2 reads: out-of-fold ROC per repeat")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run_feature_benchmark(data: str | Path, out: str | Path, config: FeatureBenchmarkConfig, command: str,
                          threads: int = 1, log=print) -> Path:
    """Run the comparison and write ``features.json``, ``features.md``, ``predictions.csv`` and an ROC figure.

    Args:
        data: the ``rectal-t2-nodes`` folder.
        out: the output folder (new, empty or an earlier output of this command).
        config: folds, repeats, bootstrap.
        command: the command line (recorded).
        threads: torch threads.
        log: progress messages.

    Returns:
        The path of ``features.md``.
    """
    patients = load_rectal(data)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.time()
    try:
        cv = cross_validate(patients, config, log)
    finally:
        torch.set_num_threads(previous)
    y = np.asarray([p.n_status for p in patients])
    methods = {m: (cv[f"{m}_prob"], cv[f"{m}_call"]) for m in LEARNED}
    for name in REFERENCES:
        rule = patient_rule(name)
        calls = np.tile(np.asarray([rule(p) for p in patients]), (config.repeats, 1))
        methods[name] = (calls.astype(np.float64), calls)
    comparison = compare(y, methods, "esgar_2016", config.n_boot, config.seed)
    result = {
        "command": command, "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {"folder": str(data), "patients": len(patients), "nodes": sum(len(p.nodes) for p in patients),
                 "study": STUDY},
        "config": asdict(config), "methods": {**LEARNED, **REFERENCES}, "comparison": comparison,
        "choices": cv["choices"], "wall_time_min": (time.time() - t0) / 60,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s)",
    }
    result["verdict"] = _verdict(comparison)
    rows = ["patient_id,n_status,therapy,repeat,fold,mil_prob,mil_call,logistic_prob,logistic_call"]
    for rep in range(config.repeats):
        for i, p in enumerate(patients):
            rows.append(f"{p.patient_id},{p.n_status},{p.therapy},{rep},{cv['fold'][rep, i]},"
                        f"{cv['mil_prob'][rep, i]:.6f},{int(cv['mil_call'][rep, i])},"
                        f"{cv['logistic_prob'][rep, i]:.6f},{int(cv['logistic_call'][rep, i])}")
    with atomic_directory(out, MARKER) as folder:
        (folder / MARKER).write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
        (folder / "features.md").write_text(_markdown(result), encoding="utf-8")
        (folder / "predictions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        plot_repeats_roc(y, {m: cv[f"{m}_prob"] for m in LEARNED}, methods["esgar_2016"][1][0],
                         folder / "features_roc.png")
    return Path(out) / "features.md"
