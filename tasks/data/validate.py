"""Row- and symbol-level validation of vendor bars. Bad data is dropped with a reason, never repaired.

Every rule returns the rows it keeps and a list of findings ``{symbol, date, rule, action,
detail}``; :func:`validate_bars` chains them and the import writes the findings to a JSON
quality report. Nothing is forward-filled or invented.

Price jumps with no split recorded (:func:`check_splits`)
---------------------------------------------------------
A close-to-close jump of more than ``data.split_min_jump`` (|log|) in both the raw and the
adjusted close, with ``split_coefficient == 1``, is either a split the vendor did not record or
a real market move (a crash, a bid, a restructuring). Dropping history on a guess destroys real
data, so rows are dropped only when every piece of evidence says "split":

* **Ratio.** A k-for-1 split moves the close by 1/k times that day's own return, so
  ``data.split_ratio_tolerance`` (3 %) is about one daily move: 77 % of the 337 whole-number
  splits the vendor recorded for S&P 500 names in 1999-2019 sit within 3 % of 1/k (a split on
  a bigger day is reported as a market move and kept, never dropped). Only whole-number k and
  the matching reverse splits count: a 3:2 split moves the price like a -33 % day and, without
  the vendor's record, is not told from one.
* **Volume on the day.** A split changes the share count, not the money traded: share volume
  scales by k while dollar volume stays at its usual level. A crash or a bid brings a spike in
  *both* far above their trailing 20-session medians. Vendors report the split day itself in old
  or in new shares, so the smaller of the two ratios is used: it stays at about 1 or below on
  a split day whichever count the vendor used. On those 337 recorded splits it is below 2 on
  98 % and below 3 on 99 % (above: two reverse splits and a share-class distribution), while
  a crash such as AES on 2001-09-26 (-49 % on 13x its usual share volume) reaches 5.8 and SBAC
  on 2002-10-04 (-49 % on 29x) 10.5. At 3 or more the jump is a market move; from 2 to 3 it
  is ambiguous.
* **Volume afterwards.** After a split the median share volume of the next 20 sessions is about
  k times the trailing one (dollar volume unchanged). Outside 0.6..2.5 times k it is not
  split-like; as vendors' volumes around real splits are noisy (a tenth of the recorded splits
  fall outside), that makes the jump ambiguous, not a market move. Fewer than 5 volumes on
  either side (or no volume on the day) also leave it ambiguous.
* **The bar itself.** A split takes effect before the open, so the whole jump-day bar sits on
  the new price level. A bar whose high (after a fall; low after a rise) reaches more than half
  of the way back to the previous close moved during the session: a market move (1 of the
  337 recorded splits reaches that far, and its record is wrong: the raw close did not move).
* **Adjusted close.** ``adjusted_close / close`` is the vendor's adjustment factor. For an
  unrecorded split there are two consistent cases: the vendor adjusted its history (the factor
  steps by k and the adjusted close is continuous: no jump to examine, the history is
  consistent and nothing is dropped), or it missed the split as well (the factor is unchanged
  apart from a dividend and the adjusted close jumps by the same ratio as the raw one: the
  earlier adjusted history is then inconsistent with the later one). An adjusted close that
  moves by anything else is not explained by a split: a market move. A factor that stepped by k
  one bar before (or after) the raw jump means the adjustment is there but misdated: ambiguous.

A jump that is split-like on all of it is an ``unexplained_split``: the rows before it are
dropped and the later segment kept. A jump with evidence against a split is a ``market_move``
(warning, rows kept); one with missing or mixed evidence a ``suspect_jump`` (rows kept, action
``review``). A raw jump of 10x or more either way, with no split recorded, that is not a clean
split is always reported as ``large_jump`` (warning, rows kept), even where the vendor's
adjusted close is continuous. Each finding carries the ratio, the volume ratios and the reasons.
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


VOLUME_WINDOW = 20  # sessions of volume compared before and after a jump
MIN_VOLUME_BARS = 5  # fewer valid volumes on either side: the volume evidence is missing
SPIKE_MOVE = 3.0  # jump-day volume at least 3x its trailing median (both readings): a market move
SPIKE_CALM = 2.0  # below 2x the day is split-like; from 2x to 3x it is ambiguous
AFTER_SCALE = (0.6, 2.5)  # following / trailing median share volume, over k, of a split
INTRADAY_SHARE = 0.5  # the bar reaches back over half the jump: it happened during the session
LARGE_JUMP = 10.0  # a raw jump of 10x or 1/10x with no clean split is always reported


def _nearest_split(ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest whole-number split ratio k (price moves by ~1/k) and the distance |ratio*k - 1|."""
    dist = np.abs(ratio[:, None] * DETECTABLE_SPLITS[None, :] - 1)
    best = dist.argmin(axis=1)
    return DETECTABLE_SPLITS[best], dist[np.arange(len(ratio)), best]


