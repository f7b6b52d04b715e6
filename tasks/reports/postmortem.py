"""The nightly post-mortem of session D: ``reports/postmortems/<D>.md`` and ``.html``.

Facts are computed deterministically from the state files (execution summary, equity, trade
log), the session's plan, audit and health, its escalation record, the realised outcomes and
the alerts; every absent input is said to be absent ("no execution record for D"). Root causes
and recommendations follow from the facts by fixed rules. The narrative paragraph and the
feature/toggle proposals come from the local reasoner, or from the template when no model
answers; the report names which. Proposals are never applied: a change needs a new policy
version (``hcp policy``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.alerts import read_alerts
from tasks.escalation import inputs as ins
from tasks.escalation.record import read_record
from tasks.execution.tradelog import TradeLogError, read_records
from tasks.io import atomic_write
from tasks.paths import Paths
from tasks.policy import current_policy
from tasks.reasoner import jobs
from tasks.reports import templates as tpl
from tasks.settings import AppSettings
from tasks.trading_settings import TOGGLEABLE_FEATURES


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _execution_reader() -> Any:
    """The execution side's trade-log reader (it verifies the hash chain)."""
    return read_records


def trade_records(paths: Paths, day: str) -> tuple[list[dict[str, Any]], str | None]:
    """(trade-log records of the session, why the log could not be read or None)."""
    try:
        return list(_execution_reader()(paths, session=day)), None
    except (TradeLogError, OSError, ValueError) as exc:  # a bad log is a finding, not a crash
        return [], f"{type(exc).__name__}: {str(exc)[:300]}"


def _trades(read: tuple[list[dict[str, Any]], str | None]) -> dict[str, Any]:
    records, error = read
    exits = [r for r in records if r.get("pnl") is not None]
    pnl = [float(r["pnl"]) for r in exits]
    return {"error": error, "records": len(records), "by_event": dict(sorted(Counter(
        str(r.get("event")) for r in records).items())), "exits": len(exits),
        "winners": sum(p > 0 for p in pnl), "losers": sum(p < 0 for p in pnl),
        "realised_pnl": round(sum(pnl), 2) if pnl else None,
        "rows": [{k: r.get(k) for k in ("symbol", "event", "direction", "qty", "entry_price",
                                          "exit_price", "pnl", "policy_version")}
                 for r in records[:20]]}


def _plan(paths: Paths, day: str) -> dict[str, Any] | None:
    folder = paths.val / "plans" / day
    if not (folder / "trade_plan.csv").is_file():
        return None
    plan = pd.read_csv(folder / "trade_plan.csv")
    audit = (pd.read_parquet(folder / "trade_plan_audit.parquet")
             if (folder / "trade_plan_audit.parquet").is_file() else None)
    tags = Counter(t for r in (audit["reasons"].dropna() if audit is not None else [])
                   for t in str(r).split(";") if t.startswith("clamp:"))
    notes = []
    if audit is not None and "conflict_note" in audit:
        notes = [{"symbol": r.symbol, "note": r.conflict_note, "by": r.conflict_note_by}
                 for r in audit.loc[audit["conflict_note"].notna()].itertuples()]
    return {"orders": len(plan), "buy": int((plan["action"] == "BUY").sum()),
            "sell": int((plan["action"] == "SELL").sum()),
            "cash": round(float(plan["position_cash"].sum()), 2),
            "by_bucket": {str(k): round(float(v), 2) for k, v in
                          plan.groupby("bucket")["position_cash"].sum().items()},
            "policy_versions": sorted(plan["policy_version"].dropna().unique().tolist()),
            "model_ids": sorted(plan["model_id"].dropna().unique().tolist()),
            "clamps": dict(sorted(tags.items())), "conflicts": notes,
            "scored": int(len(audit)) if audit is not None else None}


def _traded(paths: Paths, day: str) -> dict[str, Any] | None:
    """The plan traded in session D: the one prepared as of the last session before D."""
    folder = paths.val / "plans"
    earlier = sorted(p.name for p in folder.glob("*") if p.name < day) if folder.is_dir() else []
    plan = _plan(paths, earlier[-1]) if earlier else None
    return {"as_of": earlier[-1], **plan} if plan else None


