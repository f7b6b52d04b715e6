"""Quarantine after repeated kill-switch days, and the kill-switch cool-off.

``data/state/quarantine.json`` holds the kill-switch days, the quarantine and cool-off in force
and a history of every activation and clearance. Rules (``execution.quarantine_*``, runbook
defaults):

- a kill-switch day D starts a **quarantine** when D is the 3rd kill-switch day within the 10
  sessions ending at D (days already counted by an earlier activation or clearance do not
  count again); the quarantine covers the 7 sessions after D: live trading is refused, demo
  runs on (``quarantine_active`` alert with the sessions left); a quarantine that starts while
  another runs replaces it from the next session on (the older one still covers D);
- every kill-switch day puts the next session in **cool-off** ("Demo tomorrow unless
  override"): live is refused for that one session;
- only a SANITY_JUDGE answer ``stay_demo: false`` or an operator override with a reason clears
  either early (:func:`clear_quarantine`); both are written to the history and alerted.

The rule functions are pure over the state dict; the session arithmetic comes in as
``sessions_after(older, newer)`` = the number of exchange sessions in (older, newer].

The file is read strictly (:func:`read_state`, :class:`QuarantineFile`). Damaged (empty,
garbled, of the wrong shape, a quarantine lost that its history activated), missing while the
execution records show kill-switch days (or a repair was logged for it), or missing a
kill-switch day those records show, it is never replaced by an empty state:
:func:`load_state` then answers a state that :func:`status` reads as an ACTIVE quarantine
(live refused) until an operator repairs the file (``hcp state repair quarantine``,
:func:`rebuild_state`); a writer (a kill-switch day, a clearance) refuses to touch it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from tasks.alerts import raise_alert
from tasks.io import atomic_write_json, exclusive_lock
from tasks.paths import Paths
from tasks.settings import AppSettings
from tasks.statefiles import StateFileError, escape_text, load_json_state, read_jsonl

IsoDay = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
#: The key of the state :func:`load_state` answers for a file that cannot be trusted.
DAMAGED = "damaged"

SessionsAfter = Callable[[str, str], int]
SOURCES = ("sanity_judge", "operator")


class QuarantineError(ValueError):
    """A quarantine override the rules forbid."""


@dataclass(frozen=True)
class Rules:
    kill_days: int = 3
    window_sessions: int = 10
    quarantine_sessions: int = 7

    @classmethod
    def of(cls, settings: AppSettings) -> Rules:
        e = settings.execution
        return cls(e.quarantine_kill_days, e.quarantine_window_sessions, e.quarantine_sessions)


@dataclass(frozen=True)
class Status:
    """Whether live trading is refused in a session, and why."""

    active: bool
    kind: Literal["quarantine", "kill_switch_cooloff", "damaged_state"] | None = None
    days_left: int = 0
    start: str | None = None
    detail: str | None = None

    def describe(self) -> str:
        if not self.active:
            return "none"
        if self.kind == "damaged_state":
            return f"counted as an active quarantine until repaired: {self.detail}"
        if self.kind == "quarantine":
            return f"demo quarantine since {self.start}: {self.days_left} session(s) left"
        return f"kill-switch cool-off after {self.start}: demo this session unless overridden"


def empty_state() -> dict[str, Any]:
    return {"kill_days": [], "counted_after": None, "quarantine": None, "cooloff": None,
            "history": []}


def quarantine_path(paths: Paths) -> Path:
    return paths.data / "state" / "quarantine.json"


REMEDY = ("repair it with `hcp state repair quarantine --by NAME --reason TEXT` (rebuilds the "
          "kill-switch days from the execution records, else writes an active quarantine); "
          "until then it counts as an active quarantine")


class _Cleared(BaseModel):
    model_config = ConfigDict(extra="allow")
    at: str
    by: str
    reason: str
    source: str


class _Follows(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str = IsoDay
    sessions: PositiveInt


class _Quarantine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str = IsoDay
    sessions: PositiveInt
    cleared: _Cleared | None
    kill_days: list[str]
    follows: _Follows | None = None
    repaired: dict[str, Any] | None = None


class _Cooloff(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: str = IsoDay
    cleared: _Cleared | None


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")
    event: str
    at: str


class QuarantineFile(BaseModel):
    """``data/state/quarantine.json``: every key required (an emptied file is damaged)."""

    model_config = ConfigDict(extra="forbid")
    kill_days: list[str]
    counted_after: str | None
    quarantine: _Quarantine | None
    cooloff: _Cooloff | None
    history: list[_Event]

    @model_validator(mode="after")
    def _consistent(self) -> QuarantineFile:
        for day in self.kill_days:
            if len(day) != 10 or day[4] != "-" or day[7] != "-":
                raise ValueError(f"kill day {day!r} is not YYYY-MM-DD")
        if self.quarantine is None and any(e.event == "activated" for e in self.history):
            raise ValueError("its history activated a quarantine that is no longer there")
        if self.cooloff is None and self.kill_days:
            raise ValueError("it has kill-switch days but no cool-off")
        return self


_TRIPPED = {"execution": re.compile(rb'"halted"\s*:\s*true'),
            "sessions": re.compile(rb'"kill_switch"\s*:\s*true')}


def kill_day_evidence(paths: Paths) -> list[str]:
    """Kill-switch days the execution layer recorded: sessions whose working state
    (``data/state/execution/<D>.json``, ``halted``) or summary (``data/state/sessions/<D>.json``,
    ``kill_switch``) shows the kill switch tripped, and the last session's ``kill_switch.json``.
    The records are searched, not parsed (a long history stays cheap to check)."""
    state = paths.data / "state"
    days: set[str] = set()
    for sub, pattern in _TRIPPED.items():
        folder = state / sub
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if f.name.startswith("."):
                continue
            try:
                if pattern.search(f.read_bytes()):
                    days.add(f.stem)
            except OSError:
                continue
    try:
        kill = json.loads((state / "kill_switch.json").read_bytes())
    except (ValueError, OSError):
        kill = None
    if isinstance(kill, dict) and kill.get("tripped") and isinstance(kill.get("session"), str):
        days.add(kill["session"])
    return sorted(days)


def _repair_logged(paths: Paths) -> bool:
    from tasks.statefiles import repairs_path

    return any(r.get("file") == "quarantine"
               for r in read_jsonl(repairs_path(paths.data / "state")).records)


def read_state(paths: Paths) -> dict[str, Any]:
    """The quarantine state, strictly: :class:`StateFileError` when the file is damaged, or
    missing (or missing a kill-switch day) although the execution records show kill days."""
    path = quarantine_path(paths)
    evidence = kill_day_evidence(paths)
    found = load_json_state(path, QuarantineFile, remedy=REMEDY,
                            required=bool(evidence) or _repair_logged(paths))
    if found is None:
        return empty_state()
    lost = sorted(set(evidence) - set(found.kill_days))
    if lost:
        raise StateFileError(path, f"lacks the kill-switch day(s) {', '.join(lost)} the "
                                   "execution records show", REMEDY)
    return found.model_dump(mode="json", exclude_unset=True)


def load_state(paths: Paths) -> dict[str, Any]:
    """The quarantine state; for a file that cannot be trusted a state :func:`status` reads
    as an active quarantine (``damaged``: the one-line reason), never an empty one."""
    try:
        return read_state(paths)
    except StateFileError as exc:
        return {**empty_state(), DAMAGED: str(exc), "damaged_file": str(exc.path)}


def state_lock(paths: Paths):
    """Exclusive lock for a read-modify-write of the quarantine file."""
    return exclusive_lock(quarantine_path(paths).with_name(".quarantine.lock"))


def _refuse_damaged(state: dict[str, Any]) -> None:
    if state.get(DAMAGED):
        raise StateFileError(Path(str(state.get("damaged_file") or "quarantine.json")),
                             "cannot be changed while it is damaged", REMEDY)


def save_state(paths: Paths, state: dict[str, Any]) -> Path:
    _refuse_damaged(state)
    QuarantineFile.model_validate(state)  # never write what the reader would refuse
    return atomic_write_json(quarantine_path(paths), state)


def counted_kill_days(state: dict[str, Any], window: list[str]) -> list[str]:
    """Kill-switch days inside ``window`` (session dates) not counted before."""
    after = state.get("counted_after") or ""
    inside = set(window)
    return sorted(d for d in state["kill_days"] if d in inside and d > after)


def record_kill_day(state: dict[str, Any], session: str, window: list[str], rules: Rules,
                    at: str) -> tuple[dict[str, Any], bool]:
    """A new state with ``session`` as a kill-switch day; True when it starts a quarantine.

    ``window``: the ``rules.window_sessions`` exchange sessions ending at ``session``."""
    _refuse_damaged(state)
    new = copy.deepcopy(state)
    if session not in new["kill_days"]:
        new["kill_days"] = sorted([*new["kill_days"], session])
    new["cooloff"] = {"after": session, "cleared": None}
    days = counted_kill_days(new, window)
    if len(days) < rules.kill_days:
        return new, False
    old = new.get("quarantine")
    new["quarantine"] = {"start": session, "sessions": rules.quarantine_sessions, "cleared": None,
                         "kill_days": days}
    if old and not old.get("cleared"):
        # a quarantine still running on its successor's start day keeps covering that day
        new["quarantine"]["follows"] = {k: old[k] for k in ("start", "sessions")}
    new["counted_after"] = session
    new["history"].append({"event": "activated", "session": session, "at": at, "kill_days": days,
                           "sessions": rules.quarantine_sessions})
    return new, True


def _left(block: dict[str, Any] | None, key: str, length: int, session: str,
          sessions_after: SessionsAfter) -> int | None:
    """Sessions since the block's start (None when there is no uncleared block)."""
    if not block or block.get("cleared"):
        return None
    n = sessions_after(block[key], session)
    return n if n <= length else None


