"""Hand-computed cases of the per-symbol expectancy, the Kelly fraction and the sizing chain.

The reference trade: take-profit 2.5 ATR, stop 1.8 ATR, ATR 2% of price. With P(tp) 0.3,
P(stop | not tp) 0.5 and a relative timeout return of +0.2 ATR:
P(stop) = 0.35, P(timeout) = 0.35 and
exp_pnl = 0.02 * (0.3 * 2.5 - 0.35 * 1.8 + 0.35 * 0.2) = 0.02 * 0.19 = 0.0038.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.features.labels import barrier_pnl
from tasks.models.barrier import barrier_expectancy
from tasks.models.payoff import shrink_slope
from tasks.plan.expectancy import (
    expectancy_se,
    second_moment,
    slippage_estimate,
)
from tasks.plan.sizing import Z99, book_risk_scale, book_var99, kelly_fraction
from tasks.risk.clamps import Book, Position
from tasks.trading_settings import GuardrailSettings, RiskSettings

TP, SL = 2.5, 1.8


def test_expectancy_identity_hand_computed():
    out = barrier_expectancy(np.array([0.3]), np.array([0.5]), np.array([0.2]), np.array([0.02]),
                             TP, SL)
    assert out["p_stop"][0] == pytest.approx(0.35)
    assert out["p_timeout"][0] == pytest.approx(0.35)
    assert out["exp_pnl"][0] == pytest.approx(0.0038)


def test_low_p_win_can_still_be_positive_and_high_p_win_negative():
    # P(win) 0.09 but the stop is rarely hit and timeouts drift up relative to the market
    low = barrier_expectancy(np.array([0.09]), np.array([0.05]), np.array([0.3]),
                             np.array([0.02]), TP, SL)["exp_pnl"][0]
    assert low == pytest.approx(0.02 * (0.09 * 2.5 - 0.91 * 0.05 * 1.8 + 0.91 * 0.95 * 0.3))
    assert low > 0
    # P(win) 0.4 with every loss a stop: 0.4 * 2.5 - 0.6 * 1.8 = -0.08 ATR
    high = barrier_expectancy(np.array([0.4]), np.array([1.0]), np.array([0.0]),
                              np.array([0.02]), TP, SL)["exp_pnl"][0]
    assert high == pytest.approx(0.02 * -0.08)


def test_martingale_break_even():
    # a driftless walk leaving (-a, +b) hits +b first with probability a / (a + b)
    p = SL / (TP + SL)
    out = barrier_expectancy(np.array([p]), np.array([1.0]), np.array([0.0]), np.array([0.02]),
                             TP, SL)
    assert out["exp_pnl"][0] == pytest.approx(0.0, abs=1e-15)


def test_expectancy_se_delta_method():
    # d exp / dp = atr * (b + q a - (1 - q) r) = 0.02 * (2.5 + 0.9 - 0.1) = 0.066
    se = expectancy_se(np.array([0.05]), np.array([0.5]), np.array([0.2]), np.array([0.02]),
                       TP, SL)
    assert se[0] == pytest.approx(0.066 * 0.05)
    assert expectancy_se(np.array([np.nan]), np.array([0.5]), np.array([0.2]),
                         np.array([0.02]), TP, SL)[0] == 0.0


def test_second_moment_hand_computed():
    m2 = second_moment(np.array([0.3]), np.array([0.35]), np.array([0.35]), np.array([0.5]),
                       np.array([0.02]), TP, SL)
    assert m2[0] == pytest.approx(0.0004 * (0.3 * 6.25 + 0.35 * 3.24 + 0.35 * 0.5))


def test_kelly_fraction_hand_computed():
    assert kelly_fraction(0.0038, 0.0019) == pytest.approx(2.0)
    assert kelly_fraction(-0.001, 0.002) == pytest.approx(-0.5)
    assert kelly_fraction(0.0, 0.002) == 0.0


@pytest.mark.parametrize("m2", [0.0, -1.0, math.inf, math.nan])
def test_kelly_fraction_invalid_moment_is_no_edge(m2):
    assert kelly_fraction(0.01, m2) == -1.0


prob = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(p=prob, q=prob, r=st.floats(-3.0, 3.0), atr=st.floats(0.002, 0.2),
       to_sq=st.floats(0.0, 10.0), cost=st.floats(0.0, 0.01))
def test_kelly_positive_exactly_when_expectancy_positive(p, q, r, atr, to_sq, cost):
    """One source of truth: the Kelly fraction has the sign of the net expectancy."""
    parts = barrier_expectancy(np.array([p]), np.array([q]), np.array([r]), np.array([atr]),
                               TP, SL)
    net = parts["exp_pnl"][0] - cost
    m2 = second_moment(np.array([p]), parts["p_stop"], parts["p_timeout"], np.array([to_sq]),
                       np.array([atr]), TP, SL)[0]
    f = kelly_fraction(net, m2)
    assert (f > 0) == (net > 0)
    assert (f < 0) == (net < 0)


def test_barrier_pnl_each_outcome():
    got = barrier_pnl(["tp", "sl", "both", "timeout", None], [0.0, 0.0, 0.0, math.log(1.01), 0.0],
                      [0.02] * 5, TP, SL)
    assert got[:4] == pytest.approx([0.05, -0.036, -0.036, 0.01])
    assert math.isnan(got[4])


def test_shrink_slope_clipped():
    x = np.array([1.0, -1.0, 2.0])
    assert shrink_slope(x, 0.5 * x) == pytest.approx(0.5)
    assert shrink_slope(x, 3.0 * x) == 1.0        # never amplified
    assert shrink_slope(x, -x) == 0.0             # anti-predictive: no timeout term
    assert shrink_slope(np.zeros(3), x) == 0.0


def test_slippage_estimate_half_spread_plus_impact():
    # 78 five-minute bars: bar range 0.02 / sqrt(78); participation 1500 * 78 / 78e6 = 0.0015
    got = slippage_estimate(np.array([0.02]), np.array([1500.0]), np.array([78e6]), 2.0, 0.5,
                            0.5, 5)
    assert got[0] == pytest.approx(2e-4 + 0.5 * 0.02 / math.sqrt(78) * math.sqrt(0.0015))
    unknown = slippage_estimate(np.array([0.02]), np.array([1500.0]), np.array([np.nan]), 2.0,
                                0.5, 0.5, 5)
    assert unknown[0] == pytest.approx(2e-4 + 0.5 * 0.02 / math.sqrt(78))  # participation 1


# --------------------------------------------------------------------------- positions limit


def test_positions_limit_derived_from_core_caps():
    risk = RiskSettings()
    assert GuardrailSettings().positions_limit(risk, 100_000) == 60      # 0.90 / 0.015
    tight = RiskSettings(per_name={"core": 0.01, "penny": 0.004, "fno": 0.007})
    assert GuardrailSettings().positions_limit(tight, 100_000) == 90
    # a small account: 1,000 x 0.9 / 100 = 9 positions of the minimum order at most
    assert GuardrailSettings().positions_limit(risk, 1_000) == 9
    assert GuardrailSettings(max_positions=8).positions_limit(risk, 100_000) == 8


# --------------------------------------------------------------------------- book risk


def _returns(vol: dict[str, float], corr: float, n: int = 250, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    common = rng.normal(size=n)
    data = {s: v * (math.sqrt(corr) * common + math.sqrt(1 - corr) * rng.normal(size=n))
            for s, v in vol.items()}
    return pd.DataFrame(data)


def test_book_risk_no_scaling_when_within_limit():
    rets = _returns({"A": 0.01, "B": 0.01}, 0.3)
    scale, info = book_risk_scale({"A": 1_500.0, "B": 1_500.0}, Book(100_000.0), rets, 0.025)
    assert scale == 1.0
    cov = rets.cov().to_numpy()
    w = np.array([0.015, 0.015])
    assert info["book_var99"] == pytest.approx(Z99 * math.sqrt(w @ cov @ w))
    assert info["book_var99"] < 0.025


def test_book_risk_scales_to_the_limit_exactly():
    vols = {f"S{i}": 0.05 for i in range(40)}
    rets = _returns(vols, 0.8)
    cash = {s: 1_500.0 for s in vols}                      # 60% gross in a crash-like market
    scale, info = book_risk_scale(cash, Book(100_000.0), rets, 0.025)
    assert 0 < scale < 1
    assert info["book_var99_before_scaling"] > 0.025
    assert info["book_var99"] == pytest.approx(0.025, rel=1e-9)
    w = np.full(40, 0.015 * scale)
    assert book_var99(w, rets.cov().to_numpy()) == pytest.approx(0.025, rel=1e-9)


def test_book_risk_counts_held_positions():
    vols = {f"S{i}": 0.04 for i in range(12)}
    rets = _returns(vols, 0.9)
    held = {f"S{i}": Position(f"S{i}", 300, 100.0) for i in range(6)}       # 6 x 30% = 180%
    scale, _ = book_risk_scale({f"S{i}": 1_500.0 for i in range(6, 12)},
                               Book(100_000.0, held), rets, 0.025)
    assert scale == 0.0                    # the held book alone is past the limit


def test_book_risk_unknown_symbol_uses_median_variance():
    rets = _returns({"A": 0.02, "B": 0.02}, 0.0)
    _, with_unknown = book_risk_scale({"A": 1_000.0, "Z": 1_000.0}, Book(100_000.0), rets, 0.5)
    _, known = book_risk_scale({"A": 1_000.0, "B": 1_000.0}, Book(100_000.0), rets, 0.5)
    assert with_unknown["book_var99"] == pytest.approx(known["book_var99"], rel=0.1)


def test_dispersion_survives_a_stepwise_calibrator():
    """Three base models that disagree keep a positive dispersion even when a coarse calibrator
    would map all of them to one step; it scales with the calibrator's level."""
    from tasks.models.calibration import RegimeCalibrator
    from tasks.models.payoff import calibrated_dispersion

    class Halve:
        def predict(self, p):
            return np.full(len(p), 0.05)            # one step for everything

    cals = {"med_vol": RegimeCalibrator("med_vol", "isotonic", 1000, Halve())}
    base = np.array([[0.08, 0.10, 0.12], [0.10, 0.10, 0.10]])
    got = calibrated_dispersion(base, np.array(["med_vol", "med_vol"]), cals)
    assert got[0] == pytest.approx(np.std([0.08, 0.10, 0.12]) * 0.05 / 0.10)
    assert got[1] == pytest.approx(0.0, abs=1e-15)
    assert (calibrated_dispersion(base, np.array(["low_vol", "low_vol"]), cals) == 0).all()


