"""What a finished session writes under ``data/state/`` (atomically, in this order).

``episodes.parquet`` (from the trade log), ``sessions/<D>.json`` (the execution summary),
``equity.parquet`` (one row per session), ``portfolio.json`` (the book the next plan reads),
``kill_switch.json`` (the session's switch), the session's alerts (raised again where one is
missing: an alert is written once per session, code and key), and finally the session record
``execution/<D>.json`` with a committed status (``done``, or ``abandoned``) and the trade
log's head (:func:`tasks.execution.tradelog.anchor`): the **commit point**. A crash in
between leaves the record at ``closing`` (or ``running``); the next run writes them all again
(same bytes) and commits. A session never writes a book over a later
one: :func:`finish` refuses when ``portfolio.json`` is already at a later session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from tasks.alerts import raise_alert
from tasks.execution import ledger
from tasks.execution.episodes import write_episodes
from tasks.execution.state import (
    SessionState,
    kill_switch_of,
    save_kill_switch,
    save_portfolio,
    save_session_state,
)
from tasks.execution.tradelog import anchor, read_records
from tasks.io import atomic_write_json, atomic_write_parquet, fault_point
from tasks.paths import Paths, state_dir

EQUITY_COLUMNS = ["session", "start_net_liquidity", "end_net_liquidity", "day_pnl_pct",
                  "drawdown", "kill_switch"]


class EquityFrame(pa.DataFrameModel):
    """data/state/equity.parquet: one row per executed session."""

    session: Series[str] = pa.Field(unique=True)
    start_net_liquidity: Series[float] = pa.Field(gt=0)
    end_net_liquidity: Series[float]
    day_pnl_pct: Series[float]
    drawdown: Series[float] = pa.Field(ge=0, le=1)
    kill_switch: Series[bool]

    class Config:
        strict = True
        coerce = False


def sessions_dir(paths: Paths) -> Path:
    return state_dir(paths) / "sessions"


def equity_path(paths: Paths) -> Path:
    return state_dir(paths) / "equity.parquet"


def pnl_by_bucket(st: SessionState) -> dict[str, float]:
    """Day P&L per bucket as fractions of start NL (value change + cash flows per symbol);
    ``sip`` = the share of a positive day moved to the SIP bucket."""
    out = {"core": 0.0, "penny": 0.0, "fno": 0.0}
    symbols = set(st.start_values) | set(st.holdings) | set(st.flows)
    for sym in symbols:
        held = st.holdings.get(sym)
        end = held.qty * held.mark if held else 0.0
        pnl = end - st.start_values.get(sym, 0.0) + st.flows.get(sym, 0.0)
        bucket = st.buckets.get(sym, "core")
        out[bucket] = out.get(bucket, 0.0) + pnl / st.start_nl
    out["sip"] = st.info.get("sip_transfer", 0.0) / st.start_nl
    return out


def summary(st: SessionState, quarantine: dict[str, Any], stage: str) -> dict[str, Any]:
    """The execution summary of a session (the contract's fields, then extras)."""
    end = st.net_liquidity()
    c = st.counters
    kill = st.kill or {}
    return {
        "session": st.session, "mode": st.mode, "start_net_liquidity": st.start_nl,
        "end_net_liquidity": end, "day_pnl": end - st.start_nl,
        "day_pnl_pct": (end - st.start_nl) / st.start_nl, "pnl_by_bucket": pnl_by_bucket(st),
        "turnover": c["notional"] / st.start_nl, "kill_switch": st.halted,
        "kill_switch_at": kill.get("at"), "orders": int(c["orders"]), "fills": int(c["fills"]),
        "clamps_fired": dict(sorted(st.clamps_fired.items())),
        "policy_version": st.policy_version, "model_id": st.model_id,
        "fees": c["fees"], "slippage": c["slippage"], "sip_transfer": st.info.get("sip_transfer", 0.0),
        "positions_end": len(st.holdings), "stalled": st.stalled, "failures": st.failures,
        "quarantine": quarantine, "go_live_stage": stage,
        "kill_switch_detail": kill or None, "reconciled": st.info.get("reconciled", []),
        "plan": st.info.get("plan"), "plan_policy_version": st.info.get("plan_policy_version"),
        "bars": st.info.get("bars"), "input_key": st.input_key,
    }


def update_equity(paths: Paths, row: dict[str, Any]) -> pd.DataFrame:
    """Replace the session's row, keep sessions in order, recompute the drawdown."""
    path = equity_path(paths)
    old = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=EQUITY_COLUMNS)
    old = old.loc[old["session"] != row["session"]]
    frame = pd.concat([old, pd.DataFrame([row])], ignore_index=True) if len(old) else \
        pd.DataFrame([row])
    frame = frame.sort_values("session", kind="stable").reset_index(drop=True)
    first = float(frame["start_net_liquidity"].iloc[0])
    peak = frame["end_net_liquidity"].astype("float64").cummax().clip(lower=first)
    frame["drawdown"] = (1.0 - frame["end_net_liquidity"].astype("float64") / peak).clip(lower=0.0)
    frame = frame[EQUITY_COLUMNS].astype({"session": "string", "start_net_liquidity": "float64",
                                          "end_net_liquidity": "float64",
                                          "day_pnl_pct": "float64", "drawdown": "float64",
                                          "kill_switch": "bool"})
    atomic_write_parquet(path, EquityFrame.validate(frame))
    return frame


