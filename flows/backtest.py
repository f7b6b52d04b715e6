"""The walk-forward backtest: every session through the live decision, the paper broker and the
nightly run, under the backtest's own root; then its figures, tearsheet and promotion gates.

Each session D in [S, E] is scored by the walk-forward fold model of the active baseline whose
training ended before D (:func:`tasks.models.folds.fold_baseline`; the baseline itself after its
training end), so the backtest is out of sample throughout: every row of the score history,
the realised-quality window included, is scored by the fold whose test block holds its date.
Then, exactly as live (:func:`flows.replay.walk_sessions`): intraday(D) executes the plan of the
session before with the paper broker, nightly(D) marks the plans whose horizon ended and writes
the post-mortem (naming its reasoner), and D's plan is decided by
:func:`tasks.decision.session.decide_session`, escalations included (the configured chain under
the same budget rules; ``backtest.local_backend`` may choose the template for speed). The
policy starts from the configured default and evolves only by the backtest's own escalations.

Everything is written under ``reports/backtest/<S>_<E>/``: the walk's root ``sandbox/`` (plans,
state, reports), ``sessions.csv``, ``summary.json`` (figures next to the equal-weight
buy-and-hold of the same universe), ``tearsheet.html`` with its charts, and ``gates.json``.
The live home is only read. The run is recorded as a trial (``reports/backtest/trials/``) so
the deflated Sharpe ratio and PBO count every configuration tried.

Resumable: a backtest killed midway, started again with the same baseline, settings and code,
walks on from its root (committed sessions are not redone); anything else starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.replay import Walk, load_span, replay_sessions, walk_sessions
from tasks.backtest.analytics import summary_figures
from tasks.backtest.collect import collect
from tasks.backtest.gates import evaluate_gates, write_gates
from tasks.backtest.tearsheet import write_tearsheet
from tasks.backtest.trials import load_trials, record_trial
from tasks.data.store import read_manifest
from tasks.decision import session as ds
from tasks.io import atomic_write, atomic_write_json
from tasks.models.folds import fold_baseline, fold_spans
from tasks.models.registry import Baseline, RegistryError
from tasks.paths import Paths, SandboxPaths
from tasks.plan import runs, session
from tasks.settings import AppSettings, load_settings

Progress = Callable[[int, int, str], None]
progress_hook: Progress | None = None  # set by the command line to draw a progress bar
HEADLINE = ("sharpe", "sortino", "cagr", "max_drawdown", "volatility")


@dataclass
class BacktestResult:
    start: str
    end: str
    sessions: int
    resumed: bool
    folder: Path
    summary: dict[str, Any]
    gates: dict[str, Any]
    seconds: float


def backtest_folder(home: Paths, days: pd.DatetimeIndex) -> Path:
    return (home.reports / "backtest"
            / f"{days[0].date().isoformat()}_{days[-1].date().isoformat()}")


def backtest_settings(settings: AppSettings) -> AppSettings:
    """The settings a backtest runs with: ``backtest.local_backend`` first, when set."""
    first = settings.backtest.local_backend
    if first is None or first == settings.reasoner.backend:
        return settings
    return settings.model_copy(update={"reasoner": settings.reasoner.model_copy(
        update={"backend": first})})


def check_span(home: Paths, baseline_id: str, first: pd.Timestamp) -> None:
    """Refuse a span the baseline has no out-of-sample model for (one line)."""
    spans = fold_spans(home, baseline_id)
    if not spans:
        raise RegistryError(f"baseline {baseline_id} keeps no fold models: retrain it with "
                            "`hcp train` to backtest it")
    if first < spans[0][1]:
        raise RegistryError(f"no out-of-sample model for {first.date()}: baseline "
                            f"{baseline_id}'s first walk-forward test block starts "
                            f"{spans[0][1].date()} (start the backtest there or later)")


#: Scores a list of session blocks ``(first, last)`` of ``baseline_id``'s folds from the feature
#: rows; one wide score frame per block, in order (``score_on_runner``: as Prefect tasks).
ScoreMany = Callable[[pd.DataFrame, str, list[tuple[pd.Timestamp, pd.Timestamp]]],
                     list[pd.DataFrame]]


def fold_scores(home: Paths, baseline_id: str, hist: session.History, start: pd.Timestamp,
                end: pd.Timestamp, settings: AppSettings,
                say: Callable[[str], None] | None = None,
                score_many: ScoreMany | None = None) -> pd.DataFrame:
    """Calibrated wide scores of every row in [start, end], each scored by the model that saw
    none of it: the fold whose test block holds its date (rows before the first block: none).

    With ``score_many`` each fold's span is cut into blocks of ``runtime.score_block_sessions``
    whole sessions scored by it (tasks on the flow's runner); the result is the same frame."""
    days = hist.sessions[(hist.sessions >= start) & (hist.sessions <= end)]
    groups: dict[str, list[pd.Timestamp]] = {}
    models: dict[str, Baseline] = {}
    for day in days:
        try:
            model = fold_baseline(home, baseline_id, day)
        except RegistryError:
            continue  # before the first test block: no out-of-sample model
        models[model.baseline_id] = model
        groups.setdefault(model.baseline_id, []).append(day)
    if not groups:
        raise RegistryError(f"baseline {baseline_id} has no out-of-sample model for "
                            f"{start.date()}..{end.date()}")
    if score_many is not None:
        return _scores_by_block(hist, baseline_id, groups, settings, score_many, say)
    parts = []
    for i, (mid, ds_) in enumerate(groups.items()):
        if say:
            say(f"scoring {ds_[0].date()}..{ds_[-1].date()} with {mid} ({i + 1}/{len(groups)})")
        parts.append(session.score_history(models[mid], hist, ds_[0], ds_[-1], settings))
    return pd.concat(parts, ignore_index=True)


@task(name="score-block", cache_policy=NO_CACHE, retries=1,
      task_run_name="score {first}..{last}")
def score_block_task(root: str, home: str, baseline_id: str, first: str, last: str,
                     settings: AppSettings) -> str:
    """Score one block of whole sessions from the run's feature rows; the URL of its scores."""
    from tasks.models.fitstore import score_to_store

    return score_to_store(root, home, baseline_id, first, last, settings)


def score_on_runner(home: Paths, settings: AppSettings) -> ScoreMany:
    """A ``score_many`` that submits every block as a task of the running flow (so to its task
    runner, e.g. Dask): the feature rows go to the results store once, each task gets its URL
    and the block's first and last session, and the run's folder is removed after."""
    from tasks.models.fitstore import new_run_root, put_frame, read_frame, remove_run

    logger = get_run_logger()

    def score_many(rows: pd.DataFrame, baseline_id: str,
                   blocks: list[tuple[pd.Timestamp, pd.Timestamp]]) -> list[pd.DataFrame]:
        root = new_run_root(home, settings, "score")
        put_frame(root, rows, pd.DatetimeIndex([]))
        try:
            futures = [score_block_task.submit(root, str(home.home), baseline_id,
                                               a.date().isoformat(), b.date().isoformat(),
                                               settings) for a, b in blocks]
            parts = []
            for i, future in enumerate(futures):
                parts.append(read_frame(future.result()))
                logger.info("scored block %d/%d", i + 1, len(futures))
        finally:
            remove_run(root)
        return parts

    return score_many


def _scores_by_block(hist: session.History, baseline_id: str,
                     groups: dict[str, list[pd.Timestamp]], settings: AppSettings,
                     score_many: ScoreMany, say: Callable[[str], None] | None) -> pd.DataFrame:
    """Every fold's span in blocks of whole sessions, scored by ``score_many``; each fold's
    blocks put back in the order :func:`tasks.plan.session.score_history` gives (symbol, date)."""
    n = settings.runtime.score_block_sessions
    blocks, owner = [], []
    for mid, ds_ in groups.items():
        for i in range(0, len(ds_), n):
            blocks.append((ds_[i], ds_[min(i + n, len(ds_)) - 1]))
            owner.append(mid)
    first, last = blocks[0][0], blocks[-1][1]
    f = hist.features
    rows = f.loc[(f["date"] >= first) & (f["date"] <= last)].reset_index(drop=True)
    if say:
        say(f"scoring {first.date()}..{last.date()} in {len(blocks)} blocks of up to {n} "
            f"sessions on the task runner")
    parts = score_many(rows, baseline_id, blocks)
    out = []
    for mid in groups:
        mine = [p for p, o in zip(parts, owner, strict=True) if o == mid]
        out.append(pd.concat(mine, ignore_index=True).sort_values(
            ["symbol", "date"], kind="stable").reset_index(drop=True))
    return pd.concat(out, ignore_index=True)


def shadow_of(home: Paths, shadow: Baseline | None, first: pd.Timestamp
              ) -> tuple[str | None, str | None]:
    """The shadow baseline scored beside the active one (by its own fold models), or None and
    why not."""
    if shadow is None:
        return None, "no shadow model in the registry"
    spans = fold_spans(home, shadow.baseline_id)
    if not spans or first < spans[0][1]:
        return None, (f"shadow baseline {shadow.baseline_id} has no out-of-sample fold model for "
                      f"{first.date()}: not scored")
    return shadow.baseline_id, None


def shadow_comparison(root: Paths, settings: AppSettings, table: pd.DataFrame,
                      bars: pd.DataFrame, sid: str | None, note: str | None) -> dict[str, Any]:
    """The shadow model against the active one over the whole backtest: score distributions
    (PSI, KS) and, where outcomes are known, the win rate and markout of each one's BUYs. In a
    backtest nothing acts on it (the rollback guard acts on the live registry only)."""
    from tasks.models import shadow as sh

    if sid is None:
        return {"shadow_id": None, "note": note}
    h = settings.fusion.plan_horizon
    days = [d for d in table["date"].astype(str) if sh.shadow_frame(root, d, h) is not None]
    if not days:
        return {"shadow_id": sid, "note": "no session with shadow signals"}
    act = pd.concat([sh.active_frame(root, d, h) for d in days], ignore_index=True)
    sha = pd.concat([sh.shadow_frame(root, d, h) for d in days], ignore_index=True)
    out = {"shadow_id": sid,
           **sh.compare(act, sha, sh.label_outcomes(bars, settings), settings)}
    out["sessions"] = len(out["sessions"])  # the count; the dates are the sessions table's
    return out


def config_of(home: Paths, settings: AppSettings, baseline_id: str, with_intraday: bool
              ) -> dict[str, Any]:
    """What a backtest's result depends on besides the span (a resume needs the same)."""
    from tasks.models.pipeline import config_hash
    from tasks.models.registry import read_registry
    from tasks.plan.sizehint import read_hint_registry

    return {"baseline_id": baseline_id, "shadow_id": read_registry(home).get("shadow"),
            "settings": config_hash(settings), "trading": trading_hash(settings),
            "code": runs.code_fingerprint(), "with_intraday": with_intraday,
            "store": (read_manifest(home.store) or {}).get("content_hash"),
            "size_hint": read_hint_registry(home).get("current")}


#: Sections that do not change a backtest's decisions (where work runs, the operator's server).
NOT_DECIDING = ("runtime", "operator")


def trading_hash(settings: AppSettings) -> str:
    """Hash of every other setting (fusion, sizing, risk, escalation, size hint...): a backtest
    run under other settings is another configuration, never a resume of this one."""
    dump = {k: v for k, v in settings.model_dump(mode="json").items() if k not in NOT_DECIDING}
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:16]


