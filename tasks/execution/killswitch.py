"""The kill switch: a pure check, and the SANITY_JUDGE hook its trip calls.

The switch trips when the day's P&L (net liquidity now minus start-of-day net liquidity, fees
and slippage included) is at or below ``-execution.kill_switch_daily_loss`` x start-of-day net
liquidity. Both sides are compared in whole cents, so exactly -2.50% trips whatever the float
rounding. On a trip the intraday engine persists the halted state, flattens every position,
refuses new entries for the rest of the session (exits and cancels keep working, like
NautilusTrader's HALTED/REDUCING trading states), raises the ``kill_switch`` alert and calls the
SANITY_JUDGE hook.

The hook (:data:`SANITY_JUDGE`, or the ``sanity_judge`` argument of the intraday flow) receives
a :class:`SanityJudgeCall` whose ``request`` has the runbook's SANITY_JUDGE fields and returns a
dict that is stored in the kill-switch state. The default records "SANITY_JUDGE escalation
requested" and calls nothing. A hook wired to the escalation service returns its outcome; an
answer with ``"stay_demo": false`` (at the top level or under ``"response"``) clears the
quarantine / cool-off through :func:`tasks.execution.quarantine.clear_quarantine` with
``source="sanity_judge"``. A hook that raises is recorded as a remote failure and never stops
the flatten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.paths import Paths
from tasks.settings import AppSettings


def cents(x: float) -> int:
    """An amount in whole cents (half away from zero)."""
    return int(round(x * 100.0))


@dataclass(frozen=True)
class KillCheck:
    tripped: bool
    day_pnl: float
    day_pnl_pct: float
    limit: float  # the loss that trips, in cash (positive)


def check_kill_switch(start_nl: float, nl_now: float, daily_loss: float) -> KillCheck:
    """Trip when nl_now - start_nl <= -daily_loss x start_nl (in whole cents)."""
    pnl = nl_now - start_nl
    limit = daily_loss * start_nl
    pct = pnl / start_nl if start_nl > 0 else float("nan")
    return KillCheck(cents(pnl) <= -cents(limit), pnl, pct, limit)


@dataclass(frozen=True)
class SanityJudgeCall:
    """What the kill-switch step hands to the SANITY_JUDGE hook."""

    session: str
    at: str
    mode: str
    request: dict[str, Any]          # timestamp, kill_switch_reason, recent_trades, portfolio_state
    triggers: dict[str, Any] = field(default_factory=dict)


SanityJudgeHook = Callable[[Paths, AppSettings, SanityJudgeCall], dict[str, Any] | None]


def default_sanity_judge(paths: Paths, settings: AppSettings, call: SanityJudgeCall
                         ) -> dict[str, Any]:
    """Record the request only (no escalation service is wired in)."""
    return {"status": "requested", "note": "SANITY_JUDGE escalation requested",
            "call_type": "SANITY_JUDGE"}


#: The hook the intraday flow calls on a kill-switch trip (replace it to wire the escalation).
SANITY_JUDGE: SanityJudgeHook = default_sanity_judge


def sanity_request(at: str, check: KillCheck, daily_loss: float, net_liquidity: float,
                   recent_trades: list[dict[str, Any]]) -> dict[str, Any]:
    """The runbook's SANITY_JUDGE request fields (daily_pnl as a fraction of start NL)."""
    return {"timestamp": at,
            "kill_switch_reason": f"Daily P&L {check.day_pnl_pct:.2%} at or below the "
                                  f"-{daily_loss:.2%} threshold",
            "recent_trades": recent_trades,
            "portfolio_state": {"net_liquidity": net_liquidity, "daily_pnl": check.day_pnl_pct}}


def stay_demo_answer(result: dict[str, Any] | None) -> bool | None:
    """The hook's ``stay_demo`` answer (None when it gave none)."""
    if not isinstance(result, dict):
        return None
    for scope in (result, result.get("response")):
        if isinstance(scope, dict) and isinstance(scope.get("stay_demo"), bool):
            return scope["stay_demo"]
    return None
