"""The book, the kill switch and the session records, read strictly, and the order of sessions.

Three kinds of files under ``data/state/`` carry the trading state from one session to the next:

- ``execution/<D>.json``: the record of session D (:class:`ExecutionRecord`). It is written
  before the session's first order (the session is *started*), after every bar that changed
  something, and last of all with a committed status: ``done`` (walked to its end),
  ``abandoned`` (closed as it stood by an operator) or ``skipped`` (not executed; marked by an
  explicit catch-up). A record with status ``running`` or ``closing`` is an *unfinished*
  session. The committed record is the session's **commit point**: the book, the equity row,
  the kill switch, the session summary and the session's alerts are written before it, each
  so that a re-run redoes it with the same result;
- ``portfolio.json``: the book after the last committed session (:class:`PortfolioFile`);
- ``kill_switch.json``: the kill switch of the last session (:class:`KillSwitchFile`).

A file that is empty, not JSON or of the wrong shape stops the command with
:class:`tasks.statefiles.StateFileError` (one line: the file, what is wrong, the remedy). A
missing ``portfolio.json`` is an empty book only before any session was executed; once the
trade log, ``equity.parquet`` or an execution record exists it is an error too.

Sessions run in calendar order (:func:`intraday_order`, :func:`daily_book`): an unfinished
session blocks every later one until it is finished (re-run: it resumes) or abandoned (logged),
a session never rewrites a later book, and sessions missing between the book and the one asked
for are refused unless an explicit, logged catch-up marks them skipped.

This module is light (pydantic, the calendar, JSON files): the command line runs these checks
before a Prefect flow starts; the flows run them again.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.data.calendar import sessions as calendar_sessions
from tasks.paths import Paths, state_dir
from tasks.statefiles import StateFileError, is_temp_name, load_json_state

OPEN = ("running", "closing")
COMMITTED = ("done", "abandoned", "skipped")
ORDER_EVENTS = ("intent", "fill", "exit", "unfilled", "reject", "cancel")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
Session = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]

REPAIR_BOOK = ("rebuild it from the last committed execution record: "
               "hcp state repair portfolio --by NAME --reason TEXT")
REPAIR_KILL = ("rebuild it from the last execution record: "
               "hcp state repair kill_switch --by NAME --reason TEXT")


class SessionOrderError(ValueError):
    """A session asked for out of order, again with other inputs, or while another one is
    unfinished; the message is one line naming the way out."""


# --- schemas -------------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class PositionRow(_Model):
    """One position of the book (extra keys: the engine's stops, marks and episode)."""

    symbol: str = Field(min_length=1)
    qty: int
    price: float = Field(gt=0)
    bucket: str = "core"
    sector: str = "unknown"
    delta: float = 1.0
    lots: int = Field(1, ge=0)


class PortfolioFile(_Model):
    """``data/state/portfolio.json``: the book the next session and the next plan start from."""

    net_liquidity: float
    cash: float | None = None
    sip_balance: float = 0.0
    as_of_session: Session | None = None
    mode: str | None = None
    positions: list[PositionRow] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> PortfolioFile:
        syms = [p.symbol for p in self.positions]
        if len(syms) != len(set(syms)):
            raise ValueError("a symbol is listed twice in positions")
        return self


class KillSwitchFile(_Model):
    """``data/state/kill_switch.json``: the kill switch of the last session."""

    session: Session
    tripped: bool


class HoldingRow(_Model):
    symbol: str = Field(min_length=1)
    qty: int
    mark: float


class WorkingRow(_Model):
    parent_id: str
    symbol: str
    side: Literal["BUY", "SELL"]
    qty: int
    purpose: str


class ExecutionRecord(_Model):
    """``data/state/execution/<D>.json``: the state of session D (see the module docstring)."""

    session: Session
    mode: str
    input_key: str
    start_nl: float
    cash: float
    sip_balance: float = 0.0
    status: Literal["running", "closing", "done", "abandoned", "skipped"]
    holdings: dict[str, HoldingRow] = Field(default_factory=dict)
    working: list[WorkingRow] = Field(default_factory=list)
    bar_index: int = -1
    halted: bool = False
    kill: dict[str, Any] | None = None
    sending: dict[str, Any] | None = None
    applied: list[str] = Field(default_factory=list)
    failures: list[dict[str, Any]] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys(self) -> ExecutionRecord:
        for sym, h in self.holdings.items():
            if h.symbol != sym:
                raise ValueError(f"holding {sym!r} names symbol {h.symbol!r}")
        return self

    @property
    def committed(self) -> bool:
        return self.status in COMMITTED

    def net_liquidity(self) -> float:
        return self.cash + sum(h.qty * h.mark for h in self.holdings.values())


# --- where the files lie -------------------------------------------------------------------

def portfolio_path(paths: Paths) -> Path:
    return state_dir(paths) / "portfolio.json"


def kill_switch_path(paths: Paths) -> Path:
    return state_dir(paths) / "kill_switch.json"


def execution_dir(paths: Paths) -> Path:
    return state_dir(paths) / "execution"


def record_path(paths: Paths, session: str) -> Path:
    return execution_dir(paths) / f"{session}.json"


def tradelog_file(paths: Paths) -> Path:
    return state_dir(paths) / "tradelog.jsonl"


def equity_file(paths: Paths) -> Path:
    return state_dir(paths) / "equity.parquet"


def rel(paths: Paths, path: Path) -> str:
    """A state file's name as messages show it (relative to the home when under it)."""
    try:
        return str(Path(path).relative_to(paths.home))
    except ValueError:
        return str(path)


# --- strict readers ------------------------------------------------------------------------

def record_sessions(paths: Paths) -> list[str]:
    """Sessions with an execution record, oldest first (temporary files are ignored)."""
    folder = execution_dir(paths)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json")
                  if not is_temp_name(p.name) and _DATE.match(p.stem))


