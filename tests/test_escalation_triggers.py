"""The escalation matrix: each trigger's value, threshold, fired and evaluable flags."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.escalation.settings import EscalationSettings
from tasks.escalation.triggers import (
    calls,
    decay_triggers,
    drawdown_5d,
    event_trigger,
    kill_switch_trigger,
    regime_trigger,
    risk_triggers,
)

CFG = EscalationSettings()


def equity(ends: list[float], start: float = 100.0) -> pd.DataFrame:
    starts = [start, *ends[:-1]]
    return pd.DataFrame({"session": [f"2008-10-{d:02d}" for d in range(1, len(ends) + 1)],
                         "start_net_liquidity": starts, "end_net_liquidity": ends,
                         "day_pnl_pct": [e / s - 1 for s, e in zip(starts, ends, strict=True)],
                         "drawdown": 0.0, "kill_switch": False})


def test_drawdown_over_the_last_five_sessions():
    eq = equity([101, 103, 99, 97, 95, 94.5, 96])
    # last five sessions start from 103 (end of day 2): trough 94.5 -> 8.25% below 103
    assert drawdown_5d(eq, "2008-10-07") == pytest.approx(1 - 94.5 / 103)
    assert drawdown_5d(eq, "2008-10-03") == pytest.approx(1 - 99 / 103)


def test_risk_triggers_fire_at_the_matrix_thresholds():
    eq = equity([101, 103, 99, 97, 95, 94.5, 96])
    dd, loss = risk_triggers(eq, None, "2008-10-07", CFG)
    assert dd.fired and dd.evaluable and dd.call_type == "REWARD_ENGINEER"
    assert loss.evaluable and not loss.fired and loss.source == "data/state/equity.parquet"
    rec = {"day_pnl_pct": -0.0251}
    _, loss = risk_triggers(eq, rec, "2008-10-07", CFG)
    assert loss.fired and loss.value == -0.0251 and "sessions" in loss.source
    _, loss = risk_triggers(eq, {"day_pnl_pct": -0.025}, "2008-10-07", CFG)
    assert not loss.fired  # "loss > 2.5%": exactly 2.5% does not fire


def test_absent_inputs_are_not_evaluable_never_false_and_silent():
    triggers = [*risk_triggers(None, None, "2008-10-07", CFG),
                regime_trigger(None, 0.3, CFG), event_trigger(None, CFG),
                *decay_triggers(None, None, 5, CFG, "no nightly record"),
                kill_switch_trigger(None, None, "2008-10-07", CFG)]
    assert all(not t.evaluable and not t.fired and t.source for t in triggers)
    assert "no execution record for 2008-10-07" in triggers[1].source


def test_regime_needs_both_conditions():
    assert regime_trigger(2.3, 0.35, CFG).fired
    assert regime_trigger(-2.3, 0.35, CFG).fired
    assert not regime_trigger(2.3, 0.65, CFG).fired   # a crash with high correlation
    assert not regime_trigger(1.9, 0.2, CFG).fired


def test_event_heat_only_with_a_put_call_input():
    ctx = pd.DataFrame({"symbol": ["A", "B", "C"], "put_call_ratio": [1.5, 1.9, None]})
    t = event_trigger(ctx, CFG)
    assert t.evaluable and t.fired and t.value == pytest.approx(1.7)
    assert not event_trigger(pd.DataFrame({"symbol": ["A"], "news_sentiment": [0.1]}),
                             CFG).evaluable


def orders(n_sessions: int, per: int, win_rate: float, ret: float) -> pd.DataFrame:
    rows = []
    for s in range(n_sessions):
        for i in range(per):
            win = i < round(per * win_rate)
            rows.append({"session": f"2008-09-{s + 1:02d}", "ticker": f"T{i}",
                         "prob_win_cal": 0.12, "outcome": "tp" if win else "sl", "win": win,
                         "ret": ret + 0.001 * ((s * 7 + i) % 5 - 2)})
    return pd.DataFrame(rows)


def test_model_decay_from_realised_outcomes():
    acc, sharpe = decay_triggers(orders(12, 5, 0.0, -0.02), (0.15, "validation"), 5, CFG, "n")
    assert acc.fired and acc.value["drop"] == pytest.approx(0.15)
    assert sharpe.fired and sharpe.value["sharpe"] < 0
    acc, sharpe = decay_triggers(orders(12, 5, 0.2, 0.02), (0.15, "validation"), 5, CFG, "n")
    assert not acc.fired and not sharpe.fired
    acc, sharpe = decay_triggers(orders(3, 5, 0.0, -0.02), None, 5, CFG, "n")
    assert not acc.evaluable and not sharpe.evaluable  # too few orders / sessions


def test_kill_switch_trigger():
    assert kill_switch_trigger(None, {"day_pnl_pct": -0.03}, "d", CFG).fired
    assert kill_switch_trigger(None, {"day_pnl_pct": -0.01, "kill_switch": True}, "d", CFG).fired


def test_several_triggers_of_one_type_make_one_call():
    eq = equity([101, 103, 99, 97, 95, 94.5, 92])
    triggers = [*risk_triggers(eq, {"day_pnl_pct": -0.03}, "2008-10-07", CFG),
                *decay_triggers(orders(12, 5, 0.0, -0.02), None, 5, CFG, "n"),
                regime_trigger(2.5, 0.3, CFG)]
    grouped = calls(triggers, ("REGIME_AUDITOR", "REWARD_ENGINEER"))
    assert list(grouped) == ["REGIME_AUDITOR", "REWARD_ENGINEER"]
    assert len(grouped["REWARD_ENGINEER"]) == 4
