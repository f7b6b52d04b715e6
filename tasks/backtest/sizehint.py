"""The size hint's episodes, its gate and its fitting from a backtest (the model, state and
registry are in :mod:`tasks.plan.sizehint`).

**Episodes**: every closed episode of a backtest's root joined to the state its plan saw (the
signals of the session before its entry) and its reward per unit of size.

**Gate** (:func:`gate`): on the walk-forward's out-of-sample episodes, the hint's P&L against a
constant size and a volatility-targeting size (inverse of the symbol's 20-session volatility,
median -> 1, clipped to the arms' range), both scaled to the hint's average multiplier: the
same capital on average, allocated differently. Each episode's P&L is resized from the
multiplier it was traded at and booked on its exit session, on the backtest's starting
capital. The hint is usable only if its deflated Sharpe ratio (N = ``size_hint.trials``) is
above both and its maximum drawdown no deeper than either. Clamps that bound a resized order
(Kelly, per-trade target, book risk) and the fusion's reading of the hint are not replayed:
the gate judges the allocation of size across the trades that were made.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.backtest.analytics import TRADING_DAYS, drawdown
from tasks.backtest.stats import deflated_sharpe, sharpe_ratio
from tasks.numbers import json_number
from tasks.paths import Paths
from tasks.plan.sizehint import (
    PLAN_STATE,
    SCHEMA,
    STATE,
    WalkForward,
    register_hint,
    reward_of,
    reward_per_unit,
    schema_hash,
    walk_forward,
)
from tasks.settings import AppSettings

# --------------------------------------------------------------------------- episodes


def episode_table(root: Paths, settings: AppSettings, coefficients: dict[str, float],
                  penalty_rate: float) -> pd.DataFrame:
    """Every closed episode of a backtest (or live) root with the state its plan saw and its
    reward per unit of size. Episodes whose plan has no signals with the hint's state columns
    (written before the hint existed) are left out."""
    from tasks.execution.episodes import episodes_path
    from tasks.plan.outputs import output_paths
    from tasks.plan.trust import plan_session_of

    path = episodes_path(root)
    if not path.is_file():
        return pd.DataFrame()
    eps = pd.read_parquet(path)
    cache: dict[str, pd.DataFrame | None] = {}
    rows = []
    for ep in eps.itertuples(index=False):
        if pd.isna(ep.entry_session):
            continue
        plan = plan_session_of(settings.data.calendar, str(ep.entry_session))
        if plan not in cache:
            where = output_paths(root, plan)["signals"]
            sig = pd.read_parquet(where) if where.is_file() else None
            cache[plan] = (sig.set_index("symbol") if sig is not None and
                           set(PLAN_STATE) <= set(sig.columns) else None)
        sig = cache[plan]
        if sig is None or ep.symbol not in sig.index:
            continue
        s = sig.loc[ep.symbol]
        capital = float(ep.entry_price) * float(ep.size)
        row = {"episode_id": ep.episode_id, "symbol": ep.symbol, "side": ep.side,
               "plan_session": plan, "entry_session": str(ep.entry_session),
               "exit_date": str(ep.exit_date), "pnl": float(ep.pnl),
               "rho": float(ep.pnl) / capital if capital else math.nan,
               "regime": s.get("regime"), "vol_20": s.get("vol_20", math.nan),
               "size_mult": s.get("size_mult", 1.0)}
        row.update({c: s.get(c, math.nan) for c in STATE})
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["reward"] = reward_per_unit(table["rho"].to_numpy(), coefficients, penalty_rate)
    return table


# --------------------------------------------------------------------------- the gate


def vol_target(vol: np.ndarray, arms: tuple[float, ...]) -> np.ndarray:
    """Inverse-volatility multipliers (median volatility -> 1), clipped to the arms' range."""
    v = np.asarray(vol, dtype="float64")
    ok = np.isfinite(v) & (v > 0)
    med = float(np.median(v[ok])) if ok.any() else 1.0
    raw = np.where(ok, med / np.where(ok, v, 1.0), 1.0)
    return np.clip(raw, min(arms), max(arms))


