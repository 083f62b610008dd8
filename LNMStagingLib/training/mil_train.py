"""Multiple-instance classifier training on precomputed latent codes (weak patient supervision, optional
node supervision where node labels exist), with oversampling of positive patients."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.mil import MILConfig, MILModel
from .seed import seed_everything


@dataclass
class MILData:
    """Bags as tensors: latent (B, M, D) or None, features (B, M, F) normalised, valid (B, M) bool,
    node_index (B, M) long, clinical (B, 2C) or None, labels (B,) float, patch_labels (B, M) (-1 unknown)."""

    latent: torch.Tensor | None
    features: torch.Tensor
    valid: torch.Tensor
    node_index: torch.Tensor
    labels: torch.Tensor
    patch_labels: torch.Tensor | None = None
    clinical: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx) -> MILData:
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)

        def pick(t):
            return None if t is None else t[idx]

        return MILData(pick(self.latent), self.features[idx], self.valid[idx], self.node_index[idx],
                       self.labels[idx], pick(self.patch_labels), pick(self.clinical))

    @staticmethod
    def concat(parts: list[MILData]) -> MILData:
        def cat(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)

        return MILData(cat("latent"), cat("features"), cat("valid"), cat("node_index"), cat("labels"),
                       cat("patch_labels"), cat("clinical"))


@dataclass
class MILTrainConfig:
    epochs: int = 120
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-2
    oversample_positive: float = 1.5  # positive patients are drawn this many times per epoch
    node_weight: float = 0.5  # weight of the node-level BCE where node labels exist (0: weak labels only)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _forward(model: MILModel, data: MILData, device: str) -> dict[str, torch.Tensor]:
    return model(
        None if data.latent is None else data.latent.to(device),
        data.features.to(device),
        data.valid.to(device),
        data.node_index.to(device),
        None if data.clinical is None else data.clinical.to(device),
    )


def mil_loss(out: dict[str, torch.Tensor], data: MILData, node_weight: float, device: str) -> torch.Tensor:
    y = data.labels.to(device).float()
    loss = F.binary_cross_entropy(out["final"].clamp(1e-6, 1 - 1e-6), y)
    if node_weight > 0 and data.patch_labels is not None:
        pl = data.patch_labels.to(device).float()
        keep = data.valid.to(device) & (pl >= 0)
        if bool(keep.any()):
            loss = loss + node_weight * F.binary_cross_entropy_with_logits(out["patch_logit"][keep], pl[keep])
    return loss


@torch.no_grad()
def predict_mil(model: MILModel, data: MILData, device: str = "cpu") -> dict[str, np.ndarray]:
    model.eval()
    out = _forward(model, data, device)
    return {k: v.cpu().numpy() for k, v in out.items()}


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def train_mil(
    train: MILData,
    val: MILData | None,
    config: MILConfig,
    train_config: MILTrainConfig,
    device: str = "cpu",
    progress: bool = False,
    fixed_epochs: int | None = None,
    description: str = "MIL",
) -> tuple[MILModel, dict]:
    """Train; with ``val`` keep the epoch of best validation patient AUC (ties: lower loss), else train
    ``fixed_epochs`` (chosen beforehand on inner folds). Returns (model, history with ``best_epoch``)."""
    seed_everything(train_config.seed)
    model = MILModel(config).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    rng = np.random.default_rng(train_config.seed)
    labels = train.labels.numpy()
    pos = np.flatnonzero(labels > 0.5)
    neg = np.flatnonzero(labels <= 0.5)
    epochs = fixed_epochs if fixed_epochs is not None else train_config.epochs
    history: dict = {"train_loss": [], "val_auc": [], "val_loss": [], "best_epoch": epochs - 1}
    best_key = (-np.inf, -np.inf)
    best_state = copy.deepcopy(model.state_dict())
    for epoch in tqdm(range(epochs), desc=description, disable=not progress, leave=False):
        model.train()
        n_pos = int(round(len(pos) * train_config.oversample_positive))
        draw_pos = rng.choice(pos, n_pos, replace=n_pos > len(pos)) if len(pos) else pos
        order = rng.permutation(np.concatenate([neg, draw_pos]))
        total = 0.0
        for start in range(0, len(order), train_config.batch_size):
            idx = order[start : start + train_config.batch_size]
            if len(idx) < 2:
                continue
            batch = train.subset(idx)
            out = _forward(model, batch, device)
            loss = mil_loss(out, batch, train_config.node_weight, device)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        history["train_loss"].append(total / max(len(order), 1))
        if val is not None:
            model.eval()
            with torch.no_grad():
                out = _forward(model, val, device)
                vloss = float(mil_loss(out, val, 0.0, device))
            auc = _auc(val.labels.numpy(), out["final"].cpu().numpy())
            history["val_auc"].append(auc)
            history["val_loss"].append(vloss)
            key = (auc if np.isfinite(auc) else -vloss, -vloss)
            if key > best_key:
                best_key = key
                history["best_epoch"] = epoch
                best_state = copy.deepcopy(model.state_dict())
    if val is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history
