"""Validation report and model card: files written, content, determinism."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.models.metrics import metrics_table
from tasks.models.reports import (
    auc_interval,
    card_metrics,
    horizon_lags,
    signal_quality,
    survivorship_caveat,
    validation_table,
    write_model_card,
    write_validation_report,
)

REGIMES = ("low_vol", "med_vol", "high_vol")
HORIZONS = {"short": 5, "mid": 20}
SIGNAL_FILES = {f"signal_{h}.csv" for h in HORIZONS} | {
    f"signal_{kind}_{h}.png" for kind in ("ic_by_year", "deciles") for h in HORIZONS}
META = {"baseline_id": "baseline-test-001", "training_span": ("2015-01-02", "2020-12-31"),
        "data_hash": "deadbeef", "survivorship_bias": True, "horizon_lags": {"short": 4, "mid": 19},
        "source": "demo market", "symbols": [f"S{i:02d}" for i in range(25)], "span": "2015 to 2022",
        "label_definition": "close at D+h exceeds close at D by at least 1 ATR(14) measured at D",
        "walk_forward": "expanding window, one test year per fold", "refit_frequency": "yearly",
        "models": ["logistic", "xgboost"], "limits": ["small universe", "no transaction costs"]}


def _oos(seed: int = 7) -> pd.DataFrame:
    """Synthetic OOS predictions: 25 names, weekly dates over two years, two horizons, three regimes."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-04", "2022-12-30")[::5]
    frame = pd.MultiIndex.from_product([[f"S{i:02d}" for i in range(25)], dates, ["short", "mid"]],
                                       names=["symbol", "date", "horizon"]).to_frame(index=False)
    n = len(frame)
    regime = pd.Series(np.resize(np.array(REGIMES), len(dates)), index=dates)
    signal = rng.normal(size=n)
    frame["fold"] = frame["date"].dt.year
    frame["p_raw"] = 1.0 / (1.0 + np.exp(-signal))
    frame["p_cal"] = 0.5 + 0.7 * (frame["p_raw"] - 0.5)
    frame["vol_regime"] = frame["date"].map(regime)
    frame["label"] = (rng.random(n) < frame["p_raw"]).astype(float)
    frame["fwd_return"] = 0.01 * signal + 0.03 * rng.normal(size=n)
    frame.loc[rng.random(n) < 0.03, "label"] = np.nan
    return frame


@pytest.fixture(scope="module")
def oos() -> pd.DataFrame:
    return _oos()


