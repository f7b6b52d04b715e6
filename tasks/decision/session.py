"""One session's decision: from its inputs to its plan, audit and health.

:func:`decide_session` is the one implementation. The daily flow runs it with its stages
wrapped as Prefect tasks (:class:`Stages`), the replay and the backtest run it with the plain
stages (:data:`PLAIN`); nothing else decides a session. In order:

inputs (features, calibrated scores, book, context, episodes of the session) -> escalation
(triggers from the state known before the plan; bounded policy deltas under the policy in
force) -> preflight -> regime gates -> fusion -> sizing -> hard clamps -> conflict notes ->
shadow signals -> health.

The caller supplies what differs between the three uses: the root a session writes under
(``paths``: the live home, or a replay's or backtest's own root), the models that score it
(the active baseline, or the walk-forward fold model whose training ended before it) and its
scores. Given the same inputs the outcome is the same bytes, whoever calls it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.data.calendar import sessions as calendar_sessions
from tasks.data.store import read_manifest
from tasks.escalation import daily as esc_daily
from tasks.escalation.inputs import fingerprint as escalation_inputs
from tasks.io import atomic_write_parquet
from tasks.models.registry import Baseline, RegistryError, load_baseline, read_registry
from tasks.paths import Paths
from tasks.plan import build, outputs, runs, session
from tasks.plan.context import context_source, context_status
from tasks.plan.sizehint import HintStatus, hint_status
from tasks.policy import Policy, policy_settings
from tasks.settings import AppSettings
from tasks.state import load_episodes, session_book


def history_start(day: pd.Timestamp, settings: AppSettings) -> pd.Timestamp:
    """First session loaded: ``daily.history_sessions`` before ``day``."""
    n = settings.daily.history_sessions
    span = calendar_sessions(settings.data.calendar, day - pd.Timedelta(days=int(n * 1.6) + 30),
                             day)
    return span[max(0, len(span) - n)]


def load_models(paths: Paths) -> tuple[Baseline, Baseline | None]:
    """The active baseline (required) and the shadow one (optional)."""
    reg = read_registry(paths)
    if reg.get("active") is None:
        raise RegistryError("no active baseline: run `hcp train` (or `hcp demo`) first")
    active = load_baseline(paths, reg["active"])
    if "payoff" not in active.manifest:
        raise RegistryError(f"baseline {active.baseline_id} predates the payoff statistics the "
                            "plan needs: retrain it (`hcp train`)")
    shadow = load_baseline(paths, reg["shadow"]) if reg.get("shadow") else None
    return active, shadow


def key_parts(day: pd.Timestamp, paths: Paths, settings: AppSettings, active: Baseline,
              shadow: Baseline | None, policy_version: str, ctx: dict, book: dict,
              episodes: dict) -> dict[str, Any]:
    """What the session's run key is made of (a re-run with the same parts does nothing)."""
    from tasks.models.pipeline import config_hash

    return {"session": day.date().isoformat(),
            "store": (read_manifest(paths.store) or {}).get("content_hash"),
            "active": active.baseline_id, "shadow": shadow.baseline_id if shadow else None,
            "settings": config_hash(settings), "all_settings": settings.model_dump(mode="json"),
            "policy": policy_version, "context": ctx, "book": book, "episodes": episodes,
            "escalation_inputs": escalation_inputs(paths, day.date().isoformat()),
            "code": runs.code_fingerprint()}


@dataclass
class SessionState:
    """What a session's decision depends on besides the bars, and its run key."""

    policy: Policy
    version: str
    ctx_src: Any
    book: Any
    book_info: dict
    episodes: pd.DataFrame | None
    parts: dict
    key: str
    hint: HintStatus | None = None


def session_state(day: pd.Timestamp, paths: Paths, settings: AppSettings, active: Baseline,
                  shadow: Baseline | None) -> SessionState:
    """Policy (where the session's stored escalations ended, else the one in force under
    ``paths``), context source, book and episodes, and the run key they give."""
    policy, version = esc_daily.session_policy(paths, settings, day.date().isoformat())
    ctx_src = context_source(settings.daily.context_path, paths.home)
    book, book_info = session_book(paths, settings, day.date().isoformat())
    episodes, ep_info = load_episodes(paths)
    hint = hint_status(paths, settings, policy, day)
    parts = key_parts(day, paths, settings, active, shadow, version, ctx_src.describe(),
                      book_info, ep_info)
    parts["size_hint"] = {"case": hint.case, "hint_id": hint.hint_id}
    return SessionState(policy, version, ctx_src, book, book_info, episodes, parts,
                        runs.run_key(parts), hint)