def _status(paths: Paths, session: str) -> str | None:
    """A record's status, read cheaply (the strict read happens where the record is used)."""
    try:
        raw = json.loads(record_path(paths, session).read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return raw.get("status") if isinstance(raw, dict) else None


def history(paths: Paths) -> str | None:
    """What says that a session was committed here, so that a book must exist (None: a fresh
    home, or its first session still in progress: the book is written at its commit)."""
    days = record_sessions(paths)
    statuses = [_status(paths, d) for d in days]
    if any(s in COMMITTED for s in statuses):
        return "a committed execution record"
    if any(s in OPEN for s in statuses):
        return None  # the first session is in progress
    log = tradelog_file(paths)
    if log.is_file() and log.stat().st_size > 0:
        return "the trade log"
    if equity_file(paths).is_file():
        return "equity.parquet"
    if days:
        return "execution records"
    return None


def read_portfolio(paths: Paths) -> PortfolioFile | None:
    """portfolio.json; None only on a fresh home (no trade log, equity file or record)."""
    path = portfolio_path(paths)
    if not path.is_file():
        why = history(paths)
        if why:
            raise StateFileError(path, f"missing although {why} shows executed sessions "
                                       "(it is never taken for an empty book)", REPAIR_BOOK)
        return None
    return load_json_state(path, PortfolioFile, remedy=REPAIR_BOOK)


def record_remedy(session: str) -> str:
    return ("restore it from a backup; if it is lost, close the session with "
            f"hcp run intraday --date {session} --abandon --by NAME --reason TEXT")


def read_record(paths: Paths, session: str) -> ExecutionRecord | None:
    path = record_path(paths, session)
    rec = load_json_state(path, ExecutionRecord, remedy=record_remedy(session))
    if rec is not None and rec.session != session:
        raise StateFileError(path, f"holds session {rec.session}", record_remedy(session))
    return rec


def read_raw_record(paths: Paths, session: str) -> dict[str, Any] | None:
    """The record as a dict, validated (for :class:`tasks.execution.state.SessionState`)."""
    if read_record(paths, session) is None:
        return None
    return json.loads(record_path(paths, session).read_text())


def read_kill_switch_file(paths: Paths) -> KillSwitchFile | None:
    return load_json_state(kill_switch_path(paths), KillSwitchFile, remedy=REPAIR_KILL)


def effective_kill_switch(paths: Paths, records: dict[str, ExecutionRecord] | None = None
                          ) -> dict[str, Any]:
    """The kill switch as it stands: ``kill_switch.json``, unless the last session that ran
    says otherwise (the file missing, or behind that session): a session whose record says the
    switch tripped counts as tripped, whatever the file says."""
    ks = read_kill_switch_file(paths)
    raw = json.loads(kill_switch_path(paths).read_text()) if ks is not None else None
    recs = records if records is not None else _read_all(paths)
    ran = [r for s, r in sorted(recs.items()) if r.status != "skipped"]
    last = ran[-1] if ran else None
    if last is None:
        return raw or {"tripped": False, "session": None}
    if last.halted and not (raw and raw.get("session") == last.session and raw.get("tripped")):
        return {**(last.kill or {}), "session": last.session, "tripped": True,
                "source": rel(paths, record_path(paths, last.session)),
                "note": "kill_switch.json " + ("missing" if raw is None else
                                               f"at session {raw.get('session')}")
                        + f"; the record of {last.session} says the switch tripped"}
    if raw is None or raw.get("session", "") < last.session:
        return {"session": last.session, "tripped": False,
                "source": rel(paths, record_path(paths, last.session))}
    return raw


def last_order_session(paths: Paths, tail_bytes: int = 1 << 16) -> str | None:
    """The session of the trade log's last order record (read from its tail; a torn or
    foreign line is passed over)."""
    path = tradelog_file(paths)
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - tail_bytes))
        data = fh.read()
    lines = data.split(b"\n")
    if size > tail_bytes:
        lines = lines[1:]  # the first is likely cut
    for raw in reversed(lines):
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("event") in ORDER_EVENTS \
                and isinstance(rec.get("session"), str):
            return rec["session"]
    return None


