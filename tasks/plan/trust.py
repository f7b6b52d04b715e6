"""Thompson-sampled trust in the fusion's sources: realised R-multiples re-weigh the blend.

The fusion blends three sources with the policy's ``blend_weights``: the short- and mid-horizon
edges and the RL size hint (:mod:`tasks.plan.fusion`). This module keeps, per source, a
Normal-Inverse-Gamma posterior of the realised R-multiples of the closed episodes the source
is credited with, and turns a Thompson draw from those posteriors into blend weights that the
nightly run writes as a new policy version for the next plan.

**Attribution (how a closed episode's R is credited).** An episode (entry to full exit,
:mod:`tasks.execution.episodes`) was entered at session E on the plan of the session before E,
P. The plan's signals (``data/daily/<P>/signals_with_gates.parquet``; the audit
``val/plans/<P>/trade_plan_audit.parquet`` when the signals are gone, without the RL hint) hold
what each source said of the name at P: its view is ``edge_short - 0.5``, ``edge_mid - 0.5``
and ``sigmoid(rl_size_hint) - 0.5`` (edges are on a 0..1 scale with 0.5 = no edge). With the
episode's side s (+1 long, -1 short) and its realised R, a source is credited with

    x = R * sign(view) * s

so a source that favoured the trade (its view points the way the trade went) gets +R, one that
opposed it gets -R, and a source without a view (no row, a missing edge, no RL hint, or an
edge of exactly 0.5) gets nothing: its posterior does not move. A horizon blended at weight 0
(no measured skill) is still credited: its view existed, and the evidence is what may earn it
weight back. An episode without a finite R (unknown initial risk) credits nobody.

**Posterior (standard conjugate update).** With prior ``NIG(mu0, kappa0, alpha0, beta0)``
(``trust.*`` settings) and x ~ Normal(m, sigma²), m | sigma² ~ Normal(mu, sigma² / kappa),
sigma² ~ InvGamma(alpha, beta), one credited value x gives

    kappa' = kappa + 1
    mu'    = (kappa * mu + x) / (kappa + 1)
    alpha' = alpha + 1/2
    beta'  = beta + kappa * (x - mu)² / (2 * (kappa + 1))

(n values at once: kappa + n, (kappa mu + n x̄)/(kappa + n), alpha + n/2,
beta + ½ Σ(x - x̄)² + kappa n (x̄ - mu)² / (2 (kappa + n)); the same numbers).

**Weights.** A night draws, per source and in the fixed order short, mid, rl, from a numpy
Generator seeded with ``trust.seed`` and the session's date (a re-run of the night draws the
same values): sigma² ~ InvGamma(alpha, beta), then m ~ Normal(mu, sigma² / kappa). The sources
with evidence (n > 0 credited episodes) share the configured weight they hold together, C;
each gets the softmax of ``log c_k + m_k / temperature`` over them (the configured mix
tilted by the sampled means: equal draws give back the configured mix). Each source's target
is blended with its configured weight by its weight of evidence ``n / (n + shrink_kappa)``
(seed 003's ``kappa / (kappa + 10)``, counted in episodes so that the prior's pseudo-count is
no evidence), the blend is renormalised to C, and every weight is kept in the escalation
bounds' drift band ``configured ± escalation.bounds.blend_weight_max_drift × total`` (the
same band as :func:`tasks.escalation.bounds._blend`, shares of the configured total): clipped,
and what clipping removed or added is spread over the weights with room left, so they still
sum to C (stored rounded to 6 decimals, the rounding's residue on a weight that moved). A
source without evidence keeps its configured weight exactly (the RL hint: there is no RL model
yet, so its posterior never moves and its weight stays as configured). A source configured at
0 stays at 0 (trust re-weighs the configured mix, it does not switch a source on). The result
is anchored on the CONFIGURED mix (``policy.blend_weights`` in the settings), never on the
version in force, so trust cannot walk the blend away step by step; it is written only when a
weight moves by ``trust.min_change`` or more against the version in force (which may hold an
escalation's weights: a trust update then replaces them), and only on a night that credited
new evidence (a night without any draws nothing, so the policy does not churn on noise).

**State and idempotency.** ``data/state/trust.json`` (:class:`TrustStateFile`, read strictly)
holds the prior it started from, the posteriors, the id of every counted episode with the night
that counted it, and each night's report. A night counts every closed episode with
``exit_session <= D`` not counted before (so a missed night is caught up, and nothing after D
is seen); a re-run of a night with nothing new returns the night's stored report and changes
nothing. The policy is changed first and the state written last (its commit point): a crash in
between recounts the same episodes, draws the same values and finds the weights already in
force. A lost state file is rebuilt from the evidence by the next night (every closed episode
counted again from the prior).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.io import atomic_write_json
from tasks.numbers import json_number
from tasks.paths import Paths, state_dir
from tasks.policy import (
    current_policy,
    diff_policies,
    policy_lock,
    save_policy,
    store_version,
)
from tasks.settings import AppSettings
from tasks.statefiles import load_json_state

SOURCES = ("short", "mid", "rl")
FORMAT = "hcp-trust/1"
REASON_PREFIX = "trust: Thompson update"
REMEDY = ("repair it with `hcp state repair trust --by NAME --reason TEXT` (moves it aside; the "
          "next nightly run counts every closed episode again from the prior)")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --------------------------------------------------------------------------- the posterior

@dataclass(frozen=True)
class NIG:
    """Normal-Inverse-Gamma posterior of a source's credited R (``n``: values counted)."""

    mu: float
    kappa: float
    alpha: float
    beta: float
    n: int = 0

    def update(self, x: float) -> NIG:
        """The conjugate update by one credited value (module docstring)."""
        x = float(x)
        k1 = self.kappa + 1.0
        return NIG(mu=(self.kappa * self.mu + x) / k1, kappa=k1, alpha=self.alpha + 0.5,
                   beta=self.beta + self.kappa * (x - self.mu) ** 2 / (2.0 * k1), n=self.n + 1)

    def updated(self, xs: list[float] | np.ndarray) -> NIG:
        out = self
        for x in xs:
            out = out.update(x)
        return out

    def draw(self, rng: np.random.Generator) -> tuple[float, float]:
        """(sigma², m): sigma² ~ InvGamma(alpha, beta), m ~ Normal(mu, sigma² / kappa)."""
        sigma2 = self.beta / rng.gamma(self.alpha, 1.0)
        return float(sigma2), float(rng.normal(self.mu, math.sqrt(sigma2 / self.kappa)))

    @property
    def mean_sd(self) -> float:
        """Scale of the posterior of the mean (Student-t, 2·alpha degrees of freedom)."""
        return math.sqrt(self.beta / (self.alpha * self.kappa))

    def to_json(self) -> dict[str, Any]:
        return {"mu": self.mu, "kappa": self.kappa, "alpha": self.alpha, "beta": self.beta,
                "n": self.n}


