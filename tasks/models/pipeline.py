"""`hcp train`: walk-forward validation, the final baseline, its reports, card and registry entry.

Every walk-forward fold's models are kept with the baseline (see :mod:`tasks.models.folds`):
a backtest scores each past session with the fold whose training ended before it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.data.calendar import sessions as calendar_sessions
from tasks.data.store import load_bars, load_constituents, read_manifest
from tasks.features.build import feature_columns, feature_schema_hash
from tasks.features.labels import __doc__ as LABEL_DOC
from tasks.features.regimes import fit_vol_regime_cuts
from tasks.io import atomic_write, atomic_write_parquet
from tasks.models.barrier import feature_reference, payoff_stats
from tasks.models.expectancy_report import COLUMNS as EXPECTANCY_COLUMNS
from tasks.models.expectancy_report import expectancy_summary, reliability_table
from tasks.models.folds import save_fold_baselines
from tasks.models.metrics import OOSMeasures
from tasks.models.registry import backtest_gate_refusal, promote, read_registry, save_baseline
from tasks.models.reports import card_metrics, write_model_card, write_validation_report
from tasks.models.skill import SKILLED, headline, skill_record
from tasks.models.train import (
    FitJob,
    FoldModel,
    HorizonModel,
    assemble,
    fit_final,
    fit_jobs,
    fit_parts,
    training_frame,
    walk_forward,
)
from tasks.models.walkforward import make_folds
from tasks.paths import Paths
from tasks.progress import StepCallback, Steps
from tasks.settings import AppSettings


@dataclass
class TrainResult:
    """Where a training run wrote its baseline and how it did."""

    baseline_id: str
    model_dir: Path
    oos_path: Path
    report_dir: Path
    promoted: bool
    overall: pd.DataFrame
    leakage_suspect: list[str]
    skill: dict = field(default_factory=dict)
    promotion: str = ""   # plain language: promoted, or why not


def config_hash(settings: AppSettings) -> str:
    """Hash of every setting that shapes a model."""
    parts = {k: settings.model_dump(mode="json")[k]
             for k in ("features", "labels", "regimes", "models")}
    parts["models"].pop("skill", None)  # the skill gate's thresholds judge a model, not shape it
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _span(start: str | None, end: str | None, store: Path) -> tuple[pd.Timestamp, pd.Timestamp]:
    manifest = read_manifest(store) or {}
    first = pd.Timestamp(start) if start else pd.Timestamp(manifest.get("first_date"))
    last = pd.Timestamp(end) if end else pd.Timestamp(manifest.get("last_date"))
    if last <= first:
        raise ValueError(f"training end {last.date()} must be after the start {first.date()}")
    return first, last


def _lags(settings: AppSettings) -> dict[str, int]:
    return {k: max(0, h - 1) for k, h in settings.labels.horizons.items()}


def _common(settings: AppSettings, store_meta: dict) -> dict:
    """The manifest keys a baseline and each of its folds share: the data and the settings."""
    return {"feature_schema_hash": feature_schema_hash(settings),
            "feature_columns": feature_columns(settings),
            "data_hash": store_meta.get("content_hash"), "data_source": store_meta.get("source"),
            "config_hash": config_hash(settings),
            "survivorship_bias": store_meta.get("source") != "demo"}


def _manifest(bid: str, settings: AppSettings, span: tuple, store_meta: dict, now: str,
              cuts, models: dict[str, HorizonModel], overall: pd.DataFrame,
              per_regime: pd.DataFrame, folds: dict) -> dict:
    common = _common(settings, store_meta)
    return {
        "id": bid, "created_at": now,
        "feature_schema_hash": common["feature_schema_hash"],
        "feature_columns": common["feature_columns"],
        "data_hash": common["data_hash"], "data_source": common["data_source"],
        "config_hash": common["config_hash"],
        "training_span": {"start": span[0].date().isoformat(), "end": span[1].date().isoformat()},
        "horizons": dict(settings.labels.horizons),
        "thresholds": {"take_profit_atr": settings.labels.take_profit_atr,
                       "stop_atr": settings.labels.stop_atr, "same_bar": settings.labels.same_bar,
                       "vol_regime_cuts": cuts.to_dict()},
        "calibrators": {n: {r: c.summary() for r, c in m.calibrators.items()}
                        for n, m in models.items()},
        "metrics": {"overall": overall.to_dict(orient="records"),
                    "per_regime": per_regime.to_dict(orient="records")},
        "walk_forward": {"window": settings.models.window, "refit_months":
                         settings.models.refit_months, "folds": folds},
        "survivorship_bias": common["survivorship_bias"],
    }


# fits every job (anywhere: a Dask cluster, other processes) and hands back the fitted parts;
# its last argument is called with a message as each fit completes (progress)
FitMany = Callable[[pd.DataFrame, pd.DatetimeIndex, list[FitJob], Callable[[str], None]],
                   Mapping[FitJob, object]]


def run_training(paths: Paths, settings: AppSettings, now: str, start: str | None = None,
                 train_end: str | None = None, baseline_id: str | None = None,
                 progress: StepCallback | None = None,
                 fit_many: FitMany | None = None) -> TrainResult:
    """Train on the store's bars in [start, train_end]; nothing after train_end is read.

    ``progress`` gets ``(message, done, total)`` per step (folds of every horizon, final
    models, the fold models saved, reports); the total is known once the features are built.
    ``fit_many``: the base fits of every fold and horizon (:func:`fit_jobs`) are handed to it at
    once and the walk-forward then only stacks, calibrates and predicts, in fold order; without
    it each fold's parts are fitted in process as the walk reaches it. Both give the same models.
    """
    first, last = _span(start, train_end, paths.store)
    bars = load_bars(paths.store, start=first, end=last)
    if bars.empty:
        raise ValueError(f"no stored bars between {first.date()} and {last.date()}")
    store_meta = read_manifest(paths.store) or {}
    say = Steps(progress)
    say("features and labels")
    frame = training_frame(bars, load_constituents(paths.store), settings)
    sess = calendar_sessions(settings.data.calendar, bars["date"].min(), bars["date"].max())
    say.total = 3 + (fit_many is not None) + sum(len(make_folds(sess, settings.models, h, frame["date"].min(),
                                       frame["date"].max())) + 1
                        for h in settings.labels.horizons.values())
    cuts = fit_vol_regime_cuts(frame, settings.regimes, end=last)
    fitted = None
    if fit_many is not None:
        jobs = fit_jobs(frame, sess, settings)
        say.total += len(jobs)
        say(f"{len(jobs)} base fits handed out")
        done = fit_many(frame, sess, jobs, say)
        missing = [j for j in jobs if j not in done]
        if missing:
            raise RuntimeError(f"{len(missing)} of {len(jobs)} base fits came back missing, "
                               f"e.g. {missing[0]}")

        def fitted(name: str, block: str):
            return assemble({p: done[FitJob(name, block, p)] for p in fit_parts(settings)},
                            settings)
    oos_parts, models, folds = [], {}, {}
    kept: dict[str, list[FoldModel]] = {}
    for name in settings.labels.horizons:
        kept[name] = []
        oos, fold_list = walk_forward(frame, sess, settings, name, say, keep=kept[name],
                                      fitted=fitted)
        if oos.empty:
            raise ValueError(f"no walk-forward fold fits in {first.date()}..{last.date()}: "
                             f"need {settings.models.min_train_years} years before a test year")
        say(f"{name}: final model")
        models[name] = fit_final(frame, sess, oos, settings, name, cuts, fitted=fitted)
        oos_parts.append(oos)
        folds[name] = [f.to_dict() for f in fold_list]
    oos = pd.concat(oos_parts, ignore_index=True)
    bid = baseline_id or f"bl-{last:%Y%m%d}-{config_hash(settings)[:6]}"
    lookback = settings.models.calibration_lookback_years
    extras = {"payoff": payoff_stats(frame, cuts, settings.labels.horizons, last, lookback),
              "feature_reference": feature_reference(frame, feature_columns(settings), last,
                                                     lookback)}
    say("fold models")
    measures = OOSMeasures(oos, _lags(settings))   # the fold manifests' and the reports' figures
    extras["fold_models"] = save_fold_baselines(paths, bid, kept, frame, sess, oos, settings,
                                                _common(settings, store_meta), now, measures)
    result = _write_all(paths, settings, bid, (first, last), store_meta, now, cuts, models, oos,
                        folds, say, extras, measures)
    say.finish(f"baseline {bid} written")
    return result


def _write_all(paths, settings, bid, span, store_meta, now, cuts, models, oos, folds, say,
               extras: dict | None = None, measures: OOSMeasures | None = None) -> TrainResult:
    """Metrics, skill, manifest, baseline files, validation report and model card of ``oos``;
    ``measures``: its :class:`~tasks.models.metrics.OOSMeasures` when the caller has one (every
    table here shares its per-date figures)."""
    say("metrics and reports")
    lags = _lags(settings)
    if measures is None or measures.oos is not oos:
        measures = OOSMeasures(oos, lags)
    overall = measures.table(None, horizon_lags=lags)
    per_regime = measures.table(["vol_regime"], horizon_lags=lags)
    per_fold = measures.table(["fold"], horizon_lags=lags)
    manifest = _manifest(bid, settings, span, store_meta, now, cuts, models, overall, per_regime,
                         folds)
    manifest.update(extras or {})
    # judged on the raw probability: it exists for every OOS row, first fold included
    raw = measures.table(None, p_col="p_raw", only=frozenset({"auc"}), horizon_lags=lags)
    suspect = raw.loc[raw["auc"] > settings.models.max_plausible_auc, "horizon"].tolist()
    manifest["leakage_suspect"] = suspect
    if suspect:
        say(f"presumed leakage: OOS AUC above {settings.models.max_plausible_auc} for {suspect}")
    manifest["skill"] = skill = skill_record(measures, settings)
    exp_table, manifest["expectancy"] = _expectancy_validation(oos, settings)
    manifest["signal"], signal_tables = _signal_quality(oos, settings, measures)
    active = read_registry(paths).get("active")
    promoted, promotion = _promotion(active, suspect, skill, backtest_gate_refusal(paths, bid))
    model_dir = save_baseline(paths, bid, models, cuts, manifest)
    val_dir = paths.val / bid
    oos_path = atomic_write_parquet(val_dir / "oos_predictions.parquet", oos)
    atomic_write(val_dir / "walkforward_results.csv",
                 lambda t: per_fold.to_csv(t, index=False, lineterminator="\n"))
    report_dir = paths.reports / "validation" / bid
    meta = {**manifest, "baseline_id": bid, "label_definition": LABEL_DOC,
            "limits": _limits(manifest), "horizon_lags": lags,
            "symbols": int(oos["symbol"].nunique()),
            "models": f"base models {', '.join(settings.models.base_models)}; logistic stacker "
                      "on their out-of-sample logits; per-regime isotonic/Platt calibration"}
    meta["expectancy_table"] = exp_table
    meta["signal_tables"] = signal_tables
    meta["skill_verdict"] = headline(skill, None if promoted or skill["verdict"] != SKILLED
                                     else f"Not promoted automatically: {promotion}")
    write_validation_report(oos, report_dir, meta, measures)
    card = card_metrics(oos, horizon_lags=lags, measures=measures)
    write_model_card(model_dir / "model_card.md", meta, card)
    write_model_card(paths.home / "docs" / "model_card.md", meta, card)
    if promoted:
        promote(paths, bid, "active", now)
    return TrainResult(bid, model_dir, oos_path, report_dir, promoted, overall, suspect, skill,
                       promotion)


def _signal_quality(oos: pd.DataFrame, settings: AppSettings,
                    measures: OOSMeasures | None = None) -> tuple[dict, dict]:
    """Signal quality of the score the plan ranks names by (``rank_score`` where the horizon has
    one, else ``p_cal``) per horizon of ``labels.horizons`` (h sessions, Newey-West lag h - 1),
    costs 5 bps per side per leg: the manifest's JSON-safe summaries and the report's tables
    (``measures``: the OOS measures that keep their parts for the report's figures)."""
    from tasks.models.reports import SIGNAL_COST_BPS, signal_quality

    return signal_quality(oos, settings.labels.horizons, SIGNAL_COST_BPS, measures)


def _expectancy_validation(oos: pd.DataFrame, settings: AppSettings) -> tuple[pd.DataFrame, dict]:
    """Predicted against realised expectancy of the plan horizon, on calibrated OOS rows."""
    horizon = settings.fusion.plan_horizon
    cost = 2 * (settings.guardrails.fee_pct + settings.execution.fill.half_spread_bps / 1e4)
    columns = [c for c in ("horizon", *EXPECTANCY_COLUMNS) if c in oos.columns]
    calibrated = oos.loc[oos["p_cal"].notna(), columns] if "p_cal" in oos else oos[columns]
    table = reliability_table(calibrated, horizon, cost)
    return table, expectancy_summary(calibrated, horizon, cost, table)


def _promotion(active: str | None, suspect: list[str], skill: dict,
               gates: str | None = None) -> tuple[bool, str]:
    """Whether a new baseline goes to the empty ``active`` slot, and why (not), in words;
    ``gates``: why its backtest gates do not pass (None when they do)."""
    if active is not None:
        return False, (f"baseline {active} is already active (`hcp promote --to active --id ID` "
                       "to replace it)")
    if suspect:
        return False, f"presumed leakage (OOS AUC too high) for {suspect}"
    if skill["verdict"] != SKILLED:
        return False, (f"no measured skill at the plan horizon ({skill['horizon']}); "
                       "`hcp promote --to active --id ID --force --reason \"...\"` overrides")
    if gates is not None:
        return False, f"{gates}; then `hcp promote --to active --id ID`"
    return True, ("promoted to active (no model was active; skilled; no leakage suspicion; "
                  "backtest gates pass)")


def _limits(manifest: dict) -> list[str]:
    out = ["Daily bars only: entries assume the signal day's close; no intraday path, fees "
           "or slippage in the labels.",
           "The first walk-forward fold has no calibrated probability (no earlier "
           "out-of-sample predictions to calibrate on).",
           "Calibrators are fit on walk-forward raw probabilities; the final stacker is refit "
           "on all out-of-sample base predictions."]
    if manifest.get("survivorship_bias"):
        out.insert(0, "Survivorship bias: the universe is today's index membership applied "
                      "to the past, so performance is overstated versus a point-in-time universe.")
    return out
