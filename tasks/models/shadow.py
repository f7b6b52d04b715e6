"""The shadow model scored beside the active one, compared.

Every daily run scores the shadow baseline on the same session as the active one and writes its
signals next to the active ones (``data/daily/<D>/shadow_signals.parquet`` beside
``signals_with_gates.parquet``; the models of the session are named in its health report,
``reports/health/daily_health_<D>.json``, field ``model``). The comparison, at the plan horizon
(``fusion.plan_horizon``):

- **scores**: the distributions of the two models' calibrated P(win) (``p_cal_<h>``) over the
  compared sessions: PSI (the active model's deciles are the reference bins, the shadow's
  scores the actual sample; :func:`tasks.models.barrier.psi`) and the two-sample KS statistic
  and p-value (:func:`scipy.stats.ks_2samp`);
- **outcomes**, once known: for each model, the names it would have bought (``signal`` BUY) on
  each session, their win rate (the barrier label at the plan horizon: take-profit before stop,
  the labels' rule, :func:`tasks.features.labels.build_labels`) and their mean markout (the
  simple forward return from the session's close to the close ``h`` sessions later), with the
  sample counts (``buys``: BUY names; ``closed``: those whose outcome is known).

Frames given to :func:`compare` hold one row per (session, symbol): ``session`` (YYYY-MM-DD),
``symbol``, ``p_cal_<h>`` and ``signal``. Outcomes hold ``session``, ``symbol``, ``win`` (1, 0,
or NaN: unknown) and ``ret`` (the markout).

Live (:func:`live_comparison`, run by the nightly flow for session D): the compared sessions are
the last ``lookback`` sessions up to D whose health report names the registry's current active
and shadow models, so each side's figures are those of one model. The outcomes are labelled
from the bars the nightly loads (up to D only: a session whose horizon has not ended has no
outcome yet). The comparison also carries the active model's own score drift (its first
``shadow.drift_sessions`` sessions in the active slot, the reference, against its last ones), which
the rollback guard reads (:mod:`tasks.models.rollback`). It is written to
``reports/nightly/shadow/<D>.json`` (a folder of its own: ``reports/nightly/*.json`` are the
realised records of the plans).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from tasks.io import atomic_write_json
from tasks.models.barrier import psi
from tasks.paths import Paths

PSI_BINS = 10


# --------------------------------------------------------------------------- score distributions

def _finite(values: Any) -> np.ndarray:
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype="float64")
    return v[np.isfinite(v)]


def score_reference(values: Any, bins: int = PSI_BINS) -> dict[str, list]:
    """Quantile bins of a reference sample of scores and its shares in them (the binning
    :func:`tasks.models.barrier.psi` takes)."""
    v = _finite(values)
    edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / counts.sum()).tolist()}


def score_psi(reference: Any, actual: Any, bins: int = PSI_BINS) -> float:
    """PSI of ``actual`` scores against the quantile bins of ``reference`` (NaN when either
    sample is empty)."""
    ref, act = _finite(reference), _finite(actual)
    if len(ref) == 0 or len(act) == 0:
        return math.nan
    return psi(act, score_reference(ref, bins))


def score_ks(a: Any, b: Any) -> tuple[float, float]:
    """Two-sample KS statistic and p-value (NaN, NaN when either sample is empty)."""
    x, y = _finite(a), _finite(b)
    if len(x) == 0 or len(y) == 0:
        return math.nan, math.nan
    res = ks_2samp(x, y)
    return float(res.statistic), float(res.pvalue)


def distribution(reference: Any, actual: Any) -> dict[str, Any]:
    """PSI and KS of two samples of scores, with their sizes."""
    stat, pvalue = score_ks(reference, actual)
    return {"n_reference": int(len(_finite(reference))), "n_actual": int(len(_finite(actual))),
            "psi": _num(score_psi(reference, actual)), "ks": _num(stat), "ks_pvalue": _num(pvalue)}


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------------- outcomes

def buy_outcomes(side: pd.DataFrame, outcomes: pd.DataFrame | None) -> dict[str, Any]:
    """Win rate and mean markout of one model's BUY names, with their counts."""
    buys = side.loc[side["signal"].astype("string") == "BUY", ["session", "symbol"]]
    out: dict[str, Any] = {"buys": int(len(buys)), "closed": 0, "wins": 0, "win_rate": None,
                           "marked": 0, "mean_markout": None}
    if outcomes is None or outcomes.empty or buys.empty:
        return out
    got = buys.astype({"session": "string", "symbol": "string"}).merge(
        outcomes.astype({"session": "string", "symbol": "string"}), on=["session", "symbol"],
        how="inner")
    win = pd.to_numeric(got["win"], errors="coerce").dropna()
    ret = pd.to_numeric(got["ret"], errors="coerce")
    ret = ret[np.isfinite(ret)]
    out.update(closed=int(len(win)), wins=int(win.sum()),
               win_rate=float(win.mean()) if len(win) else None,
               marked=int(len(ret)), mean_markout=float(ret.mean()) if len(ret) else None)
    return out


