"""The escalation record of a session: ``reports/escalations/<D>.json``.

One entry per call type and session with the trigger values, every attempt (backend, status,
validation result, sha256 of prompt and response, budget count), the validated answer, what
the bounds clipped or rejected, the applied deltas and the policy version before and after
(with the git-style diff). The record is also the store of answers: a session that already
has an entry for a call type reuses it and sends nothing. Writers hold a per-session lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.io import atomic_write_json, exclusive_lock
from tasks.paths import Paths


def session_timestamp(day: str) -> str:
    """The session's close (16:00 New York) in UTC: the as-of time of its requests and alerts."""
    import pandas as pd

    ts = pd.Timestamp(f"{day} 16:00", tz="America/New_York").tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def record_path(paths: Paths, session: str) -> Path:
    return paths.reports / "escalations" / f"{session}.json"


def session_lock(paths: Paths, session: str):
    """Exclusive lock on one session's escalations (blocking: calls are serialised)."""
    return exclusive_lock(paths.data / "runs" / "locks" / f"escalation_{session}.lock")


def read_record(paths: Paths, session: str) -> dict[str, Any]:
    path = record_path(paths, session)
    if path.is_file():
        return json.loads(path.read_text())
    return {"session": session, "calls": []}


def stored_call(record: dict[str, Any], call_type: str) -> dict[str, Any] | None:
    for entry in record["calls"]:
        if entry["call_type"] == call_type:
            return entry
    return None


def add_call(paths: Paths, session: str, entry: dict[str, Any], budget: dict[str, Any]
             ) -> Path:
    """Append a call entry (callers hold :func:`session_lock`)."""
    record = read_record(paths, session)
    record["calls"] = [c for c in record["calls"] if c["call_type"] != entry["call_type"]]
    record["calls"].append(entry)
    record["budget"] = budget
    return atomic_write_json(record_path(paths, session), record)
