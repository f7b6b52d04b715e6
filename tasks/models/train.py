"""Walk-forward training: every stored prediction is out of sample.

For each fold (see :mod:`tasks.models.walkforward`): volatility-regime cut points are learned
on the fold's training span, the base models on its purged training rows, the stacker and the
per-regime calibrators on the out-of-sample predictions of EARLIER folds (purged too), and
then the test block is predicted. The first fold has no earlier predictions: its raw
probability is the mean logit of the base models and it has no calibrated probability.
The final model is fit on everything up to the training end the same way.

Each fold's model can be kept as it predicted its test block (:class:`FoldModel`): scored
again with its own regime cut points, it gives that block's out-of-sample predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.features.build import build_features, feature_columns
from tasks.features.labels import barrier_pnl, build_labels
from tasks.features.regimes import VolRegimeCuts, assign_vol_regime, fit_vol_regime_cuts
from tasks.models.barrier import barrier_expectancy
from tasks.models.calibration import RegimeCalibrator, apply_calibrators, fit_regime_calibrators
from tasks.models.ensemble import StackedEnsemble, fit_base_model
from tasks.models.payoff import (
    PayoffHead,
    calibrated_dispersion,
    expectancy_parts,
    relative_timeout_target,
)
from tasks.models.ranker import RankModel
from tasks.models.walkforward import Fold, make_folds, purged_train_mask
from tasks.settings import AppSettings

Progress = Callable[[str], None]


@dataclass
class HorizonModel:
    """The deployable model of one horizon."""

    horizon: str
    h: int
    ensemble: StackedEnsemble
    calibrators: dict[str, RegimeCalibrator]
    payoff: PayoffHead | None = None   # stop-vs-timeout and timeout return (older baselines: None)
    ranker: RankModel | None = None    # the session ranking score (older baselines: None)


@dataclass
class FoldModel:
    """One horizon's model as fitted for one fold, with the regime cut points it predicted the
    fold's test block with (both learned from data up to the fold's training end only)."""

    fold: Fold
    model: HorizonModel
    cuts: VolRegimeCuts


def training_frame(bars: pd.DataFrame, constituents: pd.DataFrame | None,
                   settings: AppSettings) -> pd.DataFrame:
    """Features joined with labels (labels NaN where their horizon passes the last bar)."""
    feats = build_features(bars, constituents, settings)
    labels = build_labels(bars, settings)
    frame = feats.merge(labels, on=["symbol", "date"], how="left", validate="one_to_one")
    for name in settings.labels.horizons:
        frame[f"rel_timeout_{name}"] = relative_timeout_target(frame, name)
    return frame


def _sample(frame: pd.DataFrame, keep: np.ndarray, sessions: pd.DatetimeIndex,
            settings: AppSettings, cap: int | None = None) -> pd.DataFrame:
    """The rows of ``frame`` where ``keep`` holds on every ``row_stride``-th session, then a
    seeded random sample of at most ``cap`` of them (default ``models.max_train_rows``), in
    frame order. Only the sampled rows are copied."""
    cfg = settings.models
    cap = cfg.max_train_rows if cap is None else cap
    idx = np.flatnonzero(keep)
    pos = sessions.get_indexer(pd.DatetimeIndex(frame["date"].to_numpy()[idx]))
    idx = idx[pos % cfg.row_stride == 0]
    if len(idx) > cap:
        pick = np.random.RandomState(cfg.random_state).choice(len(idx), cap, replace=False)
        idx = idx[np.sort(pick)]
    return frame.iloc[idx]


FINAL = "final"   # the block name of the final (deployable) model's fits


@dataclass(frozen=True)
class FitJob:
    """One base fit of the walk-forward: one ``part`` of horizon ``horizon``'s model for the
    test block ``block`` (a fold name, or :data:`FINAL`). The fits of all blocks are
    independent of each other; only the stacker, the calibrators and the prediction need the
    earlier folds' out-of-sample rows, so the fits can run anywhere, in any order."""

    horizon: str
    block: str
    part: str


def fit_parts(settings: AppSettings) -> list[str]:
    """The parts of one horizon's model that are fitted on training rows: the base
    classifiers, the payoff head and the ranker."""
    return [*settings.models.base_models, "payoff", "ranker"]


