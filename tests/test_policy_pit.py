"""The policy in force at a past session (tasks.decision.pit), as a replay reads it.

Most specific first: the session's escalation record (the version its first daily call started
from), its daily run record, the policy history (an escalation's version from its session on,
any other change from the first session after the day it was recorded), the configured
default. ``adopt`` makes that version current in a replay's own root and copies the live
escalation record there, never touching the live home.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from tasks.decision.pit import adopt, policy_at
from tasks.paths import Paths, SandboxPaths
from tasks.policy import (
    current_policy,
    default_policy,
    history,
    policy_version,
    rollback,
    save_policy,
)
from tasks.settings import load_settings


@pytest.fixture
def live(tmp_path, monkeypatch) -> Paths:
    monkeypatch.setenv("HCP_HOME", str(tmp_path / "live"))
    return Paths(tmp_path / "live")


def versions(settings):
    base = default_policy(settings)
    tight = base.replace(blend_weights={"short": 0.7, "mid": 0.3, "rl": 0.0})
    return base, tight


def test_history_gives_the_version_in_force_at_each_session(live):
    settings = load_settings()
    base, tight = versions(settings)
    v_tight = save_policy(live, tight, policy_version(base), "REGIME_AUDITOR escalation",
                          "2021-07-02T12:00:00Z", effective="2021-07-02")
    rollback(live, settings, policy_version(base), "2021-07-09T15:00:00Z", "operator")
    expected = {"2021-07-01": policy_version(base),   # before any change: the default
                "2021-07-02": v_tight,                # an escalation applies from its session
                "2021-07-09": v_tight,                # a change recorded on the 9th ...
                "2021-07-12": policy_version(base)}   # ... applies from the next session on
    for day, version in expected.items():
        pit = policy_at(live, settings, day)
        assert pit.version == version, (day, pit)
        assert policy_version(pit.policy) == version
    assert [e.get("effective") for e in history(live)] == ["2021-07-02", None]


def test_records_of_the_session_come_before_the_history(live):
    settings = load_settings()
    base, tight = versions(settings)
    v_tight = save_policy(live, tight, policy_version(base), "escalation",
                          "2021-07-02T12:00:00Z", effective="2021-07-02")
    # the session's daily run record names the version its plan was made with
    run = live.runs / "daily_2021-07-06.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"key_parts": {"policy": policy_version(base)}}))
    assert policy_at(live, settings, "2021-07-06").version == policy_version(base)
    assert "daily run record" in policy_at(live, settings, "2021-07-06").source
    # its escalation record: the version the first daily call started from
    esc = live.reports / "escalations" / "2021-07-07.json"
    esc.parent.mkdir(parents=True)
    esc.write_text(json.dumps({"session": "2021-07-07", "calls": [
        {"call_type": "REGIME_AUDITOR", "status": "applied", "backend": "remote:gpt-5",
         "attempts": [], "policy_before": policy_version(base), "policy_after": v_tight}]}))
    pit = policy_at(live, settings, "2021-07-07")
    assert pit.version == policy_version(base) and "escalation record" in pit.source


def test_adopt_sets_the_root_and_leaves_the_live_home_alone(live, tmp_path):
    settings = load_settings()
    base, tight = versions(settings)
    v_tight = save_policy(live, tight, policy_version(base), "escalation",
                          "2021-07-02T12:00:00Z", effective="2021-07-02")
    esc = live.reports / "escalations" / "2021-07-07.json"
    esc.parent.mkdir(parents=True)
    esc.write_text(json.dumps({"session": "2021-07-07", "calls": [
        {"call_type": "REGIME_AUDITOR", "status": "applied", "backend": "remote:gpt-5",
         "attempts": [], "policy_before": policy_version(base), "policy_after": v_tight}]}))

    def snap():
        return {p.relative_to(live.home).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(live.home.rglob("*")) if p.is_file()}

    before = snap()
    root = SandboxPaths(live.home, tmp_path / "root")
    for day in ("2021-07-01", "2021-07-07"):
        adopt(root, settings, day, policy_at(live, settings, day), live=live)
        assert current_policy(root, settings)[1] == policy_at(live, settings, day).version
    assert snap() == before
    copied = json.loads((root.reports / "escalations" / "2021-07-07.json").read_text())
    assert copied["calls"][0]["policy_after"] == v_tight
    assert (root.data / "state" / "policy" / f"{v_tight}.json").is_file()
