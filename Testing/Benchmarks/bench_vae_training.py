"""Benchmark: VAE training throughput (images/s) of ``train_vae`` against a bare torch loop of the same model,
loss and batch, measured side by side in one run (target: ``train_vae`` >= 0.95x the bare loop).

Run:  .venv/bin/python Testing/Benchmarks/bench_vae_training.py [--epochs 3] [--repeats 3] [--threads 1 2]

Data: the synthetic nodule cohort (32 x 32 patches, seeded; a fixture, not training data for a model).
``train_vae`` runs as ``lnmstaging train`` runs it (flips, KLD annealing, a validation pass per epoch, best-state
copies; no checkpoint folder). The bare loop is the textbook one: the same VAE architecture and initial weights,
AdamW, the paper's Eq. 1 loss written out plainly (SSIM with five separate Gaussian convolutions), the same
batches; no flips, no validation. Before timing, the plain loss is checked against the library's on one batch.
Runs alternate (library, bare) per repeat; medians are compared. With several ``--threads`` values the
table also shows which torch thread count trains fastest on this machine (the ``--threads`` default).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from LNMStagingLib.models.vae import VAE, VAEConfig, VAELossConfig, vae_loss
from LNMStagingLib.synthetic.nodules import make_synthetic_nodules
from LNMStagingLib.training.seed import seed_everything
from LNMStagingLib.training.vae_train import VAETrainConfig, train_vae

TARGET_RATIO = 0.95


def plain_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (11 x 11 Gaussian window, sigma 1.5, data range 1), one convolution per local statistic."""
    coords = torch.arange(11, dtype=x.dtype) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None]
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return value.mean()


def plain_loss(model: VAE, x: torch.Tensor, rec: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
               c: VAELossConfig, a: float) -> torch.Tensor:
    """Eq. 1 written out: alpha * lambda * L1 + (1 - alpha) * gamma * (1 - SSIM) + a * beta * KLD."""
    return (c.alpha * c.lam * (rec - x).abs().mean() + (1 - c.alpha) * c.gamma * (1 - plain_ssim(rec, x))
            + a * c.beta * model.kld(mu, logvar).mean())


def bare_loop(images: torch.Tensor, config: VAEConfig, train: VAETrainConfig) -> float:
    """Seconds for ``train.epochs`` epochs of the textbook loop over the same batches."""
    seed_everything(train.seed)
    model = VAE(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    rng = np.random.default_rng(train.seed)
    model.train()
    start = time.perf_counter()
    for _ in range(train.epochs):
        order = torch.from_numpy(rng.permutation(len(images)))
        for batch in order.split(train.batch_size):
            x = images[batch]
            rec, mu, logvar = model(x)
            loss = plain_loss(model, x, rec, mu, logvar, train.loss, 1.0)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return time.perf_counter() - start


def library_run(images: torch.Tensor, validation: torch.Tensor, config: VAEConfig, train: VAETrainConfig) -> float:
    start = time.perf_counter()
    train_vae(images, validation, config, train, progress=False)
    return time.perf_counter() - start


def check_same_loss(images: torch.Tensor, config: VAEConfig, loss_config: VAELossConfig) -> float:
    """|library loss - plain loss| on one batch (the two loops must optimise the same objective)."""
    seed_everything(0)
    model = VAE(config).eval()
    with torch.no_grad():
        x = images[:128]
        rec, mu, logvar = model(x)
        ours, _ = vae_loss(model, x, rec, mu, logvar, loss_config, 1.0)
        plain = plain_loss(model, x, rec, mu, logvar, loss_config, 1.0)
    return abs(float(ours) - float(plain))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patients", type=int, default=300, help="synthetic patients (about 6 patches each)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts to measure")
    args = parser.parse_args()
    arrays, _ = make_synthetic_nodules(n_patients=args.patients, size=32, seed=0)
    all_images = torch.from_numpy(arrays["images"].astype(np.float32))[:, None]
    n_val = max(len(all_images) // 10, 2)
    validation, images = all_images[:n_val], all_images[n_val:]
    config = VAEConfig(base=8)  # the shipped bundle's architecture
    train = VAETrainConfig(epochs=args.epochs, batch_size=128, loss=VAELossConfig(anneal=False))
    difference = check_same_loss(images, config, train.loss)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    print(f"data: {len(images)} training + {n_val} validation synthetic 32 x 32 patches; batch {train.batch_size}, "
          f"{args.epochs} epochs per run, median of {args.repeats}; |library loss - plain loss| = {difference:.1e}")
    ok = difference < 1e-5
    fastest = None
    for threads in args.threads:
        torch.set_num_threads(threads)
        library_run(images[:256], validation[:32], config, VAETrainConfig(epochs=1, batch_size=128))  # warm-up
        ours, bare = [], []
        for _ in range(args.repeats):
            ours.append(library_run(images, validation, config, train))
            bare.append(bare_loop(images, config, train))
        count = len(images) * args.epochs
        ours_rate, bare_rate = count / statistics.median(ours), count / statistics.median(bare)
        ratio = ours_rate / bare_rate
        ok &= ratio >= TARGET_RATIO
        print(f"threads {threads}: train_vae {ours_rate:7.0f} images/s, bare loop {bare_rate:7.0f} images/s, "
              f"ratio {ratio:.2f}x (target >= {TARGET_RATIO}x): {'PASS' if ratio >= TARGET_RATIO else 'FAIL'}")
        if fastest is None or ours_rate > fastest[1]:
            fastest = (threads, ours_rate)
    if len(args.threads) > 1 and fastest is not None:
        print(f"fastest train_vae on this machine: {fastest[0]} thread(s)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
