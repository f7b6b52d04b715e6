"""Expected P&L of a barrier trade, per symbol, from the model's predicted outcomes.

A trade bought at the close with a take-profit ``b`` ATR above and a stop ``a`` ATR below
(the model's label barriers) ends one of three ways within the horizon. The model predicts,
per symbol (``tasks/models/payoff.py``), each calibrated per volatility regime out of sample:

- ``p``  = P(take-profit first)                          (the ensemble's calibrated P(win))
- ``q``  = P(stop first | not a win)                      (the payoff head)
- ``r``  = E[timeout return | x] in ATR units, relative to the market (the payoff head)

so that ``P(stop) = (1 - p) q`` and ``P(timeout) = (1 - p)(1 - q)``, and, as a fraction of entry::

    barrier     = atr_pct * (p * b - P(stop) * a + P(timeout) * r)
    exp_pnl     = w_id * (barrier - mean(barrier over the session's scored names))
                + w_rank * atr_pct * (session percentile of the ranking score - 0.5)
    exp_pnl_net = exp_pnl - 2 * (fee_pct + slippage)       (fees and slippage both ways)
    exp_r       = exp_pnl_net / (a * atr_pct)               (expected R-multiple; 1R = the stop)

``w_id`` and ``w_rank`` (per regime, >= 0) are how much each part explained realised P&L
relative to the session on earlier out-of-sample rows (``tasks/models/payoff.py``); a part
that did not help gets 0; a baseline without them uses the identity alone (1, 0).

The expectancy is **relative to the session's average name**: the model makes no forecast of
the market's direction, so the level that every name shares (the drift of the training span,
and any bias of the calibrated levels) is taken out. ``exp_pnl`` is the P&L the trade is
expected to make if the market as a whole goes nowhere; a BUY must beat the average name by
more than its costs. Without this, a rising training span made every name look profitable.

The uncertainty of the estimate has two parts, taken as independent:

- the ensemble's own disagreement: ``p_sd`` = the standard deviation of the base models'
  calibrated P(win), carried through the identity (delta method,
  d exp_pnl / dp = atr_pct * (b + q a - (1 - q) r)): ``se_id = w_id * atr_pct * |b + q a -
  (1 - q) r| * p_sd``;
- the standard error of the ranking score's weight ``se(w_rank)`` (Fama-MacBeth over the
  earlier out-of-sample sessions, their overlap counted): ``se_rank = se(w_rank) * atr_pct *
  |percentile - 0.5|``::

    exp_pnl_se  = sqrt(se_id^2 + se_rank^2)
    exp_pnl_lb  = exp_pnl_net - z * exp_pnl_se

A BUY needs ``exp_pnl_lb > 0`` (``fusion.expectancy_z``, default 1). ``etth_days`` (expected
time to hit, in sessions) is the ATR-based proxy of a driftless random walk leaving the band
(-a ATR, +b ATR): ``a * b * (atr_pct / sigma_daily)^2``, capped at the horizon;
``epnl_time = exp_pnl_net / etth_days`` ranks the plan.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tasks.models.barrier import ALL


def lookup(stats: dict[str, dict], regime: pd.Series, key: str,
           default: float | None = None) -> np.ndarray:
    """Per-row value of ``key`` for each row's regime (the 'all' row when the regime is unknown;
    ``default`` when a baseline's statistics predate the key)."""
    fallback = stats[ALL][key] if default is None else stats[ALL].get(key, default)
    return regime.map(lambda r: stats.get(r, stats[ALL]).get(key, fallback)
                      if isinstance(r, str) else fallback).to_numpy(dtype="float64")


def expectancy_se(p_sd: np.ndarray, q: np.ndarray, r: np.ndarray, atr_pct: np.ndarray,
                  tp_atr: float, stop_atr: float) -> np.ndarray:
    """Standard error of exp_pnl from the ensemble's dispersion of P(win) (delta method)."""
    slope = np.abs(tp_atr + np.asarray(q) * stop_atr - (1 - np.asarray(q)) * np.asarray(r))
    return np.asarray(atr_pct, dtype="float64") * slope * np.nan_to_num(np.asarray(p_sd), nan=0.0)


def second_moment(p: np.ndarray, p_stop: np.ndarray, p_to: np.ndarray, to_sq_atr: np.ndarray,
                  atr_pct: np.ndarray, tp_atr: float, stop_atr: float) -> np.ndarray:
    """E[return^2] of the barrier trade (the Kelly denominator), always > 0 for atr_pct > 0."""
    return np.asarray(atr_pct, dtype="float64") ** 2 * (
        np.asarray(p) * tp_atr ** 2 + np.asarray(p_stop) * stop_atr ** 2
        + np.asarray(p_to) * np.maximum(np.asarray(to_sq_atr), 1e-6))


def slippage_estimate(atr_pct: np.ndarray, cash: np.ndarray, adv_usd: np.ndarray,
                      half_spread_bps: float, impact_coef: float, impact_exponent: float,
                      bar_minutes: int) -> np.ndarray:
    """The paper broker's slippage per side for an order of ``cash`` filled on one intraday bar.

    Same model as the broker (half spread + impact x bar range x participation^exponent), with
    the bar's range taken as ATR% / sqrt(bars per session) and its volume as ADV / bars."""
    bars = max(1.0, 390.0 / bar_minutes)
    bar_range = np.asarray(atr_pct, dtype="float64") / math.sqrt(bars)
    with np.errstate(divide="ignore", invalid="ignore"):
        part = np.clip(np.asarray(cash, dtype="float64") * bars / np.asarray(adv_usd), 0.0, 1.0)
    part = np.where(np.isfinite(part), part, 1.0)
    return half_spread_bps / 1e4 + impact_coef * np.nan_to_num(bar_range) * part ** impact_exponent


def etth_days(atr_pct: np.ndarray, vol_annual: np.ndarray, tp_atr: float, stop_atr: float,
              horizon: int) -> np.ndarray:
    """Expected sessions to the first barrier of a driftless walk, capped at the horizon."""
    sigma = np.asarray(vol_annual, dtype="float64") / math.sqrt(252.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = stop_atr * tp_atr * (np.asarray(atr_pct) / sigma) ** 2
    return np.clip(np.where(np.isfinite(t), t, float(horizon)), 0.5, float(horizon))
