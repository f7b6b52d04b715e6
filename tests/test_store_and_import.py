"""Import of a small seeded demo market into the bar store (tasks.data.ingest, tasks.data.store)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.data.demo import DEFECT_KINDS, DemoSpec, generate_demo_market
from tasks.data.ingest import ImportResult, NothingUsable, import_bars
from tasks.data.schemas import StoreBarFrame
from tasks.data.sources import DemoSource, ParquetSource
from tasks.data.store import StoreError, load_bars, load_constituents, query, read_manifest
from tasks.paths import Paths
from tasks.settings import AppSettings

SPEC = {"n_symbols": 20, "start": "2020-01-02", "end": "2021-12-31"}
SETTINGS = AppSettings()
# demo defect kind -> the validator rule that must report it (all of them share names today)
RULE_OF_KIND = {
    "high_below_low": "high_below_low",
    "close_outside_range": "close_outside_range",
    "non_positive_price": "non_positive_price",
    "negative_volume": "negative_volume",
    "duplicate_row": "duplicate_row",
    "conflicting_duplicate": "conflicting_duplicate",
    "unexplained_split": "unexplained_split",
    "missing_session": "missing_session",
    "stale_symbol": "stale_symbol",
}


def demo_source(paths: Paths) -> DemoSource:
    return DemoSource(paths.demo, **SPEC)


def store_files(paths: Paths) -> dict[Path, tuple[bytes, int, int]]:
    """Every file under the store with its bytes, mtime and inode."""
    out = {}
    for f in sorted(paths.store.rglob("*")):
        if f.is_file():
            st = f.stat()
            out[f.relative_to(paths.store)] = (f.read_bytes(), st.st_mtime_ns, st.st_ino)
    return out


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Paths, ImportResult]:
    paths = Paths(tmp_path_factory.mktemp("home"))
    return paths, import_bars(demo_source(paths), SETTINGS, paths)


@pytest.fixture(scope="module")
def raw_input(imported) -> pd.DataFrame:
    """The vendor-format bars the demo source wrote and the import read."""
    paths, _ = imported
    return pd.read_parquet(paths.demo / "ohlcv_daily.parquet")


@pytest.fixture(scope="module")
def stored(imported) -> pd.DataFrame:
    return load_bars(imported[0].store)


def test_every_injected_kind_is_mapped():
    assert set(RULE_OF_KIND) == set(DEFECT_KINDS)


def test_store_is_hive_partitioned_by_year(imported, stored):
    paths, res = imported
    assert res.changed and res.store == paths.store
    parts = sorted(p.relative_to(paths.store).as_posix() for p in (paths.store / "bars").rglob("*.parquet"))
    assert parts == ["bars/year=2020/part-0.parquet", "bars/year=2021/part-0.parquet"]
    for year in (2020, 2021):
        part = pd.read_parquet(paths.store / "bars" / f"year={year}" / "part-0.parquet")
        assert len(part) > 0
        assert (pd.to_datetime(part["date"]).dt.year == year).all()
    assert (paths.store / "constituents.parquet").is_file()
    StoreBarFrame.validate(stored)


def test_manifest_describes_the_store(imported, stored):
    paths, res = imported
    manifest = read_manifest(paths.store)
    assert manifest["content_hash"] == res.content_hash
    assert len(manifest["content_hash"]) > 64
    assert manifest["source"] == "demo"
    assert manifest["rows"] == len(stored) == res.rows_kept
    assert manifest["symbols"] == stored["symbol"].nunique() == res.symbols_kept
    assert manifest["first_date"] == stored["date"].min().date().isoformat()
    assert manifest["last_date"] == stored["date"].max().date().isoformat()
    assert manifest["inputs"] == [str(paths.demo / "ohlcv_daily.parquet")]
    assert paths.home / manifest["quality_report"] == res.report


def test_quality_report_lists_every_injected_defect(imported):
    paths, res = imported
    assert res.report.is_file() and res.report.parent == paths.quality
    report = json.loads(res.report.read_text())
    assert report["source"] == "demo"
    assert report["rows_in"] == res.rows_in
    assert report["rows_kept"] == res.rows_kept
    assert report["symbols_kept"] == res.symbols_kept
    found = {(f["symbol"], f["date"], f["rule"]) for f in report["findings"]}
    injected = generate_demo_market(DemoSpec(**SPEC)).injected
    assert set(injected["kind"]) == set(DEFECT_KINDS)
    for row in injected.itertuples():
        want = (row.symbol, row.date.date().isoformat(), RULE_OF_KIND[row.kind])
        assert want in found, f"injected {row.kind} on {want[:2]} not in the quality report"
    counts = {(s["rule"], s["action"]): s["count"] for s in report["summary"]}
    assert sum(counts.values()) == len(report["findings"])
    assert counts[("duplicate_row", "row_dropped")] == 1
    assert counts[("conflicting_duplicate", "row_dropped")] == 2
    assert counts[("unexplained_split", "rows_dropped")] == 1


def test_rows_kept_add_up(imported, raw_input, stored):
    _, res = imported
    assert res.rows_in == len(raw_input)
    report = json.loads(res.report.read_text())
    single = sum(1 for f in report["findings"] if f["action"] == "row_dropped")
    assert res.rows_kept < res.rows_in - single  # the unexplained split dropped a whole segment
    assert len(stored) == res.rows_kept


def test_store_never_invents_or_repairs_a_bar(raw_input, stored):
    raw = raw_input.assign(date=pd.to_datetime(raw_input["date"]).astype("datetime64[ns]"),
                           symbol=raw_input["symbol"].astype("string"))
    raw_keys = set(zip(raw["symbol"], raw["date"], strict=True))
    store_keys = set(zip(stored["symbol"], stored["date"], strict=True))
    assert store_keys <= raw_keys
    assert not stored.duplicated(["symbol", "date"]).any()
    # stored raw prices are the vendor's, untouched (exact copies collapse; conflicting keys
    # are not in the store at all)
    unique_raw = raw.drop_duplicates().drop_duplicates(["symbol", "date"], keep=False)
    merged = stored.merge(unique_raw, on=["symbol", "date"], suffixes=("", "_in"), validate="1:1")
    assert len(merged) == len(stored)
    for col in ("open", "high", "low", "close", "adjusted_close", "volume"):
        assert (merged[col].astype(float) == merged[f"{col}_in"].astype(float)).all(), col


def test_reimport_of_same_input_touches_nothing(tmp_path):
    paths = Paths(tmp_path)
    first = import_bars(demo_source(paths), SETTINGS, paths)
    assert first.changed
    old = 1_000_000_000 * 10**9  # 2001-09-09: any rewrite would move the mtime off it
    for f in paths.store.rglob("*"):
        if f.is_file():
            os.utime(f, ns=(old, old))
    before = store_files(paths)
    assert before
    report_bytes = first.report.read_bytes()

    again = import_bars(demo_source(paths), SETTINGS, paths)
    assert not again.changed
    assert again.content_hash == first.content_hash
    assert again.report == first.report
    assert again.report.read_bytes() == report_bytes
    after = store_files(paths)
    assert after.keys() == before.keys()
    for name, (data, mtime, inode) in before.items():
        assert after[name][0] == data, name
        assert after[name][1] == mtime == old, name
        assert after[name][2] == inode, name


def test_different_content_rewrites_the_store(tmp_path):
    paths = Paths(tmp_path)
    first = import_bars(demo_source(paths), SETTINGS, paths)
    other = DemoSource(paths.demo, seed=8, **SPEC)
    second = import_bars(other, SETTINGS, paths)
    assert second.changed
    assert second.content_hash != first.content_hash
    assert read_manifest(paths.store)["content_hash"] == second.content_hash


def test_load_bars_filters(imported, stored):
    paths, _ = imported
    syms = sorted(stored["symbol"].unique())[:3]
    start, end = pd.Timestamp("2020-06-01"), pd.Timestamp("2021-03-31")
    got = load_bars(paths.store, start=start, end=end, symbols=syms)
    want = stored.loc[stored["symbol"].isin(syms) & stored["date"].between(start, end)]
    assert len(got) > 0
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))
    assert got["date"].min() >= start and got["date"].max() <= end
    assert set(got["symbol"]) == set(syms)

    only_end = load_bars(paths.store, end="2020-03-31")
    assert len(only_end) == int((stored["date"] <= "2020-03-31").sum())
    only_start = load_bars(paths.store, start="2021-12-01")
    assert len(only_start) == int((stored["date"] >= "2021-12-01").sum())
    assert load_bars(paths.store, symbols=["NOPE"]).empty


def test_load_constituents_has_every_symbol(imported, stored):
    cons = load_constituents(imported[0].store)
    assert sorted(cons["symbol"]) == sorted(stored["symbol"].unique())
    assert not cons["sector"].isna().any()


def test_duckdb_query_agrees_with_manifest(imported, stored):
    paths, _ = imported
    manifest = read_manifest(paths.store)
    total = query(paths.store, "SELECT count(*) AS n FROM bars")
    assert int(total["n"].iloc[0]) == manifest["rows"]
    by_year = query(paths.store, "SELECT year, count(*) AS n, count(DISTINCT symbol) AS s "
                                 "FROM bars GROUP BY year ORDER BY year")
    assert by_year["year"].astype(int).tolist() == [2020, 2021]
    assert by_year["n"].astype(int).tolist() == stored.groupby(stored["date"].dt.year).size().tolist()
    joined = query(paths.store, "SELECT count(DISTINCT b.symbol) AS s FROM bars b "
                                "JOIN constituents c USING (symbol)")
    assert int(joined["s"].iloc[0]) == manifest["symbols"]


def test_store_readers_fail_clearly_without_a_store(tmp_path):
    with pytest.raises(StoreError, match="data import"):
        load_bars(Paths(tmp_path).store)
    with pytest.raises(StoreError):
        query(Paths(tmp_path).store, "SELECT 1")
    assert read_manifest(Paths(tmp_path).store) is None


def _all_bad_parquet(path: Path) -> Path:
    """Vendor-format rows that are every one impossible (high < low)."""
    days = pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06"]).astype("datetime64[ns]")
    df = pd.DataFrame({"symbol": ["AAA"] * 3, "date": days, "open": 10.0, "high": 9.0, "low": 11.0,
                       "close": 10.0, "adjusted_close": 10.0, "volume": 1000,
                       "dividend_amount": 0.0, "split_coefficient": 1.0})
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def test_nothing_usable_raises_and_writes_report(tmp_path):
    paths = Paths(tmp_path / "home")
    src = ParquetSource(_all_bad_parquet(tmp_path / "bad.parquet"))
    with pytest.raises(NothingUsable) as info:
        import_bars(src, SETTINGS, paths)
    report = info.value.report
    assert report.is_file() and report.parent == paths.quality
    assert str(report) in str(info.value)
    body = json.loads(report.read_text())
    assert body["rows_in"] == 3 and body["rows_kept"] == 0 and body["symbols_kept"] == 0
    assert [f["rule"] for f in body["findings"]] == ["high_below_low"] * 3
    assert read_manifest(paths.store) is None


def test_nothing_usable_leaves_an_existing_store_alone(tmp_path):
    paths = Paths(tmp_path / "home")
    import_bars(demo_source(paths), SETTINGS, paths)
    before = store_files(paths)
    with pytest.raises(NothingUsable):
        import_bars(ParquetSource(_all_bad_parquet(tmp_path / "bad.parquet")), SETTINGS, paths)
    assert store_files(paths) == before
