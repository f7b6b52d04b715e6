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


def remove_temp_files(folder: Path, older_than_s: float = 0.0) -> list[Path]:
    """Remove the atomic writers' leftovers in ``folder`` (not below it): ``.tmp-*`` / ``.old-*``
    files and folders a killed process left behind. ``older_than_s`` spares younger ones, where
    another process may be writing into the folder right now (a leftover is only ever seconds
    old while its writer lives). Returns what was removed."""
    import shutil
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, gone = time.time(), []
    for entry in folder.iterdir():
        if not is_temp_name(entry.name):
            continue
        try:
            if now - entry.lstat().st_mtime < older_than_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # its writer finished (renamed or removed it) meanwhile
            continue
        gone.append(entry)
    return gone


# --- the table of state files: ``hcp state check`` and ``hcp state repair`` ------------------

#: What ``hcp state check`` says of one file.
OK, MISSING, DAMAGED = "ok", "missing", "damaged"


@dataclass
class FileState:
    """One state file as ``hcp state check`` lists it: ``ok``, ``missing`` (not written yet,
    and nothing says it should be) or ``damaged`` (``error`` holds the one-line reason)."""

    spec: str
    path: Path
    state: str
    detail: str = ""
    remedy: str = ""
    error: StateFileError | None = None


def probe(spec: str, path: Path, read: Any, remedy: str = "") -> FileState:
    """Run ``read()`` (a strict reader of ``path``) and say what state the file is in."""
    path = Path(path)
    exists = path.is_file()
    try:
        read()
    except StateFileError as exc:
        return FileState(spec, exc.path, DAMAGED, exc.problem, exc.remedy, exc)
    if exists:
        return FileState(spec, path, OK)
    return FileState(spec, path, MISSING, "not written yet (nothing says it should exist)", remedy)


@dataclass
class RepairRequest:
    """An operator's repair: who, why, when; ``session`` / ``target`` (a version, a baseline
    id) where the file needs one; ``safe``: write the safe state even where evidence could
    rebuild the file (or where the file reads as intact)."""

    by: str
    reason: str
    at: str
    session: str | None = None
    target: str | None = None
    safe: bool = False


@dataclass
class StateSpec:
    """One kind of state file in the table: ``probe(paths, settings, session)`` lists its
    files (only the session's per-session files when ``session`` is given);
    ``repair(paths, settings, request)`` rebuilds or writes the safe state and returns what it
    did in words (None: no repair command; the remedy says what to do)."""

    name: str
    what: str
    probe: Any
    repair: Any = None
    options: str = ""


#: The table ``hcp state`` works from, by name (:func:`register_state_spec` adds an entry).
STATE_SPECS: dict[str, StateSpec] = {}


def register_state_spec(spec: StateSpec) -> StateSpec:
    STATE_SPECS[spec.name] = spec
    return spec


def probe_states(paths: Any, settings: Any, names: list[str] | None = None,
                 session: str | None = None) -> list[FileState]:
    """Every file of the named specs (all when None), in table order."""
    unknown = sorted(set(names or []) - set(STATE_SPECS))
    if unknown:
        raise ValueError(f"unknown state file kind(s) {', '.join(unknown)}; known: "
                         f"{', '.join(STATE_SPECS)}")
    return [fs for name, spec in STATE_SPECS.items() if names is None or name in names
            for fs in spec.probe(paths, settings, session)]


def require_states(paths: Any, settings: Any, names: list[str],
                   session: str | None = None) -> None:
    """Raise the first damaged file's :class:`StateFileError` (for the checks before a flow)."""
    for fs in probe_states(paths, settings, names, session):
        if fs.state == DAMAGED:
            raise fs.error or StateFileError(fs.path, fs.detail, fs.remedy)


def run_repair(paths: Any, settings: Any, name: str, request: RepairRequest) -> dict[str, Any]:
    """Repair one kind of state file and log it (:func:`log_repair`); returns the log record."""
    spec = STATE_SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown state file kind {name!r}; known: {', '.join(STATE_SPECS)}")
    if spec.repair is None:
        raise ValueError(f"{name} has no repair command: `hcp state check` says what to do")
    if not request.by.strip() or not request.reason.strip():
        raise ValueError("a repair needs --by and --reason")
    done = spec.repair(paths, settings, request)
    detail = {k: v for k, v in (("session", request.session), ("target", request.target),
                                ("safe", request.safe)) if v}
    return log_repair(Path(paths.data) / "state", file=name, action=done, by=request.by,
                      reason=request.reason, at=request.at, detail=detail)
