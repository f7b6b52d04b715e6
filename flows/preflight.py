"""Checks the command line makes before it starts a flow (and with it Prefect).

A date that is no session, a date past the store's last bar, no active model or no plan to
execute would otherwise surface tens of seconds later, from inside a flow run, as a traceback
(or, for a missing plan, not at all). Each check here raises :class:`Refused` with one line that
says what is wrong and what to run; the command line prints it and exits 2.

Only light modules are imported: settings, the calendar, JSON files on disk. The flows, the model
code and the execution layer take seconds to import, so the few facts needed from them (where
the registry and the plans lie) are read here directly.

The state files a command's flow reads are checked here too (:func:`state_files`, the table of
:mod:`tasks.statespecs`): a damaged one stops the command with the one line of its
:class:`~tasks.statefiles.StateFileError` (the file, what is wrong, the repair) before Prefect
starts, instead of a traceback from inside a flow run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.data.calendar import _calendar, previous_session, sessions
from tasks.paths import Paths
from tasks.settings import AppSettings

#: How a calendar is named in messages (others by their exchange_calendars code).
CALENDAR_NAMES = {"XNYS": "NYSE", "XNAS": "Nasdaq"}


class Refused(ValueError):
    """A command cannot do anything useful with its inputs; the message is one line."""


def _iso(day: pd.Timestamp) -> str:
    return day.date().isoformat()


def parse_day(text: str, what: str, accepted: str = "YYYY-MM-DD") -> pd.Timestamp:
    """A date option as a timestamp (midnight); a malformed one is refused naming ``accepted``."""
    try:
        day = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise Refused(f"{what} {text!r} is not a date ({accepted})") from exc
    if pd.isna(day):
        raise Refused(f"{what} {text!r} is not a date ({accepted})")
    return day.tz_localize(None).normalize() if day.tz else day.normalize()


def store_span(paths: Paths) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last session of the bar store (its manifest)."""
    path = paths.store / "manifest.json"
    if not path.is_file():
        raise Refused(f"no bar store at {paths.store}: run `hcp data import` first")
    manifest = json.loads(path.read_text())
    return pd.Timestamp(manifest["first_date"]), pd.Timestamp(manifest["last_date"])


def nearest_sessions(code: str, day: pd.Timestamp) -> tuple[pd.Timestamp | None,
                                                            pd.Timestamp | None]:
    """The last session before ``day`` and the first after it (None beyond the calendar)."""
    near = sessions(code, day - pd.Timedelta(days=30), day + pd.Timedelta(days=30))
    before, after = near[near < day], near[near > day]
    return (before[-1] if len(before) else None), (after[0] if len(after) else None)


def _why_closed(code: str, day: pd.Timestamp) -> str:
    """``Sunday``, ``holiday: Good Friday`` or ``holiday``."""
    if day.dayofweek >= 5:
        return day.day_name()
    cal = _calendar(code)
    names = cal.regular_holidays.holidays(day, day, return_name=True) \
        if cal.regular_holidays is not None else pd.Series(dtype=object)
    return f"holiday: {names.iloc[0]}" if len(names) else "holiday"


def require_session(code: str, day: pd.Timestamp) -> None:
    """Refuse a weekend or holiday, naming the nearest sessions before and after it."""
    if len(sessions(code, day, day)) == 1:
        return
    before, after = nearest_sessions(code, day)
    near = ", ".join(_iso(d) for d in (before, after) if d is not None) or "none within 30 days"
    raise Refused(f"{_iso(day)} is not a {CALENDAR_NAMES.get(code, code)} session "
                  f"({_why_closed(code, day)}); nearest sessions: {near}")


def require_in_store(day: pd.Timestamp, paths: Paths, what: str = "") -> None:
    """Refuse a session the store holds no bars for (before its first or after its last)."""
    first, last = store_span(paths)
    label = f"{what} {_iso(day)}" if what else _iso(day)
    if day > last:
        raise Refused(f"{label} is after the store's last session {_iso(last)}: import newer "
                      "bars first (`hcp data import`)")
    if day < first:
        raise Refused(f"{label} is before the store's first session {_iso(first)}")


