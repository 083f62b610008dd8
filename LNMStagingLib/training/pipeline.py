"""The whole learning pipeline on one training set of patients (one outer fold, or all data):

1. a stratified patient hold-out of the training patients for early stopping of the encoder;
2. the encoder: Gaussian VAE, Dirichlet VAE (+ EM-style fine-tuning with the patch classifier's BCE),
   a CNN trained from scratch (baseline), or none (size-only baseline);
3. synthetic positive patients (TorchIO augmentation of their patches, re-encoded) and oversampling;
4. inner patient-grouped stratified folds of the training patients choose the MIL hyperparameters (small
   grid), the number of epochs and the decision threshold; the test patients are never seen;
5. the MIL classifier retrained on all training patients for the chosen number of epochs.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.bags import bag_slots
from ..data.dataset import PatchDataset
from ..data.predict import predict_dataset
from ..data.splits import holdout_split, patient_folds
from ..fromdict import from_dict
from ..models.cnn import CNNConfig, CNNEncoder
from ..models.ensemble import Ensemble, gather_slots
from ..models.member import EncoderMember
from ..models.mil import PAPER_CLINICAL, ClinicalSpec, FeatureScaler, MILConfig, MILModel, clinical_vector
from ..models.vae import VAE, VAEConfig, VAELossConfig
from .mil_train import MILData, MILTrainConfig, predict_mil, train_mil
from .seed import seed_everything
from .threshold import choose_threshold
from .vae_train import VAETrainConfig, encode_images, patch_bce_loss, reconstruction_metrics, train_vae

METHODS = ("size", "cnn", "vae", "dirvae")
# what a fold result.json keeps of the predictions (the per-slice probabilities would make it large)
FITTED_PREDICTION_KEYS = ("patient_id", "patient_prob", "patient_label", "patient_mlp", "patient_max", "nodule_id",
                          "nodule_prob", "nodule_label", "nodule_patient")


@dataclass
class PipelineConfig:
    method: str = "vae"  # "vae" (Gaussian VAE-MLP), "dirvae", "cnn" (CNN + MIL head), "size" (size-only)
    vae: VAEConfig = field(default_factory=VAEConfig)
    vae_train: VAETrainConfig = field(default_factory=VAETrainConfig)
    em_rounds: int = 0  # EM-style fine-tuning rounds (VAE loss + patch classifier BCE)
    em_epochs: int = 4
    em_weight: float = 1.0
    cnn: CNNConfig = field(default_factory=CNNConfig)
    cnn_epochs: int = 20
    cnn_lr: float = 2e-3
    cnn_patience: int = 6
    mil: dict = field(default_factory=dict)  # MILConfig overrides (eta, hidden sizes, dropout, mode ...)
    mil_train: MILTrainConfig = field(default_factory=MILTrainConfig)
    mil_grid: list = field(default_factory=lambda: [{"eta": 0.8}, {"eta": 0.5}])  # chosen on inner folds
    inner_folds: int = 5
    synthetic_patients: int = 25
    max_patches: int = 15
    val_fraction: float = 0.15
    seed: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["vae"] = self.vae.to_dict()
        data["cnn"] = self.cnn.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PipelineConfig:
        def vae_train(values: dict) -> VAETrainConfig:
            return from_dict(VAETrainConfig, values, {"loss": lambda loss: from_dict(VAELossConfig, loss)})

        config = from_dict(cls, data, {
            "vae": VAEConfig.from_dict, "vae_train": vae_train, "cnn": CNNConfig.from_dict,
            "mil_train": lambda values: from_dict(MILTrainConfig, values),
        })
        if config.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        return config


def _split_overrides(overrides: dict) -> tuple[dict, dict]:
    mil_keys = {f.name for f in fields(MILConfig)}
    train_keys = {f.name for f in fields(MILTrainConfig)}
    m = {k: v for k, v in overrides.items() if k in mil_keys}
    t = {k: v for k, v in overrides.items() if k in train_keys}
    unknown = set(overrides) - set(m) - set(t)
    if unknown:
        raise ValueError(f"unknown MIL hyperparameters {sorted(unknown)}")
    return m, t


# ------------------------------------------------------------------------------------------ fitted model
@dataclass
class FittedModel:
    method: str
    encoder: torch.nn.Module | None
    mil: MILModel
    scaler: FeatureScaler
    threshold: float
    selection: dict
    history: dict

    @property
    def mil_config(self) -> MILConfig:
        return self.mil.config

    def ensemble(self) -> Ensemble:
        """This model as a one-member :class:`Ensemble` (the forward path of bundles and evaluation)."""
        return Ensemble([EncoderMember(self.encoder, self.mil.eval())], [self.scaler], self.threshold)

    def predict(self, dataset: PatchDataset, patients=None) -> dict:
        """Slice, nodule and patient probabilities for ``patients`` (default: all); see
        :func:`~LNMStagingLib.data.predict.predict_dataset`."""
        pred = predict_dataset(self.ensemble(), dataset, patients, batch_size=512)
        return {key: pred[key] for key in FITTED_PREDICTION_KEYS}

    # -- persistence (safetensors + JSON, never pickle)
    def save(self, directory: Path, pipeline: PipelineConfig) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.mil.state_dict().items()}, str(directory / "mil.safetensors"))
        if self.encoder is not None:
            save_file({k: v.contiguous() for k, v in self.encoder.state_dict().items()},
                      str(directory / "encoder.safetensors"))
        meta = {"method": self.method, "mil": self.mil.config.to_dict(), "scaler": self.scaler.to_dict(),
                "threshold": self.threshold, "selection": self.selection, "history": self.history,
                "pipeline": pipeline.to_dict()}
        (directory / "fitted.json").write_text(json.dumps(meta, indent=1, default=float), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> FittedModel:
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / "fitted.json").read_text(encoding="utf-8"))
        pipeline = PipelineConfig.from_dict(meta["pipeline"])
        mil = MILModel(MILConfig.from_dict(meta["mil"]))
        mil.load_state_dict(load_file(str(directory / "mil.safetensors")))
        encoder = new_encoder(meta["method"], pipeline)
        if encoder is not None:
            encoder.load_state_dict(load_file(str(directory / "encoder.safetensors")))
            encoder.eval()
        mil.eval()
        return cls(meta["method"], encoder, mil, FeatureScaler.from_dict(meta["scaler"]), float(meta["threshold"]),
                   meta["selection"], meta["history"])


def new_encoder(method: str, config: PipelineConfig) -> torch.nn.Module | None:
    """An untrained encoder of ``method`` ("size": none; "cnn"; "vae"/"dirvae": Gaussian/Dirichlet VAE)."""
    if method == "size":
        return None
    if method == "cnn":
        return CNNEncoder(config.cnn)
    vae_config = replace(config.vae, kind="dirichlet" if method == "dirvae" else "gaussian")
    return VAE(vae_config)


# ------------------------------------------------------------------------------------------ data helpers
def _clinical(dataset: PatchDataset, patients, specs) -> torch.Tensor | None:
    if not specs:
        return None
    table = dataset.clinical or {}
    return torch.as_tensor(np.stack([clinical_vector(specs, table.get(str(p))) for p in patients]))


def make_mil_data(dataset: PatchDataset, patients, latent: torch.Tensor | None, scaler: FeatureScaler,
                  max_patches: int, clinical_specs=()) -> MILData:
    """Bags of ``patients`` (largest slices first, padded) as :class:`MILData`."""
    patients = np.asarray(list(patients))
    slots, nodes = bag_slots(dataset.patient_id, dataset.nodule_id, dataset.area_mm2, patients, max_patches)
    feats = gather_slots(scaler.transform(dataset.features), slots)
    lat = None if latent is None else torch.as_tensor(gather_slots(latent.numpy(), slots))
    labels = dataset.patient_labels()
    return MILData(
        latent=lat,
        features=torch.as_tensor(feats),
        valid=torch.as_tensor(slots >= 0),
        node_index=torch.as_tensor(nodes),
        labels=torch.as_tensor([float(labels[p]) for p in patients]),
        patch_labels=torch.as_tensor(np.where(slots >= 0, gather_slots(dataset.slice_label, slots), -1)),
        clinical=_clinical(dataset, patients, clinical_specs),
    )


def augment_patches(patches: np.ndarray, masks: np.ndarray, seed: int) -> np.ndarray:
    """TorchIO augmentation of (P, 1, S, S) lesion-only patches: flips, translation, Gaussian noise, gamma,
    bias field; the result is re-masked with the (moved) lesion mask so that it stays lesion-only."""
    import torchio as tio

    torch.manual_seed(seed)
    spatial = tio.Compose([tio.RandomFlip(axes=(0, 1), flip_probability=0.5),
                           tio.RandomAffine(scales=0, degrees=0, translation=(2, 2, 0), p=0.7)])
    intensity = tio.Compose([tio.RandomGamma(log_gamma=(-0.2, 0.2), p=0.7),
                             tio.RandomBiasField(coefficients=0.2, order=2, p=0.5),
                             tio.RandomNoise(std=(0, 0.03), p=0.7)])
    out = np.zeros_like(patches)
    for i in range(patches.shape[0]):
        subject = tio.Subject(
            image=tio.ScalarImage(tensor=torch.as_tensor(patches[i][..., None], dtype=torch.float32)),
            mask=tio.LabelMap(tensor=torch.as_tensor(masks[i][None, ..., None].astype(np.int16))),
        )
        subject = spatial(subject)
        image = intensity(subject["image"]).data[0, ..., 0].numpy()
        mask = subject["mask"].data[0, ..., 0].numpy() > 0
        out[i, 0] = np.clip(image, 0, 1) * mask
    return out


def synthetic_patients(dataset: PatchDataset, patients, n: int, encoder, scaler: FeatureScaler,
                       max_patches: int, seed: int, clinical_specs=()) -> tuple[MILData | None, np.ndarray]:
    """``n`` synthetic positive patients: augmented copies of randomly drawn positive training patients.
    Returns (bags, source patient of each) so that inner folds keep a copy with its source."""
    labels = dataset.patient_labels()
    positives = np.asarray([p for p in patients if labels[p] == 1])
    if n <= 0 or len(positives) == 0:
        return None, np.asarray([])
    rng = np.random.default_rng(seed)
    sources = positives[rng.integers(0, len(positives), n)]
    slots, nodes = bag_slots(dataset.patient_id, dataset.nodule_id, dataset.area_mm2, sources, max_patches)
    valid = slots >= 0
    flat = slots[valid]
    augmented = augment_patches(dataset.patches[flat], dataset.masks[flat], seed)
    lat = None
    if encoder is not None:
        z = encode_images(encoder, torch.as_tensor(augmented)).numpy()
        full = np.zeros((*slots.shape, z.shape[1]), dtype=np.float32)
        full[valid] = z
        lat = torch.as_tensor(full)
    feats = gather_slots(scaler.transform(dataset.features), slots)
    data = MILData(lat, torch.as_tensor(feats), torch.as_tensor(valid), torch.as_tensor(nodes),
                   torch.ones(n), torch.as_tensor(np.where(valid, gather_slots(dataset.slice_label, slots), -1)),
                   _clinical(dataset, sources, clinical_specs))
    return data, sources


# ------------------------------------------------------------------------------------------ encoders
def _train_cnn(train_x, train_y, val_x, val_y, config: PipelineConfig, progress: bool, device: str,
               checkpoint: Path | None) -> tuple[CNNEncoder, dict]:
    from sklearn.metrics import roc_auc_score

    seed_everything(config.seed)
    model = CNNEncoder(config.cnn).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.cnn_lr, weight_decay=1e-4)
    pos = float((train_y == 1).sum())
    pos_weight = torch.tensor((len(train_y) - pos) / max(pos, 1.0))
    rng = np.random.default_rng(config.seed)
    best, best_state, bad, history = -np.inf, copy.deepcopy(model.state_dict()), 0, {"val_auc": []}
    tx, ty = torch.as_tensor(train_x), torch.as_tensor(train_y).float()
    for epoch in tqdm(range(config.cnn_epochs), desc="CNN", disable=not progress, leave=False):
        model.train()
        order = rng.permutation(len(tx))
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            if len(idx) < 2:
                continue
            x = tx[idx].to(device)
            if rng.random() < 0.5:
                x = torch.flip(x, dims=[3])
            if rng.random() < 0.5:
                x = torch.flip(x, dims=[2])
            loss = F.binary_cross_entropy_with_logits(model(x), ty[idx].to(device), pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            p = torch.cat([model(torch.as_tensor(val_x[i : i + 512]).to(device)).cpu()
                           for i in range(0, len(val_x), 512)]).numpy()
        auc = roc_auc_score(val_y, p) if len(np.unique(val_y)) == 2 else -float(loss)
        history["val_auc"].append(float(auc))
        if auc > best:
            best, best_state, bad = auc, copy.deepcopy(model.state_dict()), 0
            history["best_epoch"] = epoch
        else:
            bad += 1
            if bad >= config.cnn_patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, history


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
                scaler: FeatureScaler, mil_config: MILConfig, workdir: Path | None, progress: bool,
                device: str, log) -> tuple[torch.nn.Module | None, dict]:
    """Train the encoder on the slices of ``enc_train`` patients, early-stopped on ``enc_val`` patients."""
    tr = dataset.subset_patients(enc_train)
    va = dataset.subset_patients(enc_val)
    info: dict = {}
    if config.method == "size":
        return None, info
    t0 = time.time()
    if config.method == "cnn":
        ytr, yva = _weak_slice_labels(dataset, tr), _weak_slice_labels(dataset, va)
        model, hist = _train_cnn(dataset.patches[tr], ytr, dataset.patches[va], yva, config, progress, device,
                                 None)
        info["cnn"] = hist
        info["encoder_seconds"] = time.time() - t0
        return model.cpu(), info
    vae_config = replace(config.vae, kind="dirichlet" if config.method == "dirvae" else "gaussian")
    xtr = torch.as_tensor(dataset.patches[tr])
    xva = torch.as_tensor(dataset.patches[va])
    ckpt = (workdir / "vae_checkpoint") if workdir else None
    model, hist = train_vae(xtr, xva, vae_config, config.vae_train, ckpt, progress, device,
                            description=f"{config.method.upper()}")
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
                                   initial_state=model.state_dict(), start_annealed=True)
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
        for n in np.unique(nodes[b][valid[b]]):
            sel = valid[b] & (nodes[b] == n)
            if labels[b][sel][0] >= 0:
                ys.append(int(labels[b][sel][0]))
                ps.append(float(patch_prob[b][sel].mean()))
    return ys, ps


def fit(dataset: PatchDataset, train_patients, config: PipelineConfig, workdir: Path | None = None,
        progress: bool = True, device: str = "cpu", log=print, encoder: torch.nn.Module | None = None) -> FittedModel:
    """Fit encoder + MIL on ``train_patients`` only (see the module docstring). With ``encoder`` given (a
    VAE trained before, e.g. ``lnmstaging train --stage vae``), only the classifier is trained."""
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
        encoder, info = fit_encoder(dataset, enc_train, enc_val, config, scaler, mil_template, workdir, progress,
                                    device, log)
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
        mil_over, train_over = _split_overrides(overrides)
        mil_config = replace(mil_template, **mil_over)
        train_config = replace(config.mil_train, **train_over)
        oof = np.full(len(train_patients), np.nan)
        epochs, aucs, node_y, node_p = [], [], [], []
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
                        "inner_best_auc": aucs, "oof": oof, "node_y": node_y, "node_p": node_p})
        log(f"  {config.method}: MIL grid {gi} {overrides}: inner pooled AUC {pooled:.3f}, epochs {epochs}")
    best = max(results, key=lambda r: (np.nan_to_num(r["inner_pooled_auc"], nan=-1.0)))
    threshold = choose_threshold(y_train, best["oof"])
    node_threshold = choose_threshold(best["node_y"], best["node_p"]) if len(set(best["node_y"])) == 2 else 0.5
    n_epochs = int(np.median(best["inner_epochs"]))
    mil_over, train_over = _split_overrides(best["overrides"])
    mil_config = replace(mil_template, **mil_over)
    parts = [data] + ([synth] if synth is not None else [])
    mil, _ = train_mil(MILData.concat(parts), None, mil_config,
                       replace(config.mil_train, **train_over, seed=config.seed), device, fixed_epochs=n_epochs)
    selection = {
        "overrides": best["overrides"], "epochs": n_epochs, "threshold": threshold,
        "threshold_source": "Youden J on pooled inner-fold out-of-fold patient predictions",
        "node_threshold": node_threshold,
        "grid": [{k: v for k, v in r.items() if k not in ("oof", "node_y", "node_p")} for r in results],
        "encoder_train_patients": len(enc_train), "encoder_val_patients": len(enc_val),
        "mil_seconds": time.time() - t0,
    }
    return FittedModel(config.method, encoder, mil.cpu().eval(), scaler, threshold, selection, info)
