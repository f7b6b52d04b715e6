"""pandera schemas of the frames that cross a step or touch disk."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

VENDOR_COLUMNS = [
    "symbol", "date", "open", "high", "low", "close",
    "adjusted_close", "volume", "dividend_amount", "split_coefficient",
]
PRICE_COLUMNS = ["open", "high", "low", "close", "adjusted_close"]
CONSTITUENT_COLUMNS = ["symbol", "name", "sector"]


class VendorBarFrame(pa.DataFrameModel):
    """Daily bars as vendors deliver them: raw OHLC plus adjusted close and corporate actions."""

    symbol: Series[str] = pa.Field(str_length={"min_value": 1})
    date: Series[pd.Timestamp]
    open: Series[float] = pa.Field(gt=0)
    high: Series[float] = pa.Field(gt=0)
    low: Series[float] = pa.Field(gt=0)
    close: Series[float] = pa.Field(gt=0)
    adjusted_close: Series[float] = pa.Field(gt=0)
    volume: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    dividend_amount: Series[float] = pa.Field(ge=0)
    split_coefficient: Series[float] = pa.Field(gt=0)

    @pa.dataframe_check
    def high_is_top(cls, df: pd.DataFrame) -> Series[bool]:
        """high >= max(open, close) and low <= min(open, close)."""
        top = df[["open", "close"]].max(axis=1)
        bottom = df[["open", "close"]].min(axis=1)
        return (df["high"] >= top) & (df["low"] <= bottom)

    @pa.dataframe_check
    def unique_symbol_date(cls, df: pd.DataFrame) -> bool:
        """At most one bar per (symbol, date)."""
        return not df.duplicated(["symbol", "date"]).any()

    class Config:
        strict = False
        coerce = False


class StoreBarFrame(VendorBarFrame):
    """Validated bars with split/dividend-adjusted prices and split-adjusted volume."""

    adj_factor: Series[float] = pa.Field(gt=0)
    adj_open: Series[float] = pa.Field(gt=0)
    adj_high: Series[float] = pa.Field(gt=0)
    adj_low: Series[float] = pa.Field(gt=0)
    adj_close: Series[float] = pa.Field(gt=0)
    adj_volume: Series[float] = pa.Field(ge=0, nullable=True)

    class Config:
        strict = True
        coerce = False


class ConstituentFrame(pa.DataFrameModel):
    """One row per symbol: name and sector."""

    symbol: Series[str] = pa.Field(unique=True)
    name: Series[str]
    sector: Series[str]

    class Config:
        strict = True


class QualityFrame(pa.DataFrameModel):
    """One row per rejected row, symbol or file, or per warning or jump flagged for review."""

    symbol: Series[str] = pa.Field(nullable=True)
    date: Series[str] = pa.Field(nullable=True)
    rule: Series[str]
    action: Series[str] = pa.Field(
        isin=["row_dropped", "rows_dropped", "symbol_dropped", "file_rejected", "warning", "review"]
    )
    detail: Series[str]
