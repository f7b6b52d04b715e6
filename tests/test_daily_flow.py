"""The daily flow and the replay run as real Prefect flows on a real (temporary) Prefect server."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.daily import daily, resolve_as_of
from flows.replay import replay
from tasks.models.registry import RegistryError, promote
from tasks.paths import Paths
from tasks.plan import runs
from tests.plan_checks import assert_plan_sane


def test_prefect_server_imports_with_pinned_fastapi():
    """Prefect's API server must import (a FastAPI release breaks it; see pyproject pins)."""
    import prefect.server.api.server as server

    assert server.create_app is not None


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def home(trained_copy) -> Paths:
    return trained_copy


def test_daily_flow_writes_plan_health_and_reports(home, harness):
    state = daily(as_of="2021-12-30", return_state=True)
    assert state.is_completed(), state
    res = state.result()
    assert res.as_of == "2021-12-30" and not res.cached
    plan = pd.read_csv(res.outputs["plan"])
    health = json.loads(Path(res.outputs["health"]).read_text())
    assert_plan_sane(plan, health["net_liquidity"])
    assert (plan["policy_version"].str.startswith("pol-")).all()
    assert (plan["model_id"] == "b-demo").all()
    assert {"summary", "metrics", "net_liquidity"} <= set(health)
    assert {"quality", "coverage", "regime", "drift", "exposure"} <= set(health["metrics"])
    assert health["summary"]["status"] in ("OK", "WARNING")
    cov = health["metrics"]["coverage"]
    assert cov["scored"] >= 15 and cov["orders"] == len(plan)
    exp = health["metrics"]["exposure"]
    assert exp["gross"] == pytest.approx(plan["position_cash"].sum() / health["net_liquidity"])
    audit = pd.read_parquet(res.outputs["audit"])
    assert len(audit) == cov["scored"] and audit["reasons"].str.len().gt(0).all()
    assert set(audit.loc[audit["taken"], "symbol"]) == set(plan["ticker"])
    signals = pd.read_parquet(res.outputs["signals"])
    assert {"edge_short", "edge_mid", "gate", "score", "action", "signal"} <= set(signals)
    html = Path(res.outputs["report"]).read_text()
    assert "Trade plan" in html and "<svg" in html
    assert Path(home.val / "trade_plan.csv").read_text() == Path(res.outputs["plan"]).read_text()
    # the health quality check compares realised outcomes with the baseline's validation
    q = health["metrics"]["quality"]["by_horizon"]["short"]
    assert q["n"] > 0 and q["baseline_brier"] > 0
    # the demo baseline has no measured skill: carried in the health JSON, and a WARNING
    skill = health["model_skill"]
    assert skill["verdict"] == "no_skill" and skill["baseline"] == "b-demo"
    assert skill["horizon"] == "short" and skill["ic_t"] is not None
    assert health["summary"]["status"] == "WARNING"
    assert any(w.startswith("model skill: active baseline b-demo verdict no_skill")
               for w in health["summary"]["warnings"])


def test_rerun_is_free_and_force_is_byte_identical(home, harness):
    first = daily(as_of="2021-12-30")
    before = {k: (Path(p).read_bytes(), Path(p).stat().st_mtime_ns)
              for k, p in first.outputs.items()}
    again = daily(as_of="2021-12-30")
    assert again.cached
    forced = daily(as_of="2021-12-30", force=True)
    assert not forced.cached
    for key, (data, mtime) in before.items():
        path = forced.outputs[key]
        assert Path(path).read_bytes() == data, key
        assert Path(path).stat().st_mtime_ns == mtime, f"{key} rewritten"


def test_health_error_writes_an_empty_plan_and_says_why(home, harness, monkeypatch):
    monkeypatch.setenv("HCP_HEALTH__MIN_SIGNALS", "500")
    res = daily(as_of="2021-12-30")
    assert res.status == "ERROR" and res.n_orders == 0
    assert any("scored symbols < 500" in e for e in res.errors)
    assert pd.read_csv(res.outputs["plan"]).empty
    audit = pd.read_parquet(res.outputs["audit"])
    assert audit["reasons"].str.contains("health:stop_trading").any()
    assert not audit["taken"].any()


def test_shadow_is_scored_side_by_side_and_never_trades(home, harness):
    alone = daily(as_of="2021-12-30")
    promote(home, "b-demo", "shadow", "2026-01-02T00:00:00+00:00")
    both = daily(as_of="2021-12-30")
    assert not both.cached  # the shadow id is part of the run key
    shadow = pd.read_parquet(both.outputs["shadow"])
    assert {"shadow_model_id", "shadow_p_cal_short", "shadow_signal"} <= set(shadow)
    assert Path(both.outputs["plan"]).read_text() == Path(alone.outputs["plan"]).read_text()


