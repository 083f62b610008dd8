"""VAE training: Eq. 1 loss with exponential KLD annealing, flips, early stopping, checkpoints and resume,
and the EM-style joint fine-tuning of the BMVC paper (VAE loss + classifier binary cross-entropy)."""

from __future__ import annotations

import copy
import math
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..io.atomic import atomic_path
from ..models.vae import VAE, VAEConfig, VAELossConfig, kld_annealing, ssim, vae_loss
from .fingerprint import array_digest, fingerprint
from .seed import seed_everything


@dataclass
class VAETrainConfig:
    epochs: int = 60
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 12  # early stopping on validation loss (evaluated with a(t) = 1)
    min_epochs: int = 10
    flips: bool = True
    seed: int = 0
    loss: VAELossConfig = field(default_factory=VAELossConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def _batches(n: int, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _flip(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if rng.random() < 0.5:
        x = torch.flip(x, dims=[3])
    if rng.random() < 0.5:
        x = torch.flip(x, dims=[2])
    return x


@torch.no_grad()
def evaluate_vae(model: VAE, images: torch.Tensor, loss_config: VAELossConfig, batch_size: int = 512) -> dict:
    """Validation loss (a(t) = 1) and reconstruction metrics of a VAE on (N, 1, S, S) images."""
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for idx in _batches(len(images), batch_size, None):
        x = images[idx].to(device)
        rec, mu, logvar = model(x)
        loss, _ = vae_loss(model, x, rec, mu, logvar, loss_config, 1.0)
        total += float(loss) * len(idx)
        n += len(idx)
    return {"loss": total / max(n, 1)}


@torch.no_grad()
def encode_images(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Latent means (N, D) (eval mode) of a VAE, or features of any encoder with ``encode``."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        mu = model.encode(images[i : i + batch_size].to(device))
        out.append((mu[0] if isinstance(mu, tuple) else mu).cpu())
    if not out:
        return torch.zeros((0, 1))
    return torch.cat(out)


@torch.no_grad()
def reconstruction_metrics(model: VAE, images: torch.Tensor, batch_size: int = 512) -> dict[str, float]:
    """SSIM (11x11 Gaussian window), PSNR (dB, data range 1), MSE and MAE of eval-mode reconstructions."""
    model.eval()
    device = next(model.parameters()).device
    ssims, mses, maes = [], [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        rec = model.decode(model.encode(x)[0])
        ssims.append(ssim(rec, x).cpu())
        mses.append(((rec - x) ** 2).flatten(1).mean(1).cpu())
        maes.append((rec - x).abs().flatten(1).mean(1).cpu())
    s, mse, mae = torch.cat(ssims), torch.cat(mses), torch.cat(maes)
    psnr = 10 * torch.log10(1.0 / mse.clamp(min=1e-10))
    return {"ssim": float(s.mean()), "psnr": float(psnr.mean()), "mse": float(mse.mean()), "mae": float(mae.mean()),
            "n": int(len(images))}


def train_vae(
    train_images: torch.Tensor,
    val_images: torch.Tensor,
    vae_config: VAEConfig,
    config: VAETrainConfig,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    device: str = "cpu",
    description: str = "VAE",
    classifier_loss: Callable[[torch.Tensor, np.ndarray], torch.Tensor] | None = None,
    initial_state: dict | None = None,
    start_annealed: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[VAE, dict]:
    """Train a VAE; returns the model at the epoch of lowest validation loss, and the history.

    ``checkpoint_dir``: ``last.pt`` is written every epoch (model, optimizer, history and the fingerprint of
    the data, configuration, initial weights and code; loaded back with ``torch.load(weights_only=True)``); a
    run resumes from it only when the fingerprint matches, else (another cohort, config or code version, a
    truncated or foreign file) it starts fresh and ``log`` says why. ``classifier_loss(mu, batch_index)``
    adds a classification term (the EM fine-tuning); ``initial_state`` starts from given weights.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    run_fingerprint = fingerprint(
        train=array_digest(train_images), val=array_digest(val_images), vae=asdict(vae_config),
        train_config=asdict(config), classifier=classifier_loss is not None, start_annealed=start_annealed,
        initial=[array_digest(v) for v in initial_state.values()] if initial_state is not None else None)
    seed_everything(config.seed)
    model = VAE(vae_config).to(device)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: dict = {"train_loss": [], "val_loss": [], "best_epoch": -1, "best_val_loss": math.inf, "epochs_run": 0,
                     "train_seconds": 0.0}
    best_state = copy.deepcopy(model.state_dict())
    start_epoch = 0
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    saved = _resumable(ckpt, device, run_fingerprint, log) if ckpt is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        best_state = saved["best_model"]
        history = saved["history"]
        start_epoch = int(saved["epoch"]) + 1
    rng = np.random.default_rng(config.seed + 1000 * start_epoch)
    bad_epochs = start_epoch - 1 - history["best_epoch"] if history["best_epoch"] >= 0 else 0
    bar = tqdm(range(start_epoch, config.epochs), desc=description, disable=not progress, leave=False)
    for epoch in bar:
        epoch_start = time.time()
        model.train()
        a = 1.0 if start_annealed else kld_annealing(epoch, config.loss.anneal_epochs, config.loss.anneal_rate)
        total, n = 0.0, 0
        for idx in _batches(len(train_images), config.batch_size, rng):
            if len(idx) < 2:
                continue
            x = train_images[idx].to(device)
            if config.flips:
                x = _flip(x, rng)
            rec, mu, logvar = model(x)
            loss, _ = vae_loss(model, x, rec, mu, logvar, config.loss, a)
            if classifier_loss is not None:
                loss = loss + classifier_loss(mu, idx)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        val = evaluate_vae(model, val_images, config.loss)["loss"]
        history["train_loss"].append(total / max(n, 1))
        history["val_loss"].append(val)
        history["epochs_run"] = epoch + 1
        history["train_seconds"] = history.get("train_seconds", 0.0) + time.time() - epoch_start
        if val < history["best_val_loss"]:
            history["best_val_loss"] = val
            history["best_epoch"] = epoch
            best_state = copy.deepcopy(model.state_dict())
            bad_epochs = 0
        else:
            bad_epochs += 1
        bar.set_postfix(train=f"{history['train_loss'][-1]:.3f}", val=f"{val:.3f}")
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(ckpt) as temporary:  # a kill mid-save must not leave a truncated last.pt
                torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                            "best_model": best_state, "history": history, "epoch": epoch,
                            "fingerprint": run_fingerprint}, temporary)
        # early stopping only once the KLD weight is fully on, so that val losses are comparable
        annealed = start_annealed or epoch >= config.loss.anneal_epochs
        if annealed and epoch + 1 >= config.min_epochs and bad_epochs >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, history


def _resumable(ckpt: Path, device: str, run_fingerprint: str, log: Callable[[str], None]) -> dict | None:
    """The checkpoint at ``ckpt`` when it belongs to this very run (same fingerprint), else None, said in one line.

    Args:
        ckpt: the ``last.pt`` path.
        device: where its tensors go.
        run_fingerprint: this run's :func:`fingerprint`.
        log: where the reason for starting fresh goes.

    Returns:
        The checkpoint's contents, or None.
    """
    if not ckpt.is_file():
        return None
    try:
        saved = torch.load(ckpt, map_location=device, weights_only=True)
        if not isinstance(saved, dict) or not {"model", "optimiser", "best_model", "history", "epoch"} <= set(saved):
            raise ValueError("not an lnmstaging VAE checkpoint")
    except (RuntimeError, EOFError, ValueError, TypeError, KeyError, AttributeError, pickle.UnpicklingError) as error:
        reason = str(error).splitlines()[0][:120] if str(error).strip() else type(error).__name__
        log(f"lnmstaging: {ckpt}: unreadable checkpoint ({reason}); training starts fresh")
        return None
    if saved.get("fingerprint") != run_fingerprint:
        log(f"lnmstaging: {ckpt}: left by another run (other data, configuration or code version); not resumed, "
            "training starts fresh")
        return None
    return saved


def patch_bce_loss(
    patch_head: torch.nn.Module, features: torch.Tensor, labels: torch.Tensor, weight: float = 1.0
) -> Callable[[torch.Tensor, np.ndarray], torch.Tensor]:
    """A ``classifier_loss`` for :func:`train_vae`: BCE of a (frozen) patch classifier on the latent means.

    ``patch_head(mu, features)`` returns logits; ``features`` (N, F) normalised; ``labels`` (N,) in {0, 1}
    (-1 = unknown, ignored)."""

    def loss(mu: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        y = labels[idx].to(mu.device).float()
        keep = y >= 0
        if not bool(keep.any()):
            return mu.sum() * 0.0
        logits = patch_head(mu[keep], features[idx].to(mu.device)[keep])
        return weight * F.binary_cross_entropy_with_logits(logits, y[keep])

    return loss
