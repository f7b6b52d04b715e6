"""The rollback guard: the active slot goes back to its predecessor when the active model is
worse.

The **predecessor** is the baseline that was active before the current one: the ``from`` of
the registry history's last promotion into the active slot whose ``to`` is the current active
model (earlier rollbacks and repairs are not promotions and are skipped, so a model that was
rolled back to is never reverted to the model it replaced). None: nothing to revert to, and
the result says so.

The guard acts, for session D, when either:

a. **win rate**: the active model trails its predecessor's win rate (BUY names, plan horizon)
   by more than ``shadow.win_rate_delta``, both with at least ``shadow.min_samples`` closed
   outcomes. The predecessor is scored the way the shadow is: only when it holds the shadow
   slot does the nightly comparison (:mod:`tasks.models.shadow`) have its figures; otherwise
   the result notes "predecessor not scored" and the guard acts on drift alone;
b. **drift**: the PSI or the KS statistic of the active model's recent calibrated P(win)
   against its reference (its first sessions in the slot, see
   :func:`tasks.models.shadow.active_drift`) is above ``shadow.psi_limit`` / ``shadow.ks_limit``.

A figure exactly at its limit does not act. Acting: the registry's active slot is set to the
predecessor with a history entry (``event: "rollback"``, the reason and the figures), written
with :func:`tasks.models.manifests.write_registry`; then the cooldown is stored in
``models/registry/rollback_guard.json`` (``last_action_session``, ``until_session``: the
``shadow.cooldown_sessions``-th session after the action) and the ``model_rollback`` alert is
raised. Until the nightly run of ``until_session`` included, the guard reports ``cooldown`` and
does not act again. The shadow slot is left as it is.

A damaged guard file is not read as "no cooldown": the guard does not act and says why
(``hcp state repair rollback-guard`` rebuilds it from the registry's history).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from tasks.models.manifests import read_registry_file, write_registry
from tasks.paths import Paths
from tasks.statefiles import StateFileError, load_json_state

#: Figures closer than this to their limit count as at the limit (float noise, e.g. 0.55 - 0.5).
EPS = 1e-9
GUARD_REMEDY = ("repair it with `hcp state repair rollback-guard --by NAME --reason TEXT` "
                "(rebuilds the cooldown from the registry's rollback history); until then the "
                "guard does not act")

ROLLBACK, HOLD, COOLDOWN, NO_PREDECESSOR, NO_ACTIVE, DAMAGED = (
    "rollback", "hold", "cooldown", "no_predecessor", "no_active", "guard_state_damaged")


class GuardStateFile(BaseModel):
    """``models/registry/rollback_guard.json``: the last rollback and its cooldown."""

    model_config = ConfigDict(extra="forbid")
    last_action_session: str | None
    until_session: str | None
    reverted_from: str | None = None
    reverted_to: str | None = None
    at: str | None = None
    reason: str | None = None
    repaired: dict[str, Any] | None = None


@dataclass
class GuardResult:
    """What the guard decided for one session, and why."""

    session: str
    verdict: str
    acted: bool = False
    active: str | None = None
    predecessor: str | None = None
    triggers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    cooldown: dict[str, Any] | None = None
    alert: dict[str, Any] | None = None

    def line(self) -> str:
        """One line for the log."""
        head = {ROLLBACK: f"ROLLBACK {self.active} -> {self.predecessor}",
                HOLD: f"hold {self.active}",
                COOLDOWN: f"cooldown until {(self.cooldown or {}).get('until_session')}, "
                          f"not acting on {self.active}",
                NO_PREDECESSOR: f"no predecessor of {self.active} to revert to",
                NO_ACTIVE: "no active model",
                DAMAGED: "guard state damaged, not acting"}.get(self.verdict, self.verdict)
        parts = [head] + [f"trigger: {t}" for t in self.triggers] + self.notes
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "line": self.line()}


# --------------------------------------------------------------------------- state file

def guard_path(paths: Paths) -> Path:
    return paths.models / "registry" / "rollback_guard.json"


def read_guard_state(paths: Paths) -> dict[str, Any] | None:
    """The guard's state (None before the first rollback; StateFileError when damaged)."""
    found = load_json_state(guard_path(paths), GuardStateFile, remedy=GUARD_REMEDY)
    return found.model_dump() if found is not None else None


def write_guard_state(paths: Paths, state: dict[str, Any]) -> Path:
    from tasks.io import atomic_write_json

    GuardStateFile.model_validate(state)
    return atomic_write_json(guard_path(paths), state)


