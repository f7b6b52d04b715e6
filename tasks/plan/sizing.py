"""Position sizing before the hard clamps (the chain is documented in ``build._size``).

Kelly is computed per symbol from the same probabilities and payoffs as the expectancy
(``build._expectancy``: ``kelly_f = exp_pnl_net / E[r^2]``, the growth-optimal fraction of a
bet with small outcomes), so f* > 0 exactly when the net expectancy is > 0. The book-risk step
scales every new entry by one factor so the one-day 99% value at risk of the whole book (held
positions and new entries, from the recent return covariance) stays within a limit.
Quantities are whole lots, floored; a position below one lot or below ``min_position_cash`` is
dropped, never inflated.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tasks.risk.clamps import Book
from tasks.trading_settings import GuardrailSettings


def kelly_fraction(exp_net: float, second_moment: float) -> float:
    """Growth-optimal fraction f* = E[r] / E[r^2] (negative means: no edge)."""
    if not (second_moment > 0 and math.isfinite(second_moment) and math.isfinite(exp_net)):
        return -1.0
    return exp_net / second_moment


Z99 = 2.3263478740408408  # one-sided 99% quantile of the standard normal


def _covariance(returns: pd.DataFrame, symbols: list[str], min_obs: int = 20) -> np.ndarray:
    """Daily return covariance of ``symbols``; unknown pairs independent, unknown variances the
    median of the known ones (or (2%)^2 when none is known)."""
    cov = returns.reindex(columns=symbols).cov(min_periods=min_obs).to_numpy(dtype="float64")
    diag = np.diag(cov).copy()
    known = diag[np.isfinite(diag) & (diag > 0)]
    fill = float(np.median(known)) if len(known) else 0.02 ** 2
    diag = np.where(np.isfinite(diag) & (diag > 0), diag, fill)
    cov = np.nan_to_num(cov, nan=0.0)
    np.fill_diagonal(cov, diag)
    return cov


def book_var99(weights: np.ndarray, cov: np.ndarray) -> float:
    """One-day 99% VaR (normal) of a book with ``weights`` (signed fractions of net liquidity)."""
    return Z99 * math.sqrt(max(0.0, float(weights @ cov @ weights)))


def book_risk_scale(entry_cash: dict[str, float], book: Book, returns: pd.DataFrame,
                    var_max: float) -> tuple[float, dict]:
    """One factor s in [0, 1] for every new entry so that VaR99(held + s * entries) <= var_max.

    Returns (s, info) with the book's VaR before and after, and the effective number of
    independent bets among the entries (reported, not applied)."""
    nl = book.net_liquidity
    held = [p for p in book.positions.values() if p.qty]
    symbols = [p.symbol for p in held] + [s for s in entry_cash if s not in book.positions]
    index = {s: i for i, s in enumerate(symbols)}
    w_held, w_new = np.zeros(len(symbols)), np.zeros(len(symbols))
    for p in held:
        w_held[index[p.symbol]] = p.qty * p.price * p.delta / nl
    for sym, cash in entry_cash.items():
        w_new[index[sym]] += cash / nl
    cov = _covariance(returns, symbols)
    target = (var_max / Z99) ** 2
    a, b, c = float(w_new @ cov @ w_new), float(w_held @ cov @ w_new), float(w_held @ cov @ w_held)
    full = book_var99(w_held + w_new, cov)
    if full <= var_max or a <= 0:
        scale = 1.0
    elif c >= target:
        scale = 0.0
    else:
        scale = float(np.clip((-b + math.sqrt(max(0.0, b * b - a * (c - target)))) / a, 0.0, 1.0))
    entries = [s for s in entry_cash if entry_cash[s] > 0]
    k = (effective_k(np.array([entry_cash[s] for s in entries]),
                     correlation_matrix(returns, entries)) if len(entries) > 1 else float(len(entries)))
    info = {"book_var99_before_scaling": full, "book_var99": book_var99(w_held + scale * w_new, cov),
            "book_var99_max": var_max, "book_risk_scale": scale, "effective_k": k,
            "n_entries_sized": len(entries)}
    return scale, info


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
