"""The equity curve and the execution summary of a replay with intraday sessions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.execution import quarantine
from tasks.execution.episodes import episodes_path
from tasks.execution.outputs import equity_path
from tasks.io import atomic_write
from tasks.paths import Paths


def _png(frame: pd.DataFrame, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = pd.to_datetime(frame["session"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot(x, frame["end_net_liquidity"], color="#2a6")
    kills = frame["kill_switch"].astype(bool)
    top.scatter(x[kills], frame.loc[kills, "end_net_liquidity"], color="#c22", zorder=3,
                label="kill-switch day")
    top.set_ylabel("net liquidity")
    top.set_title("Paper equity (intraday bars are a SIMULATION from daily OHLC)", fontsize=10)
    top.legend(loc="best", fontsize=8)
    bottom.fill_between(x, -frame["drawdown"], 0, color="#c66")
    bottom.set_ylabel("drawdown")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(target, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_equity(state: Paths, folder: Path) -> tuple[Path | None, dict[str, Any]]:
    """equity.csv and equity.png in ``folder`` from the replay's state; the summary figures."""
    path = equity_path(state)
    if not path.is_file():
        return None, {"sessions": 0, "state_root": str(state.data / "state")}
    frame = pd.read_parquet(path)
    csv = atomic_write(folder / "equity.csv", lambda t: frame.to_csv(
        t, index=False, lineterminator="\n", float_format="%.6f"))
    atomic_write(folder / "equity.png", lambda t: _png(frame, t))
    eps = pd.read_parquet(episodes_path(state)) if episodes_path(state).is_file() else None
    q = quarantine.load_state(state)
    first, last = float(frame["start_net_liquidity"].iloc[0]), float(frame["end_net_liquidity"].iloc[-1])
    mean_r = float(eps["r_multiple"].mean()) if eps is not None and len(eps) else math.nan
    return csv, {
        "sessions": int(len(frame)), "start_net_liquidity": first, "end_net_liquidity": last,
        "total_return": last / first - 1, "max_drawdown": float(frame["drawdown"].max()),
        "kill_switch_days": frame.loc[frame["kill_switch"], "session"].astype(str).tolist(),
        "quarantines": [h for h in q["history"] if h["event"] == "activated"],
        "episodes": 0 if eps is None else int(len(eps)),
        "mean_r_multiple": None if math.isnan(mean_r) else mean_r,
        "state_root": str(state.data / "state"), "equity_png": str(folder / "equity.png"),
        "note": "intraday bars are simulated from daily OHLC (seeded Brownian bridge)",
    }
