"""Per-member probability calibration (Platt scaling on the logit, or isotonic regression) applied before ensemble
members are averaged.

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

    With ``method`` "isotonic": the piecewise-linear map through the points (``knots_x``, ``knots_y``), both
    non-decreasing (flat outside them); slope and intercept are unused.

    ``fitted_on``: how many predictions the map was fitted on (0 for the identity).
    """

    slope: float = 1.0
    intercept: float = 0.0
    method: str = "platt"
    fitted_on: int = 0
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()

    @property
    def is_identity(self) -> bool:
        return self.method == "platt" and self.slope == 1.0 and self.intercept == 0.0

    def apply(self, p):
        """Calibrated probabilities of ``p`` (a numpy array or a torch tensor, same type back)."""
        if self.method == "isotonic":
            return self._interpolate(p)
        if isinstance(p, torch.Tensor):
            clipped = p.clamp(_EPS, 1.0 - _EPS)
            return torch.sigmoid(self.slope * torch.log(clipped / (1.0 - clipped)) + self.intercept)
        return 1.0 / (1.0 + np.exp(-(self.slope * _logit(p) + self.intercept)))

    def _interpolate(self, p):
        x = np.asarray(self.knots_x, dtype=np.float64)
        y = np.asarray(self.knots_y, dtype=np.float64)
        if isinstance(p, torch.Tensor):
            # the same piecewise-linear map in torch (no numpy round trip, any device)
            xt = torch.as_tensor(x, dtype=p.dtype, device=p.device)
            yt = torch.as_tensor(y, dtype=p.dtype, device=p.device)
            q = p.clamp(xt[0], xt[-1])
            right = torch.searchsorted(xt, q.contiguous()).clamp(1, len(x) - 1)
            x0, x1, y0, y1 = xt[right - 1], xt[right], yt[right - 1], yt[right]
            return y0 + (y1 - y0) * (q - x0) / (x1 - x0).clamp_min(1e-12)
        return np.interp(np.asarray(p, dtype=np.float64), x, y)

    def to_dict(self) -> dict:
        out = {"method": self.method, "slope": float(self.slope), "intercept": float(self.intercept),
               "fitted_on": int(self.fitted_on)}
        if self.method == "isotonic":
            out["knots_x"] = [float(v) for v in self.knots_x]
            out["knots_y"] = [float(v) for v in self.knots_y]
        return out

    @classmethod
    def from_dict(cls, data: dict | None) -> Calibration:
        """The calibration of a ``to_dict`` object (None: the identity)."""
        if not data:
            return cls()
        method = data.get("method", "platt")
        if method == "isotonic":
            x, y = tuple(map(float, data["knots_x"])), tuple(map(float, data["knots_y"]))
            if len(x) < 2 or len(x) != len(y) or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ValueError("an isotonic calibration needs two or more non-decreasing knots")
            return cls(1.0, 0.0, "isotonic", int(data.get("fitted_on", 0)), x, y)
        if method != "platt":
            raise ValueError(f"unknown calibration method {method!r}")
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


def fit_isotonic(y, p) -> Calibration:
    """Isotonic regression of ``y`` on out-of-fold predictions ``p`` (a non-decreasing step map, stored as the
    knots of its steps and interpolated between them).

    Args:
        y: 0/1 labels.
        p: the member's out-of-fold probabilities.

    Returns:
        The :class:`Calibration`; the identity when ``y`` has one class or ``p`` is constant.
    """
    from sklearn.isotonic import IsotonicRegression

    y = np.asarray(y).astype(float)
    p = np.asarray(p, dtype=np.float64)
    finite = np.isfinite(p)
    y, p = y[finite], p[finite]
    if len(np.unique(y)) < 2 or np.ptp(p) < 1e-9:
        return Calibration()
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return Calibration(1.0, 0.0, "isotonic", int(len(y)), tuple(map(float, model.X_thresholds_)),
                       tuple(map(float, model.y_thresholds_)))


__all__ = ["Calibration", "fit_isotonic", "fit_platt"]
