"""ROC and reliability plots (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import reliability_curve


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: dict[str, tuple], path: str | Path, title: str = "ROC") -> Path:
    """``curves``: {label: (y, p)}; one ROC line each, AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for label, (y, p) in curves.items():
        y = np.asarray(y).astype(int)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_reliability(curves: dict[str, tuple], path: str | Path, title: str = "Reliability", n_bins: int = 10) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for label, (y, p) in curves.items():
        r = reliability_curve(y, p, n_bins)
        ax.plot(r["confidence"], r["observed"], marker="o", ms=3, label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
