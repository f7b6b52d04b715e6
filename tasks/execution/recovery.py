"""The operator's ways out of a broken order of sessions, and the book's rebuilds.

- :func:`mark_skipped` (``--catch-up --by --reason``): the sessions missing between the book and
  the one asked for are marked ``skipped``, in order: each gets a committed execution record
  carrying the book unchanged (positions, cash, marks and stops as they were; holdings age by
  one session per skipped session, so the holding-period timeout still applies), and
  ``portfolio.json`` moves to it. No order is placed, no equity row is written: the next
  executed session's P&L holds the price moves of the skipped span. Logged in
  ``data/state/repairs.jsonl`` before anything is written.
- :func:`abandon_session` (``hcp run intraday --date D --abandon --by --reason``): an unfinished
  session is closed as it stands, with no new order: the order in flight is completed from the
  broker's record (never re-sent; without a broker record it is cancelled), every working order
  is cancelled, holdings age by one session, and the session is committed with status
  ``abandoned`` (summary, equity row, book, kill switch, alerts, record). Every fill the trade
  log holds for D is in the book. A session whose record is lost or damaged (the damaged file
  is moved aside) gets a marker record carrying the book before it: its trade-log orders, if
  any, are then not in the book (the message counts them). Logged first.
- :func:`rebuild_portfolio` / :func:`rebuild_kill_switch`: ``hcp state repair portfolio`` /
  ``kill_switch``. The book is rebuilt from the last committed execution record: that record
  is the session's commit point and holds its whole end-of-session state (cash after fees,
  dividends and cash in lieu, the SIP balance, every holding with its mark, stops, high-water
  mark and episode); ``portfolio.json`` is written from exactly that state in the same commit,
  just before the record. The trade log holds the orders and fills only: no starting book,
  corporate actions, marks or stops, so it cannot rebuild a book on its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tasks.execution import ledger
from tasks.execution.state import (
    SessionState,
    kill_switch_of,
    load_portfolio,
    portfolio_json,
    save_kill_switch,
    save_portfolio,
    save_session_state,
)
from tasks.io import atomic_write_json, file_hash
from tasks.paths import Paths
from tasks.settings import AppSettings
from tasks.statefiles import StateFileError, escape_text, log_repair


def _note(by: str, reason: str, at: str, **more: Any) -> dict[str, Any]:
    if not by.strip() or not reason.strip():
        raise ValueError("this needs --by NAME and --reason TEXT (it is logged)")
    return {"by": escape_text(by), "reason": escape_text(reason), "at": at, **more}


def _carry(paths: Paths, settings: AppSettings, session: str, status: str, info: dict[str, Any]
           ) -> SessionState:
    """A committed record of ``session`` that carries the current book over unchanged."""
    book = load_portfolio(paths, settings)
    file = ledger.read_portfolio(paths)
    holdings = {s: replace(h, sessions_held=h.sessions_held + 1) for s, h in book.holdings.items()}
    return SessionState(session, (file.mode if file else None) or settings.execution.mode,
                        status, book.net_liquidity, book.cash, book.sip_balance, holdings,
                        start_values={s: h.qty * h.mark for s, h in book.holdings.items()},
                        buckets={s: h.bucket for s, h in book.holdings.items()},
                        status=status, info={**info, "book_carried_from": book.as_of_session})


def mark_skipped(paths: Paths, settings: AppSettings, sessions: list[str], *, by: str,
                 reason: str, at: str, into: str) -> dict[str, Any]:
    """Mark ``sessions`` (in order, all after the book) skipped; see the module docstring."""
    if not sessions:
        return {}
    note = _note(by, reason, at, into=into, first=sessions[0], last=sessions[-1],
                 count=len(sessions))
    log_repair(ledger.state_dir(paths), file="portfolio.json",
               action=f"catch-up: {len(sessions)} session(s) {sessions[0]}..{sessions[-1]} "
                      f"marked skipped before {into}", by=by, reason=reason, at=at,
               detail={"sessions": sessions, "into": into})
    for day in sessions:
        st = _carry(paths, settings, day, "skipped", {"catch_up": note})
        save_portfolio(paths, st)
        save_session_state(paths, st)
    return note


def _damaged_aside(paths: Paths, session: str) -> str | None:
    """Move a damaged record aside (never into a name read as a record); its new name."""
    path = ledger.record_path(paths, session)
    if not path.is_file():
        return None
    aside = path.with_name(f"{session}.damaged-{file_hash(path)[:12]}")
    path.replace(aside)
    return aside.name


def _orders_of(paths: Paths, session: str) -> int:
    from tasks.execution.tradelog import read_records

    return sum(1 for r in read_records(paths, session) if r.get("event") in ledger.ORDER_EVENTS)


def abandon_session(paths: Paths, settings: AppSettings, session: str, *, by: str,
                    reason: str, at: str) -> str:
    """Close unfinished session ``session`` as it stands (see the module docstring); the line
    that says what was done."""
    from tasks.execution.runner import clean_state
    from tasks.plan.runs import session_lock

    note = _note(by, reason, at)
    with session_lock(paths, "intraday"):
        clean_state(paths)
        try:
            rec = ledger.read_record(paths, session)
            damaged = None
        except StateFileError as exc:
            rec, damaged = None, exc.problem
        if rec is not None and rec.committed:
            raise ledger.SessionOrderError(f"session {session} is already committed "
                                           f"('{rec.status}'): nothing to abandon")
        if rec is None and damaged is None and ledger.last_order_session(paths) != session:
            raise ledger.SessionOrderError(f"session {session} was not started: nothing to "
                                           "abandon")
        log_repair(ledger.state_dir(paths), file=f"execution/{session}.json", action="abandon",
                   by=by, reason=reason, at=at,
                   detail={"record": rec.status if rec else (damaged or "missing")})
        if rec is not None:
            return _close_as_it_stands(paths, settings, session, note)
        return _marker(paths, settings, session, note, damaged)


def _marker(paths: Paths, settings: AppSettings, session: str, note: dict[str, Any],
            damaged: str | None) -> str:
    aside = _damaged_aside(paths, session) if damaged else None
    book = ledger.read_portfolio(paths)
    later = book is not None and book.as_of_session and book.as_of_session >= session
    info = {"abandoned": {**note, "record": "damaged" if damaged else "missing",
                          "moved_aside": aside}}
    if later:
        info["book_unknown"] = True  # the book of this old session is not kept anywhere
    st = _carry(paths, settings, session, "abandoned", info)
    n = _orders_of(paths, session)
    if not later:
        save_portfolio(paths, st)
        save_kill_switch(paths, kill_switch_of(st, settings.execution.kill_switch_daily_loss))
    save_session_state(paths, st)
    what = f"damaged record moved aside to {aside}" if aside else "its record was missing"
    book_line = ("the later book is left as it is" if later else
                 f"the book of {book.as_of_session if book else 'the account cash'} is carried "
                 f"over as the book of {session}")
    return (f"session {session} abandoned by {note['by']} ({what}): {book_line}; "
            f"{n} trade-log order record(s) of {session} are not in the book: reconcile them "
            "with the broker")


def _close_as_it_stands(paths: Paths, settings: AppSettings, session: str,
                        note: dict[str, Any]) -> str:
    from tasks.execution.broker import OrderRequest
    from tasks.execution.engine import Engine, Setup
    from tasks.execution.gates import make_broker, stage_risk
    from tasks.execution.runner import conclude
    from tasks.execution.state import load_session_state
    from tasks.execution.tradelog import TradeLog
    from tasks.policy import current_policy, policy_settings

    st = load_session_state(paths, session)
    log, _side = TradeLog.open(paths, recovery={"timestamp": at_ts(note), "session": session,
                                                "mode": st.mode})
    risk = stage_risk(policy_settings(settings, current_policy(paths, settings)[0]))
    broker = make_broker(paths, settings, st.mode, session)
    engine = Engine(Setup(paths, settings, risk, broker, log, [], 1, at_ts(note)), st)
    inflight = "none"
    if st.sending:
        child = OrderRequest(**st.sending["order"])
        meta = st.sending["meta"]
        if child.order_id not in engine.applied:
            fill = broker.lookup(child.order_id)
            if fill is not None:
                engine.complete(child, meta, fill)
                inflight = f"{child.order_id} completed from the broker's record"
            else:
                engine.log_once(engine.record("cancel", child.order_id, child.symbol, child.side,
                                              at_ts(note), {**meta, "tags": [
                                                  *meta.get("tags", []), "session_abandoned"]},
                                              qty=0))
                engine.applied.add(child.order_id)
                st.applied.append(child.order_id)
                inflight = f"{child.order_id} cancelled (the broker has no record of it)"
        st.sending = None
    n_working = len(st.working)
    for w in list(st.working):
        engine.withdraw(w, "cancel", w.parent_id, ["session_abandoned"], at_ts(note))
    if st.status == "running":
        for held in st.holdings.values():
            held.sessions_held += 1
    st.info["abandoned"] = {**note, "bar_index": st.bar_index, "last_ts": st.last_ts,
                            "in_flight": inflight, "cancelled": n_working}
    st.status = "closing"
    save_session_state(paths, st)
    res = conclude(paths, settings, st, status="abandoned")
    s = res.summary
    return (f"session {session} abandoned by {note['by']}: closed as it stood after "
            f"{st.bar_index + 1} bar(s); order in flight: {inflight}; {n_working} working order(s) "
            f"cancelled; book as of {session}: net liquidity {s['end_net_liquidity']:,.2f}, "
            f"{s['positions_end']} position(s)")


def at_ts(note: dict[str, Any]) -> str:
    return str(note["at"])


# --- rebuilds (``hcp state repair``; logged by the repair command) -------------------------

def last_committed(paths: Paths) -> ledger.ExecutionRecord | None:
    """The last committed record whose book is known (the book's evidence)."""
    recs = [ledger.read_record(paths, s) for s in ledger.record_sessions(paths)]
    good = [r for r in recs if r.committed and not r.info.get("book_unknown")]
    return good[-1] if good else None


def rebuild_portfolio(paths: Paths) -> str:
    """Write portfolio.json from the last committed execution record; what was done."""
    rec = last_committed(paths)
    path = ledger.portfolio_path(paths)
    if rec is None:
        raise StateFileError(path, "cannot be rebuilt: no committed execution record holds a "
                                   "book", "restore it from a backup")
    try:
        before = ledger.read_portfolio(paths)
        was = "intact" if before is not None else "absent"
    except StateFileError as exc:
        was = exc.problem
    raw = ledger.read_raw_record(paths, rec.session)
    book = portfolio_json(SessionState.from_json(raw))
    atomic_write_json(path, book)
    later = [u for u in ledger.read_ledger(paths).unfinished() if u > rec.session]
    tail = (f"; unfinished later session {later[0]} is not in it (its own record resumes it)"
            if later else "")
    return (f"portfolio.json ({was}) rebuilt from execution/{rec.session}.json "
            f"('{rec.status}'): book as of {rec.session}, net liquidity "
            f"{book['net_liquidity']:,.2f}, {len(book['positions'])} position(s){tail}")


def rebuild_kill_switch(paths: Paths) -> str:
    """Write kill_switch.json from the last execution record that ran; what was done."""
    path = ledger.kill_switch_path(paths)
    ran = [s for s in ledger.record_sessions(paths)
           if ledger.read_record(paths, s).status != "skipped"]
    if not ran:
        raise StateFileError(path, "cannot be rebuilt: no execution record",
                             "delete it (before any session the switch is armed)")
    st = SessionState.from_json(ledger.read_raw_record(paths, ran[-1]))
    record = kill_switch_of(st)
    save_kill_switch(paths, record)
    state = "tripped" if record.get("tripped") else "armed"
    return f"kill_switch.json rebuilt from execution/{st.session}.json: {state}"
