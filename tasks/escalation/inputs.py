"""The escalation's inputs from the pipeline's state, and the requests filled from them.

State written by the execution side (``data/state/equity.parquet``, ``sessions/<D>.json``) and
by the nightly flow (``reports/nightly/<D>.json``) is read here; every file may be absent, and
then the fields it would fill are ``None`` and the triggers it feeds are not evaluable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.escalation.prompts import scrub
from tasks.escalation.schemas import RegimeAuditorRequest, RewardEngineerRequest
from tasks.io import file_hash
from tasks.paths import Paths
from tasks.plan.context import TEXT_COLUMNS
from tasks.settings import AppSettings
from tasks.statefiles import is_temp_name

#: features whose rank IC with the realised outcome is reported to REWARD_ENGINEER
PERFORMANCE_FEATURES = {"vol_z": "vol_z", "corr_mkt": "corr_mkt", "liquidity": "log_dollar_volume",
                        "rsi_14": "rsi_14", "macd_hist": "macd_hist", "volume_z": "volume_z",
                        "ret_20": "ret_20"}


def state_dir(paths: Paths) -> Path:
    return paths.data / "state"


def load_equity(paths: Paths) -> pd.DataFrame | None:
    path = state_dir(paths) / "equity.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def load_session_record(paths: Paths, day: str) -> dict[str, Any] | None:
    path = state_dir(paths) / "sessions" / f"{day}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def session_records(paths: Paths, day: str, n: int) -> list[dict[str, Any]]:
    """The last ``n`` execution summaries up to ``day``, oldest first."""
    folder = state_dir(paths) / "sessions"
    files = sorted(p for p in folder.glob("*.json")
                   if p.stem <= day and not is_temp_name(p.name)) if folder.is_dir() else []
    return [json.loads(p.read_text()) for p in files[-n:]]


def latest_nightly(paths: Paths, day: str) -> Path | None:
    """The newest nightly realised record dated on or before ``day``."""
    folder = paths.reports / "nightly"
    files = sorted(p for p in folder.glob("*.json")
                   if p.stem <= day and not is_temp_name(p.name)) if folder.is_dir() else []
    return files[-1] if files else None


def realised_orders(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    detail = json.loads(path.read_text()).get("orders_detail", [])
    return pd.DataFrame(detail) if detail else None


def fingerprint(paths: Paths, day: str) -> dict[str, Any]:
    """Identity of every state file the triggers read (part of the daily run key)."""
    equity = state_dir(paths) / "equity.parquet"
    sess = state_dir(paths) / "sessions" / f"{day}.json"
    nightly = latest_nightly(paths, day)
    return {"equity": file_hash(equity) if equity.is_file() else None,
            "session": file_hash(sess) if sess.is_file() else None,
            "nightly": {"file": nightly.name, "sha256": file_hash(nightly)} if nightly else None}


def _round(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if math.isfinite(v) else None


def _mean(frame: pd.DataFrame | None, col: str) -> float | None:
    if frame is None or col not in frame:
        return None
    values = pd.to_numeric(frame[col], errors="coerce").dropna()
    return _round(values.mean()) if len(values) else None


def headlines(context: pd.DataFrame | None, settings: AppSettings) -> list[str]:
    """Free text of the session's context rows: scrubbed, truncated, at most N."""
    cfg = settings.escalation
    if context is None:
        return []
    out: list[str] = []
    for col in TEXT_COLUMNS:
        if col in context:
            out += [scrub(t, cfg.text_max_chars) for t in context[col].dropna().astype(str)]
    return sorted(dict.fromkeys(t for t in out if t))[: cfg.max_headlines]


def regime_request(*, timestamp: str, today: pd.DataFrame, context: pd.DataFrame | None,
                   exposure: dict[str, Any], net_liquidity: float, daily_pnl: float | None,
                   settings: AppSettings) -> RegimeAuditorRequest:
    disp = today.groupby("sector", observed=True)["ret_20"].std().dropna() \
        if {"sector", "ret_20"} <= set(today) else pd.Series(dtype=float)
    market = {c: _round(today[c].dropna().iloc[0]) if c in today and today[c].notna().any()
              else None for c in ("mkt_vol_z", "mkt_avg_corr")}
    return RegimeAuditorRequest(
        timestamp=timestamp,
        portfolio_state={"net_liquidity": net_liquidity, "daily_pnl": _round(daily_pnl),
                         "volatility_zscore": market["mkt_vol_z"],
                         "correlation_breakdown": market["mkt_avg_corr"]},
        sector_dispersion={str(k): _round(v) for k, v in sorted(disp.items())},
        bucket_usage={k: _round(v) for k, v in exposure.get("by_bucket", {}).items()},
        put_call_ratio=_mean(context, "put_call_ratio"),
        news_sentiment=_mean(context, "news_sentiment"),
        macro_events=headlines(context, settings))


def turnover_stats(records: list[dict[str, Any]]) -> dict[str, float | None]:
    values = [float(r["turnover"]) for r in records if _round(r.get("turnover")) is not None]

    def total(n: int) -> float | None:
        return _round(sum(values[-n:])) if values else None

    return {"daily_turnover": total(1), "weekly_turnover": total(5), "monthly_turnover": total(21)}


def feature_performance(features: pd.DataFrame, labels: pd.DataFrame, horizon: str
                        ) -> dict[str, float]:
    """Rank IC (Spearman) of each reported feature with the realised label of ``horizon``."""
    rows = features.merge(labels[["symbol", "date", f"label_{horizon}"]], on=["symbol", "date"])
    rows = rows.loc[rows[f"label_{horizon}"].notna()]
    out = {}
    for name, col in PERFORMANCE_FEATURES.items():
        if col not in rows or len(rows) < 50:
            continue
        ic = rows[col].rank().corr(rows[f"label_{horizon}"].rank())
        if _round(ic) is not None:
            out[name] = _round(ic)
    return out


def reward_request(*, timestamp: str, session_rec: dict[str, Any] | None,
                   records: list[dict[str, Any]], performance: dict[str, float],
                   trigger_values: dict[str, Any]) -> RewardEngineerRequest:
    pnl = (session_rec or {}).get("pnl_by_bucket") or {}
    return RewardEngineerRequest(
        timestamp=timestamp, pnl_decomposition={k: _round(v) for k, v in pnl.items()
                                                if _round(v) is not None},
        turnover_stats=turnover_stats(records), feature_performance=performance,
        **trigger_values)
