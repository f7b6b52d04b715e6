"""The results store of a distributed run: its inputs and results, by URL.

A run writes the training frame once (``frame.parquet``, with ``sessions.json``) under its own
root, and every base fit (:class:`tasks.models.train.FitJob`) reads that frame and writes its
fitted part to ``fits/<horizon>/<block>/<part>.joblib`` next to it. Tasks therefore carry a URL
and a job id, never a DataFrame: nothing large is pickled, hashed for a cache or sent through
the scheduler. The root is a local folder by default (``<HCP_HOME>/models/.work``) or any
fsspec URL every worker can reach (``runtime.results_url``: ``s3://...``, ``file:///shared/...``).

A backtest's scoring on Dask uses the same store: the feature rows of its span are written once
and each task scores a block of whole sessions into ``scores/<first>_<last>.parquet``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import joblib
import pandas as pd

from tasks.models.train import FitJob, run_fit_job
from tasks.paths import Paths
from tasks.settings import AppSettings

# one training frame per worker process: every fit of a run reads the same one
_loaded: dict[str, tuple[pd.DataFrame, pd.DatetimeIndex]] = {}


def new_run_root(paths: Paths, settings: AppSettings, kind: str = "train") -> str:
    """A fresh root for one distributed run (``train`` or ``score``) under the configured
    results store."""
    base = settings.runtime.results_url or Path(paths.models, ".work").resolve().as_uri()
    return f"{base.rstrip('/')}/{kind}-{uuid.uuid4().hex[:12]}"


def _fs(url: str):
    return fsspec.core.url_to_fs(url)


def _write(url: str, write) -> None:
    fs, path = _fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        write(fh)


def put_frame(root: str, frame: pd.DataFrame, sessions: pd.DatetimeIndex) -> None:
    """Write the run's inputs: the training frame and its exchange sessions."""
    _write(f"{root}/frame.parquet", lambda fh: frame.to_parquet(fh, index=False))
    days = [d.date().isoformat() for d in sessions]
    _write(f"{root}/sessions.json", lambda fh: fh.write(json.dumps(days).encode()))


def load_frame(root: str) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """The run's inputs, read once per process."""
    if root not in _loaded:
        fs, path = _fs(root)
        with fs.open(f"{path}/frame.parquet", "rb") as fh:
            frame = pd.read_parquet(fh)
        with fs.open(f"{path}/sessions.json", "rb") as fh:
            sessions = pd.DatetimeIndex(pd.to_datetime(json.loads(fh.read())))
        _loaded.clear()
        _loaded[root] = (frame, sessions)
    return _loaded[root]


def job_url(root: str, job: FitJob) -> str:
    """Where the fitted part of ``job`` is kept."""
    return f"{root}/fits/{job.horizon}/{job.block}/{job.part}.joblib"


def fit_to_store(root: str, settings: AppSettings, job: FitJob) -> str:
    """Fit ``job`` on the run's frame and store the part; its URL."""
    frame, sessions = load_frame(root)
    part = run_fit_job(frame, sessions, settings, job)
    url = job_url(root, job)
    _write(url, lambda fh: joblib.dump(part, fh))
    return url


def score_to_store(root: str, home: str, baseline_id: str, first: str, last: str,
                   settings: AppSettings) -> str:
    """Score the sessions [first, last] of the run's feature frame with the model of
    ``baseline_id`` that saw none of them (:func:`tasks.models.folds.fold_baseline` of
    ``first``; the block lies within one fold's span), calibrated and wide as
    :func:`tasks.plan.session.score_history` gives them; the URL of the stored scores."""
    from tasks.models.folds import fold_baseline
    from tasks.models.scoring import calibrate_scores, raw_scores, wide_scores

    frame, _ = load_frame(root)
    model = fold_baseline(Paths(Path(home)), baseline_id, first)
    rows = frame.loc[(frame["date"] >= pd.Timestamp(first)) & (frame["date"] <= pd.Timestamp(last))]
    scores = wide_scores(calibrate_scores(model, raw_scores(model, rows.reset_index(drop=True),
                                                            settings), strict=False))
    url = f"{root}/scores/{first}_{last}.parquet"
    _write(url, lambda fh: scores.to_parquet(fh, index=False))
    return url


def read_frame(url: str) -> pd.DataFrame:
    """A stored parquet frame (a block's scores)."""
    fs, path = _fs(url)
    with fs.open(path, "rb") as fh:
        return pd.read_parquet(fh)


def read_fit(url: str) -> object:
    """A stored fitted part."""
    fs, path = _fs(url)
    with fs.open(path, "rb") as fh:
        return joblib.load(fh)


def remove_run(root: str) -> None:
    """Delete a run's inputs and fits (its models are in the baseline by then)."""
    fs, path = _fs(root)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    _loaded.pop(root, None)
