"""The ranking model: which names will beat the others over the horizon.

Barrier probabilities rank names badly across volatility regimes (per-regime calibration
reorders them, and first-touch labels reward predicting volatility rather than direction). The
plan ranks names within a session, so it gets a model trained for exactly that: XGBoost with a
pairwise ranking objective (``rank:pairwise``), one query group per session, and as relevance
the name's **market-relative** forward return over the horizon, graded into quintiles within
its session. Pairs are drawn across the whole session (``models.ranker.pair_method: mean``), not
only with its top names (XGBoost's default ``topk``): the plan uses both ends of the list, and on
early years of daily S&P 500 bars (walk-forward, test years 2007-2011) the whole-list pairs gave
an equal or higher daily rank IC in under half the time. Its output ``rank_score`` is a margin:
only its order within a session means anything. The fusion's edges are the session percentiles
of it (``fusion.edge_source``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from xgboost import XGBRanker

from tasks.settings import ModelSettings

GRADES = 5          # relevance: quintile of the market-relative return within the session
MIN_NAMES = 5       # a session with fewer names is not a useful query group


def relevance(fwd_return: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """Quintile (0..4) of each name's forward return within its session (NaN stays NaN).

    The quintile of the raw return equals that of the market-relative one: subtracting the
    session's mean does not change the order within the session."""
    pct = pd.Series(np.asarray(fwd_return, dtype="float64")).groupby(
        np.asarray(dates)).rank(pct=True, method="first").to_numpy()
    return np.where(np.isfinite(pct), np.clip(np.ceil(pct * GRADES - 1e-9) - 1, 0, GRADES - 1),
                    np.nan)


@dataclass
class RankModel:
    """A pairwise XGBoost ranker over sessions; ``score`` = its margin."""

    model: XGBRanker | None = None
    info: dict = field(default_factory=dict)

    def fit(self, X: np.ndarray, fwd_return: np.ndarray, dates: np.ndarray, cfg: ModelSettings,
            n_threads: int) -> RankModel:
        dates = pd.to_datetime(np.asarray(dates))
        grade = relevance(fwd_return, dates)
        counts = pd.Series(1, index=dates).groupby(level=0).transform("size").to_numpy()
        ok = np.isfinite(grade) & (counts >= MIN_NAMES)
        if ok.sum() < 200:
            self.info = {"rows": int(ok.sum()), "fitted": False}
            return self
        order = np.argsort(dates[ok].to_numpy(), kind="stable")
        Xs = np.asarray(X, dtype="float32")[ok][order]
        ys, ds = grade[ok][order].astype(int), dates[ok][order]
        groups = pd.Series(1, index=ds).groupby(level=0, sort=True).size().to_numpy()
        x = cfg.xgb
        self.model = XGBRanker(
            objective="rank:pairwise", n_estimators=max(50, x.n_estimators // 2),
            max_depth=x.max_depth, learning_rate=x.learning_rate, subsample=x.subsample,
            colsample_bytree=x.colsample_bytree, min_child_weight=x.min_child_weight,
            lambdarank_pair_method=cfg.ranker.pair_method,
            lambdarank_num_pair_per_sample=cfg.ranker.pairs_per_sample,
            max_bin=x.max_bin, tree_method="hist", n_jobs=n_threads, random_state=cfg.random_state)
        self.model.fit(Xs, ys, group=groups)
        self.info = {"rows": int(ok.sum()), "sessions": int(len(groups)), "fitted": True}
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        """The ranking margin of each row (NaN when the ranker could not be fit)."""
        if self.model is None:
            return np.full(len(X), np.nan)
        return self.model.predict(np.asarray(X, dtype="float32")).astype("float64")
