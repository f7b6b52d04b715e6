"""Walk-forward fold models kept with a baseline: layout, point-in-time manifests, the live
scoring path reproducing the stored out-of-sample predictions, and the fold picked per day."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.data.calendar import sessions as calendar_sessions
from tasks.data.store import load_bars, load_constituents
from tasks.features.build import build_features, feature_columns
from tasks.features.regimes import VolRegimeCuts
from tasks.models import folds as fold_mod
from tasks.models.barrier import feature_reference, payoff_stats
from tasks.models.folds import fold_baseline, fold_spans
from tasks.models.manifests import read_manifest_file
from tasks.models.metrics import metrics_table
from tasks.models.registry import (
    RegistryError,
    list_baselines,
    load_baseline,
    read_registry,
    save_baseline,
)
from tasks.models.scoring import calibrate_scores, raw_scores, wide_scores
from tasks.models.skill import skill_record
from tasks.models.train import training_frame
from tasks.paths import Paths
from tasks.settings import load_settings
from tests.conftest import TRAIN_END, use_home

BID = "b-demo"


@pytest.fixture(scope="module")
def home(trained_home):
    """The trained home with the small-model settings in force for this module."""
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, trained_home)
        yield trained_home, load_settings()


@pytest.fixture(scope="module")
def parent(home):
    paths, _ = home
    return read_manifest_file(paths, BID)


@pytest.fixture(scope="module")
def oos(home):
    paths, _ = home
    return pd.read_parquet(paths.val / BID / "oos_predictions.parquet")


@pytest.fixture(scope="module")
def cal_sessions(home):
    paths, settings = home
    bars = load_bars(paths.store, end=TRAIN_END)
    return calendar_sessions(settings.data.calendar, bars["date"].min(), bars["date"].max())


def _fold_manifests(paths: Paths, parent: dict) -> list[dict]:
    return [read_manifest_file(paths, f["id"]) for f in parent["fold_models"]["folds"]]


def test_every_test_block_is_one_fold_folder_and_no_fold_is_a_baseline(home, parent):
    paths, settings = home
    spans = fold_spans(paths, BID)
    assert len(spans) >= 2
    # both horizons walk the same test blocks: one folder each holds every horizon
    for name in settings.labels.horizons:
        wf = parent["walk_forward"]["folds"][name]
        assert [(f["name"], f["test_start"], f["test_end"]) for f in wf] == \
               [(n, s.date().isoformat(), e.date().isoformat()) for n, s, e in spans]
    for name, start, end in spans:
        folder = paths.models / BID / "folds" / name
        assert (folder / "manifest.json").is_file() and (folder / "regime_cuts.json").is_file()
        for h in settings.labels.horizons:
            for part in ("ensemble", "calibrators", "payoff", "ranker"):
                assert (folder / f"{part}_{h}.joblib").is_file()
        assert start <= end
    ids = list_baselines(paths)
    assert BID in ids and not any("/" in i or i == "folds" for i in ids)
    assert read_registry(paths)["active"] == BID


def test_fold_manifests_are_point_in_time(home, parent, oos, cal_sessions):
    paths, settings = home
    constituents = load_constituents(paths.store)
    lookback = settings.models.calibration_lookback_years
    lags = {n: max(0, h - 1) for n, h in settings.labels.horizons.items()}
    for i, man in enumerate(_fold_manifests(paths, parent)):
        fold = man["fold"]
        start = pd.Timestamp(fold["test_start"])
        assert man["parent"] == BID and man["id"] == f"{BID}/folds/{fold['name']}"
        assert man["training_span"]["end"] == fold["train_end"]
        assert pd.Timestamp(man["training_span"]["end"]) < start
        for key in ("feature_schema_hash", "feature_columns", "config_hash", "data_hash"):
            assert man[key] == parent[key]
        assert man["horizons"] == parent["horizons"]
        for name, h in man["horizons"].items():
            own = fold["horizons"][name]
            # the label of the last training row ends the session before the test block
            end_pos = cal_sessions.get_loc(pd.Timestamp(own["train_end"]))
            assert cal_sessions[end_pos + h + 1] == start
            assert pd.Timestamp(own["vol_regime_cuts"]["fit_end"]) <= pd.Timestamp(own["train_end"])
        cuts = man["thresholds"]["vol_regime_cuts"]
        assert cuts == fold["horizons"][settings.fusion.plan_horizon]["vol_regime_cuts"]
        assert cuts == json.loads((paths.models / man["id"] / "regime_cuts.json").read_text())

        # payoff and feature reference: recomputed from bars strictly before the test block
        bars = load_bars(paths.store, end=start - pd.Timedelta(days=1))
        before = training_frame(bars, constituents, settings)
        vc = VolRegimeCuts(**cuts)
        for name, h in man["horizons"].items():
            own_end = pd.Timestamp(fold["horizons"][name]["train_end"])
            want = payoff_stats(before, vc, {name: h}, own_end, lookback)[name]
            assert man["payoff"][name].keys() == want.keys()
            for reg, stats in want.items():
                assert man["payoff"][name][reg] == pytest.approx(stats, nan_ok=True)
        ref = feature_reference(before, feature_columns(settings),
                                pd.Timestamp(fold["train_end"]), lookback)
        assert man["feature_reference"].keys() == ref.keys()
        for col, r in ref.items():
            assert man["feature_reference"][col]["edges"] == pytest.approx(r["edges"])
            assert man["feature_reference"][col]["shares"] == pytest.approx(r["shares"])

        # skill and metrics: earlier folds' OOS rows whose label was complete before the block
        pos = cal_sessions.get_indexer(pd.DatetimeIndex(oos["date"]))
        h_of = oos["horizon"].map(settings.labels.horizons).to_numpy()
        known = (oos["date"] < start).to_numpy() & (pos + h_of < cal_sessions.get_loc(start))
        earlier = oos.loc[known]
        assert set(earlier["fold"]) == {f["name"] for f in parent["fold_models"]["folds"][:i]}
        assert man["skill"] == json.loads(json.dumps(skill_record(earlier, settings)))
        assert man["skill"]["n"] == int(((earlier["horizon"] == settings.fusion.plan_horizon)
                                         & earlier["p_cal"].notna()
                                         & earlier["label"].notna()).sum())
        overall = metrics_table(earlier, by=None, horizon_lags=lags).to_dict(orient="records")
        assert len(man["metrics"]["overall"]) == len(overall)
        for got, want in zip(man["metrics"]["overall"], overall, strict=True):
            assert got == pytest.approx(want, nan_ok=True)
        if i == 0:
            assert earlier.empty and man["metrics"]["overall"] == []
            assert man["skill"]["verdict"] == "no_skill" and man["skill"]["n"] == 0
        else:   # the first fold's rows have no calibrated probability: skill from the second on
            assert man["metrics"]["overall"] and man["skill"] != parent["skill"]
            assert (man["skill"]["n"] > 0) == (i >= 2)


@pytest.mark.parametrize("which", [0, -1])
def test_live_scoring_with_a_fold_reproduces_its_oos_predictions(home, parent, oos, which):
    """Features from bars up to the block's end, scored through the live path with the fold
    baseline, give the walk-forward's stored predictions of that block."""
    paths, settings = home
    name, start, end = fold_spans(paths, BID)[which]
    fb = fold_baseline(paths, BID, start)
    assert fb.baseline_id == f"{BID}/folds/{name}"
    bars = load_bars(paths.store, end=end)
    feats = build_features(bars, load_constituents(paths.store), settings)
    rows = feats.loc[(feats["date"] >= start) & (feats["date"] <= end)].reset_index(drop=True)
    scored = calibrate_scores(fb, raw_scores(fb, rows, settings), strict=False)
    wide = wide_scores(scored)
    block = oos.loc[oos["fold"] == name]
    plan = settings.fusion.plan_horizon
    for h in settings.labels.horizons:
        want = block.loc[block["horizon"] == h].set_index(["symbol", "date"]).sort_index()
        got = scored.loc[scored["horizon"] == h].assign(symbol=lambda d: d["symbol"].astype(str))
        got = got.set_index(["symbol", "date"]).sort_index()
        assert got.index.equals(want.index)
        for col in ("p_raw", "rank_score", "q_raw", "r_raw"):
            np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float),
                                       rtol=0, atol=1e-12, equal_nan=True)
        same = got["regime"].astype(str).to_numpy() == want["vol_regime"].astype(str).to_numpy()
        if h == plan:   # scored with the plan horizon's own cut points: every row as stored
            assert same.all()
        else:           # only names between the two horizons' cut points may change regime
            assert same.mean() > 0.9
        for col in ("p_cal", "q_cal", "r_cal"):
            np.testing.assert_allclose(got[col].to_numpy(float)[same],
                                       want[col].to_numpy(float)[same],
                                       rtol=0, atol=1e-12, equal_nan=True)
        if which == 0:   # the first fold has nothing earlier to calibrate on
            assert got["p_cal"].isna().all()
        else:
            assert got["p_cal"].notna().all()
        wcol = wide.assign(symbol=wide["symbol"].astype(str)).set_index(["symbol", "date"])
        wcol = wcol.sort_index().reindex(want.index)
        np.testing.assert_allclose(wcol[f"p_cal_{h}"].to_numpy(float)[same],
                                   want["p_cal"].to_numpy(float)[same], atol=1e-12,
                                   equal_nan=True)


