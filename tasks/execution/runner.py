"""Run one intraday session end to end: gates -> order of sessions -> inputs -> engine -> outputs.

:func:`run_session` is what the Prefect flow (:mod:`flows.intraday`) and the replay call. It
holds one lock for all intraday runs of a home (they share the book, the trade log and the
quarantine state), checks the order of sessions (:func:`admit`: an unfinished earlier session,
a later book or a gap refuse; an explicit catch-up marks the missing sessions skipped), returns
the recorded summary when the session is already done with the same inputs, and resumes a
session a crash interrupted. A session's first writes (its record, the armed kill switch, the
start-of-day failure modes and alerts) are redone on a resume until they are complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.alerts import raise_alert
from tasks.execution import failures, ledger, quarantine
from tasks.execution.broker import Bar
from tasks.execution.engine import Engine, Observer, Setup
from tasks.execution.gates import make_broker, require_live, stage_risk
from tasks.execution.inputs import Prepared, SessionOrderError, prepare, start_state
from tasks.execution.killswitch import SanityJudgeHook
from tasks.execution.outputs import finish, load_summary, sessions_dir
from tasks.execution.protections import ProtectionView, Quarantine, evaluate
from tasks.execution.sessions import session_before, sessions_after
from tasks.execution.state import (
    SessionState,
    kill_switch_of,
    load_session_state,
    save_kill_switch,
    save_session_state,
)
from tasks.execution.tradelog import TradeLog
from tasks.io import fault_point
from tasks.paths import Paths
from tasks.plan.runs import session_lock
from tasks.policy import policy_settings
from tasks.settings import AppSettings

Steps = list[tuple[str, str, dict[str, Bar]]]


@dataclass(frozen=True)
class CatchUp:
    """An operator's explicit catch-up over missing sessions (logged)."""

    by: str
    reason: str
    at: str


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


def clean_state(paths: Paths) -> None:
    """Leftovers of killed atomic writes: all of them in the folders only intraday runs write
    (under their lock), those older than a minute in data/state itself (shared)."""
    from tasks.statefiles import remove_temp_files

    remove_temp_files(ledger.execution_dir(paths))
    remove_temp_files(sessions_dir(paths))
    remove_temp_files(ledger.state_dir(paths), older_than_s=60.0)


def admit(paths: Paths, settings: AppSettings, session: str, catch_up: CatchUp | None = None
          ) -> ledger.IntradayOrder:
    """The order of sessions for ``session`` (refusals: :class:`ledger.SessionOrderError`,
    damaged state files: StateFileError); a new session also needs the plan it executes to be
    its daily run's committed output. With ``catch_up`` the missing sessions are marked
    skipped first (logged). Call it holding the intraday lock."""
    clean_state(paths)
    order = ledger.intraday_order(paths, settings.data.calendar, session,
                                  catch_up=catch_up is not None)
    if order.action == "new":
        prev = session_before(settings.data.calendar, session)
        problem = ledger.plan_commit_problem(paths, prev)
        if problem:
            raise ledger.SessionOrderError(f"session {session} executes the plan of {prev}, "
                                           f"but {problem}")
    if order.catch_up and catch_up is not None:
        from tasks.execution.recovery import mark_skipped

        mark_skipped(paths, settings, list(order.catch_up), by=catch_up.by,
                     reason=catch_up.reason, at=catch_up.at, into=session)
    return order


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
            "so it is not run again. Restore the state folder to redo it"
            + ("." if st.status == "done" else
               f", or close it as it stands with `hcp run intraday --date {prep.session} "
               "--abandon --by NAME --reason TEXT`."))
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


