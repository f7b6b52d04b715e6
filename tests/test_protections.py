"""The protection interface: each protection's lock at its boundary, evaluate() combining them,
and the engine refusing new entries on a lock from the interface."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from tasks.execution import engine as engine_module
from tasks.execution import quarantine
from tasks.execution.killswitch import KillCheck
from tasks.execution.protections import (
    DataStall,
    KillSwitch,
    LiveGates,
    Lock,
    ProtectionView,
    Quarantine,
    entry_lock,
    evaluate,
    intraday_protections,
    tripped,
)
from tasks.execution.runner import run_session
from tasks.execution.sessions import sessions_after
from tasks.paths import Paths
from tests.exec_helpers import PREV, SESSION, bars, plan_row, records, settings, write_plan

CAL = "XNYS"
T0 = "2020-03-09T14:00:00Z"


def _at(offset_s: float, base: str = T0) -> str:
    return (pd.Timestamp(base) + pd.Timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- kill switch --------------------------------------------------------------------------------
@pytest.mark.parametrize(("nl", "locked"), [(97_500.01, False), (97_500.00, True),
                                            (97_499.99, True)])
def test_kill_switch_at_its_threshold(nl, locked):
    """-2.5% of 100,000: one cent above the limit is free, exactly at it and below trip."""
    view = ProtectionView(SESSION, ts=T0, start_nl=100_000.0, net_liquidity=nl, daily_loss=0.025)
    lock = KillSwitch().check(view)
    assert lock.lock is locked and lock.tripped is locked
    if locked:
        assert lock == Lock(True, SESSION, "halted:kill_switch", "kill_switch", "entries",
                            cause=lock.cause)
        assert isinstance(lock.cause, KillCheck)
        assert lock.cause.day_pnl == pytest.approx(nl - 100_000.0)


def test_kill_switch_once_tripped_holds_without_a_new_check():
    held = KillSwitch().check(ProtectionView(SESSION, halted=True, start_nl=100_000.0,
                                             net_liquidity=200_000.0, daily_loss=0.025))
    assert held.lock and not held.tripped and held.until == SESSION
    assert not KillSwitch().check(ProtectionView(SESSION)).lock  # P&L not measured here


# ---- data stall ---------------------------------------------------------------------------------
def _feed(gap: float, **kw) -> Lock:
    return DataStall().check(ProtectionView(SESSION, ts=_at(gap), stall_limit=900.0,
                                            last_bar=T0, **kw))


@pytest.mark.parametrize(("gap", "locked"), [(899, False), (900, False), (901, True)])
def test_feed_stall_at_its_limit(gap, locked):
    """A gap of exactly the allowed age is no stall; one second more is."""
    lock = _feed(gap)
    assert lock.lock is locked
    if locked:
        assert lock.tripped and lock.symbols is None and lock.reason == "stall:data"
        assert lock.scope == "entries" and lock.until == SESSION
        assert lock.cause.key == f"feed:{_at(gap)}"
        assert lock.cause.data == {"scope": "feed", "gap_seconds": 901.0, "limit_seconds": 900.0}


def test_a_stall_in_force_is_not_tripped_again():
    lock = _feed(5_000, stalled=True)
    assert lock.lock and not lock.tripped and lock.reason == "stall:data"
    assert DataStall().check(ProtectionView(SESSION, stalled=True)).lock


@pytest.mark.parametrize(("gap", "locked"), [(900, False), (901, True)])
def test_symbol_stall_locks_only_that_symbol(gap, locked):
    lock = DataStall().check(ProtectionView(SESSION, ts=_at(gap), stall_limit=900.0,
                                            last_bar=_at(gap - 300),
                                            waiting={"B": T0, "C": _at(gap - 60)}))
    assert lock.lock is locked
    if locked:
        assert lock.symbols == frozenset({"B"}) and lock.reason == "stall:symbol"
        assert lock.covers("B") and not lock.covers("C")
        assert lock.cause["B"].key == f"B:{_at(gap)}"


def test_feed_stall_comes_before_a_symbol_stall():
    lock = _feed(2_000, waiting={"B": T0})
    assert lock.symbols is None and lock.cause.key.startswith("feed:")


@pytest.mark.parametrize(("before_close", "locked"), [(900, False), (901, True)])
def test_feed_ending_before_the_close(before_close, locked):
    close = "2020-03-09T20:00:00Z"
    view = ProtectionView(SESSION, closing=True, feed_due=True, stall_limit=900.0,
                          close_ts=close, last_bar=_at(-before_close, close))
    lock = DataStall().check(view)
    assert lock.lock is locked
    if locked:
        assert lock.cause.key == f"feed_end:{_at(-before_close, close)}"
        assert lock.cause.data == {"scope": "feed_end", "last_bar": _at(-before_close, close)}
    no_bar = ProtectionView(SESSION, closing=True, feed_due=True, stall_limit=900.0,
                            close_ts=close, last_bar=None)
    assert DataStall().check(no_bar).tripped
    nothing_due = ProtectionView(SESSION, closing=True, feed_due=False, stall_limit=900.0,
                                 close_ts=close, last_bar=None)
    assert not DataStall().check(nothing_due).lock


# ---- quarantine and its cool-off ----------------------------------------------------------------
D = "2020-03-09"  # a Monday: the next sessions are 10, 11, 12, 13, 16, 17, 18, 19 March


def _state(quarantined: bool) -> dict:
    state = {**quarantine.empty_state(), "kill_days": [D], "cooloff": {"after": D, "cleared": None}}
    if quarantined:
        state["quarantine"] = {"start": D, "sessions": 7, "cleared": None, "kill_days": [D]}
    return state


def _quarantine_lock(state: dict, session: str) -> Lock:
    q = quarantine.status(state, session, sessions_after(CAL))
    return Quarantine(CAL).check(ProtectionView(session, quarantine=q))


@pytest.mark.parametrize(("session", "locked"), [(D, False), ("2020-03-10", True),
                                                 ("2020-03-11", False)])
def test_cooloff_ends_exactly_at_its_session(session, locked):
    lock = _quarantine_lock(_state(False), session)
    assert lock.lock is locked
    if locked:
        assert lock.until == session and lock.scope == "live"
        assert lock.reason.startswith("kill-switch cool-off after 2020-03-09")
        assert lock.cause.kind == "kill_switch_cooloff"


@pytest.mark.parametrize(("session", "until"), [(D, None), ("2020-03-10", "2020-03-18"),
                                                ("2020-03-17", "2020-03-18"),
                                                ("2020-03-18", "2020-03-18"), ("2020-03-19", None)])
def test_quarantine_covers_the_seven_sessions_after_its_start(session, until):
    lock = _quarantine_lock(_state(True), session)
    assert lock.lock is (until is not None)
    assert lock.until == until
    if until:
        assert lock.cause.kind == "quarantine" and "demo quarantine since 2020-03-09" in lock.reason


def test_damaged_quarantine_locks_until_repaired():
    lock = _quarantine_lock({**quarantine.empty_state(), quarantine.DAMAGED: "garbled"}, D)
    assert lock.lock and lock.until is None and "until repaired" in lock.reason


# ---- live gates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Gate:
    name: str
    ok: bool
    detail: str


def test_live_gates_lock_while_one_does_not_hold():
    ok = [_Gate("a", True, "fine"), _Gate("b", True, "fine")]
    assert not LiveGates().check(ProtectionView(D, gates=ok)).lock
    assert not LiveGates().check(ProtectionView(D)).lock
    lock = LiveGates().check(ProtectionView(D, gates=[ok[0], _Gate("b", False, "why")]))
    assert lock.lock and lock.scope == "live" and lock.until is None
    assert lock.reason == f"live mode refused for {D}: 1 of 2 gates do not hold:\n  - b: why"


# ---- evaluate -----------------------------------------------------------------------------------
def test_evaluate_reports_the_locks_in_force_in_order():
    q = quarantine.status(_state(True), "2020-03-10", sessions_after(CAL))
    view = ProtectionView("2020-03-10", halted=True, stalled=True, quarantine=q,
                          gates=[_Gate("g", False, "off")])
    locks = evaluate(intraday_protections(CAL), view)
    assert [lk.protection for lk in locks] == ["kill_switch", "data_stall", "quarantine",
                                               "live_gates"]
    assert entry_lock(locks, "X").protection == "kill_switch"
    assert entry_lock(locks[1:], "X").reason == "stall:data"
    assert entry_lock(locks[2:], "X") is None  # live locks do not refuse demo entries
    assert tripped(locks, "kill_switch") is None  # in force, not tripped now
    assert evaluate(intraday_protections(CAL), ProtectionView("2020-03-10")) == []


def test_entry_lock_of_a_symbol_lock():
    lock = Lock(True, SESSION, "stall:symbol", "data_stall", symbols=frozenset({"B"}))
    assert entry_lock([lock], "B") is lock and entry_lock([lock], "A") is None


# ---- the engine acts on the interface ------------------------------------------------------------
class _Block:
    """A protection that locks new entries of some symbols."""

    name = "test_block"

    def __init__(self, symbols: frozenset[str] | None) -> None:
        self.symbols = symbols

    def check(self, view: ProtectionView) -> Lock:
        return Lock(True, view.session, "test:blocked", self.name, "entries", self.symbols)


@pytest.mark.parametrize("blocked", [None, frozenset({"X"}), frozenset({"Y"})])
def test_a_lock_from_the_interface_blocks_new_entries(tmp_path, monkeypatch, blocked):
    standard = engine_module.intraday_protections
    monkeypatch.setattr(engine_module, "intraday_protections",
                        lambda cal: (*standard(cal), _Block(blocked)))
    paths = Paths(tmp_path)
    write_plan(paths, PREV, [plan_row("X", 10, 100.0, 2.0)])
    frame = bars(SESSION, {"X": [(100, 100.5, 99.8, 100.2)]})
    res = run_session(paths, settings(), SESSION, bars=frame)
    recs = records(paths, SESSION)
    if blocked is not None and "X" not in blocked:
        assert [r["event"] for r in recs if r["symbol"] == "X"][:2] == ["intent", "fill"]
        return
    assert [r["event"] for r in recs] == ["reject"]
    assert "test:blocked" in recs[0]["reason_tags"]
    assert res.summary["fills"] == 0 and not res.summary["kill_switch"]
