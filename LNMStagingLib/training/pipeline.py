"""The whole learning pipeline on one training set of patients (one outer fold, or all data):

1. a stratified patient hold-out of the training patients for early stopping of the encoder;
2. the encoder: Gaussian VAE, Dirichlet VAE (+ EM-style fine-tuning with the patch classifier's BCE),
   a CNN trained from scratch (baseline), or none (size-only baseline);
3. synthetic positive patients (TorchIO augmentation of their patches, re-encoded) and oversampling;
4. inner patient-grouped stratified folds of the training patients choose the MIL hyperparameters (small
   grid), the number of epochs and the decision threshold; the test patients are never seen;
5. the MIL classifier retrained on all training patients for the chosen number of epochs, checked by the
   collapse and quality gate (:mod:`~LNMStagingLib.training.gate`; retrained with another seed when collapsed);
6. the patient probability: the mean of the inner-fold classifiers, each Platt-calibrated on its own
   held-out inner fold (calibration fitted on the model it is applied to), and the threshold chosen on the
   calibrated out-of-fold predictions; the heatmap and traversals explain that same mean (the final classifier
   is kept only for models without heads).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..bundle.format import training_set_sha256
from ..data.dataset import PatchDataset
from ..data.splits import holdout_split, patient_folds
from ..models.calibration import fit_platt
from ..models.ensemble import node_means
from ..models.mil import PAPER_CLINICAL, ClinicalSpec, FeatureScaler, MILConfig, MILModel
from .cnn_train import train_cnn
from .config import PipelineConfig, split_overrides
from .context import RunContext
from .fitted import FittedModel
from .gate import RETRIES, SEED_STEP, judge, judge_head
from .mil_data import make_mil_data, synthetic_patients
from .mil_train import MILData, predict_mil, train_mil
from .seed import seed_everything
from .threshold import choose_threshold
from .vae_train import encode_images, patch_bce_loss, reconstruction_metrics, train_vae

CROSS_FITTED = "cross-fitted inner classifiers, each Platt-calibrated on its own held-out inner fold, averaged"


def _weak_slice_labels(dataset: PatchDataset, idx: np.ndarray) -> np.ndarray:
    """Slice labels where node labels exist, else the patient's label (weak)."""
    labels = dataset.slice_label[idx].copy()
    patient = dataset.patient_labels()
    unknown = labels < 0
    labels[unknown] = [patient[p] for p in dataset.patient_id[idx][unknown]]
    return labels


