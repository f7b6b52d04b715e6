"""Row- and symbol-level validation of vendor bars (tasks.data.validate, sources, adjust).

Every test builds a small, clean vendor-format frame on real XNYS sessions, damages it in one
known way and checks that the damage is caught under the right rule, with the right action,
symbol and date, and that every good row survives unchanged (nothing repaired, nothing invented).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.data.adjust import adjust_bars
from tasks.data.calendar import sessions
from tasks.data.schemas import VENDOR_COLUMNS
from tasks.data.sources import CsvSource, ParquetSource
from tasks.data.validate import validate_bars
from tasks.settings import DataSettings

CFG = DataSettings()
SYMBOLS = ("AAA", "BBB", "CCC")
OHLC = ["open", "high", "low", "close"]
PRICES = OHLC + ["adjusted_close"]
BAD_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sp500" / "bad_inputs"


def clean_bars(n: int = 40, symbols: tuple[str, ...] = SYMBOLS, start: str = "2020-01-02",
               seed: int = 0) -> pd.DataFrame:
    """``n`` clean XNYS sessions per symbol: consistent OHLC, no corporate actions."""
    days = sessions("XNYS", start, pd.Timestamp(start) + pd.Timedelta(days=2 * n + 30))[:n]
    assert len(days) == n
    rng = np.random.default_rng(seed)
    frames = []
    for i, sym in enumerate(symbols):
        close = (40.0 + 30.0 * i) * np.exp(np.cumsum(rng.uniform(-0.008, 0.008, n)))
        opened = close * (1 + rng.uniform(-0.004, 0.004, n))
        frames.append(pd.DataFrame({
            "symbol": sym,
            "date": days,
            "open": opened,
            "high": np.maximum(opened, close) * 1.01,
            "low": np.minimum(opened, close) * 0.99,
            "close": close,
            "adjusted_close": close,
            "volume": rng.integers(900_000, 1_100_000, n),
            "dividend_amount": 0.0,
            "split_coefficient": 1.0,
        }))
    return pd.concat(frames, ignore_index=True)[VENDOR_COLUMNS]


def label(df: pd.DataFrame, symbol: str, pos: int) -> int:
    """Index label of the ``pos``-th row of ``symbol``."""
    return int(df.index[df["symbol"] == symbol][pos])


def keys(df: pd.DataFrame) -> set[tuple[str, pd.Timestamp]]:
    return {(str(s), pd.Timestamp(d)) for s, d in zip(df["symbol"], df["date"], strict=True)}


def key_of(df: pd.DataFrame, idx: int) -> tuple[str, pd.Timestamp]:
    return str(df.at[idx, "symbol"]), pd.Timestamp(df.at[idx, "date"])


def iso(day) -> str:
    return pd.Timestamp(day).date().isoformat()


def of_rule(findings: pd.DataFrame, rule: str) -> pd.DataFrame:
    return findings.loc[findings["rule"] == rule].reset_index(drop=True)


def dropping(findings: pd.DataFrame) -> pd.DataFrame:
    return findings.loc[findings["action"] != "warning"].reset_index(drop=True)


def assert_kept_unchanged(result_bars: pd.DataFrame, clean: pd.DataFrame,
                          dropped: set[tuple[str, pd.Timestamp]]) -> None:
    """Exactly the clean rows minus ``dropped`` are kept, with their values untouched."""
    assert keys(result_bars) == keys(clean) - dropped
    assert len(result_bars) == len(clean) - len(dropped)
    merged = result_bars.merge(clean, on=["symbol", "date"], suffixes=("", "_in"), validate="1:1")
    for col in PRICES + ["volume"]:
        np.testing.assert_allclose(merged[col].astype(float), merged[f"{col}_in"].astype(float))


def assert_single_drop(findings: pd.DataFrame, rule: str, key: tuple[str, pd.Timestamp]) -> None:
    """The only row-dropping finding is one ``rule`` finding for ``key``."""
    drops = dropping(findings)
    assert len(drops) == 1, drops
    got = drops.iloc[0]
    assert (got["rule"], got["action"], got["symbol"], got["date"]) == (
        rule, "row_dropped", key[0], iso(key[1]))


def assert_gap_warning(findings: pd.DataFrame, key: tuple[str, pd.Timestamp]) -> None:
    """The dropped session is reported as missing (a warning), never filled."""
    warn = of_rule(findings, "missing_session")
    assert list(zip(warn["symbol"], warn["date"], warn["action"], strict=True)) == [
        (key[0], iso(key[1]), "warning")]


def test_clean_frame_passes_untouched():
    clean = clean_bars()
    res = validate_bars(clean, CFG)
    assert res.findings.empty
    assert list(res.findings.columns) == ["symbol", "date", "rule", "action", "detail"]
    assert_kept_unchanged(res.bars, clean, set())
    assert res.bars.equals(res.bars.sort_values(["symbol", "date"]).reset_index(drop=True))


# --- unreadable values -----------------------------------------------------------------------

@pytest.mark.parametrize(("column", "bad"), [
    ("close", np.nan), ("open", "n/a"), ("adjusted_close", None), ("high", ""), ("low", "1,2")])
def test_missing_or_unparseable_price_is_dropped(column, bad):
    clean = clean_bars()
    raw = clean.astype({column: object})
    idx = label(raw, "BBB", 17)
    raw.loc[idx, column] = bad
    res = validate_bars(raw, CFG)
    assert_single_drop(res.findings, "missing_value", key_of(clean, idx))
    assert column in of_rule(res.findings, "missing_value").at[0, "detail"]
    assert_gap_warning(res.findings, key_of(clean, idx))
    assert_kept_unchanged(res.bars, clean, {key_of(clean, idx)})


@pytest.mark.parametrize("bad", ["2020-13-45", "", "yesterday", None])
def test_unparseable_date_is_dropped(bad):
    clean = clean_bars()
    raw = clean.astype({"date": object})
    idx = label(raw, "AAA", 9)
    raw.loc[idx, "date"] = bad
    res = validate_bars(raw, CFG)
    drops = dropping(res.findings)
    assert len(drops) == 1
    assert (drops.at[0, "rule"], drops.at[0, "action"], drops.at[0, "symbol"]) == (
        "unreadable_key", "row_dropped", "AAA")
    assert pd.isna(drops.at[0, "date"])
    assert_kept_unchanged(res.bars, clean, {key_of(clean, idx)})


@pytest.mark.parametrize("bad", ["", "   "])
def test_blank_symbol_is_dropped(bad):
    clean = clean_bars()
    raw = clean.copy()
    idx = label(raw, "CCC", 5)
    raw.loc[idx, "symbol"] = bad
    res = validate_bars(raw, CFG)
    drops = dropping(res.findings)
    assert len(drops) == 1
    assert (drops.at[0, "rule"], drops.at[0, "action"], drops.at[0, "date"]) == (
        "unreadable_key", "row_dropped", iso(clean.at[idx, "date"]))
    assert_kept_unchanged(res.bars, clean, {key_of(clean, idx)})


def test_missing_symbol_is_reported_as_null_not_as_a_ticker():
    raw = clean_bars().astype({"symbol": object})
    idx = label(raw, "CCC", 5)
    raw.loc[idx, "symbol"] = None
    res = validate_bars(raw, CFG)
    found = of_rule(res.findings, "unreadable_key")
    assert len(found) == 1
    assert found.at[0, "date"] == iso(raw.at[idx, "date"])
    assert found.at[0, "symbol"] is None


# --- duplicates ------------------------------------------------------------------------------

def test_exact_duplicate_keeps_one_copy():
    clean = clean_bars()
    idx = label(clean, "AAA", 12)
    raw = pd.concat([clean, clean.loc[[idx]]], ignore_index=True)
    res = validate_bars(raw, CFG)
    assert_single_drop(res.findings, "duplicate_row", key_of(clean, idx))
    assert res.findings["action"].eq("row_dropped").all()
    assert_kept_unchanged(res.bars, clean, set())
    assert not res.bars.duplicated(["symbol", "date"]).any()


def test_conflicting_duplicate_drops_both():
    clean = clean_bars()
    idx = label(clean, "BBB", 20)
    other = clean.loc[[idx]].copy()
    other["close"] = (other["low"] + other["high"]) / 2 + 0.001  # plausible, but different
    raw = pd.concat([clean, other], ignore_index=True)
    res = validate_bars(raw, CFG)
    drops = dropping(res.findings)
    key = key_of(clean, idx)
    assert len(drops) == 2
    assert set(drops["rule"]) == {"conflicting_duplicate"}
    assert set(drops["action"]) == {"row_dropped"}
    assert set(zip(drops["symbol"], drops["date"], strict=True)) == {(key[0], iso(key[1]))}
    assert_gap_warning(res.findings, key)
    assert_kept_unchanged(res.bars, clean, {key})


# --- impossible bars -------------------------------------------------------------------------

def _swap_high_low(row: pd.Series) -> dict:
    return {"high": row["low"], "low": row["high"]}


SANITY_CASES = {
    "zero_close": ("non_positive_price", lambda r: {"close": 0.0, "low": 0.0}),
    "negative_open": ("non_positive_price", lambda r: {"open": -r["open"]}),
    "negative_adjusted": ("non_positive_price", lambda r: {"adjusted_close": -1.0}),
    "high_below_low": ("high_below_low", _swap_high_low),
    "open_above_high": ("open_outside_range", lambda r: {"open": r["high"] * 1.05}),
    "open_below_low": ("open_outside_range", lambda r: {"open": r["low"] * 0.95}),
    "close_above_high": ("close_outside_range", lambda r: {"close": r["high"] * 1.03}),
    "close_below_low": ("close_outside_range", lambda r: {"close": r["low"] * 0.97}),
    "negative_volume": ("negative_volume", lambda r: {"volume": -int(r["volume"])}),
    "zero_split": ("bad_corporate_action", lambda r: {"split_coefficient": 0.0}),
    "negative_dividend": ("bad_corporate_action", lambda r: {"dividend_amount": -0.25}),
}


@pytest.mark.parametrize("case", sorted(SANITY_CASES))
def test_impossible_bar_is_dropped(case):
    rule, damage = SANITY_CASES[case]
    clean = clean_bars()
    raw = clean.copy()
    idx = label(raw, "CCC", 22)
    for col, val in damage(raw.loc[idx]).items():
        raw.loc[idx, col] = val
    res = validate_bars(raw, CFG)
    key = key_of(clean, idx)
    assert_single_drop(res.findings, rule, key)
    assert_gap_warning(res.findings, key)
    assert_kept_unchanged(res.bars, clean, {key})


# --- calendar --------------------------------------------------------------------------------

@pytest.mark.parametrize("day", ["2019-12-25", "2019-12-28", "2020-01-01"])
def test_non_session_date_is_dropped(day):
    clean = clean_bars(start="2019-12-02")
    extra = clean.loc[[label(clean, "AAA", 10)]].assign(date=pd.Timestamp(day))
    raw = pd.concat([clean, extra], ignore_index=True)
    res = validate_bars(raw, CFG)
    assert_single_drop(res.findings, "not_a_session", ("AAA", pd.Timestamp(day)))
    assert of_rule(res.findings, "missing_session").empty
    assert_kept_unchanged(res.bars, clean, set())


def test_missing_session_is_a_warning_and_no_row_is_invented():
    clean = clean_bars()
    idx = label(clean, "BBB", 14)
    late = clean.index[clean["symbol"] == "CCC"][:6]  # CCC lists later: not a gap
    raw = clean.drop(index=[idx, *late])
    res = validate_bars(raw, CFG)
    key = key_of(clean, idx)
    assert dropping(res.findings).empty
    assert_gap_warning(res.findings, key)
    assert len(res.bars) == len(raw)
    assert key not in keys(res.bars)
    assert_kept_unchanged(res.bars, raw, set())


# --- splits and big moves --------------------------------------------------------------------

def scale_from(df: pd.DataFrame, symbol: str, pos: int, price: float, volume: float = 1.0,
               adjusted: bool = True, split: float = 1.0) -> pd.DataFrame:
    """Multiply ``symbol``'s prices (and volume) from its ``pos``-th row on; record ``split``."""
    out = df.copy()
    rows = out.index[out["symbol"] == symbol][pos:]
    cols = PRICES if adjusted else OHLC
    out.loc[rows, cols] = out.loc[rows, cols] * price
    out.loc[rows, "volume"] = np.round(out.loc[rows, "volume"] * volume).astype("int64")
    out.loc[rows[0], "split_coefficient"] = split
    return out


