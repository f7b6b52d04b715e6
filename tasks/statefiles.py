"""State files read strictly: one mechanism for every JSON/JSONL file under ``data/state``.

A state file that is missing while its history says it should exist, malformed, or of the
wrong shape stops the command with :class:`StateFileError`: one line naming the file, what is
wrong with it and how an operator repairs it. A default is never put in its place. Readers
that guard safety (budget, quarantine, kill switch, operator overrides) catch nothing: the
command stops, which is the safe side, until the file is repaired with a logged command
(:func:`log_repair`, ``data/state/repairs.jsonl``).

JSONL logs (alerts, repairs) are appended under an exclusive lock; a torn last line (a write
cut by a crash) is closed with a newline before the next record, so a new record is never glued
onto it, and readers report such lines instead of guessing at them (:func:`read_jsonl`).

This module sits at the bottom of the layers: it imports only pydantic and :mod:`tasks.io`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tasks.io import exclusive_lock

M = TypeVar("M", bound=BaseModel)
TEMP_PREFIXES = (".tmp-", ".old-")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class StateFileError(ValueError):
    """A state file that cannot be trusted: its one-line message names it and the remedy."""

    def __init__(self, path: Path, problem: str, remedy: str) -> None:
        self.path, self.problem, self.remedy = Path(path), problem, remedy
        super().__init__(f"{self.path}: {problem}; {remedy}")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "top level"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"wrong shape at {where}: {err.get('msg', 'invalid')}{more}"


def parse_json_bytes(path: Path, data: bytes, remedy: str) -> Any:
    """The JSON value in ``data`` (UTF-8); :class:`StateFileError` when it is not one."""
    if not data.strip():
        raise StateFileError(path, "empty file", remedy)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StateFileError(path, f"not UTF-8 (byte {exc.start})", remedy) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateFileError(path, f"not JSON (line {exc.lineno}, column {exc.colno}: "
                                   f"{exc.msg})", remedy) from None


def load_json_state(path: Path, model: type[M], *, remedy: str,
                    required: bool = False) -> M | None:
    """Read ``path`` into ``model``, strictly.

    Missing: None, or :class:`StateFileError` when ``required`` (the caller knows from the
    file's history - a log, a later record - that it should exist). Empty, not UTF-8, not JSON,
    or not of the model's shape: :class:`StateFileError`, never a default."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise StateFileError(path, "missing although its history says it exists", remedy)
        return None
    value = parse_json_bytes(path, path.read_bytes(), remedy)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise StateFileError(path, _first_error(exc), remedy) from None


# --- JSONL logs ----------------------------------------------------------------------------

@dataclass
class JsonlRead:
    """Records of a JSONL file and the lines that were not records (1-based numbers)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)


def read_jsonl(path: Path) -> JsonlRead:
    """Every JSON object line of ``path``; undecodable or non-object lines are listed in
    ``bad_lines`` (a torn line, foreign bytes), never silently merged into a record."""
    out = JsonlRead()
    path = Path(path)
    if not path.is_file():
        return out
    for no, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            out.bad_lines.append(no)
            continue
        if isinstance(rec, dict):
            out.records.append(rec)
        else:
            out.bad_lines.append(no)
    return out


@contextmanager
def locked_jsonl(path: Path) -> Iterator[Path]:
    """Hold the JSONL file's lock (``<name>.lock`` beside it) for a read-check-append."""
    path = Path(path)
    with exclusive_lock(path.with_name(path.name + ".lock")):
        yield path


def append_jsonl_unlocked(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line and fsync it; a torn last line is closed first so the new
    record starts on a line of its own. The caller holds :func:`locked_jsonl`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    with open(path, "ab+") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = b"\n" + line
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record under the file's lock (see :func:`append_jsonl_unlocked`)."""
    with locked_jsonl(path):
        append_jsonl_unlocked(path, record)


# --- operator text and repairs -------------------------------------------------------------

def escape_text(text: str) -> str:
    """Operator-supplied text with control characters (ANSI escapes, newlines) shown as
    escapes, so it can never forge a line or a colour in a terminal or a log."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def repairs_path(state_dir: Path) -> Path:
    return Path(state_dir) / "repairs.jsonl"


def log_repair(state_dir: Path, *, file: str, action: str, by: str, reason: str,
               at: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record an operator's repair of a state file (who, when, why, what was done)."""
    if not by.strip() or not reason.strip():
        raise ValueError("a repair needs --by and --reason")
    record = {"at": at, "file": file, "action": action, "by": escape_text(by),
              "reason": escape_text(reason), "detail": detail or {}}
    append_jsonl(repairs_path(state_dir), record)
    return record


def is_temp_name(name: str) -> bool:
    """A temporary or swap-out name of the atomic writers (never a state file or an output)."""
    return name.startswith(TEMP_PREFIXES)
