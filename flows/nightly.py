"""The nightly flow for session D: realised outcomes of earlier plans.

For every archived plan of a session P <= D whose horizon has fully passed by D, each order is
marked to its realised barrier outcome on the bars P+1 .. P+h (take-profit first, stop first,
both in one bar = the label's same-bar rule, or timeout at the close of P+h; one
implementation with the labels: :func:`tasks.features.labels.classify_touches`). Prices are
compared as ratios to the entry on adjusted bars, so a split in between does not fake a hit.
The result, ``reports/nightly/<D>.json``, holds per-plan and overall hit rates next to the
mean calibrated P(win) the plans expected: the realised record the escalation checks read.
After the outcomes, the trust step (:func:`tasks.plan.trust.nightly_update`) credits the
episodes closed by D to the blend's sources, updates their posteriors and, when the night's
Thompson draw moves a blend weight by ``trust.min_change`` or more, writes a new policy version
for D's plan; the summary says what it did under ``trust``.
Then the session's post-mortem is written: ``reports/postmortems/<D>.md`` and ``.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.data.calendar import sessions as calendar_sessions
from tasks.data.store import load_bars
from tasks.features.labels import OUTCOMES, classify_touches, outcome_label, path_touches
from tasks.io import atomic_write_json
from tasks.models.rollback import nightly_check
from tasks.operator.notify import notify_pending
from tasks.paths import Paths
from tasks.settings import AppSettings, load_settings


def order_outcome(plan_row: pd.Series, path: pd.DataFrame, same_bar: str) -> dict[str, Any]:
    """Outcome of one BUY order on its adjusted path (rows after the plan's session), by the
    labels' own barrier rule (:func:`tasks.features.labels.classify_touches`): both barriers in
    one session is a win, a loss or unknown (NaN, left out of the hit rate) as
    ``labels.same_bar`` says, exactly as the model was trained; its return is the stop's (the
    conservative reading of :func:`tasks.features.labels.barrier_pnl`)."""
    entry_adj = path.attrs["entry_adj"]
    up = plan_row["take_profit"] / plan_row["entry_price"]
    down = plan_row["stop"] / plan_row["entry_price"]
    t_up, t_dn = path_touches(up, down, path["adj_high"].to_numpy() / entry_adj,
                              path["adj_low"].to_numpy() / entry_adj)
    code = int(classify_touches(np.array([t_up]), np.array([t_dn]))[0])
    label = float(outcome_label(np.array([code]), same_bar)[0])
    win = None if np.isnan(label) else bool(label)
    if code == 3:
        ret = float(path["adj_close"].iloc[-1] / entry_adj - 1) if len(path) else np.nan
    else:
        ret = float(up - 1) if code == 0 else float(down - 1)
    return {"outcome": OUTCOMES[code], "win": win, "ret": ret}


def plan_outcomes(plan: pd.DataFrame, day: pd.Timestamp, bars: pd.DataFrame,
                  sess: pd.DatetimeIndex, horizon: int, same_bar: str) -> pd.DataFrame:
    """Realised outcome of every BUY of the plan of session ``day``."""
    pos = sess.searchsorted(day)
    window = sess[pos + 1: pos + 1 + horizon]
    rows = []
    for _, order in plan.loc[plan["action"] == "BUY"].iterrows():
        sym = bars.loc[bars["symbol"] == order["ticker"]]
        entry = sym.loc[sym["date"] == day, "adj_close"]
        path = sym.loc[sym["date"].isin(window)].sort_values("date")
        if entry.empty:
            continue
        path.attrs["entry_adj"] = float(entry.iloc[0])
        res = order_outcome(order, path, same_bar)
        rows.append({"session": day.date().isoformat(), "ticker": order["ticker"],
                     "prob_win_cal": order["prob_win_cal"], **res})
    return pd.DataFrame(rows, columns=["session", "ticker", "prob_win_cal", "outcome", "win",
                                       "ret"])


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_task(paths: Paths, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    return load_bars(paths.store, start=start, end=end)


@task(cache_policy=NO_CACHE)
def outcomes_task(paths: Paths, day: pd.Timestamp, bars: pd.DataFrame, settings: AppSettings,
                  lookback: int) -> pd.DataFrame:
    h = settings.labels.horizons[settings.fusion.plan_horizon]
    sess = calendar_sessions(settings.data.calendar, bars["date"].min(), day)
    parts = []
    for folder in sorted((paths.val / "plans").glob("*/trade_plan.csv")):
        p_day = pd.Timestamp(folder.parent.name)
        if p_day not in sess or sess.searchsorted(day) - sess.searchsorted(p_day) < h:
            continue
        if sess.searchsorted(day) - sess.searchsorted(p_day) > h + lookback:
            continue
        parts.append(plan_outcomes(pd.read_csv(folder), p_day, bars, sess, h,
                                   settings.labels.same_bar))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


@task(cache_policy=NO_CACHE)
def trust_task(paths: Paths, settings: AppSettings, day: pd.Timestamp) -> dict[str, Any]:
    """Credit the episodes closed by ``day`` to the blend's sources and re-weigh the blend."""
    from tasks.plan.trust import nightly_update
    from tasks.state import load_episodes

    episodes, _info = load_episodes(paths)
    return nightly_update(paths, settings, day.date().isoformat(), episodes)