def test_unrecorded_split_drops_earlier_rows_keeps_later():
    clean = clean_bars()
    raw = scale_from(clean, "AAA", 25, price=0.5, volume=2.0)
    res = validate_bars(raw, CFG)
    aaa = raw.loc[raw["symbol"] == "AAA"]
    day = aaa["date"].iloc[25]
    assert len(res.findings) == 1
    got = res.findings.iloc[0]
    assert (got["rule"], got["action"], got["symbol"], got["date"]) == (
        "unexplained_split", "rows_dropped", "AAA", iso(day))
    assert "25 earlier rows" in got["detail"]
    assert_kept_unchanged(res.bars, raw, keys(aaa.iloc[:25]))
    assert res.bars.loc[res.bars["symbol"] == "AAA", "date"].min() == day


def test_halving_without_split_like_volume_is_kept_and_flagged_for_review():
    clean = clean_bars()
    raw = scale_from(clean, "AAA", 25, price=0.5, volume=1.0)
    res = validate_bars(raw, CFG)
    # share volume did not double: not split-like, but no spike either, so it cannot be called
    assert list(zip(res.findings["rule"], res.findings["action"], res.findings["date"],
                    strict=True)) == [("suspect_jump", "review", iso(raw["date"].iloc[25]))]
    assert "not ~2x" in res.findings["detail"].iloc[0]
    assert_kept_unchanged(res.bars, raw, set())