def make_inputs(st: SessionState, day: pd.Timestamp, hist: session.History,
                scores: pd.DataFrame, active: Baseline, shadow: Baseline | None
                ) -> tuple[build.SessionInputs, dict]:
    """The decision's inputs for ``day`` and the health report's extra fields."""
    context = st.ctx_src.load(day)
    inp = session.session_inputs(
        as_of=day, today=session.day_rows(hist.features, day),
        scores_today=session.day_rows(scores, day), baseline=active, policy=st.policy,
        policy_version=st.version, book=st.book, context=context, returns=hist.returns,
        episodes=st.episodes, size_hint=st.hint)
    extra = {"model": {"active": active.baseline_id,
                       "shadow": shadow.baseline_id if shadow else None},
             "size_hint": st.hint.to_json() if st.hint else None,
             "policy_version": st.version, "run_key": st.key,
             "context": {"source": st.ctx_src.describe().get("source"),
                         "inputs": context_status(context, inp.scores["symbol"].tolist())},
             "book": st.book_info}
    return inp, extra


def with_policy(inp: build.SessionInputs, extra: dict, esc: esc_daily.DailyEscalation,
                parts: dict) -> tuple[build.SessionInputs, str, dict]:
    """The inputs with the escalated policy, and the run key it gives (what a re-run computes)."""
    parts = {**parts, "policy": esc.version}
    key = runs.run_key(parts)
    extra.update(policy_version=esc.version, run_key=key, escalation=esc.summary)
    return dataclasses.replace(inp, policy=esc.policy, policy_version=esc.version), key, parts


def shadow_signals(shadow_scores: pd.DataFrame, inp: build.SessionInputs, model_id: str,
                   settings: AppSettings) -> pd.DataFrame:
    """The shadow model's signals for the same session (never traded)."""
    shadow_inp = build.SessionInputs(**{**inp.__dict__, "scores": shadow_scores,
                                        "model_id": model_id})
    sig = build.signal_frame(shadow_inp, settings)
    cols = ["symbol", "regime", "p_cal_short", "p_cal_mid", "score", "action", "signal",
            "exp_pnl_net"]
    out = sig[cols].rename(columns={c: f"shadow_{c}" for c in cols if c != "symbol"})
    active = inp.scores[["symbol", "p_cal_short", "p_cal_mid"]]
    out = active.merge(out, on="symbol", how="outer")
    out.insert(0, "shadow_model_id", model_id)
    return out.sort_values("symbol", kind="stable").reset_index(drop=True)


def add_warnings(health: dict, warnings: list[str]) -> None:
    """Append warnings to the health report (status OK becomes WARNING)."""
    if not warnings:
        return
    health["summary"]["warnings"].extend(warnings)
    if health["summary"]["status"] == "OK":
        health["summary"]["status"] = "WARNING"


# --- the stages (the daily flow wraps each in a Prefect task) ---------------------------------

def escalate_stage(paths: Paths, settings: AppSettings, day: str, inp: build.SessionInputs,
                   hist: session.History, recent: pd.DataFrame, active: Baseline
                   ) -> esc_daily.DailyEscalation:
    """Escalation triggers from pre-plan state; one remote call per fired call type (budgeted,
    never retried), the local reasoner as fallback; the policy D's plan uses."""
    pos = hist.sessions.searchsorted(inp.as_of)
    first = hist.sessions[max(0, pos - settings.health.quality_window_sessions
                              - max(settings.labels.horizons.values()))]
    feats = hist.features.loc[(hist.features["date"] >= first)
                              & (hist.features["date"] < inp.as_of)]
    return esc_daily.run(paths, settings, day, policy=inp.policy, version=inp.policy_version,
                         today=inp.features, context=inp.context, book=inp.book,
                         universe=set(inp.scores["symbol"].astype(str)),
                         recent_features=feats, recent_labels=recent, baseline=active)


def gates_stage(inp: build.SessionInputs, settings: AppSettings) -> pd.DataFrame:
    """Edges per horizon and the per-regime gates."""
    return build.gated_frame(inp, settings)


def fusion_stage(gated: pd.DataFrame, inp: build.SessionInputs, settings: AppSettings
                 ) -> pd.DataFrame:
    """Fusion score, BUY/SELL/HOLD, gated signal and expectancy."""
    return build.fused_frame(gated, inp, settings)


def sizing_stage(signals: pd.DataFrame, inp: build.SessionInputs, settings: AppSettings
                 ) -> build.Sized:
    """Rank by E[PnL]/time and size (score, RL, per-trade target, Kelly, effective-K)."""
    return build.size_orders(signals, inp, settings)


