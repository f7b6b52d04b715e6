"""The kill switch's SANITY_JUDGE call through the escalation service (remote -> local -> none).

Only an accepted remote answer ``stay_demo: false`` clears the next session's cool-off; a
failed remote falls back to the local reasoner, alerts, and the cool-off stays.
"""

from __future__ import annotations

import json

import pytest

from tasks.alerts import read_alerts
from tasks.escalation.record import read_record
from tasks.execution.runner import quarantine_status, run_session
from tasks.execution.state import load_kill_switch
from tasks.paths import Paths
from tests.exec_helpers import SESSION, bars, settings, write_book
from tests.llm_fakes import FakeServer, completion

NEXT = "2020-03-10"
JUDGE = {"stay_demo": False, "live_changes": {"max_position_pct": 0.01,
                                              "stop_multipliers": {"atr": 1.8, "trailing": 1.2}}}


@pytest.fixture
def server(tmp_path, monkeypatch):
    with FakeServer() as srv:
        monkeypatch.setenv("HCP_HOME", str(tmp_path))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-kill-switch")
        monkeypatch.setenv("HCP_REMOTE_BASE_URL", srv.url + "/v1")
        monkeypatch.setenv("HCP_LOCAL_BACKEND", "template")
        monkeypatch.setenv("HCP_REMOTE__TIMEOUT_S", "1")
        yield srv


def _trip(tmp_path):
    paths = Paths(tmp_path)
    write_book(paths, 50_000.0, [{"symbol": "A", "qty": 500, "price": 100.0}])
    frame = bars(SESSION, {"A": [(100.0, 100.0, 94.0, 94.0), (94.0, 94.0, 94.0, 94.0)]})
    cfg = settings(escalation={"enabled": True})
    assert quarantine_status(paths, cfg, NEXT).active is False
    res = run_session(paths, cfg, SESSION, bars=frame)
    assert res.summary["kill_switch"] is True
    return paths, cfg


def test_remote_stay_demo_false_clears_the_cool_off(tmp_path, server):
    server.push(("json", completion(json.dumps(JUDGE))))
    paths, cfg = _trip(tmp_path)
    call = read_record(paths, SESSION)["calls"][0]
    assert call["call_type"] == "SANITY_JUDGE" and call["backend"].startswith("remote:")
    assert call["request_sha256"] and len(server.requests) == 1
    judged = load_kill_switch(paths)["sanity_judge"]
    assert judged["result"]["response"] == {"stay_demo": False}
    assert judged["override"] == "cleared"
    assert quarantine_status(paths, cfg, NEXT).active is False
    assert "quarantine_cleared" in [a["code"] for a in read_alerts(paths)]


def test_failed_remote_falls_back_and_the_cool_off_stays(tmp_path, server):
    server.push(("status", 500))
    paths, cfg = _trip(tmp_path)
    call = read_record(paths, SESSION)["calls"][0]
    assert call["attempts"][0]["status"] == "server_error"
    assert not call["backend"] or not call["backend"].startswith("remote:")
    judged = load_kill_switch(paths)["sanity_judge"]
    assert judged["result"]["response"] in (None, {"stay_demo": True})
    assert "override" not in judged
    status = quarantine_status(paths, cfg, NEXT)
    assert status.active and status.kind == "kill_switch_cooloff"
    codes = [a["code"] for a in read_alerts(paths)]
    assert "kill_switch" in codes and "remote_unavailable" in codes
