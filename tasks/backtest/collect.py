"""The frames of a backtest, read from its own root after the walk.

One row per executed session (the paper broker ran the plan of the session before on it):
equity, the day's return, the benchmark's return, exposure, turnover, costs, the regime, the
policy version, kill switch, escalations, orders and whether every risk gate held; and one row
per closed episode (the trades, with their R multiples). The benchmark is the equal-weight
buy-and-hold of the same universe: one unit of value in every name with a price at the close
of the first session, held, the names' adjusted closes carried over missing days.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.backtest.analytics import BacktestFrames
from tasks.execution.episodes import episodes_path
from tasks.execution.ledger import record_path as execution_record_path
from tasks.execution.outputs import equity_path, sessions_dir
from tasks.paths import Paths

TRADE_COLUMNS = ["symbol", "side", "bucket", "entry_session", "exit_session", "pnl",
                 "r_multiple", "policy_version", "model_id"]


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def benchmark_returns(bars: pd.DataFrame, days: pd.DatetimeIndex) -> pd.Series:
    """Day returns of the equal-weight buy-and-hold of every name priced at ``days[0]``."""
    close = (bars.pivot_table(index="date", columns="symbol", values="adj_close")
             .reindex(days).ffill())
    base = close.iloc[0]
    held = close.loc[:, base.notna() & (base > 0)]
    value = (held / held.iloc[0]).mean(axis=1)
    return value.pct_change().iloc[1:].rename("benchmark_returns")


def _gross(root: Paths, day: str, nl: float) -> float:
    rec = _json(execution_record_path(root, day))
    held = rec.get("holdings") or {}
    gross = sum(abs(float(h["qty"]) * float(h["mark"])) for h in held.values())
    return gross / nl if nl > 0 else np.nan


def _escalations(root: Paths, day: str) -> int:
    return len(_json(root.reports / "escalations" / f"{day}.json").get("calls", []))


def _health(root: Paths, day: str) -> dict[str, Any]:
    return _json(root.reports / "health" / f"daily_health_{day}.json")


def daily_frame(root: Paths, bars: pd.DataFrame, days: pd.DatetimeIndex) -> pd.DataFrame:
    """One row per executed session of the walk (see the module docstring)."""
    path = equity_path(root)
    if not path.is_file():
        return pd.DataFrame(columns=["equity", "returns", "benchmark_returns"],
                            index=pd.DatetimeIndex([], name="session"))
    equity = pd.read_parquet(path)
    rows = []
    for _, e in equity.iterrows():
        d = str(e["session"])
        s = _json(sessions_dir(root) / f"{d}.json")
        health = _health(root, d)
        end = float(e["end_net_liquidity"])
        quarantined = bool((s.get("quarantine") or {}).get("active"))
        status = (health.get("summary") or {}).get("status")
        rows.append({
            "session": pd.Timestamp(d), "equity": end, "returns": float(e["day_pnl_pct"]),
            "gross_exposure": _gross(root, d, end), "turnover": float(s.get("turnover", 0.0)),
            "costs": float(s.get("fees", 0.0)) + float(s.get("slippage", 0.0)),
            "vol_regime": str((health.get("market") or {}).get("market_regime") or "unknown"),
            "policy_version": str(s.get("policy_version") or "none"),
            "kill_switch": bool(e["kill_switch"]), "escalations": _escalations(root, d),
            "orders": int(s.get("orders", 0)),
            "risk_gates_held": not bool(e["kill_switch"]) and not quarantined
            and status != "ERROR",
        })
    daily = pd.DataFrame(rows).set_index("session").sort_index()
    bench = benchmark_returns(bars, days)
    daily["benchmark_returns"] = bench.reindex(daily.index).fillna(0.0).to_numpy()
    return daily


def trades_frame(root: Paths) -> pd.DataFrame:
    """The closed episodes of the walk."""
    path = episodes_path(root)
    if not path.is_file():
        return pd.DataFrame(columns=TRADE_COLUMNS)
    eps = pd.read_parquet(path)
    for col in TRADE_COLUMNS:
        if col not in eps:
            eps[col] = np.nan
    return eps[TRADE_COLUMNS].reset_index(drop=True)


def collect(root: Paths, bars: pd.DataFrame, days: pd.DatetimeIndex, meta: dict[str, Any]
            ) -> BacktestFrames:
    """The backtest's frames from its root."""
    return BacktestFrames(daily=daily_frame(root, bars, days), trades=trades_frame(root),
                          meta=meta)
