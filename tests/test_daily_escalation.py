"""The daily flow escalates before fusion, and the nightly flow writes the post-mortem.

The remote endpoint is a local fake OpenAI server; the regime trigger is forced by config
(thresholds 0 and 1), the local reasoner is the template. Checked: the bounded answer becomes
a new policy version that D's plan carries and that passes the clamps; a re-run (cached or
forced) sends no request and writes the same bytes; no backend answering changes nothing and
raises the alert; the API key is in no written file; the post-mortem states its facts and who
wrote the narrative.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.daily import daily
from flows.nightly import nightly
from tasks.alerts import read_alerts
from tasks.escalation.budget import read_budget
from tasks.escalation.record import read_record
from tasks.execution.tradelog import TradeLog
from tasks.paths import Paths
from tasks.policy import list_versions
from tasks.settings import load_settings
from tests.llm_fakes import FakeServer, completion
from tests.plan_checks import assert_plan_sane

DAY = "2021-12-30"
FAKE_KEY = "sk-test-FAKE-KEY-d0n0tleak-7f3a9c"


def regime_answer(symbols: list[str]) -> str:
    return json.dumps({"regime_label": "volatile",
                       "blend_weights_delta": {"short": 0.9, "mid": -0.05, "rl": -0.3},
                       "bucket_caps_delta": {"penny": -0.5, "fno": 0.3, "core": -0.02},
                       "do_not_trade_list": [*symbols, "NOTREAL", "drop table;"]})


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def fake():
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def home(trained_copy, monkeypatch, fake) -> Paths:
    paths = trained_copy
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("HCP_REMOTE_BASE_URL", fake.url + "/v1")
    monkeypatch.setenv("HCP_LOCAL_BACKEND", "template")
    monkeypatch.setenv("HCP_ESCALATION__REGIME_VOL_Z", "0")
    monkeypatch.setenv("HCP_ESCALATION__REGIME_CORR", "1")
    return paths


def universe(home: Paths) -> list[str]:
    from tasks.data.store import load_constituents

    return sorted(load_constituents(home.store)["symbol"].astype(str))


def test_escalation_applies_bounded_deltas_and_reruns_make_no_call(home, harness, fake):
    banned = universe(home)[:2]
    fake.push(("json", completion(regime_answer([banned[0].lower(), banned[1]]))))
    first = daily(as_of=DAY)
    assert len(fake.requests) == 1
    sent = fake.requests[0]
    assert sent["response_format"]["type"] == "json_schema" and "tools" not in sent
    assert fake.headers[0]["authorization"] == f"Bearer {FAKE_KEY}"

    health = json.loads(Path(first.outputs["health"]).read_text())
    call = health["escalation"]["calls"][0]
    assert call["call_type"] == "REGIME_AUDITOR" and call["status"] == "applied"
    new = call["policy_after"]
    assert new != call["policy_before"] and health["policy_version"] == new
    plan = pd.read_csv(first.outputs["plan"])
    assert (plan["policy_version"] == new).all()
    assert not plan["ticker"].isin(banned).any()
    assert_plan_sane(plan, health["net_liquidity"])
    report = Path(first.outputs["report"]).read_text()
    assert "<h2>Escalation</h2>" in report and "REGIME_AUDITOR: applied" in report

    entry = read_record(home, DAY)["calls"][0]
    clipped = {c["field"] for c in entry["bounded"]["clipped"]}
    assert {"blend_weights_delta.short", "blend_weights_delta.rl", "bucket_caps_delta.penny",
            "bucket_caps_delta.fno"} <= clipped
    rejected = {r["proposed"]: r["reason"] for r in entry["bounded"]["rejected"]}
    assert rejected["NOTREAL"].startswith("unknown symbol")
    assert rejected["drop table;"] == "not a ticker symbol"
    assert entry["changes"]["bucket_caps"]["penny"] == 0.0  # -0.5 clipped to -0.05, floor 0
    assert entry["changes"]["bucket_caps"]["fno"] == 0.05   # never above the hard cap
    assert entry["changes"]["do_not_trade"] == banned
    assert read_budget(home, DAY, 3)["used"] == 1

    before = {k: Path(p).read_bytes() for k, p in first.outputs.items()}
    again = daily(as_of=DAY)
    assert again.cached and len(fake.requests) == 1
    forced = daily(as_of=DAY, force=True)
    assert not forced.cached and len(fake.requests) == 1
    for key, data in before.items():
        assert Path(forced.outputs[key]).read_bytes() == data, key
    versions = list_versions(home, load_settings())
    assert [v["version"] for v in versions if v["current"]] == [new]
    codes = [a["code"] for a in read_alerts(home, DAY)]
    assert codes.count("escalation") == 1 and set(codes) == {"escalation", "rl_missing"}

    nightly(date=DAY)
    md = (home.reports / "postmortems" / f"{DAY}.md").read_text()
    assert f"No execution record for {DAY}" in md
    assert "Narrative written by **template**" in md
    assert "REGIME_AUDITOR: applied (answered by remote:gpt-5)" in md
    assert "rejected do_not_trade_list: NOTREAL" in md and "```diff" in md
    html = (home.reports / "postmortems" / f"{DAY}.html").read_text()
    assert "drop table;" in html and "<script" not in html
    md_bytes = md.encode()
    nightly(date=DAY)
    assert (home.reports / "postmortems" / f"{DAY}.md").read_bytes() == md_bytes
    leaked = [p for p in home.home.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == []


def test_no_valid_answer_anywhere_changes_nothing_and_alerts(home, harness, fake):
    fake.push(("status", 500))
    res = daily(as_of=DAY)
    health = json.loads(Path(res.outputs["health"]).read_text())
    call = health["escalation"]["calls"][0]
    assert call["status"] == "no_opinion" and call["policy_after"] == call["policy_before"]
    assert any("no backend gave a valid answer" in w for w in health["summary"]["warnings"])
    attempts = read_record(home, DAY)["calls"][0]["attempts"]
    assert [(a["backend"], a["status"]) for a in attempts] == [
        ("remote:gpt-5", "server_error"), ("template", "declined")]
    codes = [a["code"] for a in read_alerts(home, DAY)]
    assert [c for c in codes if c != "rl_missing"] == [
        "escalation", "remote_unavailable", "escalation_no_change"]
    assert len(list_versions(home, load_settings())) == 1


def test_postmortem_states_execution_facts_when_state_exists(home, harness, fake):
    monkey_state(home)
    fake.push(("json", completion(regime_answer([]))))
    fake.push(("json", completion(json.dumps({
        "reward_coefficients": {"returns": 0.9, "turnover": 0.3, "drawdown": -0.2},
        "turnover_penalties": {"penalty_rate": 0.5},
        "disabled_features": ["news_sentiment", "rsi_14", "made_up"]}))))
    res = daily(as_of=DAY)
    health = json.loads(Path(res.outputs["health"]).read_text())
    by_name = {t["name"]: t for t in health["escalation"]["triggers"]}
    assert by_name["risk_daily_loss"]["fired"] and by_name["risk_daily_loss"]["value"] == -0.031
    assert by_name["risk_drawdown_5d"]["evaluable"]
    assert not by_name["event_heat"]["evaluable"]
    assert [c["call_type"] for c in health["escalation"]["calls"]] == [
        "REGIME_AUDITOR", "REWARD_ENGINEER"]
    reward = read_record(home, DAY)["calls"][1]
    assert reward["changes"]["reward_coefficients"] == {"drawdown": 0.0, "returns": 0.75,
                                                        "turnover": 0.25}
    assert reward["changes"]["turnover_penalties"] == {"penalty_rate": 0.05}
    assert reward["changes"]["disabled_features"] == ["news_sentiment"]
    reasons = {r["proposed"]: r["reason"] for r in reward["bounded"]["rejected"]}
    assert "not toggleable" in reasons["rsi_14"] and reasons["made_up"].startswith("unknown")
    nightly(date=DAY)
    md = (home.reports / "postmortems" / f"{DAY}.md").read_text()
    assert "Kill switch fired at 15:10" in md and "| demo | 100,000.00 | 96,900.00 |" in md
    assert "- penny: -1.20%" in md and "realised P&L -310" in md
    assert "Drawdown below the running peak: 4.06%" in md
    assert "Largest loss in the core bucket (-1.90% of net liquidity)" in md


def monkey_state(home: Paths) -> None:
    """Execution state as the intraday flow writes it (contract format)."""
    state = home.data / "state"
    (state / "sessions").mkdir(parents=True, exist_ok=True)
    (state / "sessions" / f"{DAY}.json").write_text(json.dumps({
        "session": DAY, "mode": "demo", "start_net_liquidity": 100000.0,
        "end_net_liquidity": 96900.0, "day_pnl": -3100.0, "day_pnl_pct": -0.031,
        "pnl_by_bucket": {"core": -0.019, "penny": -0.012, "fno": 0.0, "sip": 0.0},
        "turnover": 0.4, "kill_switch": True, "kill_switch_at": "15:10", "orders": 4, "fills": 4,
        "clamps_fired": {"clamp:per_name": 2}, "policy_version": "pol-x", "model_id": "b-demo"}))
    pd.DataFrame({"session": ["2021-12-28", "2021-12-29", DAY],
                  "start_net_liquidity": [100000.0, 101000.0, 100000.0],
                  "end_net_liquidity": [101000.0, 100000.0, 96900.0],
                  "day_pnl_pct": [0.01, -0.0099, -0.031], "drawdown": [0.0, 0.0099, 0.0406],
                  "kill_switch": [False, False, True]}).to_parquet(state / "equity.parquet")
    rows = [{"timestamp": f"{DAY}T15:10:00Z", "session": DAY, "mode": "demo", "event": "exit",
             "symbol": "S003", "direction": "SELL", "size_pre": 0.01, "size_post_risk": 0.01,
             "entry_price": 10.0, "exit_price": 9.0, "qty": 310, "pnl": -310.0,
             "reason_tags": ["kill_switch"], "policy_version": "pol-x", "model_id": "b-demo"}]
    log, _ = TradeLog.open(home)
    for r in rows:
        log.append(r)
    # the session's commit: its book and its committed record (the book the next plan reads)
    (state / "portfolio.json").write_text(json.dumps({
        "net_liquidity": 96900.0, "cash": 96900.0, "as_of_session": DAY, "positions": []}))
    (state / "execution").mkdir(exist_ok=True)
    (state / "execution" / f"{DAY}.json").write_text(json.dumps({
        "session": DAY, "mode": "demo", "input_key": "test", "start_nl": 100000.0,
        "cash": 96900.0, "status": "done", "halted": True, "holdings": {}, "working": []}))


def test_postmortem_reports_an_unreadable_trade_log(home, harness, fake, monkeypatch):
    from tasks.reports import postmortem

    def broken(paths, session=None):
        raise ValueError("record at line 3 breaks the hash chain")

    monkeypatch.setattr(postmortem, "_execution_reader", lambda: broken)
    monkeypatch.setenv("HCP_ESCALATION__ENABLED", "false")
    nightly(date=DAY)
    md = (home.reports / "postmortems" / f"{DAY}.md").read_text()
    assert "The trade log could not be read: ValueError: record at line 3 breaks" in md
    assert "Verify data/state/tradelog.jsonl" in md and "No daily plan for 2021-12-30." in md
