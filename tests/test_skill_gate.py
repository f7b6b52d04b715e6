"""The skill gate: figures, verdict boundaries, promotion refusal and override, the health
warning, the live gate and `hcp demo`'s logged override. No model is trained here (fast)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tasks.execution.gates import LiveGateError, live_gates, require_live
from tasks.health.checks import health_report
from tasks.io import atomic_write_json
from tasks.models import skill as sk
from tasks.models.pipeline import _promotion
from tasks.models.registry import SkillGateError, promote, read_registry
from tasks.paths import Paths
from tasks.settings import ConfigError, load_settings

NOW = "2026-01-01T00:00:00+00:00"
THR = {"min_brier_skill": 0.0, "min_ic_t": 2.0, "live_requires_skill": True}


# --------------------------------------------------------------------------- verdict boundaries

@pytest.mark.parametrize(("bs", "t", "verdict"), [
    (0.0, 5.0, "no_skill"),        # Brier skill exactly 0: not better than the base rate
    (0.001, 2.0, "skilled"),       # t exactly 2 with Brier skill > 0
    (0.001, 1.99, "no_skill"),     # t just below 2
    (-0.003, 3.0, "no_skill"),
    (0.01, None, "no_skill"),      # not measurable fails its test
    (None, 3.0, "no_skill"),
])
def test_verdict_boundaries(bs, t, verdict):
    got, reasons = sk.judge({"brier_skill": bs, "ic": 0.01, "ic_t": t}, 0.0, 2.0)
    assert got == verdict and len(reasons) == 2


def test_verdict_reasons_are_plain_language():
    v, reasons = sk.judge({"brier_skill": -0.003, "ic": -0.006, "ic_t": -0.74}, 0.0, 2.0)
    assert v == "no_skill"
    assert reasons[0].startswith("Brier skill \u22120.0030 \u2264 0")
    assert reasons[1].startswith("rank IC \u22120.0060, Newey\u2013West t \u22120.74 < 2")


def _frame(horizon: str = "short") -> pd.DataFrame:
    """3 dates x 10 names; p_cal = 0.1..1.0 by name; labels half 1 (base rate 0.5).

    Forward returns rank like p_cal on dates 1 and 2 (IC +1) and against it on date 3 (IC -1):
    IC = 1/3, std = sqrt(4/3), lag-0 t = (1/3) / (sqrt(4/3)/sqrt(3)) = 0.5.
    realised_pnl = 0.01 * name index on every date (0 .. 0.09): the top 10 % (one name, p 1.0)
    earns 0.09, the universe 0.045 a date."""
    rows = []
    for d, date in enumerate(pd.date_range("2021-01-04", periods=3, freq="B")):
        for i in range(10):
            rows.append({"horizon": horizon, "date": date, "symbol": f"S{i}",
                         "p_cal": (i + 1) / 10, "label": float(i % 2),
                         "fwd_return": (i if d < 2 else -i) / 100.0, "realised_pnl": i / 100})
    return pd.DataFrame(rows)


def test_figures_hand_computed():
    f = sk.horizon_figures(_frame(), "short", nw_lag=0, fee_pct=0.0005)
    # Brier: mean((p - y)^2) over names 0..9 -> p=i/10+0.1, y = i % 2
    p, y = np.arange(1, 11) / 10, np.arange(10) % 2
    brier = float(np.mean((p - y) ** 2))
    assert f["brier_skill"] == pytest.approx(1 - brier / 0.25)
    assert f["ic"] == pytest.approx(1 / 3) and f["ic_t"] == pytest.approx(0.5)
    assert f["n"] == 30 and f["n_dates"] == 3
    assert f["top_decile_net"] == pytest.approx(0.09 - 0.001)
    assert f["universe_net"] == pytest.approx(0.045 - 0.001)


def test_brier_skill_exactly_zero_is_no_skill():
    frame = _frame().assign(p_cal=0.5)  # the base rate itself: Brier 0.25 = 0.25 exactly
    f = sk.horizon_figures(frame, "short", 0, 0.0)
    assert f["brier_skill"] == 0.0
    assert sk.judge({**f, "ic_t": 10.0}, 0.0, 2.0)[0] == "no_skill"


def test_skill_record_uses_plan_horizon_thresholds_and_lags():
    oos = pd.concat([_frame("short"), _frame("mid").assign(p_cal=0.5)], ignore_index=True)
    settings = load_settings(models={"skill": {"min_ic_t": 0.4, "min_brier_skill": -1.0}})
    rec = sk.skill_record(oos, settings)
    assert rec["horizon"] == "short" and set(rec["per_horizon"]) == {"short", "mid"}
    assert rec["thresholds"] == {"min_brier_skill": -1.0, "min_ic_t": 0.4,
                                 "live_requires_skill": True}
    # NW lag h-1 = 4 on three dates: the t differs from the lag-0 one
    assert rec["ic_t"] == pytest.approx(sk.horizon_figures(oos, "short", 4, 0.0005)["ic_t"])
    assert rec["per_horizon"]["mid"]["brier_skill"] == 0.0
    assert rec["costs"]["round_trip"] == pytest.approx(2 * settings.guardrails.fee_pct)
    json.dumps(rec, allow_nan=False)  # JSON-safe: no NaN anywhere
    plan_verdict = sk.judge(rec, -1.0, 0.4)[0]
    assert rec["verdict"] == plan_verdict


def test_skill_settings_ranges():
    with pytest.raises(ConfigError, match="models.skill.min_ic_t"):
        load_settings(models={"skill": {"min_ic_t": -1}})
    cfg = load_settings().models.skill
    assert (cfg.min_brier_skill, cfg.min_ic_t, cfg.live_requires_skill) == (0.0, 2.0, True)


def _rec(verdict: str, bs: float = -0.003, ic: float = -0.006, t: float = -0.74) -> dict:
    return {"horizon": "short", "verdict": verdict, "reasons": ["r"], "brier_skill": bs, "ic": ic,
            "ic_t": t, "top_decile_net": 0.0012, "universe_net": 0.0004, "thresholds": THR,
            "per_horizon": {"short": {"verdict": verdict, "brier_skill": bs, "ic": ic,
                                      "ic_t": t}}}


def test_headlines():
    line = sk.headline(_rec("no_skill"))
    assert line.startswith("NO MEASURED SKILL at the plan horizon (short): Brier skill "
                           "\u22120.003 \u2264 0; rank IC \u22120.006, Newey\u2013West t "
                           "\u22120.74 < 2.")
    assert line.endswith("Not promoted automatically.") and "+0.120%" in line
    ok = sk.headline(_rec("skilled", 0.012, 0.021, 2.0))
    assert ok.startswith("Skilled at the plan horizon (short): Brier skill +0.012 > 0; rank IC "
                         "+0.021, Newey\u2013West t +2.00 \u2265 2.")
    assert "Not promoted" not in ok
    assert sk.headline(None).startswith("SKILL UNKNOWN")
    tiny = sk.headline(_rec("no_skill", 0.0004, 0.00002, 1.2))
    assert "Brier skill +0.0004 > 0" in tiny and "rank IC +2e-05" in tiny  # never "+0.000"


# --------------------------------------------------------------------------- promotion

def _baseline(paths: Paths, bid: str, skill: dict | None) -> None:
    manifest = {"id": bid, "horizons": {"short": 5, "mid": 20}}
    if skill is not None:
        manifest["skill"] = skill
    atomic_write_json(paths.models / bid / "manifest.json", manifest)


@pytest.fixture
def home(tmp_path) -> Paths:
    paths = Paths(tmp_path)
    _baseline(paths, "weak", _rec("no_skill"))
    _baseline(paths, "good", _rec("skilled", 0.01, 0.02, 2.5))
    _baseline(paths, "old", None)
    return paths


def test_promote_refuses_a_no_skill_baseline_without_force_and_reason(home):
    for kwargs in ({}, {"force": True}, {"force": True, "reason": "  "}, {"reason": "x"}):
        with pytest.raises(SkillGateError, match="no measured skill"):
            promote(home, "weak", "active", NOW, **kwargs)
    with pytest.raises(SkillGateError, match="'unknown'"):
        promote(home, "old", "active", NOW)
    assert read_registry(home)["active"] is None
    assert promote(home, "weak", "shadow", NOW)["shadow"] == "weak"  # shadow never trades


def passing_gates(home, baseline_id: str) -> None:
    """A backtest's gates.json in which every gate of ``baseline_id`` passed."""
    folder = home.reports / "backtest" / "2020-01-02_2021-06-30"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gates.json").write_text(json.dumps(
        {"baseline_id": baseline_id, "passed": True, "computed_at": NOW,
         "gates": [{"name": "sharpe", "value": 1.2, "threshold": 0.9, "op": ">",
                    "passed": True}]}))