def cooldown_until(settings: Any, day: str) -> str:
    """The ``shadow.cooldown_sessions``-th session after ``day`` (``day`` itself for 0)."""
    from tasks.data.calendar import sessions

    n = settings.shadow.cooldown_sessions
    if n == 0:
        return day
    start = pd.Timestamp(day) + pd.Timedelta(days=1)
    later = sessions(settings.data.calendar, start, start + pd.Timedelta(days=2 * n + 14))
    return later[n - 1].date().isoformat()


def rebuild_guard_state(paths: Paths, settings: Any, *, at: str) -> str:
    """Rewrite the guard file from the registry's last rollback entry (none: no cooldown)."""
    history = read_registry_file(paths).get("history", [])
    last = next((e for e in reversed(history) if e.get("event") == ROLLBACK), None)
    if last is None or not last.get("session"):
        write_guard_state(paths, {"last_action_session": None, "until_session": None,
                                  "repaired": {"at": at, "from": "registry history"}})
        return "no rollback in the registry's history: no cooldown"
    until = cooldown_until(settings, last["session"])
    write_guard_state(paths, {"last_action_session": last["session"], "until_session": until,
                              "reverted_from": last.get("from"), "reverted_to": last.get("to"),
                              "at": last.get("at"), "reason": last.get("reason"),
                              "repaired": {"at": at, "from": "registry history"}})
    return f"cooldown rebuilt from the rollback of {last['session']}: until {until}"


# --------------------------------------------------------------------------- the guard

def predecessor_of(registry: dict[str, Any]) -> str | None:
    """The baseline active before the current one (see the module's text), or None."""
    active = registry.get("active")
    if not active:
        return None
    for entry in reversed(registry.get("history") or []):
        if (entry.get("slot") == "active" and entry.get("to") == active
                and entry.get("event") != ROLLBACK and not entry.get("repair")):
            before = entry.get("from")
            return before if before and before != active else None
    return None


def _win_rate_check(comparison: dict[str, Any], active: str, predecessor: str | None,
                    settings: Any, res: GuardResult) -> None:
    cfg = settings.shadow
    if predecessor is None:
        res.notes.append("win rate not checked: no predecessor")
        return
    if comparison.get("shadow_id") != predecessor or comparison.get("active_id") != active:
        res.notes.append(f"predecessor not scored ({predecessor} is not the compared shadow "
                         "model): drift only")
        return
    outcomes = comparison.get("outcomes") or {}
    act, pre = outcomes.get("active") or {}, outcomes.get("shadow") or {}
    n_a, n_p = int(act.get("closed") or 0), int(pre.get("closed") or 0)
    res.figures["win_rate"] = {"active": act.get("win_rate"), "predecessor": pre.get("win_rate"),
                               "closed_active": n_a, "closed_predecessor": n_p,
                               "limit": cfg.win_rate_delta, "min_samples": cfg.min_samples}
    if n_a < cfg.min_samples or n_p < cfg.min_samples:
        res.notes.append(f"win rate not judged: {n_a} / {n_p} closed outcomes "
                         f"(active / predecessor), {cfg.min_samples} needed each")
        return
    trail = float(pre["win_rate"]) - float(act["win_rate"])
    res.figures["win_rate"]["trail"] = trail
    if trail > cfg.win_rate_delta + EPS:
        res.triggers.append(f"win rate {act['win_rate']:.3f} trails predecessor "
                            f"{pre['win_rate']:.3f} by {trail:.3f} > {cfg.win_rate_delta}")


def _drift_check(comparison: dict[str, Any], active: str, settings: Any,
                 res: GuardResult) -> None:
    cfg = settings.shadow
    drift = comparison.get("drift") or {}
    if drift.get("model") not in (None, active):
        res.notes.append(f"drift not judged: measured on {drift.get('model')}, not {active}")
        return
    psi, ks = drift.get("psi"), drift.get("ks")
    res.figures["drift"] = {"psi": psi, "ks": ks, "psi_limit": cfg.psi_limit,
                            "ks_limit": cfg.ks_limit}
    if psi is None and ks is None:
        res.notes.append(f"drift not judged: {drift.get('reason', 'no figures')}")
        return
    if psi is not None and psi > cfg.psi_limit + EPS:
        res.triggers.append(f"score PSI {psi:.3f} > {cfg.psi_limit}")
    if ks is not None and ks > cfg.ks_limit + EPS:
        res.triggers.append(f"score KS {ks:.3f} > {cfg.ks_limit}")


