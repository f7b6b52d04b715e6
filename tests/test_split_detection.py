"""Price jumps with no split recorded: split, market move or ambiguous (tasks.data.validate).

Each test builds one symbol of clean bars on real XNYS sessions, plants one jump with the
pattern seen in real vendor data (price, volume, bar and adjusted-close moves) and checks what
the import does with it: only a jump that is a split on every piece of evidence drops the rows
before it; a market move is a warning and an ambiguous jump is kept for review.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.data.calendar import sessions
from tasks.data.schemas import VENDOR_COLUMNS
from tasks.data.validate import validate_bars
from tasks.settings import DataSettings

CFG = DataSettings()
N, AT = 60, 40  # sessions, and the row of the jump
OHLC = ["open", "high", "low", "close"]
DAYS = sessions("XNYS", "2021-01-04", "2021-05-31")[:N]


def bars(seed: int = 0) -> pd.DataFrame:
    """One symbol, ``N`` calm sessions: consistent OHLC, ~1M shares a day, no corporate action."""
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.uniform(-0.01, 0.01, N)))
    opened = close * (1 + rng.uniform(-0.004, 0.004, N))
    return pd.DataFrame({
        "symbol": "XYZ", "date": DAYS, "open": opened,
        "high": np.maximum(opened, close) * 1.01, "low": np.minimum(opened, close) * 0.99,
        "close": close, "adjusted_close": close,
        "volume": rng.integers(900_000, 1_100_000, N).astype("int64"),
        "dividend_amount": 0.0, "split_coefficient": 1.0,
    })[VENDOR_COLUMNS]


def rescale(df: pd.DataFrame, price: float, volume: float = 1.0, at: int = AT,
            adjusted: bool = True) -> pd.DataFrame:
    """Multiply prices (raw OHLC, and adjusted_close if ``adjusted``) and volume from ``at`` on."""
    out = df.copy()
    cols = OHLC + ["adjusted_close"] if adjusted else OHLC
    out.loc[at:, cols] *= price
    out.loc[at:, "volume"] = np.round(out.loc[at:, "volume"] * volume).astype("int64")
    return out


def trailing_median(df: pd.DataFrame, at: int = AT) -> float:
    return float(df["volume"].iloc[at - 20:at].median())


def set_day(df: pd.DataFrame, at: int = AT, volume: float | None = None, **rel: float) -> pd.DataFrame:
    """Set row ``at``'s open/high/low/close relative to the previous close (adjusted alike) and
    its volume as a multiple of the trailing 20-session median."""
    out = df.copy()
    prev = out.at[at - 1, "close"]
    factor = out.at[at, "adjusted_close"] / out.at[at, "close"]
    for col, r in rel.items():
        out.at[at, col] = r * prev
    out.at[at, "adjusted_close"] = out.at[at, "close"] * factor
    if volume is not None:
        out.at[at, "volume"] = round(volume * trailing_median(df, at))
    return out


def jump_findings(res) -> pd.DataFrame:
    rules = ["unexplained_split", "market_move", "suspect_jump", "large_jump"]
    return res.findings.loc[res.findings["rule"].isin(rules)].reset_index(drop=True)


def the_finding(res, rule: str, action: str, at: int = AT) -> str:
    """The one jump finding: ``rule``/``action`` on row ``at``'s date; returns its detail."""
    found = jump_findings(res)
    assert list(zip(found["rule"], found["action"], found["date"], strict=True)) == [
        (rule, action, DAYS[at].date().isoformat())], found
    return found.at[0, "detail"]


def assert_all_kept(res, raw: pd.DataFrame) -> None:
    assert len(res.bars) == len(raw)
    np.testing.assert_allclose(res.bars["close"], raw["close"])
    np.testing.assert_allclose(res.bars["adjusted_close"], raw["adjusted_close"])


# --- market moves ----------------------------------------------------------------------------

def aes_crash() -> pd.DataFrame:
    """AES 2001-09-26: -49.5 % close to close, adjusted close alike (no split anywhere), opened
    at 0.56 and traded up to 0.74 of the previous close, 13x the usual share volume; the shares
    traded afterwards about doubled (as they would after a 2:1 split)."""
    raw = rescale(bars(), price=0.505, volume=2.0)
    return set_day(raw, open=0.557, high=0.742, low=0.495, close=0.505, volume=13.0)


