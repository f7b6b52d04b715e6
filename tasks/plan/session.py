"""Assemble one session's inputs from history frames, its preflight and its health.

The daily flow computes the history frames for one session; the replay and the backtest
compute them once for a span. All of them decide through
:func:`tasks.decision.session.decide_session`, which uses :func:`session_inputs`,
:func:`preflight` and :func:`assess` from here. Point in time: features of D use bars <= D;
the labels used for the realised-quality check are masked to those whose horizon ended on or
before D.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.data.calendar import sessions as calendar_sessions
from tasks.features.build import build_features, feature_columns
from tasks.features.labels import build_labels
from tasks.features.panel import build_panel
from tasks.health.checks import drift, health_report, preflight_errors, realised_quality
from tasks.models.registry import Baseline
from tasks.models.scoring import calibrate_scores, missing_calibrators, raw_scores, wide_scores
from tasks.plan.build import Decision, SessionInputs
from tasks.plan.sizehint import HintStatus
from tasks.policy import Policy
from tasks.risk.clamps import Book, exposures
from tasks.settings import AppSettings


@dataclass
class History:
    """Frames over a span of sessions, computed from bars up to ``end`` only."""

    features: pd.DataFrame       # one row per (symbol, session) with features
    labels: pd.DataFrame         # symbol, date, label_<h> (NaN where the horizon passes ``end``)
    returns: pd.DataFrame        # wide daily log returns of adjusted closes
    sessions: pd.DatetimeIndex   # the calendar sessions of the span
    end: pd.Timestamp


def build_history(bars: pd.DataFrame, constituents: pd.DataFrame | None,
                  settings: AppSettings) -> History:
    """Features, labels and returns of every loaded bar."""
    end = bars["date"].max()
    feats = build_features(bars, constituents, settings)
    labels = build_labels(bars, settings)
    keep = ["symbol", "date", *[f"label_{h}" for h in settings.labels.horizons]]
    panel = build_panel(bars, None, settings.data.calendar)
    returns = np.log(panel.close / panel.close.shift(1))
    sess = calendar_sessions(settings.data.calendar, bars["date"].min(), end)
    return History(feats, labels[keep], returns, sess, end)


def scoring_start(hist: History, first_session: pd.Timestamp, settings: AppSettings
                  ) -> pd.Timestamp:
    """Earliest date scored: far enough back for the realised-quality window of every horizon."""
    back = settings.health.quality_window_sessions + max(settings.labels.horizons.values())
    pos = max(0, hist.sessions.searchsorted(first_session) - back)
    return hist.sessions[pos]


def score_history(baseline: Baseline, hist: History, start: pd.Timestamp, end: pd.Timestamp,
                  settings: AppSettings) -> pd.DataFrame:
    """Wide calibrated scores (lax: NaN where a regime has no calibrator) for [start, end]."""
    rows = hist.features.loc[(hist.features["date"] >= start) & (hist.features["date"] <= end)]
    raw = raw_scores(baseline, rows.reset_index(drop=True), settings)
    return wide_scores(calibrate_scores(baseline, raw, strict=False))


def masked_recent(scores: pd.DataFrame, hist: History, as_of: pd.Timestamp,
                  settings: AppSettings) -> pd.DataFrame:
    """Scores before ``as_of`` joined with the labels whose horizon ended by ``as_of``."""
    pos = hist.sessions.searchsorted(as_of)
    recent = scores.loc[scores["date"] < as_of, ["symbol", "date", "regime",
                                                  *[c for c in scores if c.startswith("p_cal_")]]]
    recent = recent.merge(hist.labels, on=["symbol", "date"], how="left")
    window = settings.health.quality_window_sessions
    for name, h in settings.labels.horizons.items():
        last_known = hist.sessions[pos - h] if pos - h >= 0 else pd.Timestamp.min
        first = hist.sessions[max(0, pos - h - window + 1)] if pos - h >= 0 else pd.Timestamp.min
        ok = (recent["date"] <= last_known) & (recent["date"] >= first)
        recent[f"label_{name}"] = recent[f"label_{name}"].where(ok)
    return recent


def day_rows(frame: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    return frame.loc[frame["date"] == as_of].reset_index(drop=True)


def session_inputs(*, as_of: pd.Timestamp, today: pd.DataFrame, scores_today: pd.DataFrame,
                   baseline: Baseline, policy: Policy, policy_version: str, book: Book,
                   context: pd.DataFrame | None, returns: pd.DataFrame,
                   episodes: pd.DataFrame | None, size_hint: HintStatus | None = None
                   ) -> SessionInputs:
    """The decision's inputs for ``as_of`` (returns and episodes cut to what was known)."""
    if episodes is not None and "exit_date" in episodes:
        episodes = episodes.loc[pd.to_datetime(episodes["exit_date"]) < as_of]
    scores = scores_today.drop(columns=["date", *[c for c in scores_today
                                                  if c.startswith("label_")]])
    return SessionInputs(as_of=as_of, features=today, scores=scores,
                         payoff=baseline.manifest["payoff"],
                         thresholds=baseline.manifest["thresholds"], model_id=baseline.baseline_id,
                         skill=baseline.manifest.get("skill"),
                         policy=policy, policy_version=policy_version, book=book, context=context,
                         returns=returns.loc[returns.index <= as_of], episodes=episodes,
                         size_hint=size_hint)