def trial_id(config: dict[str, Any]) -> str:
    """One trial per configuration (baseline, model and trading settings, the size hint
    registered, if any), whatever the code version."""
    keys = ["baseline_id", "shadow_id", "settings", "trading", "with_intraday"]
    if config.get("size_hint"):
        keys.append("size_hint")
    key = json.dumps({k: config[k] for k in keys}, sort_keys=True)
    return "cfg-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def prepare_root(folder: Path, home: Paths, config: dict[str, Any], fresh: bool
                 ) -> tuple[SandboxPaths, bool]:
    """The walk's root: kept (a resume) when it was made with the same configuration."""
    marker = folder / "config.json"
    same = (not fresh and marker.is_file()
            and json.loads(marker.read_text()) == config)
    if not same:
        shutil.rmtree(folder, ignore_errors=True)
        atomic_write_json(marker, config)
    return SandboxPaths(home.home, folder / "sandbox"), same


def run_backtest(start: str, end: str, *, with_intraday: bool = True, fresh: bool = False,
                 progress: Progress | None = None, say: Callable[[str], None] | None = None,
                 score_many: ScoreMany | None = None) -> BacktestResult:
    """Backtest the active baseline over [start, end]; see the module docstring."""
    tick = time.perf_counter()
    home = Paths.from_env()
    settings = backtest_settings(load_settings())
    days = replay_sessions(start, end, home.store, settings.data.calendar)
    active, shadow = ds.load_models(home)
    bid = active.baseline_id
    check_span(home, bid, days[0])
    folder = backtest_folder(home, days)
    config = config_of(home, settings, bid, with_intraday)
    root, resumed = prepare_root(folder, home, config, fresh)
    if say:
        say(("resuming" if resumed else "starting") + f" backtest under {folder}")
    bars, hist = load_span(root, days, settings)
    scores = fold_scores(home, bid, hist, session.scoring_start(hist, days[0], settings),
                         days[-1], settings, say, score_many)
    sid, shadow_note = shadow_of(home, shadow, days[0])
    shadow_scores = (fold_scores(home, sid, hist, days[0], days[-1], settings, say, score_many)
                     if sid else None)

    def models(day: pd.Timestamp) -> tuple[Baseline, Baseline | None]:
        return fold_baseline(home, bid, day), (fold_baseline(home, sid, day) if sid else None)

    walk = Walk(home, root, settings, bars, hist, scores, shadow_scores, models,
                live_policy=False, with_intraday=with_intraday, resume=resumed)
    rows, _ = walk_sessions(walk, days, progress=progress)
    table = pd.DataFrame(rows)
    atomic_write(folder / "sessions.csv", lambda t: table.drop(
        columns=["empty_book"], errors="ignore").to_csv(t, index=False, lineterminator="\n",
                                                        float_format="%.6f"))
    meta = {"start": days[0].date().isoformat(), "end": days[-1].date().isoformat(),
            "baseline_id": bid, "universe": int(bars["symbol"].nunique()),
            "survivorship_bias": bool(active.manifest.get("survivorship_bias")),
            "out_of_sample": True, "with_intraday": with_intraday,
            "reasoner": ", ".join(sorted({str(r.get("postmortem_by")) for r in rows
                                          if r.get("postmortem_by")})) or "none",
            "notes": [
                "Every session is scored by the walk-forward fold model whose training ended "
                "before it (the baseline itself after its training end).",
                "Intraday bars are simulated from daily OHLC (seeded Brownian bridge); fills "
                "follow the paper broker's fill model.",
                "The benchmark is the equal-weight buy-and-hold of the same universe.",
            ]}
    if meta["survivorship_bias"] and settings.backtest.universe_caveat:
        meta["notes"].append("Survivorship bias: the universe is today's index constituents "
                             "applied to the past; both the strategy and the benchmark are "
                             "overstated against a point-in-time universe.")
    frames = collect(root, bars, days, meta)
    summary = {**summary_figures(frames), **{k: meta[k] for k in (
        "start", "end", "baseline_id", "universe", "survivorship_bias", "out_of_sample",
        "with_intraday", "reasoner")}}
    summary["sessions_walked"] = len(days)
    summary["orders_total"] = int(table["orders"].sum()) if "orders" in table else 0
    trials_root = home.reports / "backtest"
    tid = trial_id(config)
    if len(frames.daily):
        record_trial(trials_root, tid, frames.daily["returns"],
                     {"start": meta["start"], "end": meta["end"], "baseline_id": bid,
                      "settings": config["settings"]})
    summary["trial_id"] = tid
    summary["shadow"] = shadow_comparison(root, settings, table, bars, sid, shadow_note)
    gates = evaluate_gates(summary, frames.daily, frames.trades, load_trials(trials_root),
                           settings)
    gates.setdefault("baseline_id", bid)
    write_gates(folder, gates)
    atomic_write_json(folder / "summary.json", summary)
    write_tearsheet(folder, frames, summary, gates)
    return BacktestResult(meta["start"], meta["end"], len(days), resumed, folder, summary,
                          gates, time.perf_counter() - tick)