def prior_of(settings: AppSettings) -> NIG:
    t = settings.trust
    return NIG(mu=float(t.mu0), kappa=float(t.kappa0), alpha=float(t.alpha0),
               beta=float(t.beta0), n=0)


# --------------------------------------------------------------------------- attribution

def source_views(edge_short: float, edge_mid: float, rl_size_hint: float) -> dict[str, float]:
    """What each source said of a name at plan time, centred on 'no view' (0); NaN: none."""
    def centred(edge: float) -> float:
        e = float(edge) if edge is not None and not pd.isna(edge) else math.nan
        return e - 0.5

    hint = float(rl_size_hint) if rl_size_hint is not None and not pd.isna(rl_size_hint) \
        else math.nan
    rl = 1.0 / (1.0 + math.exp(-hint)) - 0.5 if math.isfinite(hint) else math.nan
    return {"short": centred(edge_short), "mid": centred(edge_mid), "rl": rl}


def credit(r_multiple: float, side: str, views: Mapping[str, float]) -> dict[str, float]:
    """Signed R per source: ``R * sign(view) * side`` (+R for a source that favoured the trade,
    -R for one that opposed it); a source without a view, or an episode without a finite R,
    credits nothing."""
    r = float(r_multiple) if r_multiple is not None and not pd.isna(r_multiple) else math.nan
    if not math.isfinite(r):
        return {}
    way = 1.0 if side == "long" else -1.0
    out = {}
    for source in SOURCES:
        view = views.get(source, math.nan)
        if view is not None and math.isfinite(view) and view != 0.0:
            out[source] = r * math.copysign(1.0, view) * way
    return out