def _escalations(paths: Paths, day: str) -> list[dict[str, Any]]:
    out = []
    for c in read_record(paths, day)["calls"]:
        bounded = c.get("bounded") or {}
        out.append({"call_type": c["call_type"], "status": c["status"], "backend": c["backend"],
                    "attempts": [f"{a['backend']}: {a['status']}" for a in c["attempts"]],
                    "triggers": sorted(c.get("triggers", {})),
                    "applied": bounded.get("applied", {}),
                    "clipped": bounded.get("clipped", []), "rejected": bounded.get("rejected", []),
                    "policy_before": c["policy_before"], "policy_after": c["policy_after"],
                    "diff": c.get("policy_diff", "")})
    return out


def gather_facts(paths: Paths, settings: AppSettings, day: str) -> dict[str, Any]:
    """Everything the post-mortem states, from files only."""
    equity = ins.load_equity(paths)
    eq_row = None
    if equity is not None:
        rows = equity.loc[equity["session"].astype(str) == day]
        eq_row = rows.iloc[0].to_dict() if len(rows) else None
    health = _json(paths.reports / "health" / f"daily_health_{day}.json")
    esc = (health or {}).get("escalation") or {}
    return {
        "session": day,
        "execution": _execution(ins.load_session_record(paths, day)),
        "equity": {k: _clean(v) for k, v in eq_row.items()} if eq_row else None,
        "trades": _trades(trade_records(paths, day)),
        "plan": _plan(paths, day),
        "plan_traded": _traded(paths, day),
        "health": None if health is None else {
            "status": health["summary"]["status"], "errors": health["summary"]["errors"],
            "warnings": health["summary"]["warnings"]},
        "triggers": esc.get("triggers", []),
        "feature_performance": esc.get("feature_performance", {}),
        "escalations": _escalations(paths, day),
        "realised": _json(paths.reports / "nightly" / f"{day}.json"),
        "alerts": [{"code": a["code"], "level": a["level"], "text": a["text"]}
                   for a in read_alerts(paths, day)],
        "policy_now": current_policy(paths, settings)[1],
        "disabled_features": list(current_policy(paths, settings)[0].disabled_features),
    }


EXECUTION_KEYS = ("mode", "start_net_liquidity", "end_net_liquidity", "day_pnl", "day_pnl_pct",
                  "turnover", "kill_switch", "kill_switch_at", "orders", "fills",
                  "policy_version", "model_id")


