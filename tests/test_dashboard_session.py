"""`hcp status` and the dashboard show ONE session: the book's.

A hand-built home: a small demo bar store, a book at D (portfolio, equity up to D), the health
JSON and plan of D (market vol z 7.5, predictors-only weights, an empty book) and of D+1
(planned, not executed: vol z 0.2, weights with the RL hint, orders). Nothing of D+1 may leak
into the picture of D; D+1 is named as the next plan only. The equity curve is drawn against an
equal-weight buy-and-hold of D's universe from the bar store. The browser test loads the page
from `hcp serve` (no operator token set: the warning line and closed POSTs are checked too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from tasks.alerts import TEXTS, raise_alert, render
from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.data.store import load_bars
from tasks.operator import status
from tasks.operator.dashboard import (
    calibration_chart,
    calibration_points,
    cell,
    money,
    pct,
    render_dashboard,
    signed,
)
from tasks.paths import Paths
from tasks.plan.build import _weights_info
from tasks.settings import load_settings
from tests.browser import chromium, free_port, needs_chromium, wait_until_serving
from tests.conftest import use_home
from tests.exec_helpers import plan_row, write_book, write_plan

D, NEXT = "2020-03-17", "2020-03-18"
EXECUTED = ["2020-03-10", "2020-03-11", "2020-03-12", "2020-03-13", "2020-03-16", D]
BASE = "2020-03-09"
POLICY_MIX = {"short": 0.4, "mid": 0.3, "rl": 0.3}
EMPTY = {"buy_signals": 2, "orders": 0, "step": "gate:high_vol", "by_step": {"gate:high_vol": 2},
         "message": "empty book: 2 BUY signal(s), no order; zeroed by gate:high_vol 2"}


def health(day: str, vol_z: float, regime: str, scored: int, rl_missing: int,
           empty: dict | None = None) -> dict:
    """A health JSON in the daily flow's shape (the fields the operator's picture reads)."""
    return {"date": day, "summary": {"status": "WARNING" if empty else "OK", "warnings": []},
            "policy_version": "pol-test", "empty_book": empty,
            "metrics": {"regime": {"market_regime": regime, "mkt_vol_z": vol_z},
                        "coverage": {"scored": scored},
                        "quality": {"brier": 0.2, "ece": 0.01, "horizon": "short"}},
            "sizing": {"weights_used": _weights_info(POLICY_MIX), "rl_missing": rl_missing,
                       "horizon_weights": {"used": POLICY_MIX, "zeroed": {}}}}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def build_home(paths: Paths) -> None:
    src = DemoSource(paths.demo, seed=3, n_symbols=6, n_sectors=2, start="2019-09-03",
                     end="2020-04-30", inject_bad_rows=False)
    import_bars(src, load_settings(), paths)
    symbols = sorted(load_bars(paths.store, start=D, end=D)["symbol"].astype(str))
    write_book(paths, 99_000.0, [{"symbol": symbols[0], "qty": 10, "price": 100.0}], as_of=D)
    nl = [100_000.0, 100_400.0, 99_000.0, 97_500.0, 98_200.0, 99_100.0, 100_000.0]
    peak = pd.Series(nl).cummax()
    state = paths.data / "state"
    pd.DataFrame({"session": EXECUTED, "start_net_liquidity": nl[:-1], "end_net_liquidity": nl[1:],
                  "day_pnl_pct": [b / a - 1 for a, b in zip(nl[:-1], nl[1:], strict=True)],
                  "drawdown": list((1 - pd.Series(nl) / peak)[1:]),
                  "kill_switch": [False] * len(EXECUTED)}).to_parquet(state / "equity.parquet")
    reports = paths.reports / "health"
    write_json(reports / f"daily_health_{D}.json",
               health(D, 7.5, "high_vol", len(symbols), len(symbols), EMPTY))
    write_json(reports / f"daily_health_{NEXT}.json", health(NEXT, 0.2, "trending", len(symbols), 0))
    write_plan(paths, D, [])  # D's book is empty
    write_plan(paths, NEXT, [plan_row(symbols[1], 10, 50.0, 1.0), plan_row(symbols[2], 5, 80.0, 2.0)])
    signals = paths.data / "daily" / D / "signals_with_gates.parquet"
    signals.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"symbol": symbols}).to_parquet(signals)
    raise_alert(paths, "rl_missing", session=D, at=f"{D}T13:30:00Z")
    raise_alert(paths, "reasoner_offline", session="2020-03-16", at="2020-03-16T13:30:00Z",
                data={"source": "session_start"})
    raise_alert(paths, "data_stall", session=D, at=f"{D}T15:00:00+00:00")  # written last, newest
    raise_alert(paths, "kill_switch", session="2020-03-12", at="2020-03-12T19:00:00Z",
                level="CRITICAL")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Paths:
    paths = Paths(tmp_path_factory.mktemp("session_home"))
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, paths)
        build_home(paths)
    return paths


@pytest.fixture()
def env(home, monkeypatch) -> Paths:
    use_home(monkeypatch, home)
    monkeypatch.delenv("HCP_OPERATOR_TOKEN", raising=False)
    return home


def test_the_picture_is_the_book_session_not_a_later_health_file(env):
    s = status.snapshot(env, load_settings())
    assert s["session"] == D and s["risk"]["session"] == D and s["view"]["source"] == "book"
    assert s["view"]["next_plan"] == NEXT and s["view"]["next_plan_orders"] == 2
    assert s["risk"]["vol_z"] == 7.5 and s["risk"]["vol_regime"] == "Extreme"
    assert s["risk"]["market_regime"] == "high_vol"
    assert s["empty_book"]["session"] == D and s["empty_book"]["step"] == "gate:high_vol"
    assert s["plan"] == [] and s["plan_found"]  # D's plan (empty), not NEXT's two orders
    assert s["models"]["calibration"]["horizon"] == "short"
    assert [r["session"] for r in s["equity"]] == EXECUTED
    used = s["learning"]["weights_used"]
    assert used["mode"] == "predictors_only" and used["session"] == D
    assert used["applied"] == {"predictors_only": pytest.approx({"short": 4 / 7, "mid": 3 / 7,
                                                                 "rl": 0.0})}
    assert used["text"].startswith("short 0.57, mid 0.43, rl 0.00 — predictors only")


def test_without_a_book_the_latest_planned_session_is_shown(tmp_path):
    paths = Paths(tmp_path)
    assert status.session_view(paths)["session"] is None
    write_json(paths.reports / "health" / "daily_health_2020-03-16.json",
               health("2020-03-16", 2.5, "high_vol", 4, 4))
    write_plan(paths, "2020-03-17", [])
    view = status.session_view(paths)
    assert view == {"session": "2020-03-17", "source": "plan", "planned": True, "next_plan": None,
                    "latest_plan": None, "later_plans": 0}
    assert status.session_health(paths) is None  # no health of 2020-03-17: none is borrowed
    assert status.market_regime(status.session_health(paths, "2020-03-16"))["vol_regime"] == "Extreme"


def test_weights_used_follow_the_rl_hints_the_fusion_had():
    h = health(D, 0.0, "trending", 10, 0)
    assert status.weights_used(h)["mode"] == "with_rl"
    assert status.weights_used(h)["text"] == "short 0.40, mid 0.30, rl 0.30 (RL size hint for all 10 names)"
    h["sizing"]["rl_missing"] = 4
    mixed = status.weights_used(h)
    assert mixed["mode"] == "mixed" and set(mixed["applied"]) == {"with_rl", "predictors_only"}
    assert "for 6 names with an RL size hint" in mixed["text"] and "for 4 without" in mixed["text"]
    h["sizing"]["horizon_weights"]["zeroed"] = {"mid": "weight:mid=0(no skill)"}
    assert status.weights_used(h)["text"].endswith("weight 0 for lack of skill: mid")
    assert status.weights_used({"date": D}) is None  # an old health JSON without the record


def test_alerts_newest_first_and_the_reasoner_text_says_what_happens(env):
    alerts = status.recent_alerts(env)
    assert [a["code"] for a in alerts] == ["data_stall", "rl_missing", "reasoner_offline",
                                           "kill_switch"]
    offline = render("reasoner_offline", {})
    assert "RL-only" not in offline and "deterministic fusion" in offline
    assert alerts[2]["text"] == offline
    # an alert logged with an older wording is shown with the current one
    old = {"at": "2020-03-18T00:00:00Z", "session": NEXT, "code": "reasoner_offline",
           "data": {}, "text": "Local reasoner offline—using RL-only mode"}
    assert status._current_text(old) == offline
    assert status._current_text({**old, "code": "not_a_code"}) == old["text"]
    assert "reasoner_offline" in TEXTS


def test_negative_zero_and_decimals():
    assert pct(-1e-7) == "0.00%" and pct(-0.0004, 1) == "0.0%" and pct(-0.0123) == "-1.23%"
    assert pct(0.5, 0) == "50%" and pct(None) == "n/a" and pct(float("nan")) == "n/a"
    assert money(-0.001) == "0.00" and money(-1234.5) == "-1,234.50"
    assert signed(-0.001) == "0.00" and signed(7.5) == "+7.50" and signed(-1.64) == "-1.64"
    assert cell(-0.00001) == "0.0000" and cell(-12.5) == "-12.50"
    assert status.vol_badge(-1.6) == "Normal" and status.vol_badge(1.5) == "High"


def test_calibration_chart_only_with_enough_bins():
    orders = [{"prob_win_cal": 0.3 + i / 100, "win": i % 2} for i in range(9)]
    html = calibration_chart(calibration_points(orders), n_orders=9)
    assert "<svg" not in html and "needs 15 closed orders" in html and "has 9" in html
    orders = [{"prob_win_cal": 0.2 + i / 50, "win": i % 3 == 0} for i in range(15)]
    points = calibration_points(orders)
    assert len(points) == 3 and [n for _, _, n in points] == [5, 5, 5]
    assert calibration_chart(points).count("<circle") == 3


def test_equity_against_equal_weight_buy_and_hold(env):
    bench = status.equity_vs_benchmark(env, D)
    assert bench["labels"] == [BASE, *EXECUTED] and bench["universe"] == 6
    assert bench["book"][0] == 100.0 and bench["book"][-1] == pytest.approx(100.0)
    assert bench["book"][3] == pytest.approx(97.5)
    px = load_bars(env.store, start=BASE, end=D).pivot(index="date", columns="symbol",
                                                       values="adj_close")
    expected = (px / px.iloc[0]).mean(axis=1) * 100
    assert bench["benchmark"] == pytest.approx(list(expected))
    html = render_dashboard(status.snapshot(env, load_settings()))
    assert html.count('class="series series-') == 2 and "equal-weight buy-and-hold (6 names)" in html
    assert "the 6 symbols scored for the plan of 2020-03-17" in html


def test_status_terminal_and_json_show_one_session(env):
    from flows.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["status"], catch_exceptions=False, env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert f"session {D} (the book's)" in out
    assert f"next plan: {NEXT} (planned, not executed, 2 orders)" in out
    assert "Extreme (z +7.50)" in out and "Normal" not in out
    assert f"blend weights used ({D}): short 0.57, mid 0.43, rl 0.00 — predictors only" in out
    assert out.index("Data feed interrupted") < out.index("RL models unavailable") \
        < out.index("Local reasoner offline") < out.index("Kill-switch armed")
    assert "RL-only" not in out and "-0.00%" not in out
    js = json.loads(runner.invoke(app, ["status", "--json"], catch_exceptions=False).output)
    assert js["risk"]["session"] == D and js["risk"]["next_plan"] == NEXT
    assert js["risk"]["vol_regime"] == "Extreme" and js["empty_book"]["session"] == D
    assert js["learning"]["weights_used"]["mode"] == "predictors_only"


def test_token_warning(monkeypatch):
    from tasks.operator.api import token_warning

    settings = load_settings()
    monkeypatch.delenv(settings.operator.serve.token_env, raising=False)
    line = token_warning(settings)
    assert "\n" not in line and settings.operator.serve.token_env in line and "401" in line
    monkeypatch.setenv(settings.operator.serve.token_env, "  ")
    assert token_warning(settings) == line
    monkeypatch.setenv(settings.operator.serve.token_env, "t")
    assert token_warning(settings) is None



@pytest.fixture(scope="module")
def served(home, tmp_path_factory):
    """`hcp serve` over the home with no operator token set; its stderr goes to a file."""
    env = {k: v for k, v in os.environ.items() if k != "HCP_OPERATOR_TOKEN"}
    env.update(HCP_HOME=str(home.home))
    port = free_port()
    err = tmp_path_factory.mktemp("serve") / "stderr.txt"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=err.open("w"))
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(proc, base, lambda: err.read_text())
    yield base, err
    proc.terminate()
    proc.wait(10)


def test_serve_warns_without_a_token_and_posts_are_closed(served):
    base, err = served
    body = {"by": "ops", "reason": "drill: force demo"}
    refused = httpx.post(base + "/api/force-demo", json=body,
                         headers={"Authorization": "Bearer anything"})
    assert refused.status_code == 401 and "HCP_OPERATOR_TOKEN is not set" in refused.json()["detail"]
    risk = httpx.get(base + "/api/risk-status").json()
    assert risk["session"] == D and risk["vol_regime"] == "Extreme" and risk["next_plan"] == NEXT
    warning = [line for line in err.read_text().splitlines() if "no operator token" in line]
    assert len(warning) == 1 and "POST /api/force-demo" in warning[0] and "401" in warning[0]


@needs_chromium
def test_dashboard_shows_the_book_session_in_headless_chromium(served, tmp_path):
    from selenium.webdriver.common.by import By

    base, _ = served
    with chromium(1300, 1500) as driver:
        driver.get(base + "/")
        text = {k: driver.find_element(By.ID, k).text for k in
                ("kpi-session", "session-date", "next-plan", "kpi-vol", "kpi-volz", "weights-used",
                 "empty-book", "equity-note")}
        assert text["kpi-session"] == D and text["session-date"] == D
        assert text["next-plan"].startswith(f"next plan: {NEXT} (planned, not executed; 2 orders")
        assert text["kpi-vol"] == "Extreme" and text["kpi-volz"] == "z +7.50, high_vol"
        assert text["weights-used"].startswith("short 0.57, mid 0.43, rl 0.00 — predictors only")
        assert text["empty-book"].startswith(f"Session {D}: EMPTY BOOK")
        assert "of 2020-03-17" in text["equity-note"]
        svg = driver.find_element(By.ID, "equity-svg")
        lines = svg.find_elements(By.CSS_SELECTOR, "polyline.series")
        assert [ln.get_attribute("data-series") for ln in lines] == [
            "book", "equal-weight buy-and-hold (6 names)"]
        assert all(len(ln.get_attribute("points").split()) == len(EXECUTED) + 1 for ln in lines)
        legend = [t.text for t in svg.find_elements(By.CSS_SELECTOR, "text.legend")]
        assert legend[0].endswith("book: 100.00") and "buy-and-hold" in legend[1]
        items = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#alert-list li")]
        assert "Data feed interrupted" in items[0] and "Kill-switch" in items[-1]
        page = driver.page_source
        assert "RL-only" not in page and "-0.00%" not in page and "-0.0%" not in page
        assert "Not enough closed orders" in driver.find_element(By.ID, "calibration").text
        shot = tmp_path / "dashboard_session.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