def test_fold_baseline_picks_the_out_of_sample_model(home, parent):
    paths, _ = home
    fold_mod.clear_cache()
    spans = fold_spans(paths, BID)
    for i, (name, start, end) in enumerate(spans):
        for day in (start, end):
            assert fold_baseline(paths, BID, day).baseline_id == f"{BID}/folds/{name}"
        if i:   # the weekend before a block still belongs to the block before it
            assert fold_baseline(paths, BID, start - pd.Timedelta(days=1)).baseline_id == \
                f"{BID}/folds/{spans[i - 1][0]}"
        m = fold_baseline(paths, BID, start).manifest
        assert pd.Timestamp(m["training_span"]["end"]) < start
    # loaded once while unchanged
    assert fold_baseline(paths, BID, spans[0][1]) is fold_baseline(paths, BID, spans[0][2])
    assert fold_baseline(paths, BID, TRAIN_END).baseline_id == f"{BID}/folds/{spans[-1][0]}"
    after = fold_baseline(paths, BID, pd.Timestamp(TRAIN_END) + pd.Timedelta(days=1))
    assert after.baseline_id == BID and after.manifest["skill"] == parent["skill"]
    first = spans[0][1]
    with pytest.raises(RegistryError) as err:
        fold_baseline(paths, BID, first - pd.Timedelta(days=1))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (f"no out-of-sample model for {(first - pd.Timedelta(days=1)).date()}: "
                   f"baseline {BID}'s first walk-forward test block starts {first.date()}")
    with pytest.raises(RegistryError, match="no baseline 'nope'"):
        fold_baseline(paths, "nope", first)


def test_a_baseline_without_folds_says_to_retrain(trained_copy):
    paths = trained_copy
    old = load_baseline(paths, BID)
    manifest = {k: v for k, v in old.manifest.items() if k != "fold_models"}
    manifest["id"] = "b-old"
    save_baseline(paths, "b-old", old.models, old.cuts, manifest)
    assert fold_spans(paths, "b-old") == []
    with pytest.raises(RegistryError) as err:
        fold_baseline(paths, "b-old", "2020-03-02")
    assert str(err.value) == "baseline b-old keeps no fold models: retrain it with `hcp train`"
    assert fold_baseline(paths, "b-old", "2021-07-01").baseline_id == "b-old"


def test_known_before_purges_labels_that_reach_the_block():
    sess = pd.bdate_range("2021-01-04", periods=30)
    oos = pd.DataFrame({"date": list(sess[:20]) * 2, "horizon": ["short"] * 20 + ["mid"] * 20})
    kept = fold_mod.known_before(oos, sess, sess[20], {"short": 5, "mid": 10})
    assert kept.loc[kept["horizon"] == "short", "date"].max() == sess[14]
    assert kept.loc[kept["horizon"] == "mid", "date"].max() == sess[9]
