"""Tests of the seeded synthetic demo market (tasks.data.demo)."""

from __future__ import annotations

import time
import warnings

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.data.demo import (
    BAR_COLUMNS,
    DEFECT_KINDS,
    REGIMES,
    SECTORS,
    DemoMarket,
    DemoSpec,
    generate_demo_market,
    write_demo_market,
)

SMALL = DemoSpec(seed=11, n_symbols=24, n_sectors=8, start="2020-01-02", end="2022-06-30")


@pytest.fixture(scope="module")
def dirty() -> DemoMarket:
    """The default spec, defects injected."""
    return generate_demo_market()


@pytest.fixture(scope="module")
def clean() -> DemoMarket:
    """The default spec without defects."""
    return generate_demo_market(DemoSpec(inject_bad_rows=False))


def xnys_sessions(start: str, end: str) -> pd.DatetimeIndex:
    """Real NYSE sessions, tz-naive."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        cal = xcals.get_calendar("XNYS", start=start, end=end)
    return pd.DatetimeIndex(cal.sessions_in_range(start, end)).as_unit("us")


def violations(bars: pd.DataFrame, sessions: pd.DatetimeIndex) -> dict[str, int]:
    """Count rows (or symbols) breaking each clean-data invariant."""
    top = bars[["open", "close"]].max(axis=1)
    bottom = bars[["open", "close"]].min(axis=1)
    pos = pd.Series(np.arange(len(sessions)), index=sessions)
    idx = pos.reindex(bars["date"]).to_numpy()
    steps = pd.Series(idx).groupby(bars["symbol"].to_numpy()).diff().dropna()
    last = bars.groupby("symbol")["date"].max()
    return {
        "high_below_top": int((bars["high"] < top).sum()),
        "bottom_below_low": int((bars["low"] > bottom).sum()),
        "non_positive_low": int((bars["low"] <= 0).sum()),
        "negative_volume": int((bars["volume"] < 0).sum()),
        "missing_volume": int(bars["volume"].isna().sum()),
        "duplicates": int(bars.duplicated(["symbol", "date"]).sum()),
        "non_sessions": int(np.isnan(idx).sum()),
        "gaps": int((steps != 1).sum()),
        "stops_early": int((last != sessions[-1]).sum()),
    }


def adj_log_returns(bars: pd.DataFrame) -> pd.DataFrame:
    """Wide (date x symbol) daily log returns of adjusted_close."""
    wide = bars.pivot(index="date", columns="symbol", values="adjusted_close")
    return np.log(wide).diff()


def with_prev(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars with the previous close and previous adjustment factor of the same symbol."""
    out = bars.copy()
    out["factor"] = out["adjusted_close"] / out["close"]
    grouped = out.groupby("symbol")
    out["prev_close"] = grouped["close"].shift()
    out["prev_factor"] = grouped["factor"].shift()
    out["prev_adj"] = grouped["adjusted_close"].shift()
    return out


def test_schema_sizes_and_calendar(dirty: DemoMarket) -> None:
    bars, cons = dirty.bars, dirty.constituents
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert pd.api.types.is_string_dtype(bars["symbol"])
    assert bars["date"].dtype == np.dtype("datetime64[us]")
    for col in ("open", "high", "low", "close", "adjusted_close", "dividend_amount"):
        assert bars[col].dtype == np.float64, col
    assert bars["split_coefficient"].dtype == np.float64
    assert bars["volume"].dtype == pd.Int64Dtype()
    assert isinstance(bars.index, pd.RangeIndex) and bars.index.start == 0
    assert bars[["symbol", "date"]].apply(tuple, axis=1).is_monotonic_increasing
    sessions = xnys_sessions("2017-01-03", "2024-12-31")
    assert len(sessions) >= 6 * 250
    assert set(bars["date"]) == set(sessions)
    assert list(cons.columns) == ["symbol", "name", "sector"]
    assert all(pd.api.types.is_string_dtype(cons[c]) for c in cons.columns)
    assert cons["symbol"].is_unique and len(cons) >= 60
    assert cons["symbol"].str.fullmatch(r"[A-Z]{3,4}").all()
    assert set(cons["symbol"]) == set(bars["symbol"])
    assert cons["sector"].nunique() >= 8 and set(cons["sector"]) <= set(SECTORS)
    assert dirty.regimes.index.equals(pd.DatetimeIndex(sessions, name="date"))
    assert set(dirty.regimes) == set(REGIMES)


