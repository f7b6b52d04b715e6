"""The runbook's escalation matrix as pure functions: value, threshold, fired, evaluable.

| trigger | fires when | call type |
|---|---|---|
| risk_drawdown_5d | drawdown over the last 5 sessions > 8% | REWARD_ENGINEER |
| risk_daily_loss | the session's P&L < -2.5% | REWARD_ENGINEER |
| regime | abs(market vol z) > 2.0 and mean pairwise correlation < 0.4 | REGIME_AUDITOR |
| decay_accuracy | realised hit rate >= 7 pp below the baseline's validation | REWARD_ENGINEER |
| decay_sharpe | Sharpe of realised plan returns < 0.6 | REWARD_ENGINEER |
| event_heat | mean put/call OI ratio > 1.6 | REGIME_AUDITOR |
| kill_switch | the session's P&L < -2.5% | SANITY_JUDGE (intraday) |

A trigger whose input is absent is *not evaluable* (recorded with the reason), never "false".
Several fired triggers of one call type make one call (:func:`calls`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.escalation.settings import EscalationSettings
from tasks.numbers import json_number


@dataclass(frozen=True)
class Trigger:
    name: str
    call_type: str
    value: Any
    threshold: str
    fired: bool
    evaluable: bool
    source: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _absent(name: str, call_type: str, threshold: str, why: str) -> Trigger:
    return Trigger(name, call_type, None, threshold, False, False, why)


_num = json_number


def drawdown_5d(equity: pd.DataFrame, day: str) -> float | None:
    """Largest peak-to-trough fall of net liquidity over the last 5 sessions up to ``day``."""
    rows = equity.loc[equity["session"].astype(str) <= day].sort_values("session").tail(5)
    if rows.empty:
        return None
    path = np.r_[float(rows["start_net_liquidity"].iloc[0]),
                 rows["end_net_liquidity"].to_numpy(dtype="float64")]
    if not np.isfinite(path).all() or (path <= 0).any():
        return None
    return float(np.max(1.0 - path / np.maximum.accumulate(path)))


def risk_triggers(equity: pd.DataFrame | None, session_rec: dict[str, Any] | None, day: str,
                  cfg: EscalationSettings) -> list[Trigger]:
    ct = "REWARD_ENGINEER"
    thr_dd = f"> {cfg.risk_drawdown_5d}"
    if equity is None or equity.empty:
        dd = _absent("risk_drawdown_5d", ct, thr_dd, "no data/state/equity.parquet")
    else:
        v = drawdown_5d(equity, day)
        dd = (_absent("risk_drawdown_5d", ct, thr_dd, f"no equity rows up to {day}") if v is None
              else Trigger("risk_drawdown_5d", ct, round(v, 6), thr_dd, v > cfg.risk_drawdown_5d,
                           True, "data/state/equity.parquet"))
    pnl, src = day_pnl(equity, session_rec, day)
    thr = f"< -{cfg.risk_daily_loss}"
    loss = (_absent("risk_daily_loss", ct, thr, src) if pnl is None else
            Trigger("risk_daily_loss", ct, round(pnl, 6), thr, pnl < -cfg.risk_daily_loss, True,
                    src))
    return [dd, loss]


def day_pnl(equity: pd.DataFrame | None, session_rec: dict[str, Any] | None, day: str
            ) -> tuple[float | None, str]:
    """The session's P&L fraction and where it came from (or why it is unknown)."""
    if session_rec is not None and _num(session_rec.get("day_pnl_pct")) is not None:
        return float(session_rec["day_pnl_pct"]), f"data/state/sessions/{day}.json"
    if equity is not None and not equity.empty:
        row = equity.loc[equity["session"].astype(str) == day]
        if len(row) and _num(row["day_pnl_pct"].iloc[0]) is not None:
            return float(row["day_pnl_pct"].iloc[0]), "data/state/equity.parquet"
    return None, f"no execution record for {day}"


def kill_switch_trigger(equity: pd.DataFrame | None, session_rec: dict[str, Any] | None,
                        day: str, cfg: EscalationSettings) -> Trigger:
    pnl, src = day_pnl(equity, session_rec, day)
    thr = f"< -{cfg.kill_switch_loss}"
    if pnl is None:
        return _absent("kill_switch", "SANITY_JUDGE", thr, src)
    fired = pnl < -cfg.kill_switch_loss or bool((session_rec or {}).get("kill_switch"))
    return Trigger("kill_switch", "SANITY_JUDGE", round(pnl, 6), thr, fired, True, src)


