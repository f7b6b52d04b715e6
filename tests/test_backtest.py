"""`hcp backtest`: every session scored by the fold model trained before it, decided as live,
paper-executed and marked by the nightly run, under the backtest's own root.

On the demo market with the small baseline (walk-forward test blocks 2019, 2020 and 2021 up to
the training end 2021-06-30), the span 2021-06-01 .. 2021-07-30 crosses the training end: its
June sessions are scored by the 2021 fold, its July sessions by the baseline itself. Checked:
no session is scored by a model whose training reached it; every plan keeps the clamps; the
summary, tearsheet and gates are written with the benchmark's figures beside the strategy's;
the live home is untouched; a backtest killed midway resumes and ends with the same bytes as
an uninterrupted one; the command line prints the headline and refuses a span before the
first test block in one line.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from tasks.models.registry import promote
from tasks.paths import Paths
from tests.conftest import NOW, use_home
from tests.plan_checks import assert_plan_sane

START, END = "2021-06-01", "2021-07-30"
SUMMARY_KEYS = {"sharpe", "sortino", "cagr", "max_drawdown", "hit_rate", "avg_r", "turnover",
                "kill_switch_days", "escalations_per_day", "benchmark"}


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def snapshot(home: Path, skip: tuple[str, ...]) -> dict[str, str]:
    return {p.relative_to(home).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*"))
            if p.is_file() and not p.relative_to(home).as_posix().startswith(skip)}


class Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def ran(trained_home, tmp_path_factory):
    """One uninterrupted backtest, and one killed after 15 sessions then resumed."""
    from flows.backtest import run_backtest

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in ("whole", "killed"):
            paths = Paths(tmp_path_factory.mktemp(name) / "home")
            shutil.copytree(trained_home.home, paths.home)
            use_home(mp, paths)
            mp.setenv("HCP_LOCAL_BACKEND", "template")
            promote(paths, "b-demo", "shadow", NOW)  # scored beside the active one
            before = snapshot(paths.home, ("reports/backtest/",))
            if name == "killed":
                def stop(i, _n, _msg):
                    if i == 15:
                        raise Killed("killed after 15 sessions")
                with pytest.raises(Killed):
                    run_backtest(START, END, progress=stop)
                res = run_backtest(START, END)
            else:
                res = run_backtest(START, END)
            out[name] = {"paths": paths, "res": res, "before": before,
                         "after": snapshot(paths.home, ("reports/backtest/",))}
    return out


def test_every_session_is_scored_out_of_sample_and_keeps_the_clamps(ran):
    res = ran["whole"]["res"]
    home = ran["whole"]["paths"]
    root = res.folder / "sandbox"
    table = pd.read_csv(res.folder / "sessions.csv")
    assert len(table) == res.sessions >= 40
    models = set()
    for day in table["date"]:
        plan = pd.read_csv(root / "val" / "plans" / day / "trade_plan.csv")
        health = json.loads((root / "reports" / "health" / f"daily_health_{day}.json")
                            .read_text())
        assert_plan_sane(plan, health["net_liquidity"])
        model_id = health["model"]["active"]
        models.add(model_id)
        manifest = json.loads((home.models / model_id / "manifest.json").read_text())
        assert pd.Timestamp(manifest["training_span"]["end"]) < pd.Timestamp(day), (day, model_id)
        assert (plan["model_id"] == model_id).all()
    # every executed session went through the whole nightly run: outcomes and a post-mortem
    # that names its reasoner
    executed = table["date"].iloc[1:]
    for day in executed:
        assert (root / "reports" / "nightly" / f"{day}.json").is_file(), day
        text = (root / "reports" / "postmortems" / f"{day}.md").read_text()
        assert "template" in text, day
    assert set(table["postmortem_by"].dropna()) == {"template"}
    assert models == {"b-demo/folds/" + p.name for p in (home.models / "b-demo" / "folds")
                      .iterdir() if p.name.startswith("2021")} | {"b-demo"}, models


def test_summary_tearsheet_and_gates(ran):
    res = ran["whole"]["res"]
    summary = json.loads((res.folder / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS and summary["out_of_sample"] is True
    assert {"sharpe", "cagr", "max_drawdown"} <= set(summary["benchmark"])
    assert summary["sessions"] == res.sessions - 1  # the first session's plan runs on the 2nd
    gates = json.loads((res.folder / "gates.json").read_text())
    assert gates["baseline_id"] == "b-demo" and isinstance(gates["passed"], bool)
    names = {g["name"] for g in gates["gates"]}
    assert len(names) >= 9
    html = (res.folder / "tearsheet.html").read_text()
    for src in pd.Series(html.split('src="')[1:]).str.split('"').str[0]:
        assert (res.folder / src).is_file(), src
    assert "benchmark" in html.lower()
    eq = pd.read_parquet(res.folder / "sandbox" / "data" / "state" / "equity.parquet")
    assert len(eq) == summary["sessions"]
    # the shadow (here the same baseline, by its own folds) is scored beside the active one
    shadow = summary["shadow"]
    assert shadow["shadow_id"] == "b-demo" and shadow["sessions"] == res.sessions
    assert shadow["scores"]["psi"] == pytest.approx(0.0, abs=1e-9)
    assert shadow["outcomes"]["active"] == shadow["outcomes"]["shadow"]


def test_the_live_home_is_untouched(ran):
    for name in ("whole", "killed"):
        assert ran[name]["after"] == ran[name]["before"], name
        assert not (ran[name]["paths"].data / "state").exists()


def test_a_killed_backtest_resumes_to_the_same_bytes(ran):
    whole, killed = ran["whole"]["res"], ran["killed"]["res"]
    assert killed.resumed and not whole.resumed
    homes = (str(ran["whole"]["paths"].home).encode(), str(ran["killed"]["paths"].home).encode())
    for name in ("summary.json", "sessions.csv", "gates.json"):
        # the plan paths in sessions.csv name each home
        a = (whole.folder / name).read_bytes().replace(homes[0], b"HOME")
        b = (killed.folder / name).read_bytes().replace(homes[1], b"HOME")
        if name == "gates.json":  # computed_at differs; every figure must not
            a, b = (json.loads(x) for x in (a, b))
            a.pop("computed_at", None)
            b.pop("computed_at", None)
        assert a == b, name
    for rel in ("data/state/equity.parquet", "data/state/portfolio.json",
                "data/state/trust.json"):
        assert ((whole.folder / "sandbox" / rel).read_bytes()
                == (killed.folder / "sandbox" / rel).read_bytes()), rel


def test_the_backtest_runs_the_nightly_trust_step_on_its_own_episodes(ran):
    """As live: each session's nightly credits the walk's closed episodes to the sources and
    may re-weigh the walk's own policy; the live home keeps no trust state."""
    res, paths = ran["whole"]["res"], ran["whole"]["paths"]
    root = res.folder / "sandbox"
    nights = sorted((root / "reports" / "nightly").glob("20*.json"))
    assert len(nights) >= 30
    reports = [json.loads(p.read_text())["trust"] for p in nights]
    assert all(r["enabled"] and r["session"] == p.stem for r, p in zip(reports, nights, strict=True))
    state = json.loads((root / "data" / "state" / "trust.json").read_text())
    counted = sum(r.get("episodes_counted", 0) for r in reports)
    assert counted >= 1                       # the walk closed episodes and trust saw them
    assert len(state["counted"]) == counted   # each counted once, by the night that saw it
    assert not (paths.home / "data" / "state" / "trust.json").exists()


