"""Wide panels (sessions x symbols) built once from long bars, and the way back to long rows.

Every time-series kernel then runs column-wise in C (pandas rolling/ewm on a 2-D frame)
instead of once per symbol; cross-sectional kernels run row-wise on the same frames.
The row index is the exchange calendar, so a missing bar is a NaN, never a silently
shortened window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.data.calendar import sessions

PANEL_FIELDS = {
    "open": "adj_open", "high": "adj_high", "low": "adj_low", "close": "adj_close",
    "volume": "adj_volume", "raw_close": "close", "raw_volume": "volume",
}


@dataclass
class Panel:
    """Adjusted OHLCV (and raw close/volume) as aligned session x symbol frames."""

    open: pd.DataFrame
    high: pd.DataFrame
    low: pd.DataFrame
    close: pd.DataFrame
    volume: pd.DataFrame
    raw_close: pd.DataFrame
    raw_volume: pd.DataFrame
    present: np.ndarray          # bool (T, N): a bar exists
    sectors: pd.Series           # symbol -> sector

    @property
    def dates(self) -> pd.DatetimeIndex:
        return self.close.index

    @property
    def symbols(self) -> pd.Index:
        return self.close.columns

    def frame(self, values: np.ndarray) -> pd.DataFrame:
        """Wrap a (T, N) array with the panel's axes."""
        return pd.DataFrame(values, index=self.dates, columns=self.symbols)


def build_panel(bars: pd.DataFrame, constituents: pd.DataFrame | None,
                calendar: str) -> Panel:
    """Scatter long bars into wide arrays indexed by calendar sessions and symbols."""
    if bars.empty:
        raise ValueError("no bars to build features from")
    dates = sessions(calendar, bars["date"].min(), bars["date"].max())
    symbols = pd.Index(sorted(bars["symbol"].unique()), name="symbol")
    di = dates.get_indexer(pd.DatetimeIndex(bars["date"]))
    if (di < 0).any():
        bad = bars.loc[di < 0, "date"].iloc[0]
        raise ValueError(f"bar on {bad.date()} is not a {calendar} session; validate first")
    si = symbols.get_indexer(bars["symbol"])
    shape = (len(dates), len(symbols))
    frames = {}
    for name, col in PANEL_FIELDS.items():
        arr = np.full(shape, np.nan)
        arr[di, si] = pd.to_numeric(bars[col], errors="coerce").to_numpy(dtype="float64",
                                                                           na_value=np.nan)
        frames[name] = pd.DataFrame(arr, index=dates, columns=symbols)
    present = np.zeros(shape, dtype=bool)
    present[di, si] = True
    sectors = _sectors(symbols, constituents)
    return Panel(**frames, present=present, sectors=sectors)


def _sectors(symbols: pd.Index, constituents: pd.DataFrame | None) -> pd.Series:
    if constituents is None or constituents.empty:
        return pd.Series("Unknown", index=symbols, dtype="string")
    mapping = constituents.drop_duplicates("symbol").set_index("symbol")["sector"]
    return mapping.reindex(symbols).fillna("Unknown").astype("string")


def to_long(panel: Panel, wide: dict[str, pd.DataFrame], mask: np.ndarray) -> pd.DataFrame:
    """Gather wide frames into long rows (symbol, date, ...) where ``mask`` is True."""
    t_idx, s_idx = np.nonzero(mask)
    order = np.lexsort((t_idx, s_idx))  # sort by symbol, then date
    t_idx, s_idx = t_idx[order], s_idx[order]
    out = {
        "symbol": pd.array(panel.symbols.to_numpy()[s_idx], dtype="string"),
        "date": panel.dates.to_numpy()[t_idx],
    }
    for name, frame in wide.items():
        values = frame.to_numpy() if isinstance(frame, pd.DataFrame) else np.asarray(frame)
        if values.ndim == 1:  # a market-level series: same value for every symbol that day
            out[name] = values[t_idx]
        else:
            out[name] = values[t_idx, s_idx]
    return pd.DataFrame(out)
