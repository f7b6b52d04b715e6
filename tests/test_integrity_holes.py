"""Holes that let damaged inputs pass as good ones: the bar store against its manifest,
timezone-aware dates, a swap cut short, a non-ASCII operator token, and config files with a
duplicate key, cut short or naming an unknown calendar. Each is refused in one line (or
undone, with a warning) instead of a traceback or silent defaults."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from tasks.data.ingest import NothingUsable, import_bars
from tasks.data.sources import CsvSource, DemoSource, ParquetSource
from tasks.data.store import StoreError, load_bars, load_constituents, read_manifest, write_store
from tasks.io import replace_dir
from tasks.paths import Paths
from tasks.settings import DEFAULT_CONFIG, AppSettings, ConfigError, load_settings
from tasks.statefiles import StateFileError

SETTINGS = AppSettings()
SPEC = {"n_symbols": 12, "start": "2020-01-02", "end": "2021-12-31"}


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Paths:
    paths = Paths(tmp_path_factory.mktemp("store"))
    import_bars(DemoSource(paths.demo, **SPEC), SETTINGS, paths)
    return paths


@pytest.fixture
def home(imported, tmp_path) -> Paths:
    """A copy of the imported home (each test damages its own)."""
    paths = Paths(tmp_path / "home")
    shutil.copytree(imported.home, paths.home)
    return paths


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# --- the store against its manifest ----------------------------------------------------------

def test_a_deleted_partition_is_named_and_a_reimport_rebuilds_it(home):
    manifest = read_manifest(home.store)
    assert manifest["partitions"] == {"bars/year=2020/part-0.parquet": pytest.approx(
        manifest["partitions"]["bars/year=2020/part-0.parquet"]),
        "bars/year=2021/part-0.parquet": manifest["rows"]
        - manifest["partitions"]["bars/year=2020/part-0.parquet"]}
    (home.store / "bars" / "year=2020" / "part-0.parquet").unlink()
    with pytest.raises(StoreError) as err:
        load_bars(home.store)
    text = _one_line(err)
    assert "partition bars/year=2020/part-0.parquet is missing" in text
    assert "hcp data import" in text
    with pytest.raises(StoreError, match="year=2020"):
        load_constituents(home.store)
    # the same content again: the import sees the damage and rebuilds instead of a no-op
    res = import_bars(DemoSource(home.demo, **SPEC), SETTINGS, home)
    assert res.changed and len(load_bars(home.store)) == manifest["rows"]


def test_a_store_from_before_the_partition_list_is_checked_by_span_and_rows(home):
    path = home.store / "manifest.json"
    legacy = {k: v for k, v in json.loads(path.read_text()).items()
              if k not in ("partitions", "constituents_rows")}
    path.write_text(json.dumps(legacy))
    assert len(load_bars(home.store)) == legacy["rows"]  # intact: reads as before
    (home.store / "bars" / "year=2021" / "part-0.parquet").unlink()
    with pytest.raises(StoreError, match=r"partition bars/year=2021 is missing \(the manifest's "
                                         r"span 2020-01-02\.\.2021-12-31 covers it\)"):
        load_bars(home.store)


def test_a_partition_with_other_rows_is_named(home):
    part = home.store / "bars" / "year=2021" / "part-0.parquet"
    table = pq.read_table(part)
    pq.write_table(table.slice(0, 10), part)
    with pytest.raises(StoreError, match="bars/year=2021/part-0.parquet holds 10 rows where the "
                                         "manifest records"):
        load_bars(home.store)


@pytest.mark.parametrize(("body", "problem"), [
    ({"rows": "many"}, "wrong shape at rows"),
    ({"first_date": "2 Jan 2020"}, "wrong shape at first_date"),
    (None, "not JSON"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_it(home, body, problem):
    path = home.store / "manifest.json"
    if body is None:
        path.write_text('{"source": "demo", "rows": ')
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), **body}))
    with pytest.raises(StateFileError) as err:
        load_bars(home.store)
    text = _one_line(err)
    assert text.startswith(f"{path}: {problem}") and "import" in text
    assert import_bars(DemoSource(home.demo, **SPEC), SETTINGS, home).changed  # the remedy
    assert read_manifest(home.store)["rows"] == len(load_bars(home.store))


def test_cli_names_the_damage_in_one_line(home, monkeypatch):
    from flows.cli import app

    monkeypatch.setenv("HCP_HOME", str(home.home))
    monkeypatch.delenv("HCP_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    (home.store / "bars" / "year=2020" / "part-0.parquet").unlink()
    res = CliRunner().invoke(app, ["data", "info"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.startswith("error: bar store") and "year=2020" in res.output


# --- a swap cut short between its two renames ------------------------------------------------

KILLED_SWAP = """
import sys
sys.path.insert(0, {root!r})
from tasks.data.store import load_bars, load_constituents, write_store
store = {store!r}
bars = load_bars(store).iloc[1:]
write_store(store, bars, load_constituents(store), {{"source": "demo"}})
"""


def test_a_store_left_in_old_store_by_a_kill_is_put_back_on_the_next_read(home, caplog):
    from tasks.settings import PROJECT_ROOT

    rows = read_manifest(home.store)["rows"]
    env = {**os.environ, "HCP_FAULT_INJECT": "replace_dir:1"}
    code = KILLED_SWAP.format(root=str(PROJECT_ROOT), store=str(home.store))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 137, done.stderr  # killed between the two renames
    assert not home.store.exists() and home.store.with_name(".old-store").is_dir()
    with caplog.at_level(logging.WARNING, logger="hcp.store"):
        assert len(load_bars(home.store)) == rows
    assert "previous store is back in place" in caplog.text
    assert not home.store.with_name(".old-store").exists()


def test_the_next_import_finishes_what_a_cut_swap_left(home):
    os.replace(home.store, home.store.with_name(".old-store"))
    res = import_bars(DemoSource(home.demo, seed=8, **SPEC), SETTINGS, home)
    assert res.changed and read_manifest(home.store)["content_hash"] == res.content_hash
    assert not home.store.with_name(".old-store").exists()


def test_a_failed_second_rename_keeps_the_previous_store(home, monkeypatch):
    before = read_manifest(home.store)
    real, calls = os.replace, []

    def failing(src, dst):
        calls.append(Path(src).name)
        if Path(src).name.startswith(".tmp-store-"):
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk gone"):
        replace_dir(home.store, lambda tmp: (tmp / "x").write_text("new"))
    monkeypatch.setattr(os, "replace", real)
    assert read_manifest(home.store) == before and len(load_bars(home.store)) == before["rows"]


# --- timezone-aware dates --------------------------------------------------------------------

def _vendor(dates) -> pd.DataFrame:
    n = len(dates)
    return pd.DataFrame({"symbol": ["AAA"] * n, "date": dates, "open": 10.0, "high": 11.0,
                         "low": 9.0, "close": 10.5, "adjusted_close": 10.5, "volume": 1000,
                         "dividend_amount": 0.0, "split_coefficient": 1.0})


SESSIONS = pd.DatetimeIndex(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07",
                             "2020-01-08"])


@pytest.mark.parametrize("stamps", [
    SESSIONS.tz_localize("America/New_York") + pd.Timedelta(hours=16),   # the exchange's close
    SESSIONS.tz_localize("UTC"),                                         # midnight date labels
])
def test_timezone_aware_dates_in_the_exchange_zone_or_at_midnight_are_session_dates(tmp_path, stamps):
    path = tmp_path / "bars.parquet"
    pq.write_table(pa.Table.from_pandas(_vendor(stamps), preserve_index=False), path)
    paths = Paths(tmp_path / "home")
    import_bars(ParquetSource(path), SETTINGS, paths)
    assert list(load_bars(paths.store)["date"]) == list(SESSIONS)


def test_timezone_aware_dates_of_ambiguous_session_are_refused_in_one_line(tmp_path):
    path = tmp_path / "bars.parquet"
    close_utc = SESSIONS.tz_localize("UTC") + pd.Timedelta(hours=21)  # NY close, in UTC
    pq.write_table(pa.Table.from_pandas(_vendor(close_utc), preserve_index=False), path)
    with pytest.raises(NothingUsable) as err:
        import_bars(ParquetSource(path), SETTINGS, Paths(tmp_path / "home"))
    text = _one_line(err)
    assert "timezone-aware (UTC)" in text and "America/New_York" in text
    assert "2020-01-02 21:00:00" in text and "ambiguous" in text
    body = json.loads(err.value.report.read_text())
    assert [f["rule"] for f in body["findings"]] == ["ambiguous_timezone"]


def test_csv_stamps_with_utc_offsets_follow_the_same_rule(tmp_path):
    good = _vendor([f"{d.date()}T16:00:00{'-05:00'}" for d in SESSIONS])
    good.to_csv(tmp_path / "AAA.csv", index=False)
    paths = Paths(tmp_path / "home")
    import_bars(CsvSource(tmp_path / "AAA.csv"), SETTINGS, paths)
    assert list(load_bars(paths.store)["date"]) == list(SESSIONS)
    bad = _vendor([f"{d.date()}T21:00:00Z" for d in SESSIONS])
    bad.to_csv(tmp_path / "BBB.csv", index=False)
    with pytest.raises(NothingUsable, match="ambiguous"):
        import_bars(CsvSource(tmp_path / "BBB.csv"), SETTINGS, Paths(tmp_path / "other"))


# --- the operator token ----------------------------------------------------------------------

def test_a_non_ascii_bearer_token_is_a_401_not_a_500(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from tasks.operator.api import create_app

    monkeypatch.setenv("HCP_OPERATOR_TOKEN", "op-token")
    client = TestClient(create_app(Paths(tmp_path), load_settings()),
                        raise_server_exceptions=False)
    body = {"by": "ops", "reason": "drill"}
    for token in ("Bearer clé".encode(), b"Bearer \xff\xfe", "Bearer op-tökén".encode()):
        res = client.post("/api/force-demo", json=body, headers={"Authorization": token})
        assert res.status_code == 401, (token, res.text)
    # a non-ASCII token set on the server matches the same text sent as UTF-8
    monkeypatch.setenv("HCP_OPERATOR_TOKEN", "clé-op")
    ok = client.post("/api/force-demo", json=body,
                     headers={"Authorization": "Bearer clé-op".encode()})
    assert ok.status_code == 200 and ok.json()["forced_demo"] is True


# --- config files ----------------------------------------------------------------------------

def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(text)
    return path


def test_a_duplicate_key_is_refused_naming_it_and_both_lines(tmp_path):
    path = _config(tmp_path, "data:\n  calendar: XNYS\nlabels:\n  stop_atr: 1.8\n"
                             "  take_profit_atr: 2.5\n  stop_atr: 3.0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert _one_line(err) == (f"config file {path}: key labels.stop_atr is set twice (lines 4 "
                              "and 6; the last would silently win): keep one")
    top = _config(tmp_path, "runtime: {n_threads: 1}\nruntime: {n_threads: 2}\n")
    with pytest.raises(ConfigError, match="key runtime is set twice \\(lines 1 and 2"):
        load_settings(top)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_an_empty_config_file_is_refused(tmp_path, text):
    with pytest.raises(ConfigError, match="is empty"):
        load_settings(_config(tmp_path, text))


def test_a_config_file_in_force_cut_short_is_refused(tmp_path, monkeypatch):
    whole = DEFAULT_CONFIG.read_text()
    cut = whole[:whole.index("\noperator:")] + "\n"  # the last section lost
    monkeypatch.setenv("HCP_CONFIG", str(_config(tmp_path, cut)))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "lacks the section operator" in _one_line(err)
    # cut mid-line (inside the last section): still YAML, but its last line is not ended
    monkeypatch.setenv("HCP_CONFIG", str(_config(tmp_path, whole.rstrip("\n")[:-1])))
    with pytest.raises(ConfigError, match="does not end with a newline"):
        load_settings()
    # cut so that it is no YAML any more: one line with the place
    monkeypatch.setenv("HCP_CONFIG", str(_config(tmp_path, whole.rstrip("\n")[:-3])))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "is not valid YAML (line" in _one_line(err)
    monkeypatch.setenv("HCP_CONFIG", str(_config(tmp_path, whole)))
    assert load_settings().data.calendar == "XNYS"


def test_the_required_sections_are_the_shipped_files(tmp_path):
    from tasks.settings import REQUIRED_SECTIONS

    assert tuple(yaml.safe_load(DEFAULT_CONFIG.read_text())) == REQUIRED_SECTIONS


def test_config_check_names_what_a_partial_file_leaves_to_defaults(tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.delenv("HCP_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    path = _config(tmp_path, "labels: {take_profit_atr: 3.0}\n")
    res = CliRunner().invoke(app, ["config", "check", str(path)])
    assert res.exit_code == 0 and "ok:" in res.output
    assert "partial: data, features, regimes" in res.output
    monkeypatch.setenv("HCP_CONFIG", str(path))
    refused = CliRunner().invoke(app, ["config", "check"])
    assert refused.exit_code == 2 and "lacks the sections" in refused.output


def test_an_unknown_calendar_is_refused_with_the_closest_names(tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.delenv("HCP_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    path = _config(tmp_path, "data: {calendar: XNYZ}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert _one_line(err).startswith(f"data.calendar = 'XNYZ' ({path} + HCP_* environment) is "
                                     "not an exchange_calendars calendar (closest: ")
    assert "XNYS" in str(err.value)
    res = CliRunner().invoke(app, ["config", "check", str(path)])
    assert res.exit_code == 2 and "XNYS" in res.output
    monkeypatch.setenv("HCP_DATA__CALENDAR", "XLON")
    assert load_settings(path).data.calendar == "XLON"  # a known one (env wins)


def test_write_store_records_its_partitions(tmp_path, imported):
    bars = load_bars(imported.store)
    write_store(Paths(tmp_path).store, bars, load_constituents(imported.store), {"source": "demo"})
    manifest = read_manifest(Paths(tmp_path).store)
    assert sum(manifest["partitions"].values()) == len(bars)
    assert manifest["constituents_rows"] == len(load_constituents(imported.store))