def test_same_spec_same_frames_and_bytes(tmp_path) -> None:
    one, two = generate_demo_market(SMALL), generate_demo_market(SMALL)
    pd.testing.assert_frame_equal(one.bars, two.bars)
    pd.testing.assert_frame_equal(one.constituents, two.constituents)
    pd.testing.assert_frame_equal(one.injected, two.injected)
    pd.testing.assert_series_equal(one.regimes, two.regimes)
    first = write_demo_market(one, tmp_path / "a")
    second = write_demo_market(two, tmp_path / "b")
    assert set(first) == {"bars", "constituents", "injected"}
    assert first["bars"].name == "ohlcv_daily.parquet"
    assert first["constituents"].name == "constituents.csv"
    for key, path in first.items():
        assert path.read_bytes() == second[key].read_bytes(), key
    pd.testing.assert_frame_equal(pd.read_parquet(first["bars"]), one.bars, check_dtype=False)
    back = pd.read_csv(first["constituents"])
    assert back["symbol"].tolist() == one.constituents["symbol"].tolist()
    assert pd.read_csv(first["injected"])["kind"].tolist() == one.injected["kind"].tolist()


def test_default_spec_is_deterministic_and_fast(dirty: DemoMarket) -> None:
    began = time.perf_counter()
    again = generate_demo_market(DemoSpec())
    assert time.perf_counter() - began < 5.0
    pd.testing.assert_frame_equal(again.bars, dirty.bars)
    pd.testing.assert_frame_equal(again.injected, dirty.injected)


def test_other_seed_gives_other_data() -> None:
    one = generate_demo_market(SMALL)
    other = generate_demo_market(DemoSpec(**{**SMALL.__dict__, "seed": SMALL.seed + 1}))
    assert one.constituents["symbol"].tolist() != other.constituents["symbol"].tolist()
    assert not np.allclose(one.bars["close"].head(50), other.bars["close"].head(50))


def test_clean_default_passes_every_invariant(clean: DemoMarket) -> None:
    sessions = xnys_sessions("2017-01-03", "2024-12-31")
    counts = violations(clean.bars, sessions)
    assert len(counts) == 9 and all(v == 0 for v in counts.values()), counts
    assert clean.injected.empty
    assert list(clean.injected.columns) == ["symbol", "date", "kind", "detail"]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n_symbols=st.integers(20, 40))
def test_clean_small_markets_pass_every_invariant(seed: int, n_symbols: int) -> None:
    spec = DemoSpec(seed=seed, n_symbols=n_symbols, n_sectors=8, start="2021-01-04",
                    end="2022-12-30", inject_bad_rows=False)
    market = generate_demo_market(spec)
    counts = violations(market.bars, xnys_sessions(spec.start, spec.end))
    assert all(v == 0 for v in counts.values()), counts
    assert market.bars["symbol"].nunique() == n_symbols
    dirty = generate_demo_market(DemoSpec(**{**spec.__dict__, "inject_bad_rows": True}))
    assert sorted(dirty.injected["kind"]) == sorted(DEFECT_KINDS)


def test_defects_touch_only_their_own_symbols(dirty: DemoMarket, clean: DemoMarket) -> None:
    inj = dirty.injected
    assert sorted(inj["kind"]) == sorted(DEFECT_KINDS)
    assert inj["symbol"].is_unique
    hit = set(inj["symbol"])
    keep_d = dirty.bars[~dirty.bars["symbol"].isin(hit)].reset_index(drop=True)
    keep_c = clean.bars[~clean.bars["symbol"].isin(hit)].reset_index(drop=True)
    pd.testing.assert_frame_equal(keep_d, keep_c)
    ref = clean.bars
    events = ref[(ref["dividend_amount"] > 0) | (ref["split_coefficient"] != 1)]
    assert not hit & set(events.loc[events["split_coefficient"] != 1, "symbol"])
    on_event = inj.merge(events, on=["symbol", "date"], how="inner")
    assert on_event.empty


