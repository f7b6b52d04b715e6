"""Hard risk clamps: the one place that decides how much of an order the book may take.

The daily plan and the intraday flow both call :func:`clamp_order` for every order that adds
exposure; nothing else applies risk limits. All limits are fractions of net liquidity:

- bucket capital (core 90%, penny 2%, F&O 5%);
- per name by bucket (core 1.5%, penny 0.4%, F&O 0.7% delta-equivalent);
- one ticker <= 25%, one sector <= 40%, the five largest positions together <= 50%;
- the do-not-trade list (config and policy), the position count and lots per ticker.

An order is cut to the largest whole number of lots that keeps every limit (each limit is
monotone in the quantity, so the search is exact); each limit that cut or dropped it leaves a
reason tag ``clamp:<limit>``. Orders that reduce exposure (exits) are never clamped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import pandas as pd

from tasks.trading_settings import GuardrailSettings, RiskSettings


@dataclass(frozen=True)
class Position:
    """An open position: signed quantity (negative = short) at a mark price."""

    symbol: str
    qty: int
    price: float
    bucket: str = "core"
    sector: str = "unknown"
    delta: float = 1.0
    lots: int = 1

    @property
    def exposure(self) -> float:
        """Gross delta-equivalent exposure in cash."""
        return abs(self.qty * self.price * self.delta)


@dataclass
class Book:
    """Net liquidity and open positions by symbol."""

    net_liquidity: float
    positions: dict[str, Position] = field(default_factory=dict)

    def exposure_by(self, key: Callable[[Position], str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for pos in self.positions.values():
            out[key(pos)] = out.get(key(pos), 0.0) + pos.exposure
        return out

    def top5(self) -> float:
        return sum(sorted((p.exposure for p in self.positions.values()), reverse=True)[:5])

    def add(self, order: Order) -> None:
        """Book a filled order (signed by side) at its price."""
        signed = order.qty if order.side == "BUY" else -order.qty
        old = self.positions.get(order.symbol)
        qty = signed + (old.qty if old else 0)
        if qty == 0:
            self.positions.pop(order.symbol, None)
            return
        lots = (old.lots if old else 0) + (1 if _adds(order, old) else 0)
        self.positions[order.symbol] = Position(order.symbol, qty, order.price, order.bucket,
                                                order.sector, order.delta, max(lots, 1))


@dataclass(frozen=True)
class Order:
    symbol: str
    side: str  # BUY | SELL
    qty: int
    price: float
    bucket: str = "core"
    sector: str = "unknown"
    delta: float = 1.0


@dataclass(frozen=True)
class ClampResult:
    order: Order
    tags: tuple[str, ...]

    @property
    def dropped(self) -> bool:
        return self.order.qty <= 0


def _adds(order: Order, held: Position | None) -> bool:
    """True when the order increases the absolute position (opens or adds)."""
    if held is None or held.qty == 0:
        return True
    return (held.qty > 0) == (order.side == "BUY")


def _limits(order: Order, book: Book, risk: RiskSettings) -> dict[str, Callable[[int], bool]]:
    """Each limit as a test 'does the book still comply after q more units of this order'."""
    nl = book.net_liquidity
    unit = abs(order.price * order.delta)
    held = book.positions.get(order.symbol)
    held_exp = held.exposure if held else 0.0
    bucket_exp = book.exposure_by(lambda p: p.bucket).get(order.bucket, 0.0)
    sector_exp = book.exposure_by(lambda p: p.sector).get(order.sector, 0.0)
    others = sorted((p.exposure for s, p in book.positions.items() if s != order.symbol),
                    reverse=True)
    eps = 1e-9 * max(nl, 1.0)

    def top5(q: int) -> float:
        return sum(sorted([*others, held_exp + q * unit], reverse=True)[:5])

    return {
        "per_name": lambda q: held_exp + q * unit <= risk.name_cap(order.bucket) * nl + eps,
        "single_ticker": lambda q: held_exp + q * unit <= risk.single_ticker_max * nl + eps,
        "bucket": lambda q: bucket_exp + q * unit <= risk.cap(order.bucket) * nl + eps,
        "sector": lambda q: sector_exp + q * unit <= risk.single_sector_max * nl + eps,
        "top5": lambda q: top5(q) <= risk.top5_max * nl + eps,
    }


def _largest(ok: Callable[[int], bool], qty: int, lot: int) -> int:
    """Largest multiple of ``lot`` in [0, qty] with ok(q) (ok is monotone decreasing)."""
    lo, hi = 0, qty // lot
    if ok(hi * lot):
        return hi * lot
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid * lot) else (lo, mid)
    return lo * lot if ok(lo * lot) else 0


def blocked_reason(order: Order, book: Book, risk: RiskSettings, guard: GuardrailSettings,
                   do_not_trade: Iterable[str] = ()) -> str | None:
    """Why an exposure-adding order may not trade at all (None when it may)."""
    if order.symbol in set(risk.do_not_trade) | set(do_not_trade):
        return "clamp:do_not_trade"
    if order.side == "SELL" and not risk.allow_short and order.symbol not in book.positions:
        return "clamp:no_short"
    held = book.positions.get(order.symbol)
    if held is None and len(book.positions) >= guard.positions_limit(risk, book.net_liquidity):
        return "clamp:max_positions"
    if held is not None and held.lots >= guard.max_per_ticker:
        return "clamp:max_per_ticker"
    if book.net_liquidity <= 0:
        return "clamp:no_net_liquidity"
    return None


def clamp_order(order: Order, book: Book, risk: RiskSettings, guard: GuardrailSettings,
                do_not_trade: Iterable[str] = ()) -> ClampResult:
    """Cut an order to what every hard limit allows; exits pass unchanged."""
    if order.qty <= 0:
        return ClampResult(replace(order, qty=0), ("clamp:non_positive_qty",))
    held = book.positions.get(order.symbol)
    if not _adds(order, held):
        if order.qty <= abs(held.qty):
            return ClampResult(order, ())
        # an exit larger than the position would flip it: only the exit part passes
        return ClampResult(replace(order, qty=abs(held.qty)), ("clamp:no_flip",))
    reason = blocked_reason(order, book, risk, guard, do_not_trade)
    if reason:
        return ClampResult(replace(order, qty=0), (reason,))
    limits = _limits(order, book, risk)
    tags, qty = [], (order.qty // guard.lot_size) * guard.lot_size
    if qty < order.qty:
        tags.append("size:lot_floor")
    for name, ok in limits.items():
        if qty == 0:
            break
        allowed = _largest(ok, qty, guard.lot_size)
        if allowed < qty:
            tags.append(f"clamp:{name}")
            qty = allowed
    return ClampResult(replace(order, qty=qty), tuple(tags))


def clamp_batch(orders: list[Order], book: Book, risk: RiskSettings, guard: GuardrailSettings,
                do_not_trade: Iterable[str] = ()) -> list[ClampResult]:
    """Clamp orders in priority order, booking each one that survives before the next."""
    out = []
    for order in orders:
        res = clamp_order(order, book, risk, guard, do_not_trade)
        if not res.dropped:
            book.add(res.order)
        out.append(res)
    return out


def stop_levels(side: str, entry: float, atr_abs: float, risk: RiskSettings) -> tuple[float, float]:
    """(initial stop, take-profit) at the configured ATR multiples."""
    sign = 1.0 if side == "BUY" else -1.0
    return (entry - sign * risk.initial_stop_atr * atr_abs,
            entry + sign * risk.take_profit_atr * atr_abs)


def trail_stop(side: str, extreme: float, atr_abs: float, current_stop: float,
               risk: RiskSettings) -> float:
    """Trailing stop from the high-water (long) or low-water (short) mark; it only tightens."""
    if side == "BUY":
        return max(current_stop, extreme - risk.trailing_stop_atr * atr_abs)
    return min(current_stop, extreme + risk.trailing_stop_atr * atr_abs)


def sip_transfer(day_profit: float, risk: RiskSettings) -> float:
    """Cash moved to the SIP bucket at the end of a day (a share of a positive profit only)."""
    return max(0.0, day_profit) * risk.sip_profit_share


def classify_bucket(symbol: str, price: float, adv_usd: float, risk: RiskSettings) -> str | None:
    """core / penny / fno by the configured rules; None for a penny name too illiquid to trade."""
    rules = risk.buckets
    if symbol in rules.fno_symbols:
        return "fno"
    if math.isfinite(price) and price < rules.penny_max_price:
        return "penny" if (math.isfinite(adv_usd) and adv_usd >= rules.penny_min_adv_usd) else None
    return "core"


def exposures(book: Book) -> dict[str, object]:
    """Exposure fractions of net liquidity: gross, by bucket, by sector, top-5, largest name."""
    nl = book.net_liquidity
    frac = (lambda v: v / nl) if nl > 0 else (lambda v: math.nan)
    by_symbol = {s: p.exposure for s, p in book.positions.items()}
    return {
        "gross": frac(sum(by_symbol.values())),
        "by_bucket": {k: frac(v) for k, v in sorted(book.exposure_by(lambda p: p.bucket).items())},
        "by_sector": {k: frac(v) for k, v in sorted(book.exposure_by(lambda p: p.sector).items())},
        "top5": frac(book.top5()),
        "largest_name": frac(max(by_symbol.values(), default=0.0)),
        "n_positions": len(book.positions),
    }


def book_from_frame(frame: pd.DataFrame | None, net_liquidity: float) -> Book:
    """A book from a positions table (symbol, qty, price, bucket, sector[, delta, lots])."""
    book = Book(net_liquidity)
    if frame is None:
        return book
    for row in frame.itertuples(index=False):
        book.positions[row.symbol] = Position(
            row.symbol, int(row.qty), float(row.price), getattr(row, "bucket", "core"),
            getattr(row, "sector", "unknown"), float(getattr(row, "delta", 1.0)),
            int(getattr(row, "lots", 1)))
    return book
