"""The walk-forward fold models a baseline keeps, for scoring past sessions out of sample.

``hcp train`` keeps every fold's models as they predicted the fold's test block and saves them
under ``models/<baseline_id>/folds/<fold name>/`` in the layout of a baseline (ensemble,
calibrators, payoff head and ranker per horizon, ``regime_cuts.json``, ``manifest.json``); the
fold's id is ``<baseline_id>/folds/<fold name>`` (:func:`fold_id`), and it is loaded with
:func:`tasks.models.registry.load_baseline` like any baseline. The registry lists baselines
one level deep, so a fold is never listed, promoted or put into a slot.

One folder per test block. The refit dates do not depend on the horizon, so every horizon
has the same test blocks and the folder holds all of them; what does depend on the horizon is
the training end (labels are purged: a horizon of h sessions ends its training h + 1 sessions
before the block) and so the regime cut points learned up to it. A baseline scores with one
set of cut points: the fold keeps those of the plan horizon (``fusion.plan_horizon``), so its
scores reproduce that horizon's stored out-of-sample predictions exactly; every horizon's own
training span and cut points are in ``manifest["fold"]["horizons"]``. For another horizon only
a name whose volatility lies between the two sets of cut points can fall into another regime
(and get another calibrator) than in the walk-forward.

The fold manifest is point in time: nothing in it is measured on data after the fold's
training end. Per horizon, the payoff statistics use the labels complete before the test block
(dates up to that horizon's training end); the feature reference uses features up to the
fold's training end; the skill record and the validation metrics use the out-of-sample rows of
EARLIER folds whose label was complete before the block (none for the first fold: its skill
verdict is ``no_skill``, every figure unmeasurable, and its metrics are empty).

:func:`fold_baseline` picks the model a backtest scores a past session with: the fold whose
test block holds the day, or the baseline itself after its training end.
"""

from __future__ import annotations

import shutil
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd

from tasks.features.regimes import VolRegimeCuts
from tasks.models.barrier import feature_reference, payoff_stats
from tasks.models.manifests import manifest_path, read_manifest_file
from tasks.models.metrics import OOSMeasures
from tasks.models.registry import Baseline, RegistryError, baseline_dir, load_baseline, save_baseline
from tasks.models.skill import skill_record
from tasks.models.train import FoldModel
from tasks.models.walkforward import purged_train_mask
from tasks.paths import Paths
from tasks.settings import AppSettings

FOLDS = "folds"
CACHE_SIZE = 4   # loaded baselines kept: a backtest walks the folds in order, one at a time


def fold_id(baseline_id: str, name: str) -> str:
    """The id a fold of ``baseline_id`` is saved and loaded under."""
    return f"{baseline_id}/{FOLDS}/{name}"


def _day(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).date().isoformat()


def group_by_block(kept: dict[str, list[FoldModel]]) -> dict[str, dict[str, FoldModel]]:
    """Fold name -> horizon -> its fold model, in test-block order; a test block is the same
    span for every horizon that has it (checked)."""
    blocks: dict[str, dict[str, FoldModel]] = {}
    for name, folds in kept.items():
        for fm in folds:
            blocks.setdefault(fm.fold.name, {})[name] = fm
    for block, parts in blocks.items():
        spans = {(fm.fold.test_start, fm.fold.test_end) for fm in parts.values()}
        if len(spans) > 1:
            raise ValueError(f"fold {block}: the horizons' test blocks differ ({sorted(spans)})")
    first = {b: next(iter(p.values())).fold.test_start for b, p in blocks.items()}
    return {b: blocks[b] for b in sorted(blocks, key=first.__getitem__)}


def known_before(oos: pd.DataFrame, sessions: pd.DatetimeIndex, test_start: pd.Timestamp,
                 horizons: dict[str, int]) -> pd.DataFrame:
    """Out-of-sample rows whose label was complete before ``test_start``: per horizon of h
    sessions, rows dated h + 1 sessions or more before it."""
    if oos.empty:
        return oos
    keep = pd.Series(False, index=oos.index)
    for name, h in horizons.items():
        rows = (oos["horizon"] == name).to_numpy()
        if rows.any():
            keep.loc[rows] = purged_train_mask(oos.loc[rows, "date"], sessions, test_start,
                                               test_start, h, 0)
    return oos.loc[keep.to_numpy()]


def _scoring_cuts(parts: dict[str, FoldModel], plan_horizon: str) -> tuple[str, VolRegimeCuts]:
    """The cut points the fold scores every horizon with: the plan horizon's, else those of the
    horizon trained latest."""
    if plan_horizon in parts:
        return plan_horizon, parts[plan_horizon].cuts
    name = max(parts, key=lambda n: (parts[n].fold.train_end, n))
    return name, parts[name].cuts


