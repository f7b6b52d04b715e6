"""Row- and symbol-level validation of vendor bars. Bad data is dropped with a reason, never repaired.

Every rule returns the rows it keeps and a list of findings ``{symbol, date, rule, action,
detail}``; :func:`validate_bars` chains them and the import writes the findings to a JSON
quality report. Nothing is forward-filled or invented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.data.calendar import sessions
from tasks.data.schemas import PRICE_COLUMNS, VENDOR_COLUMNS
from tasks.settings import DataSettings

_WHOLE = np.array([2.0, 3, 4, 5, 6, 7, 8, 10, 15, 20])
# Ratios a vendor records as splits (3:2, 5:4 included); used to read the adjustment factor.
SPLIT_RATIOS = np.concatenate([[1.25, 4 / 3, 1.5, 2.5], _WHOLE])
SPLIT_RATIOS = np.concatenate([SPLIT_RATIOS, 1 / SPLIT_RATIOS])
# Ratios an unrecorded split is recognised by in prices alone: whole-number forward and reverse
# splits. A 3:2 split moves the price like a -33% day and cannot be told from a crash without
# the vendor's record, so it is not flagged.
DETECTABLE_SPLITS = np.concatenate([_WHOLE, 1 / _WHOLE])


@dataclass
class ValidationResult:
    """Clean bars and the findings that explain every dropped row, symbol or file."""

    bars: pd.DataFrame
    findings: pd.DataFrame


def _finding(symbol, date, rule: str, action: str, detail: str) -> dict:
    day = None if date is None or pd.isna(date) else pd.Timestamp(date).date().isoformat()
    sym = None if symbol is None or pd.isna(symbol) else str(symbol)
    return {"symbol": sym, "date": day,
            "rule": rule, "action": action, "detail": detail}


def _row_findings(df: pd.DataFrame, mask: pd.Series, rule: str, detail) -> list[dict]:
    """One 'row_dropped' finding per masked row; ``detail`` is a string or a row -> str function."""
    out = []
    for _, row in df.loc[mask].iterrows():
        text = detail(row) if callable(detail) else detail
        out.append(_finding(row["symbol"], row["date"], rule, "row_dropped", text))
    return out


def coerce_types(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Cast to the vendor dtypes; rows whose date or prices cannot be read are dropped."""
    out = df[VENDOR_COLUMNS].reset_index(drop=True)
    out["symbol"] = out["symbol"].astype("string").str.strip()
    out["date"] = pd.to_datetime(out["date"], errors="coerce").astype("datetime64[ns]")
    for col in PRICE_COLUMNS + ["dividend_amount", "split_coefficient"]:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out["dividend_amount"] = out["dividend_amount"].fillna(0.0)
    out["split_coefficient"] = out["split_coefficient"].fillna(1.0)
    out["volume"] = pd.to_numeric(out["volume"], errors="coerce").round().astype("Int64")
    bad_key = out["symbol"].isna() | (out["symbol"] == "") | out["date"].isna()
    bad_px = out[PRICE_COLUMNS].isna().any(axis=1) & ~bad_key
    findings = _row_findings(out, bad_key, "unreadable_key", "symbol or date missing/unparseable")
    findings += _row_findings(out, bad_px, "missing_value", lambda r: "non-numeric or missing "
                              + ",".join(c for c in PRICE_COLUMNS if pd.isna(r[c])))
    return out.loc[~(bad_key | bad_px)], findings


