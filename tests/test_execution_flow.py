"""The intraday flow as a real Prefect flow run, the commands, and a replay with intraday that
keeps the live state untouched while each plan sees the book the previous session left."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from tasks.execution.tradelog import verify
from tasks.paths import Paths, SandboxPaths


@pytest.fixture
def home(trained_copy, monkeypatch) -> Paths:
    monkeypatch.setenv("COLUMNS", "300")
    return trained_copy


def test_daily_then_intraday_flow_then_the_next_plan_sees_the_book(home):
    from flows.daily import daily
    from flows.intraday import intraday

    with prefect_test_harness(server_startup_timeout=120):
        plan = daily(as_of="2021-12-28")
        n_plan = plan.n_orders
        state = intraday(session="2021-12-29", return_state=True)
        assert state.is_completed(), state
        res = state.result()
        again = intraday(session="2021-12-29")
        nxt = daily(as_of="2021-12-29")
    s = res.summary
    assert not res.cached and again.cached and again.summary == s
    assert s["session"] == "2021-12-29" and s["mode"] == "demo"
    assert s["orders"] >= n_plan and s["model_id"] == "b-demo"
    assert s["bars"]["source"].startswith("SIMULATION")
    assert verify(home).ok
    book = json.loads((home.data / "state" / "portfolio.json").read_text())
    assert book["as_of_session"] == "2021-12-29"
    health = json.loads(Path(nxt.outputs["health"]).read_text())
    assert health["book"]["source"] == str(home.data / "state" / "portfolio.json")
    assert health["net_liquidity"] == pytest.approx(s["end_net_liquidity"])

    out = CliRunner().invoke(app, ["status", "--json"])
    assert out.exit_code == 0, out.output
    st = json.loads(out.output)
    assert st["last_session"] == "2021-12-29" and st["mode"] == "demo"
    assert len(st["positions"]) == len(book["positions"]) and "day_pnl_pct" in st
    assert st["kill_switch"]["tripped"] is False and st["quarantine"]["active"] is False
    # the last gate: the active demo baseline has no measured skill
    assert [g["ok"] for g in st["live_gates"]] == [False, False, True, True, False, False]
    text = CliRunner().invoke(app, ["status"])
    assert text.exit_code == 0 and "kill switch: armed" in text.output


def test_live_command_lists_every_failing_gate(home):
    res = CliRunner().invoke(app, ["run", "intraday", "--date", "2021-12-29", "--mode", "live"])
    assert res.exit_code == 2
    text = res.output.replace("\n", " ")
    assert "4 of 6 gates do not hold" in text
    for gate in ("env REAL_EXECUTION_ENABLED", "config execution.live_enabled",
                 "broker adapter configured", "active model has measured skill"):
        assert gate in text
    assert not (home.data / "state" / "execution").exists()


def test_operator_override_needs_a_reason(home):
    res = CliRunner().invoke(app, ["quarantine", "clear", "--by", "alice", "--reason", " "])
    assert res.exit_code == 2 and "needs a reason" in res.output


def test_replay_with_intraday_keeps_live_state_and_chains_the_book(home):
    from flows.replay import run_replay

    live = home.data / "state"
    res = run_replay("2021-11-01", "2021-11-19", with_intraday=True)
    assert not live.exists(), "a replay must not write the live state"
    box = SandboxPaths(home.home, res.state_root)
    assert res.state_root == home.reports / "replay" / "2021-11-01_2021-11-19" / "sandbox"
    eq = pd.read_csv(res.equity_path)
    assert len(eq) == res.sessions - 1 and (res.equity_path.with_suffix(".png")).is_file()
    summary = json.loads(res.summary_path.read_text())
    assert summary["intraday"]["sessions"] == len(eq)
    table = pd.read_csv(res.table_path)
    assert {"day_pnl_pct", "kill_switch", "fills"} <= set(table.columns)
    sessions = sorted((box.data / "state" / "sessions").glob("*.json"))
    for path in sessions:
        day = json.loads(path.read_text())
        health = json.loads((box.reports / "health" / f"daily_health_{day['session']}.json")
                            .read_text())
        assert health["book"]["source"] == str(box.data / "state" / "portfolio.json")
        assert health["net_liquidity"] == pytest.approx(day["end_net_liquidity"])
    assert verify(box).ok
    assert any((box.reports / "nightly").glob("*.json"))
    plans = {p.parent.name: p.read_bytes() for p in (box.val / "plans").glob("*/trade_plan.csv")}
    again = run_replay("2021-11-01", "2021-11-19", with_intraday=True)  # from an empty root again
    assert again.equity_path.read_bytes() == res.equity_path.read_bytes()
    assert {p.parent.name: p.read_bytes() for p in (box.val / "plans").glob("*/trade_plan.csv")
            } == plans
