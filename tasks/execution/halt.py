"""The engine's safety side: kill switch, SANITY_JUDGE hook, data stalls, restart, session end.

:class:`Halt` works through a :class:`HaltContext` the engine hands it: the session's fixed
setup, its state, the protections, and the few engine actions it needs (withdraw an order,
save, log an intent, book a result). The decision to stop trading goes through the protection
interface (:mod:`tasks.execution.protections`); the effects (cancels, the flatten, records,
alerts, the SANITY_JUDGE hook) are carried out here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.alerts import raise_alert
from tasks.execution import failures, killswitch, quarantine
from tasks.execution import protections as prot
from tasks.execution.broker import Bar, Fill, OrderRequest
from tasks.execution.sessions import window
from tasks.execution.state import SessionState, Working, save_kill_switch
from tasks.risk.clamps import sip_transfer

if TYPE_CHECKING:
    from tasks.execution.engine import Setup

LEVELS = {"data_stall": "WARN", "remote_unavailable": "WARN", "reasoner_offline": "WARN",
          "rl_missing": "WARN"}


@dataclass(frozen=True)
class HaltContext:
    """What :class:`Halt` works with, handed over by the engine.

    ``withdraw(w, event, order_id, tags, ts)``: refuse or cancel a working order (logged once);
    ``save()``: persist the session state; ``booked(order_id)``: the order's result is booked;
    ``log_intent(child, meta, start_ts)``: log an order's intent (once);
    ``complete(child, meta, fill)``: book, log and mark done an order's result."""

    setup: Setup
    state: SessionState
    protections: Sequence[prot.Protection]
    withdraw: Callable[[Working, str, str, list[str], str], None]
    save: Callable[[], None]
    booked: Callable[[str], bool]
    log_intent: Callable[[OrderRequest, dict[str, Any], str], None]
    complete: Callable[[OrderRequest, dict[str, Any], Fill], None]


