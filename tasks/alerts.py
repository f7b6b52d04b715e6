"""Operator alerts: one append-only JSON-lines file that every flow writes and the operator reads.

``data/state/alerts.jsonl`` holds one record per alert: ``{"at", "session", "code", "level",
"text", "data"}``. The texts are the runbook's; ``code`` is a stable key for filters and
notifications. An alert is appended once per ``(session, code, key)``: a re-run of the same
session does not repeat it, and a step that failed after deciding an alert raises it again on
its re-run (the daily run record and the session record list the alerts a step raises).

Appends go through :func:`tasks.statefiles.append_jsonl_unlocked` under the file's lock
(``alerts.jsonl.lock``: concurrent writers are serialised, the once-per-key check and the append
are one step) and are fsynced; a torn last line (a write cut by a crash) is closed before the
next record, so a new alert is never glued onto it. Lines that are not JSON records (torn,
foreign or non-UTF-8 bytes) are counted and reported with a warning, and never stop a run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from tasks.paths import Paths
from tasks.statefiles import append_jsonl_unlocked, locked_jsonl, read_jsonl

log = logging.getLogger("hcp.alerts")

Level = Literal["INFO", "WARN", "ERROR", "CRITICAL"]
_LOG_LEVELS = {"INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR,
               "CRITICAL": logging.CRITICAL}

#: Runbook alert texts by code; ``{...}`` fields are filled from the alert's data.
TEXTS: dict[str, str] = {
    "escalation": "Escalation to {remote}: {call_type_title} ({used}/{limit})",
    "remote_unavailable": "{remote} unavailable—using local reasoner",
    "escalation_no_change": "Escalation failed on every backend—no policy change applied",
    "budget_exhausted": "Remote LLM budget exhausted ({used}/{limit})—{call_type} not sent",
    "kill_switch": "Kill-switch armed—flattened; Demo tomorrow unless override",
    "quarantine_activated": "Demo quarantine activated—{remote} override required",
    "quarantine_active": "Demo quarantine active—{days_left} days remaining",
    "quarantine_cleared": "Demo quarantine cleared by {by}: {reason}",
    "data_stall": "Data feed interrupted—holding positions",
    "reasoner_offline": "Local reasoner offline—template texts, feature toggles frozen; "
                        "the plan stays the deterministic fusion (RL hint only where one exists)",
    "rl_missing": "RL models unavailable—reduced position sizing",
    "health_error": "Daily health ERROR: {errors}",
    "empty_book": "{message}",
    "forced_demo": "Demo mode forced by {by}: {reason}",
    "tradelog_repaired": "Trade log: torn last record moved aside to {side_file} (noted in the chain)",
    "model_rollback": "Model rollback: active {from_id} reverted to {to_id} ({reason}); "
                      "no automatic rollback until {until}",
}


def alerts_path(paths: Paths) -> Path:
    return paths.data / "state" / "alerts.jsonl"


def render(code: str, data: dict[str, Any]) -> str:
    """The alert text for ``code`` filled from ``data``; unknown codes must pass ``text``."""
    if code not in TEXTS:
        raise KeyError(f"unknown alert code {code!r}; known: {sorted(TEXTS)}")
    fields = {"remote": "GPT-5", **data}
    if "call_type" in fields:
        fields.setdefault("call_type_title", str(fields["call_type"]).replace("_", " ").title())
    return TEXTS[code].format(**fields)


def _warn_bad_lines(path: Path, bad: list[int]) -> None:
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        log.warning("%s: %d line(s) are not alert records (torn, foreign or non-UTF-8 bytes; "
                    "lines %s): skipped", path, len(bad), shown)


def raise_alert(paths: Paths, code: str, *, session: str, at: str, level: Level = "WARN",
                key: str = "", data: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Append an alert (once per session, code and key); returns the record, or None if known.

    ``at`` is the caller's timestamp (ISO 8601): no wall clock is read here.
    """
    data = dict(data or {})
    record = {"at": at, "session": session, "code": code, "level": level, "key": key,
              "text": render(code, data), "data": data}
    path = alerts_path(paths)
    with locked_jsonl(path):
        known = read_jsonl(path)
        if any((r.get("session"), r.get("code"), r.get("key")) == (session, code, key)
               for r in known.records):
            return None
        append_jsonl_unlocked(path, record)
    _warn_bad_lines(path, known.bad_lines)
    log.log(_LOG_LEVELS[level], "%s [%s] %s", session, code, record["text"])
    return record


def bad_alert_lines(paths: Paths) -> list[int]:
    """Line numbers of alerts.jsonl that are not alert records (1-based)."""
    return read_jsonl(alerts_path(paths)).bad_lines


def read_alerts(paths: Paths, session: str | None = None) -> list[dict[str, Any]]:
    """All alerts (or one session's), oldest first; lines that are not records are skipped
    and counted in a warning."""
    path = alerts_path(paths)
    got = read_jsonl(path)
    _warn_bad_lines(path, got.bad_lines)
    return [r for r in got.records if session is None or r.get("session") == session]


def health_alerts(health: dict[str, Any], at: str) -> list[dict[str, Any]]:
    """The daily health's operator alerts as specs ``{code, level, key, at, data}``: ERROR
    (stop trading), missing RL hints, and an empty book (BUY signals but no BUY order; the
    text names the step that zeroed it)."""
    summary = health.get("summary", {})
    specs = []
    if summary.get("status") == "ERROR":
        specs.append({"code": "health_error", "level": "ERROR",
                      "data": {"errors": "; ".join(summary.get("errors", []))}})
    if any(w.startswith("RL models unavailable") for w in summary.get("warnings", [])):
        hint = health.get("size_hint") or {}
        data = {"size_hint": hint.get("case"), "hint_id": hint.get("hint_id"),
                "reason": hint.get("reason")} if hint else {}
        specs.append({"code": "rl_missing", "level": "WARN",
                      "data": {k: v for k, v in data.items() if v is not None}})
    if health.get("empty_book"):
        specs.append({"code": "empty_book", "level": "WARN", "data": dict(health["empty_book"])})
    return [{"key": "", "at": at, **s} for s in specs]


def raise_specs(paths: Paths, session: str, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raise alert specs (idempotent: those already in the file are left); the new records."""
    raised = [raise_alert(paths, s["code"], session=session, at=s["at"], level=s["level"],
                          key=s.get("key", ""), data=s.get("data")) for s in specs]
    return [r for r in raised if r is not None]


def missing_specs(paths: Paths, session: str, specs: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """The specs whose alert is not in alerts.jsonl."""
    have = {(r.get("code"), r.get("key")) for r in read_alerts(paths, session)}
    return [s for s in specs if (s["code"], s.get("key", "")) not in have]


def alert_health(paths: Paths, session: str, health: dict[str, Any], at: str) -> list[dict[str, Any]]:
    """Raise the daily health's operator alerts (see :func:`health_alerts`)."""
    return raise_specs(paths, session, health_alerts(health, at))
