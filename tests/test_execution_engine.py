"""The intraday engine on hand-built sessions: kill switch, flatten, halted entries, stops,
stalls, partial fills, R-multiples, failure modes and idempotent re-runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.alerts import read_alerts
from tasks.execution.runner import run_session
from tasks.execution.state import load_portfolio
from tasks.paths import Paths
from tasks.state import load_book, load_episodes
from tests.exec_helpers import (
    PREV,
    SESSION,
    bars,
    plan_row,
    records,
    settings,
    write_book,
    write_plan,
)


def _carried(tmp_path, close: float):
    """Cash 50,000 and 500 A at 100 (no stops): bar 0 closes at ``close``."""
    paths = Paths(tmp_path)
    write_book(paths, 50_000.0, [{"symbol": "A", "qty": 500, "price": 100.0}])
    frame = bars(SESSION, {"A": [(100.0, 100.0, min(close, 100.0), close), (close, close, close, close)]})
    return paths, frame


@pytest.mark.parametrize(("close", "trips"), [(95.02, False), (95.0, True), (94.98, True)])
def test_kill_switch_at_the_boundary(tmp_path, close, trips):
    """-2.49% does not trip; -2.50% (exactly) and -2.51% do, at the bar that reaches them."""
    paths, frame = _carried(tmp_path, close)
    res = run_session(paths, settings(), SESSION, bars=frame)
    s = res.summary
    assert s["kill_switch"] is trips
    if trips:
        assert s["kill_switch_at"] == "2020-03-09T13:35:00Z"
        assert s["kill_switch_detail"]["day_pnl"] == pytest.approx(500 * (close - 100.0))
        assert [a["code"] for a in read_alerts(paths)] == ["kill_switch"]
        assert read_alerts(paths)[0]["text"].startswith("Kill-switch armed—flattened")
    else:
        assert s["kill_switch_at"] is None and s["positions_end"] == 1


def test_flatten_leaves_no_position_and_the_next_plan_sees_it(tmp_path):
    paths = Paths(tmp_path)
    write_book(paths, 40_000.0, [{"symbol": "A", "qty": 300, "price": 100.0},
                                 {"symbol": "B", "qty": 600, "price": 50.0, "sector": "Energy"}])
    frame = bars(SESSION, {"A": [(100, 100, 90, 90), (90, 91, 89, 90)],
                           "B": [(50, 50, 45, 45), (45, 46, 44, 45)]})
    res = run_session(paths, settings(), SESSION, bars=frame)
    assert res.summary["kill_switch"] and res.summary["positions_end"] == 0
    book, _ = load_book(paths, settings())
    assert book.positions == {}
    assert book.net_liquidity == pytest.approx(res.summary["end_net_liquidity"])
    exits = [r for r in records(paths) if r["event"] == "exit"]
    assert {r["symbol"] for r in exits} == {"A", "B"}
    assert all(r["purpose"] == "flatten" and r["timestamp"] == "2020-03-09T13:40:00Z" for r in exits)
    assert all(r["position_left"] == 0 for r in exits)


def test_entries_refused_and_exits_allowed_while_halted(tmp_path):
    """After the trip a plan entry is refused, while the flatten and a plan exit still fill."""
    paths = Paths(tmp_path)
    write_book(paths, 40_000.0, [{"symbol": "A", "qty": 500, "price": 100.0},
                                 {"symbol": "C", "qty": 100, "price": 20.0}])
    write_plan(paths, PREV, [plan_row("B", 10, 50.0, 1.0), plan_row("C", 100, 20.0, 0.5, "SELL")])
    frame = bars(SESSION, {"A": [(100, 100, 94, 94), (94, 95, 93, 94)],
                           "B": [(50, 51, 49, 50)], "C": [(20, 20, 19.5, 19.8)]},
                 start={"B": 2, "C": 2})
    res = run_session(paths, settings(), SESSION, bars=frame)
    assert res.summary["kill_switch_at"] == "2020-03-09T13:35:00Z"
    recs = records(paths, SESSION)
    refused = [r for r in recs if r["symbol"] == "B"]
    assert [r["event"] for r in refused] == ["cancel"]
    assert "halted:kill_switch" in refused[0]["reason_tags"]
    assert not [r for r in recs if r["event"] == "fill"]
    exits = {r["symbol"]: r for r in recs if r["event"] == "exit"}
    assert set(exits) == {"A", "C"} and exits["C"]["timestamp"] == "2020-03-09T13:45:00Z"
    assert res.summary["positions_end"] == 0


def test_stops_take_profit_and_r_multiple_by_hand(tmp_path):
    """Entry 100, ATR 2: stop 96.4, take-profit 105. The take-profit fills at 105 (no costs):
    R = (105 - 100) x 10 / (100 x 0.036 x 10) = 2.5 / 1.8."""
    paths = Paths(tmp_path)
    write_plan(paths, PREV, [plan_row("X", 10, 100.0, 2.0)])
    frame = bars(SESSION, {"X": [(100, 100.5, 99.8, 100.2), (100.2, 104, 100, 103.9),
                                 (103.9, 105.5, 103.5, 105.2)]})
    res = run_session(paths, settings(), SESSION, bars=frame)
    recs = records(paths, SESSION)
    fill = next(r for r in recs if r["event"] == "fill")
    assert fill["entry_price"] == 100.0 and fill["stop"] == pytest.approx(96.4)
    assert fill["take_profit"] == pytest.approx(105.0)
    exit_ = next(r for r in recs if r["event"] == "exit")
    assert exit_["purpose"] == "take_profit" and exit_["exit_price"] == pytest.approx(105.0)
    eps, _ = load_episodes(paths)
    assert len(eps) == 1
    assert eps["r_multiple"].iloc[0] == pytest.approx(2.5 / 1.8)
    assert eps["pnl"].iloc[0] == pytest.approx(50.0) and eps["exit_date"].iloc[0] == SESSION
    assert res.summary["day_pnl"] == pytest.approx(50.0)


def test_trailing_stop_exit_and_gap_through_the_stop(tmp_path):
    """X rallies (the stop trails to high - 1.2 ATR and never falls), then drops through it;
    Y gaps below its stop and fills at the open, not at the stop."""
    paths = Paths(tmp_path)
    write_plan(paths, PREV, [plan_row("X", 10, 100.0, 2.0), plan_row("Y", 10, 50.0, 1.0)])
    frame = bars(SESSION, {
        "X": [(100, 100, 100, 100), (100, 104, 100, 104), (104, 104, 103, 103.5),
              (103.5, 103.5, 101, 101)],
        "Y": [(50, 50, 50, 50), (50, 50, 48.5, 48.5), (47.5, 47.6, 47, 47.2)]})
    run_session(paths, settings(), SESSION, bars=frame)
    exits = {r["symbol"]: r for r in records(paths, SESSION) if r["event"] == "exit"}
    assert exits["X"]["purpose"] == "stop"
    assert exits["X"]["exit_price"] == pytest.approx(104 - 1.2 * 2.0)  # trailed stop 101.6
    assert exits["Y"]["purpose"] == "stop" and exits["Y"]["exit_price"] == pytest.approx(47.5)


def test_partial_fills_work_an_entry_over_bars_as_one_lot(tmp_path):
    paths = Paths(tmp_path)
    write_plan(paths, PREV, [plan_row("X", 25, 40.0, 1.0)])
    frame = bars(SESSION, {"X": [(40, 40.2, 39.9, 40)] * 4}, volume=100.0)  # 10 a bar at 10%
    run_session(paths, settings(), SESSION, bars=frame)
    recs = records(paths, SESSION)
    fills = [r for r in recs if r["event"] == "fill"]
    assert [r["qty"] for r in fills] == [10, 10, 5]
    assert [r["status"] for r in fills] == ["partial", "partial", "filled"]
    held = load_portfolio(paths, settings()).holdings["X"]
    assert held.qty == 25 and held.lots == 1


def test_data_stall_cancels_entries_and_keeps_stops(tmp_path):
    paths = Paths(tmp_path)
    write_book(paths, 90_000.0, [{"symbol": "A", "qty": 100, "price": 100.0, "entry_price": 100.0,
                                  "atr": 2.0, "stop": 96.4, "take_profit": 105.0,
                                  "extreme": 100.0, "stop_frac": 0.036, "episode_id": "e1"}])
    write_plan(paths, PREV, [plan_row("B", 10, 50.0, 1.0)])
    frame = bars(SESSION, {"A": [(100, 100, 99, 99), (99, 99, 98, 98)], "B": [(50, 50, 50, 50)]},
                 start={"B": 9})
    late = frame["ts"] > pd.Timestamp("2020-03-09T13:40:00Z")
    frame.loc[late, "ts"] = frame.loc[late, "ts"] + pd.Timedelta(minutes=20)  # a 25-minute gap
    frame.loc[frame["symbol"] == "A", ["open", "high", "low", "close"]] = frame.loc[
        frame["symbol"] == "A", ["open", "high", "low", "close"]].where(~late, 95.0)
    frame = frame.loc[frame["ts"] <= pd.Timestamp("2020-03-09T21:00:00Z")]
    res = run_session(paths, settings(), SESSION, bars=frame)
    assert res.summary["stalled"]
    assert any(a["code"] == "data_stall" for a in read_alerts(paths))
    recs = records(paths, SESSION)
    assert [r["event"] for r in recs if r["symbol"] == "B"] == ["cancel"]
    assert "stall:data" in next(r for r in recs if r["symbol"] == "B")["reason_tags"]
    stop = next(r for r in recs if r["event"] == "exit")
    assert stop["symbol"] == "A" and stop["purpose"] == "stop"


def test_rerun_of_a_finished_session_changes_nothing(tmp_path):
    paths = Paths(tmp_path)
    write_plan(paths, PREV, [plan_row("X", 10, 100.0, 2.0)])
    frame = bars(SESSION, {"X": [(100, 101, 99, 100.5)]})
    first = run_session(paths, settings(fee=0.0005), SESSION, bars=frame)
    state = paths.data / "state"
    before = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
    again = run_session(paths, settings(fee=0.0005), SESSION, bars=frame)
    assert again.cached and again.summary == first.summary
    assert {p: p.read_bytes() for p in state.rglob("*") if p.is_file()} == before
    other = bars(SESSION, {"X": [(100, 102, 99, 100.5)]})
    with pytest.raises(ValueError, match="other inputs"):
        run_session(paths, settings(fee=0.0005), SESSION, bars=other)
    with pytest.raises(ValueError, match="sessions run in order"):
        run_session(paths, settings(fee=0.0005), PREV, bars=frame.assign(
            ts=frame["ts"] - pd.Timedelta(days=3)))


def test_session_summary_and_equity_have_the_contract_fields(tmp_path):
    paths = Paths(tmp_path)
    write_plan(paths, PREV, [plan_row("X", 10, 100.0, 2.0, tags="size:rl_missing(x0.5);clamp:x")])
    run_session(paths, settings(fee=0.0005), SESSION, bars=bars(SESSION, {"X": [(100, 101, 99, 100.5)]}))
    s = json.loads((paths.data / "state" / "sessions" / f"{SESSION}.json").read_text())
    for key in ("session", "mode", "start_net_liquidity", "end_net_liquidity", "day_pnl",
                "day_pnl_pct", "pnl_by_bucket", "turnover", "kill_switch", "kill_switch_at",
                "orders", "fills", "clamps_fired", "policy_version", "model_id"):
        assert key in s, key
    assert set(s["pnl_by_bucket"]) == {"core", "penny", "fno", "sip"}
    assert sum(s["pnl_by_bucket"][b] for b in ("core", "penny", "fno")) == pytest.approx(
        s["day_pnl_pct"])
    assert s["turnover"] == pytest.approx(10 * 100 / 100_000) and s["model_id"] == "m-test"
    eq = pd.read_parquet(paths.data / "state" / "equity.parquet")
    assert list(eq.columns) == ["session", "start_net_liquidity", "end_net_liquidity",
                                "day_pnl_pct", "drawdown", "kill_switch"]
    assert eq["session"].tolist() == [SESSION] and (eq["drawdown"] >= 0).all()
    assert any(a["code"] == "rl_missing" for a in read_alerts(paths))
    rec = records(paths, SESSION)[0]
    for key in ("timestamp", "mode", "symbol", "direction", "size_pre", "size_post_risk",
                "entry_price", "exit_price", "reason_tags", "policy_version", "model_id", "qty",
                "pnl", "session", "event", "hash", "prev"):
        assert key in rec, key


def test_sanity_judge_hook_failure_and_override(tmp_path):
    """A hook that raises never stops the flatten (remote failure alerted); a stay_demo: false
    answer clears the next session's cool-off through clear_quarantine."""
    from tasks.execution import quarantine

    paths, frame = _carried(tmp_path / "a", 94.0)

    def broken(p, s, call):
        raise ConnectionError("remote down")

    res = run_session(paths, settings(), SESSION, bars=frame, sanity_judge=broken)
    assert res.summary["positions_end"] == 0
    detail = res.summary["kill_switch_detail"]["sanity_judge"]
    assert detail["status"] == "error" and "remote down" in detail["error"]
    assert "remote_unavailable" in [a["code"] for a in read_alerts(paths)]

    paths2, frame2 = _carried(tmp_path / "b", 94.0)
    calls = []

    def judge(p, s, call):
        calls.append(call)
        return {"stay_demo": False, "reason": "losses were market-wide", "backend": "remote"}

    run_session(paths2, settings(), SESSION, bars=frame2, sanity_judge=judge)
    req = calls[0].request
    assert set(req) == {"timestamp", "kill_switch_reason", "recent_trades", "portfolio_state"}
    assert req["portfolio_state"]["daily_pnl"] == pytest.approx(-0.03)
    state = quarantine.load_state(paths2)
    assert state["cooloff"]["cleared"]["source"] == "sanity_judge"
    assert "quarantine_cleared" in [a["code"] for a in read_alerts(paths2)]


@pytest.mark.parametrize(("max_position_pct", "held"), [(None, 15), (0.005, 5)])
def test_the_policy_in_force_tightens_the_intraday_clamps(tmp_path, max_position_pct, held):
    """A SANITY_JUDGE per-name cap in the current policy binds entries as the daily plan's does."""
    from tasks.policy import current_policy, save_policy

    paths, cfg = Paths(tmp_path), settings()
    if max_position_pct is not None:
        policy, version = current_policy(paths, cfg)
        save_policy(paths, policy.replace(live_changes={"max_position_pct": max_position_pct}),
                    version, "test", f"{PREV}T20:00:00Z")
    write_plan(paths, PREV, [plan_row("X", 15, 100.0, 2.0)])  # 1,500 = 1.5% of 100,000
    run_session(paths, cfg, SESSION, bars=bars(SESSION, {"X": [(100, 100.5, 99.5, 100)]}))
    assert {h.qty for h in load_portfolio(paths, cfg).holdings.values()} == {held}