def test_dispersion_ignores_a_level_the_base_models_share_across_the_session():
    from tasks.models.calibration import RegimeCalibrator
    from tasks.models.payoff import calibrated_dispersion

    class Same:
        def predict(self, p):
            return np.asarray(p)

    cals = {"med_vol": RegimeCalibrator("med_vol", "platt", 1000, Same())}
    # the forest sits 0.04 below the others on every name: no disagreement about any name
    base = np.array([[0.06, 0.10, 0.10], [0.08, 0.12, 0.12], [0.10, 0.14, 0.14]])
    reg, day = np.array(["med_vol"] * 3), np.array(["2024-01-02"] * 3)
    assert calibrated_dispersion(base, reg, cals, day) == pytest.approx(np.zeros(3), abs=1e-12)
    assert (calibrated_dispersion(base, reg, cals) > 0.01).all()   # without the session view


def test_expectancy_weights_least_squares_and_a_part_that_does_not_help_gets_none():
    from tasks.models.payoff import expectancy_weights

    rng = np.random.default_rng(5)
    ident, rank = rng.normal(size=4000), rng.normal(size=4000)
    a, b = expectancy_weights(ident, rank, 0.3 * ident + 0.8 * rank)
    assert (a, b) == (pytest.approx(0.3), pytest.approx(0.8))
    a, b = expectancy_weights(ident, rank, 0.5 * ident - 0.4 * rank)   # the ranking misleads
    assert b == 0.0 and a == pytest.approx(0.5, abs=0.03)
    assert expectancy_weights(ident[:5], rank[:5], ident[:5]) == (1.0, 0.0)   # too few rows


