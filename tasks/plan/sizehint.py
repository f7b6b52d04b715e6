"""The learned size hint: a contextual bandit over size multipliers, trained on backtest episodes.

This module holds the state, the model, the walk-forward and the registry; the episodes it
learns from and its gate are in :mod:`tasks.backtest.sizehint`.

**State** (what the plan saw when it sized an entry; written by the plan into its signals, so
training reads the same numbers the decision used): the calibrated P(win) of both horizons,
the plan horizon's expected R, the symbol's volatility z-score, the book's realised drawdown,
the use of the symbol's bucket, the position already held, and the symbol's volatility regime.

**Action**: a multiplier from ``size_hint.arms`` (1.0 = the size the episodes were traded
at). The fusion reads it as ``rl_size_hint = ln(m)``, so ``sigmoid(hint) = m / (1 + m)`` is
0.5 at m = 1; sizing multiplies the conviction size by m.

**Reward** of an episode traded at multiplier m, from the policy's reward mix (the numbers a
REWARD_ENGINEER answer changes) and the episode's return on the capital it used, rho::

    reward(m) = m * v,   v = c_returns * rho - c_drawdown * max(-rho, 0)
                             - c_turnover * penalty_rate * 2

(the position is bought and sold once: two units of turnover per unit of size). The reward of
every arm follows from the one that was traded, so the bandit learns from full information.

**Reward model**: Bayesian ridge regression of v on the standardised state; its posterior gives
the predicted v and its standard error s per row. The arm chosen maximises
``m * v_hat - pessimism * |m - 1| * s``: a move away from the logged size must earn more than
its uncertainty (ties keep 1.0).

**Walk-forward**: each calendar year's entries are sized by a model fitted on the episodes that
closed before the year began; a year with fewer than ``min_train_episodes`` stays at 1.0.

**Gate** (:func:`tasks.backtest.sizehint.gate`): the hint is used by plans only if, on the
walk-forward's out-of-sample episodes, it beats a constant size and a volatility-targeting size
on deflated Sharpe and drawdown. :func:`hint_status` says which case applies to a session:
``used``, ``not_used`` (failed gate, another schema or reward, learned from the session's own
span, or disabled) or ``missing``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.io import atomic_write_json
from tasks.paths import Paths
from tasks.risk.clamps import Book, classify_bucket
from tasks.settings import AppSettings

#: Numeric state columns, in the order of the model's coefficients (after the intercept).
STATE = ("p_cal_short", "p_cal_mid", "exp_r", "vol_z", "book_drawdown", "bucket_use",
         "held_frac")
#: Volatility regimes entered as indicators against ``low_vol``.
REGIME_DUMMIES = ("med_vol", "high_vol")
#: Columns the plan writes into its signals for the hint (besides those it already has).
PLAN_STATE = ("book_drawdown", "bucket_use", "held_frac", "size_mult")
SCHEMA = {"state": list(STATE), "regimes": list(REGIME_DUMMIES), "hint": "ln(multiplier)"}

def schema_hash() -> str:
    """Hash of the state and action definitions a hint was fitted on."""
    return hashlib.sha256(json.dumps(SCHEMA, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the state


def realised_drawdown(episodes: pd.DataFrame | None, net_liquidity: float) -> float:
    """Drawdown of the book's realised P&L (closed episodes, in exit order) from its running
    peak, as a fraction of net liquidity; 0 without episodes."""
    if episodes is None or not len(episodes) or "pnl" not in episodes or not net_liquidity:
        return 0.0
    order = episodes.sort_values(["exit_date", "episode_id"], kind="stable") \
        if "episode_id" in episodes else episodes.sort_values("exit_date", kind="stable")
    cum = np.cumsum(pd.to_numeric(order["pnl"], errors="coerce").fillna(0.0).to_numpy())
    peak = max(0.0, float(np.max(cum)))
    return float(max(0.0, peak - cum[-1]) / net_liquidity)


def plan_state(frame: pd.DataFrame, book: Book, episodes: pd.DataFrame | None,
               settings: AppSettings) -> pd.DataFrame:
    """``book_drawdown``, ``bucket_use`` (exposure in the symbol's bucket over the bucket's cap)
    and ``held_frac`` (the position held over the per-name cap) of every row of ``frame``
    (needs symbol, close_raw, log_dollar_volume)."""
    risk, nl = settings.risk, book.net_liquidity
    by_bucket = book.exposure_by(lambda p: p.bucket)
    out = frame.copy()
    out["book_drawdown"] = realised_drawdown(episodes, nl)
    use, held = [], []
    for r in frame[["symbol", "close_raw", "log_dollar_volume"]].itertuples(index=False):
        adv = math.exp(r.log_dollar_volume) if math.isfinite(r.log_dollar_volume) else math.nan
        bucket = classify_bucket(r.symbol, r.close_raw, adv, risk) or "penny"
        pos = book.positions.get(r.symbol)
        use.append(by_bucket.get(bucket, 0.0) / (risk.cap(bucket) * nl) if nl else math.nan)
        held.append((pos.exposure if pos else 0.0) / (risk.name_cap(bucket) * nl)
                    if nl else math.nan)
    out["bucket_use"], out["held_frac"] = use, held
    return out


def design(frame: pd.DataFrame) -> np.ndarray:
    """The raw state matrix (STATE columns, then the regime indicators); NaN where unknown."""
    cols = [pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64")
            if c in frame else np.full(len(frame), np.nan) for c in STATE]
    regime = frame["regime"].astype("string") if "regime" in frame else \
        pd.Series([pd.NA] * len(frame), dtype="string")
    cols += [(regime == r).fillna(False).to_numpy(dtype="float64") for r in REGIME_DUMMIES]
    return np.column_stack(cols) if cols else np.empty((len(frame), 0))


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class SizeHint:
    """A fitted reward model and its arm rule (everything needed to size a row)."""

    arms: tuple[float, ...]
    pessimism: float
    center: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]              # intercept first
    cov: tuple[tuple[float, ...], ...]   # posterior covariance of coef
    n: int
    hint_id: str = ""

    def _x(self, frame: pd.DataFrame) -> np.ndarray:
        raw = design(frame)
        center, scale = np.asarray(self.center), np.asarray(self.scale)
        z = np.where(np.isfinite(raw), (raw - center) / scale, 0.0)  # unknown: the average
        return np.column_stack([np.ones(len(frame)), z])

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Predicted reward per unit of size and its standard error, per row."""
        x = self._x(frame)
        cov = np.asarray(self.cov)
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, cov, x), 0.0))
        return x @ np.asarray(self.coef), se

    def multipliers(self, frame: pd.DataFrame) -> np.ndarray:
        """The chosen arm of every row (1.0 when no arm clears its uncertainty)."""
        mean, se = self.predict(frame)
        return choose_arms(mean, se, self.arms, self.pessimism)

    def to_json(self) -> dict[str, Any]:
        return {"arms": list(self.arms), "pessimism": self.pessimism, "center": list(self.center),
                "scale": list(self.scale), "coef": list(self.coef),
                "cov": [list(r) for r in self.cov], "n": self.n, "hint_id": self.hint_id}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SizeHint:
        return cls(tuple(obj["arms"]), float(obj["pessimism"]), tuple(obj["center"]),
                   tuple(obj["scale"]), tuple(obj["coef"]),
                   tuple(tuple(r) for r in obj["cov"]), int(obj["n"]), str(obj.get("hint_id", "")))


