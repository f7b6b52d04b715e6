"""Regimes: per-symbol volatility regime (cut points learned on a training span) and the
market regime trending / ranging / volatile (moving-average spread and ATR expansion)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from tasks.settings import RegimeSettings

VOL_REGIMES = ("low_vol", "med_vol", "high_vol")
MARKET_REGIMES = ("trending", "ranging", "volatile")


@dataclass(frozen=True)
class VolRegimeCuts:
    """Cut points of the volatility regimes, learned on ``[fit_start, fit_end]`` only."""

    feature: str
    low_med: float
    med_high: float
    fit_start: str
    fit_end: str
    n_obs: int

    def to_dict(self) -> dict:
        return asdict(self)


def fit_vol_regime_cuts(features: pd.DataFrame, cfg: RegimeSettings,
                        end: pd.Timestamp | str, start: pd.Timestamp | str | None = None
                        ) -> VolRegimeCuts:
    """Quantile cut points of ``cfg.vol_feature`` over rows dated in [start, end]."""
    dates = features["date"]
    mask = dates <= pd.Timestamp(end)
    if start is not None:
        mask &= dates >= pd.Timestamp(start)
    values = features.loc[mask, cfg.vol_feature].dropna()
    if len(values) < 30:
        raise ValueError(f"only {len(values)} non-missing {cfg.vol_feature} values up to "
                         f"{pd.Timestamp(end).date()}: too few to learn volatility regimes")
    lo, hi = np.quantile(values.to_numpy(), cfg.vol_quantiles)
    first = features.loc[mask, "date"].min()
    return VolRegimeCuts(cfg.vol_feature, float(lo), float(hi), str(first.date()),
                         str(pd.Timestamp(end).date()), int(len(values)))


def assign_vol_regime(features: pd.DataFrame, cuts: VolRegimeCuts) -> pd.Series:
    """low_vol / med_vol / high_vol per row (NaN where the volatility is unknown)."""
    vol = features[cuts.feature].to_numpy()
    codes = np.where(vol <= cuts.low_med, 0, np.where(vol <= cuts.med_high, 1, 2))
    labels = np.array(VOL_REGIMES, dtype=object)[codes]
    labels[np.isnan(vol)] = None
    return pd.Series(pd.Categorical(labels, categories=VOL_REGIMES), index=features.index,
                     name="vol_regime")


def market_regime(index_level: pd.Series, index_atr: pd.Series, cfg: RegimeSettings) -> pd.Series:
    """trending if |MA_fast / MA_slow - 1| > spread; volatile if ATR > mult x its average.

    Volatile wins over trending; anything else is ranging. NaN until the windows are full.
    """
    fast = index_level.rolling(cfg.trend_fast, min_periods=cfg.trend_fast).mean()
    slow = index_level.rolling(cfg.trend_slow, min_periods=cfg.trend_slow).mean()
    avg_atr = index_atr.rolling(cfg.atr_average_window,
                                min_periods=cfg.atr_average_window // 2).mean()
    spread = (fast / slow - 1).abs()
    volatile = index_atr > cfg.volatile_atr_mult * avg_atr
    trending = spread > cfg.trend_spread
    label = np.where(volatile, "volatile", np.where(trending, "trending", "ranging"))
    known = spread.notna() & avg_atr.notna() & index_atr.notna()
    return pd.Series(np.where(known, label, None), index=index_level.index, name="market_regime")