def test_aes_crash_on_ten_times_the_volume_is_a_market_move_not_a_split():
    raw = aes_crash()
    res = validate_bars(raw, CFG)
    detail = the_finding(res, "market_move", "warning")
    assert_all_kept(res, raw)
    assert "raw close x0.505" in detail and "adjusted close x0.505" in detail
    assert "volume 13.0x" in detail and "volume spike" in detail
    assert "during the session" in detail


def test_sbac_collapse_through_the_session_is_a_market_move_not_a_split():
    """SBAC 2002-10-04: after a slide on heavy volume, opened at 0.91 of the previous close and
    fell through the day to x0.5125 (2.5 % from a 2:1 split) on 29x the usual share volume;
    share volume stayed ~5x higher afterwards."""
    raw = bars()
    raw = rescale(raw, price=0.84, volume=1.0, at=AT - 2)
    raw = rescale(raw, price=0.90, volume=1.0, at=AT - 1)
    raw.loc[[AT - 2, AT - 1], "volume"] *= 5
    raw = rescale(raw, price=0.5125, volume=5.0)
    raw = set_day(raw, open=0.9125, high=0.9375, low=0.50125, close=0.5125, volume=29.0)
    res = validate_bars(raw, CFG)
    detail = the_finding(res, "market_move", "warning")
    assert_all_kept(res, raw)
    assert "raw close x0.512" in detail
    assert "volume spike" in detail and "during the session" in detail
    assert "away from the nearest" not in detail  # the ratio alone would pass for a split


@pytest.mark.parametrize("case, reason", [
    ("volume_spike", "volume spike"),
    ("intraday", "during the session"),
    ("ratio", "away from the nearest whole-number split"),
    ("adjusted", "neither continuous"),
])
def test_any_one_piece_of_evidence_against_a_split_keeps_the_rows(case, reason):
    raw = rescale(bars(), price=0.5, volume=2.0)  # a clean 2:1 split, but for one thing
    if case == "volume_spike":  # the bar gapped to the new level, on 4x the dollar volume
        raw = set_day(raw, volume=8.0)
    elif case == "intraday":
        raw = set_day(raw, open=0.98, high=0.99, low=0.49, close=0.5)
    elif case == "ratio":
        raw = rescale(raw, price=0.45 / 0.5)
    else:  # the adjusted close fell to a quarter while the raw close halved
        raw.loc[AT:, "adjusted_close"] *= 0.5
    res = validate_bars(raw, CFG)
    detail = the_finding(res, "market_move", "warning")
    assert reason in detail
    assert_all_kept(res, raw)


# --- splits -----------------------------------------------------------------------------------

@pytest.mark.parametrize("day_volume", ["new_shares", "old_shares"])
def test_unrecorded_two_for_one_split_is_still_caught(day_volume):
    """Price halves, share volume doubles, dollar volume stays: the vendor recorded nothing and
    its adjusted close halved too, so the history before the split is dropped."""
    raw = rescale(bars(), price=0.5, volume=2.0)
    if day_volume == "old_shares":  # vendors sometimes count the split day in old shares
        raw.at[AT, "volume"] = raw.at[AT, "volume"] // 2
    res = validate_bars(raw, CFG)
    detail = the_finding(res, "unexplained_split", "rows_dropped")
    assert "2-for-1 split on all evidence" in detail and f"{AT} earlier rows" in detail
    assert list(res.bars["date"]) == list(DAYS[AT:])


def test_unrecorded_reverse_split_is_caught():
    """1-for-10: price x10, shares traded /10 afterwards; the split day counted in old shares."""
    raw = rescale(bars(), price=10.0, volume=0.1)
    raw.at[AT, "volume"] = raw.at[AT, "volume"] * 10
    res = validate_bars(raw, CFG)
    assert "1-for-10 split" in the_finding(res, "unexplained_split", "rows_dropped")
    assert len(res.bars) == N - AT


