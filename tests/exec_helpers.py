"""Hand-built sessions for the execution tests: bars, plans and books in a temporary home."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from tasks.data.calendar import session_bounds
from tasks.paths import Paths
from tasks.plan.build import PLAN_COLUMNS
from tasks.settings import AppSettings, load_settings

SESSION, PREV = "2020-03-09", "2020-03-06"  # a Monday and the Friday before
FRICTIONLESS = {"half_spread_bps": 0.0, "impact_coef": 0.0}


def settings(execution: dict[str, Any] | None = None, fee: float = 0.0, **other: Any
             ) -> AppSettings:
    """Settings with a frictionless fill model and no fee unless asked otherwise; escalation off
    (the SANITY_JUDGE hook then only records the request) unless ``escalation`` is given."""
    exe = {"fill": {**FRICTIONLESS}, **(execution or {})}
    other.setdefault("escalation", {"enabled": False})
    return load_settings(execution=exe, guardrails={"fee_pct": fee, **other.pop("guardrails", {})},
                         **other)


def bars(session: str, series: dict[str, list[tuple[float, float, float, float]]],
         volume: float = 1e6, start: dict[str, int] | None = None, pad: bool = True,
         minutes: int = 5) -> pd.DataFrame:
    """5-minute bars from (open, high, low, close) tuples; a symbol's series begins at bar
    ``start[symbol]``; with ``pad`` it is extended to the session's close at its last close."""
    open_utc, close_utc = session_bounds("XNYS", session)
    n_total = int((close_utc - open_utc) / pd.Timedelta(minutes=minutes))
    rows = []
    for sym, seq in series.items():
        first = (start or {}).get(sym, 0)
        seq = list(seq)
        if pad:
            last = seq[-1][3]
            seq += [(last, last, last, last)] * (n_total - first - len(seq))
        for k, (o, h, lo, c) in enumerate(seq):
            ts = open_utc + pd.Timedelta(minutes=minutes * (first + k + 1))
            rows.append({"symbol": sym, "ts": ts, "open": o, "high": h, "low": lo, "close": c,
                         "volume": volume})
    frame = pd.DataFrame(rows)
    frame["symbol"] = frame["symbol"].astype("string")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns")
    return frame.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def plan_row(ticker: str, qty: int, entry: float, atr: float, action: str = "BUY",
             sector: str = "Tech", tags: str = "test") -> dict[str, Any]:
    sign = 1 if action == "BUY" else -1
    return {"ticker": ticker, "regime": "med_vol", "prob_win_cal": 0.2, "entry_price": entry,
            "qty": qty, "position_cash": qty * entry, "exp_pnl": 0.01, "exp_pnl_net": 0.01,
            "etth_days": 5.0, "epnl_time": 0.002, "action": action, "score": 0.8,
            "stop": entry - sign * 1.8 * atr, "take_profit": entry + sign * 2.5 * atr,
            "bucket": "core", "sector": sector, "reason_tags": tags, "policy_version": "pol-test",
            "model_id": "m-test"}


def write_plan(paths: Paths, prev: str, rows: list[dict[str, Any]]) -> None:
    folder = paths.val / "plans" / prev
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    frame["epnl_time"] = [0.01 - i * 1e-4 for i in range(len(frame))]
    frame.to_csv(folder / "trade_plan.csv", index=False)


def write_book(paths: Paths, cash: float, positions: list[dict[str, Any]],
               as_of: str = PREV) -> None:
    """portfolio.json with carried positions (symbol, qty, price[, sector, stop, ...])."""
    nl = cash + sum(p["qty"] * p["price"] for p in positions)
    full = [{"bucket": "core", "sector": "Tech", "delta": 1.0, "lots": 1, **p} for p in positions]
    path = paths.data / "state" / "portfolio.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"net_liquidity": nl, "cash": cash, "positions": full,
                                "as_of_session": as_of}))


def records(paths: Paths, session: str | None = None) -> list[dict[str, Any]]:
    from tasks.execution.tradelog import read_records

    return read_records(paths, session)