def status(state: dict[str, Any], session: str, sessions_after: SessionsAfter) -> Status:
    """Quarantine or cool-off in force for ``session`` (a quarantine covers the N sessions after
    its start; a cool-off the one session after a kill-switch day). A state read from a file
    that cannot be trusted is an active quarantine."""
    if state.get(DAMAGED):
        return Status(True, "damaged_state", 0, None, str(state[DAMAGED]))
    q = state.get("quarantine")
    n = _left(q, "start", q["sessions"] if q else 0, session, sessions_after)
    if n is not None and n >= 1:
        return Status(True, "quarantine", q["sessions"] - n + 1, q["start"])
    prev = q.get("follows") if q and not q.get("cleared") else None
    n = _left(prev, "start", prev["sessions"] if prev else 0, session, sessions_after)
    if prev and n is not None and n >= 1:
        return Status(True, "quarantine", prev["sessions"] - n + 1, prev["start"])
    c = state.get("cooloff")
    n = _left(c, "after", 1, session, sessions_after)
    if n == 1:
        return Status(True, "kill_switch_cooloff", 1, c["after"])
    return Status(False)


def clearable(state: dict[str, Any], session: str, sessions_after: SessionsAfter) -> list[str]:
    """What an override on ``session`` would clear: a quarantine or cool-off pending or active."""
    _refuse_damaged(state)
    q, c = state.get("quarantine"), state.get("cooloff")
    out = []
    if _left(q, "start", q["sessions"] if q else 0, session, sessions_after) is not None:
        out.append("quarantine")
    if _left(c, "after", 1, session, sessions_after) is not None:
        out.append("cooloff")
    return out


