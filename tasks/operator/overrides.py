"""Operator overrides: ``data/state/operator.json`` (forced demo mode, with who, why and when).

A forced demo is a live gate (:func:`tasks.execution.gates.live_gates`): live refuses to start
while it is set. Every change is appended to the file's history and raised as an alert.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.alerts import raise_alert
from tasks.io import atomic_write_json
from tasks.paths import Paths


def operator_path(paths: Paths) -> Path:
    return paths.data / "state" / "operator.json"


def operator_overrides(paths: Paths) -> dict[str, Any]:
    """The overrides in force (``forced_demo`` false when none was ever set)."""
    path = operator_path(paths)
    return json.loads(path.read_text()) if path.is_file() else {"forced_demo": False, "history": []}


def force_demo(paths: Paths, *, by: str, reason: str, at: str) -> dict[str, Any]:
    """Force demo mode (persisted before it is reported); returns the new overrides."""
    old = operator_overrides(paths)
    entry = {"at": at, "by": by, "reason": reason, "action": "force_demo"}
    new = {"forced_demo": True, "since": at, "by": by, "reason": reason,
           "history": [*old.get("history", []), entry]}
    atomic_write_json(operator_path(paths), new)
    raise_alert(paths, "forced_demo", session=at[:10], at=at, level="WARN", key=at,
                data={"by": by, "reason": reason})
    return new
