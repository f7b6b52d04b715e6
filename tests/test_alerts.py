"""Operator alerts: runbook texts, once per session/code/key, readable back."""

from __future__ import annotations

import pytest

from tasks.alerts import alerts_path, raise_alert, read_alerts, render
from tasks.paths import Paths


def test_runbook_texts() -> None:
    assert render("escalation", {"call_type": "REGIME_AUDITOR", "used": 1, "limit": 3}) == \
        "Escalation to GPT-5: Regime Auditor (1/3)"
    assert render("quarantine_active", {"days_left": 7}) == "Demo quarantine active—7 days remaining"
    with pytest.raises(KeyError, match="unknown alert code"):
        render("nope", {})


def test_alert_is_written_once_per_session_code_key(tmp_path) -> None:
    paths = Paths(tmp_path)
    first = raise_alert(paths, "kill_switch", session="2020-03-09", at="2020-03-09T15:00:00Z",
                        level="CRITICAL", data={"daily_pnl": -0.026})
    again = raise_alert(paths, "kill_switch", session="2020-03-09", at="2020-03-09T15:05:00Z",
                        level="CRITICAL")
    other = raise_alert(paths, "kill_switch", session="2020-03-10", at="2020-03-10T15:00:00Z")
    assert first is not None and first["text"].startswith("Kill-switch armed")
    assert again is None and other is not None
    assert [a["session"] for a in read_alerts(paths)] == ["2020-03-09", "2020-03-10"]
    assert read_alerts(paths, "2020-03-10")[0]["data"] == {}


def test_unreadable_line_is_skipped_not_fatal(tmp_path) -> None:
    paths = Paths(tmp_path)
    raise_alert(paths, "data_stall", session="S", at="T")
    with open(alerts_path(paths), "a") as fh:
        fh.write('{"torn": \n')
    raise_alert(paths, "rl_missing", session="S", at="T")
    assert [a["code"] for a in read_alerts(paths)] == ["data_stall", "rl_missing"]
