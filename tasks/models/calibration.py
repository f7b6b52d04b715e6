"""Per-regime probability calibration (isotonic or Platt), fit on out-of-sample predictions only.

For each volatility regime: with fewer than ``isotonic_min_rows`` rows only Platt scaling is
fit (isotonic regression overfits small samples); otherwise both are fit on the earlier part
of the regime's rows and the one with the lower Brier score on the latest
``calibration_holdout`` share wins, then it is refit on all rows. A regime with fewer than
``min_calibration_rows`` rows gets no calibrator, and scoring refuses it by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from tasks.features.regimes import VOL_REGIMES
from tasks.models.ensemble import logit
from tasks.settings import ModelSettings


class MissingCalibrator(RuntimeError):
    """Rows fall in a regime that has no calibrator."""


class Platt:
    """Logistic regression on the logit of the raw probability (Newton steps: two parameters
    and many rows converge in a few iterations, where L-BFGS takes several more)."""

    def fit(self, p: np.ndarray, y: np.ndarray) -> Platt:
        self.model_ = LogisticRegression(C=1e6, max_iter=1000, solver="newton-cholesky").fit(
            logit(p)[:, None], y)
        return self

    def predict(self, p: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(logit(p)[:, None])[:, 1]


class Isotonic:
    """Monotone map from raw to calibrated probability, fit on equal-mass bins.

    Plain isotonic regression puts a step on a handful of extreme rows (a top step of 1.0
    from three lucky wins); fitting on bins of at least ``min_bin`` rows keeps every step an
    average of many outcomes, and raw values beyond the fitted range get the end bins' rates.
    """

    def __init__(self, min_bin: int = 100):
        self.min_bin = min_bin

    def fit(self, p: np.ndarray, y: np.ndarray) -> Isotonic:
        order = np.argsort(p, kind="stable")
        bins = np.array_split(order, max(2, min(len(p) // self.min_bin, 200)))
        px = np.array([p[b].mean() for b in bins])
        py = np.array([y[b].mean() for b in bins])
        weight = np.array([len(b) for b in bins], dtype=float)
        self.model_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            px, py, sample_weight=weight)
        return self

    def predict(self, p: np.ndarray) -> np.ndarray:
        return np.clip(self.model_.predict(p), 1e-4, 1 - 1e-4)


@dataclass
class RegimeCalibrator:
    """The calibrator chosen for one regime and why."""

    regime: str
    method: str
    n: int
    model: Platt | Isotonic
    holdout_brier: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"method": self.method, "n": self.n, "holdout_brier": self.holdout_brier}


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def fit_one(p: np.ndarray, y: np.ndarray, order: np.ndarray, regime: str,
            cfg: ModelSettings) -> RegimeCalibrator:
    """Choose and fit the calibrator of one regime (rows ordered by ``order``, e.g. dates)."""
    idx = np.argsort(order, kind="stable")
    p, y = p[idx], y[idx]
    if len(p) < cfg.isotonic_min_rows or len(np.unique(y)) < 2:
        return RegimeCalibrator(regime, "platt", len(p), Platt().fit(p, y))
    cut = int(len(p) * (1 - cfg.calibration_holdout))
    scores = {}
    for name, cls in (("isotonic", Isotonic), ("platt", Platt)):
        scores[name] = _brier(y[cut:], cls().fit(p[:cut], y[:cut]).predict(p[cut:]))
    best = min(scores, key=scores.get)
    model = (Isotonic if best == "isotonic" else Platt)().fit(p, y)
    return RegimeCalibrator(regime, best, len(p), model, scores)


def fit_regime_calibrators(p: np.ndarray, y: np.ndarray, regime: np.ndarray,
                           order: np.ndarray, cfg: ModelSettings) -> dict[str, RegimeCalibrator]:
    """One calibrator per regime with enough out-of-sample rows."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    regime = np.asarray(pd.Series(regime).astype("object"))
    ok = np.isfinite(p) & np.isfinite(y)
    out = {}
    for name in VOL_REGIMES:
        rows = ok & (regime == name)
        if rows.sum() >= cfg.min_calibration_rows:
            out[name] = fit_one(p[rows], y[rows].astype(int), np.asarray(order)[rows], name, cfg)
    return out


def apply_calibrators(p: np.ndarray, regime: np.ndarray,
                      calibrators: dict[str, RegimeCalibrator], strict: bool = True
                      ) -> np.ndarray:
    """Calibrated probabilities; a row whose regime has no calibrator raises (or NaN if lax)."""
    p = np.asarray(p, float)
    regime = np.asarray(pd.Series(regime).astype("object"))
    out = np.full(len(p), np.nan)
    present = {r for r in pd.unique(regime) if r is not None and not pd.isna(r)}
    missing = sorted(present - set(calibrators))
    if missing and strict:
        raise MissingCalibrator(f"no calibrator for regime(s) {missing}: refusing to score "
                                "(retrain with more out-of-sample history in that regime)")
    for name, cal in calibrators.items():
        rows = (regime == name) & np.isfinite(p)
        if rows.any():
            out[rows] = cal.model.predict(p[rows])
    return out
