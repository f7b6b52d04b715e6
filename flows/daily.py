"""The pre-market daily flow for session D.

load bars -> validate -> features -> score (active, and shadow side by side) -> per-regime
calibration -> escalation triggers (and bounded policy deltas) -> regime gates -> fusion ->
sizing -> hard clamps -> conflict notes -> health -> outputs.

Only tasks that touch the disk retry. A re-run with the same inputs (see
:mod:`tasks.plan.runs`) does nothing and returns the recorded result, except that it raises
the alerts its record lists and ``alerts.jsonl`` lacks (a run stopped after its record).

The book is the book of the session (:func:`tasks.state.session_book`): an unfinished
intraday session up to D, missing sessions between the book and D (unless an explicit, logged
catch-up marks them skipped) and a past session without its committed record refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.alerts import bad_alert_lines, health_alerts, missing_specs, raise_specs
from tasks.data.calendar import previous_session
from tasks.data.calendar import sessions as calendar_sessions
from tasks.data.schemas import StoreBarFrame
from tasks.data.store import load_bars, load_constituents, read_manifest
from tasks.escalation import daily as esc_daily
from tasks.escalation.inputs import fingerprint as escalation_inputs
from tasks.io import atomic_write_parquet, fault_point
from tasks.models.registry import Baseline, RegistryError, load_baseline, read_registry
from tasks.models.scoring import calibrate_scores, raw_scores, wide_scores
from tasks.operator.notify import notify_pending
from tasks.paths import Paths
from tasks.plan import build, outputs, runs, session
from tasks.plan.context import context_source, context_status
from tasks.policy import policy_settings
from tasks.settings import AppSettings, load_settings
from tasks.state import load_episodes, session_book


@dataclass
class DailyResult:
    """What one daily run decided and wrote."""

    as_of: str
    status: str
    n_orders: int
    outputs: dict[str, str]
    cached: bool
    errors: list[str]
    warnings: list[str]
    empty_book: dict | None = None  # BUY signals but no BUY order: the step that zeroed the book


def resolve_as_of(as_of: str | None, store: Path, calendar: str,
                  today: pd.Timestamp | None = None) -> pd.Timestamp:
    """'latest' (default) = the store's last session; 'previous-session' = the last session
    before today (scheduled pre-market runs); otherwise an ISO date."""
    if as_of in (None, "", "latest"):
        manifest = read_manifest(store)
        if manifest is None:
            raise ValueError(f"no bar store at {store}: run `hcp data import` first")
        return pd.Timestamp(manifest["last_date"])
    if as_of == "previous-session":
        now = today if today is not None else pd.Timestamp.now().normalize()
        return previous_session(calendar, now - pd.Timedelta(days=1))
    try:
        return pd.Timestamp(as_of).normalize()
    except ValueError as exc:
        raise ValueError(f"as-of {as_of!r} is not a date (YYYY-MM-DD, latest, "
                         "previous-session)") from exc


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

    policy: dict
    version: str
    ctx_src: Any
    book: Any
    book_info: dict
    episodes: pd.DataFrame | None
    parts: dict
    key: str


def session_state(day: pd.Timestamp, paths: Paths, settings: AppSettings, active: Baseline,
                  shadow: Baseline | None) -> SessionState:
    """Policy (where the session's stored escalations ended, else the current one), context
    source, book and episodes in force, and the run key they give."""
    policy, version = esc_daily.session_policy(paths, settings, day.date().isoformat())
    ctx_src = context_source(settings.daily.context_path, paths.home)
    book, book_info = session_book(paths, settings, day.date().isoformat())
    episodes, ep_info = load_episodes(paths)
    parts = key_parts(day, paths, settings, active, shadow, version, ctx_src.describe(),
                      book_info, ep_info)
    return SessionState(policy, version, ctx_src, book, book_info, episodes, parts,
                        runs.run_key(parts))


def make_inputs(st: SessionState, day: pd.Timestamp, hist: session.History,
                scores: pd.DataFrame, active: Baseline, shadow: Baseline | None
                ) -> tuple[build.SessionInputs, dict]:
    """The decision's inputs for ``day`` and the health report's extra fields."""
    context = st.ctx_src.load(day)
    inp = session.session_inputs(
        as_of=day, today=session.day_rows(hist.features, day),
        scores_today=session.day_rows(scores, day), baseline=active, policy=st.policy,
        policy_version=st.version, book=st.book, context=context, returns=hist.returns,
        episodes=st.episodes)
    extra = {"model": {"active": active.baseline_id,
                       "shadow": shadow.baseline_id if shadow else None},
             "policy_version": st.version, "run_key": st.key,
             "context": {"source": st.ctx_src.describe().get("source"),
                         "inputs": context_status(context, inp.scores["symbol"].tolist())},
             "book": st.book_info}
    return inp, extra


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_bars_task(store: Path, start: pd.Timestamp, as_of: pd.Timestamp
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read stored bars in [start, as_of] and the constituents."""
    return load_bars(store, start=start, end=as_of), load_constituents(store)


@task(cache_policy=NO_CACHE)
def validate_task(bars: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Re-check the store contract at the flow boundary and refuse stale data."""
    from tasks.features.snapshot import check_fresh

    bars = StoreBarFrame.validate(bars)
    check_fresh(bars, as_of)
    return bars


@task(cache_policy=NO_CACHE)
def features_task(bars: pd.DataFrame, constituents: pd.DataFrame, settings: AppSettings
                  ) -> session.History:
    """Point-in-time features, labels (complete only up to as-of) and returns."""
    return session.build_history(bars, constituents, settings)


@task(cache_policy=NO_CACHE)
def score_task(model: Baseline, hist: session.History, start: pd.Timestamp,
               as_of: pd.Timestamp, settings: AppSettings) -> pd.DataFrame:
    """Raw ensemble P(win) for the rows from ``start`` to ``as_of``."""
    rows = hist.features.loc[(hist.features["date"] >= start) & (hist.features["date"] <= as_of)]
    return raw_scores(model, rows.reset_index(drop=True), settings)


@task(cache_policy=NO_CACHE)
def calibrate_task(model: Baseline, raw: pd.DataFrame) -> pd.DataFrame:
    """Per-regime calibration (a regime without a calibrator stays NaN and stops trading)."""
    return wide_scores(calibrate_scores(model, raw, strict=False))


@task(cache_policy=NO_CACHE)
def gates_task(inp: build.SessionInputs, settings: AppSettings) -> pd.DataFrame:
    """Edges per horizon and the per-regime gates."""
    return build.gated_frame(inp, settings)


@task(cache_policy=NO_CACHE)
def fusion_task(gated: pd.DataFrame, inp: build.SessionInputs, settings: AppSettings
                ) -> pd.DataFrame:
    """Fusion score, BUY/SELL/HOLD, gated signal and expectancy."""
    return build.fused_frame(gated, inp, settings)


@task(cache_policy=NO_CACHE)
def sizing_task(signals: pd.DataFrame, inp: build.SessionInputs, settings: AppSettings
                ) -> build.Sized:
    """Rank by E[PnL]/time and size (score, RL, per-trade target, Kelly, effective-K)."""
    return build.size_orders(signals, inp, settings)


@task(cache_policy=NO_CACHE)
def clamps_task(sized: build.Sized, inp: build.SessionInputs, settings: AppSettings,
                errors: list[str]) -> build.Decision:
    """Hard risk clamps on every order (no orders at all when the health check says stop)."""
    return build.apply_clamps(sized, inp, settings, health_stop=errors or None)


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def write_outputs_task(paths: Paths, day: str, decision: build.Decision, health: dict,
                       shadow: pd.DataFrame | None, today: pd.DataFrame) -> dict[str, Path]:
    """Signals, plan, audit, health, report (dated and latest) and today's features."""
    written = outputs.write_session(paths, day, decision.signals, decision.plan,
                                    decision.audit, health, shadow)
    written["features"] = atomic_write_parquet(paths.features / f"features_{day}.parquet", today)
    return written


@task(cache_policy=NO_CACHE)
def escalation_task(paths: Paths, settings: AppSettings, day: str, inp: build.SessionInputs,
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


def with_policy(inp: build.SessionInputs, extra: dict, esc: esc_daily.DailyEscalation,
                parts: dict) -> tuple[build.SessionInputs, str, dict]:
    """The inputs with the escalated policy, and the run key it gives (what a re-run computes)."""
    import dataclasses

    parts = {**parts, "policy": esc.version}
    key = runs.run_key(parts)
    extra.update(policy_version=esc.version, run_key=key, escalation=esc.summary)
    return dataclasses.replace(inp, policy=esc.policy, policy_version=esc.version), key, parts


@task(cache_policy=NO_CACHE)
def conflict_task(paths: Paths, day: str, decision: build.Decision, today: pd.DataFrame,
                  active: Baseline, settings: AppSettings) -> pd.DataFrame:
    """A short explanation (local reasoner, cached per prompt) for traded names whose horizons
    or base models disagree strongly: the audit's ``conflict_note`` column."""
    from tasks.reasoner.jobs import conflict_notes

    return conflict_notes(paths, settings, day, decision, today, active)


def add_warnings(health: dict, warnings: list[str]) -> None:
    """Append warnings to the health report (status OK becomes WARNING)."""
    if not warnings:
        return
    health["summary"]["warnings"].extend(warnings)
    if health["summary"]["status"] == "OK":
        health["summary"]["status"] = "WARNING"


def publish_artifacts(day: str, decision: build.Decision, health: dict) -> None:
    """The plan and the health summary as Prefect artifacts (visible in the UI)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    plan = decision.plan
    rows = plan.astype(object).where(plan.notna(), None).to_dict(orient="records")
    create_table_artifact(rows, key="trade-plan", description=f"Trade plan for {day}")
    s = health["summary"]
    lines = [f"# Daily health {day}: {s['status']}", "",
             f"- orders: {len(plan)}; coverage: "
             f"{health['metrics']['coverage']['coverage_pct']}%"]
    lines += [f"- ERROR: {e}" for e in s["errors"]] + [f"- WARNING: {w}" for w in s["warnings"]]
    create_markdown_artifact("\n".join(lines), key="daily-health",
                             description=f"Health summary for {day}")


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


@task(cache_policy=NO_CACHE)
def alerts_task(paths: Paths, settings: AppSettings, day: str, specs: list[dict]) -> None:
    """The run's operator alerts (those its record lists and alerts.jsonl lacks), then any
    pending notifications. Lines of alerts.jsonl that are not records are counted, not fatal."""
    raise_specs(paths, day, missing_specs(paths, day, specs))
    bad = bad_alert_lines(paths)
    if bad:
        get_run_logger().warning("alerts.jsonl: %d line(s) are not alert records (torn, foreign "
                                 "or non-UTF-8 bytes; first at line %d): skipped", len(bad),
                                 bad[0])
    notify_pending(paths, settings)


def prepare_state(paths: Paths, settings: AppSettings, d: str,
                  catch_up: tuple[str, str] | None = None) -> None:
    """Before the run: leftovers of killed writes in the session folders are removed, the order
    of sessions is checked (refusals raise), and with ``catch_up`` (by, reason) the missing
    sessions are marked skipped (logged, under the intraday lock)."""
    from tasks.execution import ledger
    from tasks.statefiles import remove_temp_files

    for folder in (ledger.state_dir(paths) / "sessions", ledger.execution_dir(paths)):
        remove_temp_files(folder, older_than_s=60.0)
    where = ledger.daily_book(paths, settings.data.calendar, d, catch_up=catch_up is not None)
    if where.catch_up and catch_up is not None:
        from tasks.execution.recovery import mark_skipped

        with runs.session_lock(paths, "intraday"):
            mark_skipped(paths, settings, list(where.catch_up), by=catch_up[0],
                         reason=catch_up[1], into=d,
                         at=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"))


@flow(name="daily", log_prints=False)
def daily(as_of: str | None = None, force: bool = False, catch_up_by: str | None = None,
          catch_up_reason: str | None = None) -> DailyResult:
    """Pre-market run for session ``as_of`` ('latest', 'previous-session' or YYYY-MM-DD);
    ``catch_up_by`` / ``catch_up_reason``: mark the sessions missing between the book and
    ``as_of`` skipped first (logged)."""
    logger = get_run_logger()
    settings, paths = load_settings(), Paths.from_env()
    day = resolve_as_of(as_of, paths.store, settings.data.calendar)
    d = day.date().isoformat()
    with runs.session_lock(paths, d):
        catch_up = (catch_up_by or "", catch_up_reason or "") \
            if (catch_up_by or catch_up_reason) else None
        prepare_state(paths, settings, d, catch_up)
        active, shadow = load_models(paths)
        st = session_state(day, paths, settings, active, shadow)
        key, parts = st.key, st.parts
        cached = None if force else runs.cached_record(paths, d, key)
        if cached:
            logger.info("session %s already done with the same inputs (run key %s)", d, key)
            alerts_task(paths, settings, d, cached.get("alerts", []))
            return _result(cached, cached=True)
        bars, constituents = load_bars_task(paths.store, history_start(day, settings), day)
        bars = validate_task(bars, day)
        hist = features_task(bars, constituents, settings)
        start = session.scoring_start(hist, day, settings)
        scores = calibrate_task(active, score_task(active, hist, start, day, settings))
        inp, extra = make_inputs(st, day, hist, scores, active, shadow)
        recent = session.masked_recent(scores, hist, day, settings)
        esc = escalation_task(paths, settings, d, inp, hist, recent, active)
        inp, key, parts = with_policy(inp, extra, esc, parts)
        today = inp.features
        errors = session.preflight(today, inp.scores, active, settings)
        eff = policy_settings(settings, inp.policy)
        signals = fusion_task(gates_task(inp, eff), inp, eff)
        decision = clamps_task(sizing_task(signals, inp, eff), inp, eff, errors)
        decision.audit = conflict_task(paths, d, decision, today, active, settings)
        shadow_frame = None
        if shadow is not None:
            sh = calibrate_task(shadow, score_task(shadow, hist, day, day, settings))
            shadow_frame = shadow_signals(session.day_rows(sh, day).drop(columns="date"), inp,
                                          shadow.baseline_id, settings)
        health = session.assess(as_of=day, decision=decision, errors=errors, today=today,
                                recent=recent,
                                drift_rows=session.recent_features(hist, day, settings),
                                baseline=active, settings=settings, extra=extra)
        add_warnings(health, esc_daily.health_warnings(esc.summary))
        written = write_outputs_task(paths, d, decision, health, shadow_frame, today)
        record = runs.make_record(key, parts, health, len(decision.plan), written)
        record["alerts"] = health_alerts(
            health, pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))
        runs.write_record(paths, d, record)  # the commit point of the run's outputs
        fault_point("daily_after_record")
        publish_artifacts(d, decision, health)
        alerts_task(paths, settings, d, record["alerts"])
        logger.info("session %s: %s, %d orders -> %s", d, record["status"], len(decision.plan),
                    written["plan"])
        if health.get("empty_book"):
            logger.warning("session %s: %s", d, health["empty_book"]["message"])
        return _result(record, cached=False)


def _result(record: dict, cached: bool) -> DailyResult:
    return DailyResult(record["key_parts"]["session"], record["status"], record["n_orders"],
                       record["paths"], cached, record["errors"], record["warnings"],
                       record.get("empty_book"))
