"""`hcp train` on a Dask LocalCluster (2 worker processes x 1 thread) through Prefect's
DaskTaskRunner gives the same out-of-sample predictions and the same final models as the
in-process run; the settings pick the runner; a missing extra is one clear line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.data.store import load_bars, load_constituents
from tasks.models import pipeline
from tasks.models.registry import load_baseline
from tasks.models.scoring import score_features
from tasks.models.train import FINAL, fit_jobs, fit_parts, training_frame
from tasks.paths import Paths
from tasks.settings import load_settings
from tests.conftest import NOW, SMALL_ENV, TRAIN_END

pytest.importorskip("prefect_dask", reason="the dask extra is not installed")

ENV = {**SMALL_ENV, "HCP_RUNTIME__N_THREADS": "1"}


def _home(root) -> Paths:
    paths = Paths(root)
    src = DemoSource(paths.demo, seed=11, n_symbols=20, n_sectors=5, start="2017-01-03",
                     end="2021-12-31")
    import_bars(src, load_settings(), paths)
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        for key, value in ENV.items():
            mp.setenv(key, value)
        seq_home = _home(tmp_path_factory.mktemp("seq"))
        settings = load_settings()
        seq = pipeline.run_training(seq_home, settings, NOW, train_end=TRAIN_END,
                                    baseline_id="b1")
        dask_home = _home(tmp_path_factory.mktemp("dask"))
        mp.setenv("HCP_HOME", str(dask_home.home))
        mp.setenv("HCP_RUNTIME__TASK_RUNNER", "dask")
        mp.setenv("HCP_RUNTIME__DASK_WORKERS", "2")
        mp.setenv("HCP_RUNTIME__DASK_THREADS_PER_WORKER", "1")
        from flows import train as tf

        ticks: list[tuple[str, int, int | None]] = []
        tf.progress_hook = lambda msg, done, total: ticks.append((msg, done, total))
        try:
            with prefect_test_harness(server_startup_timeout=120):
                dist = tf.run_distributed(load_settings(), None, TRAIN_END, "b1")
        finally:
            tf.progress_hook = None
        yield seq_home, seq, dask_home, dist, ticks
    finally:
        mp.undo()


def test_every_fold_horizon_and_part_is_one_job(runs):
    seq_home, *_ = runs
    settings = load_settings(runtime={"n_threads": 1})
    frame = training_frame(load_bars(seq_home.store, end=pd.Timestamp(TRAIN_END)),
                           load_constituents(seq_home.store), settings)
    from tasks.data.calendar import sessions

    sess = sessions("XNYS", frame["date"].min(), frame["date"].max())
    jobs = fit_jobs(frame, sess, settings)
    assert len(jobs) == len(set(jobs))
    parts = fit_parts(settings)
    assert parts == ["rf", "xgb", "cat", "payoff", "ranker"]
    for name in settings.labels.horizons:
        blocks = {j.block for j in jobs if j.horizon == name}
        assert FINAL in blocks and len(blocks) >= 3   # 2019, 2020, 2021 blocks + final
        for block in blocks:
            assert sorted(j.part for j in jobs if (j.horizon, j.block) == (name, block)) \
                == sorted(parts)


def test_dask_run_predicts_out_of_sample_exactly_as_the_in_process_run(runs):
    seq_home, seq, dask_home, dist, _ = runs
    a = pd.read_parquet(seq.oos_path)
    b = pd.read_parquet(dist.oos_path)
    assert len(a) > 1000 and a["fold"].nunique() >= 3
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_dask_run_final_models_score_exactly_as_the_in_process_ones(runs):
    seq_home, seq, dask_home, dist, _ = runs
    assert seq.baseline_id == dist.baseline_id == "b1"
    settings = load_settings(runtime={"n_threads": 1})
    frame = training_frame(load_bars(seq_home.store), load_constituents(seq_home.store), settings)
    one = score_features(load_baseline(seq_home, "b1"), frame, settings, strict=False)
    two = score_features(load_baseline(dask_home, "b1"), frame, settings, strict=False)
    num = one.select_dtypes("number").columns
    assert len(num) >= 6 and one[num].notna().to_numpy().any()
    np.testing.assert_array_equal(one[num].to_numpy(), two[num].to_numpy())
    # the kept fold models too (a backtest scores the past with them)
    folds = sorted(p.name for p in (seq_home.models / "b1" / "folds").iterdir())
    assert folds == sorted(p.name for p in (dask_home.models / "b1" / "folds").iterdir())
    for fold in folds:
        x = score_features(load_baseline(seq_home, f"b1/folds/{fold}"), frame, settings, strict=False)
        y = score_features(load_baseline(dask_home, f"b1/folds/{fold}"), frame, settings, strict=False)
        np.testing.assert_array_equal(x[num].to_numpy(), y[num].to_numpy())


def test_dask_run_reports_each_fit_and_leaves_no_work_folder(runs):
    _, _, dask_home, dist, ticks = runs
    fitted = [m for m, _, _ in ticks if m.startswith("fitted ")]
    assert len(fitted) == len(set(fitted)) >= 2 * 4 * 5
    totals = {t for _, _, t in ticks}
    assert len(totals - {None}) == 1                 # one known total from the first fit on
    assert ticks[-1][1] == ticks[-1][2]              # ends at 100 %
    work = dask_home.models / ".work"
    assert not work.exists() or not any(work.iterdir())


def test_dask_runner_without_the_extra_is_one_clear_line(monkeypatch):
    import builtins

    from flows.train import DaskUnavailable, dask_task_runner

    real = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.startswith("prefect_dask"):
            raise ImportError("no module named prefect_dask")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(DaskUnavailable, match=r'pip install -e "\.\[dask\]"'):
        dask_task_runner(load_settings(runtime={"task_runner": "dask"}))


def test_backtest_scoring_in_session_blocks_on_dask_equals_in_process(trained_home):
    """A backtest's fold scores, cut into blocks of 7 sessions (across a fold boundary: the
    last fold and the baseline after its training end) and scored as Prefect tasks on a
    2-process LocalCluster, are the in-process frame exactly; the work folder is removed."""
    from prefect import flow

    from flows.backtest import fold_scores, score_on_runner
    from flows.replay import load_span, replay_sessions
    from flows.train import dask_task_runner

    mp = pytest.MonkeyPatch()
    try:
        for key, value in {**ENV, "HCP_HOME": str(trained_home.home),
                           "HCP_RUNTIME__DASK_WORKERS": "2",
                           "HCP_RUNTIME__SCORE_BLOCK_SESSIONS": "7"}.items():
            mp.setenv(key, value)
        settings = load_settings()
        days = replay_sessions("2021-05-03", "2021-07-30", trained_home.store,
                               settings.data.calendar)
        _, hist = load_span(trained_home, days, settings)
        seq = fold_scores(trained_home, "b-demo", hist, days[0], days[-1], settings)

        @flow(name="score-span-test")
        def score_span():
            return fold_scores(trained_home, "b-demo", hist, days[0], days[-1], settings,
                               score_many=score_on_runner(trained_home, settings))

        with prefect_test_harness(server_startup_timeout=120):
            dist = score_span.with_options(task_runner=dask_task_runner(settings))()
    finally:
        mp.undo()
    assert len(seq) == 20 * len(days)
    pd.testing.assert_frame_equal(dist, seq)
    work = trained_home.models / ".work"
    assert not work.exists() or not any(work.iterdir())