def _rows(bars: pd.DataFrame, sym: str, date: pd.Timestamp) -> pd.DataFrame:
    """All rows of one (symbol, date)."""
    return bars[(bars["symbol"] == sym) & (bars["date"] == date)]


def test_every_injected_defect_is_present(dirty: DemoMarket, clean: DemoMarket) -> None:
    bars, ref = dirty.bars, clean.bars
    last = bars["date"].max()
    for sym, date, kind in dirty.injected[["symbol", "date", "kind"]].itertuples(index=False):
        rows, orig = _rows(bars, sym, date), _rows(ref, sym, date)
        if kind == "high_below_low":
            assert len(rows) == 1 and (rows["high"] < rows["low"]).all()
        elif kind == "close_outside_range":
            assert ((rows["close"] > rows["high"]) | (rows["close"] < rows["low"])).all()
        elif kind == "non_positive_price":
            assert (rows["open"] <= 0).all()
        elif kind == "negative_volume":
            assert (rows["volume"] < 0).all()
        elif kind == "duplicate_row":
            assert len(rows) == 2 and rows.iloc[0].equals(rows.iloc[1])
        elif kind == "conflicting_duplicate":
            assert len(rows) == 2 and rows["close"].nunique() == 2
        elif kind == "missing_session":
            assert rows.empty and len(orig) == 1
            sym_dates = bars.loc[bars["symbol"] == sym, "date"]
            assert sym_dates.min() < date < sym_dates.max()
        elif kind == "stale_symbol":
            sym_dates = ref.loc[ref["symbol"] == sym, "date"]
            assert bars.loc[bars["symbol"] == sym, "date"].max() == date < last
            assert (sym_dates > date).sum() == 15
        else:
            assert kind == "unexplained_split"
            sub = with_prev(bars[bars["symbol"] == sym])
            row = sub[sub["date"] == date].iloc[0]
            assert row["close"] / row["prev_close"] == pytest.approx(0.5, rel=0.25)
            assert row["adjusted_close"] / row["prev_adj"] == pytest.approx(0.5, rel=0.25)
            assert row["split_coefficient"] == 1.0
            later = ref[(ref["symbol"] == sym) & (ref["date"] >= date)]["close"].to_numpy()
            halved = sub[sub["date"] >= date]["close"].to_numpy()
            np.testing.assert_allclose(halved, np.maximum(np.round(later / 2, 2), 0.01))


def test_recorded_splits_keep_adjusted_returns_continuous(clean: DemoMarket) -> None:
    bars = with_prev(clean.bars)
    splits = bars[bars["split_coefficient"] != 1.0]
    assert (splits["split_coefficient"] > 1).sum() >= 3
    assert (splits["split_coefficient"] < 1).sum() >= 1
    k = splits["split_coefficient"]
    raw_ratio = splits["close"] / splits["prev_close"]
    assert (np.abs(np.log(raw_ratio * k)) < 0.15).all()
    assert (np.abs(np.log(splits["adjusted_close"] / splits["prev_adj"])) < 0.15).all()
    np.testing.assert_allclose(splits["prev_factor"] / splits["factor"], 1 / k, rtol=1e-6)
    nxt = bars.loc[splits.index + 1]
    assert (nxt["volume"].to_numpy() > 0).all()


def test_dividends_follow_vendor_convention(clean: DemoMarket) -> None:
    bars = with_prev(clean.bars)
    divs = bars[bars["dividend_amount"] > 0]
    expected = 1 - divs["dividend_amount"] / divs["prev_close"]
    np.testing.assert_allclose(divs["prev_factor"] / divs["factor"], expected, rtol=1e-6)
    assert divs["symbol"].nunique() >= 0.5 * bars["symbol"].nunique()
    yearly = divs.groupby(["symbol", divs["date"].dt.year])["dividend_amount"].sum()
    price = bars.groupby(["symbol", bars["date"].dt.year])["close"].mean()
    full_years = yearly.index.get_level_values(1).isin(range(2018, 2024))
    assert ((yearly / price.reindex(yearly.index))[full_years] < 0.045).all()
    no_event = bars[(bars["dividend_amount"] == 0) & (bars["split_coefficient"] == 1.0)]
    np.testing.assert_allclose(no_event["prev_factor"].dropna(),
                               no_event["factor"][no_event["prev_factor"].notna()], rtol=1e-6)


