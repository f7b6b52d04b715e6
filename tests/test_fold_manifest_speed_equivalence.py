"""The shared out-of-sample measures (per-date figures computed once, rows pre-sorted) give
exactly the tables, skill records and report figures of the direct computations: on the whole
frame, on the point-in-time subsets of the fold manifests, and in the reports."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tasks.models import folds as fold_mod
from tasks.models.expectancy_report import expectancy_summary, reliability_table
from tasks.models.metrics import (
    PROBABILITY_KEYS,
    OOSMeasures,
    _auc_sorted,
    _probability_metrics,
    _sorted_probability_metrics,
    metrics_table,
)
from tasks.models.reports import card_metrics, signal_quality, validation_table
from tasks.models.signal_report import (
    decile_returns,
    ic_by_year,
    signal_summary,
    signal_tables,
    top_decile_turnover,
)
from tasks.models.skill import skill_record

HORIZONS = {"short": 5, "mid": 20}
SESSIONS = pd.bdate_range("2019-01-01", "2021-12-31")
SETTINGS = SimpleNamespace(
    models=SimpleNamespace(skill=SimpleNamespace(min_brier_skill=0.0, min_ic_t=2.0,
                                                 live_requires_skill=True)),
    guardrails=SimpleNamespace(fee_pct=0.0005),
    labels=SimpleNamespace(horizons=HORIZONS),
    fusion=SimpleNamespace(plan_horizon="short"))


def _oos(seed: int = 3, names: int = 24, categorical: bool = False) -> pd.DataFrame:
    """Walk-forward-like OOS rows: yearly folds (the first without a calibrated probability),
    tied calibrated probabilities, missing labels, returns, regimes and P&L."""
    rng = np.random.default_rng(seed)
    dates = SESSIONS[SESSIONS >= "2019-03-01"]
    frame = pd.MultiIndex.from_product([["short", "mid"], [f"S{i:02d}" for i in range(names)],
                                        dates], names=["horizon", "symbol", "date"]
                                       ).to_frame(index=False)
    n = len(frame)
    signal = rng.normal(size=n)
    frame["fold"] = frame["date"].dt.year.astype(str)
    frame["p_raw"] = 1.0 / (1.0 + np.exp(-0.3 * signal - rng.normal(size=n)))
    frame["p_cal"] = np.round(0.2 + 0.5 * frame["p_raw"], 2)
    frame.loc[frame["fold"] == "2019", "p_cal"] = np.nan
    frame["label"] = (rng.random(n) < frame["p_raw"]).astype(float)
    frame.loc[rng.random(n) < 0.05, "label"] = np.nan
    frame["fwd_return"] = 0.01 * signal + 0.02 * rng.normal(size=n)
    frame.loc[rng.random(n) < 0.02, "fwd_return"] = np.nan
    regimes = np.array(["low_vol", "med_vol", "high_vol"], dtype=object)[rng.integers(0, 3, n)]
    regimes[rng.random(n) < 0.01] = None
    frame["vol_regime"] = pd.Categorical(regimes, ["low_vol", "med_vol", "high_vol"]) \
        if categorical else pd.Series(regimes, dtype="str")
    frame["rank_score"] = np.where(frame["horizon"] == "short", signal + rng.normal(size=n), np.nan)
    frame["realised_pnl"] = 0.02 * (frame["label"] - 0.4) + 0.01 * rng.normal(size=n)
    frame.loc[rng.random(n) < 0.03, "realised_pnl"] = np.nan
    frame["exp_pnl"] = 0.001 * signal
    return frame


def _same(a, b) -> bool:
    """Equal, NaN equal to NaN, in nested dicts and lists."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("categorical", [False, True])
def test_tables_equal_metrics_table(categorical):
    oos = _oos(categorical=categorical)
    lags = {"short": 4, "mid": 19}
    measures = OOSMeasures(oos, lags)
    for by in (None, ["vol_regime"], ["fold"], ["year"], ["vol_regime", "year"]):
        for p_col in ("p_cal", "p_raw"):
            want = metrics_table(oos, by, p_col, lags)
            pd.testing.assert_frame_equal(measures.table(by, p_col), want, check_exact=True)
    # the raw side of the validation tables: rows with a calibrated probability only
    want = metrics_table(oos.loc[oos["p_cal"].notna()], ["year"], "p_raw", lags)
    got = measures.table(["year"], "p_raw", need=("p_cal",))
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert _same(skill_record(measures, SETTINGS), skill_record(oos, SETTINGS))


