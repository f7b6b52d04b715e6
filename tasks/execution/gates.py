"""Live-mode gates, broker adapters and the go-live stages' tightened risk settings.

Live execution needs every gate at once:

1. ``REAL_EXECUTION_ENABLED=true`` in the environment;
2. ``execution.live_enabled: true`` in the configuration;
3. no quarantine or kill-switch cool-off in force for the session (the
   :class:`~tasks.execution.protections.Quarantine` protection);
4. a broker adapter configured (``execution.broker_adapter``) and registered in
   :data:`ADAPTERS`. No live adapter is shipped: an adapter implements
   :class:`tasks.execution.broker.Broker` (the paper broker is the reference implementation);
5. the active model has measured skill (skill verdict ``skilled``, see
   :mod:`tasks.models.skill`) while ``models.skill.live_requires_skill`` is true (default):
   a ``no_skill`` or ``unknown`` (trained before the gate) active model fails it.

:func:`live_gates` gathers the facts; whether live is refused is the
:class:`~tasks.execution.protections.LiveGates` protection's answer (:func:`require_live`).

A go-live stage (``execution.go_live_stage``) replaces ``risk`` by a copy whose bucket and
per-name caps are scaled by the stage's multipliers (<= 1) and whose shorts are off unless both
allow them; the copy is validated like any RiskSettings (it can only be tighter) and handed to
the unchanged clamp functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tasks.execution import quarantine
from tasks.execution.broker import Broker
from tasks.execution.overrides import operator_overrides
from tasks.execution.protections import LiveGates, ProtectionView, Quarantine
from tasks.execution.sessions import sessions_after
from tasks.models.skill import SKILLED, active_skill, headline
from tasks.paths import Paths
from tasks.settings import AppSettings
from tasks.trading_settings import BUCKETS, RiskSettings

ENV_FLAG = "REAL_EXECUTION_ENABLED"
#: Live broker adapters by name: factory(paths, settings) -> Broker. Empty: none is shipped.
ADAPTERS: dict[str, Callable[[Paths, AppSettings], Broker]] = {}


class LiveGateError(RuntimeError):
    """Live mode was asked for while a gate does not hold."""


@dataclass(frozen=True)
class Gate:
    name: str
    ok: bool
    detail: str


def live_gates(paths: Paths, settings: AppSettings, session: str,
               env: Mapping[str, str] | None = None) -> list[Gate]:
    """Every live gate and whether it holds for ``session``."""
    env = os.environ if env is None else env
    flag = env.get(ENV_FLAG, "")
    cfg = settings.execution
    q = quarantine.status(quarantine.load_state(paths), session,
                          sessions_after(settings.data.calendar))
    held = Quarantine(settings.data.calendar).check(ProtectionView(session, quarantine=q))
    adapter = cfg.broker_adapter
    forced = operator_overrides(paths)
    return [
        Gate("env REAL_EXECUTION_ENABLED", flag.strip().lower() == "true",
             f"{ENV_FLAG}={flag!r} (must be 'true')"),
        Gate("config execution.live_enabled", cfg.live_enabled,
             f"execution.live_enabled={cfg.live_enabled}"),
        Gate("no active quarantine", not held.lock, q.describe()),
        Gate("demo not forced by an operator", not forced.get("forced_demo"),
             f"forced by {forced.get('by')}: {forced.get('reason')}" if forced.get("forced_demo")
             else "not forced"),
        Gate("broker adapter configured", bool(adapter) and adapter in ADAPTERS,
             f"execution.broker_adapter={adapter!r}; registered adapters: "
             f"{sorted(ADAPTERS) or 'none (no live adapter is shipped)'}"),
        skill_gate(paths, settings),
    ]


def skill_gate(paths: Paths, settings: AppSettings) -> Gate:
    """The active model has measured skill (or ``models.skill.live_requires_skill`` is off)."""
    bid, rec = active_skill(paths)
    verdict = rec["verdict"]
    what = (f"active baseline {bid}: verdict {verdict}" if bid else "no active baseline")
    if not settings.models.skill.live_requires_skill:
        return Gate("active model has measured skill", True,
                    f"{what}; not required (models.skill.live_requires_skill=false)")
    detail = what if verdict == SKILLED else f"{what}: {headline(rec, promoted_note='')}"
    return Gate("active model has measured skill", verdict == SKILLED,
                detail + ("" if verdict == SKILLED
                          else " (models.skill.live_requires_skill=true)"))


def require_live(paths: Paths, settings: AppSettings, session: str,
                 env: Mapping[str, str] | None = None) -> list[Gate]:
    """The gates, or :class:`LiveGateError` listing every one that does not hold."""
    gates = live_gates(paths, settings, session, env)
    lock = LiveGates().check(ProtectionView(session, gates=gates))
    if lock.lock:
        raise LiveGateError(lock.reason)
    return gates


def stage_risk(settings: AppSettings) -> RiskSettings:
    """``risk`` tightened by the configured go-live stage (unchanged for stage 'none')."""
    stage_name = settings.execution.go_live_stage
    risk = settings.risk
    if stage_name == "none":
        return risk
    stage = settings.execution.stages[stage_name]
    scale = {b: stage.cap_scale.get(b, 1.0) for b in BUCKETS}
    data = risk.model_dump()
    data["bucket_caps"] = {b: risk.cap(b) * scale[b] for b in BUCKETS}
    data["per_name"] = {b: risk.name_cap(b) * scale[b] for b in BUCKETS}
    data["allow_short"] = risk.allow_short and stage.allow_short
    return RiskSettings(**data)


def make_broker(paths: Paths, settings: AppSettings, mode: str, session: str) -> Broker:
    """The paper broker in demo mode; the configured adapter (after every gate) in live mode."""
    from tasks.execution.broker import PaperBroker
    from tasks.paths import state_dir

    if mode == "live":
        require_live(paths, settings, session)
        return ADAPTERS[settings.execution.broker_adapter](paths, settings)
    if mode != "demo":
        raise ValueError(f"mode {mode!r} is not demo or live")
    return PaperBroker(state_dir(paths) / "paper_broker" / f"{session}.jsonl",
                       settings.execution.fill, settings.guardrails.fee_pct)
