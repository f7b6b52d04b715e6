"""The features of one session, with volatility regimes learned on history up to that session."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tasks.features.build import build_features, feature_columns
from tasks.features.regimes import VolRegimeCuts, assign_vol_regime, fit_vol_regime_cuts
from tasks.settings import AppSettings


@dataclass
class Snapshot:
    """Features for ``as_of`` plus the regime cut points used to label them."""

    as_of: pd.Timestamp
    features: pd.DataFrame
    cuts: VolRegimeCuts
    missing_share: dict[str, float]


def check_fresh(bars: pd.DataFrame, as_of: pd.Timestamp) -> None:
    """Refuse to build features for a session the store has no bars for (stale data)."""
    last = bars["date"].max() if len(bars) else None
    if last is None or last < as_of:
        shown = last.date() if last is not None else "none"
        raise ValueError(f"stale data: the store ends on {shown} but as-of {as_of.date()} was "
                         "requested; import newer bars first (hcp data import ...)")
    if not (bars["date"] == as_of).any():
        raise ValueError(f"no bar on {as_of.date()}: not a session in the store")


def snapshot(bars: pd.DataFrame, constituents: pd.DataFrame | None, settings: AppSettings,
             as_of: pd.Timestamp | str, cuts: VolRegimeCuts | None = None) -> Snapshot:
    """Features of every symbol with a bar on ``as_of`` (bars after it are ignored)."""
    day = pd.Timestamp(as_of).normalize()
    check_fresh(bars, day)
    history = build_features(bars.loc[bars["date"] <= day], constituents, settings)
    if cuts is None:
        cuts = fit_vol_regime_cuts(history, settings.regimes, end=day)
    today = history.loc[history["date"] == day].reset_index(drop=True)
    if today.empty:
        raise ValueError(f"no symbol has {settings.features.min_history} sessions of history "
                         f"on {day.date()}")
    today["vol_regime"] = assign_vol_regime(today, cuts)
    cols = feature_columns(settings)
    missing = {c: float(today[c].isna().mean()) for c in cols}
    return Snapshot(day, today, cuts, missing)