def check_duplicates(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Exact duplicate rows keep one copy; conflicting rows for one (symbol, date) are all dropped."""
    exact = df.duplicated(keep="first")
    findings = _row_findings(df, exact, "duplicate_row", "exact duplicate of another row; one kept")
    df = df.loc[~exact]
    clash = df.duplicated(["symbol", "date"], keep=False)
    findings += _row_findings(df, clash, "conflicting_duplicate",
                              "several different bars for this (symbol, date); all dropped")
    return df.loc[~clash], findings


def check_bar_sanity(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Drop impossible bars: non-positive prices, high < low, open/close outside [low, high]."""
    rules = {
        "non_positive_price": (df[PRICE_COLUMNS] <= 0).any(axis=1),
        "high_below_low": df["high"] < df["low"],
        "open_outside_range": (df["open"] > df["high"]) | (df["open"] < df["low"]),
        "close_outside_range": (df["close"] > df["high"]) | (df["close"] < df["low"]),
        "negative_volume": df["volume"].fillna(0) < 0,
        "bad_corporate_action": (df["split_coefficient"] <= 0) | (df["dividend_amount"] < 0),
    }
    dropped = pd.Series(False, index=df.index)
    findings: list[dict] = []
    for rule, mask in rules.items():
        new = mask & ~dropped
        findings += _row_findings(df, new, rule, lambda r: (
            f"open={r['open']} high={r['high']} low={r['low']} close={r['close']} "
            f"volume={r['volume']}"))
        dropped |= mask
    return df.loc[~dropped], findings


def check_sessions(df: pd.DataFrame, calendar: str) -> tuple[pd.DataFrame, list[dict]]:
    """Drop bars on non-sessions; warn about sessions missing inside each symbol's history."""
    if df.empty:
        return df, []
    days = sessions(calendar, df["date"].min(), df["date"].max())
    off = ~df["date"].isin(days)
    findings = _row_findings(df, off, "not_a_session", f"not a {calendar} trading session")
    df = df.loc[~off]
    for sym, dates in df.groupby("symbol", sort=True)["date"]:
        expected = days[(days >= dates.min()) & (days <= dates.max())]
        for day in expected.difference(pd.DatetimeIndex(dates)):
            findings.append(_finding(sym, day, "missing_session", "warning",
                                     f"no bar for this {calendar} session (not filled)"))
    return df, findings


def _near_split(ratio: np.ndarray, tol: float) -> np.ndarray:
    """Nearest common split ratio k with |ratio*k - 1| < tol, else NaN (ratio ~ 1/k)."""
    dist = np.abs(ratio[:, None] * DETECTABLE_SPLITS[None, :] - 1)
    best = dist.argmin(axis=1)
    k = DETECTABLE_SPLITS[best]
    return np.where(dist[np.arange(len(ratio)), best] < tol, k, np.nan)


def _volume_confirms(vol: pd.Series, pos: int, k: float, window: int = 20) -> bool:
    """True when median share volume after the jump moved like a k-for-1 split (or no volume)."""
    before = vol.iloc[max(0, pos - window):pos].dropna()
    after = vol.iloc[pos:pos + window].dropna()
    if len(before) < 3 or len(after) < 3 or before.median() <= 0:
        return True
    ratio = after.median() / before.median()
    return (ratio >= 0.6 * k) if k > 1 else (ratio <= 1.6 * k)


def check_splits(df: pd.DataFrame, cfg: DataSettings) -> tuple[pd.DataFrame, list[dict]]:
    """Find split-like jumps that the split/adjusted columns do not explain.

    A raw close-to-close jump close to a common split ratio 1/k, with no split recorded, where
    the adjusted close jumps too (and volume moves like a split), is an unrecorded split: the
    adjusted history before it is wrong, so the rows before the jump are dropped and the later
    segment kept. A recorded split whose adjusted series still jumps is treated the same way.
    """
    df = df.sort_values(["symbol", "date"], kind="stable")
    prev_close = df.groupby("symbol")["close"].shift(1)
    prev_adj = df.groupby("symbol")["adjusted_close"].shift(1)
    raw_jump = np.log(df["close"] / prev_close)
    adj_jump = np.log(df["adjusted_close"] / prev_adj)
    recorded_split = df["split_coefficient"] != 1.0
    suspect = (raw_jump.abs() > cfg.split_min_jump) & (adj_jump.abs() > cfg.split_min_jump)
    # a recorded split must leave the adjusted series continuous: half the threshold suffices
    suspect |= recorded_split & (adj_jump.abs() > cfg.split_min_jump / 2)
    keep = pd.Series(True, index=df.index)
    findings: list[dict] = []
    for idx in df.index[suspect.fillna(False).to_numpy()]:
        row = df.loc[idx]
        k = _near_split(np.array([np.exp(raw_jump[idx])]), cfg.split_ratio_tolerance)[0]
        recorded = row["split_coefficient"] != 1.0
        if np.isnan(k) and not recorded:
            continue  # a big move that does not look like a split: real data, keep it
        sym_rows = df.index[df["symbol"] == row["symbol"]]
        pos = sym_rows.get_loc(idx)
        if not recorded and not _volume_confirms(df.loc[sym_rows, "volume"], pos, k):
            continue
        earlier = sym_rows[:pos]
        keep[earlier] = False
        rule = "split_not_adjusted" if recorded else "unexplained_split"
        findings.append(_finding(row["symbol"], row["date"], rule, "rows_dropped", (
            f"raw close x{np.exp(raw_jump[idx]):.3f} and adjusted close x{np.exp(adj_jump[idx]):.3f}"
            f" (split_coefficient={row['split_coefficient']:g}); the {len(earlier)} earlier rows "
            "are inconsistent with the later ones and were dropped")))
    return df.loc[keep], findings


def check_stale(df: pd.DataFrame, calendar: str, as_of: pd.Timestamp | None,
                max_sessions: int) -> list[dict]:
    """Warn about symbols whose last bar is older than ``as_of`` (default: last date) allows."""
    if df.empty:
        return []
    ref = pd.Timestamp(as_of) if as_of is not None else df["date"].max()
    days = sessions(calendar, df["date"].min(), ref)
    findings = []
    for sym, last in df.groupby("symbol")["date"].max().items():
        behind = int((days > last).sum())
        if behind > max_sessions:
            findings.append(_finding(sym, last, "stale_symbol", "warning", (
                f"last bar {last.date()} is {behind} sessions before {ref.date()} "
                f"(allowed {max_sessions})")))
    return findings


def validate_bars(raw: pd.DataFrame, cfg: DataSettings,
                  as_of: pd.Timestamp | None = None) -> ValidationResult:
    """Run every rule in order; return the clean bars (sorted) and all findings."""
    findings: list[dict] = []
    df = raw
    for step in (coerce_types, check_duplicates, check_bar_sanity):
        df, found = step(df)
        findings += found
    df, found = check_sessions(df, cfg.calendar)
    findings += found
    df, found = check_splits(df, cfg)
    findings += found
    findings += check_stale(df, cfg.calendar, as_of, cfg.stale_max_sessions)
    df = df.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    cols = ["symbol", "date", "rule", "action", "detail"]
    frame = pd.DataFrame(findings, columns=cols, dtype=object)  # None stays None
    return ValidationResult(df, frame)