def _read_all(paths: Paths) -> dict[str, ExecutionRecord]:
    return {s: read_record(paths, s) for s in record_sessions(paths)}


# --- the order of sessions -----------------------------------------------------------------

@dataclass
class Ledger:
    """What the state files say about executed sessions."""

    book: PortfolioFile | None
    records: dict[str, ExecutionRecord] = field(default_factory=dict)
    orphan: str | None = None  # trade-log orders of a session without a record (after the book)

    @property
    def book_session(self) -> str | None:
        return self.book.as_of_session if self.book else None

    def unfinished(self) -> list[str]:
        out = [s for s, r in self.records.items() if r.status in OPEN]
        if self.orphan:
            out.append(self.orphan)
        return sorted(set(out))

    def committed(self, session: str) -> ExecutionRecord | None:
        rec = self.records.get(session)
        return rec if rec is not None and rec.committed else None


def read_ledger(paths: Paths) -> Ledger:
    """Book, every record (strictly) and a trade-log session that has no record."""
    book = read_portfolio(paths)
    records = _read_all(paths)
    orphan = last_order_session(paths)
    if orphan and (orphan in records or (book and book.as_of_session
                                         and orphan <= book.as_of_session)):
        orphan = None
    return Ledger(book, records, orphan)


def missing_sessions(calendar: str, after: str, before: str) -> list[str]:
    """Sessions strictly between ``after`` and ``before``."""
    lo = pd.Timestamp(after) + pd.Timedelta(days=1)
    hi = pd.Timestamp(before) - pd.Timedelta(days=1)
    return [d.date().isoformat() for d in calendar_sessions(calendar, lo, hi)]


def unfinished_line(led: Ledger, paths: Paths, session: str, what: str) -> str:
    rec = led.records.get(session)
    why = (f"{rel(paths, record_path(paths, session))} is '{rec.status}'" if rec is not None
           else f"the trade log has its orders but {rel(paths, record_path(paths, session))} "
                "is missing")
    return (f"session {session} was started but not finished ({why}): finish it with "
            f"`hcp run intraday --date {session}` (the re-run resumes it) or abandon it with "
            f"`hcp run intraday --date {session} --abandon --by NAME --reason TEXT`; "
            f"{what} is not run before that")


def gap_line(paths: Paths, book_session: str, missing: list[str], command: str,
             session: str) -> str:
    return (f"the book ({rel(paths, portfolio_path(paths))}) is at session {book_session}; "
            f"{len(missing)} session(s) before {session} were not executed (first: "
            f"{missing[0]}): run them in order (`hcp run intraday --date {missing[0]}`), or "
            f"catch up explicitly with `hcp run {command} --date {session} --catch-up "
            "--by NAME --reason TEXT` (marks them skipped; the book is carried over unchanged)")


@dataclass(frozen=True)
class IntradayOrder:
    """What ``hcp run intraday --date D`` will do: ``new``, ``resume`` or ``committed``
    (a no-op when the inputs are the same), and the sessions a catch-up must mark first."""

    action: Literal["new", "resume", "committed"]
    catch_up: tuple[str, ...] = ()
    book_session: str | None = None


