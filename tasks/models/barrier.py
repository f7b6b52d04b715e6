"""The barrier trade's statistics that training and the plan share (the model layer).

``payoff_stats``: per horizon and regime the base rate, the stop share of losses and the
timeout return, measured on a baseline's training span. ``barrier_expectancy``: the identity
of the three first-touch outcomes (see ``tasks/plan/expectancy.py``, which builds the plan's
expectancy on it). ``relative_to_session``: a value minus its session mean.
``feature_reference`` and ``psi``: the training distribution of key features and the
population stability index of a later sample against it.
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
        "timeout_ret_atr_sq": float((timeouts ** 2).mean()) if len(timeouts) else 1.0,
        "n": int(len(sub)),
        "base_rate": float(sub["label"].mean()) if len(sub) else math.nan,
        "p_stop_given_loss": float(stopped / len(losses)) if len(losses) else math.nan,
        "timeout_ret_atr": float(timeouts.mean()) if len(timeouts) else 0.0,
    }


def barrier_expectancy(p: np.ndarray, q: np.ndarray, r: np.ndarray, atr_pct: np.ndarray,
                       tp_atr: float, stop_atr: float) -> dict[str, np.ndarray]:
    """P(stop), P(timeout) and the gross expected return of the barrier trade (module doc)."""
    p = np.asarray(p, dtype="float64")
    q = np.asarray(q, dtype="float64")
    r = np.asarray(r, dtype="float64")
    p_stop, p_to = (1 - p) * q, (1 - p) * (1 - q)
    exp = np.asarray(atr_pct, dtype="float64") * (p * tp_atr - p_stop * stop_atr + p_to * r)
    return {"p_stop": p_stop, "p_timeout": p_to, "exp_pnl": exp}


def relative_to_session(values: np.ndarray, dates: np.ndarray | None = None) -> np.ndarray:
    """Values minus the mean of their session (all rows one session when ``dates`` is None)."""
    v = np.asarray(values, dtype="float64")
    if dates is None:
        finite = v[np.isfinite(v)]
        return v - (finite.mean() if len(finite) else 0.0)
    mean = pd.Series(v).groupby(np.asarray(dates)).transform("mean").to_numpy()
    return v - mean


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