def apply_clearance(state: dict[str, Any], what: list[str], entry: dict[str, Any]
                    ) -> dict[str, Any]:
    """A new state with ``what`` cleared by ``entry`` (at, by, reason, source)."""
    new = copy.deepcopy(state)
    for key in what:
        new[key]["cleared"] = entry
    last = max(new["kill_days"], default=None)
    new["counted_after"] = max(filter(None, [new.get("counted_after"), last]), default=None)
    new["history"].append({"event": "cleared", **entry, "cleared": what})
    return new


def _validate(by: str, reason: str, source: str, answer: dict[str, Any] | None) -> None:
    if source not in SOURCES:
        raise QuarantineError(f"quarantine override source {source!r} is not allowed; only "
                              f"{' or '.join(SOURCES)} may clear a quarantine")
    if not (by or "").strip():
        raise QuarantineError("a quarantine override must name who gives it (by)")
    if not (reason or "").strip():
        raise QuarantineError("a quarantine override needs a reason (it is logged)")
    if source == "sanity_judge" and answer is not None and answer.get("stay_demo") is not False:
        raise QuarantineError(f"SANITY_JUDGE answered stay_demo={answer.get('stay_demo')!r}: "
                              "the quarantine stays (only stay_demo: false clears it)")


def clear_quarantine(paths: Paths, settings: AppSettings, *, at: str, by: str, reason: str,
                     source: str, answer: dict[str, Any] | None = None,
                     session: str | None = None) -> dict[str, Any]:
    """Clear a pending or active quarantine / cool-off early; returns the new state.

    ``source``: "sanity_judge" (pass the judge's ``answer``: it must say ``stay_demo: false``)
    or "operator" (with a reason). ``session`` defaults to the date of ``at``. Raises
    :class:`QuarantineError` when the rules forbid it or nothing is to be cleared, and
    :class:`StateFileError` when the file cannot be trusted. ``by`` and ``reason`` are stored
    escaped (:func:`tasks.statefiles.escape_text`)."""
    from tasks.execution.sessions import sessions_after

    _validate(by, reason, source, answer)
    by, reason = escape_text(by), escape_text(reason)
    day = session or at[:10]
    with state_lock(paths):
        state = read_state(paths)
        after = sessions_after(settings.data.calendar)
        what = clearable(state, day, after)
        if not what:
            raise QuarantineError(f"no quarantine or kill-switch cool-off to clear on {day}")
        entry = {"at": at, "session": day, "by": by, "reason": reason, "source": source}
        new = apply_clearance(state, what, entry)
        save_state(paths, new)
    raise_alert(paths, "quarantine_cleared", session=day, at=at, level="WARN", key=f"{at}|{day}",
                data={"by": f"{by} ({source})", "reason": reason, "cleared": what})
    return new