def test_promote_accepts_the_override_and_logs_it(home):
    reg = promote(home, "weak", "active", NOW, force=True, reason="drill", by="ops")
    assert reg["active"] == "weak"
    last = read_registry(home)["history"][-1]
    assert last == {"slot": "active", "from": None, "to": "weak", "at": NOW, "forced": True,
                    "skill_verdict": "no_skill", "failed_gates": ["backtest_gates_missing"],
                    "reason": "drill", "by": "ops"}
    passing_gates(home, "good")
    reg = promote(home, "good", "active", NOW)  # skilled, gates pass: no override, none logged
    assert reg["active"] == "good" and "forced" not in reg["history"][-1]


def test_cli_promote_refusal_is_one_line_and_override_is_printed(home, monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("HCP_HOME", str(home.home))
    runner = CliRunner()
    res = runner.invoke(app, ["promote", "--to", "active", "--id", "weak"])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: baseline weak has skill verdict")
    res = runner.invoke(app, ["promote", "--to", "active", "--id", "weak", "--force"])
    assert res.exit_code == 2 and read_registry(home)["active"] is None
    res = runner.invoke(app, ["promote", "--to", "active", "--id", "weak", "--force",
                              "--reason", "paper test [week 1]", "--by", "alice"])
    assert res.exit_code == 0, res.output
    assert "skill gate overridden" in res.output and "paper test [week 1]" in res.output
    assert "active: weak" in res.output
    last = read_registry(home)["history"][-1]
    assert (last["by"], last["reason"], last["forced"]) == ("alice", "paper test [week 1]", True)


def test_train_promotes_only_a_skilled_baseline_into_an_empty_slot():
    assert _promotion(None, [], _rec("skilled", 0.01, 0.02, 2.5))[0]
    ok, why = _promotion(None, [], _rec("no_skill"))
    assert not ok and why.startswith("no measured skill at the plan horizon (short)")
    ok, why = _promotion(None, ["short"], _rec("skilled", 0.01, 0.02, 2.5))
    assert not ok and "leakage" in why
    ok, why = _promotion("b0", [], _rec("skilled", 0.01, 0.02, 2.5))
    assert not ok and "b0 is already active" in why
    # skilled, but no backtest has passed its gates yet: never promoted automatically
    ok, why = _promotion(None, [], _rec("skilled", 0.01, 0.02, 2.5),
                         "no backtest gates for baseline b1: run `hcp backtest --start S --end "
                         "E` first")
    assert not ok and why.startswith("no backtest gates for baseline b1")
    assert why.endswith("then `hcp promote --to active --id ID`")


# --------------------------------------------------------------------------- health and live

def _health(manifest: dict) -> dict:
    signals = pd.DataFrame({"symbol": ["A", "B"], "actionable": [True, False],
                            "signal": ["BUY", "HOLD"], "regime": ["low_vol", "med_vol"]})
    return health_report(as_of="2021-12-30", errors=[], signals=signals,
                         plan=pd.DataFrame({"ticker": ["A"]}), exposure={"top5": 0.01},
                         net_liquidity=1e5, quality={}, psi_values={}, manifest=manifest,
                         cfg=load_settings().health, alerts=[], extra={"plan_horizon": "short"})


def test_health_carries_the_verdict_and_warns_without_skill():
    h = _health({"id": "weak", "skill": _rec("no_skill")})
    ms = h["model_skill"]
    assert ms["verdict"] == "no_skill" and ms["baseline"] == "weak"
    assert ms["brier_skill"] == -0.003 and ms["ic_t"] == -0.74 and ms["horizon"] == "short"
    assert h["summary"]["status"] == "WARNING"
    warn = [w for w in h["summary"]["warnings"] if w.startswith("model skill:")]
    assert len(warn) == 1 and "verdict no_skill" in warn[0] and "\u22120.74 < 2" in warn[0]

    good = _health({"id": "good", "skill": _rec("skilled", 0.01, 0.02, 2.5)})
    assert good["model_skill"]["verdict"] == "skilled"
    assert not any(w.startswith("model skill:") for w in good["summary"]["warnings"])

    old = _health({"id": "old"})
    assert old["model_skill"]["verdict"] == "unknown"
    assert any("verdict unknown" in w for w in old["summary"]["warnings"])
    json.dumps(h, allow_nan=False)


GATE = "active model has measured skill"


def _gate(paths: Paths, settings=None):
    settings = settings or load_settings()
    return next(g for g in live_gates(paths, settings, "2021-12-30", {}) if g.name == GATE)


def test_live_gate_needs_a_skilled_active_model(home):
    assert not _gate(home).ok and "no active baseline" in _gate(home).detail
    promote(home, "weak", "active", NOW, force=True, reason="drill", by="ops")
    gate = _gate(home)
    assert not gate.ok and "verdict no_skill" in gate.detail
    with pytest.raises(LiveGateError, match=GATE):
        require_live(home, load_settings(), "2021-12-30", {})
    off = load_settings(models={"skill": {"live_requires_skill": False}})
    assert _gate(home, off).ok and "not required" in _gate(home, off).detail
    promote(home, "old", "active", NOW, force=True, reason="drill", by="ops")
    assert not _gate(home).ok and "verdict unknown" in _gate(home).detail
    passing_gates(home, "good")
    promote(home, "good", "active", NOW)
    assert _gate(home).ok


def test_demo_promotes_a_no_skill_baseline_with_the_logged_override(home, monkeypatch):
    """`hcp demo` on a market without signal: the forced override with the demo reason,
    printed, and the no-skill warning before the daily run (import/train/daily stubbed)."""
    import flows.cli as cli
    from tasks.models.pipeline import TrainResult

    monkeypatch.setenv("HCP_HOME", str(home.home))
    calls = []
    monkeypatch.setattr(cli, "data_import", lambda **kw: calls.append("import"))
    monkeypatch.setattr(cli, "_daily", lambda *a, **kw: calls.append("daily"))
    fake = TrainResult("weak", home.models / "weak", home.val, home.reports, False,
                       pd.DataFrame(), [], _rec("no_skill"), "no measured skill")
    monkeypatch.setattr(cli, "_train", lambda *a: calls.append("train") or fake)
    res = CliRunner().invoke(cli.app, ["demo"])
    assert res.exit_code == 0, res.output
    assert calls == ["import", "train", "daily"]
    text = " ".join(res.output.split())
    assert "skill gate overridden" in text and cli.DEMO_REASON in text
    assert "has no measured skill" in text
    last = read_registry(home)["history"][-1]
    assert last["to"] == "weak" and last["forced"] and last["reason"] == cli.DEMO_REASON
    assert last["by"] == "hcp demo"
