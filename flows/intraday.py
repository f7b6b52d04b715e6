"""The intraday flow for session D: the plan of D-1 on D's bars, paper-executed.

gates (live only) -> inputs (plan, bars: a user parquet or the seeded simulation, input key)
-> engine (orders through the same clamp module as the daily plan, stops 1.8 / trailing 1.2 /
take-profit 2.5 ATR, kill switch, failure modes, trade log) -> outputs (sessions/<D>.json,
equity.parquet, portfolio.json, kill_switch.json, then the committed execution record). A
finished session with the same inputs is returned as recorded (no order is placed again); a
session a crash interrupted resumes. Sessions run in order (:func:`tasks.execution.runner.admit`):
an unfinished earlier session, a later book or missing sessions refuse, unless the flow is
given an explicit catch-up (``catch_up_by`` / ``catch_up_reason``: the missing sessions are
marked skipped, logged). See docs/execution.md.
"""

from __future__ import annotations

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.execution.gates import require_live
from tasks.execution.inputs import Prepared, prepare
from tasks.execution.runner import CatchUp, IntradayResult, admit, cached_result, conclude, execute
from tasks.execution.state import SessionState
from tasks.operator.notify import notify_pending
from tasks.paths import Paths
from tasks.plan.runs import session_lock
from tasks.settings import AppSettings, load_settings


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def inputs_task(paths: Paths, settings: AppSettings, session: str, mode: str,
                bars: str | None) -> Prepared:
    """The plan of the session before, the session's bars and the input key."""
    return prepare(paths, settings, session, mode=mode, bars=bars)


@task(cache_policy=NO_CACHE)
def execute_task(paths: Paths, settings: AppSettings, prep: Prepared) -> SessionState:
    """Walk the bars (never retried: orders are placed here; a restart resumes instead)."""
    return execute(paths, settings, prep)


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def outputs_task(paths: Paths, settings: AppSettings, st: SessionState) -> IntradayResult:
    """Summary, equity row, book, episodes; then the session is marked done."""
    return conclude(paths, settings, st)


@flow(name="intraday", log_prints=False)
def intraday(session: str, bars: str | None = None, mode: str | None = None,
             catch_up_by: str | None = None, catch_up_reason: str | None = None
             ) -> IntradayResult:
    """Paper-execute session ``session`` (YYYY-MM-DD); ``bars``: a parquet of intraday bars
    (default: simulated from the day's OHLC); ``mode``: demo (default) or live (every gate);
    ``catch_up_by`` and ``catch_up_reason``: mark missing sessions before it skipped (logged)."""
    logger = get_run_logger()
    settings, paths = load_settings(), Paths.from_env()
    mode = mode or settings.execution.mode
    if mode == "live":
        require_live(paths, settings, session)
    catch_up = None
    if catch_up_by or catch_up_reason:
        catch_up = CatchUp(catch_up_by or "", catch_up_reason or "",
                           pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"))
    with session_lock(paths, "intraday"):
        order = admit(paths, settings, session, catch_up)
        if order.catch_up:
            logger.warning("session %s: %d missing session(s) %s..%s marked skipped by %s",
                           session, len(order.catch_up), order.catch_up[0], order.catch_up[-1],
                           catch_up_by)
        prep = inputs_task(paths, settings, session, mode, bars)
        cached = cached_result(paths, prep)
        if cached is not None:
            logger.info("session %s already executed with the same inputs: nothing done", session)
            return cached
        res = outputs_task(paths, settings, execute_task(paths, settings, prep))
    s = res.summary
    logger.info("session %s (%s): day P&L %.2f%%, %d orders, %d fills, kill switch %s",
                session, mode, 100 * s["day_pnl_pct"], s["orders"], s["fills"], s["kill_switch"])
    notify_pending(paths, settings)
    return res