def rebuild_state(paths: Paths, settings: AppSettings, *, at: str, safe_session: str | None,
                  ) -> tuple[dict[str, Any], str]:
    """A state rebuilt for a repair: the kill-switch days of the execution records replayed
    through the rules (clearances cannot be recovered: a quarantine they start is active); with
    no such day, an explicit active quarantine starting at ``safe_session`` (the book's
    session). Returns the state and what was done, in words."""
    from tasks.execution.sessions import window

    rules = Rules.of(settings)
    days = kill_day_evidence(paths)
    state = empty_state()
    for day in days:
        state, _ = record_kill_day(state, day, window(settings.data.calendar, day,
                                                      rules.window_sessions), rules, at)
    if days:
        how = f"rebuilt from {len(days)} kill-switch day(s) of the execution records"
    else:
        if not safe_session:
            raise QuarantineError("no kill-switch day in the execution records and no session "
                                  "to start the safe quarantine from: pass --session D")
        state["quarantine"] = {"start": safe_session, "sessions": rules.quarantine_sessions,
                               "cleared": None, "kill_days": [],
                               "repaired": {"at": at, "reason": "quarantine file lost"}}
        state["history"].append({"event": "activated", "session": safe_session, "at": at,
                                 "kill_days": [], "sessions": rules.quarantine_sessions,
                                 "repair": True})
        how = (f"no kill-switch day in the execution records: quarantine written active from "
               f"{safe_session} ({rules.quarantine_sessions} sessions; `hcp quarantine clear` "
               "lifts it)")
    state["history"].append({"event": "repaired", "at": at, "detail": how})
    with state_lock(paths):
        save_state(paths, state)
    return state, how
