"""Bound every delta of a validated answer; record what was clipped or rejected, and why.

Pure functions: (response, policy in force, settings, known symbols) -> :class:`Bounded`, whose
``changes`` are the policy fields to replace (JSON values; :meth:`Bounded.apply` makes the new
:class:`~tasks.policy.Policy` from them, validated). Blend-weight and cap deltas are clipped to the
configured ranges and caps to the hard limits; unknown symbols and features are dropped;
reward coefficients are clipped to [0, 1] and normalised to sum 1; SANITY_JUDGE changes stay
within the hard per-name and stop limits. The result passes the hard clamps again in the plan.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from tasks.escalation.schemas import (
    RegimeAuditorResponse,
    RewardEngineerResponse,
    SanityJudgeResponse,
)
from tasks.policy import Policy
from tasks.settings import AppSettings
from tasks.trading_settings import HARD_BUCKET_CAPS, HARD_PER_NAME, HARD_STOPS, TOGGLEABLE_FEATURES

SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,11}$")


def _r(x: float) -> float:
    return round(float(x), 6)


@dataclass
class Bounded:
    """The bounded answer: policy fields to change, deltas applied, and what was cut."""

    changes: dict[str, Any] = field(default_factory=dict)
    applied: dict[str, Any] = field(default_factory=dict)
    clipped: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def clip(self, name: str, proposed: Any, applied: Any, reason: str) -> None:
        self.clipped.append({"field": name, "proposed": proposed, "applied": applied,
                             "reason": reason})

    def reject(self, name: str, proposed: Any, reason: str) -> None:
        self.rejected.append({"field": name, "proposed": proposed, "reason": reason})

    def apply(self, policy: Policy) -> Policy:
        """The policy with the changes (:class:`pydantic.ValidationError` when the result is
        not a policy)."""
        return policy.replace(**self.changes) if self.changes else policy

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "clipped": self.clipped,
                "rejected": self.rejected, "notes": self.notes}


def _clip(out: Bounded, name: str, value: float, lo: float, hi: float) -> float:
    kept = min(max(value, lo), hi)
    if kept != value:
        out.clip(name, _r(value), _r(kept), f"outside [{_r(lo)}, {_r(hi)}]")
    return kept


def bound(call_type: str, response: BaseModel, policy: Policy, settings: AppSettings,
          universe: set[str], remote: bool = True) -> Bounded:
    """Dispatch to the call type's bounding function (``remote``: the remote model answered)."""
    if isinstance(response, RegimeAuditorResponse):
        return bound_regime(response, policy, settings, universe)
    if isinstance(response, RewardEngineerResponse):
        return bound_reward(response, policy, settings)
    if isinstance(response, SanityJudgeResponse):
        return bound_sanity(response, policy, settings, remote)
    raise TypeError(f"no bounds for {call_type} answer {type(response).__name__}")


def bound_regime(resp: RegimeAuditorResponse, policy: Policy, settings: AppSettings,
                 universe: set[str]) -> Bounded:
    out = Bounded(notes={"regime_label": resp.regime_label})
    _blend(out, resp.blend_weights_delta.model_dump(), policy, settings)
    _caps(out, resp.bucket_caps_delta.model_dump(), policy, settings)
    _symbols(out, resp.do_not_trade_list, policy, settings, universe)
    return out


def _blend(out: Bounded, delta: dict[str, float], policy: Policy,
           settings: AppSettings) -> None:
    b = settings.escalation.bounds
    lim = b.blend_weight_delta
    old = {k: float(policy.blend_weights.get(k, 0.0)) for k in ("short", "mid", "rl")}
    applied = {k: _clip(out, f"blend_weights_delta.{k}", d, -lim, lim) for k, d in delta.items()}
    if not any(applied.values()):
        return
    raw = {k: max(0.0, old[k] + applied[k]) for k in old}
    if raw["short"] + raw["mid"] <= 0:
        out.reject("blend_weights_delta", delta, "would leave the predictors no weight")
        return
    total = sum(raw.values())
    mix = {k: v / total for k, v in raw.items()}
    kept = _within_drift(mix, settings.policy.blend_weights, b.blend_weight_max_drift)
    if any(abs(kept[k] - mix[k]) > 1e-6 for k in mix):
        out.clip("blend_weights", {k: _r(v) for k, v in mix.items()},
                 {k: _r(v) for k, v in kept.items()},
                 f"kept within {b.blend_weight_max_drift} of the configured mix")
    weights = {k: _r(v) for k, v in kept.items()}
    if weights != {k: _r(v) for k, v in old.items()}:
        out.changes["blend_weights"] = weights
        out.applied["blend_weights_delta"] = {k: _r(v) for k, v in applied.items()}


def _within_drift(mix: dict[str, float], configured: dict[str, float], drift: float
                  ) -> dict[str, float]:
    """The mix moved into the band ``configured share +- drift`` (clip, then spread what is
    missing or surplus over the weights with room), still summing to 1."""
    total = sum(configured.values())
    lo = {k: max(0.0, configured.get(k, 0.0) / total - drift) for k in mix}
    hi = {k: min(1.0, configured.get(k, 0.0) / total + drift) for k in mix}
    w = {k: min(max(v, lo[k]), hi[k]) for k, v in mix.items()}
    gap = 1.0 - sum(w.values())
    room = {k: (hi[k] - w[k]) if gap > 0 else (w[k] - lo[k]) for k in w}
    spare = sum(room.values())
    if abs(gap) > 1e-12 and spare > 0:
        w = {k: w[k] + gap * room[k] / spare for k in w}
    return w


