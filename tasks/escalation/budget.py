"""The remote-call budget of a session: counted per HTTP attempt, persisted before the attempt.

``data/state/llm_budget/<D>.json`` holds ``{"session", "limit", "used", "attempts": [...]}``
(:class:`BudgetFile`; ``refused`` lists refusals, ``repairs`` the operator's repairs).
:func:`reserve` takes an exclusive lock, reads the count, refuses when the limit is reached,
otherwise writes the incremented count (temp file, fsync, rename, fsync of the folder) and only
then returns: a process killed during the HTTP attempt has already spent that attempt, so a
crash can never reset the budget.

The file is read strictly (:func:`load_budget`): empty, garbled, of the wrong shape (``used``
below zero, fewer than its attempts, another session's), behind the session's escalation
record, or missing while that record shows remote attempts, it is damaged. A damaged budget is
never replaced by a fresh one: it counts as SPENT (no remote call; the local reasoner and the
template still answer), :func:`reserve` says so in an alert and the log, and the operator
repairs it (``hcp state repair budget --session D``, :func:`repair_budget`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from tasks.io import atomic_write_json, exclusive_lock
from tasks.paths import Paths
from tasks.statefiles import StateFileError, load_json_state

log = logging.getLogger("hcp.escalation")


def budget_dir(paths: Paths) -> Path:
    return paths.data / "state" / "llm_budget"


def budget_path(paths: Paths, session: str) -> Path:
    return budget_dir(paths) / f"{session}.json"


def budget_remedy(session: str) -> str:
    return (f"repair it with `hcp state repair budget --session {session} --by NAME --reason "
            "TEXT` (rebuilds the count from the session's escalation record, else counts the "
            "session's budget spent); until then no remote call is made for that session")


class BudgetAttempt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(ge=1)
    at: str
    call_type: str
    model: str


class BudgetRefusal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str
    call_type: str


class BudgetFile(BaseModel):
    """One session's remote-call budget (what the file must hold)."""

    model_config = ConfigDict(extra="forbid")
    session: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    limit: NonNegativeInt
    used: NonNegativeInt
    attempts: list[BudgetAttempt]
    refused: list[BudgetRefusal] = Field(default_factory=list)
    repairs: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _attempts_counted(self) -> BudgetFile:
        if self.used < len(self.attempts):
            raise ValueError(f"used {self.used} is below its {len(self.attempts)} attempts")
        return self


@dataclass(frozen=True)
class Reservation:
    """The outcome of asking for one attempt: granted (with its number) or refused.

    ``damaged``: the one-line reason when the budget file could not be trusted (refused)."""

    granted: bool
    used: int
    limit: int
    damaged: str | None = None


def _locked(paths: Paths, session: str):
    return exclusive_lock(budget_dir(paths) / f".{session}.lock")


