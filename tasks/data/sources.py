"""Market-data sources behind one interface: demo, parquet, csv and (optional) yfinance.

A source only reads: it returns the vendor-format bars it found, an optional constituents
frame, and findings for inputs it could not read at all (a vendor error payload saved where
a CSV was expected, a file missing required columns, dates whose session is ambiguous).
Row-level validation is elsewhere.

Dates are session dates without a timezone. A timezone-aware date column (a parquet
timestamp with a zone, or CSV stamps with a UTC offset) is turned into session dates only
where that is unambiguous: a stamp at midnight in its own zone is a date label (its date),
and a stamp in the exchange's own zone (``exchange_tz``, set by the import from
``data.calendar``) is on that session's local date. Anything else, e.g. 21:00 UTC for a New
York close, could be either of two sessions: the file is rejected (``ambiguous_timezone``)
with the zone and an example, never shifted by a guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow.parquet as pq

from tasks.data.schemas import CONSTITUENT_COLUMNS, VENDOR_COLUMNS

COLUMN_ALIASES = {"timestamp": "date", "ticker": "symbol", "adj_close": "adjusted_close"}
PAYLOAD_MARKERS = ("error message", "information", "note", "thank you for using")
_OFFSET = re.compile(r"\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}:?\d{2})$")


class SourceError(RuntimeError):
    """A source cannot deliver anything (bad path, unreadable file, missing extra)."""


@dataclass
class SourceResult:
    """What a source delivered."""

    bars: pd.DataFrame
    constituents: pd.DataFrame | None
    inputs: list[str]
    findings: list[dict] = field(default_factory=list)


class BarSource(Protocol):
    """Anything that can deliver vendor-format daily bars."""

    name: str

    def load(self) -> SourceResult:
        """Read the bars (and constituents, if known)."""
        ...


def _file_finding(path: Path, rule: str, detail: str) -> dict:
    return {"symbol": None, "date": None, "rule": rule, "action": "file_rejected",
            "detail": f"{path}: {detail}"}


def _normalise_columns(df: pd.DataFrame) -> pd.DataFrame:
    cols = {c: COLUMN_ALIASES.get(str(c).strip().lower(), str(c).strip().lower()) for c in df}
    return df.rename(columns=cols)


def _missing_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in VENDOR_COLUMNS if c not in df.columns]


def looks_like_vendor_payload(head: str) -> str | None:
    """Return a reason if the text is an API error/notice payload instead of CSV rows."""
    text = head.lstrip()
    if text.startswith(("{", "[")):
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        shown = json.dumps(body)[:120] if body is not None else text[:120].replace("\n", " ")
        return f"JSON/vendor payload instead of CSV rows: {shown}"
    first = text.splitlines()[0].lower() if text else ""
    if any(m in first for m in PAYLOAD_MARKERS):
        return f"vendor notice instead of CSV header: {first[:120]!r}"
    return None


def _dates_from_stamps(wall: pd.Series, utc: pd.Series, zone: str, exchange_tz: str | None
                       ) -> tuple[pd.Series | None, str | None]:
    """Session dates of timezone-aware stamps given as their wall-clock time in their own
    zone (naive) and the same instants in UTC: (dates, None) when unambiguous (see the
    module docstring), else (None, why)."""
    known = wall.notna()
    ok = ~known | (wall == wall.dt.normalize())
    if exchange_tz:
        local = utc.dt.tz_convert(exchange_tz).dt.tz_localize(None)
        ok |= local == wall
    if bool(ok.all()):
        return wall.dt.normalize().astype("datetime64[ns]"), None
    example = wall[~ok].iloc[0]
    where = f"neither midnight nor in the exchange's zone {exchange_tz}" if exchange_tz \
        else "not at midnight (no exchange zone given)"
    return None, (f"column date is timezone-aware ({zone}) with times of day {where}, e.g. "
                  f"{example} {zone}: its session date is ambiguous; write session dates "
                  "without a timezone (or stamps in the exchange's zone)")


def session_dates(df: pd.DataFrame, exchange_tz: str | None) -> tuple[pd.DataFrame, str | None]:
    """``df`` with its ``date`` column as naive session dates when it was timezone-aware
    (a zoned timestamp column, or strings with a UTC offset); (df, why) when that is
    ambiguous. Naive dates and plain strings are left as they are (validation parses them)."""
    col = df["date"]
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        dates, why = _dates_from_stamps(col.dt.tz_localize(None), col.dt.tz_convert("UTC"),
                                        str(col.dt.tz), exchange_tz)
    elif col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        text = col.astype("string").str.strip()
        offset = text.str.contains(_OFFSET, na=False)
        if not bool(offset.any()):
            return df, None
        if not bool(offset[text.notna() & (text != "")].all()):
            return df, ("column date mixes stamps with and without a UTC offset "
                        f"(e.g. {text[offset].iloc[0]!r}): write session dates without a timezone")
        wall = pd.to_datetime(text.str.replace(r"\s*(?:Z|[+-]\d{2}:?\d{2})$", "", regex=True),
                              errors="coerce", format="ISO8601")
        utc = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        dates, why = _dates_from_stamps(wall, utc, "UTC offsets", exchange_tz)
    else:
        return df, None
    return (df, why) if dates is None else (df.assign(date=dates), None)


def read_constituents(path: Path | None) -> pd.DataFrame | None:
    """Read a constituents CSV/parquet (symbol, name, sector); None when no path."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"constituents file {path} does not exist")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    df = _normalise_columns(df)
    missing = [c for c in CONSTITUENT_COLUMNS if c not in df.columns]
    if missing:
        raise SourceError(f"constituents file {path} lacks columns {missing}")
    return df[CONSTITUENT_COLUMNS].astype("string").drop_duplicates("symbol")