def compare(active: pd.DataFrame, shadow: pd.DataFrame, outcomes: pd.DataFrame | None,
            settings: Any) -> dict[str, Any]:
    """Active against shadow at the plan horizon: score distributions (PSI, KS) and, where
    outcomes are known, each model's BUY win rate and mean markout (see the module's text)."""
    h = settings.fusion.plan_horizon
    col = f"p_cal_{h}"
    a_out, s_out = buy_outcomes(active, outcomes), buy_outcomes(shadow, outcomes)
    delta = (s_out["win_rate"] - a_out["win_rate"]
             if a_out["win_rate"] is not None and s_out["win_rate"] is not None else None)
    sessions = sorted(set(active["session"].astype(str)) | set(shadow["session"].astype(str)))
    return {
        "plan_horizon": h,
        "horizon_sessions": int(settings.labels.horizons[h]),
        "sessions": sessions,
        "scores": distribution(active.get(col, []), shadow.get(col, [])),
        "outcomes": {"active": a_out, "shadow": s_out,
                     "win_rate_delta": delta},  # shadow minus active
    }


# --------------------------------------------------------------------------- live files

def daily_sessions(paths: Paths, day: str) -> list[str]:
    """Sessions up to ``day`` with a daily signals file, oldest first."""
    folder = paths.data / "daily"
    if not folder.is_dir():
        return []
    out = []
    for sub in folder.iterdir():
        name = sub.name
        if len(name) == 10 and name <= day and (sub / "signals_with_gates.parquet").is_file():
            try:
                pd.Timestamp(name)
            except ValueError:
                continue
            out.append(name)
    return sorted(out)


