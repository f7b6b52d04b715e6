"""bench/train_folds.py on a tiny demo panel: one table row per fold, positive timings, a ratio
column, and timers that leave the walk-forward's predictions unchanged."""

from __future__ import annotations

import importlib.util
import re
import sys

import pandas as pd
import pytest

from tasks.data.calendar import sessions
from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.data.store import load_bars, load_constituents
from tasks.models.train import training_frame, walk_forward
from tasks.paths import Paths
from tasks.settings import PROJECT_ROOT, load_settings

# tiny models, one thread (the table's shape is under test, not the machine's threading)
TINY_ENV = {
    "HCP_MODELS__RF__N_ESTIMATORS": "10", "HCP_MODELS__XGB__N_ESTIMATORS": "10",
    "HCP_MODELS__CAT__ITERATIONS": "10", "HCP_MODELS__MIN_TRAIN_YEARS": "2",
    "HCP_MODELS__ROW_STRIDE": "1", "HCP_RUNTIME__N_THREADS": "1",
}
DEMO = dict(seed=5, n_symbols=12, n_sectors=4, start="2016-01-04", end="2019-12-31")
ARGS = ["--demo", "--seed", "5", "--symbols", "12", "--start", DEMO["start"], "--end",
        DEMO["end"], "--first-test-year", "2018", "--horizon", "short"]


def _bench():
    """The script as a module (registered, as its dataclasses need)."""
    name = "bench_train_folds"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, PROJECT_ROOT / "bench" / "train_folds.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def tiny(monkeypatch):
    for key, value in TINY_ENV.items():
        monkeypatch.setenv(key, value)


def _rows(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["fold", "rows"])
    header = lines[start].split()
    body = []
    for line in lines[start + 1:]:
        cells = line.split()
        if not cells or cells[0] == "total":
            break
        body.append(cells)
    return header, body


def test_table_has_one_row_per_fold_with_positive_timings_and_ratio(tiny, capsys):
    assert _bench().main(ARGS) == 0
    out = capsys.readouterr().out
    n_folds = int(re.search(r"per fold, seconds \((\d+) folds", out).group(1))
    assert n_folds == 2   # test years 2018 (from two years after the first feature row) and 2019
    header, body = _rows(out)
    assert header[-2:] == ["xgb", "ratio"] and "predict" in header and "stack+cal" in header
    assert len(body) == n_folds
    for cells in body:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d{4}-\d\d-\d\d", cells[0])
        assert int(cells[1]) > 0
        rf, xgb, cat, stack, payoff, ranker, predict = map(float, cells[2:9])
        fold, base = float(cells[10]), float(cells[11])
        assert min(rf, xgb, cat, payoff, ranker, predict, fold, base) > 0 and stack >= 0
        assert cells[12].endswith("x") and float(cells[12][:-1]) > 0
        assert fold >= rf + xgb + cat + payoff + ranker + predict
    assert re.search(r"median fold / 1 xgb ratio \d+\.\dx", out)
    assert re.search(r"peak RSS \(ru_maxrss\) \d+\.\d\d GB", out)
    assert "extrapolated to all folds x all horizons (4 folds" in out
    assert "n_estimators=10" in out and "iterations=10" in out


def test_timers_leave_the_predictions_unchanged(tiny, tmp_path):
    paths = Paths(tmp_path / "home")
    settings = load_settings(models={"first_test_year": 2018})
    import_bars(DemoSource(tmp_path / "demo", inject_bad_rows=False, **DEMO), settings, paths)
    bars = load_bars(paths.store)
    frame = training_frame(bars, load_constituents(paths.store), settings)
    sess = sessions(settings.data.calendar, bars["date"].min(), bars["date"].max())
    timed, timings = _bench().time_walk_forward(frame, sess, settings, "short")
    plain, folds = walk_forward(frame, sess, settings, "short")
    assert [t.name for t in timings] == [f.name for f in folds]
    pd.testing.assert_frame_equal(timed, plain)
