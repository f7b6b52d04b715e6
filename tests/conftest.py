"""Shared fixtures: a small demo market with a trained baseline, for flow and plan tests."""

from __future__ import annotations

import os
import shutil

import pytest

from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.paths import Paths
from tasks.settings import PROJECT_ROOT, load_settings

# small, fast models; set in the environment so that flows (which load settings themselves)
# see exactly the settings the baseline was trained with
SMALL_ENV = {
    "HCP_MODELS__FIRST_TEST_YEAR": "2019", "HCP_MODELS__MIN_TRAIN_YEARS": "2",
    "HCP_MODELS__ROW_STRIDE": "1", "HCP_MODELS__RF__N_ESTIMATORS": "30",
    "HCP_MODELS__XGB__N_ESTIMATORS": "40", "HCP_MODELS__CAT__ITERATIONS": "40",
    # flow tests exercise the plan's mechanics with a small baseline whose horizons have no
    # measured ranking skill, so neither its zero weight nor the standard error of its
    # expectancy (20 names, two years of folds) may empty every book: orders must exist for the
    # mechanics to be tested. tests/test_plan_decide.py covers both rules themselves.
    "HCP_FUSION__ZERO_UNSKILLED_HORIZONS": "false",
    "HCP_FUSION__EXPECTANCY_Z": "0",
}
TRAIN_END = "2021-06-30"
SP500 = PROJECT_ROOT.parent / "shared" / "data" / "sp500"
# real-data tests: slow, and skipped with a message where the shared folder is absent
REALDATA_MARKS = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not (SP500 / "ohlcv_daily.parquet").is_file(),
                       reason=f"shared real data set not found at {SP500}; real-data tests skipped"),
]
NOW = "2026-01-01T00:00:00+00:00"


def use_home(mp: pytest.MonkeyPatch, paths: Paths) -> None:
    """Point HCP_HOME at ``paths`` with the small-model settings in force."""
    mp.setenv("HCP_HOME", str(paths.home))
    for key, value in SMALL_ENV.items():
        mp.setenv(key, value)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory) -> Paths:
    """Demo market 2017-2021 (20 symbols) with a baseline trained up to TRAIN_END, active.

    The demo market has no signal, so the baseline has no measured skill and is not promoted
    automatically: it is put into the active slot with the logged override, as `hcp demo` does."""
    from tasks.models.pipeline import run_training
    from tasks.models.registry import promote

    paths = Paths(tmp_path_factory.mktemp("trained"))
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, paths)
        settings = load_settings()
        src = DemoSource(paths.demo, seed=11, n_symbols=20, n_sectors=5, start="2017-01-03",
                         end="2021-12-31")
        import_bars(src, settings, paths)
        steps: list[tuple[int, int | None]] = []
        res = run_training(paths, settings, NOW, train_end=TRAIN_END, baseline_id="b-demo",
                           progress=lambda _msg, done, total: steps.append((done, total)))
        assert os.path.isdir(res.model_dir)
        # progress counts every step once against the announced total: no jump at the end
        total = steps[-1][1]
        assert [d for d, _ in steps] == list(range(len(steps))) and steps[-1][0] == total
        if not res.promoted:
            assert res.skill["verdict"] == "no_skill" and not res.leakage_suspect
            promote(paths, "b-demo", "active", NOW, force=True, by="tests",
                    reason="demo market: run the pipeline end to end")
    return paths


@pytest.fixture(scope="session")
def llama_url():
    """``python -m llama_cpp.server`` with SmolLM2-135M on 127.0.0.1 for the whole session
    (skipped with the reason when the ``llm-test`` extra is not installed)."""
    from tests.llama_server import crash_reason, gguf_path, llama_server, missing

    why = missing()
    if why:
        pytest.skip(why)
    crashed = crash_reason()
    if crashed:
        pytest.fail(crashed, pytrace=False)
    with llama_server(gguf_path()) as url:
        yield url


@pytest.fixture
def trained_copy(trained_home, tmp_path, monkeypatch) -> Paths:
    """A private copy of the trained home, in force for one test (tests write outputs and
    state into it; the session's trained home stays as trained)."""
    paths = Paths(tmp_path / "home")
    shutil.copytree(trained_home.home, paths.home)
    use_home(monkeypatch, paths)
    return paths
