"""Replay the live decision over a span of past sessions, point in time, under its own root.

The active baseline must have been trained on bars ending before the first replayed session
(otherwise the replay would score days the model saw, and it refuses). Features, labels and
scores are computed once for the span from bars up to its last session; each session then goes
through the one session decision of the daily run
(:func:`tasks.decision.session.decide_session`: escalation, gates, fusion, sizing, clamps,
conflict notes, health) with the labels masked to outcomes known by that session, under the
policy the live home had in force at that session (:mod:`tasks.decision.pit`); a session
escalated live reuses its recorded answers. A session whose run key matches its record is
skipped, so an interrupted replay resumes where it stopped.

A replay never writes into the live home's plans, state or reports: everything goes under its
own root ``reports/replay/<S>_<E>/sandbox/`` (:class:`tasks.paths.SandboxPaths`), which reads
the live bar store and models only. The report folder ``reports/replay/<S>_<E>/`` holds
``summary.json`` and ``sessions.csv``.

With ``with_intraday`` every session D after the first walks intraday(D) (the plan of the
session before, paper-executed on D's simulated bars) -> nightly(D) (outcomes of the plans
whose horizon ended, then the post-mortem) -> plan(D), so each plan sizes against the book the
previous session left; such a replay starts from an empty root and adds ``equity.csv`` /
``equity.png``. The backtest (:mod:`flows.backtest`) walks sessions the same way.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger

from tasks.data.calendar import sessions as calendar_sessions
from tasks.data.schemas import StoreBarFrame
from tasks.data.store import load_bars, load_constituents, read_manifest
from tasks.decision import session as ds
from tasks.io import atomic_write, atomic_write_json
from tasks.models.registry import Baseline, RegistryError
from tasks.paths import Paths, SandboxPaths
from tasks.plan import runs, session
from tasks.settings import AppSettings, load_settings

Progress = Callable[[int, int, str], None]
progress_hook: Progress | None = None  # set by the command line to draw a progress bar


@dataclass
class ReplayResult:
    start: str
    end: str
    sessions: int
    skipped: int
    summary_path: Path
    table_path: Path
    seconds_per_session: float  # wall time from loading bars to the last session / sessions
    equity_path: Path | None = None  # with intraday: the equity curve (csv; png beside it)
    state_root: Path | None = None   # the replay's own root (plans, reports, state)


def replay_sessions(start: str, end: str, store: Path, calendar: str) -> pd.DatetimeIndex:
    """Exchange sessions in [start, end] that the store has bars for."""
    manifest = read_manifest(store)
    if manifest is None:
        raise ValueError(f"no bar store at {store}: run `hcp data import` first")
    s, e = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    if e < s:
        raise ValueError(f"replay end {e.date()} is before its start {s.date()}")
    last = pd.Timestamp(manifest["last_date"])
    if e > last:
        raise ValueError(f"replay end {e.date()} is after the store's last bar {last.date()}")
    days = calendar_sessions(calendar, s, e)
    if days.empty:
        raise ValueError(f"no exchange session between {s.date()} and {e.date()}")
    return days


def check_point_in_time(train_end: str, first: pd.Timestamp, baseline_id: str) -> None:
    if pd.Timestamp(train_end) >= first:
        raise RegistryError(
            f"active baseline {baseline_id} was trained on bars up to {train_end}, not before "
            f"the first replayed session {first.date()}: train one with "
            f"`hcp train --train-end <a date before {first.date()}>` and promote it")


def replay_folder(paths: Paths, days: pd.DatetimeIndex) -> Path:
    return paths.reports / "replay" / f"{days[0].date().isoformat()}_{days[-1].date().isoformat()}"


def sandbox(home: Paths, folder: Path, fresh: bool = True) -> SandboxPaths:
    """The replay's own root under its report folder (emptied first when ``fresh``)."""
    import shutil

    root = folder / "sandbox"
    if fresh:
        shutil.rmtree(root, ignore_errors=True)
    return SandboxPaths(home.home, root)


