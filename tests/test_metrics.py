"""Metrics against hand-computed examples, the vectorised rank IC against a per-date loop, and grouping."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.models.metrics import (
    IC_KEYS,
    METRIC_KEYS,
    calibration_curve_points,
    classification_metrics,
    daily_rank_ic,
    ece_equal_mass,
    hanley_mcneil_se,
    lift_at,
    lift_curve_points,
    metrics_table,
    newey_west_t,
    rank_ic,
    top_decile_hit_rate,
)


def _panel(n_dates: int = 30, n_names: int = 12, seed: int = 0) -> pd.DataFrame:
    """Small (date, name) panel with forward returns."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2022-01-03", periods=n_dates)
    frame = pd.MultiIndex.from_product([dates, range(n_names)], names=["date", "name"]).to_frame(index=False)
    frame["fwd"] = rng.normal(size=len(frame))
    return frame


def _oos(seed: int = 1, n_dates: int = 60, n_names: int = 20) -> pd.DataFrame:
    """Synthetic OOS frame over two horizons, three regimes and two years."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-11-01", "2022-02-28")[:n_dates]
    frame = pd.MultiIndex.from_product([[f"S{i}" for i in range(n_names)], dates, ["short", "mid"]],
                                       names=["symbol", "date", "horizon"]).to_frame(index=False)
    n = len(frame)
    signal = rng.normal(size=n)
    frame["vol_regime"] = np.array(["low_vol", "med_vol", "high_vol"])[frame["date"].dt.day % 3]
    frame["fold"] = frame["date"].dt.year
    frame["p_raw"] = 1.0 / (1.0 + np.exp(-signal))
    frame["p_cal"] = 0.5 + 0.8 * (frame["p_raw"] - 0.5)
    frame["label"] = (rng.random(n) < frame["p_raw"]).astype(float)
    frame["fwd_return"] = 0.01 * signal + 0.02 * rng.normal(size=n)
    frame.loc[rng.random(n) < 0.05, "label"] = np.nan
    return frame


def test_ece_zero_for_perfectly_calibrated_bins() -> None:
    p = np.r_[np.full(10, 0.2), np.full(10, 0.8)]
    y = np.r_[np.ones(2), np.zeros(8), np.ones(8), np.zeros(2)]
    assert ece_equal_mass(y, p, n_bins=2) == pytest.approx(0.0, abs=1e-12)
    assert ece_equal_mass(y, p + 0.1, n_bins=2) == pytest.approx(0.1)
    assert ece_equal_mass(y, p - 0.05, n_bins=2) == pytest.approx(0.05)


def test_ece_hand_computed_two_bins() -> None:
    # bins {0.1, 0.3} -> |0.5 - 0.2| = 0.3 and {0.6, 0.8} -> |1.0 - 0.7| = 0.3, each weight 1/2
    assert ece_equal_mass([0, 1, 1, 1], [0.1, 0.3, 0.6, 0.8], n_bins=2) == pytest.approx(0.3)


def test_ties_stay_in_one_bin() -> None:
    y = np.r_[np.ones(30), np.zeros(70)]
    assert ece_equal_mass(y, np.full(100, 0.3)) == pytest.approx(0.0, abs=1e-12)
    assert ece_equal_mass(y, np.full(100, 0.5)) == pytest.approx(0.2)
    assert calibration_curve_points(y, np.full(100, 0.3))["n"].tolist() == [100]


def test_ece_ignores_nan_and_empty_is_nan() -> None:
    assert ece_equal_mass([0, 1, np.nan, 1, 1], [0.1, 0.3, 0.5, 0.6, 0.8], n_bins=2) == pytest.approx(0.3)
    assert math.isnan(ece_equal_mass([], []))


def test_calibration_curve_points_equal_mass() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(103)
    y = (rng.random(103) < p).astype(float)
    pts = calibration_curve_points(y, p, n_bins=10)
    assert list(pts.columns) == ["p_mean", "y_mean", "n"]
    assert len(pts) == 10 and pts["n"].sum() == 103
    assert pts["n"].max() - pts["n"].min() <= 1
    assert pts["p_mean"].is_monotonic_increasing


def test_lift_of_perfect_ranker() -> None:
    y = np.r_[np.ones(10), np.zeros(90)]
    p = np.linspace(1.0, 0.0, 100)
    assert lift_at(y, p, 0.10) == pytest.approx(10.0)
    assert lift_at(y, p, 0.20) == pytest.approx(5.0)
    assert lift_at(y, -p, 0.10) == pytest.approx(0.0)
    assert lift_at(y, p, 1.0) == pytest.approx(1.0)
    assert lift_at(y[::-1], p[::-1], 0.10) == pytest.approx(10.0)
    assert math.isnan(lift_at(np.zeros(10), p[:10]))
    assert lift_at(y, np.full(100, 0.5), 0.10) == pytest.approx(1.0)  # a tie at the cut counts at its mean
    tied_top = np.r_[np.full(20, 0.9), np.linspace(0.5, 0.0, 80)]  # top 20 tied, holding all 10 positives
    assert lift_at(y, tied_top, 0.10) == pytest.approx(5.0)


def test_lift_curve_points() -> None:
    y = np.r_[np.ones(10), np.zeros(90)]
    pts = lift_curve_points(y, np.linspace(1.0, 0.0, 100), n_points=10)
    assert list(pts.columns) == ["frac", "n_selected", "lift"]
    assert pts["n_selected"].tolist() == list(range(10, 101, 10))
    assert pts["lift"].tolist() == pytest.approx([10.0 / k for k in range(1, 11)])


def test_rank_ic_plus_and_minus_one() -> None:
    panel = _panel()
    same = rank_ic(panel["fwd"], panel["fwd"], panel["date"])
    assert same["ic_mean"] == pytest.approx(1.0) and same["ic_std"] == pytest.approx(0.0, abs=1e-12)
    assert same["n_dates"] == 30
    assert rank_ic(-panel["fwd"], panel["fwd"], panel["date"])["ic_mean"] == pytest.approx(-1.0)
    assert rank_ic(np.exp(panel["fwd"]), panel["fwd"], panel["date"])["ic_mean"] == pytest.approx(1.0)
    assert set(same) == set(IC_KEYS)


def test_rank_ic_matches_per_date_spearman_loop() -> None:
    panel = _panel(seed=3)
    rng = np.random.default_rng(4)
    panel["p"] = 0.3 * panel["fwd"] + rng.normal(size=len(panel))
    panel.loc[panel.index[:5], "p"] = 0.5  # ties within the first date
    expected = pd.Series({d: g["p"].corr(g["fwd"], method="spearman") for d, g in panel.groupby("date")})
    got = daily_rank_ic(panel["p"], panel["fwd"], panel["date"])
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), atol=1e-12)
    summary = rank_ic(panel["p"], panel["fwd"], panel["date"])
    assert summary["ic_mean"] == pytest.approx(expected.mean())
    assert summary["ic_std"] == pytest.approx(expected.std(ddof=1))
    assert summary["icir"] == pytest.approx(expected.mean() / expected.std(ddof=1))


def test_rank_ic_skips_thin_dates_and_nan() -> None:
    panel = _panel(n_dates=5, n_names=8)
    thin = pd.DataFrame({"date": pd.Timestamp("2023-01-02"), "name": range(4), "fwd": [1.0, 2.0, 3.0, 4.0]})
    both = pd.concat([panel, thin], ignore_index=True)
    both.loc[0, "fwd"] = np.nan
    out = rank_ic(both["fwd"], both["fwd"], both["date"])
    assert out["n_dates"] == 5 and out["ic_mean"] == pytest.approx(1.0)
    empty = rank_ic([], [], [])
    assert empty["n_dates"] == 0 and math.isnan(empty["ic_mean"])


def test_newey_west_t_hand_computed() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # lag 0: classic t = mean / (std(ddof=1) / sqrt(T)) = 3 / sqrt(2.5 / 5)
    assert newey_west_t(x, 0) == pytest.approx(3.0 / math.sqrt(0.5))
    # lag 1: e = -2..2, sum e^2 = 10, sum e_t e_{t-1} = 4, weight 1/2 -> (10 + 4) / (T - 1) = 3.5
    assert newey_west_t(x, 1) == pytest.approx(3.0 / math.sqrt(3.5 / 5))
    assert math.isnan(newey_west_t([1.0], 0))


def test_top_decile_hit_rate_hand_computed() -> None:
    # date 1: 10 names, top 1 is a hit; date 2: 25 names, top 2 (floor 2.5) are hit and miss; date 3: 3 names
    d1 = pd.DataFrame({"date": 1, "p": np.arange(10.0), "y": [0.0] * 9 + [1.0]})
    d2 = pd.DataFrame({"date": 2, "p": np.arange(25.0), "y": [1.0] * 23 + [0.0, 1.0]})
    d3 = pd.DataFrame({"date": 3, "p": [0.1, 0.9, 0.5], "y": [1.0, 0.0, 1.0]})
    frame = pd.concat([d1, d2, d3], ignore_index=True)
    assert top_decile_hit_rate(frame["y"], frame["p"], frame["date"]) == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_top_decile_hit_rate_shares_ties() -> None:
    # one date, 20 names all tied: the top 2 slots are filled at the date's mean label (0.3)
    y = np.r_[np.ones(6), np.zeros(14)]
    assert top_decile_hit_rate(y, np.full(20, 0.4), np.zeros(20)) == pytest.approx(0.3)
    # 3 names tied on top, top decile of 20 = 2 slots shared among them (labels 1, 1, 0)
    p = np.r_[np.full(3, 0.9), np.linspace(0.5, 0.1, 17)]
    y2 = np.r_[1.0, 1.0, 0.0, np.ones(17)]
    assert top_decile_hit_rate(y2, p, np.zeros(20)) == pytest.approx(2.0 / 3.0)


def test_hanley_mcneil_known_case() -> None:
    # A = 0.5, 10 vs 10: Q1 = Q2 = 1/3, var = (0.25 + 9 * (1/12) + 9 * (1/12)) / 100 = 0.0175
    assert hanley_mcneil_se(0.5, 10, 10) == pytest.approx(math.sqrt(0.0175))
    # A = 0.8, 20 positives, 30 negatives: Q1 = 0.8 / 1.2, Q2 = 1.28 / 1.8
    var = (0.16 + 19 * (0.8 / 1.2 - 0.64) + 29 * (1.28 / 1.8 - 0.64)) / 600
    assert hanley_mcneil_se(0.8, 20, 30) == pytest.approx(math.sqrt(var))
    assert math.isnan(hanley_mcneil_se(0.7, 0, 10))


def _frame(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """Minimal metrics frame with ten names per date."""
    dates = pd.bdate_range("2022-01-03", periods=len(y) // 10 + 1).repeat(10)[: len(y)]
    return pd.DataFrame({"label": y, "p_cal": p, "fwd_return": p + 0.01 * np.arange(len(y)), "date": dates})


def test_brier_skill_zero_at_base_rate() -> None:
    y = np.r_[np.ones(30), np.zeros(70)]
    m = classification_metrics(_frame(y, np.full(100, 0.3)))
    assert m["base_rate"] == pytest.approx(0.3) and m["brier"] == pytest.approx(0.21)
    assert m["brier_base"] == pytest.approx(0.21) and m["brier_skill"] == pytest.approx(0.0, abs=1e-12)
    assert m["auc"] == pytest.approx(0.5) and m["ece"] == pytest.approx(0.0, abs=1e-12)
    assert m["log_loss"] == pytest.approx(-(0.3 * math.log(0.3) + 0.7 * math.log(0.7)))
    assert tuple(m) == METRIC_KEYS


def test_classification_metrics_clips_and_skips_nan_labels() -> None:
    y = np.array([1.0, 0.0, np.nan, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    p = np.array([0.0, 1.0, 0.5, 0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.9])
    m = classification_metrics(_frame(y, p))
    assert m["n"] == 9 and m["base_rate"] == pytest.approx(5 / 9)
    expected = (2 * -math.log(1e-6) + 7 * -math.log(0.9)) / 9
    assert m["log_loss"] == pytest.approx(expected)
    assert m["auc_se"] == pytest.approx(hanley_mcneil_se(m["auc"], 5, 4))


def test_one_class_auc_is_nan_and_empty_frame() -> None:
    m = classification_metrics(_frame(np.ones(20), np.linspace(0.1, 0.9, 20)))
    assert math.isnan(m["auc"]) and math.isnan(m["auc_se"]) and math.isnan(m["brier_skill"])
    empty = classification_metrics(_frame(np.ones(20), np.linspace(0.1, 0.9, 20)).iloc[0:0])
    assert empty["n"] == 0 and math.isnan(empty["auc"])


def test_shuffled_labels_give_auc_near_half() -> None:
    rng = np.random.default_rng(42)
    p = rng.random(20_000)
    y = rng.permutation((rng.random(20_000) < p).astype(float))
    m = classification_metrics(_frame(y, p))
    assert abs(m["auc"] - 0.5) < 0.02
    assert abs(m["lift_at_10"] - 1.0) < 0.1


def test_metrics_table_groups_and_columns() -> None:
    oos = _oos()
    by_regime = metrics_table(oos, ["vol_regime"])
    assert list(by_regime.columns) == ["horizon", "vol_regime", *METRIC_KEYS]
    assert len(by_regime) == 6
    assert set(zip(by_regime["horizon"], by_regime["vol_regime"], strict=True)) == {
        (h, r) for h in ("short", "mid") for r in ("low_vol", "med_vol", "high_vol")}
    assert by_regime["n"].sum() == oos["label"].notna().sum()
    by_year = metrics_table(oos, ["year"])
    assert list(by_year.columns[:2]) == ["horizon", "year"]
    assert sorted(by_year["year"].unique()) == [2021, 2022]
    overall = metrics_table(oos, None)
    assert overall["horizon"].tolist() == ["mid", "short"] and (overall["auc"] > 0.6).all()
    short = oos.loc[oos["horizon"] == "short"]
    assert overall.set_index("horizon").loc["short", "brier"] == pytest.approx(
        classification_metrics(short)["brier"])


def test_metrics_table_horizon_lags_and_p_col() -> None:
    oos = _oos()
    lagged = metrics_table(oos, None, horizon_lags={"short": 0, "mid": 4}).set_index("horizon")
    mid = oos.loc[oos["horizon"] == "mid"].dropna(subset=["label"])
    daily = daily_rank_ic(mid["p_cal"], mid["fwd_return"], mid["date"])
    assert lagged.loc["mid", "ic_t_nw"] == pytest.approx(newey_west_t(daily, 4))
    plain = metrics_table(oos, None).set_index("horizon")
    assert lagged.loc["short", "ic_t_nw"] == pytest.approx(plain.loc["short", "ic_t_nw"])
    raw = metrics_table(oos, None, p_col="p_raw").set_index("horizon")
    assert raw.loc["mid", "auc"] == pytest.approx(plain.loc["mid", "auc"])  # monotone recalibration
    assert raw.loc["mid", "brier"] != pytest.approx(plain.loc["mid", "brier"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=60),
       st.integers(1, 12))
def test_ece_bounded_and_curve_counts(pairs: list[tuple[float, bool]], n_bins: int) -> None:
    p = np.array([a for a, _ in pairs])
    y = np.array([float(b) for _, b in pairs])
    assert 0.0 <= ece_equal_mass(y, p, n_bins) <= 1.0
    pts = calibration_curve_points(y, p, n_bins)
    assert pts["n"].sum() == len(p) and len(pts) <= min(n_bins, len(p))
    if len(np.unique(p)) == len(p):
        assert len(pts) == min(n_bins, len(p)) and pts["n"].max() - pts["n"].min() <= 1
