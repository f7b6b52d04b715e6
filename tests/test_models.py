"""Walk-forward ensemble: purging, leakage guards, calibration refusal, registry, parity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tasks.data.calendar import sessions
from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.data.store import load_bars, load_constituents, read_manifest, write_store
from tasks.features.build import feature_columns
from tasks.models import pipeline
from tasks.models.calibration import MissingCalibrator
from tasks.models.registry import RegistryError, list_baselines, load_baseline, promote, read_registry
from tasks.models.scoring import score_features
from tasks.models.train import training_frame, walk_forward
from tasks.models.walkforward import make_folds, purged_train_mask
from tasks.paths import Paths
from tasks.settings import load_settings

SMALL = {"first_test_year": 2019, "min_train_years": 2, "row_stride": 1,
         "rf": {"n_estimators": 30}, "xgb": {"n_estimators": 40}, "cat": {"iterations": 40}}
SETTINGS = load_settings(models=SMALL)
NOW = "2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Paths:
    paths = Paths(tmp_path_factory.mktemp("models"))
    src = DemoSource(paths.demo, seed=11, n_symbols=20, n_sectors=5, start="2017-01-03",
                     end="2021-12-31")
    import_bars(src, SETTINGS, paths)
    return paths


@pytest.fixture(scope="module")
def frame(home) -> pd.DataFrame:
    return training_frame(load_bars(home.store), load_constituents(home.store), SETTINGS)


@pytest.fixture(scope="module")
def trained(home) -> pipeline.TrainResult:
    return pipeline.run_training(home, SETTINGS, NOW, train_end="2021-06-30", baseline_id="b1")


def _sessions(df: pd.DataFrame) -> pd.DatetimeIndex:
    return sessions("XNYS", df["date"].min(), df["date"].max())


def test_folds_purge_the_label_horizon():
    sess = sessions("XNYS", "2010-01-04", "2016-12-30")
    cfg = load_settings().models
    for h in (5, 20):
        folds = make_folds(sess, cfg, h)
        assert [f.test_start.year for f in folds] == list(range(2013, 2017))
        for f, nxt in zip(folds, folds[1:], strict=False):
            assert sess.get_loc(f.train_end) + h < sess.get_loc(f.test_start)
            assert sess.get_loc(nxt.test_start) == sess.get_loc(f.test_end) + 1


def test_purged_mask_and_embargo():
    sess = sessions("XNYS", "2020-01-02", "2020-12-31")
    dates = pd.Series(sess)
    start, end = sess[100], sess[150]
    before = purged_train_mask(dates, sess, start, end, 5, 10)
    assert before[:95].all() and not before[95:].any()
    both = purged_train_mask(dates, sess, start, end, 5, 10, allow_after=True)
    assert not both[95:161].any() and both[161:].all()


def test_shuffled_labels_give_chance_auc(frame):
    shuffled = frame.copy()
    rng = np.random.default_rng(0)
    shuffled["label_mid"] = rng.permutation(shuffled["label_mid"].to_numpy())
    oos, _ = walk_forward(shuffled, _sessions(frame), SETTINGS, "mid")
    ok = oos["label"].notna()
    auc = roc_auc_score(oos.loc[ok, "label"], oos.loc[ok, "p_raw"])
    assert len(oos.loc[ok]) > 10_000
    assert abs(auc - 0.5) < 0.02


def test_every_stored_prediction_is_out_of_sample(trained, home):
    oos = pd.read_parquet(trained.oos_path)
    manifest = json.loads((trained.model_dir / "manifest.json").read_text())
    for horizon, folds in manifest["walk_forward"]["folds"].items():
        h = manifest["horizons"][horizon]
        sess = sessions("XNYS", "2017-01-01", "2021-12-31")
        for f in folds:
            rows = oos[(oos["horizon"] == horizon) & (oos["fold"] == f["name"])]
            assert rows["date"].min() >= pd.Timestamp(f["test_start"])
            assert sess.get_loc(pd.Timestamp(f["train_end"])) + h < sess.get_loc(
                pd.Timestamp(f["test_start"]))
    assert oos["date"].max() <= pd.Timestamp("2021-06-30")


def test_training_writes_baseline_but_does_not_promote_without_skill(trained, home):
    """The demo market has no signal: the baseline is registered, its skill measured out of
    sample (no_skill), and the empty active slot stays empty; card and report say so first."""
    assert (trained.model_dir / "manifest.json").is_file()
    for name in ("validation_report.txt", "report.html"):
        assert (trained.report_dir / name).is_file()
    assert (home.val / "b1" / "walkforward_results.csv").is_file()
    assert not trained.promoted and read_registry(home)["active"] is None
    assert "no measured skill" in trained.promotion
    manifest = json.loads((trained.model_dir / "manifest.json").read_text())
    skill = manifest["skill"]
    assert skill["horizon"] == "short" and skill["verdict"] == "no_skill"
    assert set(skill["per_horizon"]) == {"short", "mid"}
    assert skill["thresholds"] == {"min_brier_skill": 0.0, "min_ic_t": 2.0,
                                   "live_requires_skill": True}
    assert not (skill["brier_skill"] > 0 and skill["ic_t"] >= 2)
    overall = {r["horizon"]: r for r in manifest["metrics"]["overall"]}
    assert skill["brier_skill"] == pytest.approx(overall["short"]["brier_skill"])
    # the rank IC is the ranking model's (the score the plan ranks names by), not P(win)'s
    assert skill["per_horizon"]["short"]["score"] == "rank_score"
    assert skill["top_decile_net"] is not None and skill["universe_net"] is not None
    card = (trained.model_dir / "model_card.md").read_text().splitlines()
    assert card[2].startswith("**Verdict:** NO MEASURED SKILL at the plan horizon (short): "
                              "Brier skill") and "Not promoted automatically" in card[2]
    report = (trained.report_dir / "validation_report.txt").read_text().splitlines()
    assert report[2].startswith("Verdict: NO MEASURED SKILL at the plan horizon (short)")
    assert "NO MEASURED SKILL" in (trained.report_dir / "report.html").read_text()
    assert manifest["training_span"]["end"] == "2021-06-30"
    assert set(manifest["calibrators"]["mid"]) <= {"low_vol", "med_vol", "high_vol"}
    assert manifest["leakage_suspect"] == []


def test_training_records_signal_quality(trained):
    """manifest["signal"]: per horizon, the score the plan ranks by, judged out of sample (finite
    IC figures, strict JSON); the report's section, figures and tables."""
    text = (trained.model_dir / "manifest.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    manifest = json.loads(text)
    assert set(manifest["signal"]) == set(SETTINGS.labels.horizons)
    oos = pd.read_parquet(trained.oos_path)
    html = (trained.report_dir / "report.html").read_text()
    report = (trained.report_dir / "validation_report.txt").read_text()
    for name, h in SETTINGS.labels.horizons.items():
        s = manifest["signal"][name]
        rows = oos.loc[(oos["horizon"] == name) & oos["p_cal"].notna()]
        ranked = "rank_score" in rows and np.isfinite(rows["rank_score"].to_numpy(dtype=float)).any()
        assert s["score"] == ("rank_score" if ranked else "p_cal")
        assert s["horizon"] == name and s["h"] == h and s["nw_lag"] == h - 1 and s["cost_bps"] == 5.0
        # sessions with a rank IC: a calibrated row with a forward return (the last h have none)
        judged = rows.loc[rows["fwd_return"].notna() & rows[s["score"]].notna()]
        assert s["sessions"] == judged["date"].nunique() > 100
        for key in ("ic_mean", "ic_t_nw", "icir", "ic_positive", "ls_net_mean", "ls_t_nw",
                    "top_decile_turnover"):
            assert isinstance(s[key], float) and np.isfinite(s[key]), key
        assert -1.0 <= s["ic_mean"] <= 1.0 and 0.0 <= s["top_decile_turnover"] <= 1.0
        assert s["ls_net_mean"] == pytest.approx(s["ls_gross_mean"] - 4 * 5.0 / 1e4)
        gate = manifest["skill"]["per_horizon"][name]
        if gate.get("score", "p_cal") == s["score"]:  # the skill gate judges the same ranking
            assert s["ic_mean"] == pytest.approx(gate["ic"]) and s["ic_t_nw"] == pytest.approx(gate["ic_t"])
        for doc in (html, report):
            assert f"Signal quality: {name} ({h} sessions)" in doc
            assert f"(NW t {s['ic_t_nw']:.2f})" in doc
        for stem in (f"signal_ic_by_year_{name}.png", f"signal_deciles_{name}.png", f"signal_{name}.csv"):
            assert (trained.report_dir / stem).is_file(), stem
        assert f'alt="IC by year ({name})"' in html and f'alt="Decile returns ({name})"' in html
    assert report.index("Verdict:") < report.index("Signal quality")


def test_nothing_after_train_end_reaches_the_model(home, trained, tmp_path):
    other = Paths(tmp_path)
    bars = load_bars(home.store)
    late = bars["date"] > pd.Timestamp("2021-06-30")
    for col in ("open", "high", "low", "close", "adjusted_close", "adj_open", "adj_high",
                "adj_low", "adj_close"):
        bars.loc[late, col] *= 1.7
    write_store(other.store, bars, load_constituents(home.store), {"source": "demo"})
    again = pipeline.run_training(other, SETTINGS, NOW, train_end="2021-06-30", baseline_id="b1")
    pd.testing.assert_frame_equal(pd.read_parquet(trained.oos_path), pd.read_parquet(again.oos_path),
                                  check_exact=False, rtol=1e-10, atol=1e-12)
    a, b = load_baseline(home, "b1"), load_baseline(other, "b1")
    assert a.cuts == b.cuts
    X = np.random.default_rng(1).normal(size=(50, len(feature_columns(SETTINGS))))
    for name in a.models:
        # equal up to floating-point summation order across threads
        np.testing.assert_allclose(a.models[name].ensemble.predict_proba(X),
                                   b.models[name].ensemble.predict_proba(X), rtol=1e-12, atol=1e-14)


def test_saved_model_scores_like_in_memory(home, trained, frame, tmp_path):
    """Parity: a model fit in memory, saved and loaded back gives the same probabilities."""
    from tasks.features.regimes import fit_vol_regime_cuts
    from tasks.models.registry import save_baseline
    from tasks.models.train import fit_final

    oos = pd.read_parquet(trained.oos_path)
    cuts = fit_vol_regime_cuts(frame, SETTINGS.regimes, end=frame["date"].max())
    sess = _sessions(frame)
    memory = {n: fit_final(frame, sess, oos[oos["horizon"] == n], SETTINGS, n, cuts)
              for n in SETTINGS.labels.horizons}
    manifest = json.loads((trained.model_dir / "manifest.json").read_text())
    other = Paths(tmp_path)
    save_baseline(other, "parity", memory, cuts, {**manifest, "id": "parity"})
    loaded = load_baseline(other, "parity")
    rows = frame.loc[frame["date"] == pd.Timestamp("2021-06-30")]
    scored = score_features(loaded, rows, SETTINGS)
    X = rows[feature_columns(SETTINGS)].to_numpy(dtype="float64", na_value=np.nan)
    for name, hm in memory.items():
        direct = hm.ensemble.predict_proba(X)[:, 1]
        got = scored.loc[scored["horizon"] == name].set_index("symbol").loc[rows["symbol"], "p_raw"]
        # identical up to the summation order of two prediction threads (1 ulp)
        np.testing.assert_allclose(got.to_numpy(), direct, rtol=1e-13, atol=0)
    assert set(scored.columns) == {"symbol", "date", "horizon", "p_raw", "p_cal", "regime", "label",
                                   "fwd_return", "q_raw", "r_raw", "q_cal", "r_cal", "p_sd",
                                   "rank_score", "exp_a", "exp_b", "exp_b_se"}


def test_scoring_refuses_other_feature_schema(home, trained, frame):
    other = load_settings(models=SMALL, features={"vol_window": 21})
    with pytest.raises(RegistryError, match="feature schema"):
        score_features(load_baseline(home, "b1"), frame.head(50), other)


def test_scoring_refuses_a_missing_regime_calibrator(home, trained, frame):
    base = load_baseline(home, "b1")
    base.models["mid"].calibrators.pop("high_vol", None)
    rows = frame.loc[frame["vol_20"] > base.cuts.med_high].head(20)
    with pytest.raises(MissingCalibrator, match="high_vol"):
        score_features(base, rows, SETTINGS)


def test_planted_leak_is_flagged_and_not_promoted(home, frame, monkeypatch, tmp_path):
    leaky = frame.copy()
    leaky["ret_1"] = leaky["fwd_return_mid"]  # shift backward = looking ahead: planted leak
    leaky["ret_5"] = leaky["fwd_return_short"]
    monkeypatch.setattr(pipeline, "training_frame", lambda *a, **k: leaky)
    other = Paths(tmp_path)
    write_store(other.store, load_bars(home.store), load_constituents(home.store),
                {"source": "demo"})
    res = pipeline.run_training(other, SETTINGS, NOW, baseline_id="leaky")
    assert set(res.leakage_suspect) == {"short", "mid"}
    assert not res.promoted and read_registry(other)["active"] is None


def test_registry_promote_and_list(home, trained):
    assert "b1" in list_baselines(home)
    reg = promote(home, "b1", "shadow", NOW)
    assert reg["shadow"] == "b1" and reg["history"][-1]["slot"] == "shadow"
    with pytest.raises(RegistryError):
        promote(home, "nope", "active", NOW)
    with pytest.raises(RegistryError, match="known: b1"):
        load_baseline(home, "nope")
    assert read_manifest(home.store)["source"] == "demo"


def test_cli_score_promote_and_list(home, trained, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("HCP_HOME", str(home.home))
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    out = tmp_path / "scored.parquet"
    res = runner.invoke(app, ["score", "--baseline", "b1", "--source", "parquet",
                              "--path", str(home.demo / "ohlcv_daily.parquet"),
                              "--start", "2021-12-01", "--end", "2021-12-31", "--out", str(out)])
    assert res.exit_code == 0, res.output
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["symbol", "date", "horizon", "p_raw", "p_cal", "regime",
                                    "label", "fwd_return", "q_raw", "r_raw", "q_cal", "r_cal",
                                    "p_sd", "rank_score", "exp_a", "exp_b", "exp_b_se"]
    assert scored["q_cal"].between(0, 1).all() and scored["p_sd"].ge(0).all()
    assert scored["rank_score"].notna().all()
    assert (scored["exp_a"] >= 0).all() and (scored["exp_b"] >= 0).all()
    # a ranking weight in use carries its standard error; an unused one has none to carry
    used = scored["exp_b"] > 0
    assert (scored.loc[used, "exp_b_se"] > 0).all() and (scored.loc[~used, "exp_b_se"] == 0).all()
    assert scored["date"].min() >= pd.Timestamp("2021-12-01")
    assert set(scored["horizon"]) == {"short", "mid"}
    last = scored[scored["date"] == scored["date"].max()]
    assert last["label"].isna().all() and last["fwd_return"].isna().all()
    assert scored["p_cal"].between(0, 1).all()

    res = runner.invoke(app, ["promote", "--to", "shadow", "--id", "b1"])
    assert res.exit_code == 0 and "shadow: b1" in res.output
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0 and "b1" in res.output
    res = runner.invoke(app, ["score", "--baseline", "missing", "--source", "parquet", "--path",
                              str(out), "--start", "2021-01-01", "--end", "2021-02-01", "--out",
                              str(out)])
    assert res.exit_code == 2 and "no baseline 'missing'" in res.output


def test_cli_train_shows_progress_and_writes_a_baseline(home, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    other = Paths(tmp_path)
    write_store(other.store, load_bars(home.store, end="2020-12-31"), load_constituents(home.store),
                {"source": "demo"})
    monkeypatch.setenv("HCP_HOME", str(other.home))
    monkeypatch.setenv("HCP_MODELS__FIRST_TEST_YEAR", "2019")
    monkeypatch.setenv("HCP_MODELS__MIN_TRAIN_YEARS", "2")
    monkeypatch.setenv("HCP_MODELS__BASE_MODELS", '["xgb"]')
    res = CliRunner().invoke(app, ["train", "--baseline", "cli1"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "baseline cli1" in text and "NO MEASURED SKILL at the plan horizon (short)" in text
    assert "not promoted to active: no measured skill at the plan horizon (short)" in text
    assert (other.models / "cli1" / "model_card.md").is_file()
    assert read_registry(other)["active"] is None


def test_ranker_rows_per_horizon_and_one_shared_sample(frame):
    """The ranker's cap is per horizon where set; the parts of a block share one seeded draw,
    so a part fitted alone (a Dask job) gets exactly the rows of the in-process block."""
    from tasks.models.train import fit_part

    settings = load_settings(models={**SMALL, "max_train_rows": 3000,
                                     "ranker": {"max_train_rows": 3000,
                                                "horizon_max_train_rows": {"mid": 6000}}})
    sess = _sessions(frame)
    mask = np.ones(len(frame), dtype=bool)
    short = fit_part(frame, mask, "short", sess, settings, "ranker")
    mid = fit_part(frame, mask, "mid", sess, settings, "ranker")
    assert short.info["rows"] <= 3000 < mid.info["rows"] <= 6000
    samples: dict = {}
    xgb_shared = fit_part(frame, mask, "short", sess, settings, "xgb", samples)
    ranker_shared = fit_part(frame, mask, "short", sess, settings, "ranker", samples)
    assert list(samples) == [3000]                   # classifiers and ranker: one draw
    X = samples[3000][1]
    np.testing.assert_array_equal(ranker_shared.score(X), short.score(X))
    alone = fit_part(frame, mask, "short", sess, settings, "xgb")
    np.testing.assert_array_equal(xgb_shared.predict_proba(X), alone.predict_proba(X))