def _split_name(k: float) -> str:
    return f"{k:g}-for-1" if k >= 1 else f"1-for-{1 / k:g}"


@dataclass
class _Jump:
    """The evidence about one close-to-close jump with no split recorded (see module doc)."""

    ratio: float  # raw close / previous raw close
    adj_ratio: float  # adjusted close / previous adjusted close
    k: float  # nearest whole-number split: the price moves by ~1/k
    dist: float  # |ratio * k - 1|
    volume_ratio: float  # jump-day share volume / trailing median (NaN: unknown)
    dollar_ratio: float  # jump-day dollar volume / trailing median (NaN: unknown)
    after_scale: float  # following / trailing median share volume, over k (NaN: unknown)
    intraday: float  # share of the jump the bar's extreme reaches back toward the old close
    factor_step: float  # step of adjusted/raw on the day, dividend taken out (1: unchanged)
    misdated: str | None  # "before"/"after" when the factor stepped by k one bar off the jump

    @property
    def spike(self) -> float:
        """Smaller of the share- and dollar-volume ratios: ~1 on a split day in either count."""
        return float(np.fmin(self.volume_ratio, self.dollar_ratio))

    def classify(self, tol: float) -> tuple[str, str, list[str]]:
        """(rule, action, reasons): unexplained_split, market_move/large_jump or suspect_jump."""
        against: list[str] = []
        doubts: list[str] = []
        if self.dist >= tol:
            against.append(f"x{self.ratio:.3f} is {self.dist:.1%} away from the nearest "
                           f"whole-number split ({_split_name(self.k)}, x{1 / self.k:.3f})")
        if abs(self.factor_step - 1) >= tol:
            against.append(f"adjusted close moved x{self.adj_ratio:.3f}: neither continuous (a "
                           "split the vendor adjusted for) nor the raw ratio (one it missed)")
        if self.spike >= SPIKE_MOVE:
            against.append(f"volume spike: {self.volume_ratio:.1f}x shares and "
                           f"{self.dollar_ratio:.1f}x dollars of the trailing median")
        if self.intraday >= INTRADAY_SHARE:
            against.append(f"the day's bar reaches {self.intraday:.0%} of the way back to the "
                           "previous close: the move happened during the session")
        if np.isnan(self.spike):
            doubts.append("no volume to check on the day or in the sessions before it")
        elif self.spike >= SPIKE_CALM:
            doubts.append(f"volume {self.volume_ratio:.1f}x shares and {self.dollar_ratio:.1f}x "
                          "dollars of the trailing median: neither split-like nor a clear spike")
        if np.isnan(self.after_scale):
            doubts.append("too few sessions with volume after the jump to check the share count")
        elif not AFTER_SCALE[0] <= self.after_scale <= AFTER_SCALE[1]:
            doubts.append(f"share volume afterwards {self.after_scale * self.k:.2f}x the volume "
                          f"before, not ~{self.k:g}x as after a {_split_name(self.k)} split")
        if self.misdated:
            doubts.append(f"the vendor's adjustment factor stepped x{self.k:g} one bar "
                          f"{self.misdated} the raw jump: the adjustment looks misdated")
        if against:
            large = abs(np.log(self.ratio)) >= np.log(LARGE_JUMP) - 1e-9
            return ("large_jump" if large else "market_move"), "warning", against
        if doubts:
            return "suspect_jump", "review", doubts
        return "unexplained_split", "rows_dropped", []

    def describe(self) -> str:
        vol = ("volume unknown" if np.isnan(self.volume_ratio) else
               f"volume {self.volume_ratio:.1f}x (dollars {self.dollar_ratio:.1f}x) the "
               f"{VOLUME_WINDOW}-session median")
        return (f"raw close x{self.ratio:.3f}, adjusted close x{self.adj_ratio:.3f}, no split "
                f"recorded; {vol}")