def test_hint_fit_learns_from_the_walks_episodes_and_registers_an_unjudged_hint(ran,
                                                                              monkeypatch):
    """`hcp hint fit` reads the walk's episodes with the state their plans saw. Two months hold
    no out-of-sample year, so the hint is registered, not judged and not used; the plans keep
    the RL-missing mode."""
    from flows.cli import app
    from tasks.backtest.sizehint import backtest_root, episode_table
    from tasks.plan.sizehint import hint_status, read_hint_registry
    from tasks.settings import load_settings

    res, paths = ran["whole"]["res"], ran["whole"]["paths"]
    monkeypatch.setenv("HCP_HOME", str(paths.home))
    settings = load_settings()
    table = episode_table(backtest_root(paths, res.folder), settings, {"returns": 1.0}, 0.0)
    episodes = pd.read_parquet(res.folder / "sandbox" / "data" / "state" / "episodes.parquet")
    assert len(table) >= 1 and len(table) == len(episodes)   # every episode found its plan
    assert table["size_mult"].eq(0.5).all()                  # traded in the RL-missing mode
    assert table["reward"].to_numpy() == pytest.approx(table["rho"].to_numpy())
    out = CliRunner().invoke(app, ["hint", "fit", "--backtest", res.folder.name])
    assert out.exit_code == 0, out.output
    assert "gate: FAILED" in out.output and "nothing to judge" in out.output
    assert "registered, NOT used" in out.output
    reg = read_hint_registry(paths)
    assert reg["current"] and reg["history"][-1]["usable"] is False
    assert hint_status(paths, settings).case == "not_used"
    bad = CliRunner().invoke(app, ["hint", "fit", "--backtest", "1999-01-04_1999-02-26"])
    assert bad.exit_code == 2 and "no backtest at" in bad.output


