"""Base classifiers (random forest, XGBoost, CatBoost) and a logistic stacker over their logits.

sklearn-style: parameters in ``__init__``, learning in ``fit``, learned attributes end in
``_``, randomness from ``random_state``, threads from ``n_threads``. The stacker is fit
separately, on out-of-sample base predictions only (:meth:`StackedEnsemble.fit_stacker`).
"""

from __future__ import annotations

import numpy as np
from catboost import CatBoostClassifier
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from xgboost import XGBClassifier

from tasks.settings import ModelSettings

EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped away from 0 and 1."""
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def make_base_models(cfg: ModelSettings, n_threads: int) -> dict[str, BaseEstimator]:
    """The three base classifiers, configured from settings."""
    seed = cfg.random_state
    rf = RandomForestClassifier(
        n_estimators=cfg.rf.n_estimators, max_depth=cfg.rf.max_depth,
        min_samples_leaf=cfg.rf.min_samples_leaf, max_samples=cfg.rf.max_samples,
        max_features="sqrt", n_jobs=n_threads, random_state=seed)
    xgb = XGBClassifier(
        n_estimators=cfg.xgb.n_estimators, max_depth=cfg.xgb.max_depth,
        learning_rate=cfg.xgb.learning_rate, subsample=cfg.xgb.subsample,
        colsample_bytree=cfg.xgb.colsample_bytree, min_child_weight=cfg.xgb.min_child_weight,
        max_bin=cfg.xgb.max_bin, tree_method="hist", n_jobs=n_threads, random_state=seed,
        eval_metric="logloss")
    cat = CatBoostClassifier(
        iterations=cfg.cat.iterations, depth=cfg.cat.depth, learning_rate=cfg.cat.learning_rate,
        l2_leaf_reg=cfg.cat.l2_leaf_reg, border_count=cfg.cat.border_count,
        thread_count=n_threads, random_seed=seed,
        verbose=False, allow_writing_files=False)
    return {"rf": rf, "xgb": xgb, "cat": cat}


def fit_base_model(name: str, X: np.ndarray, y: np.ndarray, cfg: ModelSettings,
                   n_threads: int) -> BaseEstimator:
    """One base classifier (``rf``, ``xgb`` or ``cat``) fitted on (X, y); each is fitted on its
    own, so the walk-forward can spread them over workers."""
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("training labels hold a single class; cannot fit a classifier")
    model = make_base_models(cfg, n_threads)[name]
    model.fit(StackedEnsemble._prep(name, X), y)
    return model


class StackedEnsemble(BaseEstimator, ClassifierMixin):
    """P(win) from three base models combined by a logistic stacker (mean logit until fit)."""

    def __init__(self, settings: ModelSettings | None = None, n_threads: int = 2):
        self.settings = settings
        self.n_threads = n_threads

    def fit(self, X: np.ndarray, y: np.ndarray) -> StackedEnsemble:
        """Fit the base models; the rf cannot take NaN, so it sees NaN as a sentinel value."""
        cfg = self.settings or ModelSettings()
        return self.with_models({name: fit_base_model(name, X, y, cfg, self.n_threads)
                                 for name in cfg.base_models})

    def with_models(self, models: dict[str, BaseEstimator]) -> StackedEnsemble:
        """Take base models fitted elsewhere (:func:`fit_base_model`), in ``base_models`` order;
        the stacker is unfit."""
        cfg = self.settings or ModelSettings()
        self.models_ = {name: models[name] for name in cfg.base_models}
        self.classes_ = np.array([0, 1])
        self.stacker_: LogisticRegression | None = None
        return self

    @staticmethod
    def _prep(name: str, X: np.ndarray) -> np.ndarray:
        if name != "rf":
            return X
        return np.nan_to_num(np.asarray(X, dtype="float64"), nan=-999.0)

    @property
    def base_names(self) -> list[str]:
        """Names of the fitted base models, in column order of :meth:`base_predict`."""
        return list(self.models_)

    def base_predict(self, X: np.ndarray) -> np.ndarray:
        """(n, k) P(win) of each base model.

        The forest predicts on one thread: its threads add tree outputs in a varying order,
        which changes the last bit between runs, and outputs must be byte-identical on re-runs.
        """
        cols = []
        for name, model in self.models_.items():
            if name == "rf":
                jobs = model.n_jobs
                model.n_jobs = 1
                try:
                    cols.append(model.predict_proba(self._prep(name, X))[:, 1])
                finally:
                    model.n_jobs = jobs
            else:
                cols.append(model.predict_proba(self._prep(name, X))[:, 1])
        return np.column_stack(cols)

    def fit_stacker(self, base_preds: np.ndarray, y: np.ndarray) -> StackedEnsemble:
        """Fit the logistic stacker on OUT-OF-SAMPLE base predictions."""
        y = np.asarray(y).astype(int)
        if len(np.unique(y)) < 2:
            return self
        self.stacker_ = LogisticRegression(C=1.0, max_iter=1000).fit(logit(base_preds), y)
        return self

    def combine(self, base_preds: np.ndarray) -> np.ndarray:
        """Stacked P(win) from base predictions (mean logit before the stacker is fit)."""
        if getattr(self, "stacker_", None) is None:
            return 1 / (1 + np.exp(-logit(base_preds).mean(axis=1)))
        return self.stacker_.predict_proba(logit(base_preds))[:, 1]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, 2) class probabilities."""
        p = self.combine(self.base_predict(X))
        return np.column_stack([1 - p, p])
