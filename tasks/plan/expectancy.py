"""Expected P&L and expected time-to-hit of a barrier trade, and the statistics behind them.

A trade bought at the close with a take-profit ``b`` ATR above and a stop ``a`` ATR below
(the model's label barriers) ends one of three ways within the horizon: target first (win,
probability ``p`` = the calibrated P(win)), stop first, or neither (timeout, exit at the close
of the last session). With ``q`` = P(stop first | not a win) and ``m`` = the mean timeout return
in ATR units, both measured per volatility regime on the baseline's training span::

    E[return] = atr_pct * (p * b - (1 - p) * q * a + (1 - p) * (1 - q) * m)
    E[net]    = E[return] - 2 * fee_pct            (one fee to enter, one to exit)

``etth_days`` (expected time to hit, in sessions) is the ATR-based proxy of a driftless random
walk leaving the band (-a ATR, +b ATR): ``a * b * (atr_pct / sigma_daily)^2``, with
``sigma_daily = vol_20 / sqrt(252)``, capped at the horizon. ``epnl_time = E[net] / etth_days``
ranks the plan.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tasks.features.regimes import VolRegimeCuts, assign_vol_regime

ALL = "all"


def payoff_stats(frame: pd.DataFrame, cuts: VolRegimeCuts, horizons: dict[str, int],
                 end: pd.Timestamp, lookback_years: int) -> dict[str, dict[str, dict]]:
    """Per horizon and regime (plus 'all'): n, base_rate, p_stop_given_loss, timeout_ret_atr.

    Only rows whose label is complete and whose date is within ``lookback_years`` before
    ``end`` are used (the caller passes the training span's end).
    """
    start = pd.Timestamp(end) - pd.DateOffset(years=lookback_years)
    rows = frame.loc[(frame["date"] > start) & (frame["date"] <= pd.Timestamp(end))]
    regime = assign_vol_regime(rows, cuts).astype("object")
    out: dict[str, dict[str, dict]] = {}
    for name in horizons:
        sub = pd.DataFrame({"regime": regime.to_numpy(), "label": rows[f"label_{name}"],
                            "outcome": rows[f"outcome_{name}"].astype("object"),
                            "ret_atr": rows[f"fwd_return_{name}"] / rows["atr_pct"]})
        sub = sub.loc[sub["label"].notna()]
        out[name] = {ALL: _stats(sub)}
        for reg, part in sub.groupby("regime", sort=True):
            out[name][str(reg)] = _stats(part)
    return out


def _stats(sub: pd.DataFrame) -> dict[str, float]:
    losses = sub.loc[sub["label"] == 0]
    stopped = losses["outcome"].isin(["sl", "both"]).sum()
    timeouts = losses.loc[losses["outcome"] == "timeout", "ret_atr"]
    timeouts = timeouts[np.isfinite(timeouts)]
    return {
        "n": int(len(sub)),
        "base_rate": float(sub["label"].mean()) if len(sub) else math.nan,
        "p_stop_given_loss": float(stopped / len(losses)) if len(losses) else math.nan,
        "timeout_ret_atr": float(timeouts.mean()) if len(timeouts) else 0.0,
    }


def lookup(stats: dict[str, dict], regime: pd.Series, key: str) -> np.ndarray:
    """Per-row value of ``key`` for each row's regime (the 'all' row when the regime is unknown)."""
    fallback = stats[ALL][key]
    return regime.map(lambda r: stats.get(r, stats[ALL]).get(key, fallback)
                      if isinstance(r, str) else fallback).to_numpy(dtype="float64")


def expected_return(p: np.ndarray, atr_pct: np.ndarray, q: np.ndarray, m: np.ndarray,
                    tp_atr: float, stop_atr: float) -> np.ndarray:
    """Expected gross return of the barrier trade (fraction of the position)."""
    p = np.asarray(p, dtype="float64")
    return np.asarray(atr_pct) * (p * tp_atr - (1 - p) * q * stop_atr + (1 - p) * (1 - q) * m)


def etth_days(atr_pct: np.ndarray, vol_annual: np.ndarray, tp_atr: float, stop_atr: float,
              horizon: int) -> np.ndarray:
    """Expected sessions to the first barrier of a driftless walk, capped at the horizon."""
    sigma = np.asarray(vol_annual, dtype="float64") / math.sqrt(252.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = stop_atr * tp_atr * (np.asarray(atr_pct) / sigma) ** 2
    return np.clip(np.where(np.isfinite(t), t, float(horizon)), 0.5, float(horizon))


def feature_reference(frame: pd.DataFrame, columns: list[str], end: pd.Timestamp,
                      lookback_years: int, bins: int = 10) -> dict[str, dict[str, list]]:
    """Decile edges and shares of key features on the training span, for PSI at run time."""
    start = pd.Timestamp(end) - pd.DateOffset(years=lookback_years)
    rows = frame.loc[(frame["date"] > start) & (frame["date"] <= pd.Timestamp(end))]
    ref = {}
    for col in columns:
        if col not in rows:
            continue
        v = rows[col].to_numpy(dtype="float64", na_value=np.nan)
        v = v[np.isfinite(v)]
        if len(v) < bins * 10:
            continue
        edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
        ref[col] = {"edges": edges.tolist(), "shares": (counts / counts.sum()).tolist()}
    return ref


def psi(values: np.ndarray, ref: dict[str, list], floor: float = 1e-4) -> float:
    """Population stability index of ``values`` against a reference binning."""
    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan
    edges = np.asarray(ref["edges"])
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    actual = np.maximum(counts / counts.sum(), floor)
    expected = np.maximum(np.asarray(ref["shares"]), floor)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
