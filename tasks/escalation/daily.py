"""The escalation step of the daily flow: triggers from pre-plan state, calls, the policy for D.

It runs after scoring and before fusion, so the session's plan uses the resulting policy and
the bounded deltas pass the hard clamps again. The session's starting policy is the one its
stored escalations ended with (:func:`session_policy`), which keeps the run key of a re-run
equal to the first run's and makes a re-run reuse the stored answers instead of calling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tasks.escalation import inputs as ins
from tasks.escalation.record import read_record, record_path
from tasks.escalation.service import EscalationOutcome, escalate
from tasks.escalation.triggers import (
    Trigger,
    calls,
    decay_triggers,
    event_trigger,
    kill_switch_trigger,
    regime_trigger,
    risk_triggers,
)
from tasks.models.registry import Baseline
from tasks.paths import Paths
from tasks.policy import Policy, current_policy, load_version
from tasks.reasoner.text import session_timestamp
from tasks.settings import AppSettings

DAILY_CALLS = ("REGIME_AUDITOR", "REWARD_ENGINEER")


@dataclass
class DailyEscalation:
    policy: Policy
    version: str
    summary: dict[str, Any]


def session_policy(paths: Paths, settings: AppSettings, day: str) -> tuple[Policy, str]:
    """The policy D's plan starts from: where D's stored escalations ended, else the current."""
    done = [c for c in read_record(paths, day)["calls"] if c["call_type"] in DAILY_CALLS]
    if done:
        version = done[-1]["policy_after"]
        return load_version(paths, settings, version), version
    return current_policy(paths, settings)


def validation_hit_rate(baseline: Baseline, horizon: str) -> tuple[float, str] | None:
    """The baseline's walk-forward top-decile hit rate (the accuracy plans are judged by)."""
    for row in baseline.manifest.get("metrics", {}).get("overall", []):
        value = row.get("top_decile_hit")
        if row.get("horizon") == horizon and value is not None and value == value:
            return float(value), f"baseline {baseline.baseline_id} validation top-decile hit rate"
    return None


def evaluate_triggers(paths: Paths, settings: AppSettings, day: str, today: pd.DataFrame,
                      context: pd.DataFrame | None, baseline: Baseline) -> list[Trigger]:
    """Every trigger of the matrix from the state known before D's plan."""
    cfg = settings.escalation
    equity, srec = ins.load_equity(paths), ins.load_session_record(paths, day)
    nightly = ins.latest_nightly(paths, day)
    horizon = settings.fusion.plan_horizon
    source = f"reports/nightly/{nightly.name}" if nightly else f"no nightly record up to {day}"
    return [*risk_triggers(equity, srec, day, cfg),
            regime_trigger(_first(today, "mkt_vol_z"), _first(today, "mkt_avg_corr"), cfg),
            *decay_triggers(ins.realised_orders(nightly), validation_hit_rate(baseline, horizon),
                            settings.labels.horizons[horizon], cfg, source),
            event_trigger(context, cfg),
            kill_switch_trigger(equity, srec, day, cfg)]


def _first(df: pd.DataFrame, col: str) -> Any:
    return df[col].dropna().iloc[0] if col in df and df[col].notna().any() else None


def build_request(call_type: str, paths: Paths, settings: AppSettings, day: str, *,
                  today: pd.DataFrame, context: pd.DataFrame | None, book: Any,
                  performance: dict[str, float], fired: list[Trigger]):
    """The request of a daily call type, filled from the session's state."""
    from tasks.risk.clamps import exposures

    ts = session_timestamp(day)
    srec = ins.load_session_record(paths, day)
    pnl = (srec or {}).get("day_pnl_pct")
    if call_type == "REGIME_AUDITOR":
        return ins.regime_request(timestamp=ts, today=today, context=context,
                                  exposure=exposures(book), net_liquidity=book.net_liquidity,
                                  daily_pnl=pnl, settings=settings)
    return ins.reward_request(
        timestamp=ts, session_rec=srec, records=ins.session_records(paths, day, 21),
        performance=performance, trigger_values=_reward_values(fired, pnl))


def _reward_values(fired: list[Trigger], pnl: Any) -> dict[str, Any]:
    by = {t.name: t.value for t in fired}
    acc, sharpe = by.get("decay_accuracy"), by.get("decay_sharpe")
    return {"max_drawdown_5d": by.get("risk_drawdown_5d"), "daily_pnl": pnl,
            "ensemble_accuracy": acc["hit_rate"] if isinstance(acc, dict) else None,
            "sharpe_ratio": sharpe["sharpe"] if isinstance(sharpe, dict) else None}


def run(paths: Paths, settings: AppSettings, day: str, *, policy: Policy, version: str,
        today: pd.DataFrame, context: pd.DataFrame | None, book: Any, universe: set[str],
        recent_features: pd.DataFrame, recent_labels: pd.DataFrame, baseline: Baseline
        ) -> DailyEscalation:
    """Evaluate the triggers, make one call per fired call type, return the policy for D."""
    if not settings.escalation.enabled:
        return DailyEscalation(policy, version, {"enabled": False, "policy_before": version,
                                                 "policy_after": version})
    triggers = evaluate_triggers(paths, settings, day, today, context, baseline)
    perf = ins.feature_performance(recent_features, recent_labels, settings.fusion.plan_horizon)
    outcomes: list[EscalationOutcome] = []
    for call_type, fired in calls(triggers, DAILY_CALLS).items():
        request = build_request(call_type, paths, settings, day, today=today, context=context,
                                book=book, performance=perf, fired=fired)
        outcomes.append(escalate(paths, settings, session=day, at=session_timestamp(day),
                                 call_type=call_type, request=request,
                                 triggers={t.name: t.as_dict() for t in fired},
                                 universe=universe))
    if outcomes and outcomes[-1].policy_after != version:
        version = outcomes[-1].policy_after
        policy = load_version(paths, settings, version)
    summary = _summary(paths, day, triggers, outcomes, outcomes[0].policy_before
                       if outcomes else version, version)
    summary["feature_performance"] = perf
    return DailyEscalation(policy, version, summary)


def _summary(paths: Paths, day: str, triggers: list[Trigger], outcomes: list[EscalationOutcome],
             before: str, after: str) -> dict[str, Any]:
    """What the health JSON records (nothing that differs between a first run and a re-run)."""
    return {
        "enabled": True,
        "triggers": [t.as_dict() for t in triggers],
        "calls": [{"call_type": o.call_type, "status": o.status, "backend": o.backend,
                   "policy_before": o.policy_before, "policy_after": o.policy_after,
                   "applied": o.bounded.get("applied", {}),
                   "clipped": len(o.bounded.get("clipped", [])),
                   "rejected": len(o.bounded.get("rejected", []))} for o in outcomes],
        "kill_switch": "SANITY_JUDGE is called by the intraday flow when the kill switch fires",
        "policy_before": before, "policy_after": after,
        # relative to the root the session ran under (the live home, or a replay's own root)
        "record": (record_path(paths, day).relative_to(paths.reports.parent).as_posix()
                   if outcomes else None)}


def health_warnings(summary: dict[str, Any]) -> list[str]:
    """Warnings the health report adds for the session's escalations."""
    out = []
    for call in summary.get("calls", []):
        if call["status"] == "no_opinion":
            out.append(f"escalation {call['call_type']}: no backend gave a valid answer; "
                       "no policy change applied")
        elif call["status"] == "applied":
            out.append(f"escalation {call['call_type']}: policy {call['policy_before']} -> "
                       f"{call['policy_after']} ({call['backend']})")
    return out
