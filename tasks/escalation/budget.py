"""The remote-call budget of a session: counted per HTTP attempt, persisted before the attempt.

``data/state/llm_budget/<D>.json`` holds ``{"session", "limit", "used", "attempts": [...]}``.
:func:`reserve` takes an exclusive lock, reads the count, refuses when the limit is reached,
otherwise writes the incremented count (temp file, fsync, rename, fsync of the folder) and only
then returns: a process killed during the HTTP attempt has already spent that attempt, so a
crash can never reset the budget.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.io import atomic_write_json, exclusive_lock
from tasks.paths import Paths


def budget_dir(paths: Paths) -> Path:
    return paths.data / "state" / "llm_budget"


def budget_path(paths: Paths, session: str) -> Path:
    return budget_dir(paths) / f"{session}.json"


@dataclass(frozen=True)
class Reservation:
    """The outcome of asking for one attempt: granted (with its number) or refused."""

    granted: bool
    used: int
    limit: int


def _locked(paths: Paths, session: str):
    return exclusive_lock(budget_dir(paths) / f".{session}.lock")


def read_budget(paths: Paths, session: str, limit: int) -> dict[str, Any]:
    """The session's budget record (a fresh one when none exists)."""
    path = budget_path(paths, session)
    if path.is_file():
        return json.loads(path.read_text())
    return {"session": session, "limit": limit, "used": 0, "attempts": []}


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reserve(paths: Paths, session: str, limit: int, *, at: str, call_type: str,
            model: str) -> Reservation:
    """Spend one attempt of the session's budget, durably, or refuse when it is used up."""
    with _locked(paths, session):
        record = read_budget(paths, session, limit)
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


def _write(paths: Paths, session: str, record: dict[str, Any]) -> None:
    atomic_write_json(budget_path(paths, session), record)
    _fsync_dir(budget_dir(paths))