def plan_views(paths: Paths, plan_session: str) -> dict[str, dict[str, float]] | None:
    """``{symbol: source views}`` from the plan of ``plan_session`` (its signals, else its
    audit without the RL hint); None when neither file exists."""
    from tasks.plan.outputs import output_paths

    where = output_paths(paths, plan_session)
    for key in ("signals", "audit"):
        if where[key].is_file():
            frame = pd.read_parquet(where[key])
            break
    else:
        return None
    col = "symbol" if "symbol" in frame else "ticker"

    def values(name: str) -> np.ndarray:
        return (pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64")
                if name in frame else np.full(len(frame), np.nan))

    es, em, rl = values("edge_short"), values("edge_mid"), values("rl_size_hint")
    return {str(sym): source_views(es[i], em[i], rl[i])
            for i, sym in enumerate(frame[col].astype(str))}


def plan_session_of(calendar: str, entry_session: str) -> str:
    """The plan an entry at ``entry_session`` executed: the session before it."""
    from tasks.data.calendar import previous_session

    return previous_session(calendar, pd.Timestamp(entry_session) - pd.Timedelta(days=1)
                            ).date().isoformat()


def attribute(paths: Paths, settings: AppSettings, episodes: pd.DataFrame
              ) -> list[dict[str, Any]]:
    """One record per episode: its R, the plan it came from and the signed R per source."""
    views_of: dict[str, dict[str, dict[str, float]] | None] = {}
    plan_of: dict[str, str] = {}
    out = []
    for ep in episodes.itertuples(index=False):
        rec: dict[str, Any] = {"episode_id": str(ep.episode_id), "symbol": str(ep.symbol),
                               "side": str(ep.side), "exit_session": str(ep.exit_session),
                               "r_multiple": json_number(ep.r_multiple), "plan_session": None,
                               "credited": {}, "note": None}
        entry = getattr(ep, "entry_session", None)
        if entry is None or pd.isna(entry):
            rec["note"] = "no entry session"
            out.append(rec)
            continue
        if str(entry) not in plan_of:
            plan_of[str(entry)] = plan_session_of(settings.data.calendar, str(entry))
        plan = plan_of[str(entry)]
        rec["plan_session"] = plan
        if plan not in views_of:
            views_of[plan] = plan_views(paths, plan)
        views = views_of[plan]
        if rec["r_multiple"] is None:
            rec["note"] = "no R (initial risk unknown)"
        elif views is None:
            rec["note"] = f"no signals or audit of the plan of {plan}"
        elif rec["symbol"] not in views:
            rec["note"] = f"{rec['symbol']} not in the plan of {plan}"
        else:
            rec["credited"] = credit(rec["r_multiple"], rec["side"], views[rec["symbol"]])
            if not rec["credited"]:
                rec["note"] = "no source had a view"
        out.append(rec)
    return out


# --------------------------------------------------------------------------- the weights