def test_fold_subsets_equal_the_direct_computation():
    oos = _oos()
    measures = OOSMeasures(oos)
    for start in (SESSIONS[60], pd.Timestamp("2020-01-02"), pd.Timestamp("2020-07-01"),
                  pd.Timestamp("2021-01-04"), SESSIONS[-1]):
        for horizons in (HORIZONS, {"short": 5}):
            earlier = fold_mod.known_before(oos.loc[oos["date"] < start], SESSIONS, start,
                                            horizons)
            earlier = earlier.loc[earlier["horizon"].isin(list(horizons))]
            known = fold_mod.known_sessions(measures, SESSIONS, start, horizons)
            lags = {n: h - 1 for n, h in horizons.items()}
            for by in (None, ["vol_regime"]):
                got = measures.table(by, sessions=known, horizon_lags=lags)
                want = metrics_table(earlier, by=by, horizon_lags=lags)
                assert _same(got.to_dict(orient="records"), want.to_dict(orient="records"))
            assert _same(skill_record(measures, SETTINGS, known), skill_record(earlier, SETTINGS))
            for name in horizons:
                rows = measures.rows(name, (), known)
                assert len(rows) == int((earlier["horizon"] == name).sum())


def test_sorted_probability_metrics_and_auc_are_exact():
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(1, 2000))
        p = (rng.integers(0, int(rng.integers(1, 40)), n) / 40 if trial % 2
             else rng.random(n))
        y = (rng.random(n) < rng.random()).astype(float)
        order = np.argsort(p, kind="stable")
        assert _same(_sorted_probability_metrics(y, p, order), _probability_metrics(y, p))
        only = frozenset({"brier", "ece", "log_loss"})
        some = _sorted_probability_metrics(y, p, order, only)
        assert _same({k: some[k] for k in ("n", *only)},
                     {k: _probability_metrics(y, p)[k] for k in ("n", *only)})
        assert all(math.isnan(v) for k, v in some.items() if k not in only and k != "n")
        if len(np.unique(y)) == 2:
            assert _auc_sorted(y[order], p[order]) == roc_auc_score(y, p)
    assert set(_probability_metrics(np.ones(3), np.full(3, 0.5))) == set(PROBABILITY_KEYS)


def test_report_pieces_with_shared_measures_equal_their_direct_computation():
    oos = _oos()
    lags = {"short": 4, "mid": 19}
    measures = OOSMeasures(oos, lags)
    for by in (None, ["vol_regime"], ["year"]):
        pd.testing.assert_frame_equal(validation_table(oos, by, lags, measures),
                                      validation_table(oos, by, lags), check_exact=True)
    pd.testing.assert_frame_equal(card_metrics(oos, horizon_lags=lags, measures=measures),
                                  card_metrics(oos, horizon_lags=lags), check_exact=True)
    shared = signal_quality(oos, HORIZONS, measures=measures)
    direct = signal_quality(oos, HORIZONS)
    assert _same(shared[0], direct[0]) and measures.memo
    rows = oos.loc[oos["p_cal"].notna()]
    for name, h in HORIZONS.items():
        for key, frame in direct[1][name].items():
            pd.testing.assert_frame_equal(shared[1][name][key], frame, check_exact=True)
        score = "rank_score" if name == "short" else "p_cal"
        tables = signal_tables(rows, name, h - 1, 5.0, score=score, h=h)
        pd.testing.assert_frame_equal(tables[f"IC by year ({name})"],
                                      ic_by_year(rows, name, score, h - 1, h=h), check_exact=True)
        dec = decile_returns(rows, name, score, 5.0, h=h, nw_lag=h - 1)
        pd.testing.assert_frame_equal(tables[f"Decile returns ({name})"], dec["deciles"],
                                      check_exact=True)
        summary = signal_summary(rows, name, h - 1, 5.0, score=score, h=h)
        turnover = top_decile_turnover(rows, name, score, h=h)["turnover"]
        assert summary["top_decile_turnover"] == turnover
        assert summary["ls_net_mean"] == dec["long_short"]["ls_net_mean"]
    table = reliability_table(oos, "short", 0.001)
    assert _same(expectancy_summary(oos, "short", 0.001, table),
                 expectancy_summary(oos, "short", 0.001))