def test_last_adjusted_close_equals_close(dirty: DemoMarket, clean: DemoMarket) -> None:
    for market in (dirty, clean):
        last = market.bars.groupby("symbol").tail(1)
        last = last[~last["symbol"].isin(market.injected["symbol"])]
        assert len(last) >= 50
        assert (last["adjusted_close"] == last["close"]).all()


def test_listings_and_price_levels(clean: DemoMarket) -> None:
    bars = clean.bars
    first = bars.groupby("symbol").head(1)
    late = (first["date"] > bars["date"].min()).mean()
    assert 0.05 <= late <= 0.2
    assert first["close"].between(10, 400).all()
    assert (bars["close"] > 0).all()


def test_stylised_facts(clean: DemoMarket) -> None:
    r = adj_log_returns(clean.bars)
    corr = r.corr().to_numpy()
    n = len(corr)
    assert 0.1 <= (corr.sum() - n) / (n * n - n) <= 0.6
    market = r.mean(axis=1)
    for lag in range(1, 6):
        assert market.abs().autocorr(lag) > 0.05, lag
    residual = r.sub(market, axis=0).abs()
    assert np.mean([residual[c].autocorr(1) for c in residual]) > 0.025
    vol = market.groupby(clean.regimes).std()
    assert vol["stressed"] >= 1.5 * vol["calm"]
    stress = r[clean.regimes == "stressed"].corr().to_numpy()
    calm = r[clean.regimes == "calm"].corr().to_numpy()
    assert np.nanmean(stress) > np.nanmean(calm)
    annual = r.std() * np.sqrt(252)
    assert annual.between(0.15, 0.60).mean() >= 0.8
    assert market.mean() > 0


def test_regimes_last_weeks_to_months(clean: DemoMarket) -> None:
    codes = clean.regimes.to_numpy()
    spells = 1 + int((codes[1:] != codes[:-1]).sum())
    assert 10 <= len(codes) / spells <= 130


def test_volume_and_range_follow_moves(clean: DemoMarket) -> None:
    bars = clean.bars
    plain = bars[~bars["symbol"].isin(bars.loc[bars["split_coefficient"] != 1, "symbol"])]
    r = np.log(plain["close"]).groupby(plain["symbol"]).diff().abs()
    logv = np.log(plain["volume"].astype(float))
    logv = logv - logv.groupby(plain["symbol"]).transform("mean")
    big = r > r.groupby(plain["symbol"]).transform(lambda s: s.quantile(0.9))
    assert logv[big].mean() > logv[~big & r.notna()].mean() + 0.1
    spread = np.log(plain["high"] / plain["low"])
    assert spread[big].mean() > spread[~big & r.notna()].mean()


@pytest.mark.parametrize(
    "changes", [{"n_sectors": 12}, {"n_sectors": 0}, {"n_symbols": 1, "n_sectors": 1}]
)
def test_invalid_specs_raise(changes: dict) -> None:
    with pytest.raises(ValueError):
        generate_demo_market(DemoSpec(**{**SMALL.__dict__, **changes}))


def _reversal_ic(market: DemoMarket) -> float:
    """Mean daily rank IC of minus the past 5-session return against the next 5 sessions'."""
    r = adj_log_returns(market.bars)
    past, ahead = r.rolling(5).sum(), r.rolling(5).sum().shift(-5)
    ic = (-past).rank(axis=1).corrwith(ahead.rank(axis=1), axis=1)
    return float(ic.dropna().mean())


def test_the_planted_reversal_is_measurable_and_absent_without_it(clean: DemoMarket) -> None:
    assert clean.bars is not None and DemoSpec().reversal == 0.2
    assert _reversal_ic(clean) > 0.03
    flat = generate_demo_market(DemoSpec(inject_bad_rows=False, reversal=0.0))
    assert abs(_reversal_ic(flat)) < 0.02
    with pytest.raises(ValueError, match="reversal"):
        generate_demo_market(DemoSpec(reversal=1.5))