def session_rng(seed: int, session: str) -> np.random.Generator:
    """The night's generator: ``trust.seed`` and the session's date (YYYYMMDD)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(session.replace("-", ""))]))


def thompson_draws(posteriors: Mapping[str, NIG], rng: np.random.Generator
                   ) -> dict[str, dict[str, float]]:
    """One (sigma², mean) per source, drawn in the fixed order short, mid, rl."""
    out = {}
    for source in SOURCES:
        sigma2, mean = posteriors[source].draw(rng)
        out[source] = {"sigma2": sigma2, "mean": mean}
    return out


def within_band(w: Mapping[str, float], lo: Mapping[str, float], hi: Mapping[str, float],
                total: float) -> dict[str, float]:
    """``w`` moved into [lo, hi] per key and summing to ``total``: clipped, then the gap spread
    over the keys in proportion to the room each has left (exact when sum(lo) <= total <=
    sum(hi), which holds for a band around weights that sum to ``total``)."""
    kept = {k: min(max(float(v), lo[k]), hi[k]) for k, v in w.items()}
    gap = total - sum(kept.values())
    room = {k: (hi[k] - kept[k]) if gap > 0 else (kept[k] - lo[k]) for k in kept}
    spare = sum(room.values())
    if abs(gap) > 1e-15 and spare > 0:
        kept = {k: kept[k] + gap * room[k] / spare for k in kept}
    return kept


def trust_weights(configured: Mapping[str, float], means: Mapping[str, float],
                  evidence: Mapping[str, int], *, shrink: float, temperature: float,
                  drift: float) -> dict[str, float]:
    """Blend weights from sampled means (module docstring, "Weights"): sources without
    evidence keep their configured weight; the others share what they hold together."""
    conf = {k: float(configured.get(k, 0.0)) for k in SOURCES}
    total = sum(conf.values())
    active = [k for k in SOURCES if evidence.get(k, 0) > 0]
    budget = sum(conf[k] for k in active)
    out = dict(conf)
    if not active or budget <= 0:
        return out
    with np.errstate(divide="ignore"):
        logit = {k: (math.log(conf[k]) if conf[k] > 0 else -math.inf) + means[k] / temperature
                 for k in active}
    top = max(logit.values())
    expo = {k: math.exp(v - top) if math.isfinite(v) else 0.0 for k, v in logit.items()}
    norm = sum(expo.values())
    target = {k: budget * expo[k] / norm for k in active}
    lam = {k: evidence[k] / (evidence[k] + shrink) for k in active}
    mixed = {k: lam[k] * target[k] + (1.0 - lam[k]) * conf[k] for k in active}
    scale = budget / sum(mixed.values())
    mixed = {k: v * scale for k, v in mixed.items()}
    band = drift * total
    lo = {k: max(0.0, conf[k] - band) for k in active}
    hi = {k: min(budget, conf[k] + band) for k in active}
    out.update(within_band(mixed, lo, hi, budget))
    return out


def rounded(weights: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(weights.get(k, 0.0)), 6) for k in SOURCES}


def rounded_to_total(weights: Mapping[str, float], configured: Mapping[str, float],
                     drift: float) -> dict[str, float]:
    """Weights rounded to 6 decimals (as the escalation bounds store them), the rounding's
    residue given to the largest weight that moved and stays inside the drift band with it,
    so they still sum to the configured total and a weight that did not move stays exactly
    as configured."""
    out, conf = rounded(weights), rounded(configured)
    band = drift * sum(conf.values())
    residue = round(sum(conf.values()) - sum(out.values()), 6)
    fits = [k for k in SOURCES if out[k] != conf[k]
            and max(0.0, conf[k] - band) <= out[k] + residue <= conf[k] + band]
    if residue and fits:
        k = max(fits, key=lambda m: out[m])
        out[k] = round(out[k] + residue, 6)
    return out


# --------------------------------------------------------------------------- the state file

class PosteriorState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mu: float = Field(allow_inf_nan=False)
    kappa: float = Field(gt=0, allow_inf_nan=False)
    alpha: float = Field(gt=0, allow_inf_nan=False)
    beta: float = Field(gt=0, allow_inf_nan=False)
    n: int = Field(ge=0)

    def typed(self) -> NIG:
        return NIG(self.mu, self.kappa, self.alpha, self.beta, self.n)


class TrustStateFile(BaseModel):
    """``data/state/trust.json``: the prior, the posteriors, the counted episodes (id -> the
    night that counted it) and every night's report."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["hcp-trust/1"]
    prior: PosteriorState
    posteriors: dict[Literal["short", "mid", "rl"], PosteriorState]
    counted: dict[str, str]
    nights: dict[str, dict[str, Any]]

    @model_validator(mode="after")
    def _consistent(self) -> TrustStateFile:
        if set(self.posteriors) != set(SOURCES):
            raise ValueError(f"posteriors must name exactly {', '.join(SOURCES)}")
        if self.prior.n != 0:
            raise ValueError("the prior counts no episode (n = 0)")
        bad = sorted(d for d in self.nights if not _DAY.match(d))
        if bad:
            raise ValueError(f"nights must be sessions YYYY-MM-DD: {bad[:3]}")
        orphans = sorted({d for d in self.counted.values() if d not in self.nights})
        if orphans:
            raise ValueError(f"episodes counted by nights without a record: {orphans[:3]}")
        p0 = self.prior
        for source, post in self.posteriors.items():
            tol = 1e-9 * (1 + post.n)
            if (abs(post.kappa - (p0.kappa + post.n)) > tol
                    or abs(post.alpha - (p0.alpha + post.n / 2)) > tol or post.beta < p0.beta):
                raise ValueError(f"posterior {source} is not its prior updated by {post.n} "
                                 "value(s)")
        return self


def trust_path(paths: Paths) -> Path:
    return state_dir(paths) / "trust.json"


def read_state(paths: Paths) -> TrustStateFile | None:
    """The trust state, strictly (None before the first counted episode; a damaged file is a
    :class:`~tasks.statefiles.StateFileError` naming it and its repair)."""
    return load_json_state(trust_path(paths), TrustStateFile, remedy=REMEDY)


def _empty_state(prior: NIG) -> TrustStateFile:
    p = prior.to_json()
    return TrustStateFile(format=FORMAT, prior=p, posteriors={s: p for s in SOURCES},
                          counted={}, nights={})


