"""Operator overrides: ``data/state/operator.json`` (forced demo mode, with who, why and when).

A forced demo is a live gate (:func:`tasks.execution.gates.live_gates`): live refuses to start
while it is set. Every request is appended to the file's history and raised as an alert (one
alert per request: its ``request_id`` is the alert's key). Changes are serialised by a lock
(read, append, write), so concurrent requests are all recorded; only a repeated request id (a
retry of the same request) is recorded once.

``by`` and ``reason`` are stored escaped (:func:`tasks.statefiles.escape_text`): no control
character (ANSI escape, newline) reaches a terminal, a log or the dashboard.

The file is read strictly (:class:`OperatorFile`): damaged, or missing while a forced demo was
alerted or a repair logged, it counts as a FORCED DEMO (:func:`operator_overrides`) until an
operator repairs it (``hcp state repair operator``) or lifts the forced demo deliberately
(``hcp state lift-demo``); writers refuse to touch it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from tasks.alerts import alerts_path, raise_alert
from tasks.io import atomic_write_json, exclusive_lock
from tasks.paths import Paths
from tasks.statefiles import StateFileError, escape_text, load_json_state, repairs_path

DAMAGED_BY = "state check"
REMEDY = ("repair it with `hcp state repair operator --by NAME --reason TEXT` (writes the "
          "forced demo explicitly); until then demo counts as forced")


class OperatorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: str
    by: str
    reason: str
    action: Literal["force_demo", "lift_demo", "repair"]
    request_id: str | None = None


class OperatorFile(BaseModel):
    """``data/state/operator.json``."""

    model_config = ConfigDict(extra="forbid")
    forced_demo: bool
    since: str | None = None
    by: str | None = None
    reason: str | None = None
    history: list[OperatorEntry]

    @model_validator(mode="after")
    def _consistent(self) -> OperatorFile:
        if self.forced_demo and not (self.since and self.by and self.reason):
            raise ValueError("a forced demo needs since, by and reason")
        last = self.history[-1].action if self.history else None
        if last in ("force_demo", "repair") and not self.forced_demo:
            raise ValueError("forced_demo is false but its history's last entry forced it")
        return self


def operator_path(paths: Paths) -> Path:
    return paths.data / "state" / "operator.json"


def _lock(paths: Paths):
    return exclusive_lock(operator_path(paths).with_name(".operator.lock"))


def _history_says_it_exists(paths: Paths) -> bool:
    """A forced demo was alerted, or a repair of this file logged: the file must exist."""
    for path, needle in ((alerts_path(paths), b'"code": "forced_demo"'),
                         (repairs_path(paths.data / "state"), b'"file": "operator"')):
        try:
            if needle in path.read_bytes():
                return True
        except OSError:
            continue
    return False


def read_overrides(paths: Paths) -> dict[str, Any]:
    """The overrides, strictly (no forced demo when none was ever set);
    :class:`StateFileError` when the file cannot be trusted."""
    path = operator_path(paths)
    evidence = _history_says_it_exists(paths)
    found = load_json_state(path, OperatorFile, remedy=REMEDY, required=evidence)
    if found is None:
        return {"forced_demo": False, "history": []}
    if evidence and not found.history:
        raise StateFileError(path, "has no history although a forced demo was alerted (or "
                                   "the file repaired)", REMEDY)
    data = found.model_dump(mode="json", exclude_unset=True)
    for key in ("by", "reason"):  # written raw by an older version: shown escaped
        if data.get(key) is not None:
            data[key] = escape_text(data[key])
    for entry in data["history"]:
        entry["by"], entry["reason"] = escape_text(entry["by"]), escape_text(entry["reason"])
    return data


def operator_overrides(paths: Paths) -> dict[str, Any]:
    """The overrides in force; a file that cannot be trusted is a FORCED demo (``damaged``:
    the one-line reason), never a lifted one."""
    try:
        return read_overrides(paths)
    except StateFileError as exc:
        return {"forced_demo": True, "since": None, "by": DAMAGED_BY, "reason": str(exc),
                "history": [], "damaged": str(exc)}


def _write(paths: Paths, data: dict[str, Any]) -> None:
    OperatorFile.model_validate(data)  # never write what the reader would refuse
    atomic_write_json(operator_path(paths), data)


def force_demo(paths: Paths, *, by: str, reason: str, at: str,
               request_id: str | None = None) -> dict[str, Any]:
    """Force demo mode (persisted before it is reported); returns the new overrides.

    ``request_id`` names the request (a new one when None): a request id already in the history
    (a retried request) is not recorded again. :class:`StateFileError` when the file cannot be
    trusted (demo then counts as forced already; repair it first)."""
    if not by.strip() or not reason.strip():
        raise ValueError("forcing demo needs who (by) and why (reason)")
    by, reason = escape_text(by), escape_text(reason)
    request_id = request_id or uuid.uuid4().hex
    with _lock(paths):
        old = read_overrides(paths)
        if any(e.get("request_id") == request_id for e in old["history"]):
            return old
        entry = {"at": at, "by": by, "reason": reason, "action": "force_demo",
                 "request_id": request_id}
        new = {"forced_demo": True, "since": at, "by": by, "reason": reason,
               "history": [*old["history"], entry]}
        _write(paths, new)
    raise_alert(paths, "forced_demo", session=at[:10], at=at, level="WARN", key=request_id,
                data={"by": by, "reason": reason, "request_id": request_id})
    return new


def lift_demo(paths: Paths, *, by: str, reason: str, at: str) -> dict[str, Any]:
    """Lift a forced demo deliberately (recorded in the history and the repairs log)."""
    from tasks.statefiles import log_repair

    if not by.strip() or not reason.strip():
        raise ValueError("lifting a forced demo needs --by and --reason")
    by, reason = escape_text(by), escape_text(reason)
    with _lock(paths):
        old = read_overrides(paths)
        if not old.get("forced_demo"):
            raise ValueError(f"{operator_path(paths)}: demo is not forced; nothing to lift")
        entry = {"at": at, "by": by, "reason": reason, "action": "lift_demo"}
        new = {"forced_demo": False, "history": [*old["history"], entry]}
        _write(paths, new)
    log_repair(paths.data / "state", file="operator", action="forced demo lifted", by=by,
               reason=reason, at=at)
    return new


def repair_overrides(paths: Paths, *, by: str, reason: str, at: str) -> dict[str, Any]:
    """Write the safe state explicitly: demo forced by the repair (the old history is lost
    with the damaged file; the repairs log keeps the repair)."""
    by, reason = escape_text(by), escape_text(reason)
    entry = {"at": at, "by": by, "reason": reason, "action": "repair"}
    new = {"forced_demo": True, "since": at, "by": by, "reason": reason, "history": [entry]}
    with _lock(paths):
        _write(paths, new)
    return new
