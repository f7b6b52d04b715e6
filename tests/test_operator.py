"""The operator surface against a real uvicorn server and Debian's headless Chromium.

A replay with intraday over a week of the demo market gives real state files; the server is
`hcp serve --replay <folder>` in a subprocess on 127.0.0.1. The API must report what the state
files hold, refuse POSTs without the token (401), and a forced demo must be persisted and shown
by `hcp status --json`. The browser test loads the dashboard, checks its KPIs against the state
files (the book's session, that session's vol regime and blend weights used, the equity curve
with its benchmark), clicks force-demo with the token, sees its alert first and saves a
screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.browser import chromium, free_port, needs_chromium, wait_until_serving
from tests.conftest import SMALL_ENV, use_home

TOKEN = "op-token-for-tests"
SPAN = ("2021-07-01", "2021-07-09")



@pytest.fixture(scope="module")
def replayed(trained_home, tmp_path_factory):
    """A copy of the trained demo home with a one-week replay with intraday in it."""
    from flows.replay import run_replay
    from tasks.paths import Paths

    home = Paths(tmp_path_factory.mktemp("operator") / "home")
    shutil.copytree(trained_home.home, home.home)
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, home)
        res = run_replay(*SPAN, with_intraday=True)
    folder = Path(res.summary_path).parent
    return folder, {**os.environ, **SMALL_ENV, "HCP_HOME": str(home.home),
                    "HCP_OPERATOR_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def server(replayed):
    folder, env = replayed
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--replay", str(folder),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(proc, base, lambda: proc.stdout.read().decode())
    yield base, folder / "sandbox"
    proc.terminate()
    proc.wait(10)


def _state(root: Path):
    state = root / "data" / "state"
    equity = pd.read_parquet(state / "equity.parquet")
    last = equity["session"].iloc[-1]
    return (json.loads((state / "portfolio.json").read_text()), equity,
            json.loads((state / "sessions" / f"{last}.json").read_text()))


def _health(root: Path, day: str) -> dict:
    return json.loads((root / "reports" / "health" / f"daily_health_{day}.json").read_text())


def test_status_endpoints_report_the_state_files(server):
    base, root = server
    portfolio, equity, last = _state(root)
    assert httpx.get(base + "/healthz").json() == {"status": "ok"}
    spec = httpx.get(base + "/openapi.json").json()
    for path in ("/api/gpt5-status", "/api/risk-status", "/api/model-stats", "/api/force-demo",
                 "/api/clear-quarantine", "/healthz"):
        assert path in spec["paths"]
    risk = httpx.get(base + "/api/risk-status").json()
    assert risk["net_liquidity"] == pytest.approx(portfolio["net_liquidity"])
    assert risk["day_pnl_pct"] == pytest.approx(last["day_pnl_pct"])
    assert risk["drawdown"] == pytest.approx(equity["drawdown"].iloc[-1])
    assert {p["symbol"] for p in risk["positions"]} == {p["symbol"] for p in portfolio["positions"]}
    assert all(p["exposure"] <= p["cap"] + 1e-9 for p in risk["positions"])
    assert risk["kill_switch"]["state"] in ("armed", "tripped")
    # one session: the book's, with that session's market regime
    assert risk["session"] == portfolio["as_of_session"] == equity["session"].iloc[-1]
    regime = _health(root, risk["session"])["metrics"]["regime"]
    assert risk["vol_z"] == pytest.approx(regime["mkt_vol_z"])
    assert risk["market_regime"] == regime["market_regime"]
    budget = httpx.get(base + "/api/gpt5-status").json()
    assert budget["limit"] == 3 and 0 <= budget["used"] <= 3
    stats = httpx.get(base + "/api/model-stats").json()
    assert stats["active"] == "b-demo" and set(stats["validation"]["active"]) == {"short", "mid"}


def test_posts_need_the_token_and_force_demo_is_persisted(server, replayed):
    base, root = server
    folder, env = replayed
    body = {"by": "ops", "reason": "drill: force demo"}
    assert httpx.post(base + "/api/force-demo", json=body).status_code == 401
    assert httpx.post(base + "/api/force-demo", json=body,
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(base + "/api/clear-quarantine", json=body).status_code == 401
    ok = httpx.post(base + "/api/force-demo", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["forced_demo"] is True
    saved = json.loads((root / "data" / "state" / "operator.json").read_text())
    assert saved["by"] == "ops" and saved["reason"] == "drill: force demo"
    out = subprocess.run([sys.executable, "-m", "flows.cli", "status", "--json", "--replay",
                          str(folder)], env=env, capture_output=True, text=True, check=True)
    status = json.loads(out.stdout)
    assert status["forced_demo"]["forced_demo"] is True and status["mode"] == "demo"
    gate = next(g for g in status["live_gates"] if g["gate"] == "demo not forced by an operator")
    assert gate["ok"] is False
    # nothing to clear: the rules refuse, with the reason
    refused = httpx.post(base + "/api/clear-quarantine", json=body,
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 409 and "no quarantine" in refused.json()["detail"]


@needs_chromium
def test_dashboard_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tasks.operator.dashboard import pct
    from tasks.operator.status import vol_badge, weights_used

    base, root = server
    portfolio, equity, last = _state(root)
    health = _health(root, portfolio["as_of_session"])
    with chromium(1300, 1500) as driver:
        driver.get(base + "/")
        text = {k: driver.find_element(By.ID, k).text for k in
                ("kpi-mode", "kpi-nl", "kpi-daypnl", "kpi-dd", "kpi-session", "gpt-calls",
                 "policy-version", "kill-switch", "kpi-vol", "weights-used")}
        assert text["kpi-nl"] == f"{portfolio['net_liquidity']:,.2f}"
        assert text["kpi-daypnl"] == pct(last["day_pnl_pct"])
        assert text["kpi-dd"] == pct(equity["drawdown"].iloc[-1])
        assert text["kpi-session"] == equity["session"].iloc[-1] == portfolio["as_of_session"]
        assert text["kpi-vol"] == vol_badge(health["metrics"]["regime"]["mkt_vol_z"])
        # the demo has no RL model: the weights the fusion applied are the predictors' only
        used = weights_used(health)
        assert used["mode"] == "predictors_only" and text["weights-used"] == used["text"]
        assert "rl 0.00" in text["weights-used"]
        series = driver.find_elements(By.CSS_SELECTOR, "#equity-svg polyline.series")
        assert len(series) == 2 and series[1].get_attribute("data-series").startswith(
            "equal-weight buy-and-hold")
        assert all(len(s.get_attribute("points").split()) == len(equity) + 1 for s in series)
        assert text["gpt-calls"].endswith("/3") and text["policy-version"].startswith("pol-")
        rows = driver.find_elements(By.CSS_SELECTOR, "#per-name tr")
        assert len(rows) - 1 == max(len(portfolio["positions"]), 1)
        driver.find_element(By.ID, "op-token").send_keys(TOKEN)
        driver.find_element(By.ID, "op-by").send_keys("browser")
        driver.find_element(By.ID, "op-reason").send_keys("clicked in the dashboard")
        driver.find_element(By.ID, "force-demo").click()
        WebDriverWait(driver, 10).until(lambda d: json.loads(
            (root / "data" / "state" / "operator.json").read_text())["by"] == "browser")
        WebDriverWait(driver, 10).until(lambda d: "Demo mode forced by browser" in d.page_source)
        assert driver.find_element(By.ID, "kpi-mode").text == "demo"
        alerts = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#alert-list li")]
        assert "Demo mode forced by browser" in alerts[0]  # newest first
        assert "Demo mode forced by ops" in alerts[1]
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