def session_models(paths: Paths, session: str) -> dict[str, Any]:
    """The active and shadow model ids of a session, from its health report (empty when the
    report is missing or unreadable: the session is then not compared)."""
    path = paths.reports / "health" / f"daily_health_{session}.json"
    try:
        return dict(json.loads(path.read_text()).get("model") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def active_frame(paths: Paths, session: str, horizon: str) -> pd.DataFrame:
    """The active model's rows of a session: session, symbol, p_cal_<h>, signal."""
    col = f"p_cal_{horizon}"
    sig = pd.read_parquet(paths.data / "daily" / session / "signals_with_gates.parquet",
                          columns=["symbol", col, "signal"])
    return sig.assign(session=session)[["session", "symbol", col, "signal"]]


def shadow_frame(paths: Paths, session: str, horizon: str) -> pd.DataFrame | None:
    """The shadow model's rows of a session in the same layout (None without a shadow file)."""
    path = paths.data / "daily" / session / "shadow_signals.parquet"
    if not path.is_file():
        return None
    col = f"p_cal_{horizon}"
    sh = pd.read_parquet(path, columns=["symbol", f"shadow_{col}", "shadow_signal"])
    sh = sh.rename(columns={f"shadow_{col}": col, "shadow_signal": "signal"})
    sh = sh.loc[sh[col].notna() | sh["signal"].notna()]
    return sh.assign(session=session)[["session", "symbol", col, "signal"]]


def label_outcomes(bars: pd.DataFrame, settings: Any) -> pd.DataFrame:
    """Outcome of every (session, symbol) of ``bars`` at the plan horizon by the labels' rule:
    ``win`` (NaN while the horizon is incomplete or unknown) and ``ret`` (simple forward return
    over the horizon)."""
    from tasks.features.labels import build_labels

    h = settings.fusion.plan_horizon
    if bars is None or bars.empty:
        return pd.DataFrame(columns=["session", "symbol", "win", "ret"])
    lab = build_labels(bars, settings)
    return pd.DataFrame({"session": pd.DatetimeIndex(lab["date"]).strftime("%Y-%m-%d"),
                         "symbol": lab["symbol"].astype("string"),
                         "win": lab[f"label_{h}"].astype("float64"),
                         "ret": np.expm1(lab[f"fwd_return_{h}"].astype("float64"))})


def active_drift(paths: Paths, settings: Any, day: str, active_id: str | None,
                 sessions: list[str] | None = None) -> dict[str, Any]:
    """The active model's score drift: its calibrated P(win) on its first
    ``shadow.drift_sessions`` sessions in the active slot (reference) against its last ones
    (recent); ``psi``/``ks`` are None, with a ``reason``, until it has twice that many."""
    n = settings.shadow.drift_sessions
    out: dict[str, Any] = {"model": active_id, "drift_sessions": n, "psi": None, "ks": None}
    if not active_id:
        return {**out, "reason": "no active model"}
    own = [s for s in (sessions if sessions is not None else daily_sessions(paths, day))
           if session_models(paths, s).get("active") == active_id]
    if len(own) < 2 * n:
        return {**out, "sessions_as_active": len(own),
                "reason": f"{len(own)} session(s) as active, {2 * n} needed"}
    h = settings.fusion.plan_horizon
    col = f"p_cal_{h}"
    ref = pd.concat([active_frame(paths, s, h) for s in own[:n]])[col]
    recent = pd.concat([active_frame(paths, s, h) for s in own[-n:]])[col]
    dist = distribution(ref, recent)
    return {**out, **dist, "sessions_as_active": len(own),
            "reference_sessions": [own[0], own[n - 1]], "recent_sessions": [own[-n], own[-1]]}


def live_comparison(paths: Paths, settings: Any, day: str, outcomes: pd.DataFrame | None,
                    lookback: int = 60, registry: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Session ``day``'s comparison of the registry's active and shadow models over the last
    ``lookback`` sessions that both scored, with the active model's drift."""
    from tasks.models.registry import read_registry

    reg = registry if registry is not None else read_registry(paths)
    active_id, shadow_id = reg.get("active"), reg.get("shadow")
    h = settings.fusion.plan_horizon
    every = daily_sessions(paths, day)
    window = every[-lookback:] if lookback > 0 else []
    pairs = []
    if active_id and shadow_id:
        for s in window:
            models = session_models(paths, s)
            if models.get("active") == active_id and models.get("shadow") == shadow_id:
                sh = shadow_frame(paths, s, h)
                if sh is not None:
                    pairs.append((active_frame(paths, s, h), sh))
    col = f"p_cal_{h}"
    empty = pd.DataFrame(columns=["session", "symbol", col, "signal"])
    act = pd.concat([a for a, _ in pairs], ignore_index=True) if pairs else empty
    sha = pd.concat([s for _, s in pairs], ignore_index=True) if pairs else empty
    out = {"date": day, "active_id": active_id, "shadow_id": shadow_id,
           **compare(act, sha, outcomes, settings),
           "drift": active_drift(paths, settings, day, active_id, every)}
    if not shadow_id:
        out["note"] = "no shadow model in the registry"
    elif not pairs:
        out["note"] = "no session scored by the current active and shadow models together"
    return out


def comparison_path(paths: Paths, day: str) -> Path:
    return paths.reports / "nightly" / "shadow" / f"{day}.json"


def write_comparison(paths: Paths, day: str, comparison: dict[str, Any]) -> Path:
    """``reports/nightly/shadow/<D>.json``."""
    return atomic_write_json(comparison_path(paths, day), comparison)