ALERT_LEVELS = {"data_stall": "WARN", "remote_unavailable": "WARN", "reasoner_offline": "WARN",
                "rl_missing": "WARN"}


def session_alerts(st: SessionState, quarantine_sessions: int | None = None
                   ) -> list[dict[str, Any]]:
    """Every alert session ``st`` raised, as its state records them: the kill switch (and the
    quarantine it started), each failure mode, and those noted in ``info["alerts"]``."""
    out = list(st.info.get("alerts", []))
    kill = st.kill or {}
    if st.halted and kill.get("tripped"):
        out.append({"code": "kill_switch", "level": "CRITICAL", "key": "", "at": kill.get("at"),
                    "data": {"day_pnl_pct": kill.get("day_pnl_pct"),
                             "day_pnl": kill.get("day_pnl"), "threshold": kill.get("threshold"),
                             "flattened": kill.get("flattened", [])}})
        if kill.get("quarantine_activated"):
            out.append({"code": "quarantine_activated", "level": "CRITICAL", "key": "",
                        "at": kill.get("at"), "data": {"sessions": quarantine_sessions}})
    for f in st.failures:
        out.append({"code": f["alert"], "level": ALERT_LEVELS.get(f["alert"], "WARN"),
                    "key": f.get("key", ""), "at": f.get("at"), "data": f.get("data", {})})
    return out


def raise_session_alerts(paths: Paths, st: SessionState,
                         quarantine_sessions: int | None = None) -> list[dict[str, Any]]:
    """Raise the session's alerts that are not in alerts.jsonl yet (idempotent)."""
    raised = []
    for a in session_alerts(st, quarantine_sessions):
        rec = raise_alert(paths, a["code"], session=st.session, at=a["at"] or st.last_ts or "",
                          level=a["level"], key=a["key"], data=a["data"])
        if rec is not None:
            raised.append(rec)
    return raised


def finish(paths: Paths, st: SessionState, quarantine: dict[str, Any], stage: str, *,
           status: str = "done", quarantine_sessions: int | None = None) -> dict[str, Any]:
    """Write the session's outputs and commit it (see the module docstring); returns the
    summary. ``status``: ``done``, or ``abandoned`` (closed by an operator as it stood)."""
    book = ledger.read_portfolio(paths)
    later = book is not None and book.as_of_session and book.as_of_session > st.session
    if later and status != "abandoned":
        raise ledger.SessionOrderError(
            f"session {st.session} cannot be committed: the book is already at the later session "
            f"{book.as_of_session} and a session never rewrites a later book")
    write_episodes(paths, read_records(paths))
    fault_point("commit_episodes")
    out = summary(st, quarantine, stage)
    if status != "done":
        out[status] = st.info.get(status)
    atomic_write_json(sessions_dir(paths) / f"{st.session}.json", out)
    fault_point("commit_summary")
    update_equity(paths, {"session": st.session, "start_net_liquidity": st.start_nl,
                          "end_net_liquidity": out["end_net_liquidity"],
                          "day_pnl_pct": out["day_pnl_pct"], "drawdown": 0.0,
                          "kill_switch": st.halted})
    fault_point("commit_equity")
    if not later:
        save_portfolio(paths, st)
        fault_point("commit_book")
        save_kill_switch(paths, kill_switch_of(st))
        fault_point("commit_kill_switch")
    raise_session_alerts(paths, st, quarantine_sessions)
    fault_point("commit_alerts")
    st.status = status
    st.tradelog_anchor = anchor(paths)  # records cut from the log's end are found later
    save_session_state(paths, st)
    return out


def load_summary(paths: Paths, session: str) -> dict[str, Any] | None:
    path = sessions_dir(paths) / f"{session}.json"
    return json.loads(path.read_text()) if path.is_file() else None
