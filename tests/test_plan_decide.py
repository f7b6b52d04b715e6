"""One session's decision on a hand-built universe: context inputs, expectancy, exits, stops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.plan.build import SessionInputs, decide
from tasks.plan.context import FileContext, context_status
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
                           "p_raw_mid": 0.3 + 0.1 * rank, "p_cal_mid": 0.3 + 0.1 * rank})
    policy = {**SETTINGS.policy.model_dump(mode="json"), **(policy_extra or {})}
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
    bad = {"n": 1000, "base_rate": 0.1, "p_stop_given_loss": 1.0, "timeout_ret_atr": 0.0}
    inp.payoff = {h: {"all": bad, "med_vol": bad} for h in ("short", "mid")}
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
