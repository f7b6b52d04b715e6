"""Hand-computed boundary tests of the fusion (tasks/plan/fusion.py) and sizing
(tasks/plan/sizing.py) rules.

The reference case: weights short 0.4 / mid 0.3 / rl 0.3, edge_short 0.8, edge_mid 0.7 and an RL
hint of 0 (sigmoid 0.5) give base = 0.32 + 0.21 + 0.15 = 0.68 -> BUY. Threshold cases use a
weight of 1.0 on the short edge so the base *is* the edge, exactly, in floating point.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tasks.plan.fusion import (
    Weights,
    fuse,
    gate,
    horizon_edge,
    logit,
    odds_edge,
    penalties,
    percentile_edge,
    predictor_edge,
    sigmoid,
)
from tasks.plan.sizing import (
    correlation_matrix,
    effective_k,
    score_cash,
    to_quantity,
)
from tasks.trading_settings import FusionSettings, GuardrailSettings

W = {"short": 0.4, "mid": 0.3, "rl": 0.3}
SHORT_ONLY = {"short": 1.0, "mid": 0.0, "rl": 0.0}
CFG = FusionSettings()
NEUTRAL = {"vol_z": 0.0, "news_sentiment": 0.0, "liquidity": 1.0, "market_corr": 0.6}


def row(edge_short=0.8, edge_mid=0.7, rl_size_hint=0.0, **overrides) -> dict:
    return {"edge_short": edge_short, "edge_mid": edge_mid, "rl_size_hint": rl_size_hint,
            **NEUTRAL, **overrides}


def fuse_rows(*rows: dict, weights=W, cfg: FusionSettings = CFG) -> pd.DataFrame:
    return fuse(pd.DataFrame(list(rows)), weights, cfg)


def fuse_one(weights=W, cfg: FusionSettings = CFG, **kw) -> pd.Series:
    return fuse_rows(row(**kw), weights=weights, cfg=cfg).iloc[0]


# --------------------------------------------------------------------------- fuse: base and action


def test_reference_case_is_buy():
    r = fuse_one()
    assert r["base"] == pytest.approx(0.68, abs=1e-12)
    assert r["adjust"] == 0.0
    assert r["score"] == pytest.approx(0.68, abs=1e-12)
    assert r["action"] == "BUY"
    assert not r["rl_missing"]
    assert list(r["penalty_tags"]) == []


def test_rl_hint_goes_through_sigmoid():
    # hint ln(3) -> sigmoid 0.75: base = 0.32 + 0.21 + 0.3 * 0.75 = 0.755
    assert fuse_one(rl_size_hint=math.log(3.0))["base"] == pytest.approx(0.755, abs=1e-12)
    # hint -ln(3) -> 0.25: base = 0.53 + 0.075 = 0.605 -> HOLD
    r = fuse_one(rl_size_hint=-math.log(3.0))
    assert r["base"] == pytest.approx(0.605, abs=1e-12)
    assert r["action"] == "HOLD"


@pytest.mark.parametrize("edge, action", [
    (0.67 + 1e-9, "BUY"),
    (0.67, "BUY"),               # at the buy threshold: BUY (>=)
    (0.67 - 1e-9, "HOLD"),
    (0.5, "HOLD"),
    (0.33 + 1e-9, "HOLD"),
    (0.33, "SELL"),              # at the sell threshold: SELL (<=)
    (0.33 - 1e-9, "SELL"),
    (0.0, "SELL"),
    (1.0, "BUY"),
])
def test_action_thresholds(edge, action):
    r = fuse_one(weights=SHORT_ONLY, edge_short=edge, edge_mid=0.123)
    assert r["base"] == edge                      # weight 1.0 on the short edge: exact
    assert r["action"] == action


def test_configured_thresholds_are_used():
    cfg = FusionSettings(buy_threshold=0.6, sell_threshold=0.4)
    assert fuse_one(weights=SHORT_ONLY, cfg=cfg, edge_short=0.6)["action"] == "BUY"
    assert fuse_one(weights=SHORT_ONLY, cfg=cfg, edge_short=0.6 - 1e-9)["action"] == "HOLD"
    assert fuse_one(weights=SHORT_ONLY, cfg=cfg, edge_short=0.4)["action"] == "SELL"
    assert fuse_one(weights=SHORT_ONLY, cfg=cfg, edge_short=0.4 + 1e-9)["action"] == "HOLD"


def test_reference_base_at_buy_threshold_equal_to_itself():
    base = fuse_one()["base"]
    assert fuse_one(cfg=FusionSettings(buy_threshold=base))["action"] == "BUY"
    assert fuse_one(cfg=FusionSettings(buy_threshold=base + 1e-9))["action"] == "HOLD"


# --------------------------------------------------------------------------- fuse: penalties


@pytest.mark.parametrize("field, at, beyond, size, tag", [
    ("vol_z", 2.0, 2.0001, 0.15, "penalty:vol_spike"),
    ("news_sentiment", -0.3, -0.3001, 0.10, "penalty:news_negative"),
    ("liquidity", 0.5, 0.4999, 0.05, "penalty:low_liquidity"),
    ("market_corr", 0.4, 0.3999, 0.08, "penalty:corr_breakdown"),
])
def test_each_penalty_boundary(field, at, beyond, size, tag):
    at_row = fuse_one(**{field: at})
    assert at_row["adjust"] == 0.0                # the rules are strict: at the threshold, none
    assert list(at_row["penalty_tags"]) == []
    assert at_row["action"] == "BUY"
    hit = fuse_one(**{field: beyond})
    assert hit["adjust"] == pytest.approx(-size, abs=1e-12)
    assert hit["score"] == pytest.approx(0.68 - size, abs=1e-12)
    assert list(hit["penalty_tags"]) == [tag]
    assert hit["action"] == "HOLD"                # 0.68 - any penalty < 0.67


def test_penalties_sum_and_keep_rule_order():
    r = fuse_one(vol_z=2.0001, news_sentiment=-0.3001, liquidity=0.4999, market_corr=0.3999)
    assert r["adjust"] == pytest.approx(-0.38, abs=1e-12)      # 0.15 + 0.10 + 0.05 + 0.08
    assert r["score"] == pytest.approx(0.30, abs=1e-12)
    assert r["action"] == "SELL"
    assert list(r["penalty_tags"]) == ["penalty:vol_spike", "penalty:news_negative",
                                       "penalty:low_liquidity", "penalty:corr_breakdown"]


def test_two_penalties_only():
    r = fuse_one(vol_z=5.0, market_corr=0.0)
    assert r["adjust"] == pytest.approx(-0.23, abs=1e-12)
    assert list(r["penalty_tags"]) == ["penalty:vol_spike", "penalty:corr_breakdown"]


def test_configured_penalty_thresholds_and_sizes():
    cfg = FusionSettings(vol_spike_z=3.0, vol_spike_penalty=0.2)
    assert fuse_one(cfg=cfg, vol_z=3.0)["adjust"] == 0.0
    assert fuse_one(cfg=cfg, vol_z=3.0001)["adjust"] == pytest.approx(-0.2)


def test_score_clamped_at_zero():
    # base = 0.3 * sigmoid(-50) ~ 6e-23; all penalties (-0.38) would push it below 0
    r = fuse_one(edge_short=0.0, edge_mid=0.0, rl_size_hint=-50.0, vol_z=9.0,
                 news_sentiment=-1.0, liquidity=0.0, market_corr=-1.0)
    assert r["base"] + r["adjust"] < 0
    assert r["score"] == 0.0
    assert r["action"] == "SELL"


def test_score_clamped_at_one():
    r = fuse_one(weights=SHORT_ONLY, edge_short=1.5)   # out-of-range edge
    assert r["base"] == 1.5
    assert r["score"] == 1.0
    assert r["action"] == "BUY"


@pytest.mark.parametrize("field, name", [
    ("vol_z", "vol_spike"), ("news_sentiment", "news_negative"),
    ("liquidity", "low_liquidity"), ("market_corr", "corr_breakdown"),
])
def test_nan_penalty_input_is_tagged_unknown_never_penalised(field, name):
    r = fuse_one(**{field: math.nan})
    assert r["adjust"] == 0.0
    assert r["action"] == "BUY"
    tags = list(r["penalty_tags"])
    assert tags == [f"{name}:unknown"]
    assert not any(t.startswith("penalty:") for t in tags)


def test_all_penalty_inputs_nan():
    r = fuse_one(vol_z=math.nan, news_sentiment=None, liquidity=math.nan, market_corr=math.nan)
    assert r["adjust"] == 0.0
    assert len(r["penalty_tags"]) == 4
    assert all(t.endswith(":unknown") for t in r["penalty_tags"])


def test_infinite_penalty_input_is_unknown_not_penalised():
    r = fuse_one(vol_z=math.inf)
    assert r["adjust"] == 0.0
    assert list(r["penalty_tags"]) == ["vol_spike:unknown"]


def test_penalties_frame_per_row():
    frame = pd.DataFrame([NEUTRAL, {**NEUTRAL, "vol_z": 2.5}, {**NEUTRAL, "liquidity": np.nan}],
                         index=["a", "b", "c"])
    out = penalties(frame, CFG)
    assert list(out.index) == ["a", "b", "c"]
    assert out["adjust"].tolist() == pytest.approx([0.0, -0.15, 0.0])
    assert out["penalty_tags"].tolist() == [[], ["penalty:vol_spike"], ["low_liquidity:unknown"]]


# --------------------------------------------------------------------------- fuse: RL missing, NaN edges


def test_missing_rl_hint_renormalises_predictor_weights():
    r = fuse_one(rl_size_hint=math.nan)
    expected = 0.4 / 0.7 * 0.8 + 0.3 / 0.7 * 0.7                 # 0.53 / 0.7 = 0.757142...
    assert r["base"] == pytest.approx(expected, abs=1e-12)
    assert r["base"] == pytest.approx(0.53 / 0.7, abs=1e-12)
    assert r["rl_missing"]
    assert r["action"] == "BUY"


def test_rl_missing_flag_per_row():
    out = fuse_rows(row(), row(rl_size_hint=None), row(rl_size_hint=2.0))
    assert out["rl_missing"].tolist() == [False, True, False]
    assert out["base"].iloc[2] == pytest.approx(0.53 + 0.3 * float(sigmoid(2.0)), abs=1e-12)


@pytest.mark.parametrize("kw", [{"edge_short": math.nan}, {"edge_mid": math.nan},
                                {"edge_short": math.nan, "rl_size_hint": math.nan}])
def test_missing_edge_is_hold_with_nan_score(kw):
    r = fuse_one(**kw)
    assert math.isnan(r["score"])
    assert r["action"] == "HOLD"


def test_fuse_keeps_input_columns_and_index():
    frame = pd.DataFrame([row(), row(edge_short=0.1, edge_mid=0.1)], index=["X", "Y"])
    frame["symbol"] = ["X", "Y"]
    out = fuse(frame, W, CFG)
    assert list(out.index) == ["X", "Y"]
    assert out["symbol"].tolist() == ["X", "Y"]
    assert out["action"].tolist() == ["BUY", "SELL"]   # Y: 0.04 + 0.03 + 0.15 = 0.22
    assert "base" not in frame.columns                  # input not mutated


# --------------------------------------------------------------------------- weights


def test_weights_effective_with_rl():
    w = Weights.effective(W, rl_available=True)
    assert (w.short, w.mid, w.rl) == pytest.approx((0.4, 0.3, 0.3))


def test_weights_effective_without_rl():
    w = Weights.effective(W, rl_available=False)
    assert w.short == pytest.approx(4 / 7) and w.mid == pytest.approx(3 / 7)
    assert w.rl == 0.0
    assert w.short + w.mid == pytest.approx(1.0)


def test_weights_effective_normalises_unnormalised_and_missing_keys():
    w = Weights.effective({"short": 2.0, "mid": 1.0, "rl": 1.0}, rl_available=True)
    assert (w.short, w.mid, w.rl) == pytest.approx((0.5, 0.25, 0.25))
    w = Weights.effective({"short": 3.0}, rl_available=True)
    assert (w.short, w.mid, w.rl) == (1.0, 0.0, 0.0)


def test_weights_effective_rl_only_without_rl_raises():
    with pytest.raises(ValueError, match="sum to zero"):
        Weights.effective({"short": 0.0, "mid": 0.0, "rl": 1.0}, rl_available=False)
    assert Weights.effective({"rl": 1.0}, rl_available=True).rl == 1.0


def test_fuse_rl_only_policy_with_all_hints_present():
    out = fuse_rows(row(rl_size_hint=0.0), weights={"short": 0.0, "mid": 0.0, "rl": 1.0})
    assert out["base"].iloc[0] == pytest.approx(0.5)


# --------------------------------------------------------------------------- edges


def test_percentile_edge_distinct():
    out = percentile_edge(np.array([0.4, 0.1, 0.3, 0.2]))
    assert out.tolist() == pytest.approx([0.875, 0.125, 0.625, 0.375])


def test_percentile_edge_median_is_half():
    assert percentile_edge(np.array([0.1, 0.2, 0.3]))[1] == pytest.approx(0.5)


def test_percentile_edge_ties_averaged():
    out = percentile_edge(np.array([0.1, 0.2, 0.2, 0.3]))
    assert out.tolist() == pytest.approx([0.125, 0.5, 0.5, 0.875])


def test_percentile_edge_nan_kept_and_excluded_from_n():
    out = percentile_edge(np.array([0.3, np.nan, 0.1]))
    assert out[0] == pytest.approx(0.75) and out[2] == pytest.approx(0.25)   # n = 2
    assert math.isnan(out[1])


def test_percentile_edge_all_nan_and_single():
    assert np.isnan(percentile_edge(np.array([np.nan, np.nan]))).all()
    assert percentile_edge(np.array([0.42])).tolist() == [0.5]


def test_odds_edge_half_at_base_rate():
    out = odds_edge(np.array([0.4, 0.25, 0.7]), np.array([0.4, 0.25, 0.7]))
    assert out.tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_odds_edge_hand_computed():
    # logit(0.5) - logit(0.25) = ln 3 -> sigmoid = 0.75; mirrored -> 0.25
    assert odds_edge(np.array([0.5]), np.array([0.25]))[0] == pytest.approx(0.75)
    assert odds_edge(np.array([0.25]), np.array([0.5]))[0] == pytest.approx(0.25)


def test_odds_edge_nan_inputs():
    out = odds_edge(np.array([np.nan, 0.5]), np.array([0.3, np.nan]))
    assert np.isnan(out).all()


def test_logit_clips_extremes():
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()
    assert logit(np.array([0.5]))[0] == 0.0


def test_horizon_edge_dispatches_on_mode():
    p = np.array([0.2, 0.4])
    base = np.array([0.4, 0.4])
    assert horizon_edge(p, base, "percentile").tolist() == pytest.approx([0.25, 0.75])
    assert horizon_edge(p, base, "base_rate_odds")[1] == pytest.approx(0.5)


# --------------------------------------------------------------------------- gates


GATES = {"low_vol": 0.60, "med_vol": 0.62, "high_vol": 0.65}
W_SHORT = Weights(1.0, 0.0, 0.0)


def gate_one(edge: float, regime, weights: Weights = W_SHORT) -> pd.Series:
    frame = pd.DataFrame({"edge_short": [edge], "edge_mid": [0.111], "regime": [regime]})
    return gate(frame, weights, GATES).iloc[0]


@pytest.mark.parametrize("edge, passes", [(0.62 + 1e-9, True), (0.62, True), (0.62 - 1e-9, False)])
def test_gate_buy_side_boundary(edge, passes):
    r = gate_one(edge, "med_vol")
    assert r["gate_edge"] == edge
    assert r["gate"] == 0.62
    assert bool(r["gate_buy"]) is passes
    assert not r["gate_sell"]


@pytest.mark.parametrize("edge, passes", [
    (1.0 - 0.62 - 1e-9, True), (1.0 - 0.62, True), (1.0 - 0.62 + 1e-9, False)])
def test_gate_sell_side_boundary(edge, passes):
    r = gate_one(edge, "med_vol")
    assert bool(r["gate_sell"]) is passes
    assert not r["gate_buy"]


@pytest.mark.parametrize("regime, buy_at", [("low_vol", 0.60), ("high_vol", 0.65)])
def test_gate_per_regime(regime, buy_at):
    assert gate_one(buy_at, regime)["gate_buy"]
    assert not gate_one(buy_at - 1e-9, regime)["gate_buy"]


@pytest.mark.parametrize("regime", ["crash", None, np.nan, ""])
def test_unknown_regime_never_passes(regime):
    for edge in (0.0, 0.5, 1.0):
        r = gate_one(edge, regime)
        assert not r["gate_buy"] and not r["gate_sell"]
        assert math.isnan(r["gate"])


def test_gate_nan_edge_never_passes():
    r = gate_one(math.nan, "low_vol")
    assert not r["gate_buy"] and not r["gate_sell"]


def test_predictor_edge_excludes_rl_and_renormalises():
    frame = pd.DataFrame({"edge_short": [0.8], "edge_mid": [0.7]})
    w = Weights.effective(W, rl_available=True)             # 0.4 / 0.3 / 0.3
    assert predictor_edge(frame, w)[0] == pytest.approx(0.53 / 0.7)
    assert np.isnan(predictor_edge(frame, Weights(0.0, 0.0, 1.0))).all()


# --------------------------------------------------------------------------- effective K


@pytest.mark.parametrize("n", [1, 2, 5])
def test_effective_k_identity_is_n(n):
    assert effective_k(np.ones(n), np.eye(n)) == pytest.approx(n)


@pytest.mark.parametrize("n", [2, 5])
def test_effective_k_all_ones_is_one(n):
    assert effective_k(np.ones(n), np.ones((n, n))) == pytest.approx(1.0)


def test_effective_k_two_assets_rho_half():
    corr = np.array([[1.0, 0.5], [0.5, 1.0]])
    assert effective_k(np.ones(2), corr) == pytest.approx(4 / 3)   # 4 / (2 + 2 * 0.5)


def test_effective_k_negative_correlation_clipped_to_zero():
    corr = np.array([[1.0, -0.9], [-0.9, 1.0]])
    assert effective_k(np.ones(2), corr) == pytest.approx(2.0)     # not 4 / 0.2 = 20


def test_effective_k_nan_correlation_treated_as_independent_and_diag_forced():
    corr = np.array([[np.nan, np.nan], [np.nan, 0.3]])
    assert effective_k(np.ones(2), corr) == pytest.approx(2.0)


def test_effective_k_unequal_weights():
    # w = (2, 1), rho = 0.5: (3)^2 / (4 + 1 + 2 * 2 * 1 * 0.5) = 9 / 7
    corr = np.array([[1.0, 0.5], [0.5, 1.0]])
    assert effective_k(np.array([2.0, 1.0]), corr) == pytest.approx(9 / 7)


def test_correlation_matrix_unknown_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=30)
    returns = pd.DataFrame({"A": a, "B": a * 2.0, "C": rng.normal(size=30)})
    m = correlation_matrix(returns, ["A", "B", "ZZZ"])
    assert m.shape == (3, 3)
    assert m[0, 1] == pytest.approx(1.0)
    assert m[0, 2] == 0.0 and m[2, 2] == 0.0          # unknown symbol: 0, not NaN
    assert correlation_matrix(returns, []).shape == (0, 0)
    short = correlation_matrix(returns.head(10), ["A", "B"], min_obs=20)
    assert (short == 0.0).all()


# --------------------------------------------------------------------------- cash and quantity


def test_score_cash_hand_computed():
    assert score_cash(0.8, 0.015, 100_000) == pytest.approx(900.0)
    assert score_cash(0.2, 0.015, 100_000) == pytest.approx(900.0)   # symmetric for SELL
    assert score_cash(1.0, 0.015, 100_000) == pytest.approx(1_500.0)  # full per-name limit
    assert score_cash(0.5, 0.015, 100_000) == 0.0
    assert score_cash(0.67, 0.004, 100_000) == pytest.approx(136.0)


LOT1 = GuardrailSettings(lot_size=1)          # min_position_cash = 100


@pytest.mark.parametrize("cash, price, qty", [
    (900.0, 10.0, 90),
    (1_500.0, 10.0, 150),
    (909.99, 10.0, 90),          # floored, never rounded up
    (100.0, 10.0, 10),           # exactly min_position_cash: kept
])
def test_to_quantity_floors(cash, price, qty):
    assert to_quantity(cash, price, LOT1) == (qty, None)


def test_to_quantity_below_min_position_cash_dropped():
    qty, why = to_quantity(99.99, 10.0, LOT1)           # 9 shares = 90 < 100
    assert qty == 0
    assert "not inflated" in why and "min_position_cash" in why


def test_to_quantity_below_one_share_dropped():
    qty, why = to_quantity(9.99, 10.0, LOT1)
    assert qty == 0
    assert "not inflated" in why and "below_one_lot" in why


@pytest.mark.parametrize("cash, qty", [(999.99, 0), (1_000.0, 100), (1_999.99, 100),
                                       (2_000.0, 200)])
def test_to_quantity_whole_lots(cash, qty):
    guard = GuardrailSettings(lot_size=100, min_position_cash=0.0)
    got, why = to_quantity(cash, 10.0, guard)
    assert got == qty
    assert got % 100 == 0
    assert (why is None) == (qty > 0)
    if qty == 0:
        assert "not inflated" in why


def test_to_quantity_one_lot_below_min_cash_is_dropped_not_inflated():
    guard = GuardrailSettings(lot_size=10, min_position_cash=150.0)
    assert to_quantity(149.0, 10.0, guard)[0] == 0                # 10 sh = 100 < 150
    qty, why = to_quantity(199.0, 10.0, guard)                   # still one lot: 100 < 150
    assert qty == 0 and "not inflated" in why
    assert to_quantity(200.0, 10.0, guard) == (20, None)         # two lots = 200 >= 150


@pytest.mark.parametrize("cash, price", [(1_000.0, 0.0), (1_000.0, -1.0), (1_000.0, math.nan),
                                         (math.nan, 10.0), (math.inf, 10.0)])
def test_to_quantity_no_price(cash, price):
    assert to_quantity(cash, price, LOT1) == (0, "size:no_price")


def test_score_to_quantity_pipeline():
    cash = score_cash(0.8, 0.015, 100_000)
    assert to_quantity(cash, 10.0, LOT1) == (90, None)
    assert to_quantity(cash * LOT1.rl_missing_size_factor, 10.0, LOT1) == (45, None)
