"""One session's decision on a hand-built universe: context inputs, expectancy, exits, stops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.plan.build import SessionInputs, decide
from tasks.plan.context import FileContext, context_status
from tasks.policy import Policy
from tasks.risk.clamps import Book, Position
from tasks.settings import load_settings

SETTINGS = load_settings()
DAY = pd.Timestamp("2020-06-30")
N = 30
STATS = {"n": 1000, "base_rate": 0.1, "p_stop_given_loss": 0.2, "timeout_ret_atr": 0.1}
PAYOFF = {h: {"all": STATS, "low_vol": STATS, "med_vol": STATS, "high_vol": STATS}
          for h in ("short", "mid")}


def inputs(context: pd.DataFrame | None = None, book: Book | None = None,
           policy_extra: dict | None = None) -> SessionInputs:
    syms = [f"S{i:02d}" for i in range(N)]
    rank = np.arange(N) / (N - 1)  # S29 has the highest P(win)
    features = pd.DataFrame({
        "symbol": syms, "date": DAY, "sector": [f"sec{i % 6}" for i in range(N)],
        "close_raw": 50.0, "atr_pct": 0.02, "vol_20": 0.25, "vol_z": 0.0,
        "log_dollar_volume": np.log(5e7), "corr_mkt": 0.6, "mkt_avg_corr": 0.3,
        "market_regime": "trending"})
    scores = pd.DataFrame({"symbol": syms, "regime": "med_vol",
                           "p_raw_short": 0.05 + 0.1 * rank, "p_cal_short": 0.05 + 0.1 * rank,
                           "p_raw_mid": 0.3 + 0.1 * rank, "p_cal_mid": 0.3 + 0.1 * rank,
                           # the payoff head: P(stop | not a win), relative timeout return (ATR)
                           "q_cal_short": 0.2, "r_cal_short": 0.1, "p_sd_short": 0.0})
    policy = Policy.parse({**SETTINGS.policy.model_dump(mode="json"), **(policy_extra or {})})
    return SessionInputs(as_of=DAY, features=features, scores=scores, payoff=PAYOFF,
                         thresholds={"take_profit_atr": 2.5, "stop_atr": 1.8}, model_id="m1",
                         policy=policy, policy_version="pol-test", book=book or Book(100_000.0),
                         context=context)


def test_without_context_sizes_are_halved_and_the_alert_is_raised():
    d = decide(inputs(), SETTINGS)
    assert "RL models unavailable—reduced position sizing" in d.alerts
    assert len(d.plan) > 0
    assert d.plan["reason_tags"].str.contains(r"size:rl_missing\(x0.5\)").all()
    assert d.plan["reason_tags"].str.contains("news_negative:unknown").all()
    # the top-ranked symbols by P(win) are the buys
    assert set(d.plan["ticker"]) <= {f"S{i:02d}" for i in range(20, N)}
    assert d.plan["stop"].tolist() == pytest.approx([50.0 - 1.8 * 0.02 * 50.0] * len(d.plan))
    assert d.plan["take_profit"].tolist() == pytest.approx([50.0 + 2.5 * 0.02 * 50.0]
                                                           * len(d.plan))


def test_rl_hint_restores_full_weights_and_news_penalty_applies():
    syms = [f"S{i:02d}" for i in range(N)]
    ctx = pd.DataFrame({"symbol": syms, "rl_size_hint": 1.0,
                        "news_sentiment": [-0.5 if s == "S29" else 0.1 for s in syms]})
    d = decide(inputs(ctx), SETTINGS)
    assert not d.alerts
    assert not d.signals["rl_missing"].any()
    s29 = d.signals.set_index("symbol").loc["S29"]
    assert "penalty:news_negative" in s29["penalty_tags"]
    assert s29["adjust"] == pytest.approx(-0.10)
    assert not d.plan["reason_tags"].str.contains("rl_missing").any()


def test_expectancy_gate_drops_negative_expectancy_buys():
    inp = inputs()
    # BUYs come from the mid edge; the plan horizon (short) sees every name alike, so no name
    # is expected to beat the session's average name, and costs make every net negative
    inp.scores["p_cal_short"], inp.scores["q_cal_short"], inp.scores["r_cal_short"] = 0.1, 1.0, 0.0
    d = decide(inp, SETTINGS)
    assert d.plan.empty
    buys = d.audit.loc[d.audit["signal"] == "BUY"]
    assert len(buys) > 0 and buys["reasons"].str.contains("expectancy").all()


def test_sell_signal_exits_a_held_long_and_is_not_a_short_otherwise():
    book = Book(100_000.0, {"S00": Position("S00", 10, 50.0, "core", "sec0")})
    d = decide(inputs(book=book), SETTINGS)
    exits = d.plan.loc[d.plan["action"] == "SELL"]
    assert exits["ticker"].tolist() == ["S00"] and exits["qty"].tolist() == [10]
    assert "exit:sell_signal" in exits["reason_tags"].iloc[0]
    sells = d.audit.loc[(d.audit["signal"] == "SELL") & (d.audit["symbol"] != "S00")]
    assert len(sells) > 0 and sells["reasons"].str.contains("shorts_disabled").all()
    assert not sells["taken"].any()


def test_policy_do_not_trade_is_clamped_with_a_reason():
    d0 = decide(inputs(), SETTINGS)
    top = d0.plan["ticker"].iloc[0]
    d = decide(inputs(policy_extra={"do_not_trade": [top]}), SETTINGS)
    assert top not in set(d.plan["ticker"])
    row = d.audit.set_index("symbol").loc[top]
    assert "clamp:do_not_trade" in row["reasons"] and not row["taken"]


def test_health_stop_empties_the_plan():
    d = decide(inputs(), SETTINGS, health_stop=["signals: 3 scored symbols < 10"])
    assert d.plan.empty
    assert d.audit["reasons"].str.contains("health:stop_trading").any()


def test_file_context_reads_only_the_session_and_reports_unknowns(tmp_path):
    path = tmp_path / "ctx.csv"
    pd.DataFrame({"date": ["2020-06-29", "2020-06-30", "2020-06-30"],
                  "symbol": ["S00", "S00", "S01"], "news_sentiment": [0.9, -0.4, np.nan]}
                 ).to_csv(path, index=False)
    src = FileContext(path)
    day = src.load(DAY)
    assert day["symbol"].tolist() == ["S00", "S01"]
    assert day["news_sentiment"].iloc[0] == pytest.approx(-0.4)
    status = context_status(day, ["S00", "S01", "S02"])
    assert status["news_sentiment"] == {"known": 1, "unknown": 2}
    assert status["rl_size_hint"] == {"known": 0, "unknown": 3}
    with pytest.raises(FileNotFoundError, match="context_path"):
        FileContext(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- expectancy and sizing


def _full_hint() -> pd.DataFrame:
    return pd.DataFrame({"symbol": [f"S{i:02d}" for i in range(N)], "rl_size_hint": 10.0,
                         "news_sentiment": 0.0})


def test_plan_carries_the_outcome_split_and_the_expected_r():
    d = decide(inputs(), SETTINGS)
    assert len(d.plan) > 0
    p = d.plan
    assert (p["prob_win_cal"] + p["p_stop"] + p["p_timeout"]).to_numpy() == pytest.approx(1.0)
    assert p["p_stop"].to_numpy() == pytest.approx(((1 - p["prob_win_cal"]) * 0.2).to_numpy())
    assert p["exp_r"].to_numpy() == pytest.approx((p["exp_pnl_net"] / (1.8 * 0.02)).to_numpy())
    assert (p["exp_pnl_lb"] > 0).all()
    assert p["pct_of_nl"].to_numpy() == pytest.approx((p["position_cash"] / 100_000).to_numpy())


def test_expectancy_is_relative_to_the_session():
    d = decide(inputs(), SETTINGS)
    s = d.signals
    # the barrier expectancy of every name, minus the session's mean of it
    assert s["exp_pnl"].to_numpy() == pytest.approx(
        (s["exp_pnl_barrier"] - s["exp_pnl_barrier"].mean()).to_numpy())
    assert 0 < (s["exp_pnl_net"] > 0).mean() < 1


def test_lower_bound_carries_the_ranking_weights_uncertainty():
    """With the identity weighted 0 the ensemble's dispersion says nothing about the estimate;
    the bound still sits z x se(w_rank) x ATR% x |percentile - 0.5| below it."""
    inp = inputs()
    h = SETTINGS.fusion.plan_horizon
    inp.scores[f"rank_score_{h}"] = np.arange(N, dtype=float)
    inp.scores[f"exp_a_{h}"], inp.scores[f"exp_b_{h}"], inp.scores[f"exp_b_se_{h}"] = 0.0, 1.0, 0.5
    s = decide(inp, SETTINGS).signals
    dist = (s[f"rank_score_{h}"].rank(pct=True) - 0.5).abs()
    want = SETTINGS.fusion.expectancy_z * 0.5 * 0.02 * dist
    np.testing.assert_allclose((s["exp_pnl_net"] - s["exp_pnl_lb"]).to_numpy(), want.to_numpy(),
                               rtol=1e-9, atol=1e-15)
    inp.scores[f"exp_b_se_{h}"] = np.nan     # a baseline saved without the standard error
    d = decide(inp, SETTINGS)
    assert d.signals["exp_pnl_lb"].isna().all() and d.plan["qty"].sum() == 0
    assert d.audit["reasons"].str.contains("lower bound unknown").any()


def test_a_full_conviction_core_buy_is_sized_near_the_per_name_cap():
    d = decide(inputs(_full_hint()), SETTINGS)
    top = d.plan.set_index("ticker").loc["S29"]
    assert top["score"] > 0.98
    cap = SETTINGS.risk.name_cap("core")
    # 2|score - 0.5| of the cap, floored to whole shares at $50
    assert top["pct_of_nl"] == pytest.approx(np.floor(cap * 100_000 * 2 * (top["score"] - 0.5)
                                                      / 50.0) * 50.0 / 100_000)
    assert top["pct_of_nl"] >= 0.95 * cap
    assert "size:" not in top["reason_tags"]      # nothing in the chain cut it


def test_kelly_binds_only_a_thin_edge_and_says_so():
    inp = inputs(_full_hint())
    inp.scores["p_sd_short"] = 0.0
    d = decide(inp, SETTINGS)
    thin = d.signals.loc[(d.signals["exp_pnl_net"] > 0) & d.signals["symbol"].isin(d.plan["ticker"])]
    kelly = (0.25 * 1.0 * thin["kelly_f"] * 100_000).to_numpy()
    plan = d.plan.set_index("ticker").loc[thin["symbol"]]
    cut = plan["reason_tags"].str.contains("size:kelly_cap").to_numpy()
    assert (plan["position_cash"].to_numpy() <= kelly + 1e-6).all()
    assert (plan["position_cash"].to_numpy()[cut] >= kelly[cut] - 50.0).all()   # one share
    assert (d.signals["kelly_f"] > 0).to_numpy().tolist() == (d.signals["exp_pnl_net"] > 0
                                                              ).to_numpy().tolist()


def test_an_empty_book_names_the_step_and_the_figures():
    inp = inputs()
    inp.scores["q_cal_short"], inp.scores["r_cal_short"] = 1.0, 0.0
    inp.scores["p_cal_short"] = 0.1      # every name alike: relative expectancy 0, net < 0
    d = decide(inp, SETTINGS)
    info = d.info["empty_book"]
    assert d.plan.empty and info is not None
    assert info["buy_signals"] == int((d.signals["action"] == "BUY").sum()) > 0
    assert info["step"] == "expectancy:lower_bound"
    assert info["message"] in d.alerts
    assert sum(info["by_step"].values()) == info["buy_signals"]


def test_no_empty_book_flag_when_an_order_exists_or_no_buy_signal():
    assert decide(inputs(), SETTINGS).info["empty_book"] is None
    inp = inputs()
    inp.scores["p_cal_short"], inp.scores["p_cal_mid"] = 0.1, 0.3
    d = decide(inp, SETTINGS)   # ties: every edge is the median, no BUY at all
    assert not (d.signals["action"] == "BUY").any() and d.info["empty_book"] is None


def test_book_risk_scales_entries_in_a_violent_market():
    rng = np.random.default_rng(3)
    common = rng.normal(size=80)
    syms = [f"S{i:02d}" for i in range(N)]
    rets = pd.DataFrame({s: 0.15 * (0.95 * common + 0.31 * rng.normal(size=80)) for s in syms},
                        index=pd.bdate_range(end=DAY, periods=80))
    inp = inputs(_full_hint())
    calm = decide(inp, SETTINGS)
    inp.returns = rets
    d = decide(inp, SETTINGS)
    scale = d.info["book_risk_scale"]
    assert 0 < scale < 1
    assert d.info["book_var99"] == pytest.approx(SETTINGS.guardrails.book_var99_max, rel=0.05)
    assert d.plan["reason_tags"].str.contains("size:book_risk").all()
    assert d.plan["position_cash"].sum() < calm.plan["position_cash"].sum()


@pytest.mark.parametrize("tags, step", [
    (["size:rl_missing(x0.5)", "size:kelly_cap(f*=0.001)", "size:below_one_lot(dropped, not inflated)"],
     "size:kelly_cap"),
    (["size:rl_missing(x0.5)", "size:per_trade_target", "size:book_risk(x0.100)",
      "size:below_min_position_cash(dropped, not inflated)"], "size:book_risk"),
    (["size:rl_missing(x0.5)", "size:below_one_lot(dropped, not inflated)"], "size:rl_missing"),
    (["size:below_one_lot(dropped, not inflated)"], "size:below_one_lot"),
    (["penalty:vol_spike", "gate:high_vol edge 0.600 < 0.65"], "gate:high_vol"),
    (["news_negative:unknown", "expectancy:lower bound -0.1000% <= 0 (net +0.0100%)"],
     "expectancy:lower_bound"),
    (["size:rl_missing(x0.5)", "clamp:max_positions"], "clamp:max_positions"),
    (["rank:beyond_max_positions(60)"], "rank:beyond_max_positions"),
])
def test_zeroing_step_names_what_zeroed_the_order(tags, step):
    from tasks.plan.build import zeroing_step

    assert zeroing_step(tags) == step


# --------------------------------------------------------------------------- ranking and weights


def _skill(short_t: float | None, mid_t: float | None) -> dict:
    return {"per_horizon": {"short": {"ic": 0.02, "ic_t": short_t},
                            "mid": {"ic": -0.01, "ic_t": mid_t}}}


def test_edges_rank_the_ranking_score_when_the_baseline_has_one():
    inp = inputs()
    inp.scores["rank_score_short"] = -np.arange(N, dtype=float)   # the reverse of P(win)
    inp.scores["rank_score_mid"] = -np.arange(N, dtype=float)
    d = decide(inp, SETTINGS)
    s = d.signals.set_index("symbol")
    assert s.loc["S00", "edge_short"] == pytest.approx((N - 0.5) / N)   # top of the ranking
    assert s.loc["S29", "edge_short"] == pytest.approx(0.5 / N)
    p_cal = decide(inp, SETTINGS.model_copy(update={"fusion": SETTINGS.fusion.model_copy(
        update={"edge_source": "p_cal"})}))
    assert p_cal.signals.set_index("symbol").loc["S29", "edge_short"] == pytest.approx(
        (N - 0.5) / N)


def test_a_horizon_without_ranking_skill_is_blended_at_weight_zero():
    inp = inputs()
    inp.skill = _skill(3.1, 0.4)
    d = decide(inp, SETTINGS)
    used = d.info["horizon_weights"]["used"]
    assert used["mid"] == 0.0 and used["short"] == 0.4
    assert set(d.info["horizon_weights"]["zeroed"]) == {"mid"}
    assert d.info["weights_used"]["predictors_only"] == {"short": 1.0, "mid": 0.0, "rl": 0.0}
    # the score is the short edge alone (predictors only: short renormalised to 1)
    s = d.signals
    assert s["base"].to_numpy() == pytest.approx(s["edge_short"].to_numpy())
    assert d.audit["reasons"].str.contains(r"weight:mid=0\(no out-of-sample ranking skill",
                                           regex=True).all()
    off = SETTINGS.model_copy(update={"fusion": SETTINGS.fusion.model_copy(
        update={"zero_unskilled_horizons": False})})
    assert decide(inp, off).info["horizon_weights"]["zeroed"] == {}


def test_no_skilled_horizon_is_an_explained_empty_book():
    inp = inputs()
    inp.skill = _skill(1.2, None)
    d = decide(inp, SETTINGS)
    assert d.plan.empty and not (d.signals["action"] == "BUY").any()
    info = d.info["empty_book"]
    assert info["step"] == "weight:no_skilled_horizon"
    assert "no horizon has measured out-of-sample skill" in info["message"]
    assert info["message"] in d.alerts


def test_the_per_trade_target_scales_with_net_liquidity():
    tight = SETTINGS.model_copy(update={"guardrails": SETTINGS.guardrails.model_copy(
        update={"per_trade_target_pct": 0.005})})
    for nl in (100_000.0, 400_000.0):
        d = decide(inputs(_full_hint(), book=Book(nl)), tight)
        top = d.plan.set_index("ticker").loc["S29"]
        assert "size:per_trade_target" in top["reason_tags"]
        assert 0.005 * nl - 50.0 < top["position_cash"] <= 0.005 * nl   # floored to one share