def regime_trigger(vol_z: Any, corr: Any, cfg: EscalationSettings) -> Trigger:
    thr = f"|vol z| > {cfg.regime_vol_z} and corr < {cfg.regime_corr}"
    z, c = _num(vol_z), _num(corr)
    if z is None or c is None:
        return _absent("regime", "REGIME_AUDITOR", thr, "market vol z-score or mean "
                       "correlation unknown for the session (too little history)")
    fired = abs(z) > cfg.regime_vol_z and c < cfg.regime_corr
    return Trigger("regime", "REGIME_AUDITOR", {"vol_z": round(z, 6), "corr": round(c, 6)},
                   thr, fired, True, "features: mkt_vol_z, mkt_avg_corr")


def decay_triggers(orders: pd.DataFrame | None, reference: tuple[float, str] | None,
                   horizon: int, cfg: EscalationSettings, source: str) -> list[Trigger]:
    """Model decay from realised plan orders (columns session, win, ret, prob_win_cal)."""
    ct = "REWARD_ENGINEER"
    thr_a, thr_s = f"drop >= {cfg.decay_accuracy_drop}", f"< {cfg.decay_sharpe}"
    if orders is None or orders.empty:
        why = f"no realised plan outcomes ({source})"
        return [_absent("decay_accuracy", ct, thr_a, why), _absent("decay_sharpe", ct, thr_s, why)]
    return [_accuracy(orders, reference, cfg, source), _sharpe(orders, horizon, cfg, source)]


def _accuracy(orders: pd.DataFrame, reference: tuple[float, str] | None,
              cfg: EscalationSettings, source: str) -> Trigger:
    thr = f"drop >= {cfg.decay_accuracy_drop}"
    n = len(orders)
    if n < cfg.decay_min_orders:
        return _absent("decay_accuracy", "REWARD_ENGINEER", thr,
                       f"{n} realised orders < {cfg.decay_min_orders} ({source})")
    hit = float(orders["win"].astype(float).mean())
    ref, ref_src = reference if reference else (float(orders["prob_win_cal"].mean()),
                                                "mean calibrated P(win) of the orders")
    drop = ref - hit
    value = {"hit_rate": round(hit, 6), "reference": round(ref, 6), "reference_source": ref_src,
             "drop": round(drop, 6), "n": n}
    return Trigger("decay_accuracy", "REWARD_ENGINEER", value, thr,
                   drop >= cfg.decay_accuracy_drop, True, source)


def plan_returns(orders: pd.DataFrame) -> pd.Series:
    """Mean realised return of each plan session's orders (unknown returns left out)."""
    known = orders.loc[pd.to_numeric(orders["ret"], errors="coerce").notna()]
    return known.groupby("session")["ret"].mean().astype(float).sort_index()


def _sharpe(orders: pd.DataFrame, horizon: int, cfg: EscalationSettings, source: str
            ) -> Trigger:
    thr = f"< {cfg.decay_sharpe}"
    rets = plan_returns(orders)
    if len(rets) < cfg.decay_min_sessions or not rets.std(ddof=1) > 0:
        return _absent("decay_sharpe", "REWARD_ENGINEER", thr,
                       f"{len(rets)} plan sessions with realised returns "
                       f"(need {cfg.decay_min_sessions} with non-zero spread; {source})")
    sharpe = float(rets.mean() / rets.std(ddof=1) * math.sqrt(252 / horizon))
    value = {"sharpe": round(sharpe, 6), "sessions": int(len(rets)),
             "mean_return": round(float(rets.mean()), 6)}
    return Trigger("decay_sharpe", "REWARD_ENGINEER", value, thr, sharpe < cfg.decay_sharpe,
                   True, source)


def event_trigger(context: pd.DataFrame | None, cfg: EscalationSettings) -> Trigger:
    thr = f"> {cfg.event_put_call}"
    if context is None or "put_call_ratio" not in context:
        return _absent("event_heat", "REGIME_AUDITOR", thr, "no put/call input in the context "
                       "source (daily.context_path)")
    values = pd.to_numeric(context["put_call_ratio"], errors="coerce").dropna()
    if values.empty:
        return _absent("event_heat", "REGIME_AUDITOR", thr, "put/call ratio unknown for every "
                       "symbol of the session")
    v = float(values.mean())
    return Trigger("event_heat", "REGIME_AUDITOR", round(v, 6), thr, v > cfg.event_put_call,
                   True, f"context: mean of {len(values)} symbols")


def calls(triggers: list[Trigger], call_types: tuple[str, ...]) -> dict[str, list[Trigger]]:
    """Fired triggers grouped by call type (one call per type), in ``call_types`` order."""
    out: dict[str, list[Trigger]] = {}
    for ct in call_types:
        fired = [t for t in triggers if t.fired and t.call_type == ct]
        if fired:
            out[ct] = fired
    return out
