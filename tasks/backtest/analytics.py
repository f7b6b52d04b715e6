"""The backtest's figures: return statistics of the strategy and of its benchmark, trade
statistics, and the same figures by year, by volatility regime and by policy version.

Every return statistic comes from empyrical (``empyrical-reloaded``) on daily returns with
252 sessions a year: Sharpe and Sortino ratios (no risk-free rate, required return 0),
compound annual growth, annualised volatility, maximum drawdown, the drawdown and growth
curves, the rolling Sharpe ratio and the monthly and yearly compounding. This module only
selects the series, calls the library and makes the results JSON-safe (``None`` for NaN or
infinity). Nothing raises on a short span or an empty trade list: a figure that cannot be
computed is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import empyrical as ep
import empyrical.stats as ep_stats
import numpy as np
import pandas as pd

from tasks.numbers import json_number

TRADING_DAYS = 252  # sessions a year: the annualisation of every ratio
ROLLING_WINDOW = 63  # sessions in the rolling Sharpe window (about a quarter)
RETURN_FIGURES = ("total_return", "cagr", "sharpe", "sortino", "volatility", "max_drawdown")
GROUP_KEYS = ("year", "vol_regime", "policy_version")


@dataclass
class BacktestFrames:
    """What a backtest hands to its analytics and tearsheet.

    ``daily`` is indexed by session (tz-naive DatetimeIndex) with the columns equity
    (end-of-session net liquidity), returns (the session's P&L as a fraction), benchmark_returns
    (equal-weight buy-and-hold of the same universe), gross_exposure (fraction of net
    liquidity), turnover (traded notional / net liquidity), costs (fees and spread paid, in
    currency), vol_regime, policy_version, kill_switch, escalations, orders and
    risk_gates_held. ``trades`` holds the closed episodes: symbol, side, bucket, entry_session,
    exit_session, pnl, r_multiple (may be NaN), policy_version and model_id. ``meta``: start,
    end, baseline_id, universe (number of names), survivorship_bias, reasoner, out_of_sample
    and note strings."""

    daily: pd.DataFrame
    trades: pd.DataFrame
    meta: dict = field(default_factory=dict)


def clean_returns(values: Any) -> pd.Series:
    """A float Series of daily returns with the missing sessions left out."""
    series = pd.Series(values, dtype="object") if not isinstance(values, pd.Series) else values
    return pd.to_numeric(series, errors="coerce").astype("float64").dropna()


def return_figures(returns: Any) -> dict[str, float | None]:
    """Total return, CAGR, Sharpe, Sortino, annualised volatility and maximum drawdown (a
    positive fraction) of daily returns, all from empyrical at 252 sessions a year."""
    r = clean_returns(returns)
    if r.empty:
        return dict.fromkeys(RETURN_FIGURES)
    drawdown = json_number(ep.max_drawdown(r))
    return {
        "total_return": json_number(ep.cum_returns_final(r)),
        "cagr": json_number(ep.cagr(r, annualization=TRADING_DAYS)),
        "sharpe": json_number(ep.sharpe_ratio(r, annualization=TRADING_DAYS)),
        "sortino": json_number(ep.sortino_ratio(r, annualization=TRADING_DAYS)),
        "volatility": json_number(ep.annual_volatility(r, annualization=TRADING_DAYS)),
        "max_drawdown": None if drawdown is None else abs(drawdown),
    }


def _mean(values: Any) -> float | None:
    v = pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce").dropna()
    return json_number(v.mean()) if len(v) else None


def trade_figures(trades: pd.DataFrame | None) -> dict[str, Any]:
    """Closed trades, the share with a positive P&L (``None`` without trades) and the mean
    R-multiple of those with one (``None`` when none has)."""
    if trades is None or trades.empty:
        return {"trades": 0, "hit_rate": None, "avg_r": None}
    pnl = pd.to_numeric(trades["pnl"], errors="coerce").dropna() if "pnl" in trades else None
    hit = json_number((pnl > 0).mean()) if pnl is not None and len(pnl) else None
    avg_r = _mean(trades["r_multiple"]) if "r_multiple" in trades else None
    return {"trades": int(len(trades)), "hit_rate": hit, "avg_r": avg_r}


def column(daily: pd.DataFrame, name: str) -> pd.Series:
    """A column of ``daily``, or NaN at every session when it is absent."""
    return daily[name] if name in daily else pd.Series(np.nan, index=daily.index)


def summary_figures(frames: BacktestFrames) -> dict[str, Any]:
    """The headline figures of a backtest (JSON-safe): the strategy's return figures, its
    trade, exposure, cost and control figures, and ``benchmark`` with the benchmark's return
    figures over the same sessions."""
    daily = frames.daily.sort_index()
    sessions = int(len(daily))
    kill = column(daily, "kill_switch").fillna(False).astype(bool)
    escalations = pd.to_numeric(column(daily, "escalations"), errors="coerce").fillna(0)
    costs = pd.to_numeric(column(daily, "costs"), errors="coerce")
    out: dict[str, Any] = {
        **return_figures(column(daily, "returns")),
        **trade_figures(frames.trades),
        "turnover": _mean(column(daily, "turnover")),
        "exposure": _mean(column(daily, "gross_exposure")),
        "costs_total": json_number(costs.sum()) if costs.notna().any() else None,
        "kill_switch_days": int(kill.sum()),
        "escalations_per_day": json_number(escalations.sum() / sessions) if sessions else None,
        "sessions": sessions,
        "start": daily.index[0].date().isoformat() if sessions else None,
        "end": daily.index[-1].date().isoformat() if sessions else None,
        "benchmark": return_figures(column(daily, "benchmark_returns")),
    }
    return out


def _label(value: Any) -> str | None:
    return None if value is None or value is pd.NA or pd.isna(value) else str(value)


def _trade_groups(frames: BacktestFrames, key: str, daily: pd.DataFrame) -> list[str | None]:
    """The group of each closed trade: the year it closed, the volatility regime of the session
    it closed in (the last session on or before its exit), or the policy version it traded
    under."""
    trades = frames.trades
    if trades is None or trades.empty:
        return []
    exits = pd.to_datetime(trades["exit_session"], errors="coerce")
    if key == "year":
        return [_label(t.year) if pd.notna(t) else None for t in exits]
    if key == "policy_version" and key in trades:
        return [_label(v) for v in trades[key]]
    if daily.empty or key not in daily:
        return [None] * len(trades)
    labels = daily[key].reindex(pd.DatetimeIndex(exits.to_numpy()), method="ffill")
    return [_label(v) for v in labels]


def figures_by(frames: BacktestFrames, key: str) -> list[dict[str, Any]]:
    """One row per group of sessions, in the order the groups first appear: the sessions, the
    compounded return, the Sharpe ratio and the maximum drawdown of the group's daily returns
    (a regime or a policy version need not hold contiguous sessions: its sessions are chained),
    and the trades that closed in the group with their hit rate.

    ``key``: ``year``, ``vol_regime`` or ``policy_version``."""
    if key not in GROUP_KEYS:
        raise ValueError(f"unknown grouping {key!r}; one of {', '.join(GROUP_KEYS)}")
    daily = frames.daily.sort_index()
    if key == "year":
        groups = pd.Series(daily.index.year.astype(str), index=daily.index, dtype="object")
    else:
        groups = column(daily, key).astype("string").fillna("n/a").astype("object")
    trade_groups = _trade_groups(frames, key, daily)
    rows = []
    for name in pd.unique(groups.to_numpy()):
        in_group = (groups == name).to_numpy()
        figures = return_figures(column(daily, "returns")[in_group])
        picked = np.array([g == name for g in trade_groups], dtype=bool)
        t = trade_figures(frames.trades.loc[picked] if picked.any() else None)
        rows.append({"group": str(name), "sessions": int(in_group.sum()),
                     "return": figures["total_return"], "sharpe": figures["sharpe"],
                     "max_drawdown": figures["max_drawdown"],
                     "trades": t["trades"], "hit_rate": t["hit_rate"]})
    return rows


# --------------------------------------------------------------------------- chart series


def growth(returns: Any, start: float = 100.0) -> pd.Series:
    """The value of ``start`` invested at the first session (empyrical's cumulative returns)."""
    r = clean_returns(returns)
    return ep.cum_returns(r, starting_value=start) if len(r) else r


def drawdown(returns: Any) -> pd.Series:
    """The drawdown at each session as a negative fraction of the running peak (empyrical);
    its minimum is minus the maximum drawdown."""
    r = clean_returns(returns)
    return ep_stats.drawdown_series(r) if len(r) else r


def rolling_sharpe(returns: Any, window: int = ROLLING_WINDOW) -> pd.Series:
    """The annualised Sharpe ratio over each trailing ``window`` sessions (empyrical); empty when
    the span is shorter than the window."""
    r = clean_returns(returns)
    if len(r) < window:
        return pd.Series([], dtype="float64")
    return ep.roll_sharpe_ratio(r, window, annualization=TRADING_DAYS)


def monthly_returns(returns: Any) -> pd.DataFrame:
    """Compounded returns by calendar month (empyrical): one row per year, columns 1..12 and
    ``year`` (the year's compounded return); NaN for a month without sessions."""
    r = clean_returns(returns)
    columns = [*range(1, 13), "year"]
    if r.empty:
        return pd.DataFrame(columns=columns, dtype="float64")
    months = ep.aggregate_returns(r, "monthly")
    table = months.unstack(level=-1).reindex(columns=range(1, 13))
    table["year"] = ep.aggregate_returns(r, "yearly")
    table.index = [int(y) for y in table.index]
    return table.reindex(columns=columns).astype("float64")
