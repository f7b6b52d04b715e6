"""Protections: one interface for everything that stops the intraday execution from trading.

Each protection looks at a :class:`ProtectionView` (a small read-only set of facts, never the
engine) and answers a :class:`Lock`: whether trading is locked, until when, why, and what the
lock refuses. :func:`evaluate` asks a list of protections and returns the locks in force, in
the order of the list. The engine and the runner decide through it at the points where each
protection applies; what follows a lock (cancels, the flatten, records, alerts) stays with them.

- :class:`KillSwitch` (scope ``entries``, until the session's end): the day's P&L is at or below
  ``-kill_switch_daily_loss`` x start-of-day net liquidity (in whole cents), or the switch
  tripped earlier in the session;
- :class:`DataStall` (``entries``, until the session's end): no bar for longer than
  ``data_stall_seconds`` - the whole feed, or one symbol with a working entry (then only that
  symbol) - a feed that ends before the close, or a stall earlier in the session;
- :class:`Quarantine` (``live``, until the last session it covers; None for a damaged
  quarantine file: until an operator repairs it): a quarantine or kill-switch cool-off covers
  the session;
- :class:`LiveGates` (``live``, None: until the gate holds): a live gate does not hold.

A view carries only the facts measured where it is built; a protection whose facts are absent
reports only a lock already in force (or none). A lock with a ``cause`` was tripped by this very
check (the engine then carries out its effects); a lock without one was already in force.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pandas as pd

from tasks.execution import failures
from tasks.execution.killswitch import check_kill_switch

if TYPE_CHECKING:
    from tasks.execution.quarantine import Status

#: "entries": new entries are refused, exits, stops and cancels keep working;
#: "live": live trading is refused for the session (demo runs on).
Scope = Literal["entries", "live"]

HALTED = "halted:kill_switch"
STALLED = "stall:data"
SYMBOL_STALLED = "stall:symbol"


def seconds(ts: str) -> float:
    """A timestamp in seconds since the epoch."""
    return pd.Timestamp(ts).timestamp()


def near_close(close_ts: str, ts: str | None, limit: float) -> bool:
    """``ts`` is within the stall limit of the session's close (None: no bar at all)."""
    return ts is not None and seconds(close_ts) - seconds(ts) <= limit


@dataclass(frozen=True)
class Lock:
    """One protection's answer.

    ``until``: the last session (or a timestamp) the lock covers; None until an operator clears
    it (or the gate holds). ``reason``: the reason tag written on what the lock refuses (for
    the live scope, the refusal in words). ``symbols``: the symbols locked (None: every one).
    ``cause``: what tripped it at this check (a failure, the kill-switch check, the quarantine
    status); None for a lock already in force."""

    lock: bool
    until: str | None = None
    reason: str = ""
    protection: str = ""
    scope: Scope = "entries"
    symbols: frozenset[str] | None = None
    cause: Any = None

    @property
    def tripped(self) -> bool:
        """Tripped by this check (its effects are still to be carried out)."""
        return self.lock and self.cause is not None

    def covers(self, symbol: str) -> bool:
        return self.symbols is None or symbol in self.symbols


def unlocked(protection: str) -> Lock:
    return Lock(False, protection=protection)


class GateFact(Protocol):
    """A live gate as the protections see it (name, whether it holds, in words)."""

    @property
    def name(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def detail(self) -> str: ...


@dataclass(frozen=True)
class ProtectionView:
    """The facts the protections decide on (absent facts are not measured at this check)."""

    session: str
    ts: str | None = None                   # the moment of the check (a bar's end)
    # kill switch
    halted: bool = False                    # tripped earlier in the session
    start_nl: float | None = None           # start-of-day net liquidity
    net_liquidity: float | None = None      # now (None: the day's P&L is not measured here)
    daily_loss: float | None = None         # execution.kill_switch_daily_loss
    # bar freshness
    stalled: bool = False                   # a feed stall earlier in the session
    stall_limit: float | None = None        # execution.data_stall_seconds
    last_bar: str | None = None             # end of the feed's last bar (or the session's start)
    waiting: Mapping[str, str] = field(default_factory=dict)  # symbol with a working entry
    #                                         and no bar now -> end of its last bar
    closing: bool = False                   # the session's end
    feed_due: bool = False                  # a feed was due (something held, worked or valued)
    close_ts: str | None = None             # the session's close
    # live
    quarantine: Status | None = None
    gates: Sequence[GateFact] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "waiting", MappingProxyType(dict(self.waiting)))
        if self.gates is not None:
            object.__setattr__(self, "gates", tuple(self.gates))