def test_split_with_a_dividend_the_same_day_is_still_a_split():
    raw = rescale(bars(), price=0.5, volume=2.0)
    raw.at[AT, "dividend_amount"] = 0.01 * raw.at[AT - 1, "close"]
    raw.loc[:AT - 1, "adjusted_close"] *= 0.99  # the vendor's factor steps by the dividend only
    res = validate_bars(raw, CFG)
    the_finding(res, "unexplained_split", "rows_dropped")


@pytest.mark.parametrize("min_jump", [None, 0.3])
def test_three_for_two_like_move_is_never_dropped(min_jump):
    """Price x2/3, share volume x1.5, dollar volume unchanged: a 3:2 split or a -33 % day. Below
    the examined jump size it passes; examined, it is a market move (not a whole-number split)."""
    cfg = CFG if min_jump is None else DataSettings(split_min_jump=min_jump)
    raw = rescale(bars(), price=2 / 3, volume=1.5)
    res = validate_bars(raw, cfg)
    assert_all_kept(res, raw)
    if min_jump is None:
        assert jump_findings(res).empty
    else:
        detail = the_finding(res, "market_move", "warning")
        assert "away from the nearest whole-number split (2-for-1" in detail


# --- ambiguous jumps --------------------------------------------------------------------------

def test_ambiguous_volume_keeps_the_rows_and_flags_them_for_review():
    """Split-like in every way but the day's volume: 5x the shares, 2.5x the dollars."""
    raw = set_day(rescale(bars(), price=0.5, volume=2.0), volume=5.0)
    res = validate_bars(raw, CFG)
    detail = the_finding(res, "suspect_jump", "review")
    assert_all_kept(res, raw)
    assert "raw close x0.5" in detail and "volume 5.0x (dollars 2." in detail
    assert "neither split-like nor a clear spike" in detail


@pytest.mark.parametrize("case, reason", [
    ("no_volume", "no volume to check"),
    ("at_the_end", "too few sessions with volume after the jump"),
    ("misdated", "stepped x2 one bar before the raw jump"),
])
def test_jump_that_cannot_be_classified_is_kept_for_review(case, reason):
    at = N - 3 if case == "at_the_end" else AT
    raw = rescale(bars(), price=0.5, volume=2.0, at=at)
    if case == "no_volume":
        raw["volume"] = pd.array([pd.NA] * N, dtype="Int64")
    elif case == "misdated":  # the vendor's factor doubled one bar early (raw flat that day)
        raw.loc[:AT - 2, "adjusted_close"] *= 0.5
    res = validate_bars(raw, CFG)
    assert reason in the_finding(res, "suspect_jump", "review", at=at)
    assert_all_kept(res, raw)


# --- very large jumps -------------------------------------------------------------------------

def test_fifteenfold_drop_with_an_inconsistent_adjusted_close_is_reported():
    """x1/15 raw, x2 adjusted (a spin-off the vendor mis-adjusted): never silent, never dropped."""
    raw = rescale(bars(), price=1 / 15, volume=3.0, adjusted=False)
    raw.loc[AT:, "adjusted_close"] *= 2.0
    raw = set_day(raw, open=1 / 15, high=1.01 / 15, low=0.99 / 15, close=1 / 15, volume=12.0)
    res = validate_bars(raw, CFG)
    detail = the_finding(res, "large_jump", "warning")
    assert "raw close x0.067" in detail and "adjusted close x2.000" in detail
    assert_all_kept(res, raw)


@pytest.mark.parametrize("price, expected", [(0.07, "large_jump"), (0.1, None)])
def test_large_raw_jump_the_vendor_adjusted_is_reported_unless_a_clean_split(price, expected):
    raw = rescale(bars(), price=price, volume=1 / price, adjusted=False)
    res = validate_bars(raw, CFG)
    assert_all_kept(res, raw)
    if expected is None:  # a 10-for-1 split the vendor adjusted for and did not record
        assert jump_findings(res).empty
    else:
        assert "not a whole-number split the vendor adjusted for" in the_finding(
            res, expected, "warning")


def test_large_crash_is_a_large_jump_warning():
    raw = rescale(bars(), price=0.08, volume=3.0)
    raw = set_day(raw, open=0.5, high=0.6, low=0.078, close=0.08, volume=40.0)
    res = validate_bars(raw, CFG)
    assert "volume spike" in the_finding(res, "large_jump", "warning")
    assert_all_kept(res, raw)