@dataclass
class ParquetSource:
    """One parquet file (or a folder of them) in the vendor format."""

    path: Path
    constituents_path: Path | None = None
    name: str = "parquet"
    exchange_tz: str | None = None   # zone whose stamps give their local date (import: calendar's)

    def load(self) -> SourceResult:
        path = Path(self.path)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise SourceError(f"no parquet file at {path}")
        frames, findings = [], []
        for f in files:
            df = _normalise_columns(pq.read_table(f).to_pandas())
            missing = _missing_columns(df)
            if missing:
                findings.append(_file_finding(f, "missing_columns", f"lacks {missing}"))
                continue
            df, why = session_dates(df, self.exchange_tz)
            if why:
                findings.append(_file_finding(f, "ambiguous_timezone", why))
                continue
            frames.append(df[VENDOR_COLUMNS])
        bars = pd.concat(frames, ignore_index=True) if frames else _empty()
        return SourceResult(bars, read_constituents(self.constituents_path),
                            [str(f) for f in files], findings)


@dataclass
class CsvSource:
    """One CSV file, or a folder of per-symbol CSVs (symbol from the file name if no column)."""

    path: Path
    constituents_path: Path | None = None
    name: str = "csv"
    exchange_tz: str | None = None   # zone whose stamps give their local date (import: calendar's)

    def load(self) -> SourceResult:
        path = Path(self.path)
        files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise SourceError(f"no CSV file at {path}")
        frames, findings = [], []
        for f in files:
            df, finding = self._read_one(f, self.exchange_tz)
            if finding:
                findings.append(finding)
            elif df is not None:
                frames.append(df)
        bars = pd.concat(frames, ignore_index=True) if frames else _empty()
        return SourceResult(bars, read_constituents(self.constituents_path),
                            [str(f) for f in files], findings)

    @staticmethod
    def _read_one(f: Path, exchange_tz: str | None = None) -> tuple[pd.DataFrame | None, dict | None]:
        with open(f, encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
        reason = looks_like_vendor_payload(head)
        if reason:
            return None, _file_finding(f, "vendor_error_payload", reason)
        try:
            df = _normalise_columns(pd.read_csv(f, dtype={"symbol": str}))
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            return None, _file_finding(f, "unreadable_csv", str(exc)[:200])
        if "symbol" not in df.columns:
            df.insert(0, "symbol", f.stem)
        missing = _missing_columns(df)
        if missing:
            return None, _file_finding(f, "missing_columns", f"lacks {missing}")
        df, why = session_dates(df, exchange_tz)
        if why:
            return None, _file_finding(f, "ambiguous_timezone", why)
        return df[VENDOR_COLUMNS], None


@dataclass
class DemoSource:
    """The seeded synthetic market, written in the vendor format and read back like real data."""

    folder: Path
    seed: int = 7
    n_symbols: int = 60
    n_sectors: int = 10
    start: str = "2017-01-03"
    end: str = "2024-12-31"
    inject_bad_rows: bool = True
    reversal: float | None = None   # None: the demo's default planted signal
    name: str = "demo"

    def load(self) -> SourceResult:
        from tasks.data.demo import DemoSpec, generate_demo_market, write_demo_market

        extra = {} if self.reversal is None else {"reversal": self.reversal}
        spec = DemoSpec(seed=self.seed, n_symbols=self.n_symbols, n_sectors=self.n_sectors,
                        start=self.start, end=self.end, inject_bad_rows=self.inject_bad_rows,
                        **extra)
        files = write_demo_market(generate_demo_market(spec), Path(self.folder))
        inner = ParquetSource(files["bars"], files["constituents"], name="demo")
        return inner.load()


@dataclass
class YFinanceSource:
    """Optional: download bars with yfinance (needs the ``yfinance`` extra and internet)."""

    symbols: list[str]
    start: str
    end: str
    name: str = "yfinance"

    def load(self) -> SourceResult:
        try:
            import yfinance as yf
        except ImportError as exc:
            raise SourceError("the yfinance source needs: pip install '.[yfinance]'") from exc
        frames = []
        for sym in self.symbols:
            raw = yf.Ticker(sym).history(start=self.start, end=self.end, auto_adjust=False,
                                         actions=True)
            frames.append(_from_yfinance(sym, raw))
        return SourceResult(pd.concat(frames, ignore_index=True), None, list(self.symbols))


def _from_yfinance(symbol: str, raw: pd.DataFrame) -> pd.DataFrame:
    """Map yfinance's columns to the vendor format."""
    df = raw.reset_index().rename(columns=str.lower)
    split = df.get("stock splits", 0.0).replace(0.0, 1.0)
    return pd.DataFrame({
        "symbol": symbol, "date": pd.to_datetime(df["date"]).dt.tz_localize(None).dt.normalize(),
        "open": df["open"], "high": df["high"], "low": df["low"], "close": df["close"],
        "adjusted_close": df["adj close"], "volume": df["volume"],
        "dividend_amount": df.get("dividends", 0.0), "split_coefficient": split,
    })


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in VENDOR_COLUMNS})