def train_mask(frame: pd.DataFrame, sessions: pd.DatetimeIndex, settings: AppSettings,
               name: str, fold: Fold | None) -> np.ndarray:
    """The rows horizon ``name`` may train on for ``fold`` (purged, embargoed, from its
    training start); every row for the final model (labels past the end are NaN)."""
    if fold is None:
        return np.ones(len(frame), dtype=bool)
    mask = purged_train_mask(frame["date"], sessions, fold.test_start, fold.test_end,
                             settings.labels.horizons[name], settings.models.embargo_sessions)
    return mask & (frame["date"] >= fold.train_start).to_numpy()


def horizon_folds(frame: pd.DataFrame, sessions: pd.DatetimeIndex, settings: AppSettings,
                  name: str) -> list[Fold]:
    """The walk-forward folds of horizon ``name`` on ``frame``."""
    return make_folds(sessions, settings.models, settings.labels.horizons[name],
                      frame["date"].min(), frame["date"].max())


def fit_jobs(frame: pd.DataFrame, sessions: pd.DatetimeIndex,
             settings: AppSettings) -> list[FitJob]:
    """Every base fit of a training run: each horizon's folds and final model, each part."""
    return [FitJob(name, block, part)
            for name in settings.labels.horizons
            for block in [f.name for f in horizon_folds(frame, sessions, settings, name)] + [FINAL]
            for part in fit_parts(settings)]


def run_fit_job(frame: pd.DataFrame, sessions: pd.DatetimeIndex, settings: AppSettings,
                job: FitJob) -> object:
    """The fitted part of ``job`` (the same fit :func:`walk_forward` makes in process)."""
    fold = None
    if job.block != FINAL:
        by_name = {f.name: f for f in horizon_folds(frame, sessions, settings, job.horizon)}
        if job.block not in by_name:
            raise ValueError(f"no fold {job.block} for horizon {job.horizon} on this frame")
        fold = by_name[job.block]
    mask = train_mask(frame, sessions, settings, job.horizon, fold)
    return fit_part(frame, mask, job.horizon, sessions, settings, job.part)


def fit_part(frame: pd.DataFrame, mask: np.ndarray, name: str, sessions: pd.DatetimeIndex,
             settings: AppSettings, part: str,
             samples: dict[int, tuple[pd.DataFrame, np.ndarray]] | None = None) -> object:
    """One part fitted on the training rows under ``mask``: a base classifier or the payoff
    head on one sample (``models.max_train_rows``), the ranker on a sample of
    ``models.ranker.rows_for(name)`` rows. ``samples``: the rows and feature matrix already drawn
    for this mask, by cap (the parts of one block share them; the draw is seeded, so a part
    fitted alone gets the same rows)."""
    cap = (settings.models.ranker.rows_for(name) if part == "ranker"
           else settings.models.max_train_rows)
    if samples is not None and cap in samples:
        rows, X = samples[cap]
    else:
        keep = mask & frame[f"label_{name}"].notna().to_numpy()
        rows = _sample(frame, keep, sessions, settings, cap=cap)
        X = rows[feature_columns(settings)].to_numpy(dtype="float32", na_value=np.nan)
        if samples is not None:
            samples[cap] = rows, X
    threads = settings.runtime.n_threads
    if part == "ranker":
        return RankModel().fit(X, rows[f"fwd_return_{name}"].to_numpy(dtype="float64"),
                               rows["date"].to_numpy(), settings.models, threads)
    if part == "payoff":
        return PayoffHead().fit(X, rows[f"outcome_{name}"].to_numpy(),
                                rows[f"rel_timeout_{name}"].to_numpy(dtype="float64"),
                                settings.models, threads)
    return fit_base_model(part, X, rows[f"label_{name}"].to_numpy(), settings.models, threads)


def assemble(parts: Mapping[str, object],
             settings: AppSettings) -> tuple[StackedEnsemble, PayoffHead, RankModel]:
    """The ensemble (stacker unfit), payoff head and ranker from fitted parts."""
    model = StackedEnsemble(settings.models, settings.runtime.n_threads).with_models(
        {n: parts[n] for n in settings.models.base_models})
    return model, parts["payoff"], parts["ranker"]


