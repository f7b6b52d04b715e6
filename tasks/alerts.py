"""Operator alerts: one append-only JSON-lines file that every flow writes and the operator reads.

``data/state/alerts.jsonl`` holds one record per alert: ``{"at", "session", "code", "level",
"text", "data"}``. The texts are the runbook's; ``code`` is a stable key for filters and
notifications. An alert is appended once per ``(session, code, key)``: a re-run of the same
session does not repeat it. Appends hold an exclusive lock and are fsynced.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from tasks.paths import Paths

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


@contextmanager
def _locked_append(path: Path) -> Iterator[Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _seen(fh: Any, session: str, code: str, key: str) -> bool:
    fh.seek(0)
    for line in fh:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (rec.get("session"), rec.get("code"), rec.get("key")) == (session, code, key):
            return True
    return False


def raise_alert(paths: Paths, code: str, *, session: str, at: str, level: Level = "WARN",
                key: str = "", data: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Append an alert (once per session, code and key); returns the record, or None if known.

    ``at`` is the caller's timestamp (ISO 8601): no wall clock is read here.
    """
    data = dict(data or {})
    record = {"at": at, "session": session, "code": code, "level": level, "key": key,
              "text": render(code, data), "data": data}
    with _locked_append(alerts_path(paths)) as fh:
        if _seen(fh, session, code, key):
            return None
        fh.seek(0, os.SEEK_END)
        fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.log(_LOG_LEVELS[level], "%s [%s] %s", session, code, record["text"])
    return record


def read_alerts(paths: Paths, session: str | None = None) -> list[dict[str, Any]]:
    """All alerts (or one session's), oldest first; an unreadable line is skipped and logged."""
    path = alerts_path(paths)
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d is not JSON; skipped", path, n)
            continue
        if session is None or rec.get("session") == session:
            out.append(rec)
    return out


def alert_health(paths: Paths, session: str, health: dict[str, Any], at: str) -> list[dict[str, Any]]:
    """The daily health's operator alerts: ERROR (stop trading), missing RL hints, and an empty
    book (BUY signals but no BUY order; the text names the step that zeroed it)."""
    summary = health.get("summary", {})
    raised = []
    if summary.get("status") == "ERROR":
        raised.append(raise_alert(paths, "health_error", session=session, at=at, level="ERROR",
                                  data={"errors": "; ".join(summary.get("errors", []))}))
    if any(w.startswith("RL models unavailable") for w in summary.get("warnings", [])):
        raised.append(raise_alert(paths, "rl_missing", session=session, at=at, level="WARN"))
    if health.get("empty_book"):
        raised.append(raise_alert(paths, "empty_book", session=session, at=at, level="WARN",
                                  data=dict(health["empty_book"])))
    return [r for r in raised if r is not None]