def headline_lines(summary: dict[str, Any]) -> list[str]:
    """The headline figures next to the benchmark's, one line each."""
    bench = summary.get("benchmark") or {}

    def fmt(key: str, v: Any) -> str:
        if v is None:
            return "n/a"
        return f"{v:.2%}" if key in ("cagr", "max_drawdown", "volatility") else f"{v:.2f}"

    out = [f"{'':14}{'strategy':>12}{'benchmark':>12}"]
    out += [f"{k:14}{fmt(k, summary.get(k)):>12}{fmt(k, bench.get(k)):>12}" for k in HEADLINE]
    hit, avg_r = summary.get("hit_rate"), summary.get("avg_r")
    out.append(f"trades {summary.get('trades', 0)}, hit rate "
               f"{'n/a' if hit is None else f'{hit:.1%}'}, avg R "
               f"{'n/a' if avg_r is None else f'{avg_r:.2f}'}, "
               f"turnover {fmt('x', summary.get('turnover'))}/session, kill-switch days "
               f"{summary.get('kill_switch_days', 0)}, escalations/session "
               f"{fmt('x', summary.get('escalations_per_day'))}")
    return out


@flow(name="backtest", log_prints=False)
def backtest(start: str, end: str, with_intraday: bool = True, fresh: bool = False
             ) -> BacktestResult:
    """Walk-forward backtest of the active baseline over [start, end] (see the module)."""
    logger = get_run_logger()

    def progress(i: int, n: int, msg: str) -> None:
        logger.info("backtest %d/%d %s", i, n, msg)
        if progress_hook is not None:
            progress_hook(i, n, msg)

    settings = load_settings()
    many = (score_on_runner(Paths.from_env(), settings)
            if settings.runtime.task_runner == "dask" else None)
    res = run_backtest(start, end, with_intraday=with_intraday, fresh=fresh, progress=progress,
                       say=lambda m: logger.info("%s", m), score_many=many)
    for line in headline_lines(res.summary):
        logger.info("%s", line)
    logger.info("gates %s -> %s", "PASSED" if res.gates.get("passed") else "FAILED",
                res.folder / "gates.json")
    return res
