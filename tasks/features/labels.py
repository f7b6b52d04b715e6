"""Triple-barrier labels: does the take-profit get touched before the stop within the horizon?

For a signal on session D (entry at D's adjusted close, ATR measured on sessions <= D):

- take-profit = entry + ``take_profit_atr`` x ATR, stop = entry - ``stop_atr`` x ATR;
- the path is the adjusted high/low of sessions D+1 .. D+h only (shift backward = looking
  ahead: it is used here and nowhere in the features);
- win (1) when a high reaches the take-profit on an earlier session than any low reaches the
  stop; loss (0) when the stop comes first;
- both on the same session: the order inside the bar is unknown, ``labels.same_bar`` decides
  (default ``loss``: conservative);
- neither within h sessions (timeout): loss (0) -- the trade did not reach its target;
- the label and the forward return are NaN while session D+h has no bar (horizon incomplete).

``fwd_return_<h>`` = log(adj_close[D+h] / adj_close[D]), for rank-IC evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from tasks.features.kernels import atr
from tasks.features.panel import build_panel, to_long
from tasks.settings import AppSettings

OUTCOMES = ("tp", "sl", "both", "timeout")


def _first_touch(level: np.ndarray, path: pd.DataFrame, h: int, above: bool) -> np.ndarray:
    """First k in 1..h with path[t+k] crossing ``level[t]`` (inf when never)."""
    first = np.full(level.shape, np.inf)
    for step in range(h, 0, -1):  # backwards so the earliest touch is written last
        ahead = path.shift(-step).to_numpy()
        hit = ahead >= level if above else ahead <= level
        first[hit] = step
    return first


def classify_touches(t_up: np.ndarray, t_dn: np.ndarray) -> np.ndarray:
    """Outcome codes (0 tp, 1 sl, 2 both in one session, 3 timeout) from the first session on
    which the take-profit and the stop were touched (inf: never). The one barrier rule: the
    labels, the nightly marks of real plans and the backtest all classify through it."""
    t_up, t_dn = np.asarray(t_up, dtype="float64"), np.asarray(t_dn, dtype="float64")
    return np.select([t_up < t_dn, t_dn < t_up, np.isfinite(t_up) & (t_up == t_dn)],
                     [0, 1, 2], default=3)


def outcome_label(outcome: np.ndarray, same_bar: str) -> np.ndarray:
    """Win (1) / loss (0) of outcome codes; both in one session per ``labels.same_bar``
    (``loss`` 0, ``win`` 1, ``drop`` NaN: unknown, left out of hit rates)."""
    same = {"loss": 0.0, "win": 1.0, "drop": np.nan}[same_bar]
    return np.choose(np.asarray(outcome), [1.0, 0.0, same, 0.0]).astype("float64")


def path_touches(up: float, down: float, high: np.ndarray, low: np.ndarray) -> tuple[float, float]:
    """First session (1-based) of a path whose high reaches ``up`` / whose low reaches
    ``down`` (inf when never): one trade's counterpart of the panel's first-touch search."""
    high, low = np.asarray(high, dtype="float64"), np.asarray(low, dtype="float64")
    hit_up, hit_dn = np.flatnonzero(high >= up), np.flatnonzero(low <= down)
    return (float(hit_up[0] + 1) if len(hit_up) else np.inf,
            float(hit_dn[0] + 1) if len(hit_dn) else np.inf)


def barrier_labels(high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame,
                   atr_abs: pd.DataFrame, h: int, settings: AppSettings
                   ) -> dict[str, np.ndarray]:
    """Label, outcome code and forward return arrays (T, N) for horizon ``h``."""
    cfg = settings.labels
    entry = close.to_numpy()
    a = atr_abs.to_numpy()
    with np.errstate(invalid="ignore"):
        t_up = _first_touch(entry + cfg.take_profit_atr * a, high, h, above=True)
        t_dn = _first_touch(entry - cfg.stop_atr * a, low, h, above=False)
    complete = close.shift(-h).notna().to_numpy() & np.isfinite(entry) & np.isfinite(a)
    outcome = classify_touches(t_up, t_dn)
    label = outcome_label(outcome, cfg.same_bar)
    label[~complete] = np.nan
    fwd = np.log(close.shift(-h) / close).to_numpy().copy()
    fwd[~complete] = np.nan
    return {"label": label, "outcome": np.where(complete, outcome, -1), "fwd_return": fwd}


def barrier_pnl(outcome: ArrayLike, fwd_return: ArrayLike, atr_pct: ArrayLike,
                take_profit_atr: float, stop_atr: float) -> np.ndarray:
    """Realised P&L of the barrier trade as a fraction of entry, before costs.

    Take-profit first: ``+take_profit_atr * atr_pct``; stop first, or both in one session (the
    order inside a bar is unknown, so the conservative reading): ``-stop_atr * atr_pct``;
    timeout: the simple return to the horizon's close, ``exp(fwd_return) - 1``. NaN where the
    outcome is unknown (horizon incomplete). The exit is assumed at the barrier: gaps through
    it are not modelled.
    """
    out = pd.Series(outcome).astype("object").to_numpy()
    fwd = np.asarray(fwd_return, dtype="float64")
    atr_pct = np.asarray(atr_pct, dtype="float64")
    res = np.full(len(out), np.nan)
    res[out == "tp"] = take_profit_atr * atr_pct[out == "tp"]
    stop = (out == "sl") | (out == "both")
    res[stop] = -stop_atr * atr_pct[stop]
    to = out == "timeout"
    res[to] = np.expm1(fwd[to])
    return res


def build_labels(bars: pd.DataFrame, settings: AppSettings) -> pd.DataFrame:
    """Labels for every (symbol, session) with a bar: label_/outcome_/fwd_return_<horizon>."""
    p = build_panel(bars, None, settings.data.calendar)
    atr_abs = atr(p.high, p.low, p.close, settings.features.atr_window)
    frames: dict[str, np.ndarray] = {}
    for name, h in settings.labels.horizons.items():
        res = barrier_labels(p.high, p.low, p.close, atr_abs, h, settings)
        frames[f"label_{name}"] = res["label"]
        codes = res["outcome"]
        frames[f"outcome_{name}"] = np.where(codes >= 0, np.array(OUTCOMES, dtype=object)[codes],
                                             None)
        frames[f"fwd_return_{name}"] = res["fwd_return"]
    out = to_long(p, frames, p.present)
    for name in settings.labels.horizons:
        out[f"outcome_{name}"] = out[f"outcome_{name}"].astype("string")
    return out
