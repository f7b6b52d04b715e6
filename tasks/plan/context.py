"""Optional market context per symbol and session: RL size hint, news sentiment, put/call ratio.

A pluggable source: a parquet or CSV file with ``date, symbol`` and any of the context columns
(``daily.context_path``), plus an optional free-text ``news_headline`` (never parsed: it reaches
an escalation request only as truncated data). Only rows stamped with the session's date are
used. A column that is absent, or a symbol without a row, is *unknown* (NaN) and is reported
as such; nothing is invented. No file configured means every input is unknown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from tasks.io import file_hash
from tasks.plan.build import CONTEXT_COLUMNS

#: free-text context columns: passed to the escalation only as delimited, truncated data
TEXT_COLUMNS = ["news_headline"]


class ContextSource(Protocol):
    def load(self, as_of: pd.Timestamp) -> pd.DataFrame | None: ...

    def describe(self) -> dict[str, Any]: ...


class NoContext:
    """No context source configured: every optional input is unknown."""

    def load(self, as_of: pd.Timestamp) -> pd.DataFrame | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"source": None}


class FileContext:
    """Context rows from a parquet or CSV file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"context file {self.path} does not exist "
                                    "(daily.context_path)")
        self._frame: pd.DataFrame | None = None

    def _read(self) -> pd.DataFrame:
        if self._frame is None:
            raw = (pd.read_parquet(self.path) if self.path.suffix == ".parquet"
                   else pd.read_csv(self.path))
            missing = {"date", "symbol"} - set(raw.columns)
            if missing:
                raise ValueError(f"context file {self.path} lacks column(s) {sorted(missing)}")
            raw["date"] = pd.to_datetime(raw["date"]).dt.normalize()
            raw["symbol"] = raw["symbol"].astype("string")
            cols = ["date", "symbol", *[c for c in CONTEXT_COLUMNS + TEXT_COLUMNS if c in raw]]
            self._frame = raw[cols]
        return self._frame

    def load(self, as_of: pd.Timestamp) -> pd.DataFrame | None:
        frame = self._read()
        day = frame.loc[frame["date"] == as_of].drop(columns="date")
        if day["symbol"].duplicated().any():
            raise ValueError(f"context file {self.path} has duplicate symbols on {as_of.date()}")
        return day.reset_index(drop=True)

    def describe(self) -> dict[str, Any]:
        return {"source": str(self.path), "sha256": file_hash(self.path)}


def context_source(path: str | None, home: Path) -> ContextSource:
    if not path:
        return NoContext()
    p = Path(path)
    return FileContext(p if p.is_absolute() else home / p)


def context_status(context: pd.DataFrame | None, symbols: list[str]) -> dict[str, Any]:
    """Per input: how many scored symbols have it (the rest are unknown)."""
    out = {}
    for col in CONTEXT_COLUMNS:
        if context is None or col not in context:
            out[col] = {"known": 0, "unknown": len(symbols)}
            continue
        known = context.loc[context["symbol"].isin(symbols), col].notna().sum()
        out[col] = {"known": int(known), "unknown": len(symbols) - int(known)}
    return out