def _fit_base(frame: pd.DataFrame, mask: np.ndarray, name: str, sessions: pd.DatetimeIndex,
              settings: AppSettings) -> tuple[StackedEnsemble, PayoffHead, RankModel]:
    """Every part of one horizon's model, fitted here, one after the other."""
    samples: dict[int, tuple[pd.DataFrame, np.ndarray]] = {}
    return assemble({p: fit_part(frame, mask, name, sessions, settings, p, samples)
                     for p in fit_parts(settings)}, settings)


# looks up the parts fitted elsewhere: (horizon, block) -> (ensemble, payoff head, ranker)
Fitted = Callable[[str, str], tuple[StackedEnsemble, PayoffHead, RankModel]]


def _vol_lookup(frame: pd.DataFrame, feature: str) -> pd.Series:
    """The regime feature of every (symbol, date) of the frame (built once per walk)."""
    return frame.set_index(["symbol", "date"])[feature]


def _prior(oos: list[pd.DataFrame], sessions: pd.DatetimeIndex, before: pd.Timestamp,
           h: int, cuts: VolRegimeCuts, vol: pd.Series, lookback: int) -> pd.DataFrame:
    """Recent earlier out-of-sample rows whose labels end before ``before``, regimes re-cut
    (``vol``: :func:`_vol_lookup` of the training frame)."""
    since = before - pd.DateOffset(years=lookback)
    parts = [p for p in oos if len(p) and p["date"].max() >= since]
    if not parts:
        return pd.DataFrame()
    prior = pd.concat(parts, ignore_index=True)
    keep = purged_train_mask(prior["date"], sessions, before, before, h, 0)
    recent = (prior["date"] >= since).to_numpy()
    prior = prior.loc[keep & recent & prior["label"].notna().to_numpy()].copy()
    prior[cuts.feature] = vol.reindex(pd.MultiIndex.from_frame(prior[["symbol", "date"]])).to_numpy()
    prior["vol_regime"] = assign_vol_regime(prior, cuts).astype("object").to_numpy()
    return prior


def _fit_stack_and_calibrate(model: StackedEnsemble, head: PayoffHead, prior: pd.DataFrame,
                             settings: AppSettings, h: int) -> dict[str, RegimeCalibrator]:
    head.calibrate(prior)
    head.fit_expectancy_weights(prior, settings.labels.take_profit_atr, settings.labels.stop_atr,
                                horizon=h)
    if prior.empty or prior["label"].nunique() < 2:
        return {}
    cols = [f"p_{n}" for n in model.base_names]
    model.fit_stacker(prior[cols].to_numpy(), prior["label"].to_numpy())
    return fit_regime_calibrators(prior["p_raw"].to_numpy(), prior["label"].to_numpy(),
                                  prior["vol_regime"].to_numpy(), prior["date"].to_numpy(),
                                  settings.models)


def _predict_block(model: StackedEnsemble, head: PayoffHead, ranker: RankModel, test: pd.DataFrame,
                   cuts: VolRegimeCuts, cals: dict[str, RegimeCalibrator], name: str, fold: Fold,
                   settings: AppSettings) -> pd.DataFrame:
    X = test[feature_columns(settings)].to_numpy(dtype="float64", na_value=np.nan)
    base = model.base_predict(X)
    p_raw = model.combine(base)
    regime = assign_vol_regime(test, cuts).astype("object").to_numpy()
    out = pd.DataFrame({"symbol": test["symbol"].to_numpy(), "date": test["date"].to_numpy(),
                        "horizon": name, "fold": fold.name})
    for i, base_name in enumerate(model.base_names):
        out[f"p_{base_name}"] = base[:, i]
    out["p_raw"] = p_raw
    out["p_cal"] = apply_calibrators(p_raw, regime, cals, strict=False)
    out["vol_regime"] = regime
    out["label"] = test[f"label_{name}"].to_numpy()
    out["fwd_return"] = test[f"fwd_return_{name}"].to_numpy()
    out["outcome"] = test[f"outcome_{name}"].astype("object").to_numpy()
    out["atr_pct"] = test["atr_pct"].to_numpy(dtype="float64")
    lab = settings.labels
    out["realised_pnl"] = barrier_pnl(out["outcome"], out["fwd_return"], out["atr_pct"],
                                      lab.take_profit_atr, lab.stop_atr)
    out["rel_timeout"] = test[f"rel_timeout_{name}"].to_numpy(dtype="float64")
    out["q_raw"], out["r_raw"] = head.raw(X)
    out["q_cal"], out["r_cal"] = head.apply(out["q_raw"].to_numpy(), out["r_raw"].to_numpy(),
                                            regime)
    out["p_sd"] = calibrated_dispersion(base, regime, cals, test["date"].to_numpy())
    out["rank_score"] = ranker.score(X)
    exp = barrier_expectancy(out["p_cal"].to_numpy(), out["q_cal"].to_numpy(),
                             out["r_cal"].to_numpy(), out["atr_pct"].to_numpy(),
                             lab.take_profit_atr, lab.stop_atr)
    out["exp_pnl_barrier"] = exp["exp_pnl"]
    ident, rank = expectancy_parts(out, lab.take_profit_atr, lab.stop_atr)
    a, b, _ = head.weights_of(regime)
    out["exp_pnl"] = a * ident + b * np.nan_to_num(rank)
    return out


