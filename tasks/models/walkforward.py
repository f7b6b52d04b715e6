"""Walk-forward folds with purging and an embargo.

A sample dated t carries a label built from sessions t+1 .. t+h. For a test block
[test_start, test_end] a training sample is kept only when its label window ends before the
test block starts (purge: the last h sessions before the block are dropped), and no sample
dated within ``embargo`` sessions after the block is used (that binds only where a training
set may follow its test block; a forward walk never trains on the future).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from tasks.settings import ModelSettings


@dataclass(frozen=True)
class Fold:
    """One refit: train on [train_start, train_end] (purged), test on [test_start, test_end]."""

    name: str
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def to_dict(self) -> dict:
        return {k: (v.date().isoformat() if isinstance(v, pd.Timestamp) else v)
                for k, v in asdict(self).items()}


def purged_train_mask(dates: pd.Series, sessions: pd.DatetimeIndex, test_start: pd.Timestamp,
                      test_end: pd.Timestamp, horizon: int, embargo: int,
                      allow_after: bool = False) -> np.ndarray:
    """Rows usable for training against one test block (see module docstring)."""
    pos = sessions.get_indexer(pd.DatetimeIndex(dates))
    start = sessions.searchsorted(test_start)
    end = sessions.searchsorted(test_end, side="right") - 1
    before = pos + horizon < start
    after = pos > end + embargo
    return (before | (after & allow_after)) & (pos >= 0)


def _boundaries(cfg: ModelSettings, first: pd.Timestamp, last: pd.Timestamp) -> list[pd.Timestamp]:
    """Refit dates: Jan 1 of ``first_test_year`` plus multiples of ``refit_months``; the first
    block starts once ``min_train_years`` of history exist."""
    earliest = first + pd.DateOffset(years=cfg.min_train_years)
    edge = pd.Timestamp(year=cfg.first_test_year, month=1, day=1)
    step = pd.DateOffset(months=cfg.refit_months)
    while edge + step <= earliest:
        edge += step
    out = [max(edge, earliest)]
    edge += step
    while edge <= last:
        out.append(edge)
        edge += step
    return out + [last + pd.Timedelta(days=1)]


def make_folds(sessions: pd.DatetimeIndex, cfg: ModelSettings, horizon: int,
               first_date: pd.Timestamp | None = None,
               last_date: pd.Timestamp | None = None) -> list[Fold]:
    """Test blocks between refit dates, each trained on purged data before it."""
    first = pd.Timestamp(first_date if first_date is not None else sessions[0])
    last = pd.Timestamp(last_date if last_date is not None else sessions[-1])
    edges = _boundaries(cfg, first, last)
    folds: list[Fold] = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        block = sessions[(sessions >= lo) & (sessions < hi) & (sessions <= last)]
        cut = sessions.searchsorted(block[0]) - horizon - 1 if len(block) else -1
        if cut < 0 or sessions[cut] < first:
            continue
        train_end = sessions[cut]
        train_start = first
        if cfg.window == "rolling":
            train_start = max(first, train_end - pd.DateOffset(years=cfg.rolling_years))
        folds.append(Fold(f"{block[0].date()}_{block[-1].date()}", train_start, train_end,
                          block[0], block[-1]))
    return folds
