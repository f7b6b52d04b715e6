"""The operator's picture: one read-only snapshot of the state files and reports the flows write.

Every reader tolerates a missing file (a fresh install, or a flow that has not run yet) and
says so with ``None`` or an empty list rather than inventing a value. Nothing here writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.alerts import read_alerts
from tasks.escalation.budget import budget_dir, read_budget
from tasks.escalation.record import read_record
from tasks.execution.quarantine import clear_quarantine as clear
from tasks.execution.status import status as execution_status
from tasks.models.registry import RegistryError, load_baseline, read_registry
from tasks.operator import overrides
from tasks.paths import Paths
from tasks.plan.outputs import latest_paths
from tasks.policy import current_policy, policy_dir, policy_settings
from tasks.risk.clamps import exposures
from tasks.settings import AppSettings
from tasks.state import load_book, state_dir

VOL_BADGES = ((1.0, "Normal"), (2.0, "High"))  # |market vol z| below the bound -> badge; else Extreme


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def latest_file(folder: Path, pattern: str) -> Path | None:
    """The last file (by name: names carry ISO dates) matching ``pattern`` in ``folder``."""
    files = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return files[-1] if files else None


def vol_badge(vol_z: float | None) -> str | None:
    if vol_z is None or pd.isna(vol_z):
        return None
    for bound, name in VOL_BADGES:
        if abs(vol_z) < bound:
            return name
    return "Extreme"


def latest_health(paths: Paths) -> dict[str, Any] | None:
    path = latest_file(paths.reports / "health", "daily_health_*.json")
    return read_json(path) if path else None


def empty_book(paths: Paths) -> dict[str, Any] | None:
    """The latest planned session's empty book, from its health JSON: ``{"session", "line",
    "buy_signals", "orders", "step", "by_step", "message"}``, or None when that session's
    book is not empty (or no session has been planned)."""
    from tasks.health.checks import empty_book_line

    health = latest_health(paths) or {}
    found = health.get("empty_book")
    if not found:
        return None
    return {"session": health.get("date"), "line": empty_book_line(found), **found}


def equity_curve(paths: Paths) -> list[dict[str, Any]]:
    """Per-session equity rows (session, end_net_liquidity, day_pnl_pct, drawdown, kill_switch)."""
    path = state_dir(paths) / "equity.parquet"
    if not path.is_file():
        return []
    frame = pd.read_parquet(path)
    return json.loads(frame.to_json(orient="records", double_precision=15))


def latest_session(paths: Paths) -> dict[str, Any] | None:
    path = latest_file(state_dir(paths) / "sessions", "*.json")
    return read_json(path) if path else None


def risk_caps(paths: Paths, settings: AppSettings) -> dict[str, Any]:
    """The limits in force: the hard ceilings as tightened by config and the current policy."""
    risk = policy_settings(settings, current_policy(paths, settings)[0]).risk
    return {"bucket_caps": dict(risk.bucket_caps), "per_name": dict(risk.per_name),
            "top5_max": risk.top5_max, "single_ticker_max": risk.single_ticker_max,
            "single_sector_max": risk.single_sector_max}


def book_status(paths: Paths, settings: AppSettings) -> dict[str, Any]:
    """Net liquidity, positions, exposure by bucket/sector and each name's use of its cap."""
    book, source = load_book(paths, settings)
    exp = exposures(book)
    per_name = risk_caps(paths, settings)["per_name"]
    names = [{"symbol": p.symbol, "bucket": p.bucket, "sector": p.sector, "qty": p.qty,
              "exposure": p.exposure / book.net_liquidity,
              "cap": per_name.get(p.bucket), "used_of_cap": (p.exposure / book.net_liquidity)
              / per_name[p.bucket] if per_name.get(p.bucket) else None}
             for p in book.positions.values()]
    return {"net_liquidity": book.net_liquidity, "source": source.get("source"),
            "exposure": exp, "positions": sorted(names, key=lambda r: -r["exposure"])}


def model_stats(paths: Paths) -> dict[str, Any]:
    """Active and shadow ids, their validation metrics, live (realised) metrics, calibration health."""
    registry = read_registry(paths)
    out: dict[str, Any] = {"active": registry.get("active"), "shadow": registry.get("shadow"),
                           "validation": {}}
    for slot in ("active", "shadow"):
        bid = registry.get(slot)
        if not bid:
            continue
        try:
            metrics = load_baseline(paths, bid).manifest.get("metrics", {}).get("overall", [])
        except (RegistryError, FileNotFoundError) as exc:
            out["validation"][slot] = {"error": str(exc)}
            continue
        out["validation"][slot] = {
            m["horizon"]: {k: m.get(k) for k in ("auc", "brier_skill", "ece", "ic_mean", "n")}
            for m in metrics}
    nightly = latest_file(paths.reports / "nightly", "*.json")
    out["live"] = read_json(nightly) if nightly else None
    health = latest_health(paths)
    out["calibration"] = (health or {}).get("metrics", {}).get("quality")
    return out


