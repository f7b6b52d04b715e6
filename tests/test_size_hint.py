"""The learned size hint: arm rule, reward, walk-forward without look-ahead, the gate, the
registry, and the plan that uses it (no RL-missing halving, the hint's version on every row)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tasks.backtest import sizehint as shb
from tasks.execution.episodes import episodes_path
from tasks.paths import Paths
from tasks.plan import sizehint as sh
from tasks.plan.build import decide
from tasks.plan.outputs import output_paths
from tasks.settings import load_settings
from tests.test_plan_decide import inputs

SETTINGS = load_settings()
COEF = {"returns": 0.6, "turnover": 0.2, "drawdown": 0.2}


def with_hint(**changes) -> object:
    return SETTINGS.model_copy(update={"size_hint": SETTINGS.size_hint.model_copy(update=changes)})


def test_arm_rule_moves_away_from_one_only_when_the_gain_beats_its_uncertainty():
    arms = (0.5, 1.0, 1.5)
    mean = np.array([0.01, -0.01, 0.001, 0.0, np.nan, 0.01])
    se = np.array([0.001, 0.001, 0.01, 0.0, 0.001, np.nan])
    got = sh.choose_arms(mean, se, arms, pessimism=1.0)
    # 1.5*0.01 - 0.5*0.001 = 0.0145 > 0.01; 0.5*(-0.01) - 0.5*0.001 = -0.0055 > -0.01;
    # 1.5*0.001 - 0.5*0.01 < 0.001; a zero mean ties at 1.0; unknown predictions keep 1.0
    assert got.tolist() == [1.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    # without pessimism the noisy positive row moves up too
    assert sh.choose_arms(mean[2:3], se[2:3], arms, pessimism=0.0).tolist() == [1.5]


def test_reward_per_unit_is_the_policy_mix_by_hand():
    rho = np.array([0.05, -0.04])
    got = sh.reward_per_unit(rho, COEF, penalty_rate=0.01)
    assert got[0] == pytest.approx(0.6 * 0.05 - 0.2 * 0.01 * 2)
    assert got[1] == pytest.approx(0.6 * -0.04 - 0.2 * 0.04 - 0.2 * 0.01 * 2)
    # a REWARD_ENGINEER answer that weighs drawdown only makes every trade a cost
    assert (sh.reward_per_unit(rho, {"drawdown": 1.0}, 0.0) <= 0).all()


def synthetic(n_per_year: int = 400, years=range(2010, 2016), signal: float = 1.0,
              seed: int = 7) -> pd.DataFrame:
    """Episodes whose return depends on p_cal_short when ``signal`` > 0 (noise otherwise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for y in years:
        days = pd.bdate_range(f"{y}-01-04", f"{y}-12-20")
        for i in range(n_per_year):
            entry = days[rng.integers(0, len(days) - 8)]
            p = rng.uniform(0.2, 0.6)
            rho = signal * 0.25 * (p - 0.4) + rng.normal(0, 0.03)
            rows.append({"episode_id": f"{y}-{i}", "symbol": f"S{i % 50}", "side": "long",
                         "plan_session": str(entry.date()), "entry_session": str(entry.date()),
                         "exit_date": str((entry + pd.offsets.BDay(5)).date()),
                         "pnl": rho * 1000.0, "rho": rho, "regime": "med_vol",
                         "vol_20": rng.uniform(0.15, 0.45), "size_mult": 0.5,
                         "p_cal_short": p, "p_cal_mid": rng.uniform(0.3, 0.5),
                         "exp_r": rng.normal(0, 0.1), "vol_z": rng.normal(), "book_drawdown": 0.0,
                         "bucket_use": 0.1, "held_frac": 0.0})
    t = pd.DataFrame(rows).sort_values("exit_date", kind="stable").reset_index(drop=True)
    t["reward"] = sh.reward_per_unit(t["rho"].to_numpy(), COEF, 0.0)
    return t


def test_fit_recovers_which_states_pay_and_sizes_them_up():
    table = synthetic()
    model = sh.fit_hint(table, SETTINGS)
    probe = table.head(3).copy()
    probe["p_cal_short"] = [0.25, 0.45, 0.58]
    mean, se = model.predict(probe)
    assert mean[0] < 0 < mean[1] < mean[2] and (se > 0).all()
    assert model.multipliers(probe).tolist() == [0.5, 1.5, 1.5]
    again = sh.SizeHint.from_json(json.loads(json.dumps(model.to_json())))
    assert again.multipliers(probe).tolist() == [0.5, 1.5, 1.5]
    # a hint fitted on a few episodes is too unsure to move from the logged size
    unsure = sh.fit_hint(table.head(30), with_hint(pessimism=5.0))
    assert unsure.multipliers(probe.iloc[1:2]).tolist() == [1.0]


def test_walk_forward_sizes_a_year_only_from_episodes_closed_before_it():
    table = synthetic()
    wf = sh.walk_forward(table, SETTINGS)
    assert [y["year"] for y in wf.years] == [2011, 2012, 2013, 2014, 2015]
    assert all(y["fitted"] for y in wf.years)
    first = wf.years[0]
    assert first["train_episodes"] == int((pd.to_datetime(table["exit_date"])
                                           < "2011-01-01").sum())
    # rewriting every episode from 2013 on changes nothing in 2011 and 2012
    later = pd.to_datetime(table["entry_session"]) >= "2013-01-01"
    changed = table.copy()
    changed.loc[later, "reward"] = -changed.loc[later, "reward"] * 3
    wf2 = sh.walk_forward(changed, SETTINGS)
    early = lambda w: w.table.loc[pd.to_datetime(w.table["entry_session"]) < "2013-01-01",  # noqa: E731
                                  ["episode_id", "m_hint"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(early(wf), early(wf2))
    # a year with too few earlier episodes stays at the logged size
    thin = sh.walk_forward(table, with_hint(min_train_episodes=10_000))
    assert not any(y["fitted"] for y in thin.years) and (thin.table["m_hint"] == 1.0).all()


def days_of(table: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.bdate_range(table["entry_session"].min(), table["exit_date"].max())


def test_gate_passes_a_hint_that_knows_which_trades_pay_and_fails_one_on_noise():
    good = synthetic(signal=1.0)
    g = shb.gate(sh.walk_forward(good, SETTINGS), days_of(good), 100_000.0, SETTINGS)
    assert g["passed"], g["reason"]
    h, c, v = (g["rules"][k] for k in ("hint", "constant", "vol_target"))
    assert h["dsr"] > c["dsr"] and h["dsr"] > v["dsr"]
    assert h["max_drawdown"] <= min(c["max_drawdown"], v["max_drawdown"])

    noise = synthetic(signal=0.0, seed=3)
    g = shb.gate(sh.walk_forward(noise, SETTINGS), days_of(noise), 100_000.0, SETTINGS)
    assert not g["passed"] and g["reason"]
    # nothing to judge: a single year has no out-of-sample part
    one = synthetic(years=[2010])
    g = shb.gate(sh.walk_forward(one, SETTINGS), days_of(one), 100_000.0, SETTINGS)
    assert not g["passed"] and "nothing to judge" in g["reason"]


def test_resized_returns_book_each_episode_at_exit_from_its_logged_size():
    t = pd.DataFrame({"pnl": [100.0, -50.0, 30.0], "size_mult": [0.5, 0.5, 1.0],
                      "exit_date": ["2020-01-02", "2020-01-02", "2020-01-06"]})
    days = pd.bdate_range("2020-01-01", "2020-01-07")
    r = shb.rule_returns(t, np.array([1.0, 1.5, 0.5]), days, 1000.0)
    assert r.loc["2020-01-02"] == pytest.approx((200.0 - 150.0) / 1000.0)
    assert r.loc["2020-01-06"] == pytest.approx(15.0 / 1000.0)
    assert r.loc["2020-01-03"] == 0.0 and len(r) == len(days)


def register(paths: Paths, usable: bool, schema: str | None = None) -> str:
    table = synthetic()
    wf = sh.walk_forward(table, SETTINGS)
    man = {"schema_hash": schema or sh.schema_hash(), "training_span": ["2010-01-04", "2015-12-31"],
           "gate": {"passed": usable, "reason": "by hand"}, "usable": usable,
           "reward": sh.reward_of(inputs().policy)}
    return sh.register_hint(paths, man, wf.final, "2026-01-01T00:00:00+00:00")


def test_registry_status_says_which_case_applies(tmp_path):
    paths = Paths(tmp_path)
    assert sh.hint_status(paths, SETTINGS).case == "missing"
    hid = register(paths, usable=False)
    st = sh.hint_status(paths, SETTINGS)
    assert (st.case, st.hint_id, st.model) == ("not_used", hid, None)
    assert "failed its gate: by hand" in st.reason
    forced = sh.hint_status(paths, with_hint(require_gate=False))
    assert forced.case == "used" and forced.model is not None and "FAILED" in forced.reason
    hid2 = register(paths, usable=True)
    st = sh.hint_status(paths, SETTINGS)
    assert st.case == "used" and st.hint_id == hid2 and st.model is not None
    assert sh.hint_status(paths, with_hint(enabled=False)).case == "not_used"
    # the policy's reward is the one it was fitted for; a REWARD_ENGINEER change stops it
    policy = inputs().policy
    assert sh.hint_status(paths, SETTINGS, policy).case == "used"
    changed = type(policy).parse({**policy.model_dump(mode="json"),
                                  "reward_coefficients": {"returns": 0.2, "turnover": 0.2,
                                                          "drawdown": 0.6}})
    st = sh.hint_status(paths, SETTINGS, changed)
    assert st.case == "not_used" and "refit it" in st.reason
    # point in time: a session inside the episodes it learned from does not use it
    assert sh.hint_status(paths, SETTINGS, policy, pd.Timestamp("2016-01-04")).case == "used"
    st = sh.hint_status(paths, SETTINGS, policy, pd.Timestamp("2015-12-31"))
    assert st.case == "not_used" and "not before this session" in st.reason
    reg = sh.read_hint_registry(paths)
    assert [h["hint_id"] for h in reg["history"]] == [hid, hid2] and reg["current"] == hid2
    register(paths, usable=True, schema="other")
    assert "another state schema" in sh.hint_status(paths, SETTINGS).reason
    sh.hint_registry_path(paths).write_text("{torn")
    from tasks.statefiles import StateFileError
    with pytest.raises(StateFileError, match="size-hint registry"):
        sh.hint_status(paths, SETTINGS)


def test_a_plan_with_a_usable_hint_sizes_by_it_and_stamps_its_version(tmp_path):
    paths = Paths(tmp_path)
    register(paths, usable=True)
    status = sh.hint_status(paths, SETTINGS)
    inp = inputs()
    inp.size_hint = status
    d = decide(inp, SETTINGS)
    assert not any(a.startswith("RL models unavailable") for a in d.alerts)
    assert not d.signals["rl_missing"].any() and len(d.plan) > 0
    tags = d.plan["reason_tags"]
    assert tags.str.contains(rf"size:hint\(x[0-9.]+,{status.hint_id}\)").all()
    assert not tags.str.contains("rl_missing").any()
    m = d.signals["hint_mult"].to_numpy()
    assert np.isin(m, SETTINGS.size_hint.arms).all()
    assert np.allclose(d.signals["rl_size_hint"], np.log(m))
    assert np.allclose(d.signals["size_mult"], m)
    # the state the hint saw is in the signals, for the next fit
    assert set(sh.PLAN_STATE) <= set(d.signals.columns)

    # a hint that failed its gate changes nothing: RL-missing mode, sizes halved
    register(paths, usable=False)
    inp = inputs()
    inp.size_hint = sh.hint_status(paths, SETTINGS)
    d = decide(inp, SETTINGS)
    assert "RL models unavailable—reduced position sizing" in d.alerts
    assert d.plan["reason_tags"].str.contains(r"size:rl_missing\(x0.5\)").all()
    assert (d.signals["size_mult"] == 0.5).all() and d.signals["hint_mult"].isna().all()


def test_episode_table_joins_each_episode_to_the_state_its_plan_saw(tmp_path):
    root = Paths(tmp_path)
    plan_day = "2021-07-01"  # the plan of an entry on 2021-07-02
    sig = pd.DataFrame({"symbol": ["AAA", "BBB"], "regime": ["low_vol", "high_vol"],
                        "vol_20": [0.2, 0.4], "p_cal_short": [0.3, 0.5], "p_cal_mid": [0.4, 0.4],
                        "exp_r": [0.1, -0.1], "vol_z": [0.0, 1.0], "book_drawdown": [0.01, 0.01],
                        "bucket_use": [0.2, 0.2], "held_frac": [0.0, 0.5],
                        "size_mult": [0.5, 0.5]})
    where = output_paths(root, plan_day)["signals"]
    where.parent.mkdir(parents=True)
    sig.to_parquet(where)
    eps = pd.DataFrame({"episode_id": ["e1", "e2", "e3"], "symbol": ["BBB", "AAA", "ZZZ"],
                        "side": "long", "entry_session": "2021-07-02",
                        "exit_date": ["2021-07-09", "2021-07-12", "2021-07-12"],
                        "size": [10.0, 20.0, 5.0], "entry_price": [50.0, 25.0, 10.0],
                        "pnl": [25.0, -10.0, 1.0]})
    episodes_path(root).parent.mkdir(parents=True, exist_ok=True)
    eps.to_parquet(episodes_path(root))
    t = shb.episode_table(root, SETTINGS, COEF, 0.01)
    assert t["episode_id"].tolist() == ["e1", "e2"]  # ZZZ was not in the plan: left out
    e1 = t.iloc[0]
    assert e1["plan_session"] == plan_day and e1["held_frac"] == 0.5 and e1["regime"] == "high_vol"
    assert e1["rho"] == pytest.approx(25.0 / 500.0)
    assert e1["reward"] == pytest.approx(0.6 * 0.05 - 0.2 * 0.01 * 2)


def test_realised_drawdown_of_the_book():
    eps = pd.DataFrame({"episode_id": ["a", "b", "c"], "exit_date": ["2021-01-04", "2021-01-05",
                                                                      "2021-01-06"],
                        "pnl": [300.0, -500.0, 100.0]})
    assert sh.realised_drawdown(eps, 10_000.0) == pytest.approx(400.0 / 10_000.0)
    assert sh.realised_drawdown(None, 10_000.0) == 0.0
    assert math.isfinite(sh.realised_drawdown(eps.iloc[:0], 10_000.0))


def test_report_header_line_says_which_case_applies():
    from tasks.plan.outputs import size_hint_line

    assert size_hint_line(None) is None
    assert size_hint_line({"case": "used", "hint_id": "sh-1"}) == "used (sh-1)"
    assert "RL-missing" in size_hint_line({"case": "missing", "hint_id": None, "reason": "x"})
    assert size_hint_line({"case": "not_used", "hint_id": "sh-1", "reason": "failed its gate"}
                          ).endswith("failed its gate")
