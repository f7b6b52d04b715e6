"""Deterministic fusion of the model's edges into a score and a BUY/SELL/HOLD action.

The runbook's formula, unchanged::

    base   = w_short * e_short + w_mid * e_mid + w_rl * sigmoid(rl_size_hint)
    adjust = - vol_spike - news_negative - low_liquidity - correlation_breakdown
    score  = clamp(base + adjust, 0, 1);  BUY if score >= 0.67, SELL if <= 0.33, else HOLD

What goes in is explicit: ``e_h`` is the *edge* of horizon h on a 0..1 scale, not the raw
calibrated probability. Honest calibrated P(win) for daily large caps sits near its base rate
(well below 0.5 for a 2.5-ATR target against a 1.8-ATR stop), so absolute thresholds of
0.6-0.67 on it would never fire. Two edge definitions are offered (``fusion.edge_mode``):

- ``percentile`` (default): the percentile of P(win) among the day's scored symbols, centred
  so the median symbol scores 0.5: ``(rank - 0.5) / n``;
- ``base_rate_odds``: ``sigmoid(logit(p) - logit(base rate of the symbol's regime))``: 0.5 at
  the base rate, above it when the model sees better odds than usual.

When the RL size hint is missing the runbook's failure mode applies: predictors only (the RL
weight is dropped and the rest renormalised), sizes halved, an alert recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.trading_settings import FusionSettings


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype="float64")))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def percentile_edge(p: np.ndarray) -> np.ndarray:
    """(average rank - 0.5) / n among finite values; NaN stays NaN."""
    s = pd.Series(np.asarray(p, dtype="float64"))
    n = s.notna().sum()
    return ((s.rank(method="average") - 0.5) / n).to_numpy() if n else s.to_numpy()


def odds_edge(p: np.ndarray, base_rate: np.ndarray) -> np.ndarray:
    """sigmoid(logit p - logit base rate): 0.5 at the base rate."""
    out = sigmoid(logit(p) - logit(base_rate))
    return np.where(np.isfinite(p) & np.isfinite(base_rate), out, np.nan)


def horizon_edge(p_cal: np.ndarray, base_rate: np.ndarray, mode: str) -> np.ndarray:
    return percentile_edge(p_cal) if mode == "percentile" else odds_edge(p_cal, base_rate)


@dataclass(frozen=True)
class Weights:
    """Blend weights actually used (RL dropped and the rest renormalised when it is missing)."""

    short: float
    mid: float
    rl: float

    @classmethod
    def effective(cls, policy_weights: dict[str, float], rl_available: bool) -> Weights:
        w = {k: float(policy_weights.get(k, 0.0)) for k in ("short", "mid", "rl")}
        if not rl_available:
            w["rl"] = 0.0
        total = sum(w.values())
        if total <= 0:
            raise ValueError("blend weights sum to zero once the RL hint is dropped")
        return cls(w["short"] / total, w["mid"] / total, w["rl"] / total)


def penalties(frame: pd.DataFrame, cfg: FusionSettings) -> pd.DataFrame:
    """Penalty per row and its tags. Inputs: vol_z (the symbol's volatility z-score),
    news_sentiment, liquidity (ADV / ``liquidity_full_adv_usd``, capped at 1) and market_corr
    (the symbol's 60-session correlation with the equal-weight market: a name that stopped
    moving with the market is a correlation breakdown; the market-wide average correlation
    is a regime signal for escalations, not a per-name penalty).

    A missing input (NaN) applies no penalty and is tagged ``<penalty>:unknown`` (e.g.
    ``news_negative:unknown``); nothing is
    invented for it.
    """
    rules = [
        ("vol_spike", frame["vol_z"], lambda v: v > cfg.vol_spike_z, cfg.vol_spike_penalty),
        ("news_negative", frame["news_sentiment"], lambda v: v < cfg.news_negative,
         cfg.news_penalty),
        ("low_liquidity", frame["liquidity"], lambda v: v < cfg.low_liquidity,
         cfg.liquidity_penalty),
        ("corr_breakdown", frame["market_corr"], lambda v: v < cfg.corr_breakdown,
         cfg.corr_penalty),
    ]
    total = np.zeros(len(frame))
    tags = [[] for _ in range(len(frame))]
    for name, values, hit, size in rules:
        v = values.to_numpy(dtype="float64", na_value=np.nan)
        fired = np.where(np.isfinite(v), hit(np.nan_to_num(v)), False)
        total -= np.where(fired, size, 0.0)
        for i in np.flatnonzero(fired):
            tags[i].append(f"penalty:{name}")
        for i in np.flatnonzero(~np.isfinite(v)):
            tags[i].append(f"{name}:unknown")
    return pd.DataFrame({"adjust": total, "penalty_tags": tags}, index=frame.index)


def fuse(frame: pd.DataFrame, policy_weights: dict[str, float], cfg: FusionSettings
         ) -> pd.DataFrame:
    """Add base, adjust, score, action and rl_missing columns. Needs edge_short, edge_mid,
    rl_size_hint and the penalty inputs. A row without an RL hint uses the predictors only
    (weights renormalised); a row without a short or mid edge is HOLD."""
    hint = frame["rl_size_hint"].to_numpy(dtype="float64", na_value=np.nan)
    has_rl = np.isfinite(hint)
    full = Weights.effective(policy_weights, rl_available=True)
    es = frame["edge_short"].to_numpy(dtype="float64")
    em = frame["edge_mid"].to_numpy(dtype="float64")
    with_rl = full.short * es + full.mid * em + full.rl * sigmoid(np.nan_to_num(hint))
    if policy_weights.get("short", 0) + policy_weights.get("mid", 0) > 0:
        pred = Weights.effective(policy_weights, rl_available=False)
        without = pred.short * es + pred.mid * em
    else:  # an RL-only policy has nothing to fall back on: rows without a hint are HOLD
        without = np.full(len(frame), np.nan)
    base = np.where(has_rl, with_rl, without)
    pen = penalties(frame, cfg)
    score = np.clip(base + pen["adjust"].to_numpy(), 0.0, 1.0)
    action = np.select([score >= cfg.buy_threshold, score <= cfg.sell_threshold],
                       ["BUY", "SELL"], "HOLD")
    out = frame.copy()
    out["base"], out["adjust"] = base, pen["adjust"].to_numpy()
    out["score"] = np.where(np.isfinite(base), score, np.nan)
    out["action"] = np.where(np.isfinite(base), action, "HOLD")
    out["rl_missing"] = ~has_rl
    out["penalty_tags"] = pen["penalty_tags"].to_numpy()
    return out


def predictor_edge(frame: pd.DataFrame, weights: Weights) -> np.ndarray:
    """The predictors' blended edge (RL excluded), the input of the regime gates."""
    ws, wm = weights.short, weights.mid
    if ws + wm <= 0:
        return np.full(len(frame), np.nan)
    return (ws * frame["edge_short"].to_numpy(dtype="float64")
            + wm * frame["edge_mid"].to_numpy(dtype="float64")) / (ws + wm)


def gate(frame: pd.DataFrame, weights: Weights, gates: dict[str, float]) -> pd.DataFrame:
    """Regime gates: a BUY needs predictor edge >= gate[regime], a SELL <= 1 - gate[regime].

    A regime without a gate (or a row without a regime) never passes.
    """
    edge = predictor_edge(frame, weights)
    g = frame["regime"].map(lambda r: gates.get(r, np.nan) if isinstance(r, str) else np.nan)
    g = g.to_numpy(dtype="float64")
    out = frame.copy()
    out["gate_edge"], out["gate"] = edge, g
    out["gate_buy"] = np.isfinite(g) & (edge >= g)
    out["gate_sell"] = np.isfinite(g) & (edge <= 1.0 - g)
    return out
