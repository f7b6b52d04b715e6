"""The broker interface and the paper broker with its fill model.

Every order the intraday engine sends is immediate-or-cancel: :meth:`Broker.submit` returns its
final result at once (filled, partly filled with the rest cancelled, unfilled, or not triggered),
and :meth:`Broker.lookup` answers by client order id, so that an order whose result was not
logged before a crash can be reconciled. A live adapter implements the same two methods; none is
shipped (see :mod:`tasks.execution.gates`).

Fill model of :class:`PaperBroker` (see docs/execution.md):

- reference price: the bar's open (market), the trigger or the open if the bar gapped through it
  (stop), the limit or better (limit), the bar's close (market-on-close);
- quantity: at most ``max_participation`` x the bar's volume (the rest is unfilled); a
  market-on-close order takes all (the closing auction); unknown volume: all, tagged;
- slippage (market, stop, close): half the spread plus ``impact_coef`` x the bar's range / open
  x participation^``impact_exponent``, against the order; a limit order fills at its reference;
- the fill price is clipped to the bar's [low, high]: nothing fills outside the bar's range;
- fees: ``guardrails.fee_pct`` of the notional, per side.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from tasks.execution.settings import FillModelSettings

OrderKind = Literal["market", "stop", "limit", "close"]


@dataclass(frozen=True)
class OrderRequest:
    """An immediate-or-cancel order; ``price`` is the stop trigger or the limit."""

    order_id: str
    symbol: str
    side: str  # BUY | SELL
    qty: int
    kind: OrderKind = "market"
    price: float | None = None


@dataclass(frozen=True)
class Bar:
    """One intraday bar of one symbol (``ts`` = its end, ISO UTC)."""

    symbol: str
    ts: str
    open: float
    high: float
    low: float
    close: float
    volume: float  # NaN = unknown


@dataclass(frozen=True)
class Fill:
    """The final result of an immediate-or-cancel order."""

    order_id: str
    symbol: str
    side: str
    qty_requested: int
    qty: int
    price: float | None
    fee: float
    slippage: float  # cost against the reference price, in cash (>= 0)
    status: str      # filled | partial | unfilled | not_triggered
    ts: str
    tags: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, d: dict) -> Fill:
        return cls(**{**d, "tags": tuple(d.get("tags", ()))})


@runtime_checkable
class Broker(Protocol):
    """What the intraday engine needs from a broker (paper or live)."""

    name: str

    def submit(self, order: OrderRequest, bar: Bar) -> Fill:
        """Send an immediate-or-cancel order; ``bar`` is the engine's latest market data."""
        ...

    def lookup(self, order_id: str) -> Fill | None:
        """The result of an order sent earlier (None: the broker never received it)."""
        ...


def reference_price(order: OrderRequest, bar: Bar) -> float | None:
    """The price an order trades at before slippage (None when a stop/limit is not touched)."""
    p = order.price
    if order.kind == "market":
        return bar.open
    if order.kind == "close":
        return bar.close
    if p is None:
        raise ValueError(f"{order.kind} order {order.order_id} has no price")
    sell = order.side == "SELL"
    if order.kind == "stop":
        if sell:
            return min(bar.open, p) if bar.low <= p else None
        return max(bar.open, p) if bar.high >= p else None
    if sell:
        return max(bar.open, p) if bar.high >= p else None
    return min(bar.open, p) if bar.low <= p else None


def fillable_qty(order: OrderRequest, bar: Bar, fm: FillModelSettings) -> int:
    """How much of the order this bar's volume can take."""
    if order.kind == "close" or not math.isfinite(bar.volume):
        return order.qty
    return max(0, min(order.qty, int(fm.max_participation * bar.volume)))


def slippage_fraction(qty: int, bar: Bar, fm: FillModelSettings) -> float:
    """Half spread + impact proportional to the bar's range and a power of the participation."""
    if math.isfinite(bar.volume) and bar.volume > 0:
        participation = min(1.0, qty / bar.volume)
    else:
        participation = 1.0 if math.isfinite(bar.volume) else fm.max_participation
    bar_range = (bar.high - bar.low) / bar.open if bar.open > 0 else 0.0
    return fm.half_spread_bps / 1e4 + fm.impact_coef * bar_range * participation ** fm.impact_exponent


def simulate_fill(order: OrderRequest, bar: Bar, fm: FillModelSettings, fee_pct: float) -> Fill:
    """The paper fill of one order on one bar (pure)."""
    base = {"order_id": order.order_id, "symbol": order.symbol, "side": order.side,
            "qty_requested": order.qty, "ts": bar.ts}
    ref = reference_price(order, bar)
    if ref is None:
        return Fill(**base, qty=0, price=None, fee=0.0, slippage=0.0, status="not_triggered")
    qty = fillable_qty(order, bar, fm)
    tags = ("fill:volume_unknown",) if not math.isfinite(bar.volume) else ()
    if qty <= 0:
        return Fill(**base, qty=0, price=None, fee=0.0, slippage=0.0, status="unfilled",
                    tags=(*tags, "fill:no_volume"))
    slip = 0.0 if order.kind == "limit" else slippage_fraction(qty, bar, fm)
    raw = ref * (1 + slip) if order.side == "BUY" else ref * (1 - slip)
    price = min(max(raw, bar.low), bar.high)
    status = "filled" if qty == order.qty else "partial"
    return Fill(**base, qty=qty, price=price, fee=fee_pct * qty * price,
                slippage=abs(price - ref) * qty, status=status, tags=tags)


class PaperBroker:
    """The paper broker: :func:`simulate_fill`, with a journal that makes client ids unique.

    The journal (one JSON line per order, fsynced before :meth:`submit` returns) stands for
    the exchange's own record: a second submit of a known client id returns the first result.
    """

    name = "paper"

    def __init__(self, journal: Path, fill: FillModelSettings, fee_pct: float) -> None:
        self.journal = Path(journal)
        self.fill_model = fill
        self.fee_pct = fee_pct
        data = self.journal.read_bytes() if self.journal.is_file() else b""
        self._known: dict[str, Fill] = self._read(data)
        self._newline_due = bool(data) and not data.endswith(b"\n")

    @staticmethod
    def _read(data: bytes) -> dict[str, Fill]:
        known = {}
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                fill = Fill.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a torn last line: the exchange never confirmed that order
            known[fill.order_id] = fill
        return known

    def submit(self, order: OrderRequest, bar: Bar) -> Fill:
        if order.order_id in self._known:
            return self._known[order.order_id]
        fill = simulate_fill(order, bar, self.fill_model, self.fee_pct)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a", encoding="utf-8") as fh:
            if self._newline_due:  # end a torn line first: it stays unreadable, never merged
                fh.write("\n")
                self._newline_due = False
            fh.write(json.dumps(asdict(fill), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._known[order.order_id] = fill
        return fill

    def lookup(self, order_id: str) -> Fill | None:
        return self._known.get(order_id)