def recorded_attempts(paths: Paths, session: str,
                      rec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Remote attempts that spent budget, as the session's escalation record shows them
    (``n``, ``at``, ``call_type``, ``model``), in order of their budget count."""
    from tasks.escalation.record import read_record

    rec = rec if rec is not None else read_record(paths, session)
    out: dict[int, dict[str, Any]] = {}
    for call in rec["calls"]:
        for att in call.get("attempts") or []:
            counted = att.get("budget") or {}
            if not str(att.get("backend") or "").startswith("remote:"):
                continue
            if att.get("status") == "budget_exhausted" or not isinstance(counted.get("used"), int):
                continue
            n = int(counted["used"])
            out[n] = {"n": n, "at": str(call.get("at") or ""), "call_type":
                      str(call.get("call_type")), "model": str(att["backend"])[len("remote:"):]}
    return [out[n] for n in sorted(out)]


def evidence_used(paths: Paths, session: str) -> int:
    """Attempts the session's escalation record shows spent (0 without a record)."""
    from tasks.escalation.record import read_record

    rec = read_record(paths, session)
    shown = [a["n"] for a in recorded_attempts(paths, session, rec)]
    budget = rec.get("budget") if isinstance(rec.get("budget"), dict) else {}
    used = budget.get("used")
    return max([*shown, used if isinstance(used, int) and used >= 0 else 0, 0])


def load_budget(paths: Paths, session: str) -> BudgetFile | None:
    """The session's budget file, strictly (None when it does not exist and the escalation
    record shows no remote attempt); :class:`StateFileError` when it cannot be trusted."""
    path = budget_path(paths, session)
    remedy = budget_remedy(session)
    shown = evidence_used(paths, session)
    budget = load_json_state(path, BudgetFile, remedy=remedy, required=shown > 0)
    if budget is None:
        return None
    if budget.session != session:
        raise StateFileError(path, f"holds the budget of session {budget.session}", remedy)
    if budget.used < shown:
        raise StateFileError(path, f"counts {budget.used} remote attempts but the session's "
                                   f"escalation record shows {shown}", remedy)
    return budget


def fresh_budget(session: str, limit: int) -> dict[str, Any]:
    return {"session": session, "limit": limit, "used": 0, "attempts": []}


def read_budget(paths: Paths, session: str, limit: int) -> dict[str, Any]:
    """The session's budget record: a fresh one when none exists (and none should), and a
    SPENT one (``used`` = ``limit``, ``damaged`` = the reason) when the file cannot be trusted;
    never a reset."""
    try:
        budget = load_budget(paths, session)
    except StateFileError as exc:
        return {"session": session, "limit": limit, "used": max(limit, 0), "attempts": [],
                "damaged": str(exc)}
    return budget.model_dump(mode="json") if budget is not None else fresh_budget(session, limit)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reserve(paths: Paths, session: str, limit: int, *, at: str, call_type: str,
            model: str) -> Reservation:
    """Spend one attempt of the session's budget, durably, or refuse when it is used up (or
    when the budget file cannot be trusted: then it counts as spent and is left as it is)."""
    with _locked(paths, session):
        try:
            budget = load_budget(paths, session)
        except StateFileError as exc:
            _damaged_alert(paths, session, limit, at=at, call_type=call_type, error=exc)
            return Reservation(False, max(limit, 0), limit, damaged=str(exc))
        record = budget.model_dump(mode="json") if budget else fresh_budget(session, limit)
        used = int(record["used"])
        if used >= limit:
            record.setdefault("refused", []).append({"at": at, "call_type": call_type})
            _write(paths, session, record)
            return Reservation(False, used, limit)
        record["used"] = used + 1
        record["limit"] = limit
        record["attempts"].append({"n": used + 1, "at": at, "call_type": call_type,
                                   "model": model})
        _write(paths, session, record)
        return Reservation(True, used + 1, limit)


def _damaged_alert(paths: Paths, session: str, limit: int, *, at: str, call_type: str,
                   error: StateFileError) -> None:
    """Say once per session (alert, log) that a damaged budget file counts as spent."""
    from tasks.alerts import raise_alert

    log.error("%s; counted as spent: no remote call for %s", error, session)
    raise_alert(paths, "budget_exhausted", session=session, at=at, level="ERROR",
                key="budget_file_damaged",
                data={"used": "damaged", "limit": limit,
                      "call_type": f"{call_type} (budget file {error.path.name} damaged, "
                                   f"counted as spent: {error.problem}; run `hcp state repair "
                                   f"budget --session {session}`)"})


def _write(paths: Paths, session: str, record: dict[str, Any]) -> None:
    BudgetFile.model_validate(record)  # never write what the reader would refuse
    atomic_write_json(budget_path(paths, session), record)
    _fsync_dir(budget_dir(paths))


def repair_budget(paths: Paths, session: str, limit: int, *, at: str,
                  spent: bool = False) -> dict[str, Any]:
    """Rebuild the session's budget from its escalation record (every remote attempt it shows,
    and never fewer than the count it recorded); without evidence (no record, or ``spent``)
    write it explicitly SPENT (``used`` = ``limit``). Returns what was written."""
    with _locked(paths, session):
        attempts = recorded_attempts(paths, session)
        shown = evidence_used(paths, session)
        if spent or shown == 0:
            used, how = max(limit, shown), "counted spent (no evidence of the count)" \
                if not spent else "counted spent (operator)"
        else:
            used, how = shown, f"rebuilt from the escalation record ({shown} attempts)"
        record = {"session": session, "limit": limit, "used": used, "attempts": attempts,
                  "refused": [], "repairs": [{"at": at, "action": how}]}
        _write(paths, session, record)
        return record
