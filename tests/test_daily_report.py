"""The daily HTML report an analyst reads before the open, rendered in Debian's headless Chromium.

One hand-built session (40 names, a held long that the plan exits, names the risk penalties push
into the fusion's SELL zone, a name too dear for one lot, a policy that tightens the core bucket
cap to 20%) goes through the real decision, health and output code. The report must show the
totals (cash deployed, gross exposure, risk at stop), a funnel whose counts add up to the orders,
reasons in words for every order and for the rejections, exposure bars drawn against their caps,
the market context, and print on A4/Letter without a cut table.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.health.checks import health_report
from tasks.paths import Paths
from tasks.plan.build import SessionInputs, decide
from tasks.plan.outputs import REASON_WORDS, fmt, render_report, stop_code, write_session
from tasks.policy import Policy, policy_settings, store_version
from tasks.risk.clamps import Book, Position, exposures
from tasks.settings import load_settings
from tests.browser import chromium, needs_chromium

DAY = pd.Timestamp("2021-06-30")
N = 40
NL = 100_000.0
STATS = {"n": 1000, "base_rate": 0.1, "p_stop_given_loss": 0.2, "timeout_ret_atr": 0.1}
PAYOFF = {h: {"all": STATS, "low_vol": STATS, "med_vol": STATS, "high_vol": STATS}
          for h in ("short", "mid")}
MARKET = {"market_regime": "ranging", "mkt_vol_z": 1.234, "mkt_avg_corr": 0.4321,
          "mkt_breadth_50": 0.615, "mkt_ret_20": -0.021}


def _session(paths: Paths):
    """Decision and health of the hand-built session, with the policy stored under ``paths``."""
    settings = load_settings()
    policy = Policy.parse({**settings.policy.model_dump(mode="json"),
                           "bucket_caps": {"core": 0.20, "penny": 0.02, "fno": 0.05}})
    version = store_version(paths, policy, None, "tests: a tighter core bucket", "2021-06-30")
    syms = [f"S{i:02d}" for i in range(N)]
    rank = np.arange(N) / (N - 1)        # S39 has the highest P(win)
    features = pd.DataFrame({
        "symbol": syms, "date": DAY, "sector": [f"sector {i % 5}" for i in range(N)],
        "close_raw": [5_000.0 if s == "S38" else 50.0 for s in syms], "atr_pct": 0.02,
        "vol_20": 0.25, "vol_z": 0.0, "log_dollar_volume": np.log(5e7),
        # every third name has stopped moving with the market: a correlation-breakdown penalty
        "corr_mkt": [0.3 if i % 3 == 0 else 0.6 for i in range(N)], **MARKET})
    scores = pd.DataFrame({"symbol": syms, "regime": ["med_vol"] * 30 + ["low_vol"] * 10,
                           "p_raw_short": 0.05 + 0.1 * rank, "p_cal_short": 0.05 + 0.1 * rank,
                           "p_raw_mid": 0.3 + 0.1 * rank, "p_cal_mid": 0.3 + 0.1 * rank,
                           "q_cal_short": 0.2, "r_cal_short": 0.1, "p_sd_short": 0.0})
    book = Book(NL, {"S00": Position("S00", 20, 50.0, "core", "sector 0"),
                     "S25": Position("S25", 10, 50.0, "core", "sector 0")})
    inp = SessionInputs(as_of=DAY, features=features, scores=scores, payoff=PAYOFF,
                        thresholds={"take_profit_atr": 2.5, "stop_atr": 1.8}, model_id="m-test",
                        policy=policy, policy_version=version, book=book)
    d = decide(inp, settings)
    health = health_report(
        as_of=DAY.date().isoformat(), errors=[], signals=d.signals, plan=d.plan,
        exposure=exposures(d.book), net_liquidity=NL, quality={}, psi_values={}, manifest={},
        cfg=settings.health, alerts=d.alerts, empty_book=d.info.get("empty_book"),
        extra={"plan_horizon": "short", "market": MARKET, "sizing": d.info,
               "policy_version": version, "model": {"active": "m-test", "shadow": None}})
    return d, health, policy_settings(settings, policy)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    paths = Paths(tmp_path_factory.mktemp("daily_report"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HCP_HOME", str(paths.home))
        d, health, settings = _session(paths)
        out = write_session(paths, DAY.date().isoformat(), d.signals, d.plan, d.audit, health,
                            None)
    return d, health, settings, out


def test_fmt_is_the_one_number_format():
    assert fmt(0.0077, "pct_nl") == "0.77%" and fmt(0.2, "pct_nl") == "20.00%"
    assert fmt(0.1234, "prob") == "12.3%" and fmt(0.00197, "ret") == "+0.197%"
    assert fmt(1234.56, "usd") == "$1,235" and fmt(1.234, "z") == "+1.23"
    assert fmt(None, "prob") == fmt(float("nan"), "usd") == "n/a"


def test_audit_action_follows_the_signal_and_says_why(written):
    d, *_ = written
    audit = d.audit
    assert (audit["action"] == audit["signal"]).all()
    # the penalties pushed neutral names into the score's SELL zone; the gate held them
    held = audit.loc[(audit["score_action"] == "SELL") & (audit["signal"] == "HOLD")]
    assert len(held) > 0
    assert held["action_note"].str.startswith("score SELL; gate:").all()
    assert held["reasons"].str.contains("penalty:corr_breakdown").all()
    # a signal without an order says which step stopped it; an order needs no note
    idle = audit.loc[audit["signal"].isin(["BUY", "SELL"]) & ~audit["taken"]]
    assert len(idle) > 0 and idle["action_note"].str.contains(" signal, no order: ").all()
    assert audit.loc[audit["taken"], "action_note"].isna().all()
    # the held long with a SELL signal is exited; the name too dear for one lot is not bought
    assert d.plan.set_index("ticker").loc["S00", "action"] == "SELL"
    s38 = audit.set_index("symbol").loc["S38"]
    assert not s38["taken"] and "size:below_one_lot" in s38["action_note"]


def test_every_rejection_code_has_words(written):
    d, *_ = written
    for reasons, taken in zip(d.audit["reasons"], d.audit["taken"], strict=True):
        code = stop_code(str(reasons).split(";"), bool(taken))
        assert taken or (code in REASON_WORDS and code != "unknown"), reasons


def test_report_without_audit_or_orders_still_renders(written):
    d, health, *_ = written
    html = render_report("2021-06-30", d.plan.iloc[0:0], health)
    assert "Trade plan (0 orders)" in html and "(no audit for this session)" in html


@needs_chromium
def test_daily_report_in_headless_chromium(written, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.print_page_options import PrintOptions

    d, health, settings, out = written
    plan, audit = d.plan, d.audit
    with chromium(1280, 1600) as driver:
        find = driver.find_element
        driver.get(Path(out["report"]).as_uri())
        # totals: cash of the new entries, gross exposure of the book, risk at stop
        entries = plan.loc[~plan["reason_tags"].str.contains("exit:sell_signal")]
        cash = float(entries["position_cash"].sum())
        risk = float((entries["qty"] * (entries["entry_price"] - entries["stop"])).sum())
        assert len(entries) > 0 and len(entries) < len(plan)  # entries and one exit
        assert float(find(By.ID, "total-cash").get_attribute("data-value")) == pytest.approx(cash)
        assert find(By.ID, "total-cash").text.startswith(fmt(cash, "usd"))
        assert find(By.ID, "total-cash-pct").text.startswith(f"{fmt(cash / NL, 'pct_nl')} of net")
        assert float(find(By.ID, "total-risk").get_attribute("data-value")) == pytest.approx(risk)
        assert find(By.ID, "total-risk-pct").text.startswith(fmt(risk / NL, "pct_nl"))
        gross = health["metrics"]["exposure"]["gross"]
        assert find(By.ID, "total-gross").text.startswith(fmt(gross, "pct_nl"))
        assert find(By.ID, "total-orders").text.startswith(str(len(plan)))

        # the funnel: each step is the one before less who left there, with the reasons
        steps = find(By.ID, "funnel").find_elements(By.CSS_SELECTOR, "tr.step")
        counts = [int(s.get_attribute("data-count")) for s in steps]
        assert counts[0] == len(audit) and counts[-1] == len(plan)
        for before, step in zip(steps[:-1], steps[1:], strict=True):
            left = int(step.get_attribute("data-left"))
            assert int(step.get_attribute("data-count")) == int(
                before.get_attribute("data-count")) - left
            parts = [int(li.get_attribute("data-n"))
                     for li in step.find_elements(By.CSS_SELECTOR, "li")]
            assert sum(parts) == left
        by_key = {s.get_attribute("data-step"): s for s in steps}
        gate = by_key["signals"].text
        assert "SELL score not confirmed" in gate  # the penalties' SELL zone, held by the gate
        assert "SELL signal on a name not held" in by_key["actionable"].text

        # reasons in words: one line per order, and the rejections adding up
        whys = find(By.ID, "plan").find_elements(By.CSS_SELECTOR, "tr.why")
        assert len(whys) == len(plan)
        for row, why in zip(plan.itertuples(), whys, strict=True):
            text = why.text
            if row.action == "SELL":
                assert "Exit of a held long on a SELL signal" in text
                continue
            assert f"Expected {fmt(row.exp_pnl_net, 'ret')} per trade net of costs" in text
            assert f"P(take-profit) {fmt(row.prob_win_cal, 'prob')}" in text
            assert re.search(r"ranked \d+ of \d+ candidates", text) and "size" in text
            assert "ranging market" in text
        rej = find(By.ID, "rejections").find_elements(By.CSS_SELECTOR, "tbody tr")
        assert sum(int(r.get_attribute("data-n")) for r in rej) == len(audit) - len(plan)
        assert any(REASON_WORDS["expectancy:lower_bound"] in r.text for r in rej)

        # exposure bars against their caps: the policy's 20% core cap, 40% per sector
        bars = driver.find_elements(By.CSS_SELECTOR, "g.capbar")
        exp = health["metrics"]["exposure"]
        seen = {}
        for g in bars:
            value, cap = float(g.get_attribute("data-value")), float(g.get_attribute("data-cap"))
            track = g.find_element(By.CSS_SELECTOR, "rect.track")
            x0, full = float(track.get_attribute("x")), float(track.get_attribute("width"))
            mark = float(g.find_element(By.CSS_SELECTOR, "line.cap").get_attribute("x1"))
            use = float(g.find_element(By.CSS_SELECTOR, "rect.use").get_attribute("width"))
            assert use / (mark - x0) == pytest.approx(value / cap, abs=2e-3)
            assert mark < x0 + full
            seen[g.get_attribute("data-name")] = (value, cap)
        assert seen["core"] == pytest.approx((exp["by_bucket"]["core"], 0.20))
        assert settings.risk.cap("core") == 0.20
        for sector, value in exp["by_sector"].items():
            assert seen[sector] == pytest.approx((value, settings.risk.single_sector_max))
        assert "of cap 20.00%" in find(By.ID, "exposure-bucket").text

        # market context from the health report
        context = find(By.ID, "context").text
        for shown in ("ranging", "+1.23", "61.5%", "0.43", "-2.08%"):
            assert shown in context

        driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000

        # printable: under print media at the width of an A4/Letter page no table is cut
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        driver.set_window_size(700, 1600)
        overflow = driver.execute_script(
            "const w = document.body.getBoundingClientRect().right + 0.5;"
            "return Array.from(document.querySelectorAll('table, svg'))"
            ".filter(t => t.getBoundingClientRect().right > w).map(t => t.id || t.tagName);")
        assert overflow == []
        for width, height in ((21.0, 29.7), (21.59, 27.94)):
            po = PrintOptions()
            po.page_width, po.page_height = width, height
            pdf = base64.b64decode(driver.print_page(po))
            assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
