"""Run one intraday session end to end: gates -> inputs -> engine -> outputs.

:func:`run_session` is what the Prefect flow (:mod:`flows.intraday`) and the replay call. It
holds one lock for all intraday runs of a home (they share the book, the trade log and the
quarantine state), returns the recorded summary when the session is already done with the same
inputs, and resumes a session a crash interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.alerts import raise_alert
from tasks.execution import failures, quarantine
from tasks.execution.broker import Bar
from tasks.execution.engine import Engine, Observer, Setup
from tasks.execution.gates import make_broker, require_live, stage_risk
from tasks.execution.inputs import Prepared, SessionOrderError, prepare, start_state
from tasks.execution.killswitch import SanityJudgeHook
from tasks.execution.outputs import finish, load_summary, sessions_dir
from tasks.execution.sessions import sessions_after
from tasks.execution.state import (
    SessionState,
    load_session_state,
    save_kill_switch,
    save_session_state,
)
from tasks.execution.tradelog import TradeLog
from tasks.paths import Paths
from tasks.plan.runs import session_lock
from tasks.policy import policy_settings
from tasks.settings import AppSettings

Steps = list[tuple[str, str, dict[str, Bar]]]


@dataclass
class IntradayResult:
    session: str
    mode: str
    cached: bool
    summary: dict[str, Any]
    outputs: dict[str, str] = field(default_factory=dict)


def bar_steps(frame: pd.DataFrame, open_ts: str) -> Steps:
    """The bars grouped by end time, in order: (start, end, {symbol: Bar})."""
    if frame.empty:
        return []
    ts = pd.DatetimeIndex(frame["ts"]).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    cols = [frame[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close", "volume")]
    syms = frame["symbol"].astype(str).to_numpy()
    bounds = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1], True])
    steps, start = [], open_ts
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        end = ts[a]
        bars = {syms[k]: Bar(syms[k], end, *(float(c[k]) for c in cols)) for k in range(a, b)}
        steps.append((start, end, bars))
        start = end
    return steps


def quarantine_status(paths: Paths, settings: AppSettings, session: str) -> quarantine.Status:
    return quarantine.status(quarantine.load_state(paths), session,
                             sessions_after(settings.data.calendar))


def cached_result(paths: Paths, prep: Prepared) -> IntradayResult | None:
    """The recorded result of a finished session with these inputs (None: not finished)."""
    st = load_session_state(paths, prep.session)
    if st is None:
        return None
    if st.input_key != prep.key:
        what = "executed" if st.status == "done" else "started"
        raise SessionOrderError(
            f"session {prep.session} was {what} with other inputs (plan, bars or execution/"
            f"risk settings; key {st.input_key} != {prep.key}): executed orders are not undone, "
            "so it is not run again. Restore the state folder to redo it.")
    if st.status != "done":
        return None
    return IntradayResult(prep.session, st.mode, True, load_summary(paths, prep.session) or {},
                          _outputs(paths, prep.session))


def _outputs(paths: Paths, session: str) -> dict[str, str]:
    from tasks.execution.outputs import equity_path
    from tasks.execution.state import portfolio_path
    from tasks.execution.tradelog import tradelog_path

    return {"summary": str(sessions_dir(paths) / f"{session}.json"),
            "portfolio": str(portfolio_path(paths)), "equity": str(equity_path(paths)),
            "tradelog": str(tradelog_path(paths))}


def _begin(engine: Engine, prep: Prepared, reasoner_online: bool | None,
           q: quarantine.Status) -> None:
    """A new session's first writes: its state, the armed kill switch, start-of-day alerts."""
    s, st = engine.s, engine.st
    save_session_state(s.paths, st)
    save_kill_switch(s.paths, {"session": st.session, "tripped": False,
                               "threshold": s.settings.execution.kill_switch_daily_loss})
    engine.halt.fail(failures.rl_missing(prep.plan), prep.open_ts)
    offline = failures.reasoner_offline(reasoner_online, "session_start")
    if offline:
        st.info["feature_toggles_frozen"] = True
    engine.halt.fail(offline, prep.open_ts)
    if q.active and q.kind == "quarantine":
        raise_alert(s.paths, "quarantine_active", session=st.session, at=prep.open_ts,
                    level="WARN", data={"days_left": q.days_left, "since": q.start})
    engine.save()


def execute(paths: Paths, settings: AppSettings, prep: Prepared, *,
            sanity_judge: SanityJudgeHook | None = None, observer: Observer | None = None,
            reasoner_online: bool | None = None) -> SessionState:
    """Start or resume the session and walk its bars.

    ``sanity_judge`` defaults to the escalation service (:mod:`tasks.escalation.sanity`)."""
    from tasks.escalation.sanity import sanity_judge_hook

    sanity_judge = sanity_judge or sanity_judge_hook
    risk = stage_risk(policy_settings(settings, prep.policy))  # both only tighten the limits
    broker = make_broker(paths, settings, prep.mode, prep.session)
    log, side = TradeLog.open(paths, recovery={
        "timestamp": prep.open_ts, "session": prep.session, "mode": prep.mode,
        "policy_version": prep.policy_version, "model_id": prep.model_id})
    if side is not None:
        raise_alert(paths, "tradelog_repaired", session=prep.session, at=prep.open_ts,
                    level="ERROR", key=side.name, data={"side_file": str(side)})
    existing = load_session_state(paths, prep.session)
    st = existing or start_state(paths, settings, prep, risk)
    horizon = settings.labels.horizons[settings.fusion.plan_horizon]
    setup = Setup(paths, settings, risk, broker, log, list(prep.policy.get("do_not_trade", [])),
                  settings.execution.max_holding_sessions or horizon, prep.close_ts,
                  sanity_judge, observer)
    engine = Engine(setup, st)
    if existing is None:
        _begin(engine, prep, reasoner_online, quarantine_status(paths, settings, prep.session))
    return engine.run(bar_steps(prep.bars, prep.open_ts))


def conclude(paths: Paths, settings: AppSettings, st: SessionState) -> IntradayResult:
    """Write the outputs of a walked session and mark it done."""
    q = quarantine_status(paths, settings, st.session)
    out = finish(paths, st, {"active": q.active, "kind": q.kind, "days_left": q.days_left,
                             "start": q.start}, settings.execution.go_live_stage)
    return IntradayResult(st.session, st.mode, False, out, _outputs(paths, st.session))


def run_session(paths: Paths, settings: AppSettings, session: str, *,
                bars: str | Path | pd.DataFrame | None = None, mode: str | None = None,
                daily: pd.DataFrame | None = None, sanity_judge: SanityJudgeHook | None = None,
                observer: Observer | None = None, reasoner_online: bool | None = None
                ) -> IntradayResult:
    """Execute session ``session`` (see the module docstring)."""
    mode = mode or settings.execution.mode
    if mode == "live":
        require_live(paths, settings, session)
    with session_lock(paths, "intraday"):
        prep = prepare(paths, settings, session, mode=mode, bars=bars, daily=daily)
        cached = cached_result(paths, prep)
        if cached is not None:
            return cached
        st = execute(paths, settings, prep, sanity_judge=sanity_judge, observer=observer,
                     reasoner_online=reasoner_online)
        return conclude(paths, settings, st)


