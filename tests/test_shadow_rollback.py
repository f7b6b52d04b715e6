"""Shadow against active, and the rollback guard: score distributions (PSI, KS), BUY win rates
and markouts, the guard's boundaries, the revert (registry, history, alert), the cooldown, and
the nightly step on a small market. Registries are hand-written in tmp homes (no training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.alerts import read_alerts
from tasks.data.adjust import adjust_bars
from tasks.data.demo import DemoSpec, generate_demo_market
from tasks.features.labels import build_labels
from tasks.io import atomic_write_json, atomic_write_parquet
from tasks.models import rollback as rb
from tasks.models import shadow as sh
from tasks.models.manifests import write_registry
from tasks.models.registry import read_registry
from tasks.paths import Paths
from tasks.settings import load_settings
from tasks.statefiles import DAMAGED, OK, RepairRequest, run_repair

NOW = "2026-01-01T00:00:00+00:00"
BASE = load_settings()
DAY = "2024-03-04"  # a Monday


def settings(**shadow):
    return BASE.model_copy(update={"shadow": BASE.shadow.model_copy(update=shadow)})


S = settings(win_rate_delta=0.05, min_samples=50, psi_limit=0.25, ks_limit=0.2,
             cooldown_sessions=2)


# --------------------------------------------------------------------------- homes

def _baseline(paths: Paths, bid: str) -> None:
    atomic_write_json(paths.models / bid / "manifest.json", {"id": bid})


def _entry(slot, frm, to, **extra):
    return {"slot": slot, "from": frm, "to": to, "at": NOW, **extra}


@pytest.fixture
def home(tmp_path) -> Paths:
    """Baselines A (first active) and B (promoted over A); A scored in the shadow slot."""
    paths = Paths(tmp_path)
    for bid in ("A", "B"):
        _baseline(paths, bid)
    write_registry(paths, {"active": "B", "shadow": "A", "history": [
        _entry("active", None, "A"), _entry("active", "A", "B"), _entry("shadow", None, "A")]})
    return paths


def comp(wr_active=0.5, n_active=100, wr_pred=0.5, n_pred=100, psi=None, ks=None,
         shadow_id="A", active_id="B"):
    """A comparison as the nightly builds it: active B against shadow ``shadow_id``."""
    return {"active_id": active_id, "shadow_id": shadow_id,
            "outcomes": {"active": {"win_rate": wr_active, "closed": n_active},
                         "shadow": {"win_rate": wr_pred, "closed": n_pred}},
            "drift": {"model": active_id, "psi": psi, "ks": ks}}


# --------------------------------------------------------------------------- PSI and KS

def test_psi_and_ks_of_identical_and_shifted_scores():
    rng = np.random.default_rng(3)
    a = rng.beta(4, 6, 5000)
    same = sh.distribution(a, a)
    assert same["psi"] == pytest.approx(0.0, abs=1e-9) and same["ks"] == 0.0
    assert same["ks_pvalue"] == pytest.approx(1.0)
    resample = sh.distribution(a, rng.beta(4, 6, 5000))
    assert resample["psi"] < 0.02 and resample["ks"] < 0.05
    shifted = sh.distribution(a, np.clip(a + 0.15, 0, 1))
    assert shifted["psi"] > 0.25 and shifted["ks"] > 0.2 and shifted["ks_pvalue"] < 1e-6
    assert sh.distribution([], a)["psi"] is None and sh.distribution([], a)["ks"] is None


def test_compare_win_rate_and_markout_of_buy_names():
    h = BASE.fusion.plan_horizon
    col = f"p_cal_{h}"
    active = pd.DataFrame({"session": ["2024-01-02"] * 4, "symbol": list("WXYZ"),
                           col: [0.6, 0.55, 0.4, 0.3], "signal": ["BUY", "BUY", "HOLD", "SELL"]})
    shadow = pd.DataFrame({"session": ["2024-01-02"] * 4, "symbol": list("WXYZ"),
                           col: [0.62, 0.4, 0.58, 0.3], "signal": ["BUY", "HOLD", "BUY", "HOLD"]})
    outcomes = pd.DataFrame({"session": ["2024-01-02"] * 4, "symbol": list("WXYZ"),
                             "win": [1.0, 0.0, 1.0, np.nan], "ret": [0.04, -0.02, 0.03, 0.01]})
    got = sh.compare(active, shadow, outcomes, BASE)
    assert got["outcomes"]["active"] == {"buys": 2, "closed": 2, "wins": 1, "win_rate": 0.5,
                                         "marked": 2, "mean_markout": pytest.approx(0.01)}
    assert got["outcomes"]["shadow"]["win_rate"] == 1.0
    assert got["outcomes"]["shadow"]["mean_markout"] == pytest.approx(0.035)
    assert got["outcomes"]["win_rate_delta"] == pytest.approx(0.5)
    assert got["scores"]["n_reference"] == 4 and got["plan_horizon"] == h
    before = sh.compare(active, shadow, None, BASE)  # outcomes not known yet
    assert before["outcomes"]["active"]["closed"] == 0
    assert before["outcomes"]["active"]["win_rate"] is None


# --------------------------------------------------------------------------- guard boundaries

def test_win_rate_exactly_at_delta_does_not_act(home):
    res = rb.guard(home, S, DAY, comp(wr_active=0.50, wr_pred=0.55), at=NOW)
    assert res.verdict == rb.HOLD and not res.acted
    assert read_registry(home)["active"] == "B"


def test_win_rate_just_beyond_delta_with_enough_samples_reverts(home):
    res = rb.guard(home, S, DAY, comp(wr_active=0.50, wr_pred=0.5501, n_active=50, n_pred=50),
                   at=NOW)
    assert res.verdict == rb.ROLLBACK and res.acted
    reg = read_registry(home)
    assert reg["active"] == "A" and reg["shadow"] == "A"
    last = reg["history"][-1]
    assert last["event"] == "rollback" and (last["from"], last["to"]) == ("B", "A")
    assert last["session"] == DAY and "trails predecessor" in last["reason"]
    assert last["figures"]["win_rate"]["closed_active"] == 50
    alerts = read_alerts(home, DAY)
    assert [a["code"] for a in alerts] == ["model_rollback"]
    assert alerts[0]["level"] == "ERROR" and "B reverted to A" in alerts[0]["text"]
    state = rb.read_guard_state(home)
    assert state["last_action_session"] == DAY and state["until_session"] == "2024-03-06"


def test_win_rate_beyond_delta_with_too_few_samples_does_not_act(home):
    for n_a, n_p in ((49, 100), (100, 49)):
        res = rb.guard(home, S, DAY, comp(wr_active=0.3, wr_pred=0.6, n_active=n_a, n_pred=n_p),
                       at=NOW)
        assert res.verdict == rb.HOLD and "50 needed each" in res.line()
    assert read_registry(home)["active"] == "B" and read_alerts(home) == []


@pytest.mark.parametrize(("psi", "ks", "acts"), [
    (0.25, None, False), (0.2501, None, True),     # PSI limit 0.25
    (None, 0.2, False), (None, 0.2001, True),      # KS limit 0.2
    (0.25, 0.2, False), (0.1, 0.3, True),
])
def test_drift_boundaries(home, psi, ks, acts):
    res = rb.guard(home, S, DAY, comp(psi=psi, ks=ks), at=NOW)
    assert res.acted is acts
    assert read_registry(home)["active"] == ("A" if acts else "B")


def test_predecessor_not_in_shadow_slot_is_not_scored_drift_still_acts(home):
    calm = rb.guard(home, S, DAY, comp(wr_active=0.2, wr_pred=0.9, shadow_id="C"), at=NOW)
    assert calm.verdict == rb.HOLD and "predecessor not scored" in calm.line()
    res = rb.guard(home, S, DAY, comp(wr_active=0.2, wr_pred=0.9, shadow_id="C", psi=0.4),
                   at=NOW)
    assert res.acted and res.triggers == ["score PSI 0.400 > 0.25"]


def test_no_predecessor_does_not_revert(tmp_path):
    paths = Paths(tmp_path)
    _baseline(paths, "A")
    write_registry(paths, {"active": "A", "shadow": None,
                           "history": [_entry("active", None, "A")]})
    res = rb.guard(paths, S, DAY, comp(active_id="A", shadow_id=None, psi=0.9), at=NOW)
    assert res.verdict == rb.NO_PREDECESSOR and not res.acted
    assert "nothing to revert to" in res.line()
    assert read_registry(paths)["active"] == "A" and read_alerts(paths) == []
    assert not rb.guard_path(paths).exists()


def test_predecessor_without_baseline_on_disk_does_not_revert(home):
    (home.models / "A" / "manifest.json").unlink()
    res = rb.guard(home, S, DAY, comp(psi=0.9), at=NOW)
    assert res.verdict == rb.NO_PREDECESSOR and read_registry(home)["active"] == "B"


def test_predecessor_skips_rollbacks_and_repairs():
    reg = {"active": "B", "history": [_entry("active", None, "A"), _entry("active", "A", "B"),
                                      _entry("active", "B", "C"),
                                      _entry("active", "C", "B", event="rollback")]}
    assert rb.predecessor_of(reg) == "A"   # B's own promotion was over A
    reg["history"].append(_entry("active", "B", "A", event="rollback"))
    reg["active"] = "A"
    assert rb.predecessor_of(reg) is None  # A was first: never back to the model it replaced
    assert rb.predecessor_of({"active": None, "history": []}) is None


# --------------------------------------------------------------------------- cooldown

def test_cooldown_blocks_until_its_last_session_then_allows(home):
    assert rb.guard(home, S, DAY, comp(psi=0.9), at=NOW).acted  # B -> A, until 2024-03-06
    # the operator puts B back on purpose; A is its predecessor again
    reg = read_registry(home)
    reg["history"].append(_entry("active", "A", "B"))
    reg["active"] = "B"
    write_registry(home, reg)
    for day in ("2024-03-05", "2024-03-06"):
        res = rb.guard(home, S, day, comp(psi=0.9), at=NOW)
        assert res.verdict == rb.COOLDOWN and not res.acted
        assert res.cooldown == {"last_action_session": DAY, "until_session": "2024-03-06"}
        assert read_registry(home)["active"] == "B"
    res = rb.guard(home, S, "2024-03-07", comp(psi=0.9), at=NOW)
    assert res.acted and read_registry(home)["active"] == "A"
    assert rb.read_guard_state(home)["until_session"] == "2024-03-11"  # over the weekend
    events = [e for e in read_registry(home)["history"] if e.get("event") == "rollback"]
    assert [e["session"] for e in events] == [DAY, "2024-03-07"]
    assert len(read_alerts(home)) == 2


def test_cooldown_zero_sessions_blocks_only_the_same_session(home):
    s0 = settings(cooldown_sessions=0)
    assert rb.guard(home, s0, DAY, comp(psi=0.9), at=NOW).acted
    assert rb.read_guard_state(home)["until_session"] == DAY


def test_damaged_guard_file_does_not_act_and_is_repaired_from_history(home):
    assert rb.guard(home, S, DAY, comp(psi=0.9), at=NOW).acted
    reg = read_registry(home)
    reg["history"].append(_entry("active", "A", "B"))
    reg["active"] = "B"
    write_registry(home, reg)
    rb.guard_path(home).write_text("{not json")
    res = rb.guard(home, S, "2024-03-20", comp(psi=0.9), at=NOW)
    assert res.verdict == rb.DAMAGED and read_registry(home)["active"] == "B"
    from tasks.statespecs import guard_probe

    assert guard_probe(home, S, None)[0].state == DAMAGED
    run_repair(home, S, "rollback-guard", RepairRequest(by="ops", reason="garbled", at=NOW))
    assert guard_probe(home, S, None)[0].state == OK
    assert rb.read_guard_state(home)["until_session"] == "2024-03-06"


# --------------------------------------------------------------------------- nightly step

def _market() -> pd.DataFrame:
    spec = DemoSpec(seed=5, n_symbols=6, n_sectors=3, start="2021-01-04", end="2021-08-31",
                    inject_bad_rows=False)
    return adjust_bars(generate_demo_market(spec).bars.pipe(
        lambda b: b.assign(date=b["date"].astype("datetime64[ns]"))))


def _write_session(paths: Paths, day: str, symbols: list[str], rng, models: dict) -> None:
    h = BASE.fusion.plan_horizon
    n = len(symbols)
    p_act, p_sh = rng.uniform(0.3, 0.7, n), rng.uniform(0.3, 0.7, n)
    sig = pd.DataFrame({"symbol": symbols, "p_cal_short": p_act, "p_cal_mid": p_act,
                        "signal": np.where(p_act > 0.5, "BUY", "HOLD")})
    sig[f"p_cal_{h}"] = p_act
    atomic_write_parquet(paths.data / "daily" / day / "signals_with_gates.parquet", sig)
    shadow = pd.DataFrame({"shadow_model_id": models["shadow"], "symbol": symbols,
                           "p_cal_short": p_act, "p_cal_mid": p_act,
                           "shadow_p_cal_short": p_sh, "shadow_p_cal_mid": p_sh,
                           "shadow_signal": np.where(p_sh > 0.5, "BUY", "HOLD")})
    atomic_write_parquet(paths.data / "daily" / day / "shadow_signals.parquet", shadow)
    atomic_write_json(paths.reports / "health" / f"daily_health_{day}.json", {"model": models})


def test_nightly_check_compares_over_known_outcomes_and_writes_its_report(home):
    bars = _market()
    days = sorted(bars["date"].unique())
    day = pd.Timestamp(days[-1]).date().isoformat()
    symbols = sorted(bars["symbol"].unique())
    rng = np.random.default_rng(1)
    compared = [pd.Timestamp(d).date().isoformat() for d in days[-30:]]
    for d in compared:
        _write_session(home, d, symbols, rng, {"active": "B", "shadow": "A"})
    # an earlier session of another pair is not compared
    _write_session(home, pd.Timestamp(days[-40]).date().isoformat(), symbols, rng,
                   {"active": "A", "shadow": None})
    out = rb.nightly_check(home, S, day, bars, lookback_sessions=60, at=NOW)
    assert out["sessions"] == compared and out["active_id"] == "B" and out["shadow_id"] == "A"
    # the expected figures, straight from the labels (the horizon's last sessions are open)
    h = BASE.fusion.plan_horizon
    lab = build_labels(bars, BASE).assign(
        session=lambda f: pd.DatetimeIndex(f["date"]).strftime("%Y-%m-%d"))
    sig = pd.concat(sh.active_frame(home, d, h) for d in compared)
    got = sig.loc[sig["signal"] == "BUY"].merge(lab, on=["session", "symbol"])
    known = got[f"label_{h}"].dropna()
    act = out["outcomes"]["active"]
    assert act["buys"] == len(got) and act["closed"] == len(known) > 0
    assert act["closed"] < act["buys"]  # sessions whose horizon has not ended: no outcome yet
    assert act["win_rate"] == pytest.approx(known.mean())
    assert act["mean_markout"] == pytest.approx(np.expm1(got[f"fwd_return_{h}"]).mean())
    assert out["outcomes"]["shadow"]["closed"] > 0 and out["scores"]["psi"] is not None
    assert out["drift"]["psi"] is None and "30 session(s) as active" in out["drift"]["reason"]
    assert out["guard"]["verdict"] in (rb.HOLD, rb.ROLLBACK)
    written = json.loads(sh.comparison_path(home, day).read_text())
    assert written["guard"]["verdict"] == out["guard"]["verdict"]
    assert written["line"].startswith("shadow A vs active B")
    assert not list((home.reports / "nightly").glob("*.json"))  # the realised records' folder


def test_active_drift_uses_first_and_last_sessions_in_the_slot(home):
    rng = np.random.default_rng(2)
    days = [d.date().isoformat() for d in pd.bdate_range("2024-01-02", periods=6)]
    s = settings(drift_sessions=2)
    h = BASE.fusion.plan_horizon
    for i, d in enumerate(days):
        _write_session(home, d, ["X", "Y", "Z"], rng, {"active": "B", "shadow": "A"})
        if i >= 4:  # the last two sessions score much higher
            path = home.data / "daily" / d / "signals_with_gates.parquet"
            frame = pd.read_parquet(path)
            frame[f"p_cal_{h}"] = frame[f"p_cal_{h}"] + 0.5
            atomic_write_parquet(path, frame)
    got = sh.active_drift(home, s, days[-1], "B")
    assert got["reference_sessions"] == days[:2] and got["recent_sessions"] == days[-2:]
    assert got["ks"] == 1.0 and got["psi"] > 1
    assert sh.active_drift(home, settings(drift_sessions=4), days[-1], "B")["psi"] is None
