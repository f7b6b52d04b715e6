"""The skill gate: does a baseline have measured out-of-sample skill at the plan horizon?

``hcp train`` records ``manifest["skill"]`` (see :func:`skill_record`): for the plan horizon
(``fusion.plan_horizon``) the Brier skill score of the calibrated P(win) against the
climatological base rate (rows with a label and a calibrated probability), the rank IC of
ranking score (the ranker's ``rank_score``, else P(win)) against the forward return with its
Newey-West t (lag h - 1), and the top-decile
realised barrier P&L net of costs next to the whole universe's; the same figures per horizon;
the thresholds (``models.skill``) and a verdict:

- ``skilled``: Brier skill > ``min_brier_skill`` AND IC Newey-West t >= ``min_ic_t``;
- ``no_skill``: anything else, a figure that cannot be measured included;
- ``unknown``: a manifest written before the gate (no ``skill`` record).

A baseline that is not ``skilled`` is registered but never promoted to ``active``
automatically; ``hcp promote`` needs ``--force --reason`` for it (logged in the registry
history); the daily health report carries the active model's verdict and warns when it is not
skilled; in live mode an active model without measured skill is a failing live gate when
``models.skill.live_requires_skill`` is true.

This module imports nothing heavy at load time (the live gates and the health report use it).
"""

from __future__ import annotations

from typing import Any

from tasks.numbers import json_number

SKILLED, NO_SKILL, UNKNOWN = "skilled", "no_skill", "unknown"
TOP_FRAC = 0.10
FIGURES = ("brier_skill", "ic", "ic_t", "top_decile_net", "universe_net")


_num = json_number


def _f(x: float | None, digits: int = 4) -> str:
    """A signed figure for plain-language text ('n/a' when it cannot be measured); a non-zero
    figure too small for ``digits`` decimals keeps two significant digits (never '+0.000')."""
    if x is None:
        return "n/a"
    text = f"{x:+.{digits}f}" if x == 0 or abs(x) >= 0.5 * 10 ** -digits else f"{x:+.2g}"
    return "\u2212" + text[1:] if text.startswith("-") else text


def _thr(x: float) -> str:
    """A threshold without trailing zeros (0, 2, 1.5)."""
    return f"{x:g}"


def ranking_column(oos) -> str:
    """The score the plan ranks names by: the ranking model's ``rank_score`` where the baseline
    has one, else the calibrated P(win)."""
    if "rank_score" in oos.columns and oos["rank_score"].notna().any():
        return "rank_score"
    return "p_cal"


def horizon_figures(oos, horizon: str, nw_lag: int, fee_pct: float) -> dict[str, Any]:
    """Skill figures of one horizon from out-of-sample rows (columns horizon, date, label,
    p_cal, fwd_return and, where present, realised_pnl).

    ``brier_skill`` = 1 - Brier(p_cal) / Brier(base rate), both on the rows with a label and a
    calibrated probability (the base rate is their mean label); ``ic`` / ``ic_t``: mean daily
    rank IC of the ranking score (:func:`ranking_column`) vs fwd_return on those rows and its
    Newey-West t with ``nw_lag``;
    ``top_decile_net``: per date, the mean ``realised_pnl`` of the top 10 % of names by it
    (at least one; a tie at the cut shared), minus 2 x ``fee_pct``, averaged over dates;
    ``universe_net``: the same over all names with a calibrated probability.
    """
    import numpy as np

    from tasks.models.metrics import rank_ic, top_decile_hit_rate

    d = oos.loc[(oos["horizon"] == horizon) & oos["p_cal"].notna() & oos["label"].notna()]
    score = ranking_column(d)
    out: dict[str, Any] = {"score": score, "n": int(len(d)), "brier_skill": None, "ic": None, "ic_t": None,
                           "n_dates": 0, "top_decile_net": None, "universe_net": None}
    if len(d):
        y, p = d["label"].to_numpy(dtype=float), d["p_cal"].to_numpy(dtype=float)
        base = float(y.mean())
        ref = base * (1.0 - base)
        out["base_rate"] = _num(base)
        out["brier_skill"] = _num(1.0 - float(np.mean((p - y) ** 2)) / ref) if ref > 0 else None
        ranked = d.loc[d[score].notna()]
        ic = rank_ic(ranked[score].to_numpy(dtype=float), ranked["fwd_return"], ranked["date"],
                     nw_lag=nw_lag)
        out.update(ic=_num(ic["ic_mean"]), ic_t=_num(ic["ic_t_nw"]), n_dates=int(ic["n_dates"]))
    if "realised_pnl" in oos.columns:
        r = oos.loc[(oos["horizon"] == horizon) & oos["p_cal"].notna()
                    & oos["realised_pnl"].notna() & oos[score].notna()]
        if len(r):
            cost = 2.0 * fee_pct
            top = top_decile_hit_rate(r["realised_pnl"], r[score], r["date"], TOP_FRAC)
            uni = r.groupby("date", sort=True)["realised_pnl"].mean().mean()
            out["top_decile_net"] = _num(top - cost)
            out["universe_net"] = _num(uni - cost)
            out["cost"] = cost
    return out


