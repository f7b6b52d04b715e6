"""Corporate-action adjustment derived from the vendor's adjusted_close / close.

``adj_factor = adjusted_close / close`` is a step function that moves only on split and
dividend days. Open, high and low are scaled by the same factor, so adjusted OHLC stay a
consistent bar and adjusted returns are continuous across splits. Share volume is scaled by
the splits only (a dividend does not change the share count): ``adj_volume`` is expressed in
shares of the symbol's first bar, using each split known on or before the bar (point in time).
Raw prices are kept untouched for order prices.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.data.validate import SPLIT_RATIOS


def implied_split(df: pd.DataFrame, tol: float = 0.01) -> pd.Series:
    """Split ratio per bar: the recorded coefficient, else the one implied by the factor step.

    The factor moves by ``(1 - dividend/prev_close) / k`` on a corporate-action day; where no
    split is recorded but the implied k sits within ``tol`` of a common split ratio, use it.
    """
    f = df["adjusted_close"] / df["close"]
    prev_f = f.groupby(df["symbol"]).shift(1)
    prev_close = df.groupby("symbol")["close"].shift(1)
    div_step = 1 - df["dividend_amount"] / prev_close
    k = (div_step * f / prev_f).to_numpy()
    nearest = SPLIT_RATIOS[np.abs(np.log(np.clip(np.nan_to_num(k, nan=1.0), 1e-9, None))[:, None]
                                  - np.log(SPLIT_RATIOS)[None, :]).argmin(axis=1)]
    snapped = np.where(np.abs(k / nearest - 1) < tol, nearest, 1.0)
    recorded = df["split_coefficient"].to_numpy()
    return pd.Series(np.where(recorded != 1.0, recorded, snapped), index=df.index)


def adjust_bars(df: pd.DataFrame) -> pd.DataFrame:
    """Add adj_factor, adj_open/high/low/close and adj_volume to validated, sorted bars."""
    out = df.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    factor = out["adjusted_close"] / out["close"]
    out["adj_factor"] = factor
    for col in ("open", "high", "low"):
        out[f"adj_{col}"] = out[col] * factor
    out["adj_close"] = out["adjusted_close"]
    # adjusted_close is rounded by vendors; keep the adjusted bar self-consistent
    out["adj_high"] = out[["adj_high", "adj_open", "adj_close"]].max(axis=1)
    out["adj_low"] = out[["adj_low", "adj_open", "adj_close"]].min(axis=1)
    splits = implied_split(out)
    cum = splits.groupby(out["symbol"]).cumprod()
    out["adj_volume"] = out["volume"].astype("float64") / cum
    return out