@pytest.fixture(scope="module")
def written(oos: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    first = tmp_path_factory.mktemp("run1") / "nested" / "report"
    paths = write_validation_report(oos, first, META)
    second = tmp_path_factory.mktemp("run2")
    write_validation_report(oos, second, META)
    return paths, second


def test_every_file_is_written(written: tuple[dict[str, Path], Path]) -> None:
    paths, _ = written
    names = {p.name for p in paths.values()}
    expected = {"validation_report.txt", "report.html", *SIGNAL_FILES,
                *(f"{kind}_curves_{r}.png" for kind in ("calibration", "lift") for r in REGIMES)}
    assert names == expected
    folder = paths["report"].parent
    assert {p.name for p in folder.iterdir()} == expected
    for path in paths.values():
        assert path.stat().st_size > 0
    assert paths["calibration_curves_low_vol"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained(written: tuple[dict[str, Path], Path]) -> None:
    html = written[0]["report"].read_text(encoding="utf-8")
    for regime in REGIMES:
        assert regime in html
    assert html.count("data:image/png;base64,") == 6 + 2 * len(HORIZONS)  # curves + signal figures
    assert "<table" in html and "baseline-test-001" in html
    assert "src=\"calibration" not in html and ".png\"" not in html


def test_text_report_content(written: tuple[dict[str, Path], Path]) -> None:
    text = written[0]["validation_report"].read_text(encoding="utf-8")
    assert "survivorship" in text
    assert "baseline-test-001" in text and "deadbeef" in text and "2015-01-02 to 2020-12-31" in text
    for heading in ("Horizon: short", "Horizon: mid", "Per regime", "Per year"):
        assert heading in text
    assert "brier_raw" in text and "brier_cal" in text and "ece_raw" in text and "log_loss_cal" in text
    assert "2021" in text and "2022" in text


def test_no_caveat_when_not_flagged(oos: pd.DataFrame, tmp_path: Path) -> None:
    small = oos.loc[oos["vol_regime"] == "low_vol"]
    paths = write_validation_report(small, tmp_path, {**META, "survivorship_bias": False})
    assert "survivorship" not in paths["validation_report"].read_text(encoding="utf-8").lower()
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "calibration_curves_low_vol.png", "lift_curves_low_vol.png",
        *(name for name in SIGNAL_FILES if name.endswith(".png"))}
    assert survivorship_caveat({}) is None
    assert "extra detail" in survivorship_caveat({"survivorship_bias": "extra detail"})


def test_two_runs_are_byte_identical(written: tuple[dict[str, Path], Path]) -> None:
    paths, second = written
    for path in paths.values():
        assert path.read_bytes() == (second / path.name).read_bytes(), path.name


def test_validation_table_side_by_side(oos: pd.DataFrame) -> None:
    table = validation_table(oos, ["vol_regime"])
    assert table["vol_regime"].tolist() == [*REGIMES, *REGIMES]
    assert {"brier_raw", "brier_cal", "ece_raw", "ece_cal", "log_loss_raw", "log_loss_cal"} <= set(table)
    assert (table["brier_raw"] != table["brier_cal"]).all()
    gappy = oos.assign(p_cal=oos["p_cal"].where(oos["date"].dt.year == 2022))  # no calibration in 2021
    side = validation_table(gappy, None).set_index("horizon")
    raw_2022 = metrics_table(oos.loc[oos["date"].dt.year == 2022], None, p_col="p_raw").set_index("horizon")
    assert side["brier_raw"].to_numpy() == pytest.approx(raw_2022["brier"].to_numpy())
    assert (side["n"] == raw_2022["n"]).all()


def test_model_card(oos: pd.DataFrame, tmp_path: Path) -> None:
    metrics = card_metrics(oos, horizon_lags=META["horizon_lags"])
    path = write_model_card(tmp_path / "card" / "MODEL_CARD.md", META, metrics)
    card = path.read_text(encoding="utf-8")
    assert META["label_definition"] in card
    for section in ("## Data set", "## Label definition", "## Training", "## Metrics", "## Known limits"):
        assert section in card
    overall = metrics.loc[metrics["vol_regime"] == "all"].set_index("horizon")
    for horizon in ("short", "mid"):
        auc, se = overall.loc[horizon, "auc"], overall.loc[horizon, "auc_se"]
        interval = auc_interval(auc, se)
        assert f"{auc:.3f} ± {1.96 * se:.3f}" in interval and interval in card
        assert f"NW t {overall.loc[horizon, 'ic_t_nw']:.2f}" in card
    assert "survivorship" in card.lower() and "no transaction costs" in card and "deadbeef" in card
    assert all(f"| {r} |" in card for r in REGIMES)


def test_auc_interval_format() -> None:
    assert auc_interval(0.6, 0.01) == "0.600 ± 0.020 (95% CI 0.580 to 0.620)"


def test_html_escapes_meta(oos: pd.DataFrame, tmp_path: Path) -> None:
    small = oos.loc[(oos["vol_regime"] == "med_vol") & (oos["date"].dt.year == 2022)]
    meta = {"baseline_id": "<script>x</script>", "data_hash": "a&b"}
    paths = write_validation_report(small, tmp_path, meta)
    html = paths["report"].read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;" in html and "a&amp;b" in html


def test_model_card_without_regime_column(oos: pd.DataFrame, tmp_path: Path) -> None:
    card = write_model_card(tmp_path / "card.md", {"label_definition": "up move"},
                            metrics_table(oos, None)).read_text(encoding="utf-8")
    assert "| short |" in card and "| mid |" in card and "_No rows provided._" in card
    assert "None recorded" in card and "No survivorship bias flagged" in card


def test_pipeline_shaped_meta(oos: pd.DataFrame, tmp_path: Path) -> None:
    per_regime = metrics_table(oos, ["vol_regime"], horizon_lags={"short": 4, "mid": 19})
    meta = {"baseline_id": "bl-x", "data_source": "vendor", "horizons": {"short": 5, "mid": 20},
            "training_span": {"start": "2016-01-04", "end": "2022-12-30"},
            "walk_forward": {"window": "expanding", "refit_months": 12, "folds": {"short": [1, 2]}},
            "metrics": {"per_regime": per_regime.to_dict(orient="records")}, "label_definition": "L"}
    assert horizon_lags(meta) == {"short": 4, "mid": 19}
    assert horizon_lags({**meta, "horizon_lags": {"short": 1}}) == {"short": 1}
    assert horizon_lags({}) is None
    card = write_model_card(tmp_path / "card.md", meta, metrics_table(oos, None)).read_text(encoding="utf-8")
    assert "vendor" in card and "2016-01-04 to 2022-12-30" in card and "every 12 months" in card
    assert "window=expanding" in card and "folds: 1 entries" in card
    assert all(f"| {r} |" in card for r in REGIMES) and "_No rows provided._" not in card


def _strict_json(obj: object) -> object:
    """Round trip through JSON that refuses NaN and infinities."""
    return json.loads(json.dumps(obj, allow_nan=False))


def test_signal_quality_summaries_pick_the_ranking_score(oos: pd.DataFrame) -> None:
    # the plan ranks by rank_score where a horizon has one: reversed for short, absent for mid;
    # 2021 rows have no calibrated probability (first fold) and are left out whatever the score
    frame = oos.assign(p_cal=oos["p_cal"].where(oos["date"].dt.year == 2022),
                       rank_score=np.where(oos["horizon"] == "short", -oos["p_raw"], np.nan))
    summaries, tables = signal_quality(frame, HORIZONS)
    assert _strict_json(summaries) == summaries
    assert list(summaries) == list(tables) == ["short", "mid"]
    short, mid = summaries["short"], summaries["mid"]
    assert short["score"] == "rank_score" and mid["score"] == "p_cal"
    for name, s in summaries.items():
        assert s["h"] == HORIZONS[name] and s["nw_lag"] == HORIZONS[name] - 1 and s["cost_bps"] == 5.0
        assert s["sessions"] == 52  # 2022 only
        assert all(math.isfinite(s[k]) for k in ("ic_mean", "ic_t_nw", "ls_net_mean", "ls_t_nw"))
        years = tables[name][f"IC by year ({name})"]
        assert years["year"].tolist() == ["2022", "all"]
        assert s["ic_mean"] == pytest.approx(years["ic_mean"].iloc[-1])
    # the synthetic score predicts the forward return: p_cal ranks well, the reversed rank_score badly
    assert mid["ic_mean"] > 0.1 and mid["ic_t_nw"] > 2.0 and mid["ls_net_mean"] > 0
    assert short["ic_mean"] < -0.1 and short["ls_net_mean"] < 0
    ls = tables["mid"]["Long-short and turnover (mid)"].iloc[0]
    assert ls["ls_cost"] == pytest.approx(4 * 5.0 / 1e4)
    assert ls["ls_net_mean"] == pytest.approx(ls["ls_gross_mean"] - 0.002)
    # a frame without forward returns has nothing to judge
    assert signal_quality(frame.drop(columns="fwd_return"), HORIZONS) == ({}, {})


def test_report_signal_section_from_training_meta(oos: pd.DataFrame, tmp_path: Path) -> None:
    summaries, tables = signal_quality(oos, HORIZONS)
    meta = {**META, "signal": summaries, "signal_tables": tables, "skill_verdict": "NO MEASURED SKILL"}
    paths = write_validation_report(oos, tmp_path, meta)
    text = paths["validation_report"].read_text(encoding="utf-8")
    html = paths["report"].read_text(encoding="utf-8")
    assert text.splitlines()[2] == "Verdict: NO MEASURED SKILL"
    assert html.index("Verdict:") < html.index("Signal quality: short (5 sessions)")
    for name, s in summaries.items():
        for doc in (text, html):
            assert f"Signal quality: {name} ({HORIZONS[name]} sessions), out of sample" in doc
            # t-statistics and Sharpe with 2 decimals, percentages with 2
            assert f"mean daily rank IC {s['ic_mean']:+.4f} (NW t {s['ic_t_nw']:.2f})" in doc
            assert f"{100 * s['ls_net_mean']:.2f}% per {HORIZONS[name]}-session trade net of costs" in doc
            assert f"Sharpe {s['ls_sharpe']:.2f}" in doc
            assert f"{100 * s['top_decile_turnover']:.2f}% per rebalance" in doc
            assert "5 bps per side per leg" in doc and "4 sides = 0.20%" in doc
            assert f"Rank IC by year ({name})" in doc and f"Forward return by score decile ({name})" in doc
        ic_all = tables[name][f"IC by year ({name})"].iloc[-1]
        assert f"{ic_all['ic_t_nw']:.2f}" in html and f"{100 * ic_all['ic_positive']:.2f}%" in html
        # both figures are PNGs embedded in the HTML
        for kind in ("ic_by_year", "deciles"):
            png = paths[f"signal_{kind}_{name}"]
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert base64.b64encode(png.read_bytes()).decode("ascii") in html
        # the raw tables next to the report: 3 IC rows (2021, 2022, all), 10 deciles, 1 long-short
        csv = pd.read_csv(paths[f"signal_{name}"])
        assert csv["table"].value_counts().to_dict() == {"ic_by_year": 3, "deciles": 10, "long_short": 1}
        dec = csv.loc[csv["table"] == "deciles"]
        assert dec["decile"].tolist() == list(range(1, 11))
        raw = tables[name][f"Decile returns ({name})"]
        assert dec["mean_return"].to_numpy() == pytest.approx(raw["mean_return"].to_numpy())
        row = csv.loc[csv["table"] == "long_short"].iloc[0]
        assert row["ls_net_mean"] == pytest.approx(s["ls_net_mean"]) and row["cost_bps"] == 5.0
    signal_text = text.split("Signal quality", 1)[1]
    assert not re.search(r"\bn/a\b|\bnan\b", signal_text, re.I)  # every figure is measured here
    assert "<td>n/a</td>" not in html and "<td>nan</td>" not in html.lower()
    # the report computes the same section itself from a meta without it
    again = write_validation_report(oos, tmp_path / "fallback", META)
    for name in HORIZONS:
        assert again[f"signal_{name}"].read_bytes() == paths[f"signal_{name}"].read_bytes()