def test_recorded_split_with_unadjusted_history_is_caught():
    clean = clean_bars()
    raw = scale_from(clean, "BBB", 18, price=0.5, volume=2.0, adjusted=True, split=2.0)
    res = validate_bars(raw, CFG)
    bbb = raw.loc[raw["symbol"] == "BBB"]
    assert len(res.findings) == 1
    got = res.findings.iloc[0]
    assert (got["rule"], got["action"], got["symbol"], got["date"]) == (
        "split_not_adjusted", "rows_dropped", "BBB", iso(bbb["date"].iloc[18]))
    assert_kept_unchanged(res.bars, raw, keys(bbb.iloc[:18]))


@pytest.mark.parametrize("factor", [0.65, 0.53])
def test_crash_day_is_real_data_not_a_split(factor):
    clean = clean_bars()
    raw = scale_from(clean, "CCC", 20, price=factor, volume=1.6)
    crash = label(raw, "CCC", 20)
    raw.loc[crash, "volume"] = 3 * raw.loc[crash, "volume"]
    res = validate_bars(raw, CFG)
    assert_kept_unchanged(res.bars, raw, set())
    ccc = res.bars.loc[res.bars["symbol"] == "CCC"].reset_index(drop=True)
    move = ccc.at[20, "close"] / ccc.at[19, "close"]
    assert move == pytest.approx(factor, rel=0.02)
    if factor < 0.6:  # big enough to be examined as a split: kept, and reported as a move
        assert abs(np.log(move)) > CFG.split_min_jump
        assert list(zip(res.findings["rule"], res.findings["action"], strict=True)) == [
            ("market_move", "warning")]
        assert res.findings["date"].iloc[0] == iso(ccc.at[20, "date"])
    else:
        assert res.findings.empty


