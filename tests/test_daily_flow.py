"""The daily flow runs as a real Prefect flow on a real (temporary) Prefect server."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.daily import daily, resolve_as_of
from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.paths import Paths
from tasks.settings import load_settings


def test_prefect_server_imports_with_pinned_fastapi():
    """Prefect's API server must import (a FastAPI release breaks it; see pyproject pins)."""
    import prefect.server.api.server as server

    assert server.create_app is not None


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Paths:
    paths = Paths(tmp_path_factory.mktemp("home"))
    src = DemoSource(paths.demo, seed=5, n_symbols=20, n_sectors=5, start="2021-01-04",
                     end="2022-12-30")
    import_bars(src, load_settings(), paths)
    return paths


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_daily_flow_writes_features_and_summary(home, harness, monkeypatch):
    monkeypatch.setenv("HCP_HOME", str(home.home))
    state = daily(as_of="latest", return_state=True)
    assert state.is_completed(), state
    res = state.result()
    assert res.as_of == "2022-12-30"
    feats = pd.read_parquet(res.features_path)
    assert (feats["date"] == pd.Timestamp("2022-12-30")).all()
    assert feats["symbol"].is_unique and len(feats) == res.n_symbols >= 15
    assert set(feats["vol_regime"].dropna()) <= {"low_vol", "med_vol", "high_vol"}
    summary = json.loads(res.summary_path.read_text())
    assert summary["n_symbols"] == len(feats)
    assert summary["vol_regime_cuts"]["fit_end"] == "2022-12-30"

    first = res.features_path.read_bytes()
    again = daily(as_of="2022-12-30")
    assert again.features_path.read_bytes() == first, "a re-run of the same day must not change"


def test_daily_flow_refuses_stale_data(home, harness, monkeypatch):
    monkeypatch.setenv("HCP_HOME", str(home.home))
    state = daily(as_of="2023-01-06", return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="stale data"):
        state.result()


def test_resolve_as_of(home):
    cal = "XNYS"
    assert resolve_as_of(None, home.store, cal) == pd.Timestamp("2022-12-30")
    monday = pd.Timestamp("2024-07-08")
    assert resolve_as_of("previous-session", home.store, cal, today=monday) == pd.Timestamp(
        "2024-07-05")
    assert resolve_as_of("2022-05-02", home.store, cal) == pd.Timestamp("2022-05-02")
    with pytest.raises(ValueError, match="not a date"):
        resolve_as_of("yesterday-ish", home.store, cal)


def test_prefect_yaml_deployments_point_at_real_flows():
    import importlib

    import yaml
    from prefect import Flow

    from tasks.settings import PROJECT_ROOT

    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    assert spec["deployments"], "prefect.yaml declares no deployment"
    for dep in spec["deployments"]:
        path, name = dep["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, name), Flow), dep["entrypoint"]
        for sched in dep["schedules"]:
            assert sched["timezone"] == "America/New_York"
            assert len(sched["cron"].split()) == 5