def test_two_runs_of_one_session_cannot_interleave(home, harness):
    with runs.session_lock(home, "2021-12-30"):
        state = daily(as_of="2021-12-30", return_state=True)
    assert state.is_failed()
    with pytest.raises(runs.RunLocked, match="in progress"):
        state.result()


def test_daily_flow_refuses_stale_data(home, harness):
    state = daily(as_of="2022-01-07", return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="stale data"):
        state.result()


def test_replay_is_point_in_time_repeatable_and_matches_daily(home, harness):
    res = replay(start="2021-07-01", end="2021-07-30")
    assert res.sessions == 21 and res.skipped == 0
    summary = json.loads(res.summary_path.read_text())
    assert summary["sessions"] == 21
    table = pd.read_csv(res.table_path)
    plans = {row.date: Path(row.plan).read_bytes() for row in table.itertuples()}
    for raw in plans.values():
        assert_plan_sane(pd.read_csv(BytesIO(raw)), 100_000.0)
    assert sum(len(pd.read_csv(BytesIO(raw))) for raw in plans.values()) > 0   # not all empty
    again = replay(start="2021-07-01", end="2021-07-30", force=True)
    assert again.skipped == 0
    for row in pd.read_csv(again.table_path).itertuples():
        assert Path(row.plan).read_bytes() == plans[row.date], row.date
    # the daily flow for the first replayed session decides exactly as the replay did
    replayed = json.loads((Path(res.state_root) / "reports" / "health"
                           / "daily_health_2021-07-01.json").read_text())
    first = daily(as_of="2021-07-01", force=True)
    assert Path(first.outputs["plan"]).read_bytes() == plans["2021-07-01"]
    # ... and reports the same model skill (one code path: tasks.health.checks)
    daily_health = json.loads(Path(first.outputs["health"]).read_text())
    assert daily_health["model_skill"]["verdict"] == "no_skill"
    assert replayed["model_skill"] == daily_health["model_skill"]


def test_replay_refuses_a_model_trained_on_the_span(home, harness):
    state = replay(start="2021-06-01", end="2021-06-30", return_state=True)
    assert state.is_failed()
    with pytest.raises(RegistryError, match="trained on bars up to 2021-06-30"):
        state.result()


def test_resolve_as_of(trained_home):
    cal = "XNYS"
    assert resolve_as_of(None, trained_home.store, cal) == pd.Timestamp("2021-12-31")
    monday = pd.Timestamp("2024-07-08")
    assert resolve_as_of("previous-session", trained_home.store, cal, today=monday) == \
        pd.Timestamp("2024-07-05")
    with pytest.raises(ValueError, match="not a date"):
        resolve_as_of("yesterday-ish", trained_home.store, cal)


def test_prefect_yaml_deployments_point_at_real_flows():
    import importlib

    import yaml
    from prefect import Flow

    from tasks.settings import PROJECT_ROOT

    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    names = {dep["name"] for dep in spec["deployments"]}
    assert {"daily-premarket", "replay"} <= names
    for dep in spec["deployments"]:
        path, name = dep["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, name), Flow), dep["entrypoint"]
        for sched in dep.get("schedules") or []:
            assert sched["timezone"] == "America/New_York"
            assert len(sched["cron"].split()) == 5


def test_daily_flow_with_a_usable_size_hint_raises_no_rl_alert(home, harness, monkeypatch):
    """A registered hint that passed its gate: the plan is sized by it (no RL-missing halving,
    no rl_missing alert), every row names the hint's version, and the health says so."""
    from tasks.alerts import read_alerts
    from tasks.plan import sizehint as sh
    from tests.test_size_hint import register

    monkeypatch.setenv("HCP_FUSION__ZERO_UNSKILLED_HORIZONS", "false")  # the demo has no skill
    hid = register(home, usable=True)
    state = daily(as_of="2021-12-30", return_state=True)
    assert state.is_completed(), state
    res = state.result()
    health = json.loads(Path(res.outputs["health"]).read_text())
    assert health["size_hint"]["case"] == "used" and health["size_hint"]["hint_id"] == hid
    assert not any(w.startswith("RL models unavailable") for w in health["summary"]["warnings"])
    assert "rl_missing" not in {a["code"] for a in read_alerts(home, "2021-12-30")}
    plan = pd.read_csv(res.outputs["plan"])
    assert len(plan) > 0
    assert plan["reason_tags"].str.contains(f",{hid})", regex=False).all()
    assert not plan["reason_tags"].str.contains("rl_missing").any()
    html = Path(res.outputs["report"]).read_text()
    assert f"size hint used ({hid})" in html and "by the learned size hint" in html
    signals = pd.read_parquet(res.outputs["signals"])
    assert signals["size_mult"].isin(sh.SizeHint.from_json(
        json.loads((sh.hints_dir(home) / hid / "hint.json").read_text())["model"]).arms).all()
