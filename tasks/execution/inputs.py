"""One session's inputs (plan, bars, daily rows) and its starting state.

Session D executes the plan written by the daily run of the session before D
(``val/plans/<D-1>/trade_plan.csv``; none = no new entries, open positions are still managed)
on D's intraday bars. The input key (session, mode, plan bytes, bars, the execution / risk /
guardrail settings) identifies a run: a finished session is never executed again, and a
session cannot be resumed or repeated with other inputs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.data.calendar import session_bounds
from tasks.data.store import load_bars, read_manifest
from tasks.execution import bars as intraday_bars
from tasks.execution.positions import atr_from_plan
from tasks.execution.sessions import is_session, session_before
from tasks.execution.state import (
    Portfolio,
    SessionState,
    Working,
    load_portfolio,
    load_session_state,
)
from tasks.io import frame_hash, to_json_bytes
from tasks.models.registry import read_registry
from tasks.paths import Paths
from tasks.policy import Policy, current_policy
from tasks.settings import AppSettings
from tasks.trading_settings import RiskSettings


class SessionOrderError(ValueError):
    """A session asked for out of order, or again with other inputs."""


@dataclass
class Prepared:
    session: str
    mode: str
    plan: pd.DataFrame
    plan_path: Path | None
    bars: pd.DataFrame
    bars_source: dict[str, Any]
    daily: pd.DataFrame | None
    key: str
    open_ts: str
    close_ts: str
    policy: Policy | None = None
    policy_version: str = ""
    model_id: str | None = None


def iso(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_path(paths: Paths, settings: AppSettings, session: str) -> Path:
    """Where the plan session ``session`` executes lies (the plan of the session before)."""
    prev = session_before(settings.data.calendar, session)
    return paths.val / "plans" / prev / "trade_plan.csv"


def read_plan(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=["ticker", "action", "qty"])
    plan = pd.read_csv(path, dtype={"ticker": "string", "reason_tags": "string"})
    return plan.loc[plan["qty"] > 0].reset_index(drop=True)


def daily_rows(paths: Paths, session: str, symbols: list[str], given: pd.DataFrame | None
               ) -> pd.DataFrame | None:
    """The store's daily bars of ``session`` for ``symbols`` (None without a store)."""
    if given is not None:
        return given.loc[given["symbol"].isin(symbols)].reset_index(drop=True)
    if read_manifest(paths.store) is None or not symbols:
        return None
    return load_bars(paths.store, start=session, end=session, symbols=symbols)


