"""The backtest's analytics and tearsheet: figures equal empyrical's on the same series (252
sessions a year), trade and activity figures, short spans without trades, and a tearsheet whose
sections and charts are all there, deterministic, and load in headless Chromium."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import empyrical as ep
import numpy as np
import pandas as pd
import pytest

from tasks.backtest.analytics import (
    GROUP_KEYS,
    TRADING_DAYS,
    BacktestFrames,
    drawdown,
    figures_by,
    growth,
    monthly_returns,
    rolling_sharpe,
    summary_figures,
)
from tasks.backtest.tearsheet import CHARTS, SURVIVORSHIP, show, write_tearsheet
from tests.browser import chromium, needs_chromium

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("verdict", "caveats", "survivorship", "headline", "gates", "equity", "monthly",
            "rolling-sharpe", "exposure", "costs", "r-multiples", "by-year", "by-regime",
            "by-policy")
GATES = {"passed": False, "gates": [
    {"name": "sharpe", "value": 0.61, "threshold": 0.8, "op": ">", "passed": False,
     "source": "seed 000 Promotion Criteria", "note": "below <the> threshold"},
    {"name": "max_drawdown", "value": 0.05, "threshold": 0.08, "op": "<", "passed": True,
     "note": ""},
    {"name": "custom", "value": 2.5, "threshold": 3, "passed": False, "note": "",
     "kind": "ratio"}]}


def make_frames(n: int = 300, n_trades: int = 60, seed: int = 3) -> BacktestFrames:
    """Synthetic sessions (two policy versions, three volatility regimes) and closed trades."""
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2023-10-02", periods=n)
    returns = rng.normal(6e-4, 0.009, n)
    daily = pd.DataFrame({
        "equity": 100_000 * np.cumprod(1 + returns),
        "returns": returns,
        "benchmark_returns": rng.normal(4e-4, 0.011, n),
        "gross_exposure": rng.uniform(0.2, 0.9, n),
        "turnover": rng.uniform(0.0, 0.25, n),
        "costs": rng.uniform(0.0, 40.0, n),
        "vol_regime": rng.choice(["low", "normal", "high"], n),
        "policy_version": np.where(np.arange(n) < n // 2, "p001", "p002"),
        "kill_switch": np.isin(np.arange(n), [n // 3, n // 3 + 1]),
        "escalations": rng.integers(0, 3, n),
        "orders": rng.integers(0, 6, n),
        "risk_gates_held": True,
    }, index=idx)
    entry = rng.integers(0, max(n - 6, 1), n_trades)
    exit_ = np.minimum(entry + rng.integers(1, 6, n_trades), n - 1)
    r = rng.normal(0.15, 1.1, n_trades)
    r[::7] = np.nan  # some episodes have no initial risk recorded
    trades = pd.DataFrame({
        "symbol": rng.choice(["AAA", "BBB", "CCC"], n_trades),
        "side": "BUY", "bucket": "core",
        "entry_session": idx[entry], "exit_session": idx[exit_],
        "pnl": rng.normal(15.0, 120.0, n_trades), "r_multiple": r,
        "policy_version": np.where(exit_ < n // 2, "p001", "p002"),
        "model_id": "m1",
    })
    meta = {"start": str(idx[0].date()), "end": str(idx[-1].date()), "baseline_id": "b-7",
            "universe": 20, "survivorship_bias": True, "reasoner": "smollm2",
            "out_of_sample": True, "note": "Costs <modelled> as fees & half the spread."}
    return BacktestFrames(daily=daily, trades=trades, meta=meta)


def no_trades(frames: BacktestFrames) -> BacktestFrames:
    return BacktestFrames(frames.daily, frames.trades.iloc[0:0], dict(frames.meta))


@pytest.fixture(scope="module")
def frames() -> BacktestFrames:
    return make_frames()


@pytest.fixture(scope="module")
def sheet(frames, tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("tearsheet")
    path = write_tearsheet(folder, frames, summary_figures(frames), GATES)
    return path, path.read_text()


# --------------------------------------------------------------------------- analytics


def test_summary_figures_are_empyricals_at_252_sessions(frames):
    s = summary_figures(frames)
    r = frames.daily["returns"]
    assert s["sharpe"] == pytest.approx(ep.sharpe_ratio(r, period="daily"))
    assert s["sharpe"] == pytest.approx(ep.sharpe_ratio(r, annualization=252))
    assert s["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert s["sharpe"] != pytest.approx(ep.sharpe_ratio(r, annualization=365))
    assert TRADING_DAYS == 252
    assert s["sortino"] == pytest.approx(ep.sortino_ratio(r, annualization=252))
    assert s["cagr"] == pytest.approx(ep.cagr(r, annualization=252))
    assert s["cagr"] == pytest.approx(ep.annual_return(r, period="daily"))
    assert s["volatility"] == pytest.approx(ep.annual_volatility(r, annualization=252))
    assert s["max_drawdown"] == pytest.approx(-ep.max_drawdown(r))
    assert s["max_drawdown"] > 0
    assert s["total_return"] == pytest.approx(ep.cum_returns_final(r))


def test_benchmark_figures_are_empyricals(frames):
    b = summary_figures(frames)["benchmark"]
    r = frames.daily["benchmark_returns"]
    assert b["sharpe"] == pytest.approx(ep.sharpe_ratio(r, annualization=252))
    assert b["sortino"] == pytest.approx(ep.sortino_ratio(r, annualization=252))
    assert b["cagr"] == pytest.approx(ep.cagr(r, annualization=252))
    assert b["volatility"] == pytest.approx(ep.annual_volatility(r, annualization=252))
    assert b["max_drawdown"] == pytest.approx(-ep.max_drawdown(r))


def test_trade_activity_and_control_figures(frames):
    s = summary_figures(frames)
    d, t = frames.daily, frames.trades
    assert s["trades"] == len(t) == 60
    assert s["hit_rate"] == pytest.approx((t["pnl"] > 0).sum() / len(t))
    with_r = t["r_multiple"].dropna()
    assert len(with_r) < len(t)
    assert s["avg_r"] == pytest.approx(with_r.sum() / len(with_r))
    assert s["turnover"] == pytest.approx(d["turnover"].mean())
    assert s["exposure"] == pytest.approx(d["gross_exposure"].mean())
    assert s["costs_total"] == pytest.approx(d["costs"].sum())
    assert s["kill_switch_days"] == 2 and isinstance(s["kill_switch_days"], int)
    assert s["escalations_per_day"] == pytest.approx(d["escalations"].sum() / len(d))
    assert s["sessions"] == 300
    json.dumps(s, allow_nan=False)  # JSON-safe


def test_infinite_and_undefined_figures_are_none():
    f = make_frames(n=20, n_trades=0)
    f.daily["returns"] = 0.002  # no losing session: Sortino infinite, Sharpe undefined
    s = summary_figures(f)
    assert s["sortino"] is None and s["sharpe"] is None and s["max_drawdown"] == 0.0
    assert s["hit_rate"] is None and s["avg_r"] is None and s["trades"] == 0
    json.dumps(s, allow_nan=False)


def test_figures_by_groups(frames):
    r = frames.daily["returns"]
    for key in GROUP_KEYS:
        rows = figures_by(frames, key)
        assert sum(row["sessions"] for row in rows) == len(frames.daily)
        assert sum(row["trades"] for row in rows) == len(frames.trades)
        json.dumps(rows, allow_nan=False)
    years = figures_by(frames, "year")
    assert [row["group"] for row in years] == ["2023", "2024"]
    for row in years:
        sub = r[r.index.year == int(row["group"])]
        assert row["return"] == pytest.approx(ep.cum_returns_final(sub))
        assert row["sharpe"] == pytest.approx(ep.sharpe_ratio(sub, annualization=252))
        assert row["max_drawdown"] == pytest.approx(-ep.max_drawdown(sub))
    policies = {row["group"]: row for row in figures_by(frames, "policy_version")}
    assert list(policies) == ["p001", "p002"]
    t = frames.trades
    mine = t[t["policy_version"] == "p002"]
    assert policies["p002"]["trades"] == len(mine)
    assert policies["p002"]["hit_rate"] == pytest.approx((mine["pnl"] > 0).mean())
    regimes = {row["group"]: row for row in figures_by(frames, "vol_regime")}
    assert set(regimes) == {"low", "normal", "high"}
    high = r[frames.daily["vol_regime"] == "high"]
    assert regimes["high"]["sharpe"] == pytest.approx(ep.sharpe_ratio(high, annualization=252))
    with pytest.raises(ValueError):
        figures_by(frames, "weekday")


def test_chart_series_come_from_empyrical(frames):
    r = frames.daily["returns"]
    assert drawdown(r).min() == pytest.approx(ep.max_drawdown(r))
    assert growth(r).iloc[-1] == pytest.approx(100 * (1 + ep.cum_returns_final(r)))
    roll = rolling_sharpe(r, 63)
    assert len(roll) == len(r) - 62
    assert roll.iloc[-1] == pytest.approx(ep.sharpe_ratio(r.iloc[-63:], annualization=252))
    assert rolling_sharpe(r.iloc[:40], 63).empty
    table = monthly_returns(r)
    assert table.at[2024, 3] == pytest.approx(ep.cum_returns_final(r["2024-03"]))
    assert table.at[2024, "year"] == pytest.approx(ep.cum_returns_final(r["2024"]))


@pytest.mark.parametrize("n", [0, 1, 5])
def test_short_span_without_trades(n, tmp_path):
    f = no_trades(make_frames(n=max(n, 1)))
    f = BacktestFrames(f.daily.iloc[:n], f.trades, f.meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summary_figures(f)
        by = {k: figures_by(f, k) for k in GROUP_KEYS}
        path = write_tearsheet(tmp_path, f, s, None)
    json.dumps(s, allow_nan=False)
    json.dumps(by, allow_nan=False)
    assert s["sessions"] == n and s["trades"] == 0 and s["hit_rate"] is None
    assert s["avg_r"] is None
    if n == 5:
        assert s["sharpe"] == pytest.approx(ep.sharpe_ratio(f.daily["returns"], annualization=252))
        assert s["max_drawdown"] is not None
    html = path.read_text()
    assert f"The span ({n} session" in html and "shorter than the 63-session window" in html
    assert "No trades closed in the backtest" in html
    assert "No promotion gates were evaluated" in html and 'id="gates"' not in html
    assert not (tmp_path / CHARTS["rolling"]).exists()
    assert not (tmp_path / CHARTS["r_multiples"]).exists()
    for src in re.findall(r'<img[^>]* src="([^"]+)"', html):
        assert (tmp_path / src).read_bytes().startswith(PNG_MAGIC)


# --------------------------------------------------------------------------- tearsheet


def test_tearsheet_sections_and_charts(sheet, frames):
    path, html = sheet
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    # verdict first, then the headline figures, then the charts
    assert html.index('id="verdict"') < html.index('id="headline"') < html.index('id="equity"')
    assert "DO NOT PROMOTE" in html and "2 of 3 promotion gates failed" in html
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert sorted(srcs) == sorted(CHARTS.values())
    for src in srcs:
        data = (path.parent / src).read_bytes()
        assert data.startswith(PNG_MAGIC), src
        assert b"tIME" not in data and b"Software" not in data and b"matplotlib" not in data
        from PIL import Image

        with Image.open(path.parent / src) as im:
            im.verify()
    s = summary_figures(frames)
    for key, kind in (("sharpe", "ratio"), ("cagr", "mkt_ret"), ("max_drawdown", "pct_nl")):
        row = re.search(rf'data-figure="{key}">.*?class="strategy">([^<]+)<.*?'
                        r'class="benchmark">([^<]+)<', html, re.S)
        assert row.groups() == (show(s[key], kind), show(s["benchmark"][key], kind))
    assert show(s["hit_rate"], "prob") in html and show(s["costs_total"], "usd") in html
    # gates table: a row per gate with value, threshold, passed and note
    gate_cells = re.findall(r'<tr class="(pass|fail)" data-gate="([^"]+)">\s*<td class="l">[^<]*'
                            r'</td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>',
                            html)
    assert gate_cells == [("fail", "sharpe", "+0.61", "&gt; +0.80", "no"),
                          ("pass", "max_drawdown", "5.00%", "&lt; 8.00%", "yes"),
                          ("fail", "custom", "+2.50", "+3.00", "no")]
    assert "below &lt;the&gt; threshold" in html and "seed 000 Promotion Criteria" in html
    # survivorship caveat and escaped notes
    assert SURVIVORSHIP in html
    assert "Costs &lt;modelled&gt; as fees &amp; half the spread." in html
    assert "<modelled>" not in html
    for group in ("2023", "2024", "p001", "p002", "high", "low", "normal"):
        assert f'data-group="{group}"' in html


def test_tearsheet_is_deterministic(frames, tmp_path):
    s = summary_figures(frames)
    a = write_tearsheet(tmp_path / "a", frames, s, GATES)
    b = write_tearsheet(tmp_path / "b", frames, s, GATES)
    assert a.read_bytes() == b.read_bytes()
    for name in CHARTS.values():
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes(), name


def test_rewrite_removes_charts_that_no_longer_apply(frames, tmp_path):
    write_tearsheet(tmp_path, frames, summary_figures(frames), None)
    assert (tmp_path / CHARTS["rolling"]).exists() and (tmp_path / CHARTS["r_multiples"]).exists()
    short = no_trades(BacktestFrames(frames.daily.iloc[:30], frames.trades, frames.meta))
    html = write_tearsheet(tmp_path, short, summary_figures(short), None).read_text()
    assert not (tmp_path / CHARTS["rolling"]).exists()
    assert not (tmp_path / CHARTS["r_multiples"]).exists()
    assert CHARTS["rolling"] not in html


def test_trades_without_r_multiples_say_so(frames, tmp_path):
    f = BacktestFrames(frames.daily, frames.trades.assign(r_multiple=np.nan), frames.meta)
    s = summary_figures(f)
    assert s["avg_r"] is None and s["hit_rate"] is not None
    html = write_tearsheet(tmp_path, f, s, None).read_text()
    assert "No closed trades with an R-multiple" in html


@needs_chromium
def test_tearsheet_in_headless_chromium(sheet, frames):
    from selenium.webdriver.common.by import By

    path, _ = sheet
    with chromium(1200, 1600) as driver:
        driver.get(path.as_uri())
        images = driver.find_elements(By.CSS_SELECTOR, "img.chart")
        assert len(images) == len(CHARTS)
        for img in images:
            loaded = driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            assert loaded, img.get_attribute("src")
        verdict = driver.find_element(By.ID, "verdict").text
        assert verdict.startswith("DO NOT PROMOTE")
        s = summary_figures(frames)
        assert f"Sharpe {show(s['sharpe'], 'ratio')}" in verdict
        rows = driver.find_elements(By.CSS_SELECTOR, "#gates-table tbody tr")
        assert [r.get_attribute("data-gate") for r in rows] == [g["name"] for g in GATES["gates"]]
        assert driver.find_element(By.ID, "survivorship").is_displayed()
        years = driver.find_elements(By.CSS_SELECTOR, "#by-year tbody tr")
        assert len(years) == 2
