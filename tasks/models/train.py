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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.features.build import build_features, feature_columns
from tasks.features.labels import barrier_pnl, build_labels
from tasks.features.regimes import VolRegimeCuts, assign_vol_regime, fit_vol_regime_cuts
from tasks.models.barrier import barrier_expectancy
from tasks.models.calibration import RegimeCalibrator, apply_calibrators, fit_regime_calibrators
from tasks.models.ensemble import StackedEnsemble
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


def _sample(rows: pd.DataFrame, sessions: pd.DatetimeIndex, settings: AppSettings) -> pd.DataFrame:
    cfg = settings.models
    pos = sessions.get_indexer(pd.DatetimeIndex(rows["date"]))
    rows = rows.loc[pos % cfg.row_stride == 0]
    if len(rows) > cfg.max_train_rows:
        rows = rows.sample(cfg.max_train_rows, random_state=cfg.random_state).sort_index()
    return rows


def _fit_base(frame: pd.DataFrame, mask: np.ndarray, name: str, sessions: pd.DatetimeIndex,
              settings: AppSettings) -> tuple[StackedEnsemble, PayoffHead, RankModel]:
    """The ensemble (P(win)), the payoff head and the ranker, on the same sampled rows."""
    label = f"label_{name}"
    rows = _sample(frame.loc[mask & frame[label].notna().to_numpy()], sessions, settings)
    X = rows[feature_columns(settings)].to_numpy(dtype="float64", na_value=np.nan)
    model = StackedEnsemble(settings.models, settings.runtime.n_threads)
    model.fit(X, rows[label].to_numpy())
    head = PayoffHead().fit(X, rows[f"outcome_{name}"].to_numpy(),
                            rows[f"rel_timeout_{name}"].to_numpy(dtype="float64"),
                            settings.models, settings.runtime.n_threads)
    ranker = RankModel().fit(X, rows[f"fwd_return_{name}"].to_numpy(dtype="float64"),
                             rows["date"].to_numpy(), settings.models, settings.runtime.n_threads)
    return model, head, ranker


def _prior(oos: list[pd.DataFrame], sessions: pd.DatetimeIndex, before: pd.Timestamp,
           h: int, cuts: VolRegimeCuts, frame: pd.DataFrame, lookback: int) -> pd.DataFrame:
    """Recent earlier out-of-sample rows whose labels end before ``before``, regimes re-cut."""
    if not oos:
        return pd.DataFrame()
    prior = pd.concat(oos, ignore_index=True)
    keep = purged_train_mask(prior["date"], sessions, before, before, h, 0)
    recent = (prior["date"] >= before - pd.DateOffset(years=lookback)).to_numpy()
    prior = prior.loc[keep & recent & prior["label"].notna().to_numpy()].copy()
    vol = frame.set_index(["symbol", "date"])[cuts.feature]
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
                 keep: list[FoldModel] | None = None) -> tuple[pd.DataFrame, list[Fold]]:
    """Out-of-sample predictions of horizon ``name`` over every fold; with ``keep``, each
    fold's fitted model and cut points are appended to it (nothing is refit afterwards)."""
    h = settings.labels.horizons[name]
    folds = make_folds(sessions, settings.models, h, frame["date"].min(), frame["date"].max())
    oos: list[pd.DataFrame] = []
    for i, fold in enumerate(folds):
        if progress:
            progress(f"{name}: fold {i + 1}/{len(folds)} test {fold.name}")
        cuts = fit_vol_regime_cuts(frame, settings.regimes, end=fold.train_end)
        mask = purged_train_mask(frame["date"], sessions, fold.test_start, fold.test_end, h,
                                 settings.models.embargo_sessions)
        mask &= (frame["date"] >= fold.train_start).to_numpy()
        model, head, ranker = _fit_base(frame, mask, name, sessions, settings)
        prior = _prior(oos, sessions, fold.test_start, h, cuts, frame,
                       settings.models.calibration_lookback_years)
        cals = _fit_stack_and_calibrate(model, head, prior, settings, h)
        test = frame.loc[(frame["date"] >= fold.test_start) & (frame["date"] <= fold.test_end)]
        oos.append(_predict_block(model, head, ranker, test, cuts, cals, name, fold, settings))
        if keep is not None:
            keep.append(FoldModel(fold, HorizonModel(name, h, model, cals, head, ranker), cuts))
    result = pd.concat(oos, ignore_index=True) if oos else pd.DataFrame()
    return result, folds


def fit_final(frame: pd.DataFrame, sessions: pd.DatetimeIndex, oos: pd.DataFrame,
              settings: AppSettings, name: str, cuts: VolRegimeCuts) -> HorizonModel:
    """The deployable model: base models on all rows, stacker/calibrators on recent OOS rows."""
    h = settings.labels.horizons[name]
    mask = np.ones(len(frame), dtype=bool)  # labels near the end are NaN: purged by construction
    model, head, ranker = _fit_base(frame, mask, name, sessions, settings)
    after_last = sessions[-1] + pd.Timedelta(days=1)
    prior = (_prior([oos], sessions, after_last, h, cuts, frame,
                    settings.models.calibration_lookback_years) if len(oos) else pd.DataFrame())
    cals = _fit_stack_and_calibrate(model, head, prior, settings, h)
    return HorizonModel(name, h, model, cals, head, ranker)