def test_recorded_seven_for_one_split_passes_and_adjusts_continuously():
    clean = clean_bars(n=60)
    pos = 30
    # vendor history in post-split units for adjusted_close, pre-split units for the raw bars
    raw = scale_from(clean, "AAA", 0, price=7.0, adjusted=False)
    raw = scale_from(raw, "AAA", pos, price=1 / 7, volume=7.0, adjusted=False, split=7.0)
    res = validate_bars(raw, CFG)
    assert res.findings.empty
    assert_kept_unchanged(res.bars, raw, set())

    adj = adjust_bars(res.bars)
    aaa = adj.loc[adj["symbol"] == "AAA"].reset_index(drop=True)
    truth = clean.loc[clean["symbol"] == "AAA"].reset_index(drop=True)
    raw_ret = np.log(aaa["close"] / aaa["close"].shift(1))
    adj_ret = np.log(aaa["adj_close"] / aaa["adj_close"].shift(1))
    true_ret = np.log(truth["close"] / truth["close"].shift(1))
    assert raw_ret[pos] == pytest.approx(np.log(1 / 7) + true_ret[pos], abs=1e-9)
    np.testing.assert_allclose(adj_ret[1:], true_ret[1:], atol=1e-9)
    np.testing.assert_allclose(aaa["adj_factor"][:pos], 1 / 7)
    np.testing.assert_allclose(aaa["adj_factor"][pos:], 1.0)
    for col in ("open", "high", "low"):
        np.testing.assert_allclose(aaa[f"adj_{col}"], truth[col])
    assert (aaa["adj_low"] <= aaa[["adj_open", "adj_close"]].min(axis=1)).all()
    assert (aaa["adj_high"] >= aaa[["adj_open", "adj_close"]].max(axis=1)).all()
    # share volume jumps 7x on the split day, split-adjusted volume does not
    assert aaa.at[pos, "volume"] / aaa.at[pos - 1, "volume"] > 5
    np.testing.assert_allclose(aaa["adj_volume"], truth["volume"].astype(float))
    assert 0.7 < aaa.at[pos, "adj_volume"] / aaa.at[pos - 1, "adj_volume"] < 1.4


def test_split_check_works_on_a_frame_with_repeated_index_labels():
    clean = clean_bars()
    per_symbol = [g.reset_index(drop=True) for _, g in clean.groupby("symbol")]
    raw = pd.concat(per_symbol)  # index 0..39 three times
    raw = scale_from(raw.reset_index(drop=True), "AAA", 25, price=0.5, volume=2.0).set_axis(raw.index)
    res = validate_bars(raw, CFG)
    assert list(of_rule(res.findings, "unexplained_split")["symbol"]) == ["AAA"]
    assert len(res.bars) == len(raw) - 25


