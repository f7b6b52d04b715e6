"""The pre-market daily flow for session D.

load bars -> validate -> features -> score (active, and shadow side by side) -> per-regime
calibration -> the session decision (:func:`tasks.decision.session.decide_session`: escalation
triggers and bounded policy deltas -> regime gates -> fusion -> sizing -> hard clamps ->
conflict notes -> health, each stage a task here) -> outputs -> run record. The replay and the
backtest call the same decision.

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

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.alerts import bad_alert_lines, health_alerts, missing_specs, raise_specs
from tasks.data.calendar import previous_session
from tasks.data.schemas import StoreBarFrame
from tasks.data.store import load_bars, load_constituents, read_manifest
from tasks.decision import session as ds
from tasks.io import fault_point
from tasks.models.registry import Baseline
from tasks.models.scoring import calibrate_scores, raw_scores, wide_scores
from tasks.operator.notify import notify_pending
from tasks.paths import Paths
from tasks.plan import build, runs, session
from tasks.settings import AppSettings, load_settings


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


# the decision's stages as Prefect tasks (visible in the UI); tasks.decision.session runs them
gates_task = task(ds.gates_stage, cache_policy=NO_CACHE)
fusion_task = task(ds.fusion_stage, cache_policy=NO_CACHE)
sizing_task = task(ds.sizing_stage, cache_policy=NO_CACHE)
clamps_task = task(ds.clamps_stage, cache_policy=NO_CACHE)
escalation_task = task(ds.escalate_stage, cache_policy=NO_CACHE)
conflict_task = task(ds.conflicts_stage, cache_policy=NO_CACHE)
write_outputs_task = task(ds.write_outputs, retries=2, retry_delay_seconds=2,
                          cache_policy=NO_CACHE)
TASK_STAGES = ds.Stages(escalate=escalation_task, gates=gates_task, fusion=fusion_task,
                        sizing=sizing_task, clamps=clamps_task, conflicts=conflict_task)


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
        active, shadow = ds.load_models(paths)
        st = ds.session_state(day, paths, settings, active, shadow)
        cached = None if force else runs.cached_record(paths, d, st.key)
        if cached:
            logger.info("session %s already done with the same inputs (run key %s)", d, st.key)
            alerts_task(paths, settings, d, cached.get("alerts", []))
            return _result(cached, cached=True)
        bars, constituents = load_bars_task(paths.store, ds.history_start(day, settings), day)
        bars = validate_task(bars, day)
        hist = features_task(bars, constituents, settings)
        start = session.scoring_start(hist, day, settings)
        scores = calibrate_task(active, score_task(active, hist, start, day, settings))
        shadow_scores = (calibrate_task(shadow, score_task(shadow, hist, day, day, settings))
                         if shadow is not None else None)
        out = ds.decide_session(ds.SessionCase(day, paths, settings, active, shadow, st, hist,
                                               scores, shadow_scores), TASK_STAGES)
        decision, health = out.decision, out.health
        written = write_outputs_task(paths, d, out)
        alerts = health_alerts(health, pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))
        record = ds.commit_record(paths, d, out, written, alerts)  # the commit point
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