def walk_forward(frame: pd.DataFrame, sessions: pd.DatetimeIndex, settings: AppSettings,
                 name: str, progress: Progress | None = None,
                 keep: list[FoldModel] | None = None,
                 fitted: Fitted | None = None) -> tuple[pd.DataFrame, list[Fold]]:
    """Out-of-sample predictions of horizon ``name`` over every fold; with ``keep``, each
    fold's fitted model and cut points are appended to it (nothing is refit afterwards).
    ``fitted`` hands over parts fitted elsewhere (:class:`FitJob`); without it each fold's
    parts are fitted here."""
    h = settings.labels.horizons[name]
    folds = horizon_folds(frame, sessions, settings, name)
    oos: list[pd.DataFrame] = []
    vol = _vol_lookup(frame, settings.regimes.vol_feature)
    for i, fold in enumerate(folds):
        if progress:
            progress(f"{name}: fold {i + 1}/{len(folds)} test {fold.name}")
        cuts = fit_vol_regime_cuts(frame, settings.regimes, end=fold.train_end)
        if fitted is None:
            mask = train_mask(frame, sessions, settings, name, fold)
            model, head, ranker = _fit_base(frame, mask, name, sessions, settings)
        else:
            model, head, ranker = fitted(name, fold.name)
        prior = _prior(oos, sessions, fold.test_start, h, cuts, vol,
                       settings.models.calibration_lookback_years)
        cals = _fit_stack_and_calibrate(model, head, prior, settings, h)
        test = frame.loc[(frame["date"] >= fold.test_start) & (frame["date"] <= fold.test_end)]
        oos.append(_predict_block(model, head, ranker, test, cuts, cals, name, fold, settings))
        if keep is not None:
            keep.append(FoldModel(fold, HorizonModel(name, h, model, cals, head, ranker), cuts))
    result = pd.concat(oos, ignore_index=True) if oos else pd.DataFrame()
    return result, folds


def fit_final(frame: pd.DataFrame, sessions: pd.DatetimeIndex, oos: pd.DataFrame,
              settings: AppSettings, name: str, cuts: VolRegimeCuts,
              fitted: Fitted | None = None) -> HorizonModel:
    """The deployable model: base models on all rows, stacker/calibrators on recent OOS rows."""
    h = settings.labels.horizons[name]
    if fitted is None:
        mask = train_mask(frame, sessions, settings, name, None)
        model, head, ranker = _fit_base(frame, mask, name, sessions, settings)
    else:
        model, head, ranker = fitted(name, FINAL)
    after_last = sessions[-1] + pd.Timedelta(days=1)
    prior = (_prior([oos], sessions, after_last, h, cuts, _vol_lookup(frame, cuts.feature),
                    settings.models.calibration_lookback_years) if len(oos) else pd.DataFrame())
    cals = _fit_stack_and_calibrate(model, head, prior, settings, h)
    return HorizonModel(name, h, model, cals, head, ranker)
