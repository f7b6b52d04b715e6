"""Feature kernels over wide frames (sessions x symbols). Every kernel looks backward only.

All price features are ratios (scale-invariant), so the vendor's backward-propagated
adjustment factor cannot leak later corporate actions into them: multiplying a symbol's
whole history by a constant leaves every feature unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ANNUAL = np.sqrt(252.0)


def log_returns(close: pd.DataFrame, window: int) -> pd.DataFrame:
    """log(close_t / close_{t-window}); NaN when either bar is missing."""
    logc = np.log(close)
    return logc - logc.shift(window)


def realised_vol(close: pd.DataFrame, window: int) -> pd.DataFrame:
    """Annualised std of daily log returns over the last ``window`` sessions."""
    r1 = log_returns(close, 1)
    return r1.rolling(window, min_periods=max(2, int(window * 0.75))).std() * ANNUAL


def true_range(high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame) -> pd.DataFrame:
    """max(high, prev close) - min(low, prev close); high - low on a symbol's first bar.

    NaN where the session has no bar (a missing session must not count as a zero range).
    """
    prev = close.shift(1)
    top = np.fmax(high, prev)
    bottom = np.fmin(low, prev)
    return (top - bottom).where(high.notna() & low.notna())


def atr(high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame, window: int) -> pd.DataFrame:
    """Average true range: simple mean of the last ``window`` true ranges (finite memory)."""
    return true_range(high, low, close).rolling(window, min_periods=window).mean()


def rsi(close: pd.DataFrame, window: int) -> pd.DataFrame:
    """Wilder's RSI in [0, 100] from adjusted closes."""
    diff = close.diff()
    gain = diff.clip(lower=0).ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    loss = (-diff.clip(upper=0)).ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    total = gain + loss
    return (100 * gain / total.where(total > 0)).where(total > 0, 50.0).where(gain.notna())


def macd(close: pd.DataFrame, fast: int, slow: int, signal: int) -> dict[str, pd.DataFrame]:
    """MACD line, signal and histogram, each divided by the close (scale-free)."""
    ema_f = close.ewm(span=fast, adjust=False, min_periods=fast).mean()
    ema_s = close.ewm(span=slow, adjust=False, min_periods=slow).mean()
    line = (ema_f - ema_s) / close
    sig = line.ewm(span=signal, adjust=False, min_periods=signal).mean()
    return {"macd": line, "macd_signal": sig, "macd_hist": line - sig}


def ma_distance(close: pd.DataFrame, window: int) -> pd.DataFrame:
    """close / simple moving average - 1."""
    return close / close.rolling(window, min_periods=window).mean() - 1


def volume_zscore(volume: pd.DataFrame, window: int) -> pd.DataFrame:
    """z-score of log(1 + volume) against its last ``window`` sessions (today included)."""
    lv = np.log1p(volume)
    roll = lv.rolling(window, min_periods=max(3, window // 2))
    std = roll.std()
    return (lv - roll.mean()) / std.where(std > 0)


def dollar_volume(raw_close: pd.DataFrame, raw_volume: pd.DataFrame, window: int) -> pd.DataFrame:
    """log of the mean traded value (raw price x raw shares) over ``window`` sessions."""
    value = raw_close * raw_volume
    return np.log(value.rolling(window, min_periods=max(3, window // 2)).mean().where(value > 0))


def cs_rank(frame: pd.DataFrame) -> pd.DataFrame:
    """Cross-sectional percentile rank per session (0..1], NaN stays NaN."""
    return frame.rank(axis=1, pct=True)


def sector_relative(frame: pd.DataFrame, sectors: pd.Series) -> pd.DataFrame:
    """Value minus the same-day mean of the symbol's sector."""
    means = frame.T.groupby(sectors.reindex(frame.columns).to_numpy()).transform("mean").T
    return frame - means


def index_returns(close: pd.DataFrame) -> pd.Series:
    """Equal-weighted index: mean daily log return of the symbols trading that day."""
    return log_returns(close, 1).mean(axis=1, skipna=True)


def breadth(close: pd.DataFrame, window: int) -> pd.Series:
    """Share of symbols closing above their ``window``-session moving average."""
    ma = close.rolling(window, min_periods=window).mean()
    valid = ma.notna() & close.notna()
    above = (close > ma) & valid
    return above.sum(axis=1) / valid.sum(axis=1).where(valid.sum(axis=1) > 0)


def zscore_series(series: pd.Series, window: int) -> pd.Series:
    """(x - trailing mean) / trailing std over ``window`` sessions (today included)."""
    roll = series.rolling(window, min_periods=max(20, window // 4))
    std = roll.std()
    return (series - roll.mean()) / std.where(std > 0)


def average_correlation(close: pd.DataFrame, window: int, min_symbols: int = 5) -> pd.Series:
    """Average pairwise correlation of daily log returns over the last ``window`` sessions.

    Uses sum_ij corr_ij = mean_t (sum_i z_it)^2 with z standardised in the window, so each
    session costs O(window x symbols) instead of O(symbols^2). Symbols need a full window.
    """
    r = log_returns(close, 1).to_numpy()
    out = np.full(len(r), np.nan)
    for t in range(window, len(r) + 1):
        block = r[t - window:t]
        block = block[:, ~np.isnan(block).any(axis=0)]
        std = block.std(axis=0)
        block = block[:, std > 0]
        n = block.shape[1]
        if n < min_symbols:
            continue
        z = (block - block.mean(axis=0)) / block.std(axis=0)
        total = (z.sum(axis=1) ** 2).mean()
        out[t - 1] = (total / n - 1) / (n - 1)
    return pd.Series(out, index=close.index)


def market_correlation(close: pd.DataFrame, window: int) -> pd.DataFrame:
    """Each symbol's correlation of daily log returns with the equal-weight market return over
    the last ``window`` sessions (needs 3/4 of the window)."""
    r = log_returns(close, 1)
    market = r.mean(axis=1)
    return r.rolling(window, min_periods=max(10, int(window * 0.75))).corr(market)
