"""The operator's view of execution: mode, book, day P&L, kill switch, quarantine, live gates.

Every state file is read strictly (:mod:`tasks.execution.ledger`): a damaged book, kill switch
or session record stops ``hcp status`` with its one-line error; a missing ``kill_switch.json``
shows the switch as the last session's record says it stands (tripped stays tripped).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tasks.data.calendar import sessions as calendar_sessions
from tasks.execution import ledger, quarantine
from tasks.execution.gates import live_gates
from tasks.execution.outputs import load_summary
from tasks.execution.overrides import operator_overrides
from tasks.execution.sessions import sessions_after
from tasks.execution.state import (
    load_kill_switch,
    load_portfolio,
    load_session_state,
)
from tasks.paths import Paths
from tasks.settings import AppSettings


def next_session(calendar: str, after: str | None, today: pd.Timestamp) -> str:
    """The session after ``after`` (or the first session from ``today``)."""
    start = pd.Timestamp(after) + pd.Timedelta(days=1) if after else today.normalize()
    days = calendar_sessions(calendar, start, start + pd.Timedelta(days=14))
    return days[0].date().isoformat()


def latest_session(paths: Paths) -> str | None:
    """The newest session with an execution record (temporary files are not records)."""
    days = ledger.record_sessions(paths)
    return days[-1] if days else None


def _positions(holdings: dict) -> list[dict[str, Any]]:
    return [{"symbol": s, "qty": h.qty, "price": h.mark, "bucket": h.bucket, "sector": h.sector,
             "entry_price": h.entry_price, "stop": h.stop, "take_profit": h.take_profit,
             "sessions_held": h.sessions_held} for s, h in sorted(holdings.items())]


def status(paths: Paths, settings: AppSettings, today: pd.Timestamp) -> dict[str, Any]:
    """Everything `hcp status` shows; ``today`` only picks the next session when none ran."""
    led = ledger.read_ledger(paths)  # strict: a damaged book or record stops here
    last = latest_session(paths)
    st = load_session_state(paths, last) if last else None
    running = st is not None and st.status in ledger.OPEN
    nxt = last if running else next_session(settings.data.calendar, last, today)
    if running:
        nl, holdings, start = st.net_liquidity(), st.holdings, st.start_nl
        day = {"day_pnl": nl - start, "day_pnl_pct": (nl - start) / start}
    else:
        book = load_portfolio(paths, settings)
        nl, holdings = book.net_liquidity, book.holdings
        s = load_summary(paths, last) if last else None
        day = {k: (s or {}).get(k) for k in ("day_pnl", "day_pnl_pct")}
    qstate = quarantine.load_state(paths)
    q = quarantine.status(qstate, nxt, sessions_after(settings.data.calendar))
    forced = operator_overrides(paths)
    return {
        "mode": "demo" if forced.get("forced_demo") else settings.execution.mode,
        "configured_mode": settings.execution.mode,
        "forced_demo": {k: forced.get(k) for k in ("forced_demo", "since", "by", "reason")},
        "go_live_stage": settings.execution.go_live_stage,
        "last_session": last, "session_running": running, "next_session": nxt,
        "unfinished_sessions": led.unfinished(),
        "net_liquidity": nl, "positions": _positions(holdings), **day,
        "kill_switch": load_kill_switch(paths) or {"tripped": False, "session": None},
        "quarantine": {"active": q.active, "kind": q.kind, "days_left": q.days_left,
                       "since": q.start, "describe": q.describe(),
                       "kill_days": qstate["kill_days"][-10:], "history": qstate["history"][-5:]},
        "live_gates": [{"gate": g.name, "ok": g.ok, "detail": g.detail}
                       for g in live_gates(paths, settings, nxt)],
    }
