"""Validation report and model card: files written, content, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.models.metrics import metrics_table
from tasks.models.reports import (
    auc_interval,
    card_metrics,
    horizon_lags,
    survivorship_caveat,
    validation_table,
    write_model_card,
    write_validation_report,
)

REGIMES = ("low_vol", "med_vol", "high_vol")
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
    expected = {"validation_report.txt", "report.html",
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
    assert html.count("data:image/png;base64,") == 6
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
    assert {p.name for p in tmp_path.glob("*.png")} == {"calibration_curves_low_vol.png",
                                                        "lift_curves_low_vol.png"}
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