def clamps_stage(sized: build.Sized, inp: build.SessionInputs, settings: AppSettings,
                 errors: list[str]) -> build.Decision:
    """Hard risk clamps on every order (no orders at all when the health check says stop)."""
    return build.apply_clamps(sized, inp, settings, health_stop=errors or None)


def conflicts_stage(paths: Paths, day: str, decision: build.Decision, today: pd.DataFrame,
                    active: Baseline, settings: AppSettings) -> pd.DataFrame:
    """A short explanation (local reasoner, cached per prompt) for traded names whose horizons
    or base models disagree strongly: the audit's ``conflict_note`` column."""
    from tasks.reasoner.jobs import conflict_notes

    return conflict_notes(paths, settings, day, decision, today, active)


@dataclass(frozen=True)
class Stages:
    """The stage functions a decision runs (plain, or wrapped as tasks by the daily flow)."""

    escalate: Callable[..., esc_daily.DailyEscalation] = escalate_stage
    gates: Callable[..., pd.DataFrame] = gates_stage
    fusion: Callable[..., pd.DataFrame] = fusion_stage
    sizing: Callable[..., build.Sized] = sizing_stage
    clamps: Callable[..., build.Decision] = clamps_stage
    conflicts: Callable[..., pd.DataFrame] = conflicts_stage


PLAIN = Stages()


@dataclass
class SessionCase:
    """A session's inputs: where it writes, its settings, models, history and scores.

    ``scores``: the active model's calibrated wide scores from
    :func:`tasks.plan.session.scoring_start` to ``day``; ``shadow_scores``: the shadow model's,
    covering ``day`` (None without a shadow)."""

    day: pd.Timestamp
    paths: Paths
    settings: AppSettings
    active: Baseline
    shadow: Baseline | None
    state: SessionState
    hist: session.History
    scores: pd.DataFrame
    shadow_scores: pd.DataFrame | None = None


@dataclass
class SessionOutcome:
    """What a session decided: the decision (signals, plan, audit), its health, the shadow
    model's signals, the session's feature rows and its final run key and key parts."""

    decision: build.Decision
    health: dict[str, Any]
    shadow: pd.DataFrame | None
    today: pd.DataFrame
    key: str
    parts: dict[str, Any]


def decide_session(case: SessionCase, stages: Stages = PLAIN) -> SessionOutcome:
    """The session's decision and health (see the module docstring)."""
    day, settings, active, hist = case.day, case.settings, case.active, case.hist
    d = day.date().isoformat()
    inp, extra = make_inputs(case.state, day, hist, case.scores, active, case.shadow)
    recent = session.masked_recent(case.scores, hist, day, settings)
    esc = stages.escalate(case.paths, settings, d, inp, hist, recent, active)
    inp, key, parts = with_policy(inp, extra, esc, case.state.parts)
    today = inp.features
    errors = session.preflight(today, inp.scores, active, settings)
    eff = policy_settings(settings, inp.policy)
    signals = stages.fusion(stages.gates(inp, eff), inp, eff)
    decision = stages.clamps(stages.sizing(signals, inp, eff), inp, eff, errors)
    decision.audit = stages.conflicts(case.paths, d, decision, today, active, settings)
    shadow_frame = None
    if case.shadow is not None and case.shadow_scores is not None:
        rows = session.day_rows(case.shadow_scores, day)
        shadow_frame = shadow_signals(
            rows.drop(columns=[c for c in rows if c == "date" or c.startswith("label_")]),
            inp, case.shadow.baseline_id, settings)
    health = session.assess(as_of=day, decision=decision, errors=errors, today=today,
                            recent=recent, drift_rows=session.recent_features(hist, day, settings),
                            baseline=active, settings=settings, extra=extra)
    add_warnings(health, esc_daily.health_warnings(esc.summary))
    return SessionOutcome(decision, health, shadow_frame, today, key, parts)


def write_outputs(paths: Paths, day: str, outcome: SessionOutcome) -> dict[str, Path]:
    """Signals, plan, audit, health, report (dated and latest) and the session's features."""
    dec = outcome.decision
    written = outputs.write_session(paths, day, dec.signals, dec.plan, dec.audit, outcome.health,
                                    outcome.shadow)
    written["features"] = atomic_write_parquet(paths.features / f"features_{day}.parquet",
                                               outcome.today)
    return written


def commit_record(paths: Paths, day: str, outcome: SessionOutcome, written: dict[str, Path],
                  alerts: list[dict] | None = None) -> dict[str, Any]:
    """The session's run record, written last: the commit point of its outputs."""
    record = runs.make_record(outcome.key, outcome.parts, outcome.health,
                              len(outcome.decision.plan), written)
    if alerts is not None:
        record["alerts"] = alerts
    runs.write_record(paths, day, record)
    return record