# --- stale symbols ---------------------------------------------------------------------------

def test_stale_symbol_is_a_warning_and_keeps_its_rows():
    clean = clean_bars()
    raw = clean.drop(index=clean.index[clean["symbol"] == "CCC"][-8:])
    res = validate_bars(raw, CFG)
    stale = of_rule(res.findings, "stale_symbol")
    last_ccc = raw.loc[raw["symbol"] == "CCC", "date"].max()
    assert list(zip(stale["symbol"], stale["date"], stale["action"], strict=True)) == [
        ("CCC", iso(last_ccc), "warning")]
    assert "8 sessions" in stale.at[0, "detail"]
    assert len(res.findings) == 1
    assert_kept_unchanged(res.bars, raw, set())


def test_stale_against_as_of():
    clean = clean_bars()
    raw = clean.drop(index=clean.index[clean["symbol"] == "CCC"][-8:])
    last = clean["date"].max()
    later = sessions("XNYS", last + pd.Timedelta(days=1), last + pd.Timedelta(days=30))
    near, far = later[2], later[9]  # 3 and 10 sessions after the data's last session

    res = validate_bars(raw, CFG, as_of=near)
    assert list(of_rule(res.findings, "stale_symbol")["symbol"]) == ["CCC"]

    res = validate_bars(raw, CFG, as_of=far)
    stale = of_rule(res.findings, "stale_symbol").set_index("symbol")
    assert sorted(stale.index) == list(SYMBOLS)
    assert set(stale["action"]) == {"warning"}
    assert stale.at["AAA", "date"] == iso(last)
    assert "10 sessions" in stale.at["AAA", "detail"]
    assert iso(far) in stale.at["AAA", "detail"]
    assert len(res.bars) == len(raw)


# --- files a source cannot read --------------------------------------------------------------

def _vendor_payload(folder: Path) -> Path:
    target = folder / "BF.B_vendor_error.csv"
    sample = BAD_SAMPLE / "BF.B_vendor_error.csv"
    if sample.is_file():
        shutil.copyfile(sample, target)
    else:
        target.write_text(json.dumps({"Error Message": "Invalid API call for BF.B"}, indent=2))
    return target


def test_csv_vendor_error_payload_is_rejected_and_good_csv_is_imported(tmp_path):
    bad = _vendor_payload(tmp_path)
    good = clean_bars(symbols=("GOOD",)).drop(columns="symbol").rename(columns={"date": "timestamp"})
    good.to_csv(tmp_path / "GOOD.csv", index=False, date_format="%Y-%m-%d")
    loaded = CsvSource(tmp_path).load()
    assert loaded.inputs == [str(bad), str(tmp_path / "GOOD.csv")]
    assert len(loaded.findings) == 1
    found = loaded.findings[0]
    assert (found["rule"], found["action"], found["symbol"], found["date"]) == (
        "vendor_error_payload", "file_rejected", None, None)
    assert str(bad) in found["detail"]
    assert set(loaded.bars["symbol"]) == {"GOOD"}
    res = validate_bars(loaded.bars, CFG)
    assert res.findings.empty
    assert_kept_unchanged(res.bars, clean_bars(symbols=("GOOD",)), set())


def test_vendor_payload_alone_gives_no_bars(tmp_path):
    bad = _vendor_payload(tmp_path)
    loaded = CsvSource(bad).load()
    assert loaded.bars.empty
    assert [f["rule"] for f in loaded.findings] == ["vendor_error_payload"]


def test_parquet_missing_a_column_is_rejected(tmp_path):
    good = clean_bars(symbols=("AAA", "BBB"))
    broken = clean_bars(symbols=("ZZZ",)).drop(columns="adjusted_close")
    pq.write_table(pa.Table.from_pandas(good, preserve_index=False), tmp_path / "a_good.parquet")
    pq.write_table(pa.Table.from_pandas(broken, preserve_index=False), tmp_path / "b_broken.parquet")
    loaded = ParquetSource(tmp_path).load()
    assert len(loaded.findings) == 1
    found = loaded.findings[0]
    assert (found["rule"], found["action"]) == ("missing_columns", "file_rejected")
    assert "b_broken.parquet" in found["detail"] and "adjusted_close" in found["detail"]
    assert set(loaded.bars["symbol"]) == {"AAA", "BBB"}
    res = validate_bars(loaded.bars, CFG)
    assert res.findings.empty
    assert_kept_unchanged(res.bars, good, set())