def note_alert(st: SessionState, code: str, *, at: str, level: str = "WARN", key: str = "",
               data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record an alert in the session's state (raised again at the commit if it is missing)."""
    spec = {"code": code, "level": level, "key": key, "at": at, "data": dict(data or {})}
    noted = st.info.setdefault("alerts", [])
    if not any((a["code"], a["key"]) == (code, key) for a in noted):
        noted.append(spec)
    return spec


def _begin(engine: Engine, prep: Prepared, reasoner_online: bool | None,
           q: quarantine.Status) -> None:
    """A session's first writes: its record (the session is started), the armed kill switch,
    the start-of-day failure modes and alerts. Redone on a resume until ``info["begun"]``
    (each write is idempotent), so a kill in between loses none of them."""
    s, st = engine.s, engine.st
    st.info["kill_threshold"] = s.settings.execution.kill_switch_daily_loss
    save_session_state(s.paths, st)
    fault_point("begin")
    if not st.halted:
        save_kill_switch(s.paths, kill_switch_of(st))
    engine.halt.fail(failures.rl_missing(prep.plan), prep.open_ts)
    offline = failures.reasoner_offline(reasoner_online, "session_start")
    if offline:
        st.info["feature_toggles_frozen"] = True
    engine.halt.fail(offline, prep.open_ts)
    held = [lk for lk in evaluate(engine.protections, ProtectionView(st.session, quarantine=q))
            if lk.protection == Quarantine.name]
    if held and held[0].cause.kind == "quarantine":
        spec = note_alert(st, "quarantine_active", at=prep.open_ts,
                          data={"days_left": q.days_left, "since": q.start})
        engine.save()
        raise_alert(s.paths, spec["code"], session=st.session, at=spec["at"], level="WARN",
                    data=spec["data"])
    st.info["begun"] = True
    engine.save()


def execute(paths: Paths, settings: AppSettings, prep: Prepared, *,
            sanity_judge: SanityJudgeHook | None = None, observer: Observer | None = None,
            reasoner_online: bool | None = None) -> SessionState:
    """Start or resume the session and walk its bars.

    ``sanity_judge`` defaults to the escalation service (:mod:`tasks.execution.sanity`)."""
    from tasks.execution.sanity import sanity_judge_hook

    sanity_judge = sanity_judge or sanity_judge_hook
    risk = stage_risk(policy_settings(settings, prep.policy))  # both only tighten the limits
    broker = make_broker(paths, settings, prep.mode, prep.session)
    log, side = TradeLog.open(paths, recovery={
        "timestamp": prep.open_ts, "session": prep.session, "mode": prep.mode,
        "policy_version": prep.policy_version, "model_id": prep.model_id})
    repaired = None
    if side is not None:
        repaired = raise_alert(paths, "tradelog_repaired", session=prep.session,
                               at=prep.open_ts, level="ERROR", key=side.name,
                               data={"side_file": str(side)})
    existing = load_session_state(paths, prep.session)
    st = existing or start_state(paths, settings, prep, risk)
    if repaired is not None:
        note_alert(st, "tradelog_repaired", at=prep.open_ts, level="ERROR", key=side.name,
                   data={"side_file": str(side)})
    horizon = settings.labels.horizons[settings.fusion.plan_horizon]
    setup = Setup(paths, settings, risk, broker, log,
                  list(prep.policy.do_not_trade) if prep.policy is not None else [],
                  settings.execution.max_holding_sessions or horizon, prep.close_ts,
                  sanity_judge, observer)
    engine = Engine(setup, st)
    if existing is None or not st.info.get("begun"):
        _begin(engine, prep, reasoner_online, quarantine_status(paths, settings, prep.session))
    return engine.run(bar_steps(prep.bars, prep.open_ts))


def conclude(paths: Paths, settings: AppSettings, st: SessionState, status: str = "done"
             ) -> IntradayResult:
    """Write the outputs of a walked (or abandoned) session and commit it."""
    st.info.setdefault("kill_threshold", settings.execution.kill_switch_daily_loss)
    q = quarantine_status(paths, settings, st.session)
    out = finish(paths, st, {"active": q.active, "kind": q.kind, "days_left": q.days_left,
                             "start": q.start}, settings.execution.go_live_stage, status=status,
                 quarantine_sessions=settings.execution.quarantine_sessions)
    return IntradayResult(st.session, st.mode, False, out, _outputs(paths, st.session))


def run_session(paths: Paths, settings: AppSettings, session: str, *,
                bars: str | Path | pd.DataFrame | None = None, mode: str | None = None,
                daily: pd.DataFrame | None = None, sanity_judge: SanityJudgeHook | None = None,
                observer: Observer | None = None, reasoner_online: bool | None = None,
                catch_up: CatchUp | None = None) -> IntradayResult:
    """Execute session ``session`` (see the module docstring)."""
    mode = mode or settings.execution.mode
    if mode == "live":
        require_live(paths, settings, session)
    with session_lock(paths, "intraday"):
        admit(paths, settings, session, catch_up)
        prep = prepare(paths, settings, session, mode=mode, bars=bars, daily=daily)
        cached = cached_result(paths, prep)
        if cached is not None:
            return cached
        st = execute(paths, settings, prep, sanity_judge=sanity_judge, observer=observer,
                     reasoner_online=reasoner_online)
        return conclude(paths, settings, st)