def test_cli_prints_headline_and_refuses_a_span_without_a_fold(trained_copy, harness,
                                                               monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("HCP_LOCAL_BACKEND", "template")
    runner = CliRunner()
    res = runner.invoke(app, ["backtest", "--start", "2018-06-01", "--end", "2018-06-29"])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "no out-of-sample model for 2018-06-01" in lines[0], res.output
    res = runner.invoke(app, ["backtest", "--start", "2021-07-01", "--end", "2021-07-09"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "strategy" in text and "benchmark" in text and "sharpe" in text
    assert "promotion gates:" in text and "tearsheet" in text


def test_a_session_escalated_live_reuses_its_recorded_answer(trained_copy, monkeypatch):
    """The backtest's escalations run the configured chain, except on a session the live home
    escalated: its recorded answer is bounded again against the backtest's own policy, and no
    backend is asked."""
    from flows.backtest import run_backtest

    home = trained_copy
    monkeypatch.setenv("HCP_LOCAL_BACKEND", "template")
    monkeypatch.setenv("HCP_ESCALATION__REGIME_VOL_Z", "0")   # the regime trigger fires daily
    monkeypatch.setenv("HCP_ESCALATION__REGIME_CORR", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    day = "2021-07-07"
    answer = {"regime_label": "volatile",
              "blend_weights_delta": {"short": 0.1, "mid": -0.05, "rl": 0.0},
              "bucket_caps_delta": {"penny": -0.5, "fno": 0.0, "core": -0.02},
              "do_not_trade_list": []}
    live = home.reports / "escalations" / f"{day}.json"
    live.parent.mkdir(parents=True)
    live.write_text(json.dumps({"session": day, "calls": [
        {"call_type": "REGIME_AUDITOR", "backend": "remote:gpt-5", "response": answer}]}))
    before = live.read_bytes()
    res = run_backtest("2021-07-06", "2021-07-08")
    root = res.folder / "sandbox" / "reports" / "escalations"
    calls = {d: json.loads((root / f"{d}.json").read_text())["calls"]
             for d in ("2021-07-06", day, "2021-07-08")}
    reused = calls[day][0]
    assert reused["backend"] == "remote:gpt-5" and reused["status"] == "applied"
    assert [a["backend"] for a in reused["attempts"]] == ["recorded:remote:gpt-5"]
    assert reused["response"] == answer
    for other in ("2021-07-06", "2021-07-08"):   # no live answer: the configured chain
        tried = [a["backend"] for a in calls[other][0]["attempts"]]
        assert tried[0].startswith("remote") and not any(t.startswith("recorded")
                                                          for t in tried), tried
    assert live.read_bytes() == before


def test_decisions_only_say_there_is_no_pnl(trained_copy, monkeypatch):
    """--no-with-intraday decides the sessions only: no P&L, so the return gates fail and say
    why, and nothing breaks."""
    from flows.backtest import run_backtest

    monkeypatch.setenv("HCP_LOCAL_BACKEND", "template")
    res = run_backtest("2021-07-06", "2021-07-09", with_intraday=False)
    summary = json.loads((res.folder / "summary.json").read_text())
    assert summary["sessions"] == 0 and summary["with_intraday"] is False
    assert summary["sharpe"] is None and summary["benchmark"]["sharpe"] is None
    gates = json.loads((res.folder / "gates.json").read_text())
    assert gates["passed"] is False
    assert all(not g["passed"] for g in gates["gates"] if g["name"] in ("sharpe", "psr"))
    table = pd.read_csv(res.folder / "sessions.csv")
    assert len(table) == 4 and (res.folder / "tearsheet.html").is_file()


def test_other_trading_settings_are_another_configuration_not_a_resume(tmp_path):
    """A backtest rerun with another fusion, sizing or size-hint setting starts afresh and is
    another trial; where the work runs (runtime) changes neither."""
    from flows.backtest import config_of, trial_id
    from tasks.settings import load_settings

    home = Paths(tmp_path)
    base = load_settings()
    def cfg(**sections):
        s = base.model_copy(update={k: getattr(base, k).model_copy(update=v)
                                    for k, v in sections.items()})
        return config_of(home, s, "b1", True)
    ref = cfg()
    for changed in (cfg(size_hint={"require_gate": False}), cfg(fusion={"expectancy_z": 0.0}),
                    cfg(guardrails={"rl_missing_size_factor": 1.0})):
        assert changed != ref and trial_id(changed) != trial_id(ref)
    same = cfg(runtime={"score_block_sessions": 5})
    assert same == ref and trial_id(same) == trial_id(ref)
