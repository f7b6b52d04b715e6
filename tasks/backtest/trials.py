"""Every backtested configuration is a trial: its daily returns and what it was.

Under ``<root>/trials/`` (root: ``<home>/reports/backtest``):

* ``<config_id>.parquet``: columns ``session`` and ``returns`` (day P&L fraction);
* ``trials.jsonl``: one JSON object per configuration (``config_id``, ``at``, ``start``, ``end``,
  ``sessions`` and the caller's metadata: baseline id, settings hash, ...).

Recording a configuration again replaces its returns and its line: there is one trial per
configuration, so the number of trials is the number of configurations tried. The deflated
Sharpe ratio and the probability of backtest overfitting are computed over these trials.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.io import atomic_write_bytes, atomic_write_parquet, exclusive_lock

TRIALS_DIR = "trials"
LOG_NAME = "trials.jsonl"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")


class TrialError(ValueError):
    """A trial cannot be recorded or read as given."""


def trials_dir(root: Path) -> Path:
    return Path(root) / TRIALS_DIR


def _check_id(config_id: str) -> str:
    if not isinstance(config_id, str) or not _SAFE_ID.match(config_id) or ".." in config_id:
        raise TrialError(f"configuration id {config_id!r} must be 1-128 letters, digits or "
                         "'._=+-', starting with a letter or digit")
    return config_id


def _json_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, default=str, allow_nan=False)


def read_trial_log(root: Path) -> list[dict[str, Any]]:
    """The trial lines, oldest first, one per configuration (the newest line of an id wins; a
    line that is not a JSON object with a ``config_id`` is a :class:`TrialError`)."""
    path = trials_dir(root) / LOG_NAME
    if not path.is_file():
        return []
    found: dict[str, dict[str, Any]] = {}
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrialError(f"{path} line {no} is not JSON: {exc.msg}") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("config_id"), str):
            raise TrialError(f"{path} line {no} has no config_id")
        found.pop(obj["config_id"], None)
        found[obj["config_id"]] = obj
    return list(found.values())


def record_trial(root: Path, config_id: str, returns: pd.Series,
                 meta: dict[str, Any] | None = None, *, at: str | None = None) -> Path:
    """Record (or replace) the trial of ``config_id``: its daily returns indexed by session and
    one line of metadata. Returns the parquet path."""
    _check_id(config_id)
    series = pd.Series(returns, dtype=float)
    if series.empty:
        raise TrialError(f"trial {config_id}: no returns to record")
    try:
        index = pd.DatetimeIndex(series.index)
    except (TypeError, ValueError) as exc:
        raise TrialError(f"trial {config_id}: returns must be indexed by session dates") from exc
    if index.tz is not None:
        index = index.tz_localize(None)
    index = index.normalize()
    if index.has_duplicates:
        raise TrialError(f"trial {config_id}: duplicate sessions in the returns")
    series = pd.Series(series.to_numpy(), index=index).sort_index()
    folder = trials_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"session": series.index, "returns": series.to_numpy()})
    path = atomic_write_parquet(folder / f"{config_id}.parquet", frame)
    line = {**(meta or {}), "config_id": config_id,
            "at": at or (meta or {}).get("at") or pd.Timestamp.now(tz="UTC").isoformat(
                timespec="seconds"),
            "start": series.index[0].date().isoformat(),
            "end": series.index[-1].date().isoformat(), "sessions": int(len(series))}
    with exclusive_lock(folder / ".trials.lock"):
        kept = [t for t in read_trial_log(root) if t["config_id"] != config_id]
        text = "".join(_json_line(t) + "\n" for t in [*kept, line])
        atomic_write_bytes(folder / LOG_NAME, text.encode())
    return path


def load_trial(root: Path, config_id: str) -> pd.Series:
    """The recorded daily returns of one configuration, indexed by session."""
    path = trials_dir(root) / f"{_check_id(config_id)}.parquet"
    if not path.is_file():
        raise TrialError(f"no trial {config_id!r} under {trials_dir(root)}")
    frame = pd.read_parquet(path)
    return pd.Series(frame["returns"].to_numpy(dtype=float),
                     index=pd.DatetimeIndex(frame["session"], name="session"), name=config_id)


def load_trials(root: Path) -> pd.DataFrame:
    """Sessions × configurations of daily returns, on the sessions every trial shares (empty
    when nothing is recorded). Its column count is the number of trials."""
    series = [load_trial(root, t["config_id"]) for t in read_trial_log(root)
              if (trials_dir(root) / f"{t['config_id']}.parquet").is_file()]
    if not series:
        return pd.DataFrame(index=pd.DatetimeIndex([], name="session"))
    frame = pd.concat(series, axis=1, join="inner").sort_index()
    frame.index.name = "session"
    return frame


def trial_count(root: Path) -> int:
    """Number of configurations recorded (with their returns)."""
    return sum(1 for t in read_trial_log(root)
               if (trials_dir(root) / f"{t['config_id']}.parquet").is_file())
