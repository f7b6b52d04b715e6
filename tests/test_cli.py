"""The ``hcp`` command line (flows.cli) on a small demo market under a temporary HCP_HOME.

The ``run``, ``replay`` and ``demo`` commands start a Prefect server and are covered elsewhere; here only
their ``--help`` is run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.data.store import load_bars, read_manifest
from tasks.paths import Paths

DEMO_ENV = {
    "HCP_DATA__DEMO__N_SYMBOLS": "20",
    "HCP_DATA__DEMO__START": "2020-01-02",
    "HCP_DATA__DEMO__END": "2021-12-31",
    "COLUMNS": "400",  # rich wraps long paths at 80 columns otherwise
}
SUBCOMMANDS = [
    ["data", "import"], ["data", "info"], ["data", "query"], ["features"], ["run", "daily"],
    ["run", "nightly"], ["replay"], ["demo"],
    ["config", "show"], ["config", "check"],
    ["policy", "list"], ["policy", "show"], ["policy", "diff"], ["policy", "rollback"],
]
BAD_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sp500" / "bad_inputs"


def isolate(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Point every output at ``home`` and shrink the demo market."""
    mp.setenv("HCP_HOME", str(home))
    mp.delenv("HCP_CONFIG", raising=False)
    for name, value in DEMO_ENV.items():
        mp.setenv(name, value)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    """Output with line breaks removed (in case a long path was still wrapped)."""
    return text.replace("\n", "")


def report_path(output: str) -> Path:
    match = re.search(r"(/\S+?/reports/quality/import_\w+\.json)", flat(output))
    assert match, output
    return Path(match.group(1))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """HCP_HOME with the small demo imported through the CLI; yields (home, import result)."""
    root = tmp_path_factory.mktemp("hcp_home")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, root)
        result = invoke("data", "import", "--source", "demo")
        yield root, result


@pytest.fixture
def env(home, monkeypatch):
    """The module's HCP_HOME (and demo overrides) in force for one test."""
    isolate(monkeypatch, home[0])
    return home[0]


def test_help_lists_subcommands():
    res = invoke("--help")
    assert res.exit_code == 0
    for name in ("data", "features", "run", "replay", "demo", "config"):
        assert re.search(rf"^\W*{name}\b", res.output, re.MULTILINE), name
    data = invoke("data", "--help")
    assert data.exit_code == 0
    assert all(cmd in data.output for cmd in ("import", "info", "query"))
    config = invoke("config", "--help")
    assert config.exit_code == 0
    assert "show" in config.output and "check" in config.output


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_help_exits_0(cmd):
    res = invoke(*cmd, "--help")
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output


def test_data_import_demo_prints_existing_report(home):
    root, res = home
    assert res.exit_code == 0, res.output
    report = report_path(res.output)
    assert report.is_file()
    assert report.parent == Paths(root).quality
    body = json.loads(report.read_text())
    assert body["source"] == "demo"
    assert f"kept {body['rows_kept']} over {body['symbols_kept']} symbols" in res.output
    assert "written" in res.output
    assert read_manifest(Paths(root).store)["rows"] == body["rows_kept"]


def test_data_import_again_is_unchanged(env):
    res = invoke("data", "import", "--source", "demo")
    assert res.exit_code == 0, res.output
    assert "unchanged (same content)" in res.output
    assert report_path(res.output).is_file()


def test_data_info_prints_row_count(env):
    manifest = read_manifest(Paths(env).store)
    res = invoke("data", "info")
    assert res.exit_code == 0, res.output
    start = res.output.index("{")
    info = json.loads(res.output[start:res.output.index("}", start) + 1])
    assert info["rows"] == manifest["rows"]
    assert info["symbols"] == manifest["symbols"]
    assert info["last_date"] == "2021-12-31"
    assert "2020" in res.output and "2021" in res.output


def test_data_query_counts_rows(env):
    manifest = read_manifest(Paths(env).store)
    res = invoke("data", "query", "SELECT count(*) AS n FROM bars")
    assert res.exit_code == 0, res.output
    assert str(manifest["rows"]) in res.output.split()


def test_features_for_last_session(env, tmp_path):
    store = Paths(env).store
    last = read_manifest(store)["last_date"]
    target = tmp_path / "x.parquet"
    res = invoke("features", "--as-of", last, "--out", str(target))
    assert res.exit_code == 0, res.output
    feats = pd.read_parquet(target)
    on_day = load_bars(store, start=last, end=last)
    assert len(feats) > 0
    assert (pd.to_datetime(feats["date"]) == pd.Timestamp(last)).all()
    assert not feats["symbol"].duplicated().any()
    assert set(feats["symbol"]) == set(on_day["symbol"])
    assert f"{len(feats)} symbols" in res.output


def test_features_after_store_end_is_stale(env, tmp_path):
    target = tmp_path / "late.parquet"
    res = invoke("features", "--as-of", "2022-01-10", "--out", str(target))
    assert res.exit_code == 2
    assert "stale" in res.output
    assert "2021-12-31" in res.output
    assert not target.exists()


def test_import_of_vendor_error_payload_only_exits_1(env, tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    sample = BAD_SAMPLE / "BF.B_vendor_error.csv"
    if sample.is_file():
        shutil.copyfile(sample, folder / sample.name)
    else:
        (folder / "BF.B_vendor_error.csv").write_text('{\n"Error Message": "Invalid API call"\n}\n')
    before = read_manifest(Paths(env).store)
    res = invoke("data", "import", "--source", "csv", "--path", str(folder))
    assert res.exit_code == 1, res.output
    report = report_path(res.output)
    assert report.is_file()
    body = json.loads(report.read_text())
    assert body["rows_kept"] == 0
    assert [f["rule"] for f in body["findings"]] == ["vendor_error_payload"]
    assert read_manifest(Paths(env).store) == before


def test_config_check_names_key_and_range(env, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("labels: {take_profit_atr: -1}\n")
    res = invoke("config", "check", str(cfg))
    assert res.exit_code == 2
    text = flat(res.output)
    assert "labels.take_profit_atr" in text
    assert "-1" in text
    assert "> 0" in text and "<= 20" in text


def test_config_check_accepts_a_valid_file(env, tmp_path):
    cfg = tmp_path / "good.yaml"
    cfg.write_text("labels: {take_profit_atr: 3.0}\n")
    res = invoke("config", "check", str(cfg))
    assert res.exit_code == 0, res.output
    assert "ok:" in res.output


def test_config_show_reflects_env_overrides(env):
    res = invoke("config", "show")
    assert res.exit_code == 0, res.output
    body = json.loads(res.output[res.output.index("{"):])
    assert body["data"]["demo"]["n_symbols"] == 20
    assert body["data"]["demo"]["start"] == "2020-01-02"


def test_import_parquet_without_path_exits_2(env):
    res = invoke("data", "import", "--source", "parquet")
    assert res.exit_code == 2
    assert "--path is required" in res.output


def test_data_info_without_store_exits_2(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    res = invoke("data", "info")
    assert res.exit_code == 2
    assert "no bar store" in flat(res.output)
