"""The project's bar store: hive-partitioned parquet by year (readable with DuckDB) + manifest.

Layout under ``$HCP_HOME/data/store``::

    bars/year=2019/part-0.parquet   validated, adjusted bars (StoreBarFrame)
    constituents.parquet            symbol, name, sector
    manifest.json                   content hash, source, inputs, spans, quality report path

The whole store is rebuilt in a temp folder and swapped in, so readers never see half a store;
importing the same content again leaves every file untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.dataset as ds

from tasks.data.schemas import ConstituentFrame, StoreBarFrame
from tasks.io import atomic_write_json, frame_hash, replace_dir, write_parquet_bytes_stable

UNKNOWN_SECTOR = "Unknown"


class StoreError(RuntimeError):
    """The bar store is missing or unusable."""


@dataclass
class WriteOutcome:
    """What an import did to the store."""

    changed: bool
    content_hash: str
    path: Path


def content_hash(bars: pd.DataFrame, constituents: pd.DataFrame) -> str:
    """One hash over bars and constituents (order-independent of input files)."""
    return frame_hash(bars) + ":" + frame_hash(constituents)[:16]


def complete_constituents(bars: pd.DataFrame, cons: pd.DataFrame | None) -> pd.DataFrame:
    """One row per stored symbol; symbols without a known sector get 'Unknown' (reported)."""
    syms = pd.DataFrame({"symbol": pd.Series(sorted(bars["symbol"].unique()), dtype="string")})
    if cons is None:
        cons = pd.DataFrame({"symbol": [], "name": [], "sector": []}, dtype="string")
    out = syms.merge(cons.astype("string"), on="symbol", how="left")
    out["name"] = out["name"].fillna(out["symbol"])
    out["sector"] = out["sector"].fillna(UNKNOWN_SECTOR)
    return ConstituentFrame.validate(out.reset_index(drop=True))


def read_manifest(store: Path) -> dict[str, Any] | None:
    """The store's manifest, or None when there is no store yet."""
    path = Path(store) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_store(store: Path, bars: pd.DataFrame, constituents: pd.DataFrame,
                meta: dict[str, Any]) -> WriteOutcome:
    """Validate against the store schema and write atomically; no-op when content is unchanged."""
    bars = StoreBarFrame.validate(bars.reset_index(drop=True))
    digest = content_hash(bars, constituents)
    current = read_manifest(store)
    if current and current.get("content_hash") == digest:
        return WriteOutcome(False, digest, Path(store))
    manifest = {
        **meta,
        "content_hash": digest,
        "rows": int(len(bars)),
        "symbols": int(bars["symbol"].nunique()),
        "first_date": bars["date"].min().date().isoformat(),
        "last_date": bars["date"].max().date().isoformat(),
    }

    def build(tmp: Path) -> None:
        years = bars["date"].dt.year
        for year, part in bars.groupby(years, sort=True):
            folder = tmp / "bars" / f"year={year}"
            folder.mkdir(parents=True)
            write_parquet_bytes_stable(part, folder / "part-0.parquet")
        write_parquet_bytes_stable(constituents, tmp / "constituents.parquet")
        atomic_write_json(tmp / "manifest.json", manifest)

    replace_dir(Path(store), build)
    return WriteOutcome(True, digest, Path(store))


def _require(store: Path) -> None:
    if read_manifest(store) is None:
        raise StoreError(
            f"no bar store at {store}: run `hcp data import --source demo` (or parquet/csv) first")


def load_bars(store: Path, start: Any = None, end: Any = None,
              symbols: list[str] | None = None) -> pd.DataFrame:
    """Stored bars in [start, end] (inclusive), optionally for some symbols, sorted."""
    _require(store)
    dataset = ds.dataset(Path(store) / "bars", format="parquet", partitioning="hive")
    expr = None
    if start is not None:
        expr = ds.field("date") >= pd.Timestamp(start)
    if end is not None:
        cond = ds.field("date") <= pd.Timestamp(end)
        expr = cond if expr is None else expr & cond
    if symbols:
        cond = ds.field("symbol").isin(list(symbols))
        expr = cond if expr is None else expr & cond
    table = dataset.to_table(filter=expr, columns=list(StoreBarFrame.to_schema().columns))
    df = table.to_pandas()
    df["symbol"] = df["symbol"].astype("string")
    df["date"] = df["date"].astype("datetime64[ns]")
    df["volume"] = df["volume"].astype("Int64")
    return df.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)


def load_constituents(store: Path) -> pd.DataFrame:
    """Stored constituents (symbol, name, sector)."""
    _require(store)
    df = pd.read_parquet(Path(store) / "constituents.parquet")
    return df.astype("string")


def query(store: Path, sql: str) -> pd.DataFrame:
    """Run SQL with DuckDB over the store; the bars are the view ``bars``."""
    _require(store)
    con = duckdb.connect()
    try:
        glob = str(Path(store) / "bars" / "*" / "*.parquet")
        con.execute(f"CREATE VIEW bars AS SELECT * FROM read_parquet('{glob}', "
                    "hive_partitioning = true)")
        cons = str(Path(store) / "constituents.parquet")
        con.execute(f"CREATE VIEW constituents AS SELECT * FROM read_parquet('{cons}')")
        return con.execute(sql).df()
    finally:
        con.close()