def rule_returns(oos: pd.DataFrame, mult: np.ndarray, days: pd.DatetimeIndex, capital: float
                 ) -> pd.Series:
    """Daily returns on ``capital`` of the episodes resized to ``mult`` from the multiplier they
    were traded at, each booked on its exit session (0 on sessions without an exit)."""
    logged = pd.to_numeric(oos["size_mult"], errors="coerce").fillna(1.0).to_numpy()
    logged = np.where(logged > 0, logged, 1.0)
    pnl = oos["pnl"].to_numpy(dtype="float64") * np.asarray(mult) / logged
    booked = pd.Series(pnl, index=pd.to_datetime(oos["exit_date"])).groupby(level=0).sum()
    return (booked.reindex(days, fill_value=0.0) / capital).rename(None)


def _figures(rets: pd.Series, n_trials: int, sr_var: float) -> dict[str, Any]:
    dsr = deflated_sharpe(rets, n_trials, sr_var)
    sr = sharpe_ratio(rets)
    dd = drawdown(rets)
    return {"sharpe": json_number(sr * math.sqrt(TRADING_DAYS) if sr is not None else None),
            "dsr": json_number(dsr.value), "max_drawdown": json_number(
                float(-dd.min()) if len(dd) else None),
            "total_return": json_number(float(rets.sum()))}


def gate(wf: WalkForward, days: pd.DatetimeIndex, capital: float, settings: AppSettings
         ) -> dict[str, Any]:
    """The hint against a constant size and a volatility-targeting size on the walk-forward's
    out-of-sample episodes (see the module docstring). ``passed`` and, when not, why."""
    cfg = settings.size_hint
    oos = wf.table
    fitted = [y["year"] for y in wf.years if y.get("fitted")]
    out: dict[str, Any] = {"episodes": int(len(oos)), "fitted_years": fitted,
                           "trials": cfg.trials, "passed": False}
    if not len(oos) or not fitted:
        out["reason"] = (f"no walk-forward year had {cfg.min_train_episodes} closed episodes "
                         "before it: nothing to judge")
        return out
    oos = oos.loc[pd.to_datetime(oos["entry_session"]).dt.year >= min(fitted)]
    days = days[days >= pd.Timestamp(f"{min(fitted)}-01-01")]
    hint = oos["m_hint"].to_numpy(dtype="float64")
    level = float(hint.mean())
    vol = vol_target(oos["vol_20"].to_numpy(dtype="float64"), tuple(cfg.arms))
    rules = {"hint": hint, "constant": np.full(len(oos), level),
             "vol_target": vol * level / float(vol.mean())}
    rets = {k: rule_returns(oos, m, days, capital) for k, m in rules.items()}
    srs = [s for s in (sharpe_ratio(r) for r in rets.values()) if s is not None]
    sr_var = float(np.var(srs, ddof=1)) if len(srs) > 1 else 0.0
    figs = {k: _figures(r, cfg.trials, sr_var) for k, r in rets.items()}
    out.update(rules=figs, mean_multiplier=json_number(level), sessions=int(len(days)),
               from_=str(days[0].date()) if len(days) else None)
    h = figs["hint"]
    why = []
    for base in ("constant", "vol_target"):
        b = figs[base]
        if h["dsr"] is None or b["dsr"] is None or not h["dsr"] > b["dsr"]:
            why.append(f"deflated Sharpe {_f(h['dsr'])} not above {base}'s {_f(b['dsr'])}")
        if h["max_drawdown"] is None or b["max_drawdown"] is None or \
                h["max_drawdown"] > b["max_drawdown"]:
            why.append(f"max drawdown {_pct(h['max_drawdown'])} deeper than {base}'s "
                       f"{_pct(b['max_drawdown'])}")
    if h["dsr"] is not None and h["dsr"] < cfg.min_dsr:
        why.append(f"deflated Sharpe {_f(h['dsr'])} below size_hint.min_dsr {cfg.min_dsr:g}")
    out["passed"] = not why
    out["reason"] = "; ".join(why) if why else "beats the constant and the volatility-target " \
        "sizes on deflated Sharpe and drawdown"
    return out


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