def guard(paths: Paths, settings: Any, day: str | pd.Timestamp,
          comparison_of_active_vs_predecessor: dict[str, Any], *,
          at: str | None = None) -> GuardResult:
    """Judge the active model for session ``day`` and revert it when it is worse (see the
    module's text). ``comparison_of_active_vs_predecessor``: a comparison as
    :func:`tasks.models.shadow.live_comparison` returns it (``active_id``, ``shadow_id``,
    ``outcomes``, ``drift``)."""
    from tasks.alerts import raise_alert

    day = pd.Timestamp(day).date().isoformat()
    at = at or pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
    comparison = comparison_of_active_vs_predecessor or {}
    reg = read_registry_file(paths)
    active = reg.get("active")
    if not active:
        return GuardResult(day, NO_ACTIVE)
    pred = predecessor_of(reg)
    res = GuardResult(day, HOLD, active=active, predecessor=pred)
    _win_rate_check(comparison, active, pred, settings, res)
    _drift_check(comparison, active, settings, res)
    if not res.triggers:
        return res
    if pred is None:
        res.verdict = NO_PREDECESSOR
        res.notes.append("no predecessor in the registry's history: nothing to revert to")
        return res
    if not (paths.models / pred / "manifest.json").is_file():
        res.verdict = NO_PREDECESSOR
        res.notes.append(f"predecessor {pred} has no baseline on disk: nothing to revert to")
        return res
    try:
        state = read_guard_state(paths)
    except StateFileError as exc:
        res.verdict = DAMAGED
        res.notes.append(str(exc))
        return res
    if state and state.get("until_session") and day <= state["until_session"]:
        res.verdict = COOLDOWN
        res.cooldown = {k: state.get(k) for k in ("last_action_session", "until_session")}
        return res
    reason = "; ".join(res.triggers)
    reg["history"].append({"slot": "active", "from": active, "to": pred, "at": at,
                           "event": ROLLBACK, "session": day, "by": "rollback-guard",
                           "reason": reason, "figures": res.figures})
    reg["active"] = pred
    write_registry(paths, reg)
    until = cooldown_until(settings, day)
    write_guard_state(paths, {"last_action_session": day, "until_session": until,
                              "reverted_from": active, "reverted_to": pred, "at": at,
                              "reason": reason})
    res.verdict, res.acted = ROLLBACK, True
    res.cooldown = {"last_action_session": day, "until_session": until}
    res.alert = raise_alert(paths, "model_rollback", session=day, at=at, level="ERROR",
                            key=active, data={"from_id": active, "to_id": pred,
                                              "reason": reason, "until": until})
    return res


# --------------------------------------------------------------------------- the nightly step

def nightly_check(paths: Paths, settings: Any, day: str | pd.Timestamp, bars: pd.DataFrame,
                  lookback_sessions: int = 60, *, at: str | None = None) -> dict[str, Any]:
    """The nightly step for session ``day``: compare shadow and active
    (:func:`tasks.models.shadow.live_comparison`, outcomes labelled from ``bars``), run the
    guard, write ``reports/nightly/shadow/<D>.json`` with the guard's verdict under ``guard``,
    and return it (``line``: the verdict in one line)."""
    from tasks.models import shadow as sh

    day = pd.Timestamp(day).date().isoformat()
    outcomes = sh.label_outcomes(bars, settings)
    comparison = sh.live_comparison(paths, settings, day, outcomes, lookback_sessions)
    result = guard(paths, settings, day, comparison, at=at)
    comparison["guard"] = result.to_dict()
    comparison["line"] = _summary_line(comparison, result)
    comparison["path"] = str(sh.write_comparison(paths, day, comparison))
    return comparison


def _summary_line(comparison: dict[str, Any], result: GuardResult) -> str:
    o = comparison.get("outcomes") or {}

    def wr(side: dict[str, Any]) -> str:
        rate = side.get("win_rate")
        return f"{rate:.3f} (n={side.get('closed', 0)})" if rate is not None else "n/a"

    scores = comparison.get("scores") or {}
    psi = scores.get("psi")
    return (f"shadow {comparison.get('shadow_id')} vs active {comparison.get('active_id')}: "
            f"win rate {wr(o.get('shadow') or {})} vs {wr(o.get('active') or {})}, "
            f"score PSI {'n/a' if psi is None else f'{psi:.3f}'}; guard: {result.line()}")