def write_state(paths: Paths, state: TrustStateFile) -> Path:
    return atomic_write_json(trust_path(paths), state.model_dump(mode="json"))


def repair_state(paths: Paths, at: str) -> str:
    """Move a damaged trust state aside (the next nightly run rebuilds it from the evidence)."""
    path = trust_path(paths)
    if not path.is_file():
        return "no trust state to move aside (the next nightly run counts every closed episode)"
    aside = path.parent / "damaged" / f"{path.name}.{at.replace(':', '')}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    path.replace(aside)
    return (f"trust state moved aside to {aside}; the next nightly run counts every closed "
            "episode again from the prior")


# --------------------------------------------------------------------------- the nightly step

def session_close(settings: AppSettings, day: str) -> str:
    """The session's close in UTC: the time a night's policy change is recorded at."""
    from tasks.data.calendar import session_bounds

    return session_bounds(settings.data.calendar, day)[1].strftime("%Y-%m-%dT%H:%M:%SZ")


def nightly_update(paths: Paths, settings: AppSettings, day: str,
                   episodes: pd.DataFrame | None, at: str | None = None) -> dict[str, Any]:
    """The nightly trust step for session ``day``: count the closed episodes not counted yet
    (``exit_session <= day``), update the posteriors, draw the night's weights and, when one
    moves by ``trust.min_change`` or more against the policy in force, save a new policy
    version effective from ``day``'s plan (the next plan decided, traded on the next session).
    Returns the night's report (what the nightly summary shows under ``trust``)."""
    cfg = settings.trust
    if not cfg.enabled:
        return {"enabled": False, "session": day, "action": "disabled",
                "line": "trust: disabled (trust.enabled: false)"}
    stored = read_state(paths)
    state = stored if stored is not None else _empty_state(prior_of(settings))
    fresh = _fresh(episodes, state, day)
    if fresh.empty and day in state.nights:
        return state.nights[day]  # a re-run of the night: nothing new, nothing changes
    records = attribute(paths, settings, fresh)
    posteriors = {s: state.posteriors[s].typed() for s in SOURCES}
    for rec in records:
        for source, x in rec["credited"].items():
            posteriors[source] = posteriors[source].update(x)
    credited = {s: sum(1 for r in records if s in r["credited"]) for s in SOURCES}
    night = {"enabled": True, "session": day, "episodes_counted": len(records),
             "credited": credited, "episodes": records,
             "prior": state.prior.model_dump(), **_prior_note(state, settings),
             "posteriors": _summary(posteriors, cfg.shrink_kappa)}
    earlier = state.nights.get(day)
    later = sorted(d for d in state.nights if d > day)
    if earlier is not None:  # a re-run that found episodes the first run did not
        night["episodes"] = [*earlier.get("episodes", []), *records]
        night["episodes_counted"] = len(night["episodes"])
        night["credited"] = {s: earlier.get("credited", {}).get(s, 0) + credited[s]
                             for s in SOURCES}
    if not any(credited.values()):
        if earlier is not None:  # nothing new credited: the night's decision stands
            night.update({k: v for k, v in earlier.items() if k not in night})
        else:
            night.update(_unchanged(paths, settings, "no new evidence: no closed episode "
                                                     "credited a source"))
    elif later:
        night.update(_unchanged(paths, settings, f"a later night ({later[-1]}) already set the "
                                                 "weights: evidence counted, policy left as is"))
    else:
        night.update(_sample_and_apply(paths, settings, day, posteriors,
                                       at or session_close(settings, day)))
    night["line"] = _line(night)
    night = _jsonable(night)
    if records or stored is not None:  # nothing to keep before the first episode is counted
        counted = {**state.counted, **{r["episode_id"]: day for r in records}}
        write_state(paths, TrustStateFile(  # the commit point: written after the policy
            format=FORMAT, prior=state.prior, counted=counted,
            posteriors={s: posteriors[s].to_json() for s in SOURCES},
            nights={**state.nights, day: night}))
    return night