def choose_arms(mean: np.ndarray, se: np.ndarray, arms: tuple[float, ...], pessimism: float
                ) -> np.ndarray:
    """argmax over arms of ``m * mean - pessimism * |m - 1| * se``; 1.0 wins ties and rows
    without a finite prediction."""
    a = np.asarray(arms, dtype="float64")
    mean = np.asarray(mean, dtype="float64")[:, None]
    se = np.asarray(se, dtype="float64")[:, None]
    value = a[None, :] * mean - pessimism * np.abs(a[None, :] - 1.0) * se
    value = np.where(np.isfinite(value), value, -np.inf)
    value[:, a == 1.0] = np.where(np.isfinite(mean) & np.isfinite(se), value[:, a == 1.0], 0.0)
    best = value.max(axis=1, keepdims=True)
    # among the arms within rounding of the best, the one closest to 1.0
    tie = value >= best - 1e-15 * np.maximum(1.0, np.abs(best))
    dist = np.where(tie, np.abs(a[None, :] - 1.0), np.inf)
    return a[np.argmin(dist, axis=1)]


def reward_per_unit(rho: np.ndarray, coefficients: dict[str, float], penalty_rate: float
                    ) -> np.ndarray:
    """v = c_returns * rho - c_drawdown * max(-rho, 0) - c_turnover * penalty_rate * 2."""
    rho = np.asarray(rho, dtype="float64")
    return (coefficients.get("returns", 0.0) * rho
            - coefficients.get("drawdown", 0.0) * np.maximum(-rho, 0.0)
            - coefficients.get("turnover", 0.0) * penalty_rate * 2.0)


