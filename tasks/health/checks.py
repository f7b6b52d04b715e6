"""The daily health report: ERROR stops trading, WARNING asks for a look, INFO is context.

ERROR (the plan is written without orders and the run exits non-zero): fewer scored symbols
than ``health.min_signals``, a regime with no calibrator, a model feature more than
``health.max_nan_share`` NaN.

WARNING: realised Brier/ECE of recent predictions worse than the active baseline's own
walk-forward validation by a margin (the runbook's absolute 0.14/0.05 were set for another
model, so the reference is the baseline's measured quality), coverage outside the band, PSI
above the limit on a key feature against the training distribution, top-5 exposure above the
limit, one volatility regime holding more than the limit of the scored symbols, an empty book
(BUY signals, no BUY order: the step that zeroed it, also in the field ``empty_book``), an
active model without measured skill (verdict and figures in the field ``model_skill``; see
:mod:`tasks.models.skill`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tasks.models.barrier import psi
from tasks.models.metrics import ece_equal_mass
from tasks.models.skill import health_entry, health_warning
from tasks.trading_settings import HealthSettings


def preflight_errors(n_scored: int, missing_calibrators: dict[str, list[str]],
                     nan_share: dict[str, float], cfg: HealthSettings) -> list[str]:
    """The conditions that stop trading, known before any decision is made."""
    errors = []
    if n_scored < cfg.min_signals:
        errors.append(f"signals: {n_scored} scored symbols < {cfg.min_signals}")
    for horizon, regimes in sorted(missing_calibrators.items()):
        errors.append(f"calibrator missing: horizon {horizon}, regime(s) {', '.join(regimes)}")
    bad = {c: s for c, s in nan_share.items() if s > cfg.max_nan_share}
    if bad:
        shown = ", ".join(f"{c} {s:.0%}" for c, s in sorted(bad.items()))
        errors.append(f"features more than {cfg.max_nan_share:.0%} NaN: {shown}")
    return errors


def realised_quality(recent: pd.DataFrame, horizons: list[str]) -> dict[str, dict[str, float]]:
    """Brier and ECE of calibrated P(win) on rows whose outcome is known (label_<h> not NaN)."""
    out = {}
    for h in horizons:
        if f"label_{h}" not in recent:
            continue
        rows = recent.loc[recent[f"label_{h}"].notna() & recent[f"p_cal_{h}"].notna()]
        y = rows[f"label_{h}"].to_numpy(dtype="float64")
        p = rows[f"p_cal_{h}"].to_numpy(dtype="float64")
        out[h] = {"n": int(len(rows)),
                  "sessions": int(rows["date"].nunique()) if len(rows) else 0,
                  "brier": float(np.mean((p - y) ** 2)) if len(rows) else math.nan,
                  "ece": ece_equal_mass(y, p) if len(rows) >= 50 else math.nan,
                  "base_rate": float(y.mean()) if len(rows) else math.nan}
    return out


def _baseline_quality(manifest: dict, horizon: str) -> dict[str, float]:
    for row in manifest.get("metrics", {}).get("overall", []):
        if row.get("horizon") == horizon:
            return {"brier": row.get("brier", math.nan), "ece": row.get("ece", math.nan)}
    return {"brier": math.nan, "ece": math.nan}


def _quality_findings(quality: dict, manifest: dict, cfg: HealthSettings) -> tuple[list, list]:
    warnings, info = [], []
    for h, q in sorted(quality.items()):
        ref = _baseline_quality(manifest, h)
        q["baseline_brier"], q["baseline_ece"] = ref["brier"], ref["ece"]
        if q["n"] == 0:
            info.append(f"quality {h}: no realised outcomes yet in the window")
            continue
        if q["brier"] > ref["brier"] + cfg.brier_margin:
            warnings.append(f"quality {h}: Brier {q['brier']:.4f} > baseline {ref['brier']:.4f} "
                            f"+ {cfg.brier_margin}")
        if math.isfinite(q["ece"]) and q["ece"] > ref["ece"] + cfg.ece_margin:
            warnings.append(f"quality {h}: ECE {q['ece']:.4f} > baseline {ref['ece']:.4f} "
                            f"+ {cfg.ece_margin}")
    return warnings, info


def drift(features: pd.DataFrame, reference: dict, cfg: HealthSettings) -> dict[str, float]:
    """PSI of each key feature over the recent sessions passed in (``health.psi_sessions``
    of them: one day's cross-section alone is too small a sample and biases PSI upwards)
    against the training distribution."""
    return {c: psi(features[c].to_numpy(dtype="float64", na_value=np.nan), reference[c])
            for c in cfg.psi_features if c in features and c in reference}


def health_report(*, as_of: str, errors: list[str], signals: pd.DataFrame, plan: pd.DataFrame,
                  exposure: dict[str, Any], net_liquidity: float, quality: dict,
                  psi_values: dict[str, float], manifest: dict, cfg: HealthSettings,
                  alerts: list[str], extra: dict[str, Any],
                  empty_book: dict[str, Any] | None = None) -> dict[str, Any]:
    """The health JSON (seed structure: summary, metrics.quality/coverage/regime, ...).

    ``empty_book`` (the decision's ``info["empty_book"]``: BUY signals but no BUY order) is a
    WARNING with its message and the top-level field ``empty_book`` (null when not empty)."""
    warnings, info = _quality_findings(quality, manifest, cfg)
    n = len(signals)
    n_sig = int(signals["actionable"].sum()) if n else 0
    coverage = n_sig / n if n else math.nan
    lo, hi = cfg.coverage_band
    if n and not lo <= coverage <= hi:
        warnings.append(f"coverage {coverage:.1%} outside {lo:.0%}-{hi:.0%}")
    for col, value in sorted(psi_values.items()):
        if value > cfg.psi_max:
            warnings.append(f"drift: PSI {col} {value:.3f} > {cfg.psi_max}")
    if exposure.get("top5", 0) > cfg.top5_max:
        warnings.append(f"concentration: top-5 {exposure['top5']:.1%} > {cfg.top5_max:.0%}")
    dist = (signals["regime"].value_counts(normalize=True).sort_index() if n else pd.Series())
    for reg, share in dist.items():
        if share > cfg.regime_share_max:
            warnings.append(f"regime skew: {reg} {share:.0%} of symbols > "
                            f"{cfg.regime_share_max:.0%}")
    warnings.extend(alerts)
    if empty_book and empty_book["message"] not in warnings:
        warnings.append(empty_book["message"])
    model_skill = health_entry(manifest)
    skill_warning = health_warning(model_skill)
    if skill_warning:
        warnings.append(skill_warning)
    status = "ERROR" if errors else ("WARNING" if warnings else "OK")
    mq = quality.get(extra.get("plan_horizon"), {})
    return {
        "date": as_of,
        "summary": {"status": status, "stop_trading": bool(errors), "errors": errors,
                    "warnings": warnings, "info": info},
        "net_liquidity": net_liquidity,
        "empty_book": empty_book,
        "metrics": {
            "quality": {"brier": mq.get("brier"), "ece": mq.get("ece"), "horizon":
                        extra.get("plan_horizon"), "by_horizon": quality},
            "coverage": {"scored": n, "signals_count": n_sig, "definition":
                         "actionable gated signals / scored symbols (a SELL is actionable only "
                         "on a held long or when shorts are allowed)",
                         "coverage_pct": 100 * coverage if n else None,
                         "buy": int((signals["signal"] == "BUY").sum()) if n else 0,
                         "sell": int((signals["signal"] == "SELL").sum()) if n else 0,
                         "orders": len(plan), "band_pct": [100 * lo, 100 * hi]},
            "regime": {"regime_distribution": {str(k): 100 * float(v) for k, v in dist.items()},
                       **extra.get("market", {})},
            "drift": {"psi": psi_values, "psi_max": cfg.psi_max},
            "exposure": exposure,
        },
        "model_skill": model_skill,
        **{k: v for k, v in extra.items() if k not in ("market",)},
    }


def empty_book_line(empty_book: dict[str, Any] | None) -> str | None:
    """One line for a person: ``EMPTY BOOK: 168 BUY signals, no order — zeroed by
    size:kelly_cap 160, gate:high_vol 8`` (None when the book is not empty)."""
    if not empty_book:
        return None
    n = int(empty_book.get("buy_signals", 0))
    steps = ", ".join(f"{k} {v}" for k, v in (empty_book.get("by_step") or {}).items())
    return (f"EMPTY BOOK: {n} BUY signal{'' if n == 1 else 's'}, no order — zeroed by "
            f"{steps or empty_book.get('step', 'unknown')}")
