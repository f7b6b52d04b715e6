"""`hcp train` with its base fits spread over a Dask cluster (``runtime.task_runner: dask``).

The walk-forward has two kinds of work. Every base fit (each fold's and the final model's
random forest, XGBoost, CatBoost, payoff head and ranker, for every horizon:
:func:`tasks.models.train.fit_jobs`) depends only on the training frame, so they all become
Prefect tasks at once and Prefect's ``DaskTaskRunner`` (prefect-dask) spreads them over the
cluster's workers. What needs the earlier folds' out-of-sample rows (the stacker, the
per-regime calibrators, the prediction of each test block) then runs here, fold after fold.
The models are the same as those of the in-process run (``tests/test_train_dask.py``).

Known pitfalls of Prefect on Dask, and what this flow does about them:

- **Pickling and caching of inputs.** A task gets the URL of the run's folder in the results
  store and a small job id, never a DataFrame: the frame is written once as parquet
  (:mod:`tasks.models.fitstore`), read once per worker process, and the task's cache policy
  is ``NO_CACHE``, so Prefect never hashes an input.
- **Results.** Each fitted part is written to the results store by the task itself, and only
  its URL travels back through the scheduler.
- **Logs.** Task logs from workers of a cluster given by address may not reach the Prefect
  UI; this flow logs each completed fit from the flow itself, so the progress is in the flow
  run's log and on the command line either way.
- **Workers need the project.** Every worker imports ``tasks`` (install the project on each
  worker machine) and reads the results store (``runtime.results_url``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from tasks.models.fitstore import fit_to_store, new_run_root, put_frame, read_fit, remove_run
from tasks.models.pipeline import TrainResult, run_training
from tasks.models.train import FitJob
from tasks.paths import Paths
from tasks.settings import AppSettings, load_settings

Progress = Callable[[str, int, int | None], None]
progress_hook: Progress | None = None  # set by the command line to draw a progress bar


class DaskUnavailable(RuntimeError):
    """runtime.task_runner is dask but prefect-dask is not installed."""


@task(name="fit-part", cache_policy=NO_CACHE, retries=1,
      task_run_name="fit {job.horizon}/{job.block}/{job.part}")
def fit_part_task(root: str, settings: AppSettings, job: FitJob) -> str:
    """Fit one part on the run's frame; the URL of the stored part."""
    return fit_to_store(root, settings, job)


def dask_task_runner(settings: AppSettings):
    """The ``DaskTaskRunner`` of ``runtime``: the cluster at ``dask_address``, or a
    LocalCluster of ``dask_workers`` processes x ``dask_threads_per_worker`` threads."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise DaskUnavailable("runtime.task_runner is dask but prefect-dask is not installed: "
                              "pip install -e \".[dask]\"") from exc
    rt = settings.runtime
    if rt.dask_address:
        return DaskTaskRunner(address=rt.dask_address)
    workers = rt.dask_workers or max(1, (os.cpu_count() or 1) // rt.dask_threads_per_worker)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": workers, "threads_per_worker": rt.dask_threads_per_worker,
        "processes": True, "dashboard_address": None})


def fit_on_runner(paths: Paths, settings: AppSettings):
    """A ``fit_many`` for :func:`run_training` that submits every fit as a task of the running
    flow (so to its task runner), collects the parts and removes the run's folder."""
    logger = get_run_logger()

    def fit_many(frame: pd.DataFrame, sessions: pd.DatetimeIndex, jobs: list[FitJob],
                 tick: Callable[[str], None]) -> dict[FitJob, object]:
        root = new_run_root(paths, settings)
        put_frame(root, frame, sessions)
        logger.info("%d base fits, inputs in %s", len(jobs), root)
        futures = {fit_part_task.submit(root, settings, job): job for job in jobs}
        done: dict[FitJob, object] = {}
        try:
            for future in as_completed(list(futures)):
                job = futures[future]
                done[job] = read_fit(future.result())
                msg = f"fitted {job.horizon}/{job.block}/{job.part} ({len(done)}/{len(jobs)})"
                logger.info("%s", msg)
                tick(msg)
        finally:
            remove_run(root)
        return done

    return fit_many


@flow(name="train", log_prints=False)
def train(start: str | None = None, train_end: str | None = None,
          baseline: str | None = None) -> TrainResult:
    """Walk-forward training with the base fits on the flow's task runner."""
    settings, paths = load_settings(), Paths.from_env()
    return run_training(paths, settings,
                        pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"), start,
                        train_end, baseline, progress=progress_hook,
                        fit_many=fit_on_runner(paths, settings))


def run_distributed(settings: AppSettings, start: str | None, train_end: str | None,
                    baseline: str | None) -> TrainResult:
    """The ``train`` flow on the Dask runner of ``runtime`` (see :func:`dask_task_runner`)."""
    return train.with_options(task_runner=dask_task_runner(settings))(
        start=start, train_end=train_end, baseline=baseline)