def judge(figures: dict[str, Any], min_brier_skill: float, min_ic_t: float
          ) -> tuple[str, list[str]]:
    """Verdict and plain-language reasons: skilled iff Brier skill > min_brier_skill and the IC's
    Newey-West t >= min_ic_t (a figure that cannot be measured fails its test)."""
    bs, ic, t = (_num(figures.get(k)) for k in ("brier_skill", "ic", "ic_t"))
    reasons = []
    brier_ok = bs is not None and bs > min_brier_skill
    if bs is None:
        reasons.append("Brier skill cannot be measured (no labelled rows with a calibrated "
                       "probability)")
    elif brier_ok:
        reasons.append(f"Brier skill {_f(bs)} > {_thr(min_brier_skill)}: calibrated P(win) "
                       "beats the base rate")
    else:
        reasons.append(f"Brier skill {_f(bs)} \u2264 {_thr(min_brier_skill)}: calibrated P(win) "
                       "is no better than the base rate")
    t_ok = t is not None and t >= min_ic_t
    if t is None:
        reasons.append("rank IC Newey\u2013West t cannot be measured (too few dates)")
    elif t_ok:
        reasons.append(f"rank IC {_f(ic)}, Newey\u2013West t {_f(t, 2)} \u2265 {_thr(min_ic_t)}: "
                       "the ranking of names is significant")
    else:
        reasons.append(f"rank IC {_f(ic)}, Newey\u2013West t {_f(t, 2)} < {_thr(min_ic_t)}: "
                       "the ranking of names is not significant")
    return (SKILLED if brier_ok and t_ok else NO_SKILL), reasons


def measured_figures(measures, horizon: str, nw_lag: int, fee_pct: float,
                     sessions: dict | None = None) -> dict[str, Any]:
    """:func:`horizon_figures` of the rows of a :class:`tasks.models.metrics.OOSMeasures` whose
    date ``sessions`` keeps (per horizon; every row when None), from its per-date figures."""
    import numpy as np
    import pandas as pd

    from tasks.models.metrics import summarise_ic

    d = measures.rows(horizon, ("label", "p_cal"), sessions)
    ranked = "rank_score" in measures.columns and bool(measures.notna("rank_score")[d].any())
    score = "rank_score" if ranked else "p_cal"
    out: dict[str, Any] = {"score": score, "n": int(len(d)), "brier_skill": None, "ic": None,
                           "ic_t": None, "n_dates": 0, "top_decile_net": None,
                           "universe_net": None}
    if len(d):
        y, p = measures.values("label")[d], measures.values("p_cal")[d]
        base = float(y.mean())
        ref = base * (1.0 - base)
        out["base_rate"] = _num(base)
        out["brier_skill"] = _num(1.0 - float(np.mean((p - y) ** 2)) / ref) if ref > 0 else None
        daily = measures.daily("ic", horizon, ("label", "p_cal", score), (score, "fwd_return"),
                               sessions)
        ic = summarise_ic(daily, nw_lag)
        out.update(ic=_num(ic["ic_mean"]), ic_t=_num(ic["ic_t_nw"]), n_dates=int(ic["n_dates"]))
    if "realised_pnl" in measures.columns:
        need = ("p_cal", "realised_pnl", score)
        if len(measures.rows(horizon, need, sessions)):
            cost = 2.0 * fee_pct
            hits = measures.daily("hit", horizon, need, ("realised_pnl", score), sessions)
            top = float(pd.Series(hits).mean()) if len(hits) else float("nan")
            uni = pd.Series(measures.daily("mean", horizon, need, ("realised_pnl",),
                                           sessions)).mean()
            out["top_decile_net"] = _num(top - cost)
            out["universe_net"] = _num(uni - cost)
            out["cost"] = cost
    return out


