"""Promotion gates of a backtest: each gate just passing and just failing, gates that cannot be
judged, gates.json, the recorded trials, and `promote --to active` refusing a baseline whose
newest gates fail or are missing (one line, exit 2) unless overridden with --force --reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tasks.backtest import trials as tr
from tasks.backtest.gates import evaluate_gates, read_gates, write_gates
from tasks.io import atomic_write_json
from tasks.models.registry import (
    GateError,
    SkillGateError,
    backtest_gate_refusal,
    check_backtest_gates,
    promote,
    read_registry,
)
from tasks.paths import Paths
from tasks.settings import load_settings

NOW = "2026-01-01T00:00:00+00:00"
N = 300
SESSIONS = pd.bdate_range("2021-01-04", periods=N)


def _inputs(seed: int = 0, drift: float = 0.004) -> dict:
    """A backtest that passes every gate: daily drift well above noise, 20 of 30 core
    episodes won, five noise configurations recorded beside it."""
    rng = np.random.default_rng(seed)
    ret = rng.normal(drift, 0.01, N)
    daily = pd.DataFrame({"returns": ret, "risk_gates_held": True, "kill_switch": False,
                          "escalations": 0}, index=SESSIONS)
    trades = pd.DataFrame({"symbol": "AAA", "bucket": "core",
                           "pnl": np.r_[np.ones(20), -np.ones(10)], "r_multiple": 0.5})
    trials = pd.DataFrame(rng.normal(0.0, 0.01, (N, 5)), index=SESSIONS,
                          columns=[f"c{i}" for i in range(5)])
    trials["main"] = ret
    summary = {"sharpe": 1.2, "sortino": 1.5, "cagr": 0.2, "max_drawdown": 0.05,
               "hit_rate": 0.66, "avg_r": 0.5, "turnover": 0.3, "kill_switch_days": 0,
               "escalations_per_day": 0.2, "sessions": N, "out_of_sample": False,
               "baseline_id": "good"}
    return {"summary": summary, "daily": daily, "trades": trades, "trials": trials}


def _run(inp: dict, settings=None, **summary) -> dict:
    s = {**inp["summary"], **summary}
    return evaluate_gates(s, inp["daily"], inp["trades"], inp["trials"],
                          settings or load_settings(), now=NOW)


def _gate(result: dict, name: str) -> dict:
    return next(g for g in result["gates"] if g["name"] == name)


@pytest.fixture(scope="module")
def inp() -> dict:
    return _inputs()


# --------------------------------------------------------------------------- evaluation

def test_a_good_backtest_passes_every_gate(inp):
    res = _run(inp)
    assert res["passed"] and res["failed"] == [] and res["baseline_id"] == "good"
    names = [g["name"] for g in res["gates"]]
    assert names == ["risk_gates_held", "sharpe", "max_drawdown", "kill_switch_days",
                     "escalations_per_day", "hit_rate_liquid", "psr", "dsr", "pbo"]
    for g in res["gates"]:
        assert set(g) == {"name", "value", "threshold", "op", "passed", "source", "note"}
        assert g["passed"] is True and g["source"]
    assert res["trials"] == 6 and res["computed_at"] == NOW
    assert res["statistics"]["dsr"]["n_trials"] == 6 and res["statistics"]["dsr"]["sr0"] > 0
    # the gates section alone works as settings too
    assert evaluate_gates(inp["summary"], inp["daily"], inp["trades"], inp["trials"],
                          load_settings().gates, now=NOW)["passed"]


@pytest.mark.parametrize(("field", "ok", "bad"), [
    ("max_drawdown", 0.0799, 0.08),
    ("kill_switch_days", 0, 1),
    ("escalations_per_day", 0.99, 1.0),
])
def test_summary_gate_boundaries(inp, field, ok, bad):
    assert _gate(_run(inp, **{field: ok}), field)["passed"]
    res = _run(inp, **{field: bad})
    assert not _gate(res, field)["passed"] and not res["passed"] and res["failed"] == [field]


def test_sharpe_boundary_in_and_out_of_sample(inp):
    assert _gate(_run(inp, sharpe=0.81), "sharpe")["passed"]
    assert not _gate(_run(inp, sharpe=0.8), "sharpe")["passed"]
    oos = _gate(_run(inp, sharpe=0.85, out_of_sample=True), "sharpe")
    assert not oos["passed"] and oos["threshold"] == 0.9 and "out-of-sample" in oos["note"]
    assert _gate(_run(inp, sharpe=0.91, out_of_sample=True), "sharpe")["passed"]
    assert not _gate(_run(inp, sharpe=0.9, out_of_sample=True), "sharpe")["passed"]
    missing = _gate(_run(inp, sharpe=float("nan")), "sharpe")
    assert missing["value"] is None and not missing["passed"] and "not computable" in missing["note"]


def _with_break(inp: dict, at: int) -> dict:
    daily = inp["daily"].copy()
    daily.iloc[at, daily.columns.get_loc("risk_gates_held")] = False
    return {**inp, "daily": daily}


def test_risk_gates_must_hold_for_the_last_ten_sessions(inp):
    ok = _gate(_run(_with_break(inp, -11)), "risk_gates_held")
    assert ok["passed"] and ok["value"] == 10
    bad = _gate(_run(_with_break(inp, -10)), "risk_gates_held")
    assert not bad["passed"] and bad["value"] == 9 and "held for the last 9" in bad["note"]
    short = {**inp, "daily": inp["daily"].iloc[:9]}
    g = _gate(_run(short), "risk_gates_held")
    assert not g["passed"] and "only 9 sessions" in g["note"]
    nothing = {**inp, "daily": inp["daily"].drop(columns="risk_gates_held")}
    g = _gate(_run(nothing), "risk_gates_held")
    assert g["value"] is None and not g["passed"] and "not computable" in g["note"]


def _trades(wins: int, losses: int, bucket: str = "core") -> pd.DataFrame:
    return pd.DataFrame({"symbol": "AAA", "bucket": bucket,
                         "pnl": np.r_[np.ones(wins), -np.ones(losses)], "r_multiple": 0.0})


def test_hit_rate_on_liquid_names(inp):
    ok = _gate(_run({**inp, "trades": _trades(53, 47)}), "hit_rate_liquid")
    assert ok["passed"] and ok["value"] == pytest.approx(0.53)
    assert not _gate(_run({**inp, "trades": _trades(52, 48)}), "hit_rate_liquid")["passed"]
    # other buckets do not count: all penny winners and a losing core book fails
    mixed = pd.concat([_trades(100, 0, "penny"), _trades(10, 20)])
    g = _gate(_run({**inp, "trades": mixed}), "hit_rate_liquid")
    assert not g["passed"] and g["value"] == pytest.approx(1 / 3)
    for trades in (_trades(0, 0), _trades(40, 0, "penny"), None):
        g = _gate(_run({**inp, "trades": trades}), "hit_rate_liquid")
        assert g["value"] is None and not g["passed"] and "no closed episodes" in g["note"]
    few = _gate(_run({**inp, "trades": _trades(19, 0)}), "hit_rate_liquid")
    assert few["value"] == 1.0 and not few["passed"] and "too few" in few["note"]


def test_psr_and_dsr_boundaries():
    inp = _inputs(drift=0.0012)  # a weaker edge: both figures well inside (0, 1)
    base = _run(inp)
    for name, key in (("psr", "min_psr"), ("dsr", "min_dsr")):
        value = _gate(base, name)["value"]
        assert 0.05 < value < 0.999
        at = load_settings(gates={key: value})
        assert _gate(_run(inp, at), name)["passed"]                 # >= : equal passes
        above = load_settings(gates={key: value + 1e-9})
        assert not _gate(_run(inp, above), name)["passed"]


def test_dsr_with_one_trial_is_psr_and_says_so(inp):
    single = {**inp, "trials": inp["trials"][["main"]]}
    res = _run(single)
    dsr, psr = _gate(res, "dsr"), _gate(res, "psr")
    assert dsr["value"] == pytest.approx(psr["value"])
    assert "SR\u2080 = 0" in dsr["note"] and "one recorded configuration" in dsr["note"]
    none = _run({**inp, "trials": None})
    assert "SR\u2080 = 0" in _gate(none, "dsr")["note"] and none["trials"] == 0


def test_pbo_needs_two_trials_and_its_boundary(inp):
    for trials in (None, inp["trials"][["main"]]):
        g = _gate(_run({**inp, "trials": trials}), "pbo")
        assert g["value"] is None and not g["passed"]
        assert "not computable" in g["note"] and "at least 2" in g["note"]
    noise = pd.DataFrame(np.random.default_rng(3).normal(0, 0.01, (N, 8)), index=SESSIONS)
    noisy = {**inp, "trials": noise}
    value = _gate(_run(noisy), "pbo")["value"]
    assert 0.1 < value < 0.9
    assert _gate(_run(noisy, load_settings(gates={"max_pbo": value})), "pbo")["passed"]
    assert not _gate(_run(noisy, load_settings(gates={"max_pbo": value - 1e-9})),
                     "pbo")["passed"]


def test_too_few_sessions_fail_the_sharpe_statistics(inp):
    short = {**inp, "daily": inp["daily"].iloc[-40:]}
    res = _run(short)
    for name in ("psr", "dsr"):
        g = _gate(res, name)
        assert g["value"] is None and not g["passed"] and "40 sessions" in g["note"]
    flat_daily = inp["daily"].assign(returns=0.0)
    g = _gate(_run({**inp, "daily": flat_daily}), "psr")
    assert g["value"] is None and not g["passed"] and "zero variance" in g["note"]


def test_gates_json_round_trip(inp, tmp_path):
    res = _run(inp, sharpe=float("nan"))
    path = write_gates(tmp_path / "run1", res)
    assert path == tmp_path / "run1" / "gates.json"
    text = path.read_text()
    assert "NaN" not in text
    back = read_gates(tmp_path / "run1")
    assert back == json.loads(json.dumps(res, default=str).replace("NaN", "null"))
    assert back["gates"] == res["gates"] and back["passed"] is False
    assert read_gates(path) == back


# --------------------------------------------------------------------------- trials

def test_trials_are_one_per_configuration(tmp_path):
    root = tmp_path / "reports" / "backtest"
    assert tr.trial_count(root) == 0 and tr.load_trials(root).empty
    tr.record_trial(root, "cfg-a", pd.Series(0.01, SESSIONS[:50]),
                    {"baseline_id": "b1", "settings_hash": "h1"}, at=NOW)
    tr.record_trial(root, "cfg-b", pd.Series(0.02, SESSIONS[10:60]), {"baseline_id": "b1"})
    frame = tr.load_trials(root)
    assert list(frame.columns) == ["cfg-a", "cfg-b"] and len(frame) == 40
    assert frame.index[0] == SESSIONS[10] and frame.index.name == "session"
    assert (root / "trials" / "cfg-a.parquet").is_file()
    # re-recording replaces returns and the line: still two trials
    tr.record_trial(root, "cfg-a", pd.Series(-0.01, SESSIONS[:30]), {"baseline_id": "b2"})
    assert tr.trial_count(root) == 2
    log = tr.read_trial_log(root)
    assert [t["config_id"] for t in log] == ["cfg-b", "cfg-a"]
    assert log[1]["baseline_id"] == "b2" and log[1]["sessions"] == 30
    assert (log[1]["start"], log[1]["end"]) == ("2021-01-04", "2021-02-12")
    lines = (root / "trials" / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["config_id"] for x in lines)
    assert (tr.load_trials(root)["cfg-a"] == -0.01).all()
    with pytest.raises(tr.TrialError, match="configuration id"):
        tr.record_trial(root, "../x", pd.Series(0.01, SESSIONS[:5]), {})
    with pytest.raises(tr.TrialError, match="no returns"):
        tr.record_trial(root, "empty", pd.Series(dtype=float), {})


def test_recorded_trials_feed_the_gates(inp, tmp_path):
    root = tmp_path / "reports" / "backtest"
    for name in inp["trials"].columns:
        tr.record_trial(root, name, inp["trials"][name], {"baseline_id": "good"})
    res = _run({**inp, "trials": tr.load_trials(root)})
    assert res["trials"] == tr.trial_count(root) == 6 and res["passed"]


# --------------------------------------------------------------------------- promotion

def _baseline(paths: Paths, bid: str, verdict: str) -> None:
    atomic_write_json(paths.models / bid / "manifest.json",
                      {"id": bid, "horizons": {"short": 5},
                       "skill": {"horizon": "short", "verdict": verdict, "reasons": []}})


@pytest.fixture
def home(tmp_path) -> Paths:
    paths = Paths(tmp_path)
    _baseline(paths, "good", "skilled")
    _baseline(paths, "weak", "no_skill")
    return paths


def _write_run(paths: Paths, run: str, bid: str, at: str, **summary) -> Path:
    inp = _inputs()
    res = evaluate_gates({**inp["summary"], "baseline_id": bid, **summary}, inp["daily"],
                         inp["trades"], inp["trials"], load_settings(), now=at)
    return write_gates(paths.reports / "backtest" / run, res)


def test_promote_refuses_without_backtest_gates(home):
    with pytest.raises(GateError) as err:
        promote(home, "good", "active", NOW)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("no backtest gates for baseline good: run `hcp backtest --start S "
                          "--end E` first")
    assert "--force --reason" in msg
    assert read_registry(home)["active"] is None
    assert promote(home, "good", "shadow", NOW)["shadow"] == "good"  # shadow never trades
    assert backtest_gate_refusal(home, "good").startswith("no backtest gates for baseline good")


def test_promote_refuses_failing_gates_with_figures(home):
    _write_run(home, "r1", "good", "2026-01-01T00:00:00+00:00", sharpe=0.5, max_drawdown=0.12)
    with pytest.raises(GateError) as err:
        promote(home, "good", "active", NOW)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("baseline good fails its backtest gates")
    assert "sharpe 0.5 (needs > 0.8)" in msg and "max_drawdown 0.12 (needs < 0.08)" in msg
    assert "reports/backtest/r1/gates.json" in msg and "psr" not in msg
    check = check_backtest_gates(home, "good")
    assert not check.passed and check.failed == ["sharpe", "max_drawdown"]


def test_not_computable_gates_are_named_in_the_refusal(home, tmp_path):
    inp = _inputs()
    res = evaluate_gates(inp["summary"], inp["daily"], inp["trades"], None, load_settings(),
                         now=NOW)
    write_gates(home.reports / "backtest" / "r1", res)
    with pytest.raises(GateError, match=r"pbo not computable \(0 recorded configuration"):
        promote(home, "good", "active", NOW)


def test_the_newest_gates_of_the_baseline_decide(home):
    _write_run(home, "r1", "good", "2026-01-01T00:00:00+00:00")                  # passes
    _write_run(home, "r2", "good", "2026-01-03T00:00:00+00:00", sharpe=0.1)      # newer, fails
    _write_run(home, "r3", "other", "2026-01-05T00:00:00+00:00")                 # another id
    (home.reports / "backtest" / "broken").mkdir()
    (home.reports / "backtest" / "broken" / "gates.json").write_text("{not json")
    with pytest.raises(GateError, match="r2"):
        promote(home, "good", "active", NOW)
    _write_run(home, "r4", "good", "2026-01-04T00:00:00+00:00")                  # newest passes
    reg = promote(home, "good", "active", NOW)
    assert reg["active"] == "good" and "forced" not in reg["history"][-1]


def test_force_with_reason_overrides_and_is_logged(home):
    _write_run(home, "r1", "good", "2026-01-01T00:00:00+00:00", sharpe=0.5)
    for kwargs in ({}, {"force": True}, {"force": True, "reason": " "}, {"reason": "x"}):
        with pytest.raises(GateError):
            promote(home, "good", "active", NOW, **kwargs)
    reg = promote(home, "good", "active", NOW, force=True, reason="paper week", by="ops")
    last = reg["history"][-1]
    assert last == {"slot": "active", "from": None, "to": "good", "at": NOW, "forced": True,
                    "failed_gates": ["sharpe"], "reason": "paper week", "by": "ops"}
    assert read_registry(home)["history"][-1] == last


def test_one_override_covers_skill_and_gates(home):
    # no skill and no gates: the skill gate speaks first, one override logs both
    with pytest.raises(SkillGateError, match="skill verdict 'no_skill'"):
        promote(home, "weak", "active", NOW)
    reg = promote(home, "weak", "active", NOW, force=True, reason="drill", by="ops")
    last = reg["history"][-1]
    assert last["skill_verdict"] == "no_skill"
    assert last["failed_gates"] == ["backtest_gates_missing"] and last["forced"]
    # no skill, passing gates: only the verdict is overridden
    _write_run(home, "r1", "weak", "2026-01-01T00:00:00+00:00")
    last = promote(home, "weak", "active", NOW, force=True, reason="drill")["history"][-1]
    assert last["skill_verdict"] == "no_skill" and "failed_gates" not in last
    assert last["by"] == "unknown"


def test_cli_promote_refusal_is_one_line_and_override_is_printed(home, monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("HCP_HOME", str(home.home))
    runner = CliRunner()
    res = runner.invoke(app, ["promote", "--to", "active", "--id", "good"])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("error: no backtest gates for baseline good: run `hcp backtest")
    _write_run(home, "r1", "good", NOW, sharpe=0.5)
    res = runner.invoke(app, ["promote", "--to", "active", "--id", "good"])
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "sharpe 0.5 (needs > 0.8)" in lines[0]
    res = runner.invoke(app, ["promote", "--to", "active", "--id", "good", "--force",
                              "--reason", "paper test [week 1]", "--by", "alice"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "backtest gates overridden (failed: sharpe)" in text
    assert "paper test [week 1]" in text and "active: good" in text
    last = read_registry(home)["history"][-1]
    assert (last["by"], last["reason"], last["failed_gates"]) == (
        "alice", "paper test [week 1]", ["sharpe"])


def test_cli_refusal_from_the_entry_point_is_one_line_on_stderr(home):
    hcp = Path(sys.executable).with_name("hcp")
    entry = [str(hcp)] if hcp.is_file() else [sys.executable, "-m", "flows.cli"]
    env = {**os.environ, "HCP_HOME": str(home.home), "COLUMNS": "60"}
    proc = subprocess.run([*entry, "promote", "--to", "active", "--id", "good"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    err = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith("error: no backtest gates for baseline good")
    assert "Traceback" not in proc.stderr