def test_rank_weight_standard_error_fama_macbeth_hand_computed():
    from tasks.models.payoff import slope_se_by_session

    # three sessions whose own slopes through the origin are 1, 2 and 3
    x = np.array([1.0, -1.0, 1.0, -1.0, 2.0, -2.0])
    y = np.array([1.0, -1.0, 2.0, -2.0, 6.0, -6.0])
    d = np.array(["a", "a", "b", "b", "c", "c"])
    # std of (1, 2, 3) = 1; one independent session per session: 1 / sqrt(3)
    assert slope_se_by_session(x, y, d, 1) == pytest.approx(1 / np.sqrt(3))
    # labels spanning 2 sessions overlap: 3 / 2 = 1.5 independent sessions, floored at 2
    assert slope_se_by_session(x, y, d, 2) == pytest.approx(1 / np.sqrt(2))
    assert np.isnan(slope_se_by_session(x[:4], y[:4], d[:4], 1))    # two sessions: unknown


def test_expectancy_parts_are_relative_to_the_session():
    from tasks.models.payoff import expectancy_parts

    rows = pd.DataFrame({"p_cal": [0.3, 0.1, 0.2, 0.2], "q_cal": 0.5, "r_cal": 0.0,
                         "atr_pct": 0.02, "rank_score": [3.0, 1.0, 2.0, 9.0],
                         "date": ["d1", "d1", "d1", "d2"]})
    ident, rank = expectancy_parts(rows, TP, SL)
    assert ident[:3].sum() == pytest.approx(0.0, abs=1e-15) and ident[3] == 0.0
    assert rank == pytest.approx([0.02 * (1 - 0.5), 0.02 * (1 / 3 - 0.5), 0.02 * (2 / 3 - 0.5),
                                  0.02 * 0.5])