def fit_hint(table: pd.DataFrame, settings: AppSettings) -> SizeHint:
    """Bayesian ridge of ``table['reward']`` on the standardised state (intercept unpenalised);
    the residual variance scales the posterior covariance."""
    cfg = settings.size_hint
    raw = design(table)
    y = table["reward"].to_numpy(dtype="float64")
    center = np.nanmean(np.where(np.isfinite(raw), raw, np.nan), axis=0) if len(raw) else \
        np.zeros(raw.shape[1])
    center = np.where(np.isfinite(center), center, 0.0)
    scale = np.nanstd(np.where(np.isfinite(raw), raw, np.nan), axis=0) if len(raw) else \
        np.ones(raw.shape[1])
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    z = np.where(np.isfinite(raw), (raw - center) / scale, 0.0)
    x = np.column_stack([np.ones(len(z)), z])
    penalty = np.full(x.shape[1], cfg.ridge_alpha)
    penalty[0] = 1e-8
    a = x.T @ x + np.diag(penalty)
    a_inv = np.linalg.inv(a)
    coef = a_inv @ x.T @ y
    resid = y - x @ coef
    dof = max(1, len(y) - x.shape[1])
    sigma2 = float(resid @ resid / dof)
    cov = sigma2 * a_inv
    return SizeHint(tuple(cfg.arms), float(cfg.pessimism), tuple(center.tolist()),
                    tuple(scale.tolist()), tuple(coef.tolist()),
                    tuple(tuple(r) for r in cov.tolist()), int(len(y)))


@dataclass
class WalkForward:
    """Out-of-sample multipliers of every test episode and one record per test year."""

    table: pd.DataFrame                  # the test episodes with column ``m_hint``
    years: list[dict[str, Any]] = field(default_factory=list)
    final: SizeHint | None = None        # fitted on every episode (what would be used live)


def walk_forward(table: pd.DataFrame, settings: AppSettings) -> WalkForward:
    """Yearly walk-forward: entries of year Y sized by a model fitted on episodes closed before
    Y began (1.0 when there are fewer than ``min_train_episodes``)."""
    cfg = settings.size_hint
    if not len(table):
        return WalkForward(table.assign(m_hint=pd.Series(dtype="float64")))
    entry_year = pd.to_datetime(table["entry_session"]).dt.year
    exit_day = pd.to_datetime(table["exit_date"])
    first, last = int(entry_year.min()), int(entry_year.max())
    parts, years = [], []
    for start in range(first + 1, last + 1, cfg.test_years):
        test = table.loc[(entry_year >= start) & (entry_year < start + cfg.test_years)].copy()
        if not len(test):
            continue
        train = table.loc[exit_day < pd.Timestamp(f"{start}-01-01")]
        rec: dict[str, Any] = {"year": start, "train_episodes": int(len(train)),
                               "test_episodes": int(len(test))}
        if len(train) >= cfg.min_train_episodes:
            model = fit_hint(train, settings)
            test["m_hint"] = model.multipliers(test)
            rec["fitted"] = True
        else:
            test["m_hint"] = 1.0
            rec["fitted"] = False
        counts = test["m_hint"].value_counts().sort_index()
        rec["arms"] = {f"{k:g}": int(v) for k, v in counts.items()}
        years.append(rec)
        parts.append(test)
    oos = pd.concat(parts, ignore_index=True) if parts else table.iloc[:0].assign(m_hint=1.0)
    final = fit_hint(table, settings) if len(table) >= cfg.min_train_episodes else None
    return WalkForward(oos, years, final)


# --------------------------------------------------------------------------- the registry


def hints_dir(paths: Paths) -> Path:
    return paths.models / "size_hints"


def hint_registry_path(paths: Paths) -> Path:
    return hints_dir(paths) / "registry.json"


def read_hint_registry(paths: Paths) -> dict[str, Any]:
    """``{"current": id or None, "history": [...]}``; a damaged file reads as a state error."""
    from tasks.statefiles import StateFileError

    path = hint_registry_path(paths)
    if not path.is_file():
        return {"current": None, "history": []}
    remedy = "refit the hint (`hcp hint fit --backtest S_E`) after moving the file aside"
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateFileError(path, f"unreadable size-hint registry ({exc})", remedy) from exc
    if not isinstance(obj, dict) or "current" not in obj or not isinstance(
            obj.get("history"), list):
        raise StateFileError(path, "not a size-hint registry (needs current and history)",
                             remedy)
    return obj