def preflight(today: pd.DataFrame, scores_today: pd.DataFrame, baseline: Baseline,
              settings: AppSettings) -> list[str]:
    """Stop-trading conditions: too few scored symbols, missing calibrators, NaN features."""
    nan_share = {c: float(today[c].isna().mean()) for c in feature_columns(settings)}
    scored = scores_today.dropna(subset=[c for c in scores_today if c.startswith("p_cal_")],
                                 how="all")
    return preflight_errors(len(scored), missing_calibrators(baseline, scores_today["regime"]),
                            nan_share, settings.health)


def recent_features(hist: History, as_of: pd.Timestamp, settings: AppSettings) -> pd.DataFrame:
    """Feature rows of the last ``health.psi_sessions`` sessions up to ``as_of``."""
    pos = hist.sessions.searchsorted(as_of)
    first = hist.sessions[max(0, pos - settings.health.psi_sessions + 1)]
    f = hist.features
    return f.loc[(f["date"] >= first) & (f["date"] <= as_of)]


def assess(*, as_of: pd.Timestamp, decision: Decision, errors: list[str], today: pd.DataFrame,
           recent: pd.DataFrame, drift_rows: pd.DataFrame, baseline: Baseline,
           settings: AppSettings, extra: dict[str, Any]) -> dict[str, Any]:
    """The health JSON of a decided session (the daily flow's and the replay's alike), with the
    decision's empty-book finding as a WARNING and the field ``empty_book``."""
    quality = realised_quality(recent, list(settings.labels.horizons))
    psi_values = drift(drift_rows, baseline.manifest.get("feature_reference", {}),
                       settings.health)
    market = {c: _first(today, c) for c in ("market_regime", "mkt_vol_z", "mkt_avg_corr",
                                             "mkt_breadth_50", "mkt_ret_20")}
    return health_report(
        as_of=as_of.date().isoformat(), errors=errors, signals=decision.signals,
        plan=decision.plan, exposure=exposures(decision.book),
        net_liquidity=decision.book.net_liquidity, quality=quality, psi_values=psi_values,
        manifest=baseline.manifest, cfg=settings.health, alerts=decision.alerts,
        empty_book=decision.info.get("empty_book"),
        extra={"plan_horizon": settings.fusion.plan_horizon, "market": market,
               "sizing": decision.info, **extra})


def _first(df: pd.DataFrame, col: str):
    if col not in df or not df[col].notna().any():
        return None
    value = df[col].dropna().iloc[0]
    return value.item() if hasattr(value, "item") else str(value)
