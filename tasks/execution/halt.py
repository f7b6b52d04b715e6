"""The engine's safety side: kill switch, SANITY_JUDGE hook, data stalls, restart, session end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks.alerts import raise_alert
from tasks.execution import failures, killswitch, quarantine
from tasks.execution.broker import Bar, OrderRequest
from tasks.execution.sessions import window
from tasks.execution.state import Working, save_kill_switch
from tasks.risk.clamps import sip_transfer

if TYPE_CHECKING:
    from tasks.execution.engine import Engine

LEVELS = {"data_stall": "WARN", "remote_unavailable": "WARN", "reasoner_offline": "WARN",
          "rl_missing": "WARN"}


def seconds(ts: str) -> float:
    return pd.Timestamp(ts).timestamp()


class Halt:
    """Kill switch, stalls, reconciliation and the session's end for one engine."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine

    @property
    def limit(self) -> float:
        return self.e.s.settings.execution.data_stall_seconds

    def fail(self, f: failures.Failure | None, at: str) -> None:
        """Record a failure mode once (by mode and key) and raise its alert."""
        st = self.e.st
        if f is None or any(r["mode"] == f.mode and r["key"] == f.key for r in st.failures):
            return
        st.failures.append(f.record(at))
        raise_alert(self.e.s.paths, f.alert, session=st.session, at=at,
                    level=LEVELS.get(f.alert, "WARN"), key=f.key, data=f.data)

    # ---- data stall ---------------------------------------------------------------------------
    def stall_checks(self, start_ts: str, ts: str, bars: dict[str, Bar]) -> None:
        st = self.e.st
        last = st.last_ts or start_ts
        feed = failures.data_stall(seconds(ts) - seconds(last), self.limit, ts, "feed")
        if feed and not st.stalled:
            self.stall(feed, ts)
        for w in [w for w in st.working if w.purpose == "entry" and w.symbol not in bars]:
            seen = st.last_seen.get(w.symbol) or st.info.get("open_ts", start_ts)
            one = failures.data_stall(seconds(ts) - seconds(seen), self.limit, ts, w.symbol)
            if one:
                self.fail(one, ts)
                self.e.withdraw(w, "cancel", w.parent_id, ["stall:symbol"], ts)

    def stall(self, f: failures.Failure, ts: str) -> None:
        """Hold state, cancel new (entry) orders, keep stops working."""
        st = self.e.st
        st.stalled = True
        for w in [w for w in st.working if w.purpose == "entry"]:
            self.e.withdraw(w, "cancel", w.parent_id, ["stall:data"], ts)
        self.fail(f, ts)

    def near_close(self, ts: str | None) -> bool:
        return ts is not None and seconds(self.e.s.close_ts) - seconds(ts) <= self.limit

    # ---- kill switch --------------------------------------------------------------------------
    def kill_check(self, i: int, ts: str) -> float:
        """Check the day's P&L at the bar's close (once halted, no more); returns the NL."""
        st = self.e.st
        nl = st.net_liquidity()
        if st.halted:
            return nl
        chk = killswitch.check_kill_switch(st.start_nl, nl,
                                           self.e.s.settings.execution.kill_switch_daily_loss)
        if chk.tripped:
            self.trip(i, ts, chk, nl)
        return nl

    def trip(self, i: int, ts: str, chk: killswitch.KillCheck, nl: float) -> None:
        """Persist the halted state, queue the flatten, alert, call the SANITY_JUDGE hook."""
        e, st = self.e, self.e.st
        s = e.s
        st.halted = True
        st.kill = {"session": st.session, "tripped": True, "at": ts, "bar_index": i,
                   "day_pnl": chk.day_pnl, "day_pnl_pct": chk.day_pnl_pct, "limit": chk.limit,
                   "threshold": s.settings.execution.kill_switch_daily_loss,
                   "start_net_liquidity": st.start_nl, "net_liquidity": nl,
                   "flattened": sorted(st.holdings), "sanity_judge": {"status": "pending"}}
        for w in [w for w in st.working if w.purpose == "entry"]:
            e.withdraw(w, "cancel", w.parent_id, ["halted:kill_switch"], ts)
        exiting = {w.symbol for w in st.working}
        for sym, held in sorted(st.holdings.items()):
            if sym not in exiting:
                st.working.append(Working(f"{st.session}|{i:03d}|{sym}|flatten", sym,
                                          "SELL" if held.qty > 0 else "BUY", abs(held.qty),
                                          "flatten", tags=["exit:kill_switch_flatten"]))
        activated = self._count_kill_day(ts)
        st.kill["quarantine_activated"] = activated
        save_kill_switch(s.paths, st.kill)
        e.save()
        raise_alert(s.paths, "kill_switch", session=st.session, at=ts, level="CRITICAL",
                    data={"day_pnl_pct": chk.day_pnl_pct, "day_pnl": chk.day_pnl,
                          "threshold": st.kill["threshold"], "flattened": st.kill["flattened"]})
        if activated:
            raise_alert(s.paths, "quarantine_activated", session=st.session, at=ts,
                        level="CRITICAL", data={"sessions": s.settings.execution.quarantine_sessions})
        self.judge()

    def _count_kill_day(self, ts: str) -> bool:
        s, st = self.e.s, self.e.st
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
        e, st = self.e, self.e.st
        s, kill = e.s, st.kill
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
        e.save()

    def _clear(self, result: dict[str, Any], at: str) -> str:
        s, st = self.e.s, self.e.st
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
        e, st = self.e, self.e.st
        if st.sending:
            sending = st.sending
            child, bar = OrderRequest(**sending["order"]), Bar(**sending["bar"])
            if child.order_id not in e.applied:
                self._resolve(child, bar, sending["meta"], sending.get("start_ts", bar.ts))
            st.sending = None
            e.save()
        if st.halted and (st.kill or {}).get("sanity_judge", {}).get("status") == "pending":
            self.judge()

    def _resolve(self, child: OrderRequest, bar: Bar, meta: dict[str, Any], start_ts: str) -> None:
        e, st = self.e, self.e.st
        log, broker = e.s.log, e.s.broker
        intent_missing = not log.logged(child.order_id, "intent")
        if intent_missing:
            e.log_once(e.record("intent", child.order_id, child.symbol, child.side, start_ts,
                                meta, qty=child.qty, kind=child.kind, price=child.price))
        fill = broker.lookup(child.order_id)
        outcome = "completed from the broker's record" if fill else \
            "re-sent under the same client id (the broker never received it)"
        if log.result_of(child.order_id):
            outcome = "result already logged; booked"
        e.complete(child, meta, fill or broker.submit(child, bar))
        st.info.setdefault("reconciled", []).append(
            {"order_id": child.order_id, "outcome": outcome, "intent_missing": intent_missing})

    def end_of_session(self, ts: str) -> None:
        """Cancel what is still working, age the holdings, move the SIP share of a profit."""
        e, st = self.e, self.e.st
        expected = bool(st.start_values or st.holdings or st.working)  # a feed was due
        if expected and not self.near_close(st.last_ts):
            self.stall(failures.Failure("data_stall", "hold state, cancel new orders, keep stops",
                                        "data_stall", key=f"feed_end:{st.last_ts}",
                                        data={"scope": "feed_end", "last_bar": st.last_ts}), ts)
        for w in list(st.working):
            e.withdraw(w, "cancel", w.parent_id, ["session_end"], ts)
        for held in st.holdings.values():
            held.sessions_held += 1
        day = st.net_liquidity() - st.start_nl
        transfer = sip_transfer(day, e.s.risk)
        st.sip_balance += transfer
        st.info["sip_transfer"] = transfer
        st.status = "closing"
        e.save()
