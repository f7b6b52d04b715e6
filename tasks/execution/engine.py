"""The intraday engine: one session's bars, in time order, become orders, fills and stops.

Per bar (all symbols whose bar ends at the same time):

1. data stall checks (feed gap, or a symbol with a working entry and no bar) -> cancel entries;
2. marks move to the bar's open: the **clamp book** (positions at those marks, net liquidity at
   them) is what every order of the bar is clamped against;
3. exits: working exits (kill-switch flatten, plan SELL signals, remainders), then stops and
   take-profits touched by the bar (stop first when both are) - clamped too (exits pass);
4. entries (refused while a protection locks them: halted or stalled, see
   :mod:`tasks.execution.protections`): each working plan entry sends one child order,
   cut by :func:`tasks.risk.clamps.clamp_order` at the bar's open against the clamp book; a
   fill is booked into the clamp book before the next order (as :func:`clamp_batch` does);
5. marks move to the close, high-water marks and trailing stops are updated (they act from the
   next bar on), the kill switch is checked on the day's P&L;
6. at the session's last bar: timeouts and unfinished exits go to the close (market-on-close).

Every child order is immediate-or-cancel and goes: state saved (with the order "in flight") ->
``intent`` logged -> broker -> result logged -> booked. After a crash the engine reloads the
state, completes the order in flight from the broker's record (or re-sends it under the same
client id when the broker never got it) and resumes at the bar it was in; orders already booked
are recognised by id and not sent again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from tasks.execution import positions as pos
from tasks.execution.broker import Bar, Broker, Fill, OrderRequest
from tasks.execution.halt import Halt, HaltContext
from tasks.execution.protections import Protection, entry_lock, intraday_protections
from tasks.execution.state import SessionState, Working, save_session_state
from tasks.execution.tradelog import TradeLog
from tasks.io import FAULT_ENV, fault_point  # noqa: F401 (tests: crash at a named point)
from tasks.paths import Paths
from tasks.risk.clamps import Book, Order, Position, clamp_order
from tasks.settings import AppSettings
from tasks.trading_settings import RiskSettings


@dataclass(frozen=True)
class BarView:
    """What an observer sees after each bar: the clamp book as the clamps saw it (marks at the
    bar's open, net liquidity at those marks), the symbols with an exposure-adding fill in the
    bar, and the net liquidity / day P&L the kill switch was checked on (at the bar's close)."""

    index: int
    ts: str
    book: Book
    added: frozenset[str]
    cash: float
    marks: dict[str, float]
    qty: dict[str, int]
    net_liquidity: float
    day_pnl: float
    start_nl: float
    halted: bool


Observer = Callable[[BarView], None]


@dataclass
class Setup:
    """What a session's engine works with (fixed for the session)."""

    paths: Paths
    settings: AppSettings
    risk: RiskSettings
    broker: Broker
    log: TradeLog
    do_not_trade: list[str]
    max_holding: int
    close_ts: str
    sanity_judge: Callable | None = None
    observer: Observer | None = None
    protections: Sequence[Protection] | None = None  # None: the intraday protections


def _opposite(side: str) -> str:
    return "SELL" if side == "BUY" else "BUY"


class Engine:
    def __init__(self, setup: Setup, st: SessionState) -> None:
        self.s, self.st = setup, st
        self.applied = set(st.applied)
        self.protections = tuple(setup.protections) if setup.protections is not None \
            else intraday_protections(setup.settings.data.calendar)
        self.halt = Halt(HaltContext(setup, st, self.protections, self.withdraw, self.save,
                                     self.booked, self.log_intent, self.complete))

    # ---- persistence and the trade log ------------------------------------------------------
    def save(self) -> None:
        save_session_state(self.s.paths, self.st)

    def record(self, event: str, order_id: str, symbol: str, side: str, ts: str,
               meta: dict[str, Any], **extra: Any) -> dict[str, Any]:
        st = self.st
        return {"timestamp": ts, "session": st.session, "mode": st.mode, "event": event,
                "order_id": order_id, "symbol": symbol, "direction": side,
                "size_pre": meta.get("size_pre"), "size_post_risk": meta.get("size_post_risk"),
                "entry_price": None, "exit_price": None, "qty": extra.pop("qty", None),
                "pnl": None, "reason_tags": list(meta.get("tags", [])),
                "policy_version": st.policy_version, "model_id": st.model_id,
                "purpose": meta.get("purpose"), "parent_id": meta.get("parent_id"), **extra}

    def log_once(self, rec: dict[str, Any]) -> None:
        if not self.s.log.logged(rec["order_id"], rec["event"]):
            self.s.log.append(rec)

    def log_intent(self, child: OrderRequest, meta: dict[str, Any], start_ts: str) -> None:
        """Log an order's ``intent`` (once)."""
        self.log_once(self.record("intent", child.order_id, child.symbol, child.side, start_ts,
                                  meta, qty=child.qty, kind=child.kind, price=child.price))

    def booked(self, order_id: str) -> bool:
        """The order's result is booked (it is never sent again)."""
        return order_id in self.applied

    # ---- sending one order --------------------------------------------------------------------
    def send(self, child: OrderRequest, bar: Bar, meta: dict[str, Any], start_ts: str
             ) -> Fill | None:
        """State saved -> intent logged -> broker -> result logged -> booked (None if done)."""
        if child.order_id in self.applied:
            return None
        self.st.sending = {"order": asdict(child), "bar": asdict(bar), "meta": meta,
                           "start_ts": start_ts}
        self.st.counters["orders"] += 1
        self.save()
        self.log_intent(child, meta, start_ts)
        fault_point("after_intent")
        fill = self.s.broker.lookup(child.order_id) or self.s.broker.submit(child, bar)
        fault_point("after_send")
        self.complete(child, meta, fill)
        return fill

    def complete(self, child: OrderRequest, meta: dict[str, Any], fill: Fill) -> None:
        """Book a result, log it (once) and mark the order done."""
        extra = self._book_fill(fill, meta) if fill.qty > 0 else {"event": "unfilled"}
        event = extra.pop("event")
        self._update_parent(meta["parent_id"], fill)
        if not self.s.log.result_of(child.order_id):
            self.s.log.append(self.record(
                event, child.order_id, child.symbol, child.side, fill.ts, meta, qty=fill.qty,
                fill_price=fill.price, fee=fill.fee, slippage=fill.slippage, status=fill.status,
                qty_requested=fill.qty_requested, fill_tags=list(fill.tags), **extra))
        self.applied.add(child.order_id)
        self.st.applied.append(child.order_id)
        self.st.sending = None

    def _book_fill(self, fill: Fill, meta: dict[str, Any]) -> dict[str, Any]:
        st, sym = self.st, fill.symbol
        signed = fill.qty if fill.side == "BUY" else -fill.qty
        held = st.holdings.get(sym)
        cash_flow = -signed * fill.price - fill.fee
        st.cash += cash_flow
        st.flows[sym] = st.flows.get(sym, 0.0) + cash_flow
        st.buckets[sym] = meta.get("bucket") or (held.bucket if held else "core")
        c = st.counters
        c["fills"] += 1
        c["notional"] += fill.qty * fill.price
        c["fees"] += fill.fee
        c["slippage"] += fill.slippage
        trade = {"symbol": sym, "action": fill.side, "size": fill.qty * fill.price / st.start_nl,
                 "pnl": None}
        st.recent_trades = [*st.recent_trades[-19:], trade]
        if held is None or (held.qty > 0) == (signed > 0):
            h = pos.open_or_add(st, fill, meta, self.s.risk)
            st.holdings[sym] = h
            return {"event": "fill", "entry_price": fill.price, "episode_id": h.episode_id,
                    "stop": h.stop, "take_profit": h.take_profit, "stop_frac": h.stop_frac,
                    "atr": h.atr, "bucket": h.bucket, "sector": h.sector,
                    "position_after": h.qty}
        left, pnl, _ = pos.reduce(held, fill)
        if left is None:
            st.holdings.pop(sym)
        else:
            st.holdings[sym] = left
        trade["pnl"] = pnl / st.start_nl
        return {"event": "exit", "entry_price": held.entry_price, "exit_price": fill.price,
                "pnl": pnl, "episode_id": held.episode_id, "position_left": left.qty if left else 0,
                "bucket": held.bucket, "sector": held.sector}

    def _update_parent(self, parent_id: str, fill: Fill) -> None:
        for w in self.st.working:
            if w.parent_id == parent_id:
                w.qty -= fill.qty
                w.filled += fill.qty
                gone = w.purpose != "entry" and fill.symbol not in self.st.holdings
                if w.qty <= 0 or gone:
                    self.st.working.remove(w)
                return

    def withdraw(self, w: Working, event: str, order_id: str, tags: list[str], ts: str) -> None:
        """Refuse (reject) or cancel a working order, logged once."""
        meta = {"purpose": w.purpose, "parent_id": w.parent_id, "size_pre": w.size_pre,
                "size_post_risk": 0.0, "tags": [*w.tags, *tags]}
        self.log_once(self.record(event, order_id, w.symbol, w.side, ts, meta, qty=0))
        if w in self.st.working:
            self.st.working.remove(w)

    # ---- the clamp book ----------------------------------------------------------------------
    def clamp_book(self) -> Book:
        positions = {s: Position(s, h.qty, h.mark, h.bucket, h.sector, h.delta, h.lots)
                     for s, h in self.st.holdings.items()}
        return Book(self.st.net_liquidity(), positions)

    def clamp(self, order: Order, book: Book) -> tuple[Order, tuple[str, ...]]:
        s = self.s
        res = clamp_order(order, book, s.risk, s.settings.guardrails, s.do_not_trade)
        for tag in res.tags:
            if tag.startswith("clamp:"):
                self.st.clamps_fired[tag] = self.st.clamps_fired.get(tag, 0) + 1
        return res.order, res.tags

    # ---- one bar ------------------------------------------------------------------------------
    def _signature(self) -> tuple:
        """What a restart could not re-derive from the bars alone if it were lost."""
        st = self.st
        return (len(st.applied), len(st.working), st.halted, st.stalled, len(st.failures),
                tuple((s, h.qty, h.stop) for s, h in st.holdings.items()))

    def step(self, i: int, start_ts: str, ts: str, bars: dict[str, Bar], last: bool) -> None:
        """One bar (see the module docstring). The state is saved at the end of a bar that
        changed an order, a position, a stop or a flag (a bar that only moved marks and
        high-water marks below the trailing level is re-derived from the bars on a restart)."""
        st = self.st
        before = self._signature()
        self.halt.stall_checks(start_ts, ts, bars)
        for sym, b in bars.items():
            if sym in st.holdings:
                st.holdings[sym].mark = b.open
        book = self.clamp_book()
        self._exits(i, start_ts, bars, book)
        added = self._entries(i, start_ts, bars, book)
        for sym, b in bars.items():
            if sym in st.holdings:
                st.holdings[sym] = replace(pos.trail(st.holdings[sym], b, self.s.risk), mark=b.close)
        nl = self.halt.kill_check(i, ts)
        if last and self.halt.near_close(ts):
            self._close_out(i, ts, bars)
        st.bar_index, st.last_ts = i, ts
        st.last_seen.update({s: ts for s in bars})
        if self._signature() != before or last:
            self.save()
        if self.s.observer:
            self._observe(i, ts, book, added, nl)

    def _observe(self, i: int, ts: str, book: Book, added: set[str], nl: float) -> None:
        st = self.st
        self.s.observer(BarView(i, ts, book, frozenset(added), st.cash,
                                {s: h.mark for s, h in st.holdings.items()},
                                {s: h.qty for s, h in st.holdings.items()}, nl,
                                nl - st.start_nl, st.start_nl, st.halted))

    def _exit_child(self, i: int, start_ts: str, bar: Bar, w: Working, book: Book,
                    kind: str = "market", price: float | None = None, suffix: str = "") -> None:
        held = self.st.holdings.get(w.symbol)
        if held is None:
            return
        order, tags = self.clamp(Order(w.symbol, w.side, min(w.qty, abs(held.qty)), bar.open,
                                       held.bucket, held.sector), book)
        meta = {"purpose": w.purpose, "parent_id": w.parent_id, "bucket": held.bucket,
                "sector": held.sector, "tags": [*w.tags, *tags],
                "size_pre": abs(held.qty) * held.mark / self.st.start_nl,
                "size_post_risk": order.qty * bar.open / self.st.start_nl}
        child = OrderRequest(f"{w.parent_id}@{i:03d}{suffix}", w.symbol, w.side, order.qty,
                             kind, price)
        fill = self.send(child, bar, meta, start_ts)
        if fill and fill.qty:
            book.add(Order(w.symbol, w.side, fill.qty, bar.open, held.bucket, held.sector))

    def _exits(self, i: int, start_ts: str, bars: dict[str, Bar], book: Book) -> None:
        st = self.st
        exiting = set()
        for w in [w for w in st.working if w.purpose != "entry"]:
            exiting.add(w.symbol)
            if w.symbol not in st.holdings:
                st.working.remove(w)
            elif w.symbol in bars:
                self._exit_child(i, start_ts, bars[w.symbol], w, book)
        for sym in sorted(st.holdings):
            held = st.holdings.get(sym)
            if sym in exiting or sym not in bars or held is None:
                continue
            trig = pos.exit_trigger(held, bars[sym])
            if trig is None:
                continue
            w = Working(f"{st.session}|{i:03d}|{sym}|{trig[0]}", sym, _opposite(held.side),
                        abs(held.qty), trig[0], tags=[f"exit:{trig[0]}"])
            st.working.append(w)
            self._exit_child(i, start_ts, bars[sym], w, book,
                             "stop" if trig[0] == "stop" else "limit", trig[1])

    def _entries(self, i: int, start_ts: str, bars: dict[str, Bar], book: Book) -> set[str]:
        st, added = self.st, set()
        locks = self.halt.entry_locks()
        for w in [w for w in st.working if w.purpose == "entry"]:
            bar = bars.get(w.symbol)
            child_id = f"{w.parent_id}@{i:03d}"
            if bar is None or child_id in self.applied:
                continue
            lock = entry_lock(locks, w.symbol)
            if lock is not None:
                self.withdraw(w, "reject", child_id, [lock.reason], start_ts)
                continue
            order, tags = self.clamp(Order(w.symbol, w.side, w.qty, bar.open, w.bucket,
                                           w.sector), self._view(book, w))
            if order.qty <= 0:
                self.withdraw(w, "reject", child_id, list(tags), start_ts)
                continue
            w.qty, w.tags = order.qty, [*w.tags, *tags]
            meta = {"purpose": "entry", "parent_id": w.parent_id, "atr": w.atr,
                    "bucket": w.bucket, "sector": w.sector, "tags": w.tags,
                    "size_pre": w.size_pre, "size_post_risk": order.qty * bar.open / st.start_nl,
                    "continuation": w.filled > 0}
            fill = self.send(OrderRequest(child_id, w.symbol, w.side, order.qty), bar, meta,
                             start_ts)
            if fill and fill.qty:
                self._book_add(book, Order(w.symbol, w.side, fill.qty, bar.open, w.bucket,
                                           w.sector), meta["continuation"])
                added.add(w.symbol)
        return added

    @staticmethod
    def _view(book: Book, w: Working) -> Book:
        """The clamp book for a working entry's next child: its own lot is not a new lot."""
        held = book.positions.get(w.symbol)
        if w.filled <= 0 or held is None:
            return book
        return Book(book.net_liquidity, {**book.positions,
                                         w.symbol: replace(held, lots=max(held.lots - 1, 0))})

    @staticmethod
    def _book_add(book: Book, order: Order, continuation: bool) -> None:
        book.add(order)
        held = book.positions.get(order.symbol)
        if continuation and held is not None:
            book.positions[order.symbol] = replace(held, lots=max(held.lots - 1, 1))

    def _close_out(self, i: int, ts: str, bars: dict[str, Bar]) -> None:
        """At the last bar: timeouts and unfinished exits go to the close (market-on-close)."""
        st = self.st
        exiting = {w.symbol for w in st.working if w.purpose != "entry"}
        for sym, held in sorted(st.holdings.items()):
            if held.managed and sym not in exiting and held.sessions_held + 1 >= self.s.max_holding:
                st.working.append(Working(f"{st.session}|{i:03d}|{sym}|timeout", sym,
                                          _opposite(held.side), abs(held.qty), "timeout",
                                          tags=[f"exit:timeout({self.s.max_holding} sessions)"]))
        book = self.clamp_book()
        for w in [w for w in st.working if w.purpose != "entry" and w.symbol in bars]:
            self._exit_child(i, ts, bars[w.symbol], w, book, "close", suffix="c")

    # ---- the session --------------------------------------------------------------------------
    def run(self, steps: list[tuple[str, str, dict[str, Bar]]]) -> SessionState:
        """Walk the bars (resuming after the last completed one), then close the session."""
        self.halt.reconcile()
        for i, (start_ts, ts, bars) in enumerate(steps):
            if i <= self.st.bar_index:
                continue
            self.step(i, start_ts, ts, bars, last=i == len(steps) - 1)
        if self.st.status == "running":
            self.halt.end_of_session(steps[-1][1] if steps else self.s.close_ts)
        return self.st