def _median(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(np.median(values)) if len(values) >= MIN_VOLUME_BARS else np.nan


def _evidence(sym: pd.DataFrame, pos: int, tol: float) -> _Jump:
    """Collect the evidence about the jump into row ``pos`` of one symbol's sorted bars."""
    close = sym["close"].to_numpy()
    adj = sym["adjusted_close"].to_numpy()
    vol = sym["volume"].astype("float64").to_numpy()
    ratio = close[pos] / close[pos - 1]
    adj_ratio = adj[pos] / adj[pos - 1]
    k, dist = (float(x[0]) for x in _nearest_split(np.array([ratio])))

    before = slice(max(0, pos - VOLUME_WINDOW), pos)
    vol_before = _median(vol[before])
    dollar_before = _median(vol[before] * close[before])
    vol_after = _median(vol[pos + 1:pos + 1 + VOLUME_WINDOW])
    if not vol_before > 0:
        vol_before = dollar_before = np.nan
    volume_ratio = vol[pos] / vol_before
    dollar_ratio = vol[pos] * close[pos] / dollar_before
    after_scale = vol_after / vol_before / k

    extreme = sym["high"].iat[pos] if ratio < 1 else sym["low"].iat[pos]
    intraday = np.log(extreme / close[pos]) / np.log(close[pos - 1] / close[pos])

    factor = adj / close
    div = sym["dividend_amount"].to_numpy()

    def step(i: int) -> float:  # factor step into bar i, that bar's dividend taken out
        return factor[i] / factor[i - 1] * (1 - div[i] / close[i - 1])

    misdated = None
    if pos >= 2 and abs(step(pos - 1) / k - 1) < tol:
        misdated = "before"
    elif pos + 1 < len(sym) and abs(step(pos + 1) / k - 1) < tol:
        misdated = "after"
    return _Jump(ratio, adj_ratio, k, dist, volume_ratio, dollar_ratio, after_scale,
                 float(intraday), step(pos), misdated)


def check_splits(df: pd.DataFrame, cfg: DataSettings) -> tuple[pd.DataFrame, list[dict]]:
    """Find split-like jumps that the split/adjusted columns do not explain (see module doc).

    A recorded split whose adjusted close still jumps is ``split_not_adjusted``: the rows before
    it are dropped. A raw *and* adjusted jump with no split recorded is weighed on its ratio,
    volume, bar and adjustment factor: only a jump split-like on all of them drops the rows
    before it (``unexplained_split``); the others keep every row and are reported as
    ``market_move`` / ``large_jump`` (warnings) or ``suspect_jump`` (review).
    """
    df = df.sort_values(["symbol", "date"], kind="stable")
    prev_close = df.groupby("symbol")["close"].shift(1)
    prev_adj = df.groupby("symbol")["adjusted_close"].shift(1)
    raw_jump = np.log(df["close"] / prev_close).to_numpy()
    adj_jump = np.log(df["adjusted_close"] / prev_adj).to_numpy()
    recorded = (df["split_coefficient"] != 1.0).to_numpy()
    both = (np.abs(raw_jump) > cfg.split_min_jump) & (np.abs(adj_jump) > cfg.split_min_jump)
    # a recorded split must leave the adjusted series continuous: half the threshold suffices
    not_adjusted = recorded & (np.abs(adj_jump) > cfg.split_min_jump / 2)
    unrecorded = ~recorded & (both | (np.abs(raw_jump) >= np.log(LARGE_JUMP) - 1e-9))
    tol = cfg.split_ratio_tolerance
    keep = np.ones(len(df), dtype=bool)
    findings: list[dict] = []
    sym_pos = df.groupby("symbol", sort=False).cumcount().to_numpy()
    sym_size = df.groupby("symbol", sort=False)["symbol"].transform("size").to_numpy()
    for at in np.flatnonzero(not_adjusted | unrecorded):
        start = at - sym_pos[at]
        row = df.iloc[at]
        if recorded[at]:
            keep[start:at] = False
            findings.append(_finding(row["symbol"], row["date"], "split_not_adjusted",
                                     "rows_dropped", (
                f"raw close x{np.exp(raw_jump[at]):.3f} and adjusted close "
                f"x{np.exp(adj_jump[at]):.3f} (split_coefficient={row['split_coefficient']:g});"
                f" the {at - start} earlier rows are inconsistent with the later ones and were "
                "dropped")))
            continue
        jump = _evidence(df.iloc[start:start + sym_size[at]], at - start, tol)
        if not both[at]:
            # only the raw close jumped 10x: fine where the vendor adjusted a whole-number split
            if jump.dist < tol and abs(jump.factor_step / jump.k - 1) < tol:
                continue
            findings.append(_finding(row["symbol"], row["date"], "large_jump", "warning", (
                f"{jump.describe()}; not a whole-number split the vendor adjusted for; "
                "rows kept")))
            continue
        rule, action, reasons = jump.classify(tol)
        if rule == "unexplained_split":
            keep[start:at] = False
            text = (f"{jump.describe()}: a {_split_name(jump.k)} split on all evidence; the "
                    f"{at - start} earlier rows are inconsistent with the later ones and were "
                    "dropped")
        elif action == "review":
            text = (f"{jump.describe()}; ambiguous, rows kept for review: "
                    + "; ".join(reasons))
        else:
            text = f"{jump.describe()}; not a split, rows kept: " + "; ".join(reasons)
        findings.append(_finding(row["symbol"], row["date"], rule, action, text))
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
