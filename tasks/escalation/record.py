"""The escalation record of a session: ``reports/escalations/<D>.json``.

One entry per call type and session with the trigger values, every attempt (backend, status,
validation result, sha256 of prompt and response, budget count), the validated answer, what
the bounds clipped or rejected, the applied deltas and the policy version before and after
(with the git-style diff). The record is also the store of answers: a session that already
has an entry for a call type reuses it and sends nothing. Writers hold a per-session lock.

The record is read strictly (:class:`EscalationRecord`): a damaged one is a
:class:`~tasks.statefiles.StateFileError` naming it, never an empty record in its place (an
empty record would ask the remote model again and lose the evidence of the budget spent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.io import atomic_write_json, exclusive_lock
from tasks.paths import Paths
from tasks.statefiles import StateFileError, load_json_state


class RecordedCall(BaseModel):
    """One call type's entry (the keys the readers use; the rest is kept as written)."""

    model_config = ConfigDict(extra="allow")
    call_type: str
    status: str
    backend: str | None
    attempts: list[dict[str, Any]]
    policy_before: str
    policy_after: str


class EscalationRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    session: str
    calls: list[RecordedCall]
    budget: dict[str, Any] | None = None


def record_remedy(session: str) -> str:
    return (f"restore it from a backup, or move it aside with `hcp state repair "
            f"escalation-record --session {session} --by NAME --reason TEXT` (the session's "
            "budget then counts as spent unless its budget file is intact)")


def record_path(paths: Paths, session: str) -> Path:
    return paths.reports / "escalations" / f"{session}.json"


def session_lock(paths: Paths, session: str):
    """Exclusive lock on one session's escalations (blocking: calls are serialised)."""
    return exclusive_lock(paths.data / "runs" / "locks" / f"escalation_{session}.lock")


def load_record(paths: Paths, session: str) -> EscalationRecord | None:
    """The session's record, strictly (None when there is none)."""
    path = record_path(paths, session)
    rec = load_json_state(path, EscalationRecord, remedy=record_remedy(session))
    if rec is not None and rec.session != session:
        raise StateFileError(path, f"holds the record of session {rec.session}",
                             record_remedy(session))
    return rec


def read_record(paths: Paths, session: str) -> dict[str, Any]:
    """The record as a dict (an empty one when the session has none)."""
    rec = load_record(paths, session)
    if rec is None:
        return {"session": session, "calls": []}
    return rec.model_dump(exclude_unset=True)  # python mode: values exactly as read


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
