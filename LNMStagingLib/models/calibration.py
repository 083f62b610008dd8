"""Per-member probability calibration (Platt scaling on the logit) applied before ensemble members are averaged.

Members trained on different patients put their outputs on different scales: averaging or pooling the raw
outputs mixes the scales (the pooled out-of-fold AUC falls below the fold mean). Each member's calibration is
fitted on that member's own inner out-of-fold predictions (patients its inner-fold models never saw), so it
maps the member's output to the frequency of positives it corresponds to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))


@dataclass(frozen=True)
class Calibration:
    """``calibrated = sigmoid(slope * logit(p) + intercept)`` (Platt scaling of the logit); identity = (1, 0).

    ``fitted_on``: how many predictions the two numbers were fitted on (0 for the identity).
    """

    slope: float = 1.0
    intercept: float = 0.0
    method: str = "platt"
    fitted_on: int = 0

    @property
    def is_identity(self) -> bool:
        return self.slope == 1.0 and self.intercept == 0.0

    def apply(self, p):
        """Calibrated probabilities of ``p`` (a numpy array or a torch tensor, same type back)."""
        if isinstance(p, torch.Tensor):
            clipped = p.clamp(_EPS, 1.0 - _EPS)
            return torch.sigmoid(self.slope * torch.log(clipped / (1.0 - clipped)) + self.intercept)
        return 1.0 / (1.0 + np.exp(-(self.slope * _logit(p) + self.intercept)))

    def to_dict(self) -> dict:
        return {"method": self.method, "slope": float(self.slope), "intercept": float(self.intercept),
                "fitted_on": int(self.fitted_on)}

    @classmethod
    def from_dict(cls, data: dict | None) -> Calibration:
        """The calibration of a ``to_dict`` object (None: the identity)."""
        if not data:
            return cls()
        if data.get("method", "platt") != "platt":
            raise ValueError(f"unknown calibration method {data.get('method')!r}")
        return cls(float(data["slope"]), float(data["intercept"]), "platt", int(data.get("fitted_on", 0)))


def fit_platt(y, p) -> Calibration:
    """Platt scaling fitted on out-of-fold predictions ``p`` with labels ``y`` (maximum likelihood).

    Args:
        y: 0/1 labels.
        p: the member's out-of-fold probabilities.

    Returns:
        The :class:`Calibration`; the identity when ``y`` has one class or ``p`` is constant (nothing to fit).
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y).astype(int)
    x = _logit(p)
    finite = np.isfinite(x)
    y, x = y[finite], x[finite]
    if len(np.unique(y)) < 2 or np.ptp(x) < 1e-9:
        return Calibration()
    # a very weak penalty: the maximum-likelihood fit, kept finite when the classes separate completely
    model = LogisticRegression(C=1e4, max_iter=1000).fit(x[:, None], y)
    return Calibration(float(model.coef_[0, 0]), float(model.intercept_[0]), "platt", int(len(y)))


__all__ = ["Calibration", "fit_platt"]
