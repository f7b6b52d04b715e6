"""The operator's picture: one read-only snapshot of the state files and reports the flows write.

The picture is of ONE session (:func:`session_view`): the book's session (``as_of_session`` of
``data/state/portfolio.json``), or, before any session was executed, the latest planned one.
The plan, health JSON, market regime, vol z, blend weights used and empty-book state are those
of exactly that date; a plan dated later (planned, not executed yet) is named as the next plan
and never mixed in.

Every reader tolerates a missing file (a fresh install, or a flow that has not run yet) and
says so with ``None`` or an empty list rather than inventing a value. Nothing here writes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.alerts import TEXTS, read_alerts, render
from tasks.escalation.budget import budget_dir, read_budget
from tasks.escalation.record import read_record
from tasks.execution import overrides
from tasks.execution.quarantine import clear_quarantine as clear
from tasks.execution.status import status as execution_status
from tasks.models.registry import RegistryError, load_baseline, read_registry
from tasks.paths import Paths
from tasks.plan.outputs import output_paths
from tasks.policy import current_policy, policy_dir, policy_settings
from tasks.risk.clamps import exposures
from tasks.settings import AppSettings
from tasks.state import load_book, state_dir
from tasks.statefiles import is_temp_name

VOL_BADGES = ((1.0, "Normal"), (2.0, "High"))  # market vol z below the bound -> badge; else Extreme
ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
BENCHMARK_LOOKBACK_DAYS = 20   # calendar days before the first session to find the base close


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def latest_file(folder: Path, pattern: str) -> Path | None:
    """The last file (by name: names carry ISO dates) matching ``pattern`` in ``folder``."""
    files = sorted(f for f in folder.glob(pattern) if not is_temp_name(f.name)) \
        if folder.is_dir() else []
    return files[-1] if files else None


def file_upto(folder: Path, pattern: str, session: str | None) -> Path | None:
    """The last ``<ISO date>.json``-style file in ``folder`` dated on or before ``session``
    (any date when ``session`` is None): a later file never answers for an earlier session."""
    files = sorted(f for f in folder.glob(pattern) if not is_temp_name(f.name)) \
        if folder.is_dir() else []
    if session is not None:
        files = [f for f in files if f.stem[-10:] <= session]
    return files[-1] if files else None


def vol_badge(vol_z: float | None) -> str | None:
    """Normal / High / Extreme from the market vol z; a market calmer than usual (negative z)
    is Normal, not High."""
    if vol_z is None or pd.isna(vol_z):
        return None
    for bound, name in VOL_BADGES:
        if vol_z < bound:
            return name
    return "Extreme"


# --- which session the picture shows ---------------------------------------------------------

def planned_sessions(paths: Paths) -> list[str]:
    """Sessions with a health JSON or a dated trade plan, oldest first."""
    days: set[str] = set()
    health = paths.reports / "health"
    if health.is_dir():
        days |= {f.stem.removeprefix("daily_health_") for f in health.glob("daily_health_*.json")}
    plans = paths.val / "plans"
    if plans.is_dir():
        days |= {f.parent.name for f in plans.glob("*/trade_plan.csv")}
    return sorted(d for d in days if ISO_DAY.match(d))


def book_session(paths: Paths) -> str | None:
    """The session the book stands at: the portfolio's ``as_of_session``, else the last
    executed session of the equity file (None before any session was executed)."""
    raw = read_json(state_dir(paths) / "portfolio.json") or {}
    if raw.get("as_of_session"):
        return str(raw["as_of_session"])
    eq = equity_curve(paths)
    return str(eq[-1]["session"]) if eq else None


def session_view(paths: Paths) -> dict[str, Any]:
    """The one session the operator's picture shows, and the plans dated after it.

    ``session``: the book's session, else (no book yet) the latest planned session;
    ``source``: ``"book"`` | ``"plan"`` | None; ``next_plan``: the first plan dated after the
    session (planned, not executed yet), ``latest_plan``: the last one, ``later_plans``: how many."""
    planned = planned_sessions(paths)
    book = book_session(paths)
    day = book or (planned[-1] if planned else None)
    later = [d for d in planned if day is not None and d > day]
    return {"session": day, "source": "book" if book else ("plan" if day else None),
            "planned": day in planned, "next_plan": later[0] if later else None,
            "latest_plan": later[-1] if later else None, "later_plans": len(later)}


def _session(paths: Paths, session: str | None) -> str | None:
    return session if session is not None else session_view(paths)["session"]


def session_health(paths: Paths, session: str | None = None) -> dict[str, Any] | None:
    """The health JSON of ``session`` (default: the picture's session), never another date's."""
    day = _session(paths, session)
    return read_json(output_paths(paths, day)["health"]) if day else None


def market_regime(health: dict[str, Any] | None) -> dict[str, Any]:
    """The market regime a health JSON recorded: name, vol z and its badge."""
    reg = ((health or {}).get("metrics") or {}).get("regime") or {}
    vol_z = reg.get("mkt_vol_z")
    vol_z = float(vol_z) if isinstance(vol_z, int | float) and math.isfinite(vol_z) else None
    return {"market_regime": reg.get("market_regime"), "vol_z": vol_z,
            "vol_regime": vol_badge(vol_z)}


def empty_book(paths: Paths, session: str | None = None) -> dict[str, Any] | None:
    """The picture's session's empty book, from its health JSON: ``{"session", "line",
    "buy_signals", "orders", "step", "by_step", "message"}``, or None when that session's
    book is not empty (or no session has been planned)."""
    from tasks.health.checks import empty_book_line

    health = session_health(paths, session) or {}
    found = health.get("empty_book")
    if not found:
        return None
    return {"session": health.get("date"), "line": empty_book_line(found), **found}


# --- blend weights the fusion applied --------------------------------------------------------

def _weights(w: dict[str, Any] | None) -> dict[str, float]:
    return {k: float((w or {}).get(k, 0.0)) for k in ("short", "mid", "rl")}


def weights_text(w: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in w.items())


def weights_used(health: dict[str, Any] | None) -> dict[str, Any] | None:
    """The blend weights the session's fusion applied, from its health JSON (``sizing``).

    The fusion blends ``short``/``mid``/``rl`` with the policy's weights (a horizon without
    measured skill set to 0) where a name has an RL size hint, and the predictors only (RL
    dropped, the rest renormalised) where it has none. ``mode``: ``with_rl`` (every scored
    name had a hint), ``predictors_only`` (none had) or ``mixed``; ``applied``: the weights
    per case that occurred; ``text``: one line for a person. None when not recorded."""
    health = health or {}
    sizing = health.get("sizing") or {}
    used = sizing.get("weights_used")
    if not used:
        return None
    scored = ((health.get("metrics") or {}).get("coverage") or {}).get("scored")
    missing = sizing.get("rl_missing")
    with_rl, pred = _weights(used.get("with_rl")), _weights(used.get("predictors_only"))
    if sum(with_rl.values()) <= 0:  # no weight left on the predictors: the RL hint alone
        with_rl = {"short": 0.0, "mid": 0.0, "rl": 1.0}
    zeroed = dict((sizing.get("horizon_weights") or {}).get("zeroed") or {})
    if missing is None or scored is None:
        mode, applied = "unknown", {"with_rl": with_rl, "predictors_only": pred}
        text = (f"with RL hint {weights_text(with_rl)}; without {weights_text(pred)} "
                "(which applied is not recorded)")
    elif int(missing) == 0:
        mode, applied = "with_rl", {"with_rl": with_rl}
        text = f"{weights_text(with_rl)} (RL size hint for all {int(scored)} names)"
    elif int(missing) >= int(scored):
        mode, applied = "predictors_only", {"predictors_only": pred}
        text = (f"{weights_text(pred)} — predictors only (no RL size hint for any of "
                f"{int(scored)} names)" if sum(pred.values()) > 0 else
                "none — no horizon blended and no RL size hint: every name HOLD")
    else:
        mode, applied = "mixed", {"with_rl": with_rl, "predictors_only": pred}
        text = (f"{weights_text(with_rl)} for {int(scored) - int(missing)} names with an RL "
                f"size hint; {weights_text(pred)} (predictors only) for {int(missing)} without")
    if zeroed:
        text += "; weight 0 for lack of skill: " + ", ".join(sorted(zeroed))
    hint = health.get("size_hint") or {}
    if hint.get("case"):
        text += f"; size hint {hint['case'].replace('_', ' ')}: {hint.get('reason')}"
    return {"session": health.get("date"), "mode": mode, "applied": applied,
            "rl_missing": missing, "scored": scored, "zeroed": zeroed, "text": text,
            "size_hint": hint or None}


# --- equity and its benchmark ----------------------------------------------------------------

def equity_curve(paths: Paths, session: str | None = None) -> list[dict[str, Any]]:
    """Per-session equity rows (session, end_net_liquidity, day_pnl_pct, drawdown, kill_switch),
    up to ``session`` when given."""
    path = state_dir(paths) / "equity.parquet"
    if not path.is_file():
        return []
    frame = pd.read_parquet(path)
    rows = json.loads(frame.to_json(orient="records", double_precision=15))
    return [r for r in rows if session is None or str(r["session"]) <= session]


def plan_universe(paths: Paths, session: str | None) -> tuple[list[str], str | None]:
    """The symbols the session's plan chose from (scored in its signals file), else the plan's
    tickers, and where they came from."""
    if not session:
        return [], None
    where = output_paths(paths, session)
    if where["signals"].is_file():
        syms = pd.read_parquet(where["signals"], columns=["symbol"])["symbol"].astype(str)
        return sorted(set(syms)), f"the {syms.nunique()} symbols scored for the plan of {session}"
    if where["plan"].is_file():
        syms = pd.read_csv(where["plan"], usecols=["ticker"])["ticker"].dropna().astype(str)
        return sorted(set(syms)), f"the {syms.nunique()} tickers of the plan of {session}"
    return [], None


def equity_vs_benchmark(paths: Paths, session: str | None,
                        eq: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The book's equity and an equal-weight buy-and-hold of the plan's universe over the same
    sessions, both rebased to 100 at the close before the first executed session.

    ``labels``: the base date then each session; ``book`` and ``benchmark`` (None when it
    cannot be built; ``note`` says why): one value per label. The benchmark holds each symbol
    of the universe with a close on the base date from that close (adjusted for splits and
    dividends, from the bar store), equal weights, never rebalanced; a missing close carries
    the last one."""
    from tasks.data.store import load_bars, read_manifest

    rows = eq if eq is not None else equity_curve(paths, session)
    rows = [r for r in rows if session is None or str(r["session"]) <= session]
    out: dict[str, Any] = {"labels": [], "book": [], "benchmark": None, "universe": 0,
                           "universe_source": None, "note": None}
    if not rows:
        out["note"] = "no executed session yet"
        return out
    days = [str(r["session"]) for r in rows]
    base_nl = float(rows[0]["start_net_liquidity"])
    out["book"] = [100.0] + [100.0 * float(r["end_net_liquidity"]) / base_nl for r in rows]
    out["labels"] = ["start", *days]
    symbols, source = plan_universe(paths, session)
    out["universe_source"] = source
    if not symbols:
        out["note"] = f"no plan universe for {session} (no signals or plan file)"
        return out
    if read_manifest(paths.store) is None:
        out["note"] = f"no bar store at {paths.store}"
        return out
    first = pd.Timestamp(days[0])
    bars = load_bars(paths.store, start=first - pd.Timedelta(days=BENCHMARK_LOOKBACK_DAYS),
                     end=days[-1], symbols=symbols)
    px = bars.pivot_table(index="date", columns="symbol", values="adj_close", aggfunc="last")
    before = px.index[px.index < first]
    if not len(before):
        out["note"] = f"the bar store has no close before {days[0]} to start the benchmark from"
        return out
    base = px.loc[before[-1]]
    held = base.index[base.notna() & (base > 0)]
    if not len(held):
        out["note"] = f"no symbol of the universe has a close on {before[-1].date()}"
        return out
    px = px[held].ffill()
    rel = px.reindex(pd.DatetimeIndex(pd.to_datetime(days))).div(base[held]).mean(axis=1)
    out["labels"][0] = before[-1].date().isoformat()
    out["benchmark"] = [100.0] + [float(v) * 100.0 if pd.notna(v) else None for v in rel]
    out["universe"] = len(held)
    return out