def _caps(out: Bounded, delta: dict[str, float], policy: Policy,
          settings: AppSettings) -> None:
    b = settings.escalation.bounds
    lo, hi = b.bucket_cap_delta
    caps = dict(policy.bucket_caps or HARD_BUCKET_CAPS)
    applied = {}
    for k, d in delta.items():
        dd = _clip(out, f"bucket_caps_delta.{k}", d, lo, hi)
        ceiling = min(HARD_BUCKET_CAPS[k], settings.risk.cap(k))
        old = float(caps.get(k, ceiling))
        new = _clip(out, f"bucket_caps.{k}", old + dd, min(b.bucket_cap_min, ceiling), ceiling)
        if _r(new) != _r(old):
            caps[k] = _r(new)
            applied[k] = _r(new - old)
    if applied:
        out.changes["bucket_caps"] = caps
        out.applied["bucket_caps_delta"] = applied


def _symbols(out: Bounded, proposed: list[str], policy: Policy, settings: AppSettings,
             universe: set[str]) -> None:
    limit = settings.escalation.bounds.max_do_not_trade_additions
    current = list(policy.do_not_trade)
    added: list[str] = []
    for raw in proposed:
        sym = raw.strip().upper()
        if not SYMBOL.match(sym):
            out.reject("do_not_trade_list", raw[:40], "not a ticker symbol")
        elif sym not in universe:
            out.reject("do_not_trade_list", sym, "unknown symbol (not in the session's universe)")
        elif sym in current or sym in added:
            continue
        elif len(added) >= limit:
            out.reject("do_not_trade_list", sym, f"more than {limit} additions")
        else:
            added.append(sym)
    if added:
        out.changes["do_not_trade"] = sorted([*current, *added])
        out.applied["do_not_trade_added"] = sorted(added)


def bound_reward(resp: RewardEngineerResponse, policy: Policy, settings: AppSettings
                 ) -> Bounded:
    out = Bounded()
    b = settings.escalation.bounds
    coef = {k: _clip(out, f"reward_coefficients.{k}", v, 0.0, 1.0)
            for k, v in resp.reward_coefficients.model_dump().items()}
    total = sum(coef.values())
    if total <= 0:
        out.reject("reward_coefficients", resp.reward_coefficients.model_dump(),
                   "all coefficients are zero after clipping")
    else:
        norm = {k: _r(v / total) for k, v in coef.items()}
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            out.clip("reward_coefficients", {k: _r(v) for k, v in coef.items()}, norm,
                     "normalised to sum 1")
        if norm != policy.reward_coefficients:
            out.changes["reward_coefficients"] = norm
            out.applied["reward_coefficients"] = norm
    rate = _r(_clip(out, "turnover_penalties.penalty_rate", resp.turnover_penalties.penalty_rate,
                    0.0, b.turnover_penalty_max))
    if {"penalty_rate": rate} != policy.turnover_penalties:
        out.changes["turnover_penalties"] = {"penalty_rate": rate}
        out.applied["turnover_penalties"] = {"penalty_rate": rate}
    _features(out, resp.disabled_features, policy, settings)
    return out


def _features(out: Bounded, proposed: list[str], policy: Policy,
              settings: AppSettings) -> None:
    from tasks.features.build import feature_columns

    limit = settings.escalation.bounds.max_disabled_features
    model_inputs = set(feature_columns(settings))
    current = list(policy.disabled_features)
    added: list[str] = []
    for raw in proposed:
        name = raw.strip()
        if name in current or name in added:
            continue
        if name not in TOGGLEABLE_FEATURES:
            why = ("a model input: not toggleable without retraining" if name in model_inputs
                   else f"unknown feature (toggleable: {', '.join(TOGGLEABLE_FEATURES)})")
            out.reject("disabled_features", name[:40], why)
        elif len(added) >= limit:
            out.reject("disabled_features", name, f"more than {limit} toggles")
        else:
            added.append(name)
    if added:
        out.changes["disabled_features"] = sorted([*current, *added])
        out.applied["disabled_features_added"] = sorted(added)


def bound_sanity(resp: SanityJudgeResponse, policy: Policy, settings: AppSettings,
                 remote: bool = True) -> Bounded:
    """Live changes within the hard limits; leaving demo mode only on the remote model's word
    (the runbook: the remote model must explicitly clear the quarantine)."""
    out = Bounded()
    lo_pos = settings.escalation.bounds.min_position_pct
    lo_stop = settings.escalation.bounds.min_stop_atr
    live = resp.live_changes
    pct = _r(_clip(out, "live_changes.max_position_pct", live.max_position_pct, lo_pos,
                   max(HARD_PER_NAME.values())))
    atr = _r(_clip(out, "live_changes.stop_multipliers.atr", live.stop_multipliers.atr, lo_stop,
                   HARD_STOPS["initial_stop_atr"]))
    trail = _r(_clip(out, "live_changes.stop_multipliers.trailing",
                     live.stop_multipliers.trailing, lo_stop, HARD_STOPS["trailing_stop_atr"]))
    changes = {"max_position_pct": pct, "stop_multipliers": {"atr": atr, "trailing": trail}}
    if changes != policy.live_changes.model_dump(mode="json"):
        out.changes["live_changes"] = changes
        out.applied["live_changes"] = changes
    if resp.stay_demo is False and not remote:
        out.reject("stay_demo", False, "only the remote model may clear demo mode (runbook)")
    elif resp.stay_demo != policy.stay_demo:
        out.changes["stay_demo"] = resp.stay_demo
        out.applied["stay_demo"] = resp.stay_demo
    return out