def session_bars(paths: Paths, settings: AppSettings, session: str, symbols: list[str],
                 bars: str | Path | pd.DataFrame | None, daily: pd.DataFrame | None
                 ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The bars to walk: a frame, a user parquet, or the simulation from daily OHLC."""
    cfg = settings.execution
    if isinstance(bars, pd.DataFrame):
        frame = intraday_bars.validated(bars, "the frame passed in")
        start, end = session_bounds(settings.data.calendar, session)
        keep = frame["symbol"].isin(symbols) & (frame["ts"] > start) & (frame["ts"] <= end)
        return frame.loc[keep].reset_index(drop=True), {"source": "frame"}
    path = bars or cfg.bars_path
    if path:
        path = Path(path) if Path(path).is_absolute() else paths.home / path
        frame = intraday_bars.load_bar_file(path, session, settings.data.calendar, symbols)
        return frame, {"source": str(path)}
    if daily is None or daily.empty:
        if not symbols:
            return intraday_bars.empty_bars(), {"source": "none (nothing to trade or hold)"}
        raise FileNotFoundError(f"no daily bars for {session} in {paths.store} to simulate "
                                "intraday bars from: import the data or pass --bars")
    frame = intraday_bars.simulate_session(daily, session, settings.data.calendar,
                                           cfg.bar_minutes, cfg.sim_points_per_bar, cfg.sim_seed)
    return frame, {"source": "SIMULATION: Brownian bridge through the daily open/high/low/close",
                   "seed": cfg.sim_seed, "bar_minutes": cfg.bar_minutes}


def input_key(session: str, mode: str, plan: Path | None, bars: pd.DataFrame,
              settings: AppSettings) -> str:
    parts = {"session": session, "mode": mode,
             "plan": hashlib.sha256(plan.read_bytes()).hexdigest() if plan and plan.is_file()
             else None,
             "bars": frame_hash(bars.reset_index(drop=True)),
             "settings": {k: settings.model_dump(mode="json")[k]
                          for k in ("execution", "risk", "guardrails")}}
    return hashlib.sha256(to_json_bytes(parts)).hexdigest()[:32]


def check_order(portfolio: Portfolio, session: str) -> None:
    if portfolio.as_of_session and portfolio.as_of_session >= session:
        raise SessionOrderError(
            f"the book in {portfolio.source} is already at session {portfolio.as_of_session}: "
            f"session {session} cannot be executed after it (sessions run in order)")


def prepare(paths: Paths, settings: AppSettings, session: str, *, mode: str,
            bars: str | Path | pd.DataFrame | None = None, daily: pd.DataFrame | None = None
            ) -> Prepared:
    """Plan, bars and input key of session ``session``."""
    if not is_session(settings.data.calendar, session):
        raise ValueError(f"{session} is not a {settings.data.calendar} session")
    ppath = plan_path(paths, settings, session)
    plan = read_plan(ppath)
    started = load_session_state(paths, session)  # a re-run sees the book it started with
    held = set(started.start_values) if started else set(load_portfolio(paths, settings).holdings)
    symbols = sorted(set(plan["ticker"].astype(str)) | held)
    rows = daily_rows(paths, session, symbols, daily)
    frame, source = session_bars(paths, settings, session, symbols, bars, rows)
    start, end = session_bounds(settings.data.calendar, session)
    policy, version = current_policy(paths, settings)
    model = (str(plan["model_id"].iloc[0]) if "model_id" in plan and len(plan)
             else read_registry(paths).get("active"))  # no plan: the model in force
    return Prepared(session, mode, plan, ppath if ppath.is_file() else None, frame, source, rows,
                    input_key(session, mode, ppath, frame, settings), iso(start), iso(end),
                    policy, version, model)


def _corporate_actions(portfolio: Portfolio, daily: pd.DataFrame | None) -> dict[str, float]:
    """Apply the session's splits and dividends to the held positions; cash flows by symbol."""
    flows: dict[str, float] = {}
    if daily is None:
        return flows
    for r in daily.itertuples(index=False):
        h = portfolio.holdings.get(str(r.symbol))
        if h is None:
            continue
        split = float(r.split_coefficient)
        if split > 0 and split != 1.0:
            qty = h.qty * split
            whole = int(math.floor(qty)) if qty > 0 else int(math.ceil(qty))
            cash = (qty - whole) * h.mark / split  # cash in lieu of a fractional share
            for name in ("mark", "entry_price", "atr", "stop", "take_profit", "extreme"):
                if getattr(h, name) is not None:
                    setattr(h, name, getattr(h, name) / split)
            h.qty, h.max_qty = whole, int(h.max_qty * split)
            flows[h.symbol] = flows.get(h.symbol, 0.0) + cash
        if float(r.dividend_amount) > 0:
            flows[h.symbol] = flows.get(h.symbol, 0.0) + h.qty * float(r.dividend_amount)
    return flows


def _working(plan: pd.DataFrame, st: SessionState, risk: RiskSettings,
             splits: dict[str, float]) -> list[Working]:
    out = []
    for r in plan.itertuples(index=False):
        sym, side = str(r.ticker), str(r.action)
        held = st.holdings.get(sym)
        raw = r.reason_tags if "reason_tags" in plan and pd.notna(r.reason_tags) else ""
        tags = [t for t in str(raw).split(";") if t]
        if held is not None and (held.qty > 0) != (side == "BUY"):
            out.append(Working(f"{st.session}|plan|{sym}|exit", sym, side,
                               min(int(r.qty), abs(held.qty)), "exit_signal",
                               tags=[*tags, "exit:plan_signal"]))
            continue
        atr = atr_from_plan(float(r.stop), float(r.take_profit), risk) / splits.get(sym, 1.0)
        out.append(Working(f"{st.session}|plan|{sym}|{side}", sym, side, int(r.qty), "entry",
                           float(r.position_cash) / st.start_nl, [*tags, "entry"], atr,
                           str(r.bucket), str(r.sector), plan_price=float(r.entry_price)))
    return out


def start_state(paths: Paths, settings: AppSettings, prep: Prepared, risk: RiskSettings
                ) -> SessionState:
    """The session's state at the open: the book after corporate actions, the plan's orders."""
    portfolio = load_portfolio(paths, settings)
    check_order(portfolio, prep.session)
    start_values = {s: h.qty * h.mark for s, h in portfolio.holdings.items()}
    flows = _corporate_actions(portfolio, prep.daily)
    st = SessionState(prep.session, prep.mode, prep.key, portfolio.net_liquidity,
                      portfolio.cash + sum(flows.values()), portfolio.sip_balance,
                      portfolio.holdings, start_values=start_values, flows=flows,
                      buckets={s: h.bucket for s, h in portfolio.holdings.items()},
                      policy_version=prep.policy_version, model_id=prep.model_id)
    splits = {} if prep.daily is None else {
        str(r.symbol): float(r.split_coefficient) for r in prep.daily.itertuples(index=False)}
    st.working = _working(prep.plan, st, risk, splits)
    st.info.update(open_ts=prep.open_ts, close_ts=prep.close_ts, bars=prep.bars_source,
                   plan=str(prep.plan_path) if prep.plan_path else None,
                   book_source=portfolio.source,
                   plan_policy_version=(str(prep.plan["policy_version"].iloc[0])
                                        if "policy_version" in prep.plan and len(prep.plan)
                                        else None))
    return st
