"""Assemble the feature frame: one row per (symbol, session) with a bar, from data <= that session."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from tasks.features import kernels as k
from tasks.features.panel import Panel, build_panel, to_long
from tasks.features.regimes import market_regime
from tasks.settings import AppSettings

MARKET_COLUMNS = ["mkt_ret_20", "mkt_breadth_50", "mkt_vol_20", "mkt_vol_z", "mkt_avg_corr",
                  "mkt_atr_pct"]
REFERENCE_COLUMNS = ["close_raw", "n_history", "sector", "market_regime", "vol_z", "corr_mkt"]


class FeatureFrame(pa.DataFrameModel):
    """Model inputs keyed by (symbol, date); reference columns are not model inputs."""

    symbol: Series[str]
    date: Series[pd.Timestamp]
    close_raw: Series[float] = pa.Field(gt=0)
    n_history: Series[int] = pa.Field(ge=1)

    @pa.dataframe_check
    def finite_or_nan(cls, df: pd.DataFrame) -> bool:
        """No infinities in any numeric column."""
        num = df.select_dtypes("number").to_numpy(dtype="float64", na_value=np.nan)
        return not np.isinf(num).any()

    @pa.dataframe_check
    def unique_key(cls, df: pd.DataFrame) -> bool:
        """One row per (symbol, date)."""
        return not df.duplicated(["symbol", "date"]).any()

    class Config:
        strict = False


# cross-sectional anomalies with a documented daily-equity record: 12-1 momentum, distance to
# the 52-week high, market-relative 60-session momentum, and session ranks of them and of
# liquidity (short-term reversal and low volatility are rank_ret_5 and rank_vol)
ANOMALY_COLUMNS = ["mom_12_1", "dist_high_252", "rel_ret_60", "rank_mom_12_1",
                   "rank_dist_high_252", "rank_liquidity"]


def feature_columns(settings: AppSettings) -> list[str]:
    """Names of the model's input features, in a fixed order."""
    f = settings.features
    cols = [f"ret_{w}" for w in f.return_windows]
    cols += [f"vol_{f.vol_window}", "atr_pct", f"rsi_{f.rsi_window}", "macd", "macd_signal",
             "macd_hist"]
    cols += [f"dist_ma_{w}" for w in f.ma_windows]
    cols += ["volume_z", "range_pct", "log_dollar_volume"]
    cols += ["rank_ret_5", "rank_ret_20", "rank_vol", "sector_rel_ret_20"]
    cols += ANOMALY_COLUMNS
    return cols + MARKET_COLUMNS


