"""Policy versions: content ids, list, git-style diff, rollback (library and ``hcp policy``), and
what a version changes in the decision (caps tighten the clamps, toggles blank inputs)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.paths import Paths
from tasks.plan.build import decide
from tasks.policy import (
    current_policy,
    default_policy,
    diff_versions,
    history,
    list_versions,
    policy_dir,
    policy_version,
    rollback,
    save_policy,
)
from tasks.settings import load_settings
from tests.test_plan_decide import SETTINGS, inputs


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HCP_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "300")
    return Paths(tmp_path), load_settings()


def changed(settings):
    return default_policy(settings).replace(blend_weights={"short": 0.5, "mid": 0.2, "rl": 0.3},
                                            do_not_trade=["AAA"])


def test_versions_list_diff_and_rollback(home):
    paths, settings = home
    v0 = policy_version(default_policy(settings))
    assert [r["version"] for r in list_versions(paths, settings)] == [v0]
    v1 = save_policy(paths, changed(settings), v0, "REGIME_AUDITOR escalation", "2020-01-02T21:00Z")
    assert current_policy(paths, settings)[1] == v1 and v1 == policy_version(changed(settings))
    rows = list_versions(paths, settings)
    assert [(r["version"], r["current"]) for r in rows] == [(v0, False), (v1, True)]
    diff = diff_versions(paths, settings)
    assert diff.startswith(f"--- {v0}\n+++ {v1}\n@@")
    assert '-    "short": 0.4\n' in diff and '+    "short": 0.5\n' in diff
    assert '+    "AAA"\n' in diff
    assert rollback(paths, settings, v0, "2020-01-03T00:00Z", "bad change") == v0
    assert current_policy(paths, settings) == (default_policy(settings), v0)
    assert [h["event"] for h in history(paths)] == ["new_version", "rollback"]
    assert diff_versions(paths, settings, v1, v0).startswith(f"--- {v1}\n+++ {v0}")


def test_rollback_refuses_unknown_or_edited_versions(home):
    paths, settings = home
    with pytest.raises(FileNotFoundError, match="not stored"):
        rollback(paths, settings, "pol-000000000000", "t", "x")
    v1 = save_policy(paths, changed(settings), None, "x", "t")
    stored = policy_dir(paths) / f"{v1}.json"
    meta = json.loads(stored.read_text())
    meta["policy"]["do_not_trade"] = []
    stored.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="edited"):
        rollback(paths, settings, v1, "t", "x")


def test_hcp_policy_commands(home):
    paths, settings = home
    v0 = policy_version(default_policy(settings))
    v1 = save_policy(paths, changed(settings), v0, "test change", "2020-01-02T21:00Z")
    run = CliRunner().invoke
    listed = run(app, ["policy", "list"])
    assert listed.exit_code == 0 and v0 in listed.output and v1 in listed.output
    assert run(app, ["policy", "diff"]).output.startswith(f"--- {v0}")
    shown = run(app, ["policy", "show", v1])
    assert json.loads(shown.output.split("\n", 1)[1])["do_not_trade"] == ["AAA"]
    back = run(app, ["policy", "rollback", v0, "--reason", "operator test"])
    assert back.exit_code == 0 and current_policy(paths, settings)[1] == v0
    bad = run(app, ["policy", "rollback", "pol-nope"])
    assert bad.exit_code == 2 and "not stored" in bad.output


def test_policy_caps_tighten_the_clamps_and_toggles_blank_inputs():
    syms = [f"S{i:02d}" for i in range(30)]
    ctx = pd.DataFrame({"symbol": syms, "rl_size_hint": 1.0,
                        "news_sentiment": np.where(np.arange(30) == 29, -0.9, 0.2)})
    base = decide(inputs(ctx), SETTINGS)
    assert base.plan["position_cash"].sum() > 500
    tight = decide(inputs(ctx, policy_extra={"bucket_caps": {"core": 0.005, "penny": 0.02,
                                                             "fno": 0.05}}), SETTINGS)
    assert tight.plan["position_cash"].sum() <= 0.005 * 100_000 + 1e-6
    assert tight.audit["reasons"].str.contains("clamp:bucket").any()
    off = decide(inputs(ctx, policy_extra={"disabled_features": ["news_sentiment"]}), SETTINGS)
    tags = off.signals.set_index("symbol").loc["S29", "penalty_tags"]
    assert "news_negative:disabled" in tags and "penalty:news_negative" not in tags
    rl_off = decide(inputs(ctx, policy_extra={"disabled_features": ["rl_size_hint"]}), SETTINGS)
    assert rl_off.signals["rl_missing"].all()
    live = decide(inputs(ctx, policy_extra={"live_changes": {
        "max_position_pct": 0.002, "stop_multipliers": {"atr": 1.0, "trailing": 1.0}}}), SETTINGS)
    assert len(live.plan) and (live.plan["position_cash"] <= 0.002 * 100_000 + 1e-6).all()
    assert live.plan["stop"].tolist() == pytest.approx([50.0 - 1.0 * 0.02 * 50.0] * len(live.plan))
