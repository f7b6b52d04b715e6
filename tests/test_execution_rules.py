"""Pure rules of the execution layer: kill-switch check, quarantine window and overrides, live
gates and go-live stages, the fill model, trailing stops, R-multiples, settings ceilings."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tasks.alerts import read_alerts
from tasks.execution import quarantine as q
from tasks.execution.broker import Bar, OrderRequest, simulate_fill
from tasks.execution.episodes import episodes_from_records, r_multiple
from tasks.execution.gates import ADAPTERS, LiveGateError, live_gates, require_live, stage_risk
from tasks.execution.killswitch import check_kill_switch
from tasks.execution.overrides import force_demo, lift_demo, operator_path, repair_overrides
from tasks.execution.positions import trail
from tasks.execution.sessions import sessions_after, window
from tasks.execution.settings import FillModelSettings
from tasks.execution.state import Holding
from tasks.paths import Paths
from tasks.settings import ConfigError, load_settings
from tasks.trading_settings import RiskSettings

CAL = "XNYS"
# 12 consecutive sessions
DAYS = ["2020-03-02", "2020-03-03", "2020-03-04", "2020-03-05", "2020-03-06", "2020-03-09",
        "2020-03-10", "2020-03-11", "2020-03-12", "2020-03-13", "2020-03-16", "2020-03-17"]


@pytest.mark.parametrize(("pnl_pct", "trips"), [(-2.49, False), (-2.50, True), (-2.51, True),
                                                (0.0, False)])
def test_kill_switch_check_at_the_boundary(pnl_pct, trips):
    for start in (100_000.0, 87_654.32, 1_000_000.0):
        nl = start * (1 + pnl_pct / 100)
        assert check_kill_switch(start, nl, 0.025).tripped is trips, (start, pnl_pct)


def _kills(days: list[str]) -> tuple[dict, list[bool]]:
    state, activated = q.empty_state(), []
    rules = q.Rules()
    for d in days:
        state, on = q.record_kill_day(state, d, window(CAL, d, 10), rules, f"{d}T15:00:00Z")
        activated.append(on)
    return state, activated


def test_window_lists_the_ten_sessions_ending_at_the_day():
    assert window(CAL, "2020-03-13", 10) == DAYS[:10]
    assert sessions_after(CAL)("2020-03-06", "2020-03-09") == 1


def test_third_kill_day_within_ten_sessions_starts_a_quarantine():
    state, on = _kills([DAYS[0], DAYS[4], DAYS[9]])       # 1st, 5th and 10th session
    assert on == [False, False, True]
    assert state["quarantine"]["start"] == DAYS[9] and state["history"][-1]["event"] == "activated"
    _, on = _kills([DAYS[0], DAYS[4], DAYS[10]])          # the first left the window
    assert on == [False, False, False]


def test_quarantine_lasts_seven_sessions_then_expires():
    state, _ = _kills(DAYS[:3])
    after = sessions_after(CAL)
    days = [d.date().isoformat() for d in pd.bdate_range("2020-03-04", "2020-03-20")]
    seen = {d: q.status(state, d, after) for d in days}
    active = [d for d, s in seen.items() if s.active and s.kind == "quarantine"]
    assert active == ["2020-03-05", "2020-03-06", "2020-03-09", "2020-03-10", "2020-03-11",
                      "2020-03-12", "2020-03-13"]
    assert [seen[d].days_left for d in active] == [7, 6, 5, 4, 3, 2, 1]
    assert seen["2020-03-04"].kind is None  # the activation day itself is not quarantined


def test_a_quarantine_started_inside_another_keeps_its_start_day_covered():
    # 1st-3rd sessions start one (covering 4th..10th); 4th, 5th, 6th start the next on the 6th
    state, on = _kills(DAYS[:6])
    assert on == [False, False, True, False, False, True]
    after = sessions_after(CAL)
    start_day = q.status(state, DAYS[5], after)
    assert start_day.active and start_day.kind == "quarantine" and start_day.days_left == 5
    nxt = q.status(state, DAYS[6], after)
    assert nxt.days_left == 7 and nxt.start == DAYS[5]


def test_days_that_started_a_quarantine_do_not_count_again():
    state, on = _kills(DAYS[:4])
    assert on == [False, False, True, False]


def test_a_kill_day_puts_the_next_session_in_cool_off():
    state, _ = _kills([DAYS[0]])
    after = sessions_after(CAL)
    assert q.status(state, DAYS[1], after).kind == "kill_switch_cooloff"
    assert not q.status(state, DAYS[2], after).active


def _paths_with(tmp_path, days):
    paths = Paths(tmp_path)
    state, _ = _kills(days)
    q.save_state(paths, state)
    return paths


def test_override_rules(tmp_path):
    paths = _paths_with(tmp_path, DAYS[:3])
    settings = load_settings()
    at = f"{DAYS[3]}T12:00:00Z"
    with pytest.raises(q.QuarantineError, match="needs a reason"):
        q.clear_quarantine(paths, settings, at=at, by="ops", reason=" ", source="operator")
    with pytest.raises(q.QuarantineError, match="not allowed"):
        q.clear_quarantine(paths, settings, at=at, by="ops", reason="x", source="cron")
    with pytest.raises(q.QuarantineError, match="stay_demo=True"):
        q.clear_quarantine(paths, settings, at=at, by="SANITY_JUDGE", reason="x",
                           source="sanity_judge", answer={"stay_demo": True})
    assert q.status(q.load_state(paths), DAYS[3], sessions_after(CAL)).active
    new = q.clear_quarantine(paths, settings, at=at, by="alice", reason="data error, verified",
                             source="operator")
    assert not q.status(new, DAYS[3], sessions_after(CAL)).active
    assert new["history"][-1]["by"] == "alice" and new["history"][-1]["source"] == "operator"
    alert = read_alerts(paths)[-1]
    assert alert["code"] == "quarantine_cleared" and "alice" in alert["text"]
    with pytest.raises(q.QuarantineError, match="no quarantine"):
        q.clear_quarantine(paths, settings, at=at, by="alice", reason="again", source="operator")
    # cleared kill days do not start a new quarantine with one more
    state, on = q.record_kill_day(new, DAYS[5], window(CAL, DAYS[5], 10), q.Rules(), "t")
    assert not on


def test_sanity_judge_stay_demo_false_clears(tmp_path):
    paths = _paths_with(tmp_path, DAYS[:3])
    new = q.clear_quarantine(paths, load_settings(), at=f"{DAYS[2]}T20:00:00Z",
                             by="SANITY_JUDGE", reason="stay_demo: false", source="sanity_judge",
                             answer={"stay_demo": False})
    assert new["quarantine"]["cleared"]["source"] == "sanity_judge"


def test_live_refuses_unless_every_gate_holds(tmp_path):
    from tasks.execution.broker import PaperBroker
    from tasks.execution.runner import run_session

    paths = Paths(tmp_path)
    ok_env = {"REAL_EXECUTION_ENABLED": "true"}
    # no model here: the skill gate is switched off (tests/test_skill_gate.py covers it)
    good = load_settings(execution={"live_enabled": True, "broker_adapter": "fake"},
                         models={"skill": {"live_requires_skill": False}})
    ADAPTERS["fake"] = lambda p, s: PaperBroker(tmp_path / "fake.jsonl", s.execution.fill, 0.0)
    try:
        assert all(g.ok for g in live_gates(paths, good, DAYS[5], ok_env))
        no_skill_gate = {"skill": {"live_requires_skill": False}}
        cases = {
            "env REAL_EXECUTION_ENABLED": (good, {"REAL_EXECUTION_ENABLED": "false"}),
            "config execution.live_enabled": (load_settings(execution={"broker_adapter": "fake"},
                                                            models=no_skill_gate), ok_env),
            "broker adapter configured": (load_settings(execution={"live_enabled": True},
                                                        models=no_skill_gate), ok_env),
        }
        for name, (cfg, env) in cases.items():
            with pytest.raises(LiveGateError) as err:
                require_live(paths, cfg, DAYS[5], env)
            assert name in str(err.value) and "1 of 6 gates" in str(err.value)
        force_demo(paths, by="ops", reason="drill", at=f"{DAYS[5]}T12:00:00Z")
        with pytest.raises(LiveGateError, match="1 of 6 gates do not hold:\n  - demo not forced"):
            require_live(paths, good, DAYS[5], ok_env)
        # deleting the file no longer lifts a forced demo (it counts as forced): lift it
        operator_path(paths).unlink()
        with pytest.raises(LiveGateError, match="demo not forced by an operator: forced by "
                                                "state check: .*operator.json: missing"):
            require_live(paths, good, DAYS[5], ok_env)
        repair_overrides(paths, by="ops", reason="file lost", at=f"{DAYS[5]}T12:30:00Z")
        lift_demo(paths, by="ops", reason="drill over", at=f"{DAYS[5]}T13:00:00Z")
        q.save_state(paths, _kills(DAYS[:3])[0])
        with pytest.raises(LiveGateError, match="no active quarantine"):
            require_live(paths, good, DAYS[4], ok_env)
        with pytest.raises(LiveGateError, match="5 of 6 gates"):  # skill: no active model
            require_live(paths, load_settings(), DAYS[4], {})
        with pytest.raises(LiveGateError):  # run_session checks before doing anything
            run_session(paths, load_settings(), DAYS[5], mode="live")
        assert not (paths.data / "state" / "execution").exists()
    finally:
        ADAPTERS.pop("fake")


def test_go_live_stages_only_tighten():
    micro = stage_risk(load_settings(execution={"go_live_stage": "live_micro"}))
    assert micro.cap("core") == pytest.approx(0.225) and micro.name_cap("core") == pytest.approx(0.00375)
    assert micro.cap("penny") == pytest.approx(0.005) and not micro.allow_short
    limited = stage_risk(load_settings(execution={"go_live_stage": "live_limited"}))
    assert limited.cap("core") == 0.9 and limited.name_cap("fno") == pytest.approx(0.0035)
    assert stage_risk(load_settings()) == RiskSettings()
    with pytest.raises(ConfigError, match="only tightens"):
        load_settings(execution={"stages": {"live_micro": {"cap_scale": {"core": 1.5}}}})


@pytest.mark.parametrize("bad", [{"kill_switch_daily_loss": 0.03}, {"quarantine_kill_days": 4},
                                 {"quarantine_window_sessions": 5}, {"quarantine_sessions": 3}])
def test_execution_ceilings_cannot_be_loosened(bad):
    with pytest.raises(ConfigError, match="may only be tightened"):
        load_settings(execution=bad)
    load_settings(execution={"kill_switch_daily_loss": 0.01, "quarantine_sessions": 10})


prices = st.floats(min_value=1.0, max_value=500.0, allow_nan=False)


@st.composite
def bar_and_order(draw):
    lo = draw(prices)
    hi = lo * (1 + draw(st.floats(min_value=0, max_value=0.2)))
    o = draw(st.floats(min_value=lo, max_value=hi))
    c = draw(st.floats(min_value=lo, max_value=hi))
    vol = draw(st.one_of(st.just(math.nan), st.floats(min_value=0, max_value=1e7)))
    kind = draw(st.sampled_from(["market", "stop", "limit", "close"]))
    price = draw(st.floats(min_value=lo * 0.8, max_value=hi * 1.2)) if kind in ("stop", "limit") else None
    order = OrderRequest("o", "X", draw(st.sampled_from(["BUY", "SELL"])),
                         draw(st.integers(min_value=1, max_value=100_000)), kind, price)
    fm = FillModelSettings(half_spread_bps=draw(st.floats(0, 500)), impact_coef=draw(st.floats(0, 10)),
                           impact_exponent=draw(st.floats(0.1, 1)),
                           max_participation=draw(st.floats(0.01, 1)))
    return Bar("X", "t", o, hi, lo, c, vol), order, fm


@given(bar_and_order())
@hsettings(max_examples=300, deadline=None)
def test_fills_never_leave_the_bar_range(case):
    bar, order, fm = case
    fill = simulate_fill(order, bar, fm, 0.001)
    assert 0 <= fill.qty <= order.qty
    if fill.qty:
        assert bar.low <= fill.price <= bar.high
        assert fill.slippage >= 0 and fill.fee == pytest.approx(0.001 * fill.qty * fill.price)
    if math.isfinite(bar.volume) and order.kind != "close":
        assert fill.qty <= fm.max_participation * bar.volume + 1e-9


def test_slippage_grows_with_volatility_and_size():
    fm = FillModelSettings(half_spread_bps=0, impact_coef=1.0, impact_exponent=0.5,
                           max_participation=1.0)
    calm, wild = Bar("X", "t", 100, 100.5, 99.5, 100, 1e4), Bar("X", "t", 100, 103, 97, 100, 1e4)
    small, big = OrderRequest("a", "X", "BUY", 100), OrderRequest("b", "X", "BUY", 2500)
    p = {(b, o): simulate_fill(o, b, fm, 0).price for b in (calm, wild) for o in (small, big)}
    assert p[(calm, small)] < p[(calm, big)] and p[(calm, small)] < p[(wild, small)]
    assert p[(wild, big)] == pytest.approx(100 * (1 + 0.06 * 0.5))


steps = st.lists(st.tuples(st.floats(-0.05, 0.05), st.floats(0, 0.03)), min_size=1, max_size=60)


@given(steps)
@hsettings(max_examples=200, deadline=None)
def test_trailing_stop_never_moves_down_for_a_long(path):
    risk = RiskSettings()
    h = Holding("X", 10, 100.0, entry_price=100.0, atr=2.0, stop=96.4, take_profit=105.0,
                extreme=100.0)
    price = 100.0
    for ret, spread in path:
        price *= 1 + ret
        before = h.stop
        h = trail(h, Bar("X", "t", price, price * (1 + spread), price * (1 - spread), price, 1e6),
                  risk)
        assert h.stop >= before
        assert h.stop == 96.4 or h.stop >= 100.0  # trailing only once it reaches the entry
        assert h.stop == pytest.approx(max(96.4, h.stop))


def test_r_multiple_by_hand():
    """Entry 50 x 20, initial stop 47.5 (5%), exits 10 at 55 and 10 at 52 with 1.0 fees each:
    P&L 100 + 40 - 2 = 138; risk = 50 x 0.05 x 20 = 50; R = 2.76."""
    base = {"session": "2020-03-09", "symbol": "X", "direction": "BUY", "mode": "demo",
            "episode_id": "e1"}
    recs = [
        {**base, "event": "fill", "timestamp": "t0", "qty": 20, "entry_price": 50.0,
         "stop_frac": 0.05, "stop": 47.5},
        {**base, "event": "exit", "timestamp": "t1", "direction": "SELL", "qty": 10,
         "exit_price": 55.0, "pnl": 49.0, "position_left": 10, "purpose": "take_profit"},
        {**base, "event": "exit", "timestamp": "t2", "direction": "SELL", "qty": 10,
         "exit_price": 52.0, "pnl": 19.0 + 70.0, "position_left": 0, "purpose": "stop"},
    ]
    eps = episodes_from_records(recs)
    assert len(eps) == 1
    row = eps.iloc[0]
    assert row["pnl"] == pytest.approx(138.0) and row["size"] == 20
    assert row["exit_price"] == pytest.approx(53.5) and row["exit_reason"] == "stop"
    assert row["r_multiple"] == pytest.approx(138.0 / 50.0)
    assert math.isnan(r_multiple(10.0, 50.0, None, 20))
    assert episodes_from_records(recs[:2]).empty  # not closed yet
