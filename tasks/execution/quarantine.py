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
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tasks.alerts import raise_alert
from tasks.io import atomic_write_json
from tasks.paths import Paths
from tasks.settings import AppSettings

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
    kind: Literal["quarantine", "kill_switch_cooloff"] | None = None
    days_left: int = 0
    start: str | None = None

    def describe(self) -> str:
        if not self.active:
            return "none"
        if self.kind == "quarantine":
            return f"demo quarantine since {self.start}: {self.days_left} session(s) left"
        return f"kill-switch cool-off after {self.start}: demo this session unless overridden"


def empty_state() -> dict[str, Any]:
    return {"kill_days": [], "counted_after": None, "quarantine": None, "cooloff": None,
            "history": []}


def quarantine_path(paths: Paths) -> Path:
    return paths.data / "state" / "quarantine.json"


def load_state(paths: Paths) -> dict[str, Any]:
    path = quarantine_path(paths)
    return {**empty_state(), **json.loads(path.read_text())} if path.is_file() else empty_state()


def save_state(paths: Paths, state: dict[str, Any]) -> Path:
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
    its start; a cool-off the one session after a kill-switch day)."""
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
    :class:`QuarantineError` when the rules forbid it or nothing is to be cleared."""
    from tasks.execution.sessions import sessions_after

    _validate(by, reason, source, answer)
    day = session or at[:10]
    state = load_state(paths)
    after = sessions_after(settings.data.calendar)
    what = clearable(state, day, after)
    if not what:
        raise QuarantineError(f"no quarantine or kill-switch cool-off to clear on {day}")
    entry = {"at": at, "session": day, "by": by, "reason": reason, "source": source}
    new = apply_clearance(state, what, entry)
    save_state(paths, new)
    raise_alert(paths, "quarantine_cleared", session=day, at=at, level="WARN", key=at,
                data={"by": f"{by} ({source})", "reason": reason, "cleared": what})
    return new
