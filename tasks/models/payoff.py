"""The payoff head: how a barrier trade that does not win ends, predicted per symbol.

The ensemble predicts P(take-profit first). The other two first-touch outcomes and the exit of
a timeout are predicted here, from the same features and on the same purged training rows:

- ``q(x)`` = P(stop first | not a win): a gradient-boosted classifier on the rows that did not
  win (stop first, or both barriers in one session, against timeout);
- ``r(x)`` = E[timeout return | x], in ATR units and **relative to the market**: a
  gradient-boosted regressor on the timeout rows, whose target is the name's simple return to
  the horizon minus the equal-weighted mean of every name's return over the same sessions,
  divided by its ATR%. The market's drift is taken out on purpose: a training span that rose
  would otherwise make every name's timeout look profitable (the level of the market over the
  next days is not something these features forecast).

Both are calibrated per volatility regime on earlier out-of-sample rows only, as P(win) is:
``q`` by Platt scaling, ``r`` by a least-squares slope through the origin clipped to [0, 1]
(a shrinkage towards 0 that measures how much of the predicted relative return was realised).
A regime without enough earlier rows keeps the raw ``q`` and a slope of 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from xgboost import XGBClassifier, XGBRegressor

from tasks.features.regimes import VOL_REGIMES
from tasks.models.barrier import barrier_expectancy, relative_to_session
from tasks.models.calibration import Platt, apply_calibrators
from tasks.settings import ModelSettings

STOP_OUTCOMES = ("sl", "both")
MIN_ROWS = 200


def relative_timeout_target(frame: pd.DataFrame, horizon: str) -> np.ndarray:
    """Per row: (simple return to the horizon - the date's equal-weighted mean) / ATR%."""
    simple = np.expm1(frame[f"fwd_return_{horizon}"].to_numpy(dtype="float64"))
    market = pd.Series(simple).groupby(frame["date"].to_numpy()).transform("mean").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (simple - market) / frame["atr_pct"].to_numpy(dtype="float64")
    return np.where(np.isfinite(rel), rel, np.nan)


def _xgb_params(cfg: ModelSettings, n_threads: int) -> dict:
    x = cfg.xgb
    return {"n_estimators": max(50, x.n_estimators // 2), "max_depth": min(x.max_depth, 4),
            "learning_rate": x.learning_rate * 2, "subsample": x.subsample,
            "colsample_bytree": x.colsample_bytree, "min_child_weight": max(100, x.min_child_weight),
            "max_bin": x.max_bin, "tree_method": "hist", "n_jobs": n_threads,
            "random_state": cfg.random_state}


@dataclass
class PayoffHead:
    """Stop-vs-timeout classifier and relative timeout-return regressor, with per-regime maps."""

    stop_model: XGBClassifier | None = None
    timeout_model: XGBRegressor | None = None
    stop_cal: dict[str, Platt] = field(default_factory=dict)
    timeout_slope: dict[str, float] = field(default_factory=dict)
    # per regime: (weight of the barrier identity, weight of the ranking score), both relative
    # to the session, fit on earlier out-of-sample rows (:func:`expectancy_weights`)
    exp_weights: dict[str, tuple[float, float]] = field(default_factory=dict)
    # per regime: standard error of the ranking score's weight (Fama-MacBeth over sessions,
    # overlap of the horizon's labels counted), which the plan's lower bound carries
    exp_rank_se: dict[str, float] = field(default_factory=dict)
    n_fit: dict[str, int] = field(default_factory=dict)

    def fit(self, X: np.ndarray, outcome: np.ndarray, rel: np.ndarray, cfg: ModelSettings,
            n_threads: int) -> PayoffHead:
        """Fit on training rows: ``outcome`` in tp/sl/both/timeout, ``rel`` the relative target."""
        outcome = pd.Series(outcome).astype("object").to_numpy()
        X = np.asarray(X, dtype="float32")
        losses = np.isin(outcome, [*STOP_OUTCOMES, "timeout"])
        y_stop = np.isin(outcome[losses], STOP_OUTCOMES).astype(int)
        if losses.sum() >= MIN_ROWS and 0 < y_stop.mean() < 1:
            self.stop_model = XGBClassifier(**_xgb_params(cfg, n_threads), eval_metric="logloss")
            self.stop_model.fit(X[losses], y_stop)
        to = (outcome == "timeout") & np.isfinite(rel)
        if to.sum() >= MIN_ROWS:
            target = np.clip(rel[to], -5.0, 5.0)
            self.timeout_model = XGBRegressor(**_xgb_params(cfg, n_threads))
            self.timeout_model.fit(X[to], target)
        self.n_fit = {"losses": int(losses.sum()), "timeouts": int(to.sum())}
        return self

    def raw(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated q(x) and r(x) (NaN when the part could not be fit)."""
        X = np.asarray(X, dtype="float32")
        n = len(X)
        q = (self.stop_model.predict_proba(X)[:, 1] if self.stop_model is not None
             else np.full(n, np.nan))
        r = (self.timeout_model.predict(X).astype("float64") if self.timeout_model is not None
             else np.full(n, np.nan))
        return q.astype("float64"), r

    def calibrate(self, prior: pd.DataFrame) -> PayoffHead:
        """Per-regime maps from earlier out-of-sample rows (columns q_raw, r_raw, outcome,
        rel_timeout, vol_regime)."""
        self.stop_cal, self.timeout_slope = {}, {}
        if prior.empty or "q_raw" not in prior:
            return self
        outcome = prior["outcome"].astype("object").to_numpy()
        regime = prior["vol_regime"].astype("object").to_numpy()
        q, r = prior["q_raw"].to_numpy(dtype="float64"), prior["r_raw"].to_numpy(dtype="float64")
        rel = prior["rel_timeout"].to_numpy(dtype="float64")
        for name in VOL_REGIMES:
            rows = (regime == name) & np.isin(outcome, [*STOP_OUTCOMES, "timeout"]) & np.isfinite(q)
            y = np.isin(outcome[rows], STOP_OUTCOMES).astype(int)
            if rows.sum() >= MIN_ROWS and 0 < y.mean() < 1:
                self.stop_cal[name] = Platt().fit(q[rows], y)
            to = (regime == name) & (outcome == "timeout") & np.isfinite(r) & np.isfinite(rel)
            if to.sum() >= MIN_ROWS:
                self.timeout_slope[name] = shrink_slope(r[to], np.clip(rel[to], -5.0, 5.0))
        return self

    def fit_expectancy_weights(self, prior: pd.DataFrame, tp_atr: float, stop_atr: float,
                               horizon: int = 1) -> PayoffHead:
        """Per regime, how much of the realised P&L relative to the session the barrier identity
        and the ranking score explained on earlier out-of-sample rows (columns p_cal, q_cal,
        r_cal, atr_pct, rank_score, realised_pnl, date, vol_regime), and the standard error of
        the ranking score's weight (``horizon``: sessions a label spans, for the overlap)."""
        self.exp_weights, self.exp_rank_se = {}, {}
        need = {"p_cal", "q_cal", "r_cal", "atr_pct", "rank_score", "realised_pnl", "date"}
        if prior.empty or not need <= set(prior.columns):
            return self
        rows = prior.loc[prior[list(need)].notna().all(axis=1)]
        if rows.empty:
            return self
        ident, rank = expectancy_parts(rows, tp_atr, stop_atr)
        real = relative_to_session(rows["realised_pnl"].to_numpy(dtype="float64"), rows["date"])
        regime = rows["vol_regime"].astype("object").to_numpy()
        for name in VOL_REGIMES:
            m = regime == name
            if m.sum() >= MIN_ROWS * 5:
                self.exp_weights[name] = expectancy_weights(ident[m], rank[m], real[m])
                if self.exp_weights[name][1] > 0:
                    self.exp_rank_se[name] = slope_se_by_session(
                        rank[m], real[m], rows["date"].to_numpy()[m], horizon)
        return self

    def predict(self, X: np.ndarray, regime: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated q(x) and r(x) per row's regime (slope 0 where a regime has no map)."""
        q_raw, r_raw = self.raw(X)
        return self.apply(q_raw, r_raw, regime)

    def apply(self, q_raw: np.ndarray, r_raw: np.ndarray, regime: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        regime = pd.Series(regime).astype("object").to_numpy()
        q, r = np.array(q_raw, dtype="float64"), np.zeros(len(r_raw))
        for name, cal in self.stop_cal.items():
            rows = (regime == name) & np.isfinite(q_raw)
            if rows.any():
                q[rows] = cal.predict(q_raw[rows])
        for name, slope in self.timeout_slope.items():
            rows = (regime == name) & np.isfinite(r_raw)
            r[rows] = slope * r_raw[rows]
        return q, r

    def weights_of(self, regime: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the expectancy weights of its regime and the standard error of the ranking
        score's weight; (1, 0, 0) where none was fit (the barrier identity alone). A model saved
        before the standard error was kept gets NaN there (unknown, not zero)."""
        regime = pd.Series(regime).astype("object").to_numpy()
        a, b, se = np.ones(len(regime)), np.zeros(len(regime)), np.zeros(len(regime))
        rank_se = getattr(self, "exp_rank_se", None)
        for name, (wa, wb) in getattr(self, "exp_weights", {}).items():
            rows = regime == name
            a[rows], b[rows] = wa, wb
            se[rows] = (0.0 if wb == 0 else np.nan if rank_se is None
                        else rank_se.get(name, np.nan))
        return a, b, se

    def summary(self) -> dict:
        return {"n_fit": self.n_fit, "stop_calibrated": sorted(self.stop_cal),
                "expectancy_weights": {k: [round(v, 4) for v in w]
                                       for k, w in sorted(getattr(self, "exp_weights", {}).items())},
                "rank_weight_se": {k: round(v, 4)
                                   for k, v in sorted(getattr(self, "exp_rank_se", {}).items())},
                "timeout_slope": {k: round(v, 4) for k, v in sorted(self.timeout_slope.items())}}


def expectancy_parts(rows: pd.DataFrame, tp_atr: float, stop_atr: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The two inputs of the plan's expectancy, both relative to the session, as fractions of
    entry: the barrier identity minus its session mean, and ATR% x (the session percentile of
    the ranking score - 0.5)."""
    atr = rows["atr_pct"].to_numpy(dtype="float64")
    barrier = barrier_expectancy(rows["p_cal"], rows["q_cal"], rows["r_cal"], atr, tp_atr,
                                 stop_atr)["exp_pnl"]
    dates = rows["date"].to_numpy()
    pct = pd.Series(rows["rank_score"].to_numpy(dtype="float64")).groupby(dates).rank(pct=True)
    return relative_to_session(barrier, dates), atr * (pct.to_numpy() - 0.5)


def expectancy_weights(ident: np.ndarray, rank: np.ndarray, realised: np.ndarray
                       ) -> tuple[float, float]:
    """Least squares, no intercept, of the realised relative P&L on the two parts; a negative
    weight is set to 0 and the other part refit alone (a part that did not help gets none)."""
    X = np.column_stack([ident, rank])
    ok = np.isfinite(X).all(axis=1) & np.isfinite(realised)
    X, y = X[ok], realised[ok]
    if len(y) < 10:
        return 1.0, 0.0
    w, *_ = np.linalg.lstsq(X, y, rcond=None)
    if w[0] >= 0 and w[1] >= 0:
        return float(w[0]), float(w[1])
    keep = 0 if w[0] >= w[1] else 1
    alone = float(np.dot(X[:, keep], y) / max(np.dot(X[:, keep], X[:, keep]), 1e-300))
    alone = max(0.0, alone)
    return (alone, 0.0) if keep == 0 else (0.0, alone)


def slope_se_by_session(x: np.ndarray, y: np.ndarray, dates: np.ndarray, horizon: int) -> float:
    """Standard error of a slope through the origin of ``y`` on ``x`` (both relative to the
    session), Fama-MacBeth: one cross-sectional slope per session, their standard deviation over
    the square root of the number of independent sessions - sessions / ``horizon``, since
    neighbouring sessions' labels overlap. Names of one session move together, so rows are not
    independent draws; sessions (set ``horizon`` apart) nearly are."""
    frame = pd.DataFrame({"xy": x * y, "xx": x * x, "d": dates})
    frame = frame[np.isfinite(frame["xy"]) & np.isfinite(frame["xx"])]
    per = frame.groupby("d")[["xy", "xx"]].sum()
    per = per[per["xx"] > 0]
    if len(per) < 3:
        return float("nan")
    slopes = (per["xy"] / per["xx"]).to_numpy()
    n_eff = max(len(slopes) / max(int(horizon), 1), 2.0)
    return float(np.std(slopes, ddof=1) / math.sqrt(n_eff))


def shrink_slope(pred: np.ndarray, realised: np.ndarray) -> float:
    """Least-squares slope of realised on predicted through the origin, clipped to [0, 1]."""
    denom = float(np.dot(pred, pred))
    if denom <= 0:
        return 0.0
    return float(np.clip(np.dot(pred, realised) / denom, 0.0, 1.0))


def calibrated_dispersion(base: np.ndarray, regime: np.ndarray, calibrators: dict,
                          dates: np.ndarray | None = None) -> np.ndarray:
    """The ensemble's own disagreement on a name, on the calibrated scale: the standard deviation
    of the base models' P(win) times the calibrator's ratio cal(m) / m at their mean m.

    With ``dates``, each base model's P(win) is first taken relative to its own session mean:
    the models differ in level (a forest shrinks towards the base rate), and a level every name
    shares is no uncertainty about the name (the expectancy is relative to the session too).
    Mapping each base model through a stepwise isotonic calibrator instead would often put all
    of them on one step and report no disagreement at all."""
    base = np.asarray(base, dtype="float64")
    if base.ndim != 2 or base.shape[1] < 2 or not calibrators:
        return np.zeros(len(base))
    mean = base.mean(axis=1)
    if dates is not None:
        frame = pd.DataFrame(base)
        base = (frame - frame.groupby(np.asarray(dates)).transform("mean")).to_numpy()
    cal = apply_calibrators(mean, regime, calibrators, strict=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.clip(cal / mean, 0.0, 5.0)
    return np.nan_to_num(base.std(axis=1) * ratio, nan=0.0)