@dataclass
class Walk:
    """What a walk over sessions needs: the live home (read only), its own root (written), the
    history and scores of the span, the models that score each session, and whether the
    policy in force comes from the live home (a replay) or evolves in the root (a backtest)."""

    home: Paths
    root: SandboxPaths
    settings: AppSettings
    bars: pd.DataFrame
    hist: session.History
    scores: pd.DataFrame
    shadow_scores: pd.DataFrame | None
    models: Callable[[pd.Timestamp], tuple[Baseline, Baseline | None]]
    live_policy: bool = True
    with_intraday: bool = False
    observer: object | None = None
    sanity_judge: object | None = None
    resume: bool = False   # sessions whose plan is recorded in the root are done: not redone


def load_span(root: Paths, days: pd.DatetimeIndex, settings: AppSettings
              ) -> tuple[pd.DataFrame, session.History]:
    """Validated bars and the history frames of the span (bars up to its last session)."""
    bars = StoreBarFrame.validate(load_bars(root.store, start=ds.history_start(days[0], settings),
                                            end=days[-1]))
    return bars, session.build_history(bars, load_constituents(root.store), settings)


def walk_sessions(walk: Walk, days: pd.DatetimeIndex, force: bool = False,
                  progress: Progress | None = None) -> tuple[list[dict], int]:
    """Every session in turn: (intraday and nightly of D when walking with intraday, from the
    second session on) then D's decision. Returns the session rows and how many were unchanged."""
    rows, skipped = [], 0
    for i, day in enumerate(days):
        finished = finished_day(walk, day, executed=walk.with_intraday and i > 0)
        if finished is not None:
            row, done = finished
        else:
            done = execute_day(walk, day) if walk.with_intraday and i > 0 else {}
            row = decide_day(walk, day, force)
        skipped += row.pop("cached")
        rows.append({**row, **done})
        if progress:
            progress(i + 1, len(days), f"{day.date()} {row['status']} {row['orders']} orders"
                     + (f", empty book ({row['empty_book_step']})"
                        if row.get("empty_book_step") else "")
                     + (f", day P&L {done['day_pnl_pct']:.2%}" if done else ""))
    return rows, skipped


def run_replay(start: str, end: str, force: bool = False, progress: Progress | None = None,
               with_intraday: bool = False, observer=None, sanity_judge=None) -> ReplayResult:
    """Replay every session in [start, end]; see the module docstring. ``observer`` and
    ``sanity_judge`` are handed to every intraday session (tests, integration)."""
    import time

    settings, home = load_settings(), Paths.from_env()
    days = replay_sessions(start, end, home.store, settings.data.calendar)
    active, shadow = ds.load_models(home)
    check_point_in_time(active.manifest["training_span"]["end"], days[0], active.baseline_id)
    root = sandbox(home, replay_folder(home, days), fresh=with_intraday)
    tick = time.perf_counter()
    bars, hist = load_span(root, days, settings)
    scores = session.score_history(active, hist, session.scoring_start(hist, days[0], settings),
                                    days[-1], settings)
    shadow_scores = (session.score_history(shadow, hist, days[0], days[-1], settings)
                     if shadow is not None else None)
    walk = Walk(home, root, settings, bars, hist, scores, shadow_scores,
                lambda _day: (active, shadow), live_policy=True, with_intraday=with_intraday,
                observer=observer, sanity_judge=sanity_judge)
    rows, skipped = walk_sessions(walk, days, force, progress)
    elapsed = time.perf_counter() - tick
    return _summarise(home, days, rows, skipped, elapsed, active.baseline_id, root,
                      with_intraday)


DONE_KEYS = ("day_pnl_pct", "end_net_liquidity", "kill_switch", "fills", "positions_end",
             "quarantine", "postmortem_by")


def walk_record(root: Paths, day: str) -> Path:
    """What the intraday and nightly steps of ``day`` reported (written before D's plan)."""
    return root.reports / "walk" / f"{day}.json"


