"""Episodes (entry to full exit) and their R-multiples, derived from the trade log.

An episode starts with the fill that opens a position and ends with the exit fill that brings
it back to zero; adds and partial exits in between belong to it. Its P&L is the sum of its exit
records' P&L (each net of its own fee and of the entry fees of the quantity it closes), and

    R = P&L / (entry x stop fraction x size)

with entry = the average entry price, stop fraction = |entry - initial stop| / entry of the
opening fill, and size = the total quantity entered. ``data/state/episodes.parquet`` holds every
closed episode with the columns the daily plan reads (``pnl``, ``exit_date``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from tasks.io import atomic_write_parquet
from tasks.paths import Paths, state_dir

EPISODE_COLUMNS = ["episode_id", "symbol", "side", "bucket", "sector", "mode", "entry_session",
                   "entry_ts", "exit_session", "exit_date", "exit_ts", "size", "entry_price",
                   "exit_price", "stop_frac", "initial_stop", "pnl", "r_multiple", "exit_reason",
                   "policy_version", "model_id"]


class EpisodeFrame(pa.DataFrameModel):
    """data/state/episodes.parquet: closed episodes (the columns the plan and reports use)."""

    episode_id: Series[str] = pa.Field(unique=True)
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=["long", "short"])
    exit_date: Series[str]
    size: Series[float] = pa.Field(gt=0)
    entry_price: Series[float] = pa.Field(gt=0)
    exit_price: Series[float] = pa.Field(gt=0)
    pnl: Series[float]
    r_multiple: Series[float] = pa.Field(nullable=True)

    class Config:
        strict = False
        coerce = False


def r_multiple(pnl: float, entry: float, stop_frac: float | None, size: float) -> float:
    """R = P&L / (entry x stop fraction x size); NaN when the risk is unknown or zero."""
    if stop_frac is None or not entry or not size or not stop_frac:
        return math.nan
    return pnl / (entry * stop_frac * size)


def _open(rec: dict[str, Any]) -> dict[str, Any]:
    return {"episode_id": rec["episode_id"], "symbol": rec["symbol"],
            "side": "long" if rec["direction"] == "BUY" else "short",
            "bucket": rec.get("bucket"), "sector": rec.get("sector"), "mode": rec.get("mode"),
            "entry_session": rec["session"], "entry_ts": rec["timestamp"],
            "stop_frac": rec.get("stop_frac"), "initial_stop": rec.get("stop"),
            "policy_version": rec.get("policy_version"), "model_id": rec.get("model_id"),
            "entered": 0, "entry_notional": 0.0, "exited": 0, "exit_notional": 0.0, "pnl": 0.0,
            "closed": False}


def episodes_from_records(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Closed episodes from trade-log records (events ``fill`` and ``exit``)."""
    eps: dict[str, dict[str, Any]] = {}
    for rec in records:
        eid = rec.get("episode_id")
        if not eid or rec.get("event") not in ("fill", "exit") or not rec.get("qty"):
            continue
        if rec["event"] == "fill":
            ep = eps.setdefault(eid, _open(rec))
            ep["entered"] += rec["qty"]
            ep["entry_notional"] += rec["qty"] * rec["entry_price"]
            continue
        ep = eps.get(eid)
        if ep is None:
            continue  # an exit of a position opened outside the log
        ep["exited"] += rec["qty"]
        ep["exit_notional"] += rec["qty"] * rec["exit_price"]
        ep["pnl"] += rec["pnl"]
        if rec.get("position_left") == 0:
            ep.update(closed=True, exit_session=rec["session"], exit_date=rec["session"],
                      exit_ts=rec["timestamp"], exit_reason=rec.get("purpose"))
    rows = [_row(ep) for ep in eps.values() if ep["closed"]]
    return pd.DataFrame(rows, columns=EPISODE_COLUMNS)


def _row(ep: dict[str, Any]) -> dict[str, Any]:
    entry = ep["entry_notional"] / ep["entered"]
    out = {k: ep.get(k) for k in EPISODE_COLUMNS}
    out.update(size=ep["entered"], entry_price=entry,
               exit_price=ep["exit_notional"] / ep["exited"],
               r_multiple=r_multiple(ep["pnl"], entry, ep["stop_frac"], ep["entered"]))
    return out


def episodes_path(paths: Paths):
    return state_dir(paths) / "episodes.parquet"


def write_episodes(paths: Paths, records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rewrite episodes.parquet from the whole trade log (atomic; same log, same bytes)."""
    frame = episodes_from_records(records)
    frame = frame.sort_values(["exit_ts", "episode_id"], kind="stable").reset_index(drop=True)
    for col in ("episode_id", "symbol", "side", "bucket", "sector", "mode", "entry_session",
                "entry_ts", "exit_session", "exit_date", "exit_ts", "exit_reason",
                "policy_version", "model_id"):
        frame[col] = frame[col].astype("string")
    for col in ("size", "entry_price", "exit_price", "stop_frac", "initial_stop", "pnl",
                "r_multiple"):
        frame[col] = frame[col].astype("float64")
    atomic_write_parquet(episodes_path(paths), EpisodeFrame.validate(frame))
    return frame
