"""Strict response schemas and the bounds every delta is clipped to (pure functions)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tasks.escalation.bounds import bound
from tasks.escalation.schemas import (
    RegimeAuditorResponse,
    RewardEngineerResponse,
    SanityJudgeResponse,
    parse_response,
    response_schema,
)
from tasks.policy import Policy, policy_settings
from tasks.settings import load_settings
from tasks.trading_settings import HARD_BUCKET_CAPS, HARD_PER_NAME

S = load_settings()
POLICY = Policy()
UNIVERSE = {"AAPL", "MSFT", "BRK.B"}


def regime(**over) -> RegimeAuditorResponse:
    base = {"regime_label": "volatile", "blend_weights_delta": {"short": 0.0, "mid": 0.0, "rl": 0.0},
            "bucket_caps_delta": {"penny": 0.0, "fno": 0.0, "core": 0.0}, "do_not_trade_list": []}
    return RegimeAuditorResponse.model_validate({**base, **over})


@pytest.mark.parametrize("text", [
    '{"stay_demo": "true", "live_changes": {"max_position_pct": 0.01, '
    '"stop_multipliers": {"atr": 1.5, "trailing": 1.0}}}',                     # string bool
    '{"stay_demo": true, "live_changes": {"max_position_pct": "0.01", '
    '"stop_multipliers": {"atr": 1.5, "trailing": 1.0}}}',                     # string number
    '{"stay_demo": true, "live_changes": {"max_position_pct": NaN, '
    '"stop_multipliers": {"atr": 1.5, "trailing": 1.0}}}',                     # NaN
    '{"stay_demo": true}',                                                     # field missing
    '{"stay_demo": true, "live_changes": {"max_position_pct": 0.01, "stop_multipliers": '
    '{"atr": 1.5, "trailing": 1.0}}, "note": "extra"}',                        # extra field
])
def test_responses_are_strict(text):
    parsed, why = parse_response("SANITY_JUDGE", text)
    assert parsed is None and why.startswith("schema:")


def test_schemas_are_closed_and_fully_required():
    for ct in ("REGIME_AUDITOR", "REWARD_ENGINEER", "SANITY_JUDGE"):
        schema = response_schema(ct)
        assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)
        stack = [schema]
        while stack:
            node = stack.pop()
            if node.get("type") == "object":
                assert node["additionalProperties"] is False
                assert set(node["required"]) == set(node["properties"])
                stack.extend(node["properties"].values())


def test_out_of_range_deltas_are_clipped_and_recorded():
    out = bound("REGIME_AUDITOR", regime(
        blend_weights_delta={"short": 3.0, "mid": -0.02, "rl": -7.0},
        bucket_caps_delta={"penny": 0.5, "fno": -1.0, "core": 0.01}), POLICY, S, UNIVERSE)
    clipped = {c["field"]: (c["proposed"], c["applied"]) for c in out.clipped}
    assert clipped["blend_weights_delta.short"] == (3.0, 0.1)
    assert clipped["blend_weights_delta.rl"] == (-7.0, -0.1)
    assert clipped["bucket_caps_delta.penny"] == (0.5, 0.02)
    assert clipped["bucket_caps.penny"] == (0.04, 0.02)          # never above the hard cap
    assert clipped["bucket_caps.core"] == (0.91, 0.9)
    assert out.changes["bucket_caps"] == {"core": 0.9, "penny": 0.02, "fno": 0.0}
    assert sum(out.changes["blend_weights"].values()) == pytest.approx(1.0)


def test_unknown_and_malformed_symbols_are_dropped():
    out = bound("REGIME_AUDITOR", regime(do_not_trade_list=[
        "aapl", "AAPL", "TSLA", "brk.b", "<script>", "MSFT; rm -rf /", ""]), POLICY, S, UNIVERSE)
    assert out.changes["do_not_trade"] == ["AAPL", "BRK.B"]
    reasons = {r["proposed"]: r["reason"] for r in out.rejected}
    assert reasons["TSLA"].startswith("unknown symbol")
    assert reasons["<script>"] == reasons["MSFT; rm -rf /"] == "not a ticker symbol"


def test_do_not_trade_additions_are_capped():
    syms = {f"S{i:03d}" for i in range(30)}
    out = bound("REGIME_AUDITOR", regime(do_not_trade_list=sorted(syms)), POLICY, S, syms)
    assert len(out.changes["do_not_trade"]) == S.escalation.bounds.max_do_not_trade_additions
    assert sum("more than" in r["reason"] for r in out.rejected) == 20


def test_no_predictor_weight_is_rejected_not_guessed():
    policy = POLICY.replace(blend_weights={"short": 0.05, "mid": 0.05, "rl": 0.9})
    loose = load_settings(escalation={"bounds": {"blend_weight_max_drift": 1.0}})
    out = bound("REGIME_AUDITOR", regime(blend_weights_delta={"short": -0.1, "mid": -0.1,
                                                              "rl": 0.0}), policy, loose, UNIVERSE)
    assert "blend_weights" not in out.changes
    assert out.rejected[0]["reason"] == "would leave the predictors no weight"


def test_repeated_calls_cannot_walk_the_weights_away():
    policy = POLICY
    for _ in range(20):
        out = bound("REGIME_AUDITOR", regime(blend_weights_delta={"short": 0.1, "mid": -0.1,
                                                                  "rl": -0.1}), policy, S,
                    UNIVERSE)
        policy = out.apply(policy)
    w = policy.blend_weights
    assert w["short"] == pytest.approx(0.7, abs=1e-5)  # configured 0.4 + drift 0.3
    assert sum(w.values()) == pytest.approx(1.0, abs=1e-5) and min(w.values()) >= 0
    assert any(c["field"] == "blend_weights" and "configured mix" in c["reason"]
               for c in out.clipped)


def test_reward_coefficients_are_normalised_and_features_must_be_toggleable():
    resp = RewardEngineerResponse.model_validate({
        "reward_coefficients": {"returns": 3.0, "turnover": 0.5, "drawdown": 0.5},
        "turnover_penalties": {"penalty_rate": -1.0},
        "disabled_features": ["vol_z", "macd", "feature1", "news_sentiment", "liquidity",
                              "corr_mkt"]})
    out = bound("REWARD_ENGINEER", resp, POLICY, S, UNIVERSE)
    assert out.changes["reward_coefficients"] == {"returns": 0.5, "turnover": 0.25,
                                                  "drawdown": 0.25}
    assert out.changes["turnover_penalties"] == {"penalty_rate": 0.0}
    assert out.changes["disabled_features"] == ["liquidity", "news_sentiment", "vol_z"]
    reasons = {r["proposed"]: r["reason"] for r in out.rejected}
    assert "not toggleable" in reasons["macd"] and reasons["feature1"].startswith("unknown")
    assert reasons["corr_mkt"] == "more than 3 toggles"
    zero = RewardEngineerResponse.model_validate({
        "reward_coefficients": {"returns": -1.0, "turnover": 0.0, "drawdown": 0.0},
        "turnover_penalties": {"penalty_rate": 0.01}, "disabled_features": []})
    assert "reward_coefficients" not in bound("REWARD_ENGINEER", zero, POLICY, S, UNIVERSE).changes


def test_sanity_judge_changes_stay_within_hard_limits():
    resp = SanityJudgeResponse.model_validate({
        "stay_demo": False, "live_changes": {"max_position_pct": 0.5,
                                             "stop_multipliers": {"atr": 4.0, "trailing": 0.01}}})
    out = bound("SANITY_JUDGE", resp, POLICY, S, UNIVERSE)
    live = out.changes["live_changes"]
    assert live == {"max_position_pct": 0.015, "stop_multipliers": {"atr": 1.8, "trailing": 0.5}}
    assert out.changes["stay_demo"] is False
    risk = policy_settings(S, out.apply(POLICY)).risk
    assert risk.name_cap("penny") == HARD_PER_NAME["penny"]  # a policy never loosens a limit
    tight = policy_settings(S, POLICY.replace(live_changes={"max_position_pct": 0.002,
                                                            "stop_multipliers": {"atr": 1.0,
                                                                                 "trailing": 0.8}}))
    assert tight.risk.name_cap("core") == 0.002 and tight.risk.initial_stop_atr == 1.0
    assert tight.risk.trailing_stop_atr == 0.8


def test_only_the_remote_model_may_leave_demo_mode():
    resp = SanityJudgeResponse.model_validate({
        "stay_demo": False, "live_changes": {"max_position_pct": 0.01,
                                             "stop_multipliers": {"atr": 1.5, "trailing": 1.0}}})
    local = bound("SANITY_JUDGE", resp, POLICY, S, UNIVERSE, remote=False)
    assert "stay_demo" not in local.changes and local.rejected[0]["field"] == "stay_demo"
    assert local.changes["live_changes"]["max_position_pct"] == 0.01  # tighter limits still apply


finite = st.floats(-1e6, 1e6, allow_nan=False)


@hsettings(max_examples=150, deadline=None)
@given(st.tuples(finite, finite, finite), st.tuples(finite, finite, finite))
def test_any_bounded_answer_keeps_hard_limits(weights, caps):
    resp = regime(blend_weights_delta=dict(zip(("short", "mid", "rl"), weights, strict=True)),
                  bucket_caps_delta=dict(zip(("penny", "fno", "core"), caps, strict=True)))
    out = bound("REGIME_AUDITOR", resp, POLICY, S, UNIVERSE)
    new = out.apply(POLICY)
    for k, v in new.bucket_caps.items():
        assert 0.0 <= v <= HARD_BUCKET_CAPS[k]
        assert abs(v - POLICY.bucket_caps[k]) <= 0.05 + 1e-9
    assert min(new.blend_weights.values()) >= 0
    conf = {"short": 0.4, "mid": 0.3, "rl": 0.3}
    assert all(abs(new.blend_weights[k] - conf[k]) <= 0.3 + 1e-5 for k in conf)
    assert sum(new.blend_weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert new.blend_weights["short"] + new.blend_weights["mid"] > 0