def finished_day(walk: Walk, day: pd.Timestamp, executed: bool) -> tuple[dict, dict] | None:
    """On a resumed walk, a session whose plan is recorded in the root (its last step, after
    its intraday and nightly) is not redone: its row from its records; else None."""
    if not walk.resume:
        return None
    d = day.date().isoformat()
    record = runs.record_path(walk.root, d)
    if not record.is_file():
        return None
    done = {}
    if executed:
        found = json.loads(walk_record(walk.root, d).read_text())
        done = {k: found[k] for k in DONE_KEYS}
    return _row(d, json.loads(record.read_text()), cached=True), done


def execute_day(walk: Walk, day: pd.Timestamp) -> dict:
    """intraday(D) on the plan of the session before, then the nightly of D (outcomes of the
    plans whose horizon ended, the trust step, and the post-mortem naming its reasoner), all
    in the root."""
    from flows.nightly import outcomes_task, write_summary
    from tasks.execution.runner import run_session
    from tasks.plan.trust import nightly_update
    from tasks.reports.postmortem import write_postmortem
    from tasks.state import load_episodes

    root, settings, bars, hist = walk.root, walk.settings, walk.bars, walk.hist
    d = day.date().isoformat()
    res = run_session(root, settings, d, daily=bars.loc[bars["date"] == day],
                      observer=walk.observer, sanity_judge=walk.sanity_judge)
    h = settings.labels.horizons[settings.fusion.plan_horizon]
    pos = hist.sessions.searchsorted(day)
    window = bars.loc[(bars["date"] >= hist.sessions[max(0, pos - h - 1)]) & (bars["date"] <= day)]
    out = outcomes_task.fn(root, day, window, settings, 0)
    # the trust step as live: the walk's own closed episodes re-weigh the walk's own policy
    trust = nightly_update(root, settings, d, load_episodes(root)[0])
    write_summary(root, day, out, settings, trust)
    pm = write_postmortem(root, settings, d)
    s = res.summary
    done = dict(zip(DONE_KEYS, (s["day_pnl_pct"], s["end_net_liquidity"], s["kill_switch"],
                                s["fills"], s["positions_end"], s["quarantine"]["active"],
                                pm.get("narrative_by")), strict=True))
    atomic_write_json(walk_record(root, d), done)
    return done


def recorded_answers(home: Paths, root: Paths, day: str) -> None:
    """A backtest of a session escalated live: the live answers, to be bounded again against
    the backtest's own policy (:func:`tasks.escalation.service.recorded_path`)."""
    from tasks.escalation.record import record_path
    from tasks.escalation.service import recorded_path

    live = record_path(home, day)
    target = recorded_path(root, day)
    if live.is_file() and not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(live, target)


def decide_day(walk: Walk, day: pd.Timestamp, force: bool) -> dict:
    """Session D's decision in the walk's root (the daily run's decision, outputs and record)."""
    from tasks.alerts import health_alerts, missing_specs, raise_specs
    from tasks.decision.pit import adopt, policy_at

    root, settings, hist = walk.root, walk.settings, walk.hist
    d = day.date().isoformat()
    if not walk.live_policy:
        recorded_answers(walk.home, root, d)
    if not (hist.features["date"] == day).any():
        return {"date": d, "status": "NO_DATA", "orders": 0, "empty_book_step": "",
                "cached": False}
    active, shadow = walk.models(day)
    with runs.session_lock(root, d):
        if walk.live_policy:
            adopt(root, settings, d, policy_at(walk.home, settings, d), live=walk.home)
        st = ds.session_state(day, root, settings, active, shadow)
        cached = None if force else runs.cached_record(root, d, st.key)
        if cached:
            return _row(d, cached, cached=True)
        out = ds.decide_session(ds.SessionCase(day, root, settings, active, shadow, st, hist,
                                               walk.scores, walk.shadow_scores))
        written = ds.write_outputs(root, d, out)
        alerts = health_alerts(out.health, f"{d}T00:00:00+00:00")
        record = ds.commit_record(root, d, out, written, alerts)
        raise_specs(root, d, missing_specs(root, d, alerts))
        return _row(d, record, cached=False)


