"""The project's bar store: hive-partitioned parquet by year (readable with DuckDB) + manifest.

Layout under ``$HCP_HOME/data/store``::

    bars/year=2019/part-0.parquet   validated, adjusted bars (StoreBarFrame)
    constituents.parquet            symbol, name, sector
    manifest.json                   content hash, source, inputs, spans, quality report path,
                                    row count of every partition and of constituents.parquet

The whole store is rebuilt in a temp folder and swapped in, so readers never see half a store;
importing the same content again leaves every file untouched.

Readers check the store before they use it (:func:`check_store`, cheap: the file list and the
row counts in the parquet footers, no data read): a manifest of the wrong shape, a partition
missing, added or with other rows than the manifest records stops them with one line naming
the file and the remedy (import again; an import rebuilds a damaged store even when its
content hash is unchanged). A swap cut short between its two renames (no store, the previous
one in ``.old-store``) is undone on the next read or import, with a warning.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from tasks.data.schemas import ConstituentFrame, StoreBarFrame
from tasks.io import (
    atomic_write_json,
    exclusive_lock,
    frame_hash,
    replace_dir,
    write_parquet_bytes_stable,
)
from tasks.statefiles import StateFileError, is_temp_name, load_json_state

UNKNOWN_SECTOR = "Unknown"
CONSTITUENTS = "constituents.parquet"
log = logging.getLogger("hcp.store")
_YEAR = re.compile(r"bars/year=(\d+)/")
IsoDate = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class StoreError(RuntimeError):
    """The bar store is missing or unusable."""


class StoreManifest(BaseModel):
    """``manifest.json``: what the import stored. ``partitions`` (file -> rows) and
    ``constituents_rows`` are absent from stores written before they were recorded: those are
    checked against ``rows`` and the span of years instead."""

    model_config = ConfigDict(extra="allow")

    source: str
    content_hash: str = Field(min_length=1)
    rows: int = Field(ge=0)
    symbols: int = Field(ge=0)
    first_date: IsoDate
    last_date: IsoDate
    inputs: list[str] = Field(default_factory=list)
    quality_report: str | None = None
    partitions: dict[str, Annotated[int, Field(ge=0)]] | None = None
    constituents_rows: int | None = Field(None, ge=0)


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


def _swap_lock(store: Path) -> Path:
    """The lock :func:`tasks.io.replace_dir` holds while it swaps ``store`` (same name)."""
    return store.with_name(f".{store.name}.lock")


def recover_store(store: Path) -> bool:
    """Undo a swap cut short between its two renames: no store, the previous one sitting in
    ``.old-<name>``. The previous store (whole: it was in use) is put back, with a warning;
    the interrupted import is simply not applied (run it again). True when it restored one."""
    store = Path(store)
    old = store.with_name(f".old-{store.name}")
    if store.exists() or not old.is_dir():
        return False
    with exclusive_lock(_swap_lock(store)):
        if store.exists() or not old.is_dir():  # another process finished or undid it
            return False
        os.replace(old, store)
    log.warning("bar store %s was missing with the previous one in %s (an import cut short "
                "between its two renames): the previous store is back in place; run the "
                "import again to apply it", store, old.name)
    return True


def _remedy(store: Path) -> str:
    return (f"import the bars again to rebuild the store (`hcp data import ...`; an import "
            f"rebuilds a damaged store) or restore {store} from a backup")


def read_manifest(store: Path) -> dict[str, Any] | None:
    """The store's manifest, or None when there is no store yet (after undoing a swap cut
    short, :func:`recover_store`). A manifest that is not JSON or not of
    :class:`StoreManifest`'s shape is a :class:`~tasks.statefiles.StateFileError` (one line
    naming the file)."""
    store = Path(store)
    recover_store(store)
    model = load_json_state(store / "manifest.json", StoreManifest, remedy=_remedy(store))
    return None if model is None else model.model_dump(exclude_unset=True)


def _rows(path: Path) -> int:
    return pq.read_metadata(path).num_rows


def store_problem(store: Path, manifest: dict[str, Any]) -> str | None:
    """What in the store disagrees with its manifest (None: nothing). Cheap: the partition
    files and the row counts in their parquet footers."""
    store = Path(store)
    found = {f.relative_to(store).as_posix(): f for f in sorted((store / "bars").glob("*/*.parquet"))
             if not is_temp_name(f.name) and not is_temp_name(f.parent.name)}
    counts: dict[str, int] = {}
    for name, f in found.items():
        try:
            counts[name] = _rows(f)
        except (OSError, ValueError) as exc:  # pyarrow's errors are both
            return f"partition {name} is unreadable ({str(exc).splitlines()[0][:120]})"
    parts = manifest.get("partitions")
    if parts is not None:
        for name, rows in sorted(parts.items()):
            if name not in counts:
                return f"partition {name} is missing (the manifest records {rows:,} rows in it)"
            if counts[name] != rows:
                return (f"partition {name} holds {counts[name]:,} rows where the manifest "
                        f"records {rows:,}")
        extra = sorted(set(counts) - set(parts))
        if extra:
            return f"partition {extra[0]} is not in the manifest (a file added by hand?)"
    else:  # a manifest written before partitions were recorded: the span of years and rows
        first, last = int(manifest["first_date"][:4]), int(manifest["last_date"][:4])
        years = {int(m.group(1)) for m in map(_YEAR.match, counts) if m}
        for year in range(first, last + 1):
            if year not in years:
                return (f"partition bars/year={year} is missing (the manifest's span "
                        f"{manifest['first_date']}..{manifest['last_date']} covers it)")
        total = sum(counts.values())
        if total != manifest["rows"]:
            return f"the partitions hold {total:,} rows where the manifest records {manifest['rows']:,}"
    cons = store / CONSTITUENTS
    if not cons.is_file():
        return f"{CONSTITUENTS} is missing"
    want = manifest.get("constituents_rows")
    try:
        have = _rows(cons)
    except (OSError, ValueError) as exc:
        return f"{CONSTITUENTS} is unreadable ({str(exc).splitlines()[0][:120]})"
    if want is not None and have != want:
        return f"{CONSTITUENTS} holds {have:,} rows where the manifest records {want:,}"
    return None


def check_store(store: Path) -> dict[str, Any]:
    """The manifest of a store fit to read: :class:`StoreError` when there is none or when
    its files disagree with it (one line: the file, what is wrong, the remedy)."""
    store = Path(store)
    manifest = read_manifest(store)
    if manifest is None:
        raise StoreError(
            f"no bar store at {store}: run `hcp data import --source demo` (or parquet/csv) first")
    problem = store_problem(store, manifest)
    if problem:
        raise StoreError(f"bar store {store} is damaged: {problem}; {_remedy(store)}")
    return manifest


def write_store(store: Path, bars: pd.DataFrame, constituents: pd.DataFrame,
                meta: dict[str, Any]) -> WriteOutcome:
    """Validate against the store schema and write atomically; no-op when content is unchanged."""
    bars = StoreBarFrame.validate(bars.reset_index(drop=True))
    digest = content_hash(bars, constituents)
    try:
        current = read_manifest(store)
    except StateFileError as exc:  # the import is the remedy: it rebuilds the store
        log.warning("bar store %s: %s: rebuilding it", store, exc.problem)
        current = None
    if current and current.get("content_hash") == digest:
        problem = store_problem(Path(store), current)
        if problem is None:
            return WriteOutcome(False, digest, Path(store))
        log.warning("bar store %s is damaged (%s): rebuilding it", store, problem)
    years = bars["date"].dt.year
    manifest = {
        **meta,
        "content_hash": digest,
        "rows": int(len(bars)),
        "symbols": int(bars["symbol"].nunique()),
        "first_date": bars["date"].min().date().isoformat(),
        "last_date": bars["date"].max().date().isoformat(),
        "partitions": {f"bars/year={year}/part-0.parquet": int(n)
                       for year, n in years.value_counts().sort_index().items()},
        "constituents_rows": int(len(constituents)),
    }

    def build(tmp: Path) -> None:
        for year, part in bars.groupby(years, sort=True):
            folder = tmp / "bars" / f"year={year}"
            folder.mkdir(parents=True)
            write_parquet_bytes_stable(part, folder / "part-0.parquet")
        write_parquet_bytes_stable(constituents, tmp / CONSTITUENTS)
        atomic_write_json(tmp / "manifest.json", manifest)

    replace_dir(Path(store), build)
    return WriteOutcome(True, digest, Path(store))


def _require(store: Path) -> None:
    check_store(store)


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
    df = pd.read_parquet(Path(store) / CONSTITUENTS)
    return df.astype("string")


def query(store: Path, sql: str) -> pd.DataFrame:
    """Run SQL with DuckDB over the store; the bars are the view ``bars``."""
    _require(store)
    con = duckdb.connect()
    try:
        glob = str(Path(store) / "bars" / "*" / "*.parquet")
        con.execute(f"CREATE VIEW bars AS SELECT * FROM read_parquet('{glob}', "
                    "hive_partitioning = true)")
        cons = str(Path(store) / CONSTITUENTS)
        con.execute(f"CREATE VIEW constituents AS SELECT * FROM read_parquet('{cons}')")
        return con.execute(sql).df()
    finally:
        con.close()
