"""The ranking model: relevance grades within a session, and a ranker that finds a real order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.models.ranker import RankModel, relevance
from tasks.settings import ModelSettings


def test_relevance_is_the_quintile_within_each_session():
    dates = np.repeat(np.array(["2020-01-02", "2020-01-03"], dtype="datetime64[ns]"), 5)
    fwd = np.array([0.05, -0.01, 0.02, 0.0, 0.10, 1.0, 2.0, 3.0, 4.0, np.nan])
    got = relevance(fwd, dates)
    assert got[:5].tolist() == [3, 0, 2, 1, 4]
    # second session: 4 finite names -> percentiles 0.25, 0.5, 0.75, 1.0 -> grades 1, 2, 3, 4
    assert got[5:9].tolist() == [1, 2, 3, 4]
    assert np.isnan(got[9])


FAST = ModelSettings(xgb={"n_estimators": 60})


def _panel(n_dates: int, n_names: int, signal: float, seed: int):
    rng = np.random.default_rng(seed)
    dates = np.repeat(pd.bdate_range("2020-01-01", periods=n_dates).to_numpy(), n_names)
    x = rng.normal(size=(n_dates * n_names, 3))
    fwd = signal * x[:, 0] + rng.normal(size=len(x))
    return x, fwd, dates


def _ic(score, fwd, dates) -> float:
    frame = pd.DataFrame({"s": score, "f": fwd, "d": dates})
    return float(frame.groupby("d").apply(lambda g: g["s"].corr(g["f"], method="spearman")).mean())


def test_ranker_orders_names_by_the_informative_feature():
    cfg = FAST
    x, fwd, dates = _panel(80, 30, 0.5, 0)
    model = RankModel().fit(x, fwd, dates, cfg, 2)
    assert model.info["fitted"] and model.info["sessions"] == 80
    xt, ft, dt = _panel(60, 30, 0.5, 1)                       # unseen sessions
    ic = _ic(model.score(xt), ft, dt)
    assert ic > 0.3                                            # population IC ~0.43
    assert _ic(xt[:, 0], ft, dt) == pytest.approx(ic, abs=0.1)


def test_ranker_on_noise_has_no_order_and_too_few_rows_is_not_fit():
    cfg = FAST
    x, fwd, dates = _panel(80, 30, 0.0, 2)
    xt, ft, dt = _panel(60, 30, 0.0, 3)
    assert abs(_ic(RankModel().fit(x, fwd, dates, cfg, 2).score(xt), ft, dt)) < 0.05
    tiny = RankModel().fit(x[:100], fwd[:100], dates[:100], cfg, 2)
    assert not tiny.info["fitted"] and np.isnan(tiny.score(xt)).all()
