"""Score features with a saved baseline: raw and per-regime calibrated P(win) per horizon."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.features.build import feature_columns, feature_schema_hash
from tasks.features.regimes import assign_vol_regime
from tasks.models.calibration import apply_calibrators
from tasks.models.registry import Baseline, RegistryError
from tasks.settings import AppSettings

SCORE_COLUMNS = ["symbol", "date", "horizon", "p_raw", "p_cal", "regime", "label", "fwd_return"]


def check_schema(baseline: Baseline, settings: AppSettings) -> None:
    """Refuse features built under other settings than the model was trained on."""
    current = feature_schema_hash(settings)
    trained = baseline.manifest["feature_schema_hash"]
    if current != trained:
        raise RegistryError(
            f"feature schema {current} differs from baseline {baseline.baseline_id}'s {trained}: "
            "the feature settings changed since training; restore them or retrain")


def score_features(baseline: Baseline, frame: pd.DataFrame, settings: AppSettings) -> pd.DataFrame:
    """One row per (symbol, date, horizon); label/fwd_return NaN when absent or incomplete."""
    check_schema(baseline, settings)
    X = frame[feature_columns(settings)].to_numpy(dtype="float64", na_value=np.nan)
    regime = assign_vol_regime(frame, baseline.cuts).astype("object").to_numpy()
    parts = []
    for name, hm in baseline.models.items():
        p_raw = hm.ensemble.predict_proba(X)[:, 1]
        parts.append(pd.DataFrame({
            "symbol": frame["symbol"].to_numpy(), "date": frame["date"].to_numpy(),
            "horizon": name, "p_raw": p_raw,
            "p_cal": apply_calibrators(p_raw, regime, hm.calibrators, strict=True),
            "regime": regime,
            "label": _col(frame, f"label_{name}"), "fwd_return": _col(frame, f"fwd_return_{name}"),
        }))
    out = pd.concat(parts, ignore_index=True)[SCORE_COLUMNS]
    out["symbol"] = out["symbol"].astype("string")
    out["horizon"] = out["horizon"].astype("string")
    out["regime"] = out["regime"].astype("string")
    return out.sort_values(["date", "symbol", "horizon"], kind="stable").reset_index(drop=True)


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype="float64") if name in frame else np.full(len(frame), np.nan)