def _execution(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The execution summary with every contract key present (None where the file lacks it)."""
    if rec is None:
        return None
    out = {k: rec.get(k) for k in EXECUTION_KEYS}
    out["pnl_by_bucket"] = dict(rec.get("pnl_by_bucket") or {})
    out["clamps_fired"] = dict(rec.get("clamps_fired") or {})
    return out


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and not math.isfinite(v) else v


def root_causes(f: dict[str, Any]) -> list[str]:
    """Fixed rules over the facts; the first lines matter most."""
    out = []
    ex = f["execution"]
    if ex and ex.get("kill_switch"):
        pnl = ex.get("day_pnl_pct")
        out.append(f"Kill switch fired at {ex.get('kill_switch_at')}: day P&L "
                   f"{'n/a' if pnl is None else f'{pnl:.2%}'} below the -2.5% limit.")
    if ex and ex.get("pnl_by_bucket"):
        worst = min(ex["pnl_by_bucket"].items(), key=lambda kv: kv[1])
        if worst[1] < 0:
            out.append(f"Largest loss in the {worst[0]} bucket ({worst[1]:.2%} of net liquidity).")
    for t in f["triggers"]:
        if t["fired"]:
            out.append(f"Trigger {t['name']} fired ({_short(t['value'])} vs {t['threshold']}).")
    real = f["realised"] or {}
    if real.get("hit_rate") is not None and real.get("expected_hit_rate") is not None and \
            real["hit_rate"] < real["expected_hit_rate"] - 0.05:
        out.append(f"Realised hit rate {real['hit_rate']:.1%} below the expected "
                   f"{real['expected_hit_rate']:.1%} over {real['orders']} orders.")
    for e in (f["health"] or {}).get("errors", []):
        out.append(f"Health ERROR: {e}.")
    if f["trades"]["error"]:
        out.append(f"The trade log could not be read: {f['trades']['error']}")
    clamps = (f["plan"] or {}).get("clamps", {})
    if clamps:
        name, n = max(clamps.items(), key=lambda kv: kv[1])
        out.append(f"The {name} limit cut {n} planned order(s).")
    return out or ["No anomaly in the recorded facts."]


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_short(x)}" for k, x in v.items() if not isinstance(x, str))
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def recommendations(f: dict[str, Any]) -> list[str]:
    out = []
    if f["execution"] is None:
        out.append(f"No execution record for {f['session']}: check that the intraday flow "
                   "ran (P&L, trades and clamps of the session are unknown).")
    for e in f["escalations"]:
        if e["status"] == "no_opinion":
            out.append(f"{e['call_type']} got no valid answer ({'; '.join(e['attempts'])}): "
                       "check the remote endpoint and the local reasoner; nothing was changed.")
        elif e["status"] == "applied":
            out.append(f"Review the policy change {e['policy_before']} -> {e['policy_after']} "
                       f"(`hcp policy diff {e['policy_before']} {e['policy_after']}`); roll back "
                       f"with `hcp policy rollback {e['policy_before']}` if it is unwanted.")
    warnings = (f["health"] or {}).get("warnings", [])
    if any(w.startswith("drift") for w in warnings):
        out.append("Feature drift above the PSI limit: compare with the shadow model or retrain.")
    if any(w.startswith("quality") for w in warnings):
        out.append("Calibration worse than validation: consider retraining the baseline.")
    if f["trades"]["error"]:
        out.append("Verify data/state/tradelog.jsonl (hash chain) before the next session; "
                   "the session's trades are not in this report.")
    if (f["execution"] or {}).get("kill_switch"):
        out.append("Stay in demo until the quarantine rules or a SANITY_JUDGE answer clear it.")
    return out or ["No action needed."]


def template_proposals(f: dict[str, Any]) -> list[dict[str, str]]:
    """Deterministic proposals from the rank IC of the toggleable inputs."""
    out = []
    for name, ic in sorted(f["feature_performance"].items()):
        if name not in TOGGLEABLE_FEATURES:
            continue
        if ic < -0.02 and name not in f["disabled_features"]:
            out.append({"feature": name, "action": "disable",
                        "reason": f"rank IC {ic:+.3f} with realised outcomes over the window"})
        elif ic > 0.02 and name in f["disabled_features"]:
            out.append({"feature": name, "action": "enable",
                        "reason": f"rank IC {ic:+.3f}: informative again"})
    return out


def write_postmortem(paths: Paths, settings: AppSettings, day: str) -> dict[str, Any]:
    """Write the .md and .html post-mortem of ``day``; returns their paths and the writers."""
    f = gather_facts(paths, settings, day)
    f["root_causes"], f["recommendations"] = root_causes(f), recommendations(f)
    story = jobs.narrative(paths, settings, day, tpl.narrative_facts(f), tpl.NARRATIVE)
    props = jobs.proposals(paths, settings, day, {
        "feature_performance": f["feature_performance"],
        "disabled_features": f["disabled_features"],
        "warnings": (f["health"] or {}).get("warnings", [])[:10]}, template_proposals(f))
    ctx = {"f": f, "story": story, "props": props}
    folder = paths.reports / "postmortems"
    md = atomic_write(folder / f"{day}.md", lambda t: t.write_text(tpl.MARKDOWN.render(**ctx)))
    html = atomic_write(folder / f"{day}.html", lambda t: t.write_text(tpl.HTML.render(**ctx)))
    return {"md": str(md), "html": str(html), "narrative_by": story["backend"],
            "proposals_by": props["backend"]}