def daily_session(date: str | None, paths: Paths, settings: AppSettings,
                  today: pd.Timestamp | None = None) -> pd.Timestamp:
    """The session of ``hcp run daily --date``: 'latest' (the store's last session),
    'previous-session' (the last session before today) or a session YYYY-MM-DD the store
    holds."""
    code = settings.data.calendar
    if date in (None, "", "latest"):
        return store_span(paths)[1]
    if date == "previous-session":
        now = today if today is not None else pd.Timestamp.now().normalize()
        day = previous_session(code, now - pd.Timedelta(days=1))
    else:
        day = parse_day(date, "date", "YYYY-MM-DD, latest or previous-session")
    require_in_store(day, paths)
    require_session(code, day)
    state_files(paths, settings, DAILY_STATE, day)
    return day


def nightly_session(date: str, paths: Paths, settings: AppSettings,
                    today: pd.Timestamp | None = None) -> pd.Timestamp:
    """The session of ``hcp run nightly --date``: 'today' (the last session on or before
    today), 'latest' or a session YYYY-MM-DD; its outcomes need the store's bars up to it."""
    if date == "today":
        now = today if today is not None else pd.Timestamp.now().normalize()
        day = previous_session(settings.data.calendar, now)
        require_in_store(day, paths)
        state_files(paths, settings, DAILY_STATE, day)
    else:
        if date not in (None, "", "latest"):
            parse_day(date, "date", "YYYY-MM-DD, today or latest")
        day = daily_session(date, paths, settings, today)
    if settings.trust.enabled:
        state_files(paths, settings, NIGHTLY_STATE, day)
    return day


def intraday_session(date: str, paths: Paths, settings: AppSettings,
                     simulated: bool) -> pd.Timestamp:
    """The session of ``hcp run intraday --date``; simulated bars come from the store's daily
    bars of that session, so then the store must hold it."""
    day = parse_day(date, "date")
    if simulated:
        require_in_store(day, paths)
    require_session(settings.data.calendar, day)
    state_files(paths, settings, INTRADAY_STATE, day)
    return day