def known_sessions(measures: OOSMeasures, sessions: pd.DatetimeIndex, test_start: pd.Timestamp,
                   horizons: dict[str, int]) -> dict[str, np.ndarray]:
    """Per horizon, which dates of ``measures`` hold labels complete before ``test_start`` (the
    rule of :func:`known_before`, applied to each date once)."""
    before = np.asarray(measures.dates < test_start)
    return {name: before & purged_train_mask(pd.Series(measures.dates), sessions, test_start,
                                             test_start, h, 0)
            for name, h in horizons.items()}


def _narrow(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The columns of ``frame`` that exist, in that order, once each (its index kept)."""
    return frame[[c for c in dict.fromkeys(columns) if c in frame.columns]]


def fold_manifest(bid: str, parts: dict[str, FoldModel], frame: pd.DataFrame,
                  sessions: pd.DatetimeIndex, oos: pd.DataFrame | OOSMeasures,
                  settings: AppSettings, common: dict[str, Any], now: str
                  ) -> tuple[dict[str, Any], VolRegimeCuts]:
    """The manifest of one fold (module docstring) and the cut points it scores with.

    ``common``: the parent's keys that describe the data and settings rather than a model
    (feature schema hash and columns, data and config hashes, data source, survivorship).
    ``oos``: the out-of-sample rows, or their :class:`~tasks.models.metrics.OOSMeasures` shared
    by every fold (the earlier folds' figures are then combined from per-date parts computed
    once, with the same result)."""
    measures = oos if isinstance(oos, OOSMeasures) else OOSMeasures(oos)
    any_fold = next(iter(parts.values())).fold
    test_start, test_end = any_fold.test_start, any_fold.test_end
    train_start = min(fm.fold.train_start for fm in parts.values())
    train_end = max(fm.fold.train_end for fm in parts.values())
    horizons = {n: fm.model.h for n, fm in parts.items()}
    cuts_from, cuts = _scoring_cuts(parts, settings.fusion.plan_horizon)
    lookback = settings.models.calibration_lookback_years
    payoff = {n: payoff_stats(frame, cuts, {n: fm.model.h}, fm.fold.train_end, lookback)[n]
              for n, fm in parts.items()}
    known = known_sessions(measures, sessions, test_start, horizons)
    lags = {n: max(0, h - 1) for n, h in horizons.items()}
    overall = measures.table(None, sessions=known, horizon_lags=lags)
    per_regime = measures.table(["vol_regime"], sessions=known, horizon_lags=lags)
    rows = {n: measures.rows(n, (), known) for n in horizons}
    manifest = {
        "id": fold_id(bid, any_fold.name), "parent": bid, "created_at": now, **common,
        "fold": {"name": any_fold.name, "train_start": _day(train_start),
                 "train_end": _day(train_end), "test_start": _day(test_start),
                 "test_end": _day(test_end), "scoring_cuts_of": cuts_from,
                 "horizons": {n: {"train_start": _day(fm.fold.train_start),
                                  "train_end": _day(fm.fold.train_end),
                                  "vol_regime_cuts": fm.cuts.to_dict()}
                              for n, fm in parts.items()}},
        "training_span": {"start": _day(train_start), "end": _day(train_end)},
        "horizons": horizons,
        "thresholds": {"take_profit_atr": settings.labels.take_profit_atr,
                       "stop_atr": settings.labels.stop_atr, "same_bar": settings.labels.same_bar,
                       "vol_regime_cuts": cuts.to_dict()},
        "calibrators": {n: {r: c.summary() for r, c in fm.model.calibrators.items()}
                        for n, fm in parts.items()},
        "payoff": payoff,
        "feature_reference": feature_reference(frame, common["feature_columns"], train_end,
                                               lookback),
        "skill": skill_record(measures, settings, known),
        "metrics": {"overall": overall.to_dict(orient="records"),
                    "per_regime": per_regime.to_dict(orient="records")},
        "validation_basis": {
            "rows": {n: int(len(rows[n])) for n in horizons},
            "last_date": {n: (_day(measures.dates[measures.date_code[rows[n]].max()])
                              if len(rows[n]) else None) for n in horizons},
            "rule": "out-of-sample rows of earlier folds whose label was complete before "
                    "the test block"},
    }
    return manifest, cuts


def save_fold_baselines(paths: Paths, bid: str, kept: dict[str, list[FoldModel]],
                        frame: pd.DataFrame, sessions: pd.DatetimeIndex, oos: pd.DataFrame,
                        settings: AppSettings, common: dict[str, Any], now: str,
                        measures: OOSMeasures | None = None) -> dict[str, Any]:
    """Save every fold of ``bid`` (replacing folds a previous training of that id left) and
    return the index the parent manifest keeps as ``fold_models``.

    The folds share one :class:`~tasks.models.metrics.OOSMeasures` of ``oos`` (``measures``
    when given, e.g. to be shared with the reports) and read only the columns of ``frame`` their
    payoff statistics and feature reference use."""
    folder = baseline_dir(paths, bid) / FOLDS
    if folder.is_dir():
        shutil.rmtree(folder)
    blocks = group_by_block(kept)
    names = sorted({n for parts in blocks.values() for n in parts})
    regime_features = sorted({fm.cuts.feature for parts in blocks.values()
                              for fm in parts.values()})
    columns = ["date", "atr_pct", *regime_features,
               *[f"{k}_{n}" for n in names for k in ("label", "outcome", "fwd_return")],
               *common["feature_columns"]]
    narrow = _narrow(frame, columns)
    outcomes = [f"outcome_{n}" for n in names
                if f"outcome_{n}" in narrow and f"outcome_{n}" not in common["feature_columns"]]
    # the outcomes as payoff_stats reads them (objects), converted once
    narrow = narrow.assign(**{c: narrow[c].astype("object") for c in outcomes})
    if measures is None or measures.oos is not oos:
        measures = OOSMeasures(oos)
    index = []
    for name, parts in blocks.items():
        manifest, cuts = fold_manifest(bid, parts, narrow, sessions, measures, settings, common,
                                       now)
        save_baseline(paths, manifest["id"], {n: fm.model for n, fm in parts.items()}, cuts,
                      manifest)
        fold = manifest["fold"]
        index.append({"name": name, "id": manifest["id"], "train_end": fold["train_end"],
                      "test_start": fold["test_start"], "test_end": fold["test_end"],
                      "horizons": sorted(parts)})
    return {"folder": FOLDS, "folds": index}


# ---- loading -------------------------------------------------------------------------------

_cache: OrderedDict[tuple[str, int], Baseline] = OrderedDict()
_spans: OrderedDict[tuple[str, int], tuple[pd.Timestamp, list[dict]]] = OrderedDict()


def clear_cache() -> None:
    """Forget every loaded fold and parent."""
    _cache.clear()
    _spans.clear()


def _stamp(paths: Paths, baseline_id: str) -> tuple[str, int] | None:
    path = manifest_path(paths, baseline_id)
    try:
        return str(path.resolve()), path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _remember(store: OrderedDict, key, value) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > CACHE_SIZE:
        store.popitem(last=False)


def _load(paths: Paths, baseline_id: str) -> Baseline:
    """A baseline (or fold) loaded once while its manifest is unchanged."""
    key = _stamp(paths, baseline_id)
    if key is not None and key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    found = load_baseline(paths, baseline_id)   # RegistryError when absent
    if key is not None:
        _remember(_cache, key, found)
    return found


def _parent(paths: Paths, baseline_id: str) -> tuple[pd.Timestamp, list[dict]]:
    """The baseline's training end and its fold index (empty when it keeps no folds)."""
    key = _stamp(paths, baseline_id)
    if key is None:
        raise RegistryError(f"no baseline {baseline_id!r} under {paths.models}")
    if key in _spans:
        return _spans[key]
    manifest = read_manifest_file(paths, baseline_id, needs=("training_span",)) or {}
    folds = sorted((manifest.get("fold_models") or {}).get("folds") or [],
                   key=lambda f: f["test_start"])
    spans = [{**f, "test_start": pd.Timestamp(f["test_start"]),
              "test_end": pd.Timestamp(f["test_end"])} for f in folds]
    found = (pd.Timestamp(manifest["training_span"]["end"]), spans)
    _remember(_spans, key, found)
    return found


def fold_spans(paths: Paths, baseline_id: str) -> list[tuple[str, pd.Timestamp, pd.Timestamp]]:
    """(fold name, test start, test end) of every fold the baseline keeps, in order (empty for
    a baseline saved without folds)."""
    return [(f["name"], f["test_start"], f["test_end"]) for f in _parent(paths, baseline_id)[1]]


def fold_baseline(paths: Paths, baseline_id: str, day: pd.Timestamp | str) -> Baseline:
    """The model that scores ``day`` out of sample: the fold of ``baseline_id`` whose test
    block holds the day (a day between two blocks: the earlier one), or the baseline itself
    for a day after its training end. Loaded models are cached (:data:`CACHE_SIZE`).

    RegistryError for a day before the first test block, or a baseline without folds."""
    day = pd.Timestamp(day).normalize()
    end, spans = _parent(paths, baseline_id)
    if day > end:
        return _load(paths, baseline_id)
    if not spans:
        raise RegistryError(f"baseline {baseline_id} keeps no fold models: retrain it with "
                            "`hcp train`")
    if day < spans[0]["test_start"]:
        raise RegistryError(f"no out-of-sample model for {day.date()}: baseline {baseline_id}'s "
                            f"first walk-forward test block starts "
                            f"{spans[0]['test_start'].date()}")
    pick = [f for f in spans if f["test_start"] <= day][-1]
    found = _load(paths, pick["id"])
    if found.manifest.get("parent") != baseline_id:
        raise RegistryError(f"fold {pick['id']} does not belong to baseline {baseline_id}: "
                            "retrain it with `hcp train`")
    return found