def _fresh(episodes: pd.DataFrame | None, state: TrustStateFile, day: str) -> pd.DataFrame:
    """Closed episodes up to ``day`` not counted yet, in the order they closed."""
    if episodes is None or episodes.empty:
        return pd.DataFrame(columns=["episode_id", "symbol", "side", "entry_session",
                                     "exit_session", "exit_ts", "r_multiple"])
    exits = episodes["exit_session"].astype("string")
    closed = (exits.notna() & (exits <= day)).fillna(False).to_numpy(dtype=bool)
    new = ~episodes["episode_id"].astype(str).isin(set(state.counted)).to_numpy(dtype=bool)
    out = episodes.loc[closed & new].copy()
    sort = [c for c in ("exit_ts", "episode_id") if c in out]
    return out.sort_values(sort, kind="stable").reset_index(drop=True)


def _prior_note(state: TrustStateFile, settings: AppSettings) -> dict[str, Any]:
    configured = prior_of(settings).to_json()
    if configured == state.prior.model_dump():
        return {}
    return {"prior_note": "the trust.* prior in the settings differs from the one this state "
                          "started from, which is kept (move data/state/trust.json aside with "
                          "`hcp state repair trust` to count every episode again from the new "
                          "prior)"}


def _summary(posteriors: Mapping[str, NIG], shrink: float) -> dict[str, dict[str, Any]]:
    return {s: {**p.to_json(), "mean_sd": p.mean_sd,
                "weight_of_evidence": p.n / (p.n + shrink)} for s, p in posteriors.items()}


def _unchanged(paths: Paths, settings: AppSettings, why: str) -> dict[str, Any]:
    policy, version = current_policy(paths, settings)
    w = rounded(policy.blend_weights)
    return {"sampled": None, "configured": rounded(settings.policy.blend_weights),
            "weights_before": w, "weights_after": w, "max_change": 0.0,
            "version": "unchanged", "policy_before": version, "why": why, "diff": ""}


def _sample_and_apply(paths: Paths, settings: AppSettings, day: str,
                      posteriors: Mapping[str, NIG], at: str) -> dict[str, Any]:
    cfg = settings.trust
    draws = thompson_draws(posteriors, session_rng(cfg.seed, day))
    configured = dict(settings.policy.blend_weights)
    drift = settings.escalation.bounds.blend_weight_max_drift
    weights = rounded_to_total(trust_weights(
        configured, {s: d["mean"] for s, d in draws.items()},
        {s: p.n for s, p in posteriors.items()}, shrink=cfg.shrink_kappa,
        temperature=cfg.temperature, drift=drift), configured, drift)
    with policy_lock(paths):  # read and change the version in force as one step
        policy, before = current_policy(paths, settings)
        old = rounded(policy.blend_weights)
        move = max(abs(weights[s] - old[s]) for s in SOURCES)
        out = {"sampled": draws, "configured": rounded(configured), "weights_before": old,
               "weights_after": weights, "max_change": round(move, 6),
               "policy_before": before}
        if move < cfg.min_change or move == 0.0:
            return {**out, "weights_after": old, "version": "unchanged", "diff": "",
                    "why": f"largest move {move:.4f} < trust.min_change {cfg.min_change:g}"}
        new = policy.replace(blend_weights=weights)
        reason = f"{REASON_PREFIX} of {day} ({_posterior_text(posteriors)})"
        store_version(paths, policy, None, "policy in force before the trust update", at)
        after = save_policy(paths, new, before, reason, at, effective=day)
        return {**out, "version": after, "effective": day, "reason": reason,
                "diff": diff_policies(policy, new, before, after)}


def _posterior_text(posteriors: Mapping[str, NIG]) -> str:
    parts = []
    for s in SOURCES:
        p = posteriors[s]
        parts.append(f"{s} mu {p.mu:+.3f} sd {p.mean_sd:.3f} n {p.n}" if p.n
                     else f"{s} no evidence")
    return "; ".join(parts)


def _line(night: dict[str, Any]) -> str:
    before, after = night.get("weights_before") or {}, night.get("weights_after") or {}
    moves = ", ".join(f"{s} {before.get(s, 0):.3f}->{after.get(s, 0):.3f}" for s in SOURCES)
    post = "; ".join(
        f"{s} mu {p['mu']:+.3f} (n {p['n']})" if p["n"] else f"{s} no evidence"
        for s, p in night["posteriors"].items())
    version = night["version"]
    what = (f"new policy {version} from the plan of {night['session']}" if version != "unchanged"
            else f"policy unchanged ({night.get('why')})")
    return (f"trust {night['session']}: {night['episodes_counted']} episode(s) counted; {post}; "
            f"weights {moves}; {what}")


def _jsonable(value: Any) -> Any:
    """Plain JSON values (numpy scalars made Python numbers, NaN made None)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

