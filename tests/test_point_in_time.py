"""Point in time: features at D use bars <= D only; labels at D use D's ATR window and D+1..D+h.

Property tests perturb or delete bars and check that what must not move does not move.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.data.adjust import adjust_bars
from tasks.data.demo import DemoSpec, generate_demo_market
from tasks.features.build import build_features, feature_columns
from tasks.features.labels import build_labels
from tasks.settings import load_settings

SETTINGS = load_settings()
PRICE_COLS = ["open", "high", "low", "close", "adjusted_close"]


@pytest.fixture(scope="module")
def market() -> tuple[pd.DataFrame, pd.DataFrame]:
    spec = DemoSpec(seed=3, n_symbols=12, n_sectors=4, start="2021-01-04", end="2022-06-30",
                    inject_bad_rows=False)
    m = generate_demo_market(spec)
    bars = adjust_bars(m.bars.assign(date=m.bars["date"].astype("datetime64[ns]")))
    return bars, m.constituents


@pytest.fixture(scope="module")
def base_features(market) -> pd.DataFrame:
    bars, cons = market
    return build_features(bars, cons, SETTINGS)


def _rows_on_or_before(df: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    return df.loc[df["date"] <= day].sort_values(["symbol", "date"]).reset_index(drop=True)


def _perturb(bars: pd.DataFrame, mask: pd.Series, scale: float) -> pd.DataFrame:
    out = bars.copy()
    for col in PRICE_COLS:
        out.loc[mask, col] = out.loc[mask, col] * scale
    out.loc[mask, "volume"] = (out.loc[mask, "volume"] * 3).astype("Int64")
    return adjust_bars(out[bars.columns[:10]])


def _assert_same(a: pd.DataFrame, b: pd.DataFrame, cols: list[str]) -> None:
    assert len(a) == len(b) and (a["symbol"].to_numpy() == b["symbol"].to_numpy()).all()
    np.testing.assert_allclose(a[cols].to_numpy(float), b[cols].to_numpy(float),
                               rtol=1e-9, atol=1e-12, equal_nan=True)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(day_pos=st.integers(100, 330), scale=st.floats(0.3, 3.0), delete=st.booleans(),
       only_one_symbol=st.booleans())
def test_future_bars_never_change_features(market, base_features, day_pos, scale, delete,
                                           only_one_symbol):
    bars, cons = market
    dates = np.sort(bars["date"].unique())
    day = pd.Timestamp(dates[day_pos])
    future = bars["date"] > day
    if only_one_symbol:
        future &= bars["symbol"] == bars["symbol"].iloc[0]
    changed = bars.loc[~future] if delete else _perturb(bars, future, scale)
    feats = build_features(changed, cons, SETTINGS)
    cols = feature_columns(SETTINGS) + ["close_raw", "n_history"]
    _assert_same(_rows_on_or_before(base_features, day), _rows_on_or_before(feats, day), cols)


def test_past_bars_do_change_features(market, base_features):
    """Guard against a vacuous property: perturbing bars <= D must move features at D."""
    bars, cons = market
    day = pd.Timestamp(np.sort(bars["date"].unique())[200])
    changed = _perturb(bars, (bars["date"] == day) & (bars["symbol"] == bars["symbol"].iloc[0]), 1.5)
    feats = build_features(changed, cons, SETTINGS)
    a, b = _rows_on_or_before(base_features, day), _rows_on_or_before(feats, day)
    assert not np.allclose(a["ret_1"].to_numpy(float), b["ret_1"].to_numpy(float), equal_nan=True)


def test_planted_future_feature_is_caught(market):
    """A feature that peeks one session ahead breaks the property the test above checks."""
    bars, _ = market
    day = pd.Timestamp(np.sort(bars["date"].unique())[150])

    def peeking(b: pd.DataFrame) -> pd.Series:
        nxt = b.groupby("symbol")["adj_close"].shift(-1)  # shift backward = looking ahead
        return (nxt / b["adj_close"]).loc[b["date"] == day].reset_index(drop=True)

    changed = _perturb(bars, bars["date"] > day, 2.0)
    assert not np.allclose(peeking(bars).to_numpy(float), peeking(changed).to_numpy(float))


@pytest.fixture(scope="module")
def base_labels(market) -> pd.DataFrame:
    return build_labels(market[0], SETTINGS)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(day_pos=st.integers(60, 300), scale=st.floats(0.5, 2.0), after=st.booleans())
def test_labels_only_see_their_window(market, base_labels, day_pos, scale, after):
    """Bars before D's ATR window, or after D+h, do not change the label at D."""
    bars, _ = market
    dates = np.sort(bars["date"].unique())
    day = pd.Timestamp(dates[day_pos])
    h = max(SETTINGS.labels.horizons.values())
    atr_start = pd.Timestamp(dates[day_pos - SETTINGS.features.atr_window])
    if after:
        mask = bars["date"] > pd.Timestamp(dates[min(day_pos + h, len(dates) - 1)])
    else:
        mask = bars["date"] < atr_start
    labels = build_labels(_perturb(bars, mask, scale), SETTINGS)
    cols = [c for c in labels.columns if c.startswith(("label_", "fwd_return_"))]
    pick = lambda df: df.loc[df["date"] == day].reset_index(drop=True)  # noqa: E731
    _assert_same(pick(base_labels), pick(labels), cols)


def test_labels_react_to_the_label_window(market, base_labels):
    """A crash inside D+1..D+h turns the label into a loss: labels are not vacuous."""
    bars, _ = market
    dates = np.sort(bars["date"].unique())
    day, nxt = pd.Timestamp(dates[120]), pd.Timestamp(dates[121])
    changed = bars.copy()
    mask = changed["date"] == nxt
    changed.loc[mask, "low"] = changed.loc[mask, "low"] * 0.5
    changed.loc[mask, "adjusted_close"] = changed.loc[mask, "adjusted_close"] * 0.5
    changed.loc[mask, "close"] = changed.loc[mask, "close"] * 0.5
    changed.loc[mask, "open"] = changed.loc[mask, "open"] * 0.5
    labels = build_labels(adjust_bars(changed[bars.columns[:10]]), SETTINGS)
    at_day = labels.loc[(labels["date"] == day) & labels["label_short"].notna()]
    assert len(at_day) >= 10
    assert (at_day["label_short"] == 0).all()
    assert (at_day["outcome_short"] == "sl").all()
    assert (base_labels.loc[base_labels["date"] == day, "outcome_short"] != "sl").any()
