"""Score features with a saved baseline: raw and per-regime calibrated P(win) per horizon."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.features.build import feature_columns, feature_schema_hash
from tasks.features.regimes import assign_vol_regime
from tasks.models.calibration import apply_calibrators
from tasks.models.payoff import calibrated_dispersion
from tasks.models.registry import Baseline, RegistryError
from tasks.settings import AppSettings

SCORE_COLUMNS = ["symbol", "date", "horizon", "p_raw", "p_cal", "regime", "label", "fwd_return"]
# the payoff head's outputs (NaN for a baseline without one): P(stop | not a win) raw and
# calibrated, relative timeout return in ATR units raw and calibrated, and the base models'
# dispersion of calibrated P(win)
PAYOFF_COLUMNS = ["q_raw", "r_raw", "q_cal", "r_cal", "p_sd", "rank_score", "exp_a", "exp_b",
                  "exp_b_se"]


def check_schema(baseline: Baseline, settings: AppSettings) -> None:
    """Refuse features built under other settings than the model was trained on."""
    current = feature_schema_hash(settings)
    trained = baseline.manifest["feature_schema_hash"]
    if current != trained:
        raise RegistryError(
            f"feature schema {current} differs from baseline {baseline.baseline_id}'s {trained}: "
            "the feature settings changed since training; restore them or retrain")


def raw_scores(baseline: Baseline, frame: pd.DataFrame, settings: AppSettings) -> pd.DataFrame:
    """The ensemble's raw P(win) per (symbol, date, horizon) with the baseline's vol regime."""
    check_schema(baseline, settings)
    X = frame[feature_columns(settings)].to_numpy(dtype="float64", na_value=np.nan)
    regime = assign_vol_regime(frame, baseline.cuts).astype("object").to_numpy()
    parts = []
    for name, hm in baseline.models.items():
        base = hm.ensemble.base_predict(X)
        q_raw, r_raw = (hm.payoff.raw(X) if hm.payoff is not None
                        else (np.full(len(X), np.nan), np.full(len(X), np.nan)))
        parts.append(pd.DataFrame({
            "symbol": frame["symbol"].to_numpy(), "date": frame["date"].to_numpy(),
            "horizon": name, "p_raw": hm.ensemble.combine(base), "regime": regime,
            "label": _col(frame, f"label_{name}"), "fwd_return": _col(frame, f"fwd_return_{name}"),
            "q_raw": q_raw, "r_raw": r_raw,
            "p_sd": calibrated_dispersion(base, regime, hm.calibrators,
                                          frame["date"].to_numpy()),
            "rank_score": (hm.ranker.score(X) if getattr(hm, "ranker", None) is not None
                           else np.full(len(X), np.nan)),
        }))
    out = pd.concat(parts, ignore_index=True)
    for col in ("symbol", "horizon", "regime"):
        out[col] = out[col].astype("string")
    return out.sort_values(["date", "symbol", "horizon"], kind="stable").reset_index(drop=True)


def calibrate_scores(baseline: Baseline, raw: pd.DataFrame, strict: bool = True) -> pd.DataFrame:
    """Add p_cal: each horizon's per-regime calibrator applied to p_raw.

    ``strict=False`` leaves p_cal NaN for a regime without a calibrator instead of raising
    (the daily health check then stops trading and names the regime)."""
    out = raw.copy()
    out["p_cal"] = np.nan
    out["q_cal"], out["r_cal"] = np.nan, np.nan
    # a baseline without a payoff head: the identity alone
    out["exp_a"], out["exp_b"], out["exp_b_se"] = 1.0, 0.0, 0.0
    for col in ("q_raw", "r_raw", "p_sd", "rank_score"):
        if col not in out:
            out[col] = np.nan
    regime = out["regime"].astype("object").to_numpy()
    for name, hm in baseline.models.items():
        rows = (out["horizon"] == name).to_numpy()
        out.loc[rows, "p_cal"] = apply_calibrators(out.loc[rows, "p_raw"].to_numpy(),
                                                   regime[rows], hm.calibrators, strict=strict)
        if hm.payoff is not None:
            q, r = hm.payoff.apply(out.loc[rows, "q_raw"].to_numpy(dtype="float64"),
                                   out.loc[rows, "r_raw"].to_numpy(dtype="float64"), regime[rows])
            out.loc[rows, "q_cal"], out.loc[rows, "r_cal"] = q, r
            a, b, se = hm.payoff.weights_of(regime[rows])
            out.loc[rows, "exp_a"], out.loc[rows, "exp_b"], out.loc[rows, "exp_b_se"] = a, b, se
    return out[SCORE_COLUMNS + PAYOFF_COLUMNS]


def score_features(baseline: Baseline, frame: pd.DataFrame, settings: AppSettings,
                   strict: bool = True) -> pd.DataFrame:
    """One row per (symbol, date, horizon); label/fwd_return NaN when absent or incomplete."""
    return calibrate_scores(baseline, raw_scores(baseline, frame, settings), strict)


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype="float64") if name in frame else np.full(len(frame), np.nan)


def wide_scores(scored: pd.DataFrame) -> pd.DataFrame:
    """One row per (symbol, date): regime, p_raw_<h>, p_cal_<h>, label_<h> and the payoff
    head's q_cal_<h>, r_cal_<h>, p_sd_<h>, and the ranker's rank_score_<h>."""
    keys = ["symbol", "date"]
    values = ["p_raw", "p_cal", "label",
              *[c for c in ("q_cal", "r_cal", "p_sd", "rank_score", "exp_a", "exp_b", "exp_b_se")
                if c in scored]]
    wide = scored.pivot_table(index=keys, columns="horizon", values=values,
                              aggfunc="first", dropna=False, observed=True)
    wide.columns = [f"{v}_{h}" for v, h in wide.columns]
    regime = scored.drop_duplicates(keys).set_index(keys)["regime"]
    out = wide.join(regime).reset_index()
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def missing_calibrators(baseline: Baseline, regimes: pd.Series) -> dict[str, list[str]]:
    """Regimes present in ``regimes`` that a horizon has no calibrator for."""
    present = {r for r in regimes.dropna().astype(str).unique()}
    return {h: sorted(present - set(m.calibrators)) for h, m in baseline.models.items()
            if present - set(m.calibrators)}