def skill_record(oos, settings, sessions: dict | None = None) -> dict[str, Any]:
    """``manifest["skill"]``: the plan horizon's figures, verdict and reasons, every horizon's
    figures and verdict, and the thresholds used.

    ``oos``: the out-of-sample rows, or their :class:`tasks.models.metrics.OOSMeasures` (the
    same figures from per-date parts computed once) with ``sessions``: per horizon, the dates
    measured (every row when None; a horizon absent from it has no rows)."""
    from tasks.models.metrics import OOSMeasures

    cfg = settings.models.skill
    fee = settings.guardrails.fee_pct
    per = {}
    for name, h in settings.labels.horizons.items():
        if isinstance(oos, OOSMeasures):
            fig = measured_figures(oos, name, max(0, h - 1), fee, sessions)
        else:
            fig = horizon_figures(oos, name, max(0, h - 1), fee)
        verdict, reasons = judge(fig, cfg.min_brier_skill, cfg.min_ic_t)
        per[name] = {**fig, "verdict": verdict, "reasons": reasons}
    horizon = settings.fusion.plan_horizon
    plan = per[horizon]
    return {"horizon": horizon, "verdict": plan["verdict"], "reasons": plan["reasons"],
            **{k: plan.get(k) for k in FIGURES},
            "n": plan["n"], "n_dates": plan["n_dates"],
            "costs": {"round_trip": 2.0 * fee, "fee_pct": fee},
            "per_horizon": per,
            "thresholds": {"min_brier_skill": cfg.min_brier_skill, "min_ic_t": cfg.min_ic_t,
                           "live_requires_skill": cfg.live_requires_skill}}


def skill_of(manifest: dict | None) -> dict[str, Any]:
    """The skill record of a manifest; verdict ``unknown`` when it predates the gate."""
    rec = (manifest or {}).get("skill")
    if isinstance(rec, dict) and rec.get("verdict") in (SKILLED, NO_SKILL):
        return rec
    return {"verdict": UNKNOWN,
            "reasons": ["the baseline's manifest has no skill record (trained before the skill "
                        "gate): retrain it to measure its skill"]}


def is_skilled(manifest: dict | None) -> bool:
    return skill_of(manifest)["verdict"] == SKILLED


def headline(rec: dict | None, promoted_note: str | None = None) -> str:
    """One plain-language line: the verdict and its figures (for cards, reports, health, CLI)."""
    rec = rec if rec and "verdict" in rec else skill_of(rec)
    v = rec["verdict"]
    if v == UNKNOWN:
        text = ("SKILL UNKNOWN: " + "; ".join(rec.get("reasons", []))
                + ". Treated as no skill for live trading.")
    else:
        thr = rec.get("thresholds", {})
        mb, mt = thr.get("min_brier_skill", 0.0), thr.get("min_ic_t", 2.0)
        bs, ic, t = rec.get("brier_skill"), rec.get("ic"), rec.get("ic_t")
        b_txt = ("Brier skill not measurable" if bs is None else
                 f"Brier skill {_f(bs, 3)} {'>' if bs > mb else chr(0x2264)} {_thr(mb)}")
        t_txt = ("Newey\u2013West t not measurable" if t is None else
                 f"Newey\u2013West t {_f(t, 2)} {chr(0x2265) if t >= mt else '<'} {_thr(mt)}")
        figs = f"{b_txt}; rank IC {_f(ic, 3)}, {t_txt}"
        lead = ("Skilled" if v == SKILLED else "NO MEASURED SKILL")
        text = f"{lead} at the plan horizon ({rec.get('horizon')}): {figs}."
        top, uni = rec.get("top_decile_net"), rec.get("universe_net")
        if top is not None or uni is not None:
            text += (f" Top-decile barrier P&L net of costs {_pct(top)} per trade vs "
                     f"{_pct(uni)} for the whole universe.")
        if v != SKILLED and promoted_note is None:
            promoted_note = "Not promoted automatically."
    return f"{text} {promoted_note}" if promoted_note else text


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{_f(100 * x, 3)}%"


def health_entry(manifest: dict | None, baseline_id: str | None = None) -> dict[str, Any]:
    """``model_skill`` of the daily health JSON: verdict, figures, thresholds and the line."""
    rec = skill_of(manifest)
    out = {"baseline": baseline_id or (manifest or {}).get("id"), "verdict": rec["verdict"],
           "horizon": rec.get("horizon"), **{k: rec.get(k) for k in FIGURES},
           "thresholds": rec.get("thresholds"), "reasons": rec.get("reasons", []),
           "summary": headline(rec, promoted_note="")}
    return out


def health_warning(entry: dict[str, Any]) -> str | None:
    """The health WARNING for a plan made with a model that is not skilled (None if skilled)."""
    if entry["verdict"] == SKILLED:
        return None
    return (f"model skill: active baseline {entry.get('baseline')} verdict {entry['verdict']}: "
            f"{entry['summary']}")


def active_skill(paths) -> tuple[str | None, dict[str, Any]]:
    """The active baseline's id and skill record, read from the registry files (light: no model
    is loaded). ``(None, {"verdict": "unknown", ...})`` when no baseline is active."""
    from tasks.models.manifests import read_manifest_file, read_registry_file

    active = read_registry_file(paths).get("active")   # StateFileError names a damaged file
    if active is None:
        return None, {"verdict": UNKNOWN, "reasons": ["no active baseline"]}
    return active, skill_of(read_manifest_file(paths, active, required=False))
