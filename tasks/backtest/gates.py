"""Promotion gates of a backtest: the figures a baseline must reach before it may hold the
``active`` slot (seed 000 Promotion Criteria and Success Metrics; the probabilistic and deflated
Sharpe ratios and the probability of backtest overfitting of :mod:`tasks.backtest.stats`).

Every gate is ``{"name", "value", "threshold", "op", "passed", "source", "note"}``. A gate that
cannot be judged (no trades, too few sessions, fewer than two recorded configurations for the
PBO) has ``value`` ``None``, fails, and its note says why: nothing passes silently.

``write_gates`` writes the result as ``gates.json`` in the backtest's folder; the registry reads
that file (as plain JSON) when a baseline is promoted to ``active``.
"""

from __future__ import annotations

import json
import math
import operator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.backtest import stats
from tasks.config.gates import GateSettings
from tasks.io import atomic_write_json

GATES_FILE = "gates.json"
SEED_CRITERIA = "seed 000 Promotion Criteria"
SEED_METRICS = "seed 000 Success Metrics"
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _num(value: Any) -> float | None:
    """A finite float, or ``None``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _gate(name: str, value: Any, threshold: float, op: str, source: str,
          note: str = "") -> dict[str, Any]:
    """One gate; a missing value fails."""
    v: float | int | None = _num(value)
    if v is not None and isinstance(value, int | np.integer) and not isinstance(value, bool):
        v = int(value)
    passed = v is not None and bool(_OPS[op](v, threshold))
    if v is None and not note:
        note = "not computable"
    return {"name": name, "value": v, "threshold": float(threshold), "op": op,
            "passed": passed, "source": source, "note": note}


def _gate_settings(settings: Any) -> GateSettings:
    cfg = getattr(settings, "gates", settings)
    if not isinstance(cfg, GateSettings):
        raise TypeError(f"settings must be AppSettings or GateSettings, not {type(cfg).__name__}")
    return cfg


def _risk_streak(daily: pd.DataFrame, need: int) -> dict[str, Any]:
    name, source = "risk_gates_held", SEED_CRITERIA
    if daily is None or "risk_gates_held" not in daily or daily.empty:
        return _gate(name, None, need, ">=", source,
                     "not computable: no sessions with a risk_gates_held flag")
    held = daily.sort_index()["risk_gates_held"].astype("boolean").fillna(False).to_numpy(bool)
    broken = np.flatnonzero(~held)
    streak = len(held) if broken.size == 0 else len(held) - 1 - int(broken[-1])
    if len(held) < need:
        note = f"only {len(held)} sessions in the backtest: {need} consecutive are needed"
    elif streak < need:
        note = (f"risk gates broke on {daily.sort_index().index[broken[-1]]:%Y-%m-%d}; held "
                f"for the last {streak} sessions")
    else:
        note = f"held for the last {streak} consecutive sessions"
    return _gate(name, streak, need, ">=", source, note)


def _sharpe_gate(summary: dict, cfg: GateSettings) -> dict[str, Any]:
    oos = bool(summary.get("out_of_sample"))
    level = cfg.min_sharpe_out_of_sample if oos else cfg.min_sharpe
    note = ("out-of-sample backtest: Success Metrics level" if oos
            else "in-sample backtest: Promotion Criteria level")
    if _num(summary.get("sharpe")) is None:
        note = "not computable: the backtest has no Sharpe ratio (flat or too short)"
    return _gate("sharpe", summary.get("sharpe"), level, ">",
                 SEED_METRICS if oos else SEED_CRITERIA, note)


def _from_summary_or_daily(summary: dict, key: str, daily: pd.DataFrame | None,
                           column: str, how: str) -> float | None:
    value = _num(summary.get(key))
    if value is None and daily is not None and column in daily and not daily.empty:
        col = daily[column].astype(float)
        value = _num(col.sum() if how == "sum" else col.mean())
    return value


def _hit_rate(trades: pd.DataFrame | None, cfg: GateSettings) -> dict[str, Any]:
    name, source = "hit_rate_liquid", SEED_METRICS
    buckets = ", ".join(cfg.liquid_buckets)
    if trades is None or trades.empty or not {"bucket", "pnl"} <= set(trades.columns):
        return _gate(name, None, cfg.min_hit_rate, ">", source,
                     f"not computable: no closed episodes in bucket(s) {buckets}")
    pnl = trades.loc[trades["bucket"].isin(cfg.liquid_buckets), "pnl"].astype(float).dropna()
    n = len(pnl)
    if n == 0:
        return _gate(name, None, cfg.min_hit_rate, ">", source,
                     f"not computable: no closed episodes in bucket(s) {buckets}")
    rate = float((pnl > 0).mean())
    if n < cfg.min_trades:
        gate = _gate(name, rate, cfg.min_hit_rate, ">", source,
                     f"too few closed episodes in bucket(s) {buckets}: {n} < {cfg.min_trades} "
                     "needed to judge")
        gate["passed"] = False
        return gate
    return _gate(name, rate, cfg.min_hit_rate, ">", source,
                 f"{int((pnl > 0).sum())} of {n} closed episodes in bucket(s) {buckets} won")


def _returns(daily: pd.DataFrame | None) -> pd.Series:
    if daily is None or "returns" not in daily or daily.empty:
        return pd.Series(dtype=float)
    return daily.sort_index()["returns"].astype(float).dropna()


def _trial_figures(trials: pd.DataFrame | None) -> tuple[int, float, pd.DataFrame]:
    """Number of recorded configurations, variance of their per-session Sharpe ratios (NaN for
    fewer than two) and the matrix itself (empty when none)."""
    if trials is None or trials.shape[1] == 0:
        return 0, float("nan"), pd.DataFrame()
    sharpes = stats.trial_sharpes(trials)
    var = float(sharpes.var(ddof=1)) if len(sharpes) >= 2 else float("nan")
    return int(trials.shape[1]), var, trials


def _psr_gate(rets: pd.Series, cfg: GateSettings) -> tuple[dict[str, Any], dict]:
    name, source = "psr", "Bailey & López de Prado 2012"
    if len(rets) < cfg.min_sessions:
        return (_gate(name, None, cfg.min_psr, ">=", source,
                      f"not computable: {len(rets)} sessions of returns, {cfg.min_sessions} "
                      "needed"), {})
    res = stats.probabilistic_sharpe(rets, cfg.psr_benchmark)
    note = (f"not computable: {res.reason}" if res.value is None else
            f"P(true Sharpe > {cfg.psr_benchmark:g}) over {res.n} sessions; Sharpe "
            f"{res.sharpe:.4f}/session, skew {res.skew:.2f}, kurtosis {res.kurtosis:.2f}")
    return _gate(name, res.value, cfg.min_psr, ">=", source, note), res.to_dict()


def _dsr_gate(rets: pd.Series, n_trials: int, sr_var: float,
              cfg: GateSettings) -> tuple[dict[str, Any], dict]:
    name, source = "dsr", "Bailey, Borwein, López de Prado & Zhu 2014"
    if len(rets) < cfg.min_sessions:
        return (_gate(name, None, cfg.min_dsr, ">=", source,
                      f"not computable: {len(rets)} sessions of returns, {cfg.min_sessions} "
                      "needed"), {})
    n = max(n_trials, 1)
    if n == 1:
        sr0, why = 0.0, "one recorded configuration: SR\u2080 = 0 (nothing was selected)"
    elif not math.isfinite(sr_var):
        sr0, why = 0.0, (f"{n} configurations but fewer than 2 with a Sharpe ratio: SR\u2080 = 0")
    else:
        sr0 = stats.expected_max_sharpe(n, sr_var)
        why = (f"N = {n} configurations, Var(trial Sharpe) = {sr_var:.3g}: "
               f"SR\u2080 = {sr0:.4f}/session")
    res = stats.probabilistic_sharpe(rets, sr0)
    note = f"not computable: {res.reason}" if res.value is None else why
    detail = {**res.to_dict(), "n_trials": n, "sr_variance": _num(sr_var), "sr0": sr0}
    return _gate(name, res.value, cfg.min_dsr, ">=", source, note), detail


def _pbo_gate(matrix: pd.DataFrame, n_trials: int, cfg: GateSettings) -> tuple[dict, dict]:
    name, source = "pbo", f"{SEED_METRICS}; Bailey, Borwein, López de Prado & Zhu 2017 (CSCV)"
    if n_trials < 2:
        return (_gate(name, None, cfg.max_pbo, "<=", source,
                      f"not computable: {n_trials} recorded configuration(s), PBO ranks at least "
                      "2 (backtest other configurations to record trials)"), {})
    res = stats.pbo_cscv(matrix, cfg.pbo_blocks)
    note = (f"not computable: {res.reason}" if res.pbo is None else
            f"{res.n_configs} configurations, {res.blocks} blocks, {res.n_splits} splits")
    return _gate(name, res.pbo, cfg.max_pbo, "<=", source, note), res.to_dict()


def evaluate_gates(summary: dict, daily: pd.DataFrame, trades: pd.DataFrame,
                   trials: pd.DataFrame | None, settings: Any, *,
                   now: str | None = None) -> dict[str, Any]:
    """Judge a backtest against the promotion gates.

    ``summary``: sharpe (annualised), sortino, cagr, max_drawdown (positive fraction), hit_rate,
    avg_r, turnover, kill_switch_days, escalations_per_day, sessions, out_of_sample,
    baseline_id. ``daily``: per session (DatetimeIndex) returns, risk_gates_held, kill_switch,
    escalations. ``trades``: closed episodes with symbol, bucket, pnl, r_multiple. ``trials``:
    sessions × recorded configurations of daily returns (:func:`tasks.backtest.trials.
    load_trials`), or ``None``. ``settings``: the app settings or their ``gates`` section.
    """
    cfg = _gate_settings(settings)
    summary = dict(summary or {})
    rets = _returns(daily)
    n_trials, sr_var, matrix = _trial_figures(trials)

    kill = _from_summary_or_daily(summary, "kill_switch_days", daily, "kill_switch", "sum")
    esc = _from_summary_or_daily(summary, "escalations_per_day", daily, "escalations", "mean")
    kill = None if kill is None else int(round(kill))
    dd = _num(summary.get("max_drawdown"))
    psr_gate, psr_detail = _psr_gate(rets, cfg)
    dsr_gate, dsr_detail = _dsr_gate(rets, n_trials, sr_var, cfg)
    pbo_gate, pbo_detail = _pbo_gate(matrix, n_trials, cfg)
    gates = [
        _risk_streak(daily, cfg.risk_gate_sessions),
        _sharpe_gate(summary, cfg),
        _gate("max_drawdown", dd, cfg.max_drawdown, "<", SEED_CRITERIA,
              "" if dd is not None else "not computable: no drawdown in the summary"),
        _gate("kill_switch_days", kill, cfg.max_kill_switch_days, "<=", SEED_CRITERIA,
              "" if kill is not None else "not computable: no kill-switch record"),
        _gate("escalations_per_day", esc, cfg.max_escalations_per_day, "<", SEED_CRITERIA,
              "" if esc is not None else "not computable: no escalation record"),
        _hit_rate(trades, cfg),
        psr_gate,
        dsr_gate,
        pbo_gate,
    ]
    failed = [g["name"] for g in gates if not g["passed"]]
    return {
        "baseline_id": summary.get("baseline_id"),
        "passed": not failed,
        "failed": failed,
        "gates": gates,
        "computed_at": now or pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "sessions": int(summary.get("sessions") or len(rets)),
        "out_of_sample": bool(summary.get("out_of_sample")),
        "trials": n_trials,
        "statistics": {"psr": psr_detail, "dsr": dsr_detail, "pbo": pbo_detail},
    }


def _json_safe(obj: Any) -> Any:
    """Non-finite floats become ``None`` (strict JSON), containers recursively."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_gates(folder: Path, gates: dict[str, Any]) -> Path:
    """Write ``gates.json`` into a backtest's folder (strict JSON); returns its path."""
    return atomic_write_json(Path(folder) / GATES_FILE, _json_safe(gates))


def read_gates(path: Path) -> dict[str, Any]:
    """Read a ``gates.json`` written by :func:`write_gates` (a folder or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / GATES_FILE
    return json.loads(path.read_text())
