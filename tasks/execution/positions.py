"""Positions: stops from the clamp module, exit triggers, trailing, and booking fills.

Stops come from :func:`tasks.risk.clamps.stop_levels` (initial 1.8 ATR, take-profit 2.5 ATR)
and :func:`tasks.risk.clamps.trail_stop` (1.2 ATR from the high-water mark, never loosened).
The trailing stop takes over once it reaches the entry price (the high-water mark is 1.2 ATR
in profit): before that the initial stop is the protection, after it the stop only rises
(falls, for a short) with the high-water (low-water) mark.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tasks.execution.broker import Bar, Fill
from tasks.execution.state import Holding, SessionState
from tasks.risk.clamps import stop_levels, trail_stop
from tasks.trading_settings import RiskSettings


def atr_from_plan(stop: float, take_profit: float, risk: RiskSettings) -> float:
    """The ATR (price units) a plan row was priced with: |tp - stop| / (1.8 + 2.5)."""
    return abs(take_profit - stop) / (risk.initial_stop_atr + risk.take_profit_atr)


def exit_trigger(h: Holding, bar: Bar) -> tuple[str, float] | None:
    """('stop', level) or ('take_profit', level) when the bar touches one (stop first)."""
    if not h.managed:
        return None
    long = h.qty > 0
    if (bar.low <= h.stop) if long else (bar.high >= h.stop):
        return "stop", h.stop
    if h.take_profit is not None and ((bar.high >= h.take_profit) if long
                                      else (bar.low <= h.take_profit)):
        return "take_profit", h.take_profit
    return None


def trail(h: Holding, bar: Bar, risk: RiskSettings) -> Holding:
    """The holding after this bar's high (low): new extreme, and the trailing stop once it is
    at least the entry price; the stop never moves against the position."""
    if not h.managed:
        return h
    side = h.side
    extreme = max(h.extreme, bar.high) if side == "BUY" else min(h.extreme, bar.low)
    candidate = trail_stop(side, extreme, h.atr, h.stop, risk)
    activated = candidate >= h.entry_price if side == "BUY" else candidate <= h.entry_price
    return replace(h, extreme=extreme, stop=candidate if activated else h.stop)


def _signed(side: str, qty: int) -> int:
    return qty if side == "BUY" else -qty


def open_or_add(st: SessionState, fill: Fill, meta: dict[str, Any], risk: RiskSettings) -> Holding:
    """Book an exposure-adding fill: a new holding with its stops, or an add (average entry)."""
    signed = _signed(fill.side, fill.qty)
    held = st.holdings.get(fill.symbol)
    if held is None:
        stop, tp = stop_levels(fill.side, fill.price, meta["atr"], risk) if meta.get("atr") \
            else (None, None)
        return Holding(
            fill.symbol, signed, fill.price, meta.get("bucket", "core"), meta.get("sector", "unknown"),
            lots=1, entry_price=fill.price, atr=meta.get("atr"), stop=stop, take_profit=tp,
            extreme=fill.price, stop_frac=abs(fill.price - stop) / fill.price if stop else None,
            episode_id=fill.order_id, entry_session=st.session, entry_ts=fill.ts,
            max_qty=fill.qty, entry_fee_left=fill.fee, policy_version=st.policy_version,
            model_id=st.model_id)
    qty = held.qty + signed
    entry = (abs(held.qty) * (held.entry_price or held.mark) + fill.qty * fill.price) / abs(qty)
    lots = held.lots + (0 if meta.get("continuation") else 1)
    return replace(held, qty=qty, mark=fill.price, lots=lots, entry_price=entry,
                   max_qty=max(held.max_qty, abs(qty)),
                   entry_fee_left=held.entry_fee_left + fill.fee)


def reduce(held: Holding, fill: Fill) -> tuple[Holding | None, float, dict[str, Any] | None]:
    """Book an exit fill: (holding left or None, the fill's net P&L, the closed episode or None).

    The fill's P&L is net of its fee and of the entry fees of the quantity it closes."""
    direction = 1 if held.qty > 0 else -1
    entry = held.entry_price if held.entry_price is not None else held.mark
    share = fill.qty / abs(held.qty)
    entry_fee = held.entry_fee_left * share
    pnl = direction * (fill.price - entry) * fill.qty - fill.fee - entry_fee
    left = held.qty - direction * fill.qty
    after = replace(held, qty=left, mark=fill.price, entry_fee_left=held.entry_fee_left - entry_fee,
                    realized=held.realized + pnl, exit_qty=held.exit_qty + fill.qty)
    if left != 0:
        return after, pnl, None
    return None, pnl, after