def intraday_order(paths: Paths, calendar: str, session: str, *, catch_up: bool = False,
                   led: Ledger | None = None) -> IntradayOrder:
    """Where session ``session`` stands in the order of sessions (or a refusal). The kill
    switch is read too: a damaged one stops the run (fail closed) until it is repaired."""
    led = led or read_ledger(paths)
    effective_kill_switch(paths, led.records)
    rec, book = led.records.get(session), led.book_session
    others = [u for u in led.unfinished() if u != session]
    if rec is not None and rec.status == "done":
        return IntradayOrder("committed", (), book)
    if rec is not None and rec.committed:
        how = {"abandoned": "abandoned", "skipped": "marked skipped by a catch-up"}[rec.status]
        note = rec.info.get("abandoned") or rec.info.get("catch_up") or {}
        by = f" by {note.get('by')} at {note.get('at')}" if note else ""
        raise SessionOrderError(f"session {session} was {how}{by}: it is committed and is "
                                "not executed again")
    if others:
        raise SessionOrderError(unfinished_line(led, paths, others[0], f"session {session}"))
    if rec is not None:  # unfinished: resume, unless a later book was committed without it
        if book and book > session:
            raise SessionOrderError(
                f"session {session} is unfinished but the book is already at the later session "
                f"{book}: finishing it would rewrite a later book; close it with `hcp run "
                f"intraday --date {session} --abandon --by NAME --reason TEXT`")
        return IntradayOrder("resume", (), book)
    if led.orphan == session:
        raise SessionOrderError(unfinished_line(led, paths, session, f"session {session}"))
    if book and book >= session:
        raise SessionOrderError(
            f"the book ({rel(paths, portfolio_path(paths))}) is already at session {book}: "
            f"session {session} cannot be executed after it (sessions run in order; a session "
            "never rewrites a later book)")
    missing = missing_sessions(calendar, book, session) if book else []
    if missing and not catch_up:
        raise SessionOrderError(gap_line(paths, book, missing, "intraday", session))
    return IntradayOrder("new", tuple(missing), book)


@dataclass(frozen=True)
class DailyBook:
    """Which book a daily run for D sizes against: ``portfolio`` (portfolio.json, at D or at
    the session before it), ``record`` (the committed record of D, for a past re-run) or
    ``none`` (a fresh home: the configured account cash); and the sessions a catch-up marks."""

    source: Literal["portfolio", "record", "none"]
    session: str | None = None
    catch_up: tuple[str, ...] = ()


def daily_book(paths: Paths, calendar: str, day: str, *, catch_up: bool = False,
               led: Ledger | None = None) -> DailyBook:
    """The book the daily run for ``day`` sizes against (or a refusal)."""
    led = led or read_ledger(paths)
    early = [u for u in led.unfinished() if u <= day]
    if early:
        raise SessionOrderError(unfinished_line(led, paths, early[0], f"the daily run for {day}"))
    if led.book is None:
        return DailyBook("none")
    book = led.book_session
    if book is None or book == day:
        return DailyBook("portfolio", book)
    if book > day:
        rec = led.committed(day)
        if rec is not None and not rec.info.get("book_unknown"):
            return DailyBook("record", day)
        raise SessionOrderError(
            f"the book is at session {book}, after {day}, and session {day} has no committed "
            f"execution record ({rel(paths, record_path(paths, day))}): the plan for {day} can "
            "only be sized against the book of its own session, which is not kept")
    missing = missing_sessions(calendar, book, day)
    if missing and not catch_up:
        raise SessionOrderError(gap_line(paths, book, missing, "daily", day))
    return DailyBook("portfolio", book, tuple(missing))


def book_of_record(rec: ExecutionRecord) -> dict[str, Any]:
    """The end-of-session book of a record, in portfolio.json's format."""
    positions = []
    for sym in sorted(rec.holdings):
        h = rec.holdings[sym].model_dump()
        mark = h.pop("mark")
        positions.append({"symbol": sym, "qty": h.pop("qty"), "price": mark,
                          **{k: v for k, v in h.items() if k != "symbol"}})
    return {"net_liquidity": rec.net_liquidity(), "cash": rec.cash,
            "sip_balance": rec.sip_balance, "as_of_session": rec.session, "mode": rec.mode,
            "positions": positions}


# --- `hcp state check` / `hcp state repair` entries (tasks.statefiles.StateSpec) -----------

def portfolio_probe(paths: Paths, settings: Any, session: str | None) -> list[Any]:
    from tasks.statefiles import OK, probe

    fs = probe("portfolio", portfolio_path(paths), lambda: read_portfolio(paths), REPAIR_BOOK)
    if fs.state == OK:
        book = read_portfolio(paths)
        fs.detail = (f"book as of {book.as_of_session or 'an unknown session'}: "
                     f"{len(book.positions)} position(s)")
    return [fs]


def _refuse_intact(states: list[Any], safe: bool, what: str) -> None:
    from tasks.statefiles import DAMAGED

    if not safe and all(fs.state != DAMAGED for fs in states):
        raise ValueError(f"{what} reads as intact: nothing to repair (pass --safe to rebuild "
                         "it anyway)")