def plan_rows(paths: Paths, limit: int = 50) -> list[dict[str, Any]]:
    """Today's trade plan (the latest copy), first ``limit`` rows."""
    path = latest_paths(paths)["plan"]
    if not path.is_file():
        return []
    frame = pd.read_csv(path, nrows=limit)
    return json.loads(frame.to_json(orient="records", double_precision=15))


def learning(paths: Paths, settings: AppSettings) -> dict[str, Any]:
    """Feature toggles, reward mix and the policy version in force."""
    policy, version = current_policy(paths, settings)
    stored = read_json(policy_dir(paths) / f"{version}.json") or {}
    return {"policy_version": version, "created_at": stored.get("created_at"),
            "disabled_features": policy.get("disabled_features", []),
            "reward_coefficients": policy.get("reward_coefficients", {}),
            "blend_weights": policy.get("blend_weights", {}),
            "do_not_trade": policy.get("do_not_trade", [])}


def recent_alerts(paths: Paths, n: int = 20) -> list[dict[str, Any]]:
    return read_alerts(paths)[-n:][::-1]


def force_demo(paths: Paths, settings: AppSettings, *, by: str, reason: str,
               at: str | None = None) -> dict[str, Any]:
    """Force demo mode now (who and why recorded); live refuses to start while it holds."""
    at = at or pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
    return overrides.force_demo(paths, by=by, reason=reason, at=at)


def clear_quarantine(paths: Paths, settings: AppSettings, *, by: str, reason: str,
                     at: str | None = None) -> dict[str, Any]:
    """An operator override of the quarantine (the rules may refuse: ValueError says why)."""
    at = at or pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
    state = clear(paths, settings, at=at, by=by, reason=reason, source="operator")
    return {"cleared": True, "by": by, "reason": reason, "at": at,
            "history": state.get("history", [])[-3:]}


def budget_status(paths: Paths, settings: AppSettings) -> dict[str, Any]:
    """Remote calls used in the latest session with a budget or escalation record, and outcomes."""
    limit = settings.escalation.max_calls_per_session
    last = latest_file(budget_dir(paths), "*.json")
    rec_file = latest_file(paths.reports / "escalations", "*.json")
    session = max(p.stem for p in (last, rec_file) if p) if (last or rec_file) else None
    if session is None:
        return {"session": None, "used": 0, "limit": limit, "calls": []}
    budget = read_budget(paths, session, limit)
    calls = [{"call_type": c.get("call_type"), "status": c.get("status"),
              "backend": c.get("backend"), "policy_before": c.get("policy_before"),
              "policy_after": c.get("policy_after"), "attempts": len(c.get("attempts", []))}
             for c in read_record(paths, session)["calls"]]
    return {"session": session, "used": int(budget["used"]), "limit": int(budget["limit"]),
            "calls": calls}


def risk_status(paths: Paths, settings: AppSettings, today: pd.Timestamp | None = None
                ) -> dict[str, Any]:
    """Mode, book, day P&L, drawdown, vol regime, bucket and per-name use, kill switch, quarantine."""
    today = today if today is not None else pd.Timestamp.now().normalize()
    ex = execution_status(paths, settings, today)
    op = overrides.operator_overrides(paths)
    book = book_status(paths, settings)
    eq = equity_curve(paths)
    health = latest_health(paths) or {}
    vol_z = health.get("metrics", {}).get("regime", {}).get("mkt_vol_z")
    ks = ex["kill_switch"]
    return {
        "mode": {"mode": ex["mode"], "configured": ex["configured_mode"],
                 "forced_demo": bool(op.get("forced_demo")),
                 "forced_by": op.get("by"), "forced_reason": op.get("reason"),
                 "go_live_stage": ex.get("go_live_stage"), "live_gates": ex.get("live_gates", [])},
        "net_liquidity": ex["net_liquidity"], "day_pnl_pct": ex.get("day_pnl_pct"),
        "drawdown": eq[-1].get("drawdown") if eq else None,
        "vol_regime": vol_badge(vol_z), "vol_z": vol_z,
        "exposure": book["exposure"], "caps": risk_caps(paths, settings),
        "positions": book["positions"],
        "kill_switch": {**ks, "state": "tripped" if ks.get("tripped") else "armed"},
        "quarantine": ex["quarantine"],
    }


def snapshot(paths: Paths, settings: AppSettings, today: pd.Timestamp | None = None
             ) -> dict[str, Any]:
    """Everything the dashboard and `hcp status` show."""
    risk = risk_status(paths, settings, today)
    eq = equity_curve(paths)
    return {"session": eq[-1]["session"] if eq else None, "mode": risk["mode"], "risk": risk,
            "budget": budget_status(paths, settings), "learning": learning(paths, settings),
            "models": model_stats(paths), "alerts": recent_alerts(paths), "plan": plan_rows(paths),
            "empty_book": empty_book(paths), "equity": eq}