def write_summary(paths: Paths, day: pd.Timestamp, out: pd.DataFrame, settings: AppSettings,
                  trust: dict[str, Any] | None = None) -> Path:
    """``reports/nightly/<D>.json``: hit rates against the plans' expectation, and the detail
    (with ``trust``: what the trust step did)."""
    summary: dict[str, Any] = {"date": day.date().isoformat(), "orders": int(len(out)),
                               "plan_horizon": settings.fusion.plan_horizon}
    if trust is not None:
        summary["trust"] = trust
    if len(out):
        summary.update(
            # orders whose outcome is unknown (both barriers in one session, same_bar: drop)
            # are left out of the hit rate, as they are left out of the labels
            hit_rate=(float(known.astype(float).mean()) if len(known := out["win"].dropna())
                      else None),
            expected_hit_rate=float(out["prob_win_cal"].mean()),
            mean_return=float(out["ret"].mean()),
            by_outcome={k: int(v) for k, v in out["outcome"].value_counts().sort_index().items()},
            sessions=sorted(out["session"].unique().tolist()))
    return atomic_write_json(paths.reports / "nightly" / f"{day.date().isoformat()}.json",
                             {**summary, "orders_detail": out.to_dict(orient="records")})


@flow(name="nightly", log_prints=False)
def nightly(date: str = "today", lookback_sessions: int = 60) -> Path:
    """Realised outcomes of the plans whose horizon ended in the last ``lookback_sessions``.

    ``date``: 'today' (the last session on or before today), 'latest' (the store's last
    session) or YYYY-MM-DD."""
    from flows.daily import resolve_as_of
    from tasks.data.calendar import previous_session

    logger = get_run_logger()
    settings, paths = load_settings(), Paths.from_env()
    day = (previous_session(settings.data.calendar, pd.Timestamp.now().normalize())
           if date == "today" else resolve_as_of(date, paths.store, settings.data.calendar))
    start = day - pd.Timedelta(days=int((lookback_sessions + 40) * 1.6))
    bars = load_task(paths, start, day)
    out = outcomes_task(paths, day, bars, settings, lookback_sessions)
    trust = trust_task(paths, settings, day)
    logger.info("%s", trust["line"])
    path = write_summary(paths, day, out, settings, trust)
    logger.info("nightly %s: %d realised orders -> %s", day.date(), len(out), path)
    pm = postmortem_task(paths, settings, day.date().isoformat())
    logger.info("post-mortem %s (narrative by %s) -> %s", day.date(), pm["narrative_by"], pm["md"])
    if settings.shadow.enabled:
        check = nightly_check(paths, settings, day, bars, lookback_sessions)
        logger.info("shadow/rollback %s: %s", day.date(), check["line"])
    notify_pending(paths, settings)
    return path


@task(cache_policy=NO_CACHE)
def postmortem_task(paths: Paths, settings: AppSettings, day: str) -> dict[str, Any]:
    """The session's post-mortem (facts rendered deterministically, narrative by the local
    reasoner or the template)."""
    from tasks.reports.postmortem import write_postmortem

    return write_postmortem(paths, settings, day)