def portfolio_repair(paths: Paths, settings: Any, request: Any) -> str:
    from tasks.execution.recovery import rebuild_portfolio

    _refuse_intact(portfolio_probe(paths, settings, None), request.safe, "portfolio.json")
    return rebuild_portfolio(paths)


def kill_switch_probe(paths: Paths, settings: Any, session: str | None) -> list[Any]:
    from tasks.statefiles import MISSING, OK, FileState, probe

    fs = probe("kill_switch", kill_switch_path(paths), lambda: read_kill_switch_file(paths),
               REPAIR_KILL)
    if fs.state in (OK, MISSING):
        try:
            ks = effective_kill_switch(paths)
        except StateFileError:
            return [fs]  # a damaged record: the execution entry names it
        state = "tripped" if ks.get("tripped") else "armed"
        src = f" (counts as {state}: {ks['note']})" if ks.get("note") else ""
        if fs.state == MISSING and ks.get("session"):
            return [FileState("kill_switch", kill_switch_path(paths), MISSING,
                              f"missing; session {ks['session']} {state}{src}", REPAIR_KILL)]
        fs.detail = f"session {ks.get('session')}: {state}{src}"
    return [fs]


def kill_switch_repair(paths: Paths, settings: Any, request: Any) -> str:
    from tasks.execution.recovery import rebuild_kill_switch
    from tasks.statefiles import OK

    states = kill_switch_probe(paths, settings, None)
    if not request.safe and all(fs.state == OK and "counts as" not in fs.detail
                                for fs in states):
        raise ValueError("kill_switch.json reads as intact: nothing to repair (pass --safe to "
                         "rebuild it anyway)")
    return rebuild_kill_switch(paths)


def execution_probe(paths: Paths, settings: Any, session: str | None) -> list[Any]:
    from tasks.statefiles import DAMAGED, OK, FileState, probe

    days = [session] if session else record_sessions(paths)
    out = []
    for day in days:
        fs = probe("execution", record_path(paths, day), lambda d=day: read_record(paths, d),
                   record_remedy(day))
        if fs.state == OK:
            fs.detail = read_record(paths, day).status
        out.append(fs)
    orphan = last_order_session(paths)
    if orphan and orphan not in record_sessions(paths) and (session in (None, orphan)):
        try:
            book = read_portfolio(paths)
        except StateFileError:
            book = None
        if not (book and book.as_of_session and orphan <= book.as_of_session):
            out.append(FileState("execution", record_path(paths, orphan), DAMAGED,
                                 "missing although the trade log has orders of session "
                                 f"{orphan}", record_remedy(orphan)))
    return out


def book_specs() -> list[Any]:
    """The table entries of the book, the kill switch and the session records
    (``tasks.statefiles.register_state_spec`` each)."""
    from tasks.statefiles import StateSpec

    return [
        StateSpec("portfolio", "the book after the last committed session "
                               "(data/state/portfolio.json)",
                  portfolio_probe, portfolio_repair, "[--safe: rebuild an intact one]"),
        StateSpec("kill_switch", "the last session's kill switch (data/state/kill_switch.json)",
                  kill_switch_probe, kill_switch_repair, "[--safe]"),
        StateSpec("execution", "the session records, the commit point of each session "
                               "(data/state/execution/<D>.json)",
                  execution_probe, None, "[--session D]"),
    ]


# --- the plan a session executes -----------------------------------------------------------

def plan_commit_problem(paths: Paths, plan_session: str) -> str | None:
    """Why the plan of ``plan_session`` (``val/plans/<D>/trade_plan.csv``) is not a committed
    output of its daily run, or None. The daily run's record ``reports/runs/daily_<D>.json``
    is its commit point: it is marked ``writing`` before the first output is replaced and holds
    every output's sha256 once all are written. No record at all: a plan put there by hand,
    taken as it is."""
    import hashlib

    plan = paths.val / "plans" / plan_session / "trade_plan.csv"
    record = paths.runs / f"daily_{plan_session}.json"
    if not plan.is_file() or not record.is_file():
        return None
    rerun = f"re-run `hcp run daily --date {plan_session}`"
    try:
        raw = json.loads(record.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"its run record {rel(paths, record)} is damaged: {rerun}"
    if not isinstance(raw, dict) or raw.get("writing"):
        return (f"the daily run for {plan_session} was interrupted while writing its outputs "
                f"({rel(paths, record)} says 'writing'): {rerun}")
    want = (raw.get("outputs") or {}).get("plan")
    if want and hashlib.sha256(plan.read_bytes()).hexdigest() != want:
        return (f"{rel(paths, plan)} is not the plan its run record {rel(paths, record)} "
                f"committed (an interrupted or foreign write): {rerun}")
    return None