# --- the rest of the picture -----------------------------------------------------------------

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


def model_stats(paths: Paths, session: str | None = None) -> dict[str, Any]:
    """Active and shadow ids, their validation metrics, live (realised) metrics and calibration
    health of the picture's session (the nightly record dated on or before it)."""
    day = _session(paths, session)
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
    nightly = file_upto(paths.reports / "nightly", "*.json", day) if day else None
    out["live"] = read_json(nightly) if nightly else None
    health = session_health(paths, day) if day else None
    out["calibration"] = (health or {}).get("metrics", {}).get("quality")
    return out


def plan_rows(paths: Paths, session: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The picture's session's trade plan (``val/plans/<D>/trade_plan.csv``), first ``limit``
    rows."""
    day = _session(paths, session)
    path = output_paths(paths, day)["plan"] if day else None
    if path is None or not path.is_file():
        return []
    frame = pd.read_csv(path, nrows=limit)
    return json.loads(frame.to_json(orient="records", double_precision=15))


def plan_orders(paths: Paths, session: str | None) -> int | None:
    """How many orders the plan dated ``session`` holds (None without that plan)."""
    path = output_paths(paths, session)["plan"] if session else None
    if path is None or not path.is_file():
        return None
    return int(len(pd.read_csv(path, usecols=["ticker"])))


def learning(paths: Paths, settings: AppSettings, health: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Feature toggles, reward mix and the policy version in force; the blend weights the
    session's fusion applied (``weights_used``) next to the policy's configured mix."""
    policy, version = current_policy(paths, settings)
    stored = read_json(policy_dir(paths) / f"{version}.json") or {}
    return {"policy_version": version, "created_at": stored.get("created_at"),
            "session_policy_version": (health or {}).get("policy_version"),
            "disabled_features": list(policy.disabled_features),
            "reward_coefficients": dict(policy.reward_coefficients),
            "blend_weights": dict(policy.blend_weights),
            "weights_used": weights_used(health),
            "do_not_trade": list(policy.do_not_trade)}


def _alert_time(alert: dict[str, Any]) -> float:
    """Seconds since the epoch of an alert's ``at`` (its session's date when unreadable)."""
    for value in (alert.get("at"), alert.get("session")):
        try:
            ts = pd.Timestamp(str(value))
        except (ValueError, TypeError):
            continue
        if pd.isna(ts):
            continue
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return ts.timestamp()
    return -math.inf


def _current_text(alert: dict[str, Any]) -> str:
    """The alert's text as the runbook words it now (the stored text when it cannot be)."""
    code, data = alert.get("code"), alert.get("data")
    if code in TEXTS and isinstance(data, dict):
        try:
            return render(str(code), data)
        except (KeyError, IndexError, ValueError):
            pass
    return str(alert.get("text", ""))


def recent_alerts(paths: Paths, n: int = 20) -> list[dict[str, Any]]:
    """The ``n`` newest alerts, newest first (by time; the later line first on a tie)."""
    rows = read_alerts(paths)
    order = sorted(range(len(rows)), key=lambda i: (_alert_time(rows[i]), i), reverse=True)
    return [{**rows[i], "text": _current_text(rows[i])} for i in order[:n]]


def force_demo(paths: Paths, settings: AppSettings, *, by: str, reason: str,
               at: str | None = None, request_id: str | None = None) -> dict[str, Any]:
    """Force demo mode now (who and why recorded, escaped); live refuses to start while it
    holds. Every request is recorded; a repeated ``request_id`` only once."""
    at = at or pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
    return overrides.force_demo(paths, by=by, reason=reason, at=at, request_id=request_id)


def clear_quarantine(paths: Paths, settings: AppSettings, *, by: str, reason: str,
                     at: str | None = None, session: str | None = None) -> dict[str, Any]:
    """An operator override of the quarantine on ``session`` (default: the book's session,
    else today); the rules may refuse: ValueError says why."""
    at = at or pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
    day = session or book_session(paths) or at[:10]
    state = clear(paths, settings, at=at, by=by, reason=reason, source="operator", session=day)
    return {"cleared": True, "session": day, "by": state["history"][-1]["by"],
            "reason": state["history"][-1]["reason"], "at": at,
            "history": state.get("history", [])[-3:]}


def budget_status(paths: Paths, settings: AppSettings, session: str | None = None
                  ) -> dict[str, Any]:
    """Remote calls used in ``session`` (default: the latest session with a budget or
    escalation record) and their outcomes. A budget file that cannot be trusted reads as spent
    (``damaged``: why); an escalation record that cannot be read is named in ``damaged``."""
    from tasks.statefiles import StateFileError

    limit = settings.escalation.max_calls_per_session
    if session is None:
        last = latest_file(budget_dir(paths), "*.json")
        rec_file = latest_file(paths.reports / "escalations", "*.json")
        session = max(p.stem for p in (last, rec_file) if p) if (last or rec_file) else None
    if session is None:
        return {"session": None, "used": 0, "limit": limit, "calls": []}
    budget = read_budget(paths, session, limit)
    damaged = [budget["damaged"]] if budget.get("damaged") else []
    try:
        entries = read_record(paths, session)["calls"]
    except StateFileError as exc:
        entries, damaged = [], [*damaged, str(exc)]
    calls = [{"call_type": c.get("call_type"), "status": c.get("status"),
              "backend": c.get("backend"), "policy_before": c.get("policy_before"),
              "policy_after": c.get("policy_after"), "attempts": len(c.get("attempts", []))}
             for c in entries]
    out = {"session": session, "used": int(budget["used"]), "limit": int(budget["limit"]),
           "calls": calls}
    if damaged:
        out["damaged"] = "; ".join(damaged)
    return out


def risk_status(paths: Paths, settings: AppSettings, today: pd.Timestamp | None = None,
                view: dict[str, Any] | None = None) -> dict[str, Any]:
    """Mode, book, day P&L, drawdown, vol regime, bucket and per-name use, kill switch, quarantine.

    ``session`` is the picture's session (:func:`session_view`); the vol regime and vol z are
    that session's, from its health JSON; ``next_plan`` a plan dated after it, if any."""
    today = today if today is not None else pd.Timestamp.now().normalize()
    view = view if view is not None else session_view(paths)
    day = view["session"]
    ex = execution_status(paths, settings, today)
    op = overrides.operator_overrides(paths)
    book = book_status(paths, settings)
    eq = equity_curve(paths, day)
    regime = market_regime(session_health(paths, day) if day else None)
    ks = ex["kill_switch"]
    return {
        "session": day, "session_source": view["source"], "next_plan": view["next_plan"],
        "latest_plan": view["latest_plan"], "later_plans": view["later_plans"],
        "mode": {"mode": ex["mode"], "configured": ex["configured_mode"],
                 "forced_demo": bool(op.get("forced_demo")),
                 "forced_by": op.get("by"), "forced_reason": op.get("reason"),
                 "go_live_stage": ex.get("go_live_stage"), "live_gates": ex.get("live_gates", [])},
        "net_liquidity": ex["net_liquidity"], "day_pnl_pct": ex.get("day_pnl_pct"),
        "drawdown": eq[-1].get("drawdown") if eq else None,
        **regime,
        "exposure": book["exposure"], "caps": risk_caps(paths, settings),
        "positions": book["positions"],
        "kill_switch": {**ks, "state": "tripped" if ks.get("tripped") else "armed"},
        "quarantine": ex["quarantine"],
    }


def snapshot(paths: Paths, settings: AppSettings, today: pd.Timestamp | None = None
             ) -> dict[str, Any]:
    """Everything the dashboard and `hcp status` show, all of one session (:func:`session_view`)."""
    view = session_view(paths)
    day = view["session"]
    health = session_health(paths, day) if day else None
    risk = risk_status(paths, settings, today, view)
    eq = equity_curve(paths, day)
    return {"session": day, "view": {**view, "next_plan_orders": plan_orders(paths,
                                                                            view["next_plan"])},
            "mode": risk["mode"], "risk": risk,
            "budget": budget_status(paths, settings, day),
            "learning": learning(paths, settings, health),
            "models": model_stats(paths, day), "alerts": recent_alerts(paths),
            "plan": plan_rows(paths, day), "plan_found": bool(day) and
            output_paths(paths, day)["plan"].is_file(),
            "health_found": health is not None,
            "empty_book": empty_book(paths, day) if day else None, "equity": eq,
            "equity_benchmark": equity_vs_benchmark(paths, day, eq)}