class Protection(Protocol):
    """Answers whether trading is locked for a view."""

    name: str

    def check(self, view: ProtectionView) -> Lock: ...


def evaluate(protections: Iterable[Protection], view: ProtectionView) -> list[Lock]:
    """The locks in force for ``view``, in the order of ``protections``."""
    return [lock for p in protections if (lock := p.check(view)).lock]


def entry_lock(locks: Iterable[Lock], symbol: str) -> Lock | None:
    """The first lock that refuses a new entry in ``symbol`` (None: entries are allowed)."""
    return next((lk for lk in locks if lk.scope == "entries" and lk.covers(symbol)), None)


def tripped(locks: Iterable[Lock], protection: str) -> Lock | None:
    """The lock ``protection`` tripped at this check (None: none)."""
    return next((lk for lk in locks if lk.protection == protection and lk.tripped), None)


class KillSwitch:
    """The day's loss limit: trips at the bar's close, then holds for the rest of the session."""

    name = "kill_switch"

    def check(self, view: ProtectionView) -> Lock:
        if view.halted:
            return Lock(True, view.session, HALTED, self.name, "entries")
        if view.start_nl is None or view.net_liquidity is None or view.daily_loss is None:
            return unlocked(self.name)
        chk = check_kill_switch(view.start_nl, view.net_liquidity, view.daily_loss)
        if not chk.tripped:
            return unlocked(self.name)
        return Lock(True, view.session, HALTED, self.name, "entries", cause=chk)


class DataStall:
    """Bar freshness: a gap longer than the limit holds the session's entries (stops go on).

    A gap of exactly the limit is not a stall. Of the checks of one bar the feed's comes first:
    it cancels every entry, so a symbol's own stall only counts while the feed is fresh."""

    name = "data_stall"

    def check(self, view: ProtectionView) -> Lock:
        limit = view.stall_limit
        if view.closing and limit is not None and view.close_ts is not None:
            if view.feed_due and not near_close(view.close_ts, view.last_bar, limit):
                return self._lock(view, STALLED, failures.feed_ended(view.last_bar))
        elif limit is not None and view.ts is not None:
            if view.last_bar is not None and not view.stalled:
                gap = seconds(view.ts) - seconds(view.last_bar)
                feed = failures.data_stall(gap, limit, view.ts, "feed")
                if feed:
                    return self._lock(view, STALLED, feed)
            found = {sym: f for sym, seen in view.waiting.items()
                     if (f := failures.data_stall(seconds(view.ts) - seconds(seen), limit,
                                                  view.ts, sym))}
            if found:
                return Lock(True, view.session, SYMBOL_STALLED, self.name, "entries",
                            symbols=frozenset(found), cause=found)
        if view.stalled:
            return Lock(True, view.session, STALLED, self.name, "entries")
        return unlocked(self.name)

    def _lock(self, view: ProtectionView, reason: str, f: failures.Failure) -> Lock:
        return Lock(True, view.session, reason, self.name, "entries", cause=f)


class Quarantine:
    """A quarantine or kill-switch cool-off covering the session refuses live trading."""

    name = "quarantine"

    def __init__(self, calendar: str) -> None:
        self.calendar = calendar

    def check(self, view: ProtectionView) -> Lock:
        q = view.quarantine
        if q is None or not q.active:
            return unlocked(self.name)
        return Lock(True, self._until(view.session, q), q.describe(), self.name, "live", cause=q)

    def _until(self, session: str, q: Status) -> str | None:
        if q.kind == "damaged_state":
            return None  # until an operator repairs the file
        from tasks.execution.sessions import session_ahead

        return session_ahead(self.calendar, session, max(q.days_left, 1) - 1)


class LiveGates:
    """Live trading needs every live gate at once."""

    name = "live_gates"

    def check(self, view: ProtectionView) -> Lock:
        gates = view.gates or ()
        failed = [g for g in gates if not g.ok]
        if not failed:
            return unlocked(self.name)
        lines = "\n".join(f"  - {g.name}: {g.detail}" for g in failed)
        reason = (f"live mode refused for {view.session}: {len(failed)} of {len(gates)} gates "
                  f"do not hold:\n{lines}")
        return Lock(True, None, reason, self.name, "live", cause=tuple(failed))


def intraday_protections(calendar: str) -> tuple[Protection, ...]:
    """The protections of an intraday session, in the order their locks are reported."""
    return (KillSwitch(), DataStall(), Quarantine(calendar), LiveGates())