def feature_schema_hash(settings: AppSettings) -> str:
    """Hash of the feature names and every setting they depend on (a model's input contract)."""
    spec = {"columns": feature_columns(settings), "features": settings.features.model_dump()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _symbol_features(p: Panel, settings: AppSettings) -> dict[str, pd.DataFrame]:
    f = settings.features
    out: dict[str, pd.DataFrame] = {}
    for w in f.return_windows:
        out[f"ret_{w}"] = k.log_returns(p.close, w)
    vol = k.realised_vol(p.close, f.vol_window)
    out[f"vol_{f.vol_window}"] = vol
    out["atr_pct"] = k.atr(p.high, p.low, p.close, f.atr_window) / p.close
    out[f"rsi_{f.rsi_window}"] = k.rsi(p.close, f.rsi_window)
    out.update(k.macd(p.close, f.macd_fast, f.macd_slow, f.macd_signal))
    for w in f.ma_windows:
        out[f"dist_ma_{w}"] = k.ma_distance(p.close, w)
    out["volume_z"] = k.volume_zscore(p.volume, f.volume_window)
    out["range_pct"] = (p.high - p.low) / p.close
    out["log_dollar_volume"] = k.dollar_volume(p.raw_close, p.raw_volume, f.volume_window)
    ret5, ret20 = k.log_returns(p.close, 5), k.log_returns(p.close, 20)
    out["rank_ret_5"], out["rank_ret_20"] = k.cs_rank(ret5), k.cs_rank(ret20)
    out["rank_vol"] = k.cs_rank(vol)
    out["sector_rel_ret_20"] = k.sector_relative(ret20, p.sectors)
    # 12-1 momentum: the return from 252 to 21 sessions ago (the last month is skipped)
    out["mom_12_1"] = k.log_returns(p.close, 231).shift(21)
    high = p.high.rolling(252, min_periods=126).max()
    out["dist_high_252"] = np.log(p.close / high)
    ret60 = k.log_returns(p.close, 60)
    out["rel_ret_60"] = ret60.sub(ret60.mean(axis=1), axis=0)   # minus the session's average name
    out["rank_mom_12_1"] = k.cs_rank(out["mom_12_1"])
    out["rank_dist_high_252"] = k.cs_rank(out["dist_high_252"])
    out["rank_liquidity"] = k.cs_rank(out["log_dollar_volume"])
    return out


def _market_features(p: Panel, atr_pct: pd.DataFrame, settings: AppSettings) -> dict:
    f = settings.features
    idx_ret = k.index_returns(p.close)
    level = np.exp(idx_ret.fillna(0.0).cumsum())
    mkt_vol = idx_ret.rolling(f.vol_window, min_periods=f.vol_window // 2).std() * k.ANNUAL
    mkt_atr = atr_pct.mean(axis=1, skipna=True)
    return {
        "mkt_ret_20": np.log(level / level.shift(20)),
        "mkt_breadth_50": k.breadth(p.close, 50),
        "mkt_vol_20": mkt_vol,
        "mkt_vol_z": k.zscore_series(mkt_vol, f.zscore_window),
        "mkt_avg_corr": k.average_correlation(p.close, f.corr_window),
        "mkt_atr_pct": mkt_atr,
        "market_regime": market_regime(level, mkt_atr, settings.regimes),
    }


def build_features(bars: pd.DataFrame, constituents: pd.DataFrame | None,
                   settings: AppSettings, since: pd.Timestamp | str | None = None
                   ) -> pd.DataFrame:
    """Features for every (symbol, session) with a bar and enough history (rows >= ``since``)."""
    p = build_panel(bars, constituents, settings.data.calendar)
    wide = _symbol_features(p, settings)
    market = _market_features(p, wide["atr_pct"], settings)
    n_hist = np.cumsum(p.present, axis=0)
    mask = p.present & (n_hist >= settings.features.min_history)
    if since is not None:
        mask &= (p.dates >= pd.Timestamp(since))[:, None]
    vol = wide[f"vol_{settings.features.vol_window}"]
    extra = {"close_raw": p.raw_close, "n_history": n_hist,
             "vol_z": k.zscore_series(vol, settings.features.zscore_window),
             "corr_mkt": k.market_correlation(p.close, settings.features.corr_window),
             "sector": np.broadcast_to(p.sectors.to_numpy(dtype=object), p.present.shape)}
    frames = {**extra, **wide, **{c: v.to_numpy() for c, v in market.items()}}
    out = to_long(p, frames, mask)
    out["n_history"] = out["n_history"].astype("int64")
    out["sector"] = out["sector"].astype("string")
    out["market_regime"] = out["market_regime"].astype("string")
    return FeatureFrame.validate(out)


def features_as_of(bars: pd.DataFrame, constituents: pd.DataFrame | None,
                   settings: AppSettings, as_of: pd.Timestamp | str) -> pd.DataFrame:
    """One row per symbol with a bar on ``as_of``, computed from bars <= as_of only."""
    day = pd.Timestamp(as_of).normalize()
    past = bars.loc[bars["date"] <= day]
    if past.empty or past["date"].max() < day:
        last = past["date"].max() if len(past) else None
        raise ValueError(f"no bars on {day.date()} (latest stored bar: "
                         f"{last.date() if last is not None else 'none'}); import newer data")
    return build_features(past, constituents, settings, since=day).reset_index(drop=True)