class Halt:
    """Kill switch, stalls, reconciliation and the session's end for one engine."""

    def __init__(self, ctx: HaltContext) -> None:
        self.ctx = ctx
        self.s, self.st = ctx.setup, ctx.state

    @property
    def limit(self) -> float:
        return self.s.settings.execution.data_stall_seconds

    def fail(self, f: failures.Failure | None, at: str) -> None:
        """Record a failure mode once (by mode and key) and raise its alert."""
        st = self.st
        if f is None or any(r["mode"] == f.mode and r["key"] == f.key for r in st.failures):
            return
        st.failures.append(f.record(at))
        raise_alert(self.s.paths, f.alert, session=st.session, at=at,
                    level=LEVELS.get(f.alert, "WARN"), key=f.key, data=f.data)

    # ---- the protections ----------------------------------------------------------------------
    def view(self, **facts: Any) -> prot.ProtectionView:
        """The session's standing facts (kill switch tripped, stalled) plus ``facts``."""
        return prot.ProtectionView(self.st.session, halted=self.st.halted,
                                   stalled=self.st.stalled, **facts)

    def locks(self, **facts: Any) -> list[prot.Lock]:
        """The locks in force for the standing facts plus ``facts``."""
        return prot.evaluate(self.ctx.protections, self.view(**facts))

    # ---- data stall ---------------------------------------------------------------------------
    def stall_checks(self, start_ts: str, ts: str, bars: dict[str, Bar]) -> None:
        """At a bar's start: a feed gap holds the session; a symbol with a working entry and
        no bar for too long loses that entry."""
        st = self.st
        waiting = {w.symbol: st.last_seen.get(w.symbol) or st.info.get("open_ts", start_ts)
                   for w in st.working if w.purpose == "entry" and w.symbol not in bars}
        locks = self.locks(ts=ts, stall_limit=self.limit, last_bar=st.last_ts or start_ts,
                           waiting=waiting)
        lock = prot.tripped(locks, prot.DataStall.name)
        if lock is None:
            return
        if lock.symbols is None:  # the feed: every entry goes, none is left for the loop below
            self.stall(lock.cause, ts)
            return
        for w in [w for w in st.working if w.purpose == "entry" and w.symbol not in bars]:
            if lock.covers(w.symbol):
                self.fail(lock.cause[w.symbol], ts)
                self.ctx.withdraw(w, "cancel", w.parent_id, [prot.SYMBOL_STALLED], ts)

    def stall(self, f: failures.Failure, ts: str) -> None:
        """Hold state, cancel new (entry) orders, keep stops working."""
        st = self.st
        st.stalled = True
        for w in [w for w in st.working if w.purpose == "entry"]:
            self.ctx.withdraw(w, "cancel", w.parent_id, [prot.STALLED], ts)
        self.fail(f, ts)

    def near_close(self, ts: str | None) -> bool:
        return prot.near_close(self.s.close_ts, ts, self.limit)

    # ---- kill switch --------------------------------------------------------------------------
    def kill_check(self, i: int, ts: str) -> float:
        """Check the day's P&L at the bar's close (once halted, no more); returns the NL."""
        st = self.st
        nl = st.net_liquidity()
        locks = self.locks(ts=ts, start_nl=st.start_nl, net_liquidity=nl,
                           daily_loss=self.s.settings.execution.kill_switch_daily_loss)
        lock = prot.tripped(locks, prot.KillSwitch.name)
        if lock is not None:
            self.trip(i, ts, lock.cause, nl)
        return nl

    def entry_locks(self) -> list[prot.Lock]:
        """The locks in force for new entries (no new measurement: the standing facts)."""
        return self.locks()

    def trip(self, i: int, ts: str, chk: killswitch.KillCheck, nl: float) -> None:
        """Persist the halted state, queue the flatten, alert, call the SANITY_JUDGE hook."""
        s, st = self.s, self.st
        st.halted = True
        st.kill = {"session": st.session, "tripped": True, "at": ts, "bar_index": i,
                   "day_pnl": chk.day_pnl, "day_pnl_pct": chk.day_pnl_pct, "limit": chk.limit,
                   "threshold": s.settings.execution.kill_switch_daily_loss,
                   "start_net_liquidity": st.start_nl, "net_liquidity": nl,
                   "flattened": sorted(st.holdings), "sanity_judge": {"status": "pending"}}
        for w in [w for w in st.working if w.purpose == "entry"]:
            self.ctx.withdraw(w, "cancel", w.parent_id, [prot.HALTED], ts)
        exiting = {w.symbol for w in st.working}
        for sym, held in sorted(st.holdings.items()):
            if sym not in exiting:
                st.working.append(Working(f"{st.session}|{i:03d}|{sym}|flatten", sym,
                                          "SELL" if held.qty > 0 else "BUY", abs(held.qty),
                                          "flatten", tags=["exit:kill_switch_flatten"]))
        activated = self._count_kill_day(ts)
        st.kill["quarantine_activated"] = activated
        save_kill_switch(s.paths, st.kill)
        self.ctx.save()
        raise_alert(s.paths, "kill_switch", session=st.session, at=ts, level="CRITICAL",
                    data={"day_pnl_pct": chk.day_pnl_pct, "day_pnl": chk.day_pnl,
                          "threshold": st.kill["threshold"], "flattened": st.kill["flattened"]})
        if activated:
            raise_alert(s.paths, "quarantine_activated", session=st.session, at=ts,
                        level="CRITICAL", data={"sessions": s.settings.execution.quarantine_sessions})
        self.judge()

    def _count_kill_day(self, ts: str) -> bool:
        s, st = self.s, self.st
        rules = quarantine.Rules.of(s.settings)
        win = window(s.settings.data.calendar, st.session, rules.window_sessions)
        state = quarantine.load_state(s.paths)
        if st.session in state["kill_days"]:  # a restart after this was recorded
            return bool(state["quarantine"]) and state["quarantine"]["start"] == st.session
        new, activated = quarantine.record_kill_day(state, st.session, win, rules, ts)
        quarantine.save_state(s.paths, new)
        return activated

    def judge(self) -> None:
        """Call the SANITY_JUDGE hook (never fatal) and act on a stay_demo: false answer."""
        s, st = self.s, self.st
        kill = st.kill
        chk = killswitch.KillCheck(True, kill["day_pnl"], kill["day_pnl_pct"], kill["limit"])
        request = killswitch.sanity_request(kill["at"], chk, kill["threshold"],
                                            kill["net_liquidity"], list(st.recent_trades))
        call = killswitch.SanityJudgeCall(st.session, kill["at"], st.mode, request,
                                          {"kill_switch": True, "day_pnl_pct": kill["day_pnl_pct"]})
        hook = s.sanity_judge or killswitch.SANITY_JUDGE
        try:
            result, error = hook(s.paths, s.settings, call), None
        except Exception as exc:  # noqa: BLE001 - a failing escalation must not stop the flatten
            result, error = None, f"{type(exc).__name__}: {exc}"
        kill["sanity_judge"] = {"status": "error" if error else "done", "request": request,
                                "result": result, "error": error}
        for f in failures.from_judge_outcome(result, error):
            self.fail(f, kill["at"])
        if killswitch.stay_demo_answer(result) is False:
            kill["sanity_judge"]["override"] = self._clear(result, kill["at"])
        save_kill_switch(s.paths, kill)
        self.ctx.save()

    def _clear(self, result: dict[str, Any], at: str) -> str:
        s, st = self.s, self.st
        reason = str(result.get("reason") or "SANITY_JUDGE answered stay_demo: false")
        try:
            quarantine.clear_quarantine(s.paths, s.settings, at=at, by="SANITY_JUDGE",
                                        reason=reason, source="sanity_judge",
                                        answer={"stay_demo": False}, session=st.session)
        except quarantine.QuarantineError as exc:
            return f"not cleared: {exc}"
        return "cleared"

    # ---- restart and session end --------------------------------------------------------------
    def reconcile(self) -> None:
        """Finish the order that was in flight when the process stopped; retry a pending hook."""
        st = self.st
        if st.sending:
            sending = st.sending
            child, bar = OrderRequest(**sending["order"]), Bar(**sending["bar"])
            if not self.ctx.booked(child.order_id):
                self._resolve(child, bar, sending["meta"], sending.get("start_ts", bar.ts))
            st.sending = None
            self.ctx.save()
        if st.halted and (st.kill or {}).get("sanity_judge", {}).get("status") == "pending":
            self.judge()

    def _resolve(self, child: OrderRequest, bar: Bar, meta: dict[str, Any], start_ts: str) -> None:
        st = self.st
        log, broker = self.s.log, self.s.broker
        intent_missing = not log.logged(child.order_id, "intent")
        if intent_missing:
            self.ctx.log_intent(child, meta, start_ts)
        fill = broker.lookup(child.order_id)
        outcome = "completed from the broker's record" if fill else \
            "re-sent under the same client id (the broker never received it)"
        if log.result_of(child.order_id):
            outcome = "result already logged; booked"
        self.ctx.complete(child, meta, fill or broker.submit(child, bar))
        st.info.setdefault("reconciled", []).append(
            {"order_id": child.order_id, "outcome": outcome, "intent_missing": intent_missing})

    def end_of_session(self, ts: str) -> None:
        """Cancel what is still working, age the holdings, move the SIP share of a profit."""
        st = self.st
        expected = bool(st.start_values or st.holdings or st.working)  # a feed was due
        locks = self.locks(closing=True, feed_due=expected, stall_limit=self.limit,
                           last_bar=st.last_ts, close_ts=self.s.close_ts)
        lock = prot.tripped(locks, prot.DataStall.name)
        if lock is not None:
            self.stall(lock.cause, ts)
        for w in list(st.working):
            self.ctx.withdraw(w, "cancel", w.parent_id, ["session_end"], ts)
        for held in st.holdings.values():
            held.sessions_held += 1
        day = st.net_liquidity() - st.start_nl
        transfer = sip_transfer(day, self.s.risk)
        st.sip_balance += transfer
        st.info["sip_transfer"] = transfer
        st.status = "closing"
        self.ctx.save()
