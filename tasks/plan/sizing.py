"""Position sizing before the hard clamps: score-scaled bucket limit, Kelly cap, effective-K.

``cash = per_name_cap(bucket) * net_liquidity * 2 * |score - 0.5|`` (the runbook's
``bucket_limit * 2|score - 0.5|``, with the bucket's per-name limit as the limit), halved when
the RL hint is missing, capped by ``per_trade_target``, by a fractional-Kelly cap once enough
closed episodes exist, and scaled by ``sqrt(effK / n)`` so that n correlated picks carry the
risk of n independent ones. Quantities are whole lots, floored; a position below one lot or
below ``min_position_cash`` is dropped, never inflated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.trading_settings import GuardrailSettings


def kelly_fraction(p: float, payoff_ratio: float) -> float:
    """Full Kelly f* = p - (1 - p) / R (negative means: no edge)."""
    if payoff_ratio <= 0 or not math.isfinite(payoff_ratio):
        return -1.0
    return p - (1.0 - p) / payoff_ratio


@dataclass(frozen=True)
class KellyCap:
    """Cap as a fraction of net liquidity (None when too few episodes) and its inputs."""

    cap: float | None
    n_episodes: int
    win_rate: float | None = None
    payoff_ratio: float | None = None
    reason: str = ""


def kelly_cap(episodes: pd.DataFrame | None, guard: GuardrailSettings,
              market_regime: str | None) -> KellyCap:
    """Fractional Kelly from closed episodes (column ``pnl``), scaled by the market regime."""
    pnl = (episodes["pnl"].to_numpy(dtype="float64") if episodes is not None
           and "pnl" in episodes else np.array([]))
    pnl = pnl[np.isfinite(pnl)]
    n = len(pnl)
    if n < guard.kelly_min_episodes:
        return KellyCap(None, n, reason=f"kelly: {n} closed episodes < {guard.kelly_min_episodes}")
    wins, losses = pnl[pnl > 0], pnl[pnl <= 0]
    p = len(wins) / n
    ratio = (wins.mean() / abs(losses.mean())) if len(wins) and len(losses) and losses.mean() else (
        math.inf if len(wins) else 0.0)
    f = kelly_fraction(p, ratio) if math.isfinite(ratio) else p
    scale = guard.kelly_regime_scale.get(market_regime or "", 1.0)
    cap = max(0.0, f) * guard.kelly_fraction * scale
    return KellyCap(cap, n, p, ratio if math.isfinite(ratio) else None,
                    f"kelly: f*={f:.4f} x {guard.kelly_fraction} x {scale} ({market_regime})")


def effective_k(weights: np.ndarray, corr: np.ndarray) -> float:
    """effK = (sum w)^2 / sum_ij w_i w_j rho_ij, negative correlations clipped to 0."""
    w = np.asarray(weights, dtype="float64")
    rho = np.clip(np.nan_to_num(np.asarray(corr, dtype="float64"), nan=0.0), 0.0, 1.0)
    np.fill_diagonal(rho, 1.0)
    denom = float(w @ rho @ w)
    return float(w.sum() ** 2 / denom) if denom > 0 else float(len(w))


def correlation_matrix(returns: pd.DataFrame, symbols: list[str], min_obs: int = 20) -> np.ndarray:
    """Pairwise return correlations of ``symbols`` (0 where unknown: treated as independent)."""
    if not symbols:
        return np.zeros((0, 0))
    cols = returns.reindex(columns=symbols)
    corr = cols.corr(min_periods=min_obs).to_numpy(dtype="float64")
    return np.nan_to_num(corr, nan=0.0)


def score_cash(score: float, name_cap: float, net_liquidity: float) -> float:
    """The runbook's size: per-name limit x 2|score - 0.5|."""
    return name_cap * net_liquidity * 2.0 * abs(score - 0.5)


def to_quantity(cash: float, price: float, guard: GuardrailSettings) -> tuple[int, str | None]:
    """Whole lots, floored; (0, reason) when that is below one lot or the minimum order."""
    if not (math.isfinite(cash) and math.isfinite(price)) or price <= 0:
        return 0, "size:no_price"
    qty = int(math.floor(cash / price / guard.lot_size)) * guard.lot_size
    if qty <= 0:
        return 0, "size:below_one_lot(dropped, not inflated)"
    if qty * price < guard.min_position_cash:
        return 0, "size:below_min_position_cash(dropped, not inflated)"
    return qty, None