def replay_span(start: str, end: str, paths: Paths, settings: AppSettings
                ) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last session of ``hcp replay --start --end`` (the bounds may fall on closed
    days; the span must hold a session and end by the store's last bar)."""
    s, e = parse_day(start, "replay start"), parse_day(end, "replay end")
    if e < s:
        raise Refused(f"replay end {_iso(e)} is before its start {_iso(s)}")
    first, last = store_span(paths)
    if e > last:
        raise Refused(f"replay end {_iso(e)} is after the store's last session {_iso(last)}: "
                      f"end the replay by {_iso(last)} or import newer bars (`hcp data import`)")
    if s < first:
        raise Refused(f"replay start {_iso(s)} is before the store's first session "
                      f"{_iso(first)}")
    code = settings.data.calendar
    days = sessions(code, s, e)
    if days.empty:
        raise Refused(f"no {CALENDAR_NAMES.get(code, code)} session between {_iso(s)} and "
                      f"{_iso(e)}")
    state_files(paths, settings, ["policy"])
    return days[0], days[-1]


def _active_manifest(paths: Paths) -> dict[str, Any]:
    """The active baseline's manifest, read strictly (a damaged registry or manifest is one
    line naming the file)."""
    from tasks.models.manifests import manifest_path, read_manifest_file, read_registry_file

    active = read_registry_file(paths).get("active")
    if not active:
        raise Refused("no active model: run `hcp train` (or `hcp promote --to active --id ID`)")
    if not manifest_path(paths, active).is_file():
        raise Refused(f"the active model {active} is missing from {paths.models}: run "
                      "`hcp train` (or `hcp promote --to active --id ID`)")
    meta = read_manifest_file(paths, active) or {}
    if "payoff" not in meta:
        raise Refused(f"the active model {active} predates the payoff statistics the plan "
                      "needs: retrain it (`hcp train`)")
    return meta


def active_model(paths: Paths, settings: AppSettings | None = None) -> dict[str, Any]:
    """The manifest of the active baseline (as flows.daily.load_models needs it); the registry,
    the slotted baselines' manifests and cut points checked."""
    meta = _active_manifest(paths)
    state_files(paths, settings, MODEL_STATE)
    return meta


def replay_model(paths: Paths, first: pd.Timestamp) -> None:
    """The active model, trained on bars before the replay's first session (point in time)."""
    meta = _active_manifest(paths)
    trained_to = (meta.get("training_span") or {}).get("end")
    if trained_to and pd.Timestamp(trained_to) >= first:
        raise Refused(f"active baseline {meta.get('id', '?')} was trained on bars up "
                      f"to {trained_to}, not before the first replayed session {_iso(first)}: "
                      f"train one with `hcp train --train-end <a date before {_iso(first)}>` "
                      "and promote it")
    state_files(paths, None, MODEL_STATE)


def backtest_model(paths: Paths, first: pd.Timestamp) -> str:
    """The active baseline keeps walk-forward fold models covering the backtest's first
    session (so every session is scored out of sample); its id."""
    meta = _active_manifest(paths)
    bid = meta.get("id", "?")
    folds = sorted((meta.get("fold_models") or {}).get("folds") or [],
                   key=lambda f: f["test_start"])
    if not folds:
        raise Refused(f"active baseline {bid} keeps no walk-forward fold models: retrain it "
                      "with `hcp train` to backtest it")
    if first < pd.Timestamp(folds[0]["test_start"]):
        raise Refused(f"no out-of-sample model for {_iso(first)}: active baseline {bid}'s first "
                      f"walk-forward test block starts {folds[0]['test_start']} (start the "
                      "backtest there or later)")
    state_files(paths, None, MODEL_STATE)
    return bid


#: The state files each command's flow reads (names of :mod:`tasks.statespecs`' table).
DAILY_STATE = ["policy", "budget", "escalation-record"]
MODEL_STATE = ["registry", "model"]
NIGHTLY_STATE = ["trust"]      # besides DAILY_STATE: the nightly run updates the trust state
INTRADAY_STATE = ["quarantine", "operator", "policy", "registry", "model", "budget",
                  "escalation-record"]
STATUS_STATE = None  # every file of the table


def state_files(paths: Paths, settings: AppSettings | None, names: list[str] | None,
                day: pd.Timestamp | str | None = None) -> None:
    """Stop with the first damaged state file's one line (the file, what is wrong, the
    repair) among ``names`` (``day``: the session of the per-session files)."""
    import tasks.statespecs  # noqa: F401  (fills the table)
    from tasks.statefiles import require_states

    session = _iso(day) if isinstance(day, pd.Timestamp) else day
    require_states(paths, settings, names, session)


def plan_to_execute(paths: Paths, settings: AppSettings, day: pd.Timestamp) -> Path:
    """The plan session ``day`` executes: the daily run of the session before wrote it
    (``val/plans/<D-1>/trade_plan.csv``, tasks.execution.inputs' layout)."""
    before = _iso(previous_session(settings.data.calendar, day - pd.Timedelta(days=1)))
    path = paths.val / "plans" / before / "trade_plan.csv"
    if not path.is_file():
        raise Refused(f"no plan for session {_iso(day)}: it executes the plan of {before}, "
                      f"which does not exist; run `hcp run daily --date {before}` first")
    return path


# --- the book, the kill switch and the session records ------------------------------------
# Read strictly and in session order before a flow starts (tasks.execution.ledger is light:
# pydantic, the calendar and JSON files): a damaged file is a one-line StateFileError naming
# it and its repair, an out-of-order session a one-line SessionOrderError naming the way out.

def intraday_order(paths: Paths, settings: AppSettings, day: pd.Timestamp,
                   catch_up: bool = False) -> Any:
    """Where ``hcp run intraday --date D`` stands in the order of sessions: refuses an
    unfinished earlier session, a later book, a gap (unless ``catch_up``), and a new session
    whose plan is not its daily run's committed output."""
    from tasks.execution import ledger

    session = _iso(day)
    order = ledger.intraday_order(paths, settings.data.calendar, session, catch_up=catch_up)
    if order.action == "new":
        before = _iso(previous_session(settings.data.calendar, day - pd.Timedelta(days=1)))
        problem = ledger.plan_commit_problem(paths, before)
        if problem:
            raise Refused(f"session {session} executes the plan of {before}, but {problem}")
    return order


def daily_order(paths: Paths, settings: AppSettings, day: pd.Timestamp,
                catch_up: bool = False) -> Any:
    """The book ``hcp run daily --date D`` sizes against (the book of its own session):
    refuses an unfinished session up to D, a gap (unless ``catch_up``) and a past session
    whose committed record is not kept."""
    from tasks.execution import ledger

    return ledger.daily_book(paths, settings.data.calendar, _iso(day), catch_up=catch_up)


def operator_note(by: str | None, reason: str | None, what: str) -> tuple[str, str]:
    """``--by`` and ``--reason`` of a logged operator action (both required, not blank)."""
    if not (by or "").strip() or not (reason or "").strip():
        raise Refused(f"{what} needs --by NAME and --reason TEXT (it is logged)")
    return str(by), str(reason)
