"""Intraday bars for one session: a user's parquet, or a seeded SIMULATION from daily OHLC.

The project has daily bars only. For the demo and for replays, each (symbol, session) gets a
simulated path: a Brownian bridge from the open through the day's high and low (visited at
random times, in random order) to the close, clipped to [low, high], cut into bars of
``execution.bar_minutes``. The simulated bars keep the day's open, high, low and close exactly
and spread the day's volume with a U-shaped profile. They are a simulation, not market data:
anything measured on them (slippage, stop order within the day) is only as good as the model.

A bar's ``ts`` is its END time in UTC: the moment its prices are known.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from tasks.data.calendar import session_bounds

BAR_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]


class IntradayBarFrame(pa.DataFrameModel):
    """Intraday bars: one row per (symbol, bar end time)."""

    symbol: Series[str] = pa.Field(str_length={"min_value": 1})
    ts: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs={"unit": "ns", "tz": "UTC"})
    open: Series[float] = pa.Field(gt=0)
    high: Series[float] = pa.Field(gt=0)
    low: Series[float] = pa.Field(gt=0)
    close: Series[float] = pa.Field(gt=0)
    volume: Series[float] = pa.Field(ge=0, nullable=True)

    @pa.dataframe_check
    def range_holds(cls, df: pd.DataFrame) -> Series[bool]:
        """low <= open, close <= high."""
        return (df["high"] >= df[["open", "close"]].max(axis=1)) & (
            df["low"] <= df[["open", "close"]].min(axis=1))

    @pa.dataframe_check
    def unique_symbol_ts(cls, df: pd.DataFrame) -> bool:
        """At most one bar per (symbol, ts)."""
        return not df.duplicated(["symbol", "ts"]).any()

    class Config:
        strict = "filter"
        coerce = False


def _anchor(level: float, open_: float, close: float, n: int, free: list[int],
            rng: np.random.Generator) -> int:
    """Where the path visits an extreme: at the open or close when it is one, else at random."""
    if level == open_:
        return 0
    if level == close:
        return n
    pick = int(rng.choice(free))
    free.remove(pick)
    return pick


def bridge_path(o: float, h: float, lo: float, c: float, n: int, rng: np.random.Generator
                ) -> np.ndarray:
    """n+1 points from o to c that touch h and lo exactly and never leave [lo, h]."""
    if h <= lo:
        return np.full(n + 1, o)
    free = list(range(1, n))
    anchors = {0: o, n: c}
    anchors[_anchor(h, o, c, n, free, rng)] = h
    anchors[_anchor(lo, o, c, n, free, rng)] = lo
    idx = sorted(anchors)
    steps = rng.standard_normal(n) * (h - lo) / np.sqrt(n) * 0.8
    walk = np.concatenate([[0.0], np.cumsum(steps)])
    path = np.empty(n + 1)
    for i, j in zip(idx[:-1], idx[1:], strict=True):
        k = np.arange(i, j + 1)
        frac = (k - i) / (j - i) if j > i else np.zeros(1)
        noise = walk[k] - walk[i] - frac * (walk[j] - walk[i])
        path[k] = anchors[i] + frac * (anchors[j] - anchors[i]) + noise
    return np.clip(path, lo, h)


def _bars_from_path(path: np.ndarray, n_bars: int, per_bar: int) -> dict[str, np.ndarray]:
    idx = np.arange(n_bars)[:, None] * per_bar + np.arange(per_bar + 1)[None, :]
    win = path[idx]
    return {"open": win[:, 0], "high": win.max(axis=1), "low": win.min(axis=1),
            "close": win[:, -1]}


def volume_profile(n_bars: int) -> np.ndarray:
    """U-shaped share of the day's volume per bar (sums to 1)."""
    x = np.linspace(-1.0, 1.0, n_bars) if n_bars > 1 else np.zeros(1)
    w = 1.0 + 2.0 * x ** 2
    return w / w.sum()


def session_rng(seed: int, symbol: str, session: str) -> np.random.Generator:
    """The generator of one (symbol, session): same inputs, same path."""
    return np.random.default_rng([seed, zlib.crc32(symbol.encode()), int(session.replace("-", ""))])


def simulate_session(daily: pd.DataFrame, session: str, calendar: str, bar_minutes: int,
                     per_bar: int, seed: int) -> pd.DataFrame:
    """Simulated bars of ``session`` from its daily rows (symbol, open, high, low, close, volume)."""
    start, end = session_bounds(calendar, session)
    n_bars = max(1, int((end - start) / pd.Timedelta(minutes=bar_minutes)))
    ts = start + pd.to_timedelta(np.arange(1, n_bars + 1) * bar_minutes, unit="min")
    share = volume_profile(n_bars)
    parts = []
    for r in daily.sort_values("symbol").itertuples(index=False):
        rng = session_rng(seed, str(r.symbol), session)
        path = bridge_path(float(r.open), float(r.high), float(r.low), float(r.close),
                           n_bars * per_bar, rng)
        cols = _bars_from_path(path, n_bars, per_bar)
        vol = float(r.volume) if pd.notna(r.volume) else np.nan
        parts.append(pd.DataFrame({"symbol": str(r.symbol), "ts": ts, **cols,
                                   "volume": vol * share}))
    if not parts:
        return empty_bars()
    return _sorted(pd.concat(parts, ignore_index=True))


def empty_bars() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
    frame["symbol"] = frame["symbol"].astype("string")
    frame["ts"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame["symbol"] = frame["symbol"].astype("string")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns")
    for col in ("open", "high", "low", "close", "volume"):
        frame[col] = frame[col].astype("float64")
    return frame.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def validated(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Bars with the schema's dtypes (numbers as floats, times in UTC), checked."""
    missing = [c for c in BAR_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"intraday bars from {where} lack columns {missing}; need {BAR_COLUMNS}")
    out = frame[BAR_COLUMNS].copy()
    ts = pd.to_datetime(out["ts"])
    out["ts"] = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    try:
        return IntradayBarFrame.validate(_sorted(out))
    except (pa.errors.SchemaError, pa.errors.SchemaErrors) as exc:
        raise ValueError(f"intraday bars from {where} are invalid: {exc}") from exc


def load_bar_file(path: Path, session: str, calendar: str, symbols: list[str] | None
                  ) -> pd.DataFrame:
    """The bars of ``session`` from a user's parquet (tz-naive times are read as UTC)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"intraday bars file {path} does not exist (--bars / "
                                "execution.bars_path)")
    raw = pd.read_parquet(path)
    if "ts" not in raw and "timestamp" in raw:
        raw = raw.rename(columns={"timestamp": "ts"})
    frame = validated(raw, str(path))
    start, end = session_bounds(calendar, session)
    day = frame.loc[(frame["ts"] > start) & (frame["ts"] <= end)]
    if symbols is not None:
        day = day.loc[day["symbol"].isin(symbols)]
    return day.reset_index(drop=True)
