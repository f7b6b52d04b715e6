"""The pre-market daily flow. At this stage: load bars -> validate -> features -> outputs.

Later stages (scoring, calibration, gates, fusion, sizing, clamps) slot in between features
and outputs. Only tasks that touch the disk retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.data.calendar import previous_session
from tasks.data.schemas import StoreBarFrame
from tasks.data.store import load_bars, load_constituents, read_manifest
from tasks.features.snapshot import Snapshot, snapshot
from tasks.io import atomic_write_json, atomic_write_parquet, frame_hash
from tasks.paths import Paths
from tasks.settings import AppSettings, load_settings


@dataclass
class DailyResult:
    """What one daily run wrote."""

    as_of: str
    features_path: Path
    summary_path: Path
    n_symbols: int


def resolve_as_of(as_of: str | None, store: Path, calendar: str,
                  today: pd.Timestamp | None = None) -> pd.Timestamp:
    """'latest' (default) = the store's last session; 'previous-session' = the last session
    before today (scheduled pre-market runs); otherwise an ISO date."""
    if as_of in (None, "", "latest"):
        manifest = read_manifest(store)
        if manifest is None:
            raise ValueError(f"no bar store at {store}: run `hcp data import` first")
        return pd.Timestamp(manifest["last_date"])
    if as_of == "previous-session":
        now = today if today is not None else pd.Timestamp.now().normalize()
        return previous_session(calendar, now - pd.Timedelta(days=1))
    try:
        return pd.Timestamp(as_of).normalize()
    except ValueError as exc:
        raise ValueError(f"as-of {as_of!r} is not a date (YYYY-MM-DD, latest, "
                         "previous-session)") from exc


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_bars_task(store: Path, as_of: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read stored bars up to ``as_of`` and the constituents."""
    return load_bars(store, end=as_of), load_constituents(store)


@task(cache_policy=NO_CACHE)
def validate_task(bars: pd.DataFrame) -> pd.DataFrame:
    """Re-check the store contract at the flow boundary (schema, uniqueness, bar sanity)."""
    return StoreBarFrame.validate(bars)


@task(cache_policy=NO_CACHE)
def features_task(bars: pd.DataFrame, constituents: pd.DataFrame, settings: AppSettings,
                  as_of: pd.Timestamp) -> Snapshot:
    """Point-in-time features and volatility regimes for ``as_of``."""
    return snapshot(bars, constituents, settings, as_of)


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def write_outputs_task(snap: Snapshot, paths: Paths, store_hash: str) -> tuple[Path, Path]:
    """Write the features parquet and the run summary JSON (atomic, deterministic)."""
    day = snap.as_of.date().isoformat()
    feat_path = atomic_write_parquet(paths.features / f"features_{day}.parquet", snap.features)
    f = snap.features
    summary = {
        "as_of": day,
        "store_content_hash": store_hash,
        "features_hash": frame_hash(f),
        "n_symbols": int(len(f)),
        "vol_regime_cuts": snap.cuts.to_dict(),
        "vol_regime_distribution": {str(k): int(v) for k, v in
                                    f["vol_regime"].value_counts().sort_index().items()},
        "market": {c: _scalar(f[c]) for c in ["market_regime", "mkt_vol_z", "mkt_avg_corr",
                                               "mkt_breadth_50", "mkt_ret_20"]},
        "missing_share": snap.missing_share,
        "features_path": str(feat_path),
    }
    summary_path = atomic_write_json(paths.runs / f"daily_{day}.json", summary)
    return feat_path, summary_path


def _scalar(col: pd.Series):
    value = col.dropna().iloc[0] if col.notna().any() else None
    return value.item() if hasattr(value, "item") else value


@flow(name="daily", log_prints=False)
def daily(as_of: str | None = None) -> DailyResult:
    """Pre-market run for session ``as_of`` ('latest', 'previous-session' or YYYY-MM-DD)."""
    logger = get_run_logger()
    settings, paths = load_settings(), Paths.from_env()
    day = resolve_as_of(as_of, paths.store, settings.data.calendar)
    logger.info("daily run for %s (home %s)", day.date(), paths.home)
    bars, constituents = load_bars_task(paths.store, day)
    bars = validate_task(bars)
    snap = features_task(bars, constituents, settings, day)
    store_hash = read_manifest(paths.store)["content_hash"]
    feat_path, summary_path = write_outputs_task(snap, paths, store_hash)
    logger.info("features for %d symbols -> %s", len(snap.features), feat_path)
    return DailyResult(day.date().isoformat(), feat_path, summary_path, len(snap.features))