def _row(d: str, record: dict, cached: bool) -> dict:
    return {"date": d, "status": record["status"], "orders": record["n_orders"],
            "coverage_pct": record.get("coverage_pct"), "gross_exposure":
            record.get("gross_exposure"), "n_warnings": len(record["warnings"]),
            "errors": "; ".join(record["errors"]), "plan": record["paths"]["plan"],
            "empty_book_step": (record.get("empty_book") or {}).get("step", ""),
            "empty_book": record.get("empty_book"), "cached": cached}


def _summarise(paths: Paths, days, rows: list[dict], skipped: int, elapsed: float,
               model_id: str, root: SandboxPaths, with_intraday: bool) -> ReplayResult:
    s, e = days[0].date().isoformat(), days[-1].date().isoformat()
    folder = replay_folder(paths, days)
    empty = [r.pop("empty_book", None) for r in rows]
    table = pd.DataFrame(rows)
    table_path = atomic_write(folder / "sessions.csv", lambda t: table.to_csv(
        t, index=False, lineterminator="\n", float_format="%.6f"))
    cov = pd.to_numeric(table.get("coverage_pct"), errors="coerce")
    summary = {
        "start": s, "end": e, "model_id": model_id, "sessions": len(rows),
        "status_counts": {k: int(v) for k, v in table["status"].value_counts().sort_index().items()},
        "orders_total": int(table["orders"].sum()),
        "sessions_with_orders": int((table["orders"] > 0).sum()),
        **empty_book_tally(empty),
        "coverage_pct": {"median": _num(cov.median()), "min": _num(cov.min()),
                         "max": _num(cov.max())},
        "sessions_table": str(table_path),
    }
    summary["root"] = str(root.root)
    equity = None
    if with_intraday:
        from tasks.execution.replay_report import write_equity

        equity, summary["intraday"] = write_equity(root, folder)
    summary_path = atomic_write_json(folder / "summary.json", summary)
    per = elapsed / max(1, len(rows))
    return ReplayResult(s, e, len(rows), skipped, summary_path, table_path, per, equity,
                        root.root)


def empty_book_tally(books: list[dict | None]) -> dict:
    """Sessions whose fusion said BUY but whose plan holds no BUY order: how many, how many
    per step that zeroed the book (the session's main step), and the BUY signals each step
    zeroed over the span."""
    books = [b for b in books if b]
    steps: dict[str, int] = {}
    signals: dict[str, int] = {}
    for b in books:
        steps[b["step"]] = steps.get(b["step"], 0) + 1
        for step, n in b.get("by_step", {}).items():
            signals[step] = signals.get(step, 0) + int(n)
    return {"empty_book_sessions": len(books), "empty_book_by_step": _by_count(steps),
            "empty_book_signals_by_step": _by_count(signals)}


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def empty_book_summary(summary: dict) -> str | None:
    """The replay's empty-book line for a person (None when no session had an empty book)."""
    n = summary.get("empty_book_sessions", 0)
    if not n:
        return None
    why = ", ".join(f"{k} {v}" for k, v in summary.get("empty_book_by_step", {}).items())
    return (f"EMPTY BOOK in {n} of {summary['sessions']} session(s) (BUY signals, no order); "
            f"zeroed by (sessions): {why}")


def _num(v) -> float | None:
    return None if pd.isna(v) else float(v)


@flow(name="replay", log_prints=False)
def replay(start: str, end: str, force: bool = False, with_intraday: bool = False) -> ReplayResult:
    """Replay the daily decision for every session in [start, end] (point in time); with
    ``with_intraday`` walk plan -> intraday -> nightly in the replay's own state root."""
    logger = get_run_logger()
    def progress(i: int, n: int, msg: str) -> None:
        logger.info("replay %d/%d %s", i, n, msg)
        if progress_hook is not None:
            progress_hook(i, n, msg)

    res = run_replay(start, end, force, progress=progress, with_intraday=with_intraday)
    logger.info("replayed %d sessions (%d unchanged) -> %s", res.sessions, res.skipped,
                res.summary_path)
    line = empty_book_summary(json.loads(res.summary_path.read_text()))
    if line:
        logger.warning("%s", line)
    return res