# --------------------------------------------------------------------------- learning


def backtest_root(home: Paths, folder: Path) -> Paths:
    """The walk's own root inside a backtest folder (``reports/backtest/<S>_<E>/sandbox``)."""
    from tasks.paths import SandboxPaths

    return SandboxPaths(home.home, folder / "sandbox")


def starting_capital(root: Paths, settings: AppSettings) -> float:
    """Net liquidity at the root's first session (the equity file), else
    ``guardrails.account_cash``."""
    from tasks.execution.outputs import equity_path

    path = equity_path(root)
    if path.is_file():
        eq = pd.read_parquet(path)
        if len(eq) and "start_net_liquidity" in eq:
            return float(eq["start_net_liquidity"].iloc[0])
    return float(settings.guardrails.account_cash)


def learn(home: Paths, folder: Path, settings: AppSettings, now: str,
          say=lambda msg: None) -> dict[str, Any]:
    """Fit the size hint walk-forward on a backtest's episodes, judge it by :func:`gate`,
    register it under ``home`` (used by plans only if it passed) and return its manifest."""
    from tasks.data.calendar import sessions as calendar_sessions
    from tasks.policy import current_policy

    root = backtest_root(home, folder)
    policy, version = current_policy(home, settings)
    reward = reward_of(policy)
    coef, rate = reward["coefficients"], reward["penalty_rate"]
    say(f"reading the episodes of {folder.name}")
    table = episode_table(root, settings, coef, rate)
    if len(table) < 2:
        raise ValueError(f"{folder}: {len(table)} closed episode(s) with the plan state the hint "
                         "needs (a backtest run with this version writes it): nothing to learn")
    say(f"{len(table)} episodes; walk-forward by year")
    wf = walk_forward(table, settings)
    days = calendar_sessions(settings.data.calendar, pd.Timestamp(table["entry_session"].min()),
                             pd.Timestamp(table["exit_date"].max()))
    figs = gate(wf, days, starting_capital(root, settings), settings)
    manifest = {"schema_hash": schema_hash(), "schema": SCHEMA,
                "source": str(folder), "policy_version": version,
                "reward": reward,
                "settings": settings.size_hint.model_dump(mode="json"),
                "training_span": [str(table["entry_session"].min()),
                                  str(table["exit_date"].max())],
                "episodes": int(len(table)), "walk_forward": wf.years, "gate": figs,
                "usable": bool(figs["passed"] and wf.final is not None)}
    manifest["hint_id"] = register_hint(home, manifest, wf.final, now)
    return manifest


def gate_lines(manifest: dict[str, Any]) -> list[str]:
    """The gate's figures, one rule per line, and its verdict."""
    g = manifest.get("gate") or {}
    lines = [f"size hint {manifest.get('hint_id')}: {manifest.get('episodes')} episodes "
             f"{manifest['training_span'][0]}..{manifest['training_span'][1]}, out of sample "
             f"{g.get('episodes', 0)} from {g.get('from_') or 'n/a'}"]
    for name, f in (g.get("rules") or {}).items():
        lines.append(f"  {name:<10} Sharpe {_f(f.get('sharpe'))}  deflated Sharpe "
                     f"{_f(f.get('dsr'))}  max drawdown {_pct(f.get('max_drawdown'))}  "
                     f"total {_pct(f.get('total_return'))}")
    verdict = "USED by plans" if manifest.get("usable") else "registered, NOT used"
    lines.append(f"gate: {'PASSED' if g.get('passed') else 'FAILED'} ({g.get('reason')}); "
                 f"{verdict}")
    return lines