def register_hint(paths: Paths, manifest: dict[str, Any], model: SizeHint | None, now: str
                  ) -> str:
    """Write ``models/size_hints/<id>/hint.json`` and make it the current hint (usable or not:
    the manifest's gate decides whether plans use it)."""
    body = json.dumps({"manifest": manifest, "model": model.to_json() if model else None},
                      sort_keys=True, default=str)
    hint_id = f"sh-{manifest['training_span'][1].replace('-', '')}-" \
              f"{hashlib.sha256(body.encode()).hexdigest()[:6]}"
    manifest = {**manifest, "hint_id": hint_id, "created_at": now}
    model_json = {**model.to_json(), "hint_id": hint_id} if model else None
    atomic_write_json(hints_dir(paths) / hint_id / "hint.json",
                      {"manifest": manifest, "model": model_json})
    reg = read_hint_registry(paths)
    reg["history"].append({"hint_id": hint_id, "at": now, "usable": manifest["usable"]})
    reg["current"] = hint_id
    atomic_write_json(hint_registry_path(paths), reg)
    return hint_id


@dataclass(frozen=True)
class HintStatus:
    """Which case applies to a plan: ``used`` (a hint that passed its gate), ``not_used``
    (registered, failed its gate or disabled) or ``missing`` (none registered)."""

    case: str
    hint_id: str | None
    reason: str
    model: SizeHint | None = None
    gate: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "hint_id": self.hint_id, "reason": self.reason,
                "gate": self.gate}


def reward_of(policy) -> dict[str, Any]:
    """The reward a hint is fitted for: the policy's reward mix and turnover penalty rate."""
    return {"coefficients": dict(policy.reward_coefficients),
            "penalty_rate": float(policy.turnover_penalties.get("penalty_rate", 0.0))}


def hint_status(paths: Paths, settings: AppSettings, policy=None,
                day: pd.Timestamp | None = None) -> HintStatus:
    """The current hint under ``paths`` and whether plans use it. With ``policy`` (the one in
    force for the plan), a hint fitted for another reward (a REWARD_ENGINEER answer changed it
    since) is not used until it is refitted. With ``day`` (the session decided), a hint whose
    training episodes reach ``day`` or later is not used: a replay or backtest of the years it
    learned from runs without it."""
    reg = read_hint_registry(paths)
    hid = reg.get("current")
    if not hid:
        return HintStatus("missing", None, "no size hint registered (`hcp hint fit` learns one "
                          "from a backtest's episodes)")
    path = hints_dir(paths) / str(hid) / "hint.json"
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return HintStatus("missing", str(hid), f"size hint {hid} unreadable ({exc})")
    man = obj.get("manifest", {})
    gate_figs = man.get("gate")
    if man.get("schema_hash") != schema_hash():
        return HintStatus("not_used", str(hid), f"size hint {hid} was fitted on another state "
                          "schema: refit it", gate=gate_figs)
    if obj.get("model") is None:
        return HintStatus("not_used", str(hid), f"size hint {hid} has no model (too few "
                          "episodes to fit one)", gate=gate_figs)
    forced = not man.get("usable") and not settings.size_hint.require_gate
    if not man.get("usable") and not forced:
        why = (gate_figs or {}).get("reason", "not judged")
        return HintStatus("not_used", str(hid), f"size hint {hid} failed its gate: {why}",
                          gate=gate_figs)
    end = (man.get("training_span") or [None, None])[1]
    if day is not None and end is not None and pd.Timestamp(end) >= pd.Timestamp(day):
        return HintStatus("not_used", str(hid), f"size hint {hid} learned from episodes up to "
                          f"{end}, not before this session", gate=gate_figs)
    if policy is not None and man.get("reward") != reward_of(policy):
        return HintStatus("not_used", str(hid), f"size hint {hid} was fitted for the reward "
                          f"{man.get('reward')}, the policy in force asks for "
                          f"{reward_of(policy)}: refit it (`hcp hint fit`)", gate=gate_figs)
    if not settings.size_hint.enabled:
        return HintStatus("not_used", str(hid), f"size hint {hid} passed its gate but "
                          "size_hint.enabled is false", gate=gate_figs)
    why = (f"size hint {hid} FAILED its gate and is used only because size_hint.require_gate "
           "is false" if forced else f"size hint {hid} passed its gate")
    return HintStatus("used", str(hid), why, SizeHint.from_json(obj["model"]), gate_figs)