def _fit_patch_head(latent: torch.Tensor, feats: torch.Tensor, labels: np.ndarray, mil_config: MILConfig,
                    seed: int, epochs: int = 60) -> torch.nn.Module:
    """A patch classifier (the MIL patch MLP) on fixed latents, for the EM fine-tuning."""
    seed_everything(seed)
    model = MILModel(mil_config)
    head = model.patch_mlp
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-2)
    y = torch.as_tensor(labels).float()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        head.train()
        order = rng.permutation(len(y))
        for start in range(0, len(order), 256):
            idx = order[start : start + 256]
            if len(idx) < 2:
                continue
            logits = model.patch_logits(latent[idx], feats[idx])
            loss = F.binary_cross_entropy_with_logits(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def fit_encoder(dataset: PatchDataset, enc_train: np.ndarray, enc_val: np.ndarray, config: PipelineConfig,
                scaler: FeatureScaler, mil_config: MILConfig, context: RunContext) -> tuple[torch.nn.Module | None, dict]:
    """Train the encoder on the slices of ``enc_train`` patients, early-stopped on ``enc_val`` patients.

    Args:
        dataset: the patches.
        enc_train: patients whose slices train the encoder.
        enc_val: patients whose slices stop it early.
        config: the pipeline configuration (its ``method`` chooses the encoder).
        scaler: the feature scaler of the training patients (for the EM patch classifier).
        mil_config: the classifier template (for the EM patch classifier).
        context: progress, device, log; ``work_dir`` keeps resumable checkpoints.

    Returns:
        (encoder or None for the size-only method, training information).
    """
    workdir, progress, device, log = context.work_dir, context.progress, context.device, context.log
    tr = dataset.subset_patients(enc_train)
    va = dataset.subset_patients(enc_val)
    info: dict = {}
    if config.method == "size":
        return None, info
    t0 = time.time()
    if config.method == "cnn":
        ytr, yva = _weak_slice_labels(dataset, tr), _weak_slice_labels(dataset, va)
        model, hist = train_cnn(dataset.patches[tr], ytr, dataset.patches[va], yva, config, context)
        info["cnn"] = hist
        info["encoder_seconds"] = time.time() - t0
        return model.cpu(), info
    vae_config = replace(config.vae, kind="dirichlet" if config.method == "dirvae" else "gaussian")
    xtr = torch.as_tensor(dataset.patches[tr])
    xva = torch.as_tensor(dataset.patches[va])
    ckpt = (workdir / "vae_checkpoint") if workdir else None
    model, hist = train_vae(xtr, xva, vae_config, config.vae_train, ckpt, progress, device,
                            description=f"{config.method.upper()}", log=log)
    log(f"  {config.method}: VAE stopped after {hist['epochs_run']} epochs, best {hist['best_epoch']} "
        f"(val loss {hist['best_val_loss']:.4f}) in {time.time() - t0:.0f}s")
    info["vae"] = {k: hist[k] for k in ("best_epoch", "epochs_run", "best_val_loss", "train_seconds")}
    feats_tr = torch.as_tensor(scaler.transform(dataset.features[tr]))
    labels_tr = _weak_slice_labels(dataset, tr)
    for r in range(config.em_rounds):
        latent = encode_images(model, xtr)
        head = _fit_patch_head(latent, feats_tr, labels_tr, mil_config, config.seed + r).to(device)
        em_train = replace(config.vae_train, epochs=config.em_epochs, min_epochs=config.em_epochs,
                           lr=config.vae_train.lr * 0.5, seed=config.vae_train.seed + 17 + r)
        loss_fn = patch_bce_loss(head.patch_logits, feats_tr, torch.as_tensor(labels_tr), config.em_weight)
        em_ckpt = (workdir / f"em_checkpoint_{r}") if workdir else None
        model, em_hist = train_vae(xtr, xva, vae_config, em_train, em_ckpt, progress, device,
                                   description=f"EM {r + 1}", classifier_loss=loss_fn,
                                   initial_state=model.state_dict(), start_annealed=True, log=log)
        log(f"  {config.method}: EM round {r + 1} done (val loss {em_hist['best_val_loss']:.4f})")
        info.setdefault("em", []).append({k: em_hist[k] for k in ("best_epoch", "epochs_run", "best_val_loss",
                                                                  "train_seconds")})
    info["encoder_seconds"] = time.time() - t0
    model = model.cpu().eval()
    info["reconstruction_val"] = reconstruction_metrics(model, xva)
    return model, info


# ------------------------------------------------------------------------------------------ fit
def _node_predictions(patch_prob: np.ndarray, data: MILData) -> tuple[list[int], list[float]]:
    """(label, mean patch probability) of every labelled node in the bags (node labels where known)."""
    ys, ps = [], []
    if data.patch_labels is None:
        return ys, ps
    valid = data.valid.numpy()
    nodes = data.node_index.numpy()
    labels = data.patch_labels.numpy()
    for b in range(valid.shape[0]):
        ids, means = node_means(patch_prob[b][valid[b]], nodes[b][valid[b]])
        for n, mean in zip(ids, means, strict=True):
            label = labels[b][valid[b] & (nodes[b] == n)][0]
            if label >= 0:
                ys.append(int(label))
                ps.append(float(mean))
    return ys, ps


def fit(dataset: PatchDataset, train_patients, config: PipelineConfig, context: RunContext | None = None,
        encoder: torch.nn.Module | None = None) -> FittedModel:
    """Fit encoder + MIL on ``train_patients`` only (see the module docstring).

    Args:
        dataset: the patches.
        train_patients: the patients to learn from (test patients are never passed).
        config: the pipeline configuration.
        context: progress, device, log and the work folder of the encoder's checkpoints (default: progress bars,
            printing, CPU, no checkpoints).
        encoder: a VAE trained before (e.g. ``lnmstaging train --stage vae``): only the classifier is trained.

    Returns:
        The :class:`FittedModel`.
    """
    context = context or RunContext()
    device, log = context.device, context.log
    seed_everything(config.seed)
    train_patients = np.asarray(sorted(set(np.asarray(list(train_patients)).tolist())))
    labels = dataset.patient_labels()
    y_train = np.asarray([labels[p] for p in train_patients])
    train_idx = dataset.subset_patients(train_patients)
    scaler = FeatureScaler.fit(dataset.feature_names, dataset.features[train_idx])
    base_mil = dict(config.mil)
    latent_dim = 1
    if config.method in ("vae", "dirvae"):
        latent_dim = config.vae.latent_dim
    if "clinical" in base_mil:
        base_mil["clinical"] = tuple(ClinicalSpec(**c) if isinstance(c, dict) else c for c in base_mil["clinical"])
    elif dataset.clinical:
        base_mil["clinical"] = PAPER_CLINICAL
    mil_template = MILConfig(latent_dim=latent_dim, feature_names=dataset.feature_names,
                             max_patches=config.max_patches, use_latent=config.method != "size", **base_mil)
    specs = mil_template.clinical if mil_template.use_clinical else ()

    enc_train, enc_val = holdout_split(train_patients, y_train, config.val_fraction, config.seed)
    if encoder is None:
        encoder, info = fit_encoder(dataset, enc_train, enc_val, config, scaler, mil_template, context)
    else:
        encoder, info = encoder.cpu().eval(), {"encoder": "given"}
    if config.method == "cnn":
        mil_template = replace(mil_template, latent_dim=encoder.feature_dim)
    latent = None if encoder is None else encode_images(encoder, torch.as_tensor(dataset.patches))

    t0 = time.time()
    data = make_mil_data(dataset, train_patients, latent, scaler, config.max_patches, specs)
    synth, sources = synthetic_patients(dataset, train_patients, config.synthetic_patients, encoder, scaler,
                                        config.max_patches, config.seed + 7, specs)

    # inner folds: hyperparameters, epochs and threshold (the outer test patients are not in train_patients)
    inner = patient_folds(train_patients, y_train, config.inner_folds, config.seed + 101)
    position = {p: i for i, p in enumerate(train_patients)}
    results = []
    for gi, overrides in enumerate(config.mil_grid or [{}]):
        mil_over, train_over = split_overrides(overrides)
        mil_config = replace(mil_template, **mil_over)
        train_config = replace(config.mil_train, **train_over)
        oof = np.full(len(train_patients), np.nan)
        epochs, aucs, node_y, node_p, models, held_out = [], [], [], [], [], []
        for fi, (itr, iva) in enumerate(inner):
            tr_rows = [position[p] for p in itr]
            va_rows = [position[p] for p in iva]
            parts = [data.subset(tr_rows)]
            if synth is not None:
                keep = np.flatnonzero(np.isin(sources, itr))
                if len(keep):
                    parts.append(synth.subset(keep))
            model, hist = train_mil(MILData.concat(parts), data.subset(va_rows), mil_config,
                                    replace(train_config, seed=config.seed + fi), device)
            val_data = data.subset(va_rows)
            out = predict_mil(model, val_data, device)
            models.append(model.cpu().eval())
            held_out.append(va_rows)
            oof[va_rows] = out["final"]
            ny, npred = _node_predictions(out["patch_prob"], val_data)
            node_y.extend(ny)
            node_p.extend(npred)
            epochs.append(hist["best_epoch"] + 1)
            finite = [a for a in hist["val_auc"] if np.isfinite(a)]
            aucs.append(max(finite) if finite else float("nan"))
        from sklearn.metrics import roc_auc_score

        pooled = float(roc_auc_score(y_train, oof)) if len(np.unique(y_train)) == 2 else float("nan")
        results.append({"overrides": overrides, "inner_pooled_auc": pooled, "inner_epochs": epochs,
                        "inner_best_auc": aucs, "oof": oof, "node_y": node_y, "node_p": node_p,
                        "models": models, "held_out_rows": held_out})
        log(f"  {config.method}: MIL grid {gi} {overrides}: inner pooled AUC {pooled:.3f}, epochs {epochs}")
    best = max(results, key=lambda r: (np.nan_to_num(r["inner_pooled_auc"], nan=-1.0)))
    # the model applied is the mean of the inner-fold classifiers, each Platt-calibrated on its own held-out
    # patients: the calibration is fitted on the very model it is applied to (a calibration fitted on the inner
    # classifiers' predictions but applied to the final classifier, retrained on every patient, missed: the
    # final one keeps part of its own scale). The threshold is chosen on the calibrated out-of-fold predictions.
    # the heads give the output, so the gate judges each on its own held-out patients; a failing head is dropped
    head_verdicts = [judge_head(best["oof"][rows], y_train[rows]) for rows in best["held_out_rows"]]
    for index, verdict in enumerate(head_verdicts):
        if not verdict["passed"]:
            log(f"  {config.method}: quality gate: inner classifier {index} dropped ({'; '.join(verdict['reasons'])})")
    kept_heads = [i for i, verdict in enumerate(head_verdicts) if verdict["passed"]]
    held_out_rows = [best["held_out_rows"][i] for i in kept_heads]
    head_calibrations = [fit_platt(y_train[rows], best["oof"][rows]) for rows in held_out_rows]
    scored = np.concatenate(held_out_rows) if held_out_rows else np.arange(len(y_train))
    calibrated_oof = np.empty(len(y_train))
    for rows, head in zip(held_out_rows, head_calibrations, strict=True):
        calibrated_oof[rows] = head.apply(best["oof"][rows])
    if not held_out_rows:  # no head left: the model fails the gate below; a threshold is still recorded
        calibrated_oof = best["oof"]
    threshold = choose_threshold(y_train[scored], calibrated_oof[scored])
    # the final classifier's own calibration (pooled out-of-fold Platt): recorded, used only without heads
    calibration = fit_platt(y_train, best["oof"])
    node_threshold = choose_threshold(best["node_y"], best["node_p"]) if len(set(best["node_y"])) == 2 else 0.5
    n_epochs = int(np.median(best["inner_epochs"]))
    mil_over, train_over = split_overrides(best["overrides"])
    mil_config = replace(mil_template, **mil_over)
    parts = [data] + ([synth] if synth is not None else [])
    attempts = []
    for attempt in range(RETRIES + 1):
        # a collapse comes from too short a fixed retrain (inner folds that peaked at epoch 1) or a bad start:
        # each retry takes another seed and twice the epochs
        seed, epochs = config.seed + attempt * SEED_STEP, n_epochs * 2**attempt
        mil, _ = train_mil(MILData.concat(parts), None, mil_config,
                           replace(config.mil_train, **train_over, seed=seed), device, fixed_epochs=epochs)
        verdict = judge(predict_mil(mil, data, device)["final"], best["oof"], best["inner_pooled_auc"], seed)
        verdict["epochs"] = epochs
        attempts.append(verdict)
        if verdict["passed"] or not verdict["retry"]:
            break
        log(f"  {config.method}: quality gate: {'; '.join(verdict['reasons'])}; retrained with seed "
            f"{config.seed + (attempt + 1) * SEED_STEP} for {2 * epochs} epochs")
    # with heads, the model passes when the recipe ranks unseen patients (the final classifier's quality check)
    # and at least one head passed; the final classifier's spread no longer matters (it gives no output)
    failures = [reason for reason in attempts[-1]["reasons"] if not attempts[-1]["quality_ok"]]
    failures += [] if kept_heads else ["no inner classifier passed"]
    gate_ok = not failures
    if not gate_ok:
        log(f"  {config.method}: quality gate FAILED ({'; '.join(failures)})")
    selection = {
        "overrides": best["overrides"], "epochs": n_epochs, "threshold": threshold,
        "threshold_source": "Youden J on the pooled inner-fold out-of-fold patient predictions, each calibrated by "
                            "its own inner classifier's Platt scaling",
        "calibration": calibration.to_dict(),
        "calibration_strategy": CROSS_FITTED,
        "calibration_source": "the patient probability is the mean of the inner-fold classifiers, each "
                              "Platt-calibrated on its own held-out inner fold, and the explanations use the same "
                              "classifiers; the final classifier (retrained on every training patient) gives no "
                              "output",
        "head_calibrations": [c.to_dict() for c in head_calibrations],
        "quality_gate": {"passed": gate_ok, "attempts": attempts, "heads": head_verdicts,
                         "dropped_heads": [i for i in range(len(head_verdicts)) if i not in kept_heads]},
        "node_threshold": node_threshold,
        "grid": [{k: v for k, v in r.items() if k not in ("oof", "node_y", "node_p", "models", "held_out_rows")} for r in results],
        # the inner-fold classifiers of the chosen hyperparameters are kept with the model: each one's held-out
        # patients are recorded, so its own predictions can be calibrated on patients it never saw
        "inner_validation": [sorted(map(str, inner[i][1])) for i in kept_heads],
        "encoder_train_patients": len(enc_train), "encoder_val_patients": len(enc_val),
        "training_patients_sha256": training_set_sha256(train_patients),
        "mil_seconds": time.time() - t0,
    }
    return FittedModel(config.method, encoder, mil.cpu().eval(), scaler, threshold, selection, info, calibration,
                       inner_mils=[best["models"][i] for i in kept_heads], head_calibrations=head_calibrations)
