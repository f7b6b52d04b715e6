"""The state files ``hcp state check`` lists and ``hcp state repair`` repairs: one table entry
(:class:`tasks.statefiles.StateSpec`) per kind of file, in the order they are listed.

An entry names its files and their strict reader (``probe``) and its repair, which rebuilds the
file from evidence the project holds where it can and otherwise writes the safe state
explicitly. Every repair is logged (``data/state/repairs.jsonl``) by
:func:`tasks.statefiles.run_repair`. To add a kind of file, write its probe and repair and add
one :func:`~tasks.statefiles.register_state_spec` call below.

Only light modules are imported here (the checks run before a flow starts, see
:mod:`flows.preflight`); a repair imports what else it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks import policy as pol
from tasks.escalation import budget as bud
from tasks.escalation import record as rec
from tasks.execution import overrides as ops
from tasks.execution import quarantine as qua
from tasks.models import manifests as man
from tasks.paths import Paths
from tasks.settings import AppSettings
from tasks.statefiles import (
    MISSING,
    OK,
    FileState,
    RepairRequest,
    StateFileError,
    StateSpec,
    probe,
    register_state_spec,
)


def _stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.json") if not p.name.startswith(".")} \
        if folder.is_dir() else set()


def _intact(states: list[FileState]) -> bool:
    return all(fs.state in (OK, MISSING) for fs in states)


def _need_session(request: RepairRequest, what: str) -> str:
    if not request.session:
        raise ValueError(f"repairing {what} needs --session YYYY-MM-DD")
    return request.session


def _refuse_intact(states: list[FileState], request: RepairRequest, what: str) -> None:
    if _intact(states) and not request.safe:
        raise ValueError(f"{what} reads as intact: nothing to repair (pass --safe to write the "
                         "safe state anyway)")


# --- LLM budget ------------------------------------------------------------------------------

def budget_probe(paths: Paths, settings: AppSettings, session: str | None) -> list[FileState]:
    if session is not None:
        days = [session]
    else:  # every budget file, and every session whose record shows remote attempts
        days = sorted(_stems(bud.budget_dir(paths)) | _stems(paths.reports / "escalations"))
    out = []
    for day in days:
        fs = probe("budget", bud.budget_path(paths, day), lambda d=day: bud.load_budget(paths, d),
                   bud.budget_remedy(day))
        if fs.state != MISSING or session is not None:
            out.append(fs)
    return out


def budget_repair(paths: Paths, settings: AppSettings, request: RepairRequest) -> str:
    day = _need_session(request, "a budget")
    _refuse_intact(budget_probe(paths, settings, day), request, f"the budget of {day}")
    limit = settings.escalation.max_calls_per_session
    try:
        rec.load_record(paths, day)
    except StateFileError as exc:
        raise ValueError(f"{exc}; repair the record first (it is the budget's evidence)") \
            from None
    out = bud.repair_budget(paths, day, limit, at=request.at, spent=request.safe)
    return f"budget of {day}: {out['repairs'][-1]['action']}; used {out['used']}/{limit}"


# --- escalation records (read side: evidence of the budget) ----------------------------------

def record_probe(paths: Paths, settings: AppSettings, session: str | None) -> list[FileState]:
    days = [session] if session is not None else sorted(_stems(paths.reports / "escalations"))
    out = []
    for day in days:
        fs = probe("escalation-record", rec.record_path(paths, day),
                   lambda d=day: rec.load_record(paths, d), rec.record_remedy(day))
        if fs.state != MISSING or session is not None:
            out.append(fs)
    return out


def record_repair(paths: Paths, settings: AppSettings, request: RepairRequest) -> str:
    """Move a damaged record aside; a budget it leaves without evidence is written spent."""
    day = _need_session(request, "an escalation record")
    states = record_probe(paths, settings, day)
    if _intact(states):
        raise ValueError(f"the escalation record of {day} reads as intact: nothing to repair")
    path = rec.record_path(paths, day)
    aside = path.parent / "damaged" / f"{path.name}.{request.at.replace(':', '')}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    path.replace(aside)
    how = f"record of {day} moved aside to {aside}"
    try:
        intact_budget = bud.load_budget(paths, day) is not None
    except StateFileError:
        intact_budget = False
    if not intact_budget:
        limit = settings.escalation.max_calls_per_session
        bud.repair_budget(paths, day, limit, at=request.at, spent=True)
        how += f"; its budget written spent ({limit}/{limit})"
    return how


# --- quarantine ------------------------------------------------------------------------------

def quarantine_probe(paths: Paths, settings: AppSettings, session: str | None
                     ) -> list[FileState]:
    return [probe("quarantine", qua.quarantine_path(paths), lambda: qua.read_state(paths),
                  qua.REMEDY)]


def _book_session(paths: Paths, settings: AppSettings) -> str:
    """The book's session (the quarantine's safe start), else the last session before today."""
    import pandas as pd

    from tasks.data.calendar import previous_session
    from tasks.operator.status import book_session

    day = book_session(paths)
    if day:
        return day
    today = pd.Timestamp.now().normalize()
    return previous_session(settings.data.calendar, today - pd.Timedelta(days=1)).date().isoformat()


def quarantine_repair(paths: Paths, settings: AppSettings, request: RepairRequest) -> str:
    _refuse_intact(quarantine_probe(paths, settings, None), request, "the quarantine file")
    start = request.session or _book_session(paths, settings)
    if request.safe:
        # no replay of evidence: an explicit active quarantine from the session
        _state, how = _safe_quarantine(paths, settings, request.at, start)
        return how
    _state, how = qua.rebuild_state(paths, settings, at=request.at, safe_session=start)
    return how


def _safe_quarantine(paths: Paths, settings: AppSettings, at: str, start: str
                     ) -> tuple[dict[str, Any], str]:
    state, how = qua.rebuild_state(paths, settings, at=at, safe_session=start)
    if qua.status(state, _next(settings, start), _after(settings)).active:
        return state, how
    # the evidence left no quarantine in force: write one explicitly, as asked
    rules = qua.Rules.of(settings)
    state["quarantine"] = {"start": start, "sessions": rules.quarantine_sessions,
                           "cleared": None, "kill_days": [],
                           "repaired": {"at": at, "reason": "safe state asked for"}}
    state["history"].append({"event": "activated", "session": start, "at": at,
                             "kill_days": [], "sessions": rules.quarantine_sessions,
                             "repair": True})
    with qua.state_lock(paths):
        qua.save_state(paths, state)
    return state, (f"{how}; quarantine written active from {start} "
                   f"({rules.quarantine_sessions} sessions)")


def _next(settings: AppSettings, day: str) -> str:
    import pandas as pd

    from tasks.data.calendar import sessions

    later = sessions(settings.data.calendar, pd.Timestamp(day) + pd.Timedelta(days=1),
                     pd.Timestamp(day) + pd.Timedelta(days=14))
    return later[0].date().isoformat()


def _after(settings: AppSettings):
    from tasks.execution.sessions import sessions_after

    return sessions_after(settings.data.calendar)


# --- operator overrides ----------------------------------------------------------------------

def operator_probe(paths: Paths, settings: AppSettings, session: str | None) -> list[FileState]:
    return [probe("operator", ops.operator_path(paths), lambda: ops.read_overrides(paths),
                  ops.REMEDY)]


def operator_repair(paths: Paths, settings: AppSettings, request: RepairRequest) -> str:
    _refuse_intact(operator_probe(paths, settings, None), request, "the operator file")
    ops.repair_overrides(paths, by=request.by, reason=request.reason, at=request.at)
    return "forced demo written explicitly (lift it with `hcp state lift-demo`)"


# --- policy ----------------------------------------------------------------------------------

def policy_probe(paths: Paths, settings: AppSettings, session: str | None) -> list[FileState]:
    folder = pol.policy_dir(paths)
    hist = folder / "history.jsonl"
    out = [probe("policy", hist, lambda: pol.history_current(paths))]

    def pointer() -> None:
        version = pol.read_pointer(paths)
        if version is not None:
            pol.read_version(paths, version, from_pointer=True)

    out.append(probe("policy", folder / "current.json", pointer, pol.REMEDY))
    for path in sorted(folder.glob("pol-*.json")) if folder.is_dir() else []:
        out.append(probe("policy", path, lambda p=path: pol.read_version_file(p)))
    return out


def policy_repair(paths: Paths, settings: AppSettings, request: RepairRequest) -> str:
    if _intact(policy_probe(paths, settings, None)) and not request.target:
        raise ValueError("the policy files read as intact: nothing to repair (to change the "
                         "version in force use `hcp policy rollback`)")
    _version, how = pol.repair_pointer(paths, settings, at=request.at, reason=request.reason,
                                       version=request.target)
    return how


# --- model registry and the slotted baselines' manifests and cut points -----------------------

def registry_probe(paths: Paths, settings: AppSettings, session: str | None) -> list[FileState]:
    return [probe("registry", man.registry_path(paths), lambda: man.read_registry_file(paths),
                  "written by `hcp promote`")]


def registry_repair(paths: Paths, settings: AppSettings, request: RepairRequest) -> str:
    _refuse_intact(registry_probe(paths, settings, None), request, "the registry")
    return man.repair_registry(paths, at=request.at)


def model_probe(paths: Paths, settings: AppSettings, session: str | None) -> list[FileState]:
    try:
        registry = man.read_registry_file(paths)
    except StateFileError:
        return []  # the registry's own entry names it
    out = []
    for bid in dict.fromkeys(b for b in (registry.get("active"), registry.get("shadow")) if b):
        out.append(probe("model", man.manifest_path(paths, bid),
                         lambda b=bid: man.read_manifest_file(paths, b, needs=("horizons",))))
        out.append(probe("model", man.cuts_path(paths, bid),
                         lambda b=bid: man.read_cuts_file(paths, b)))
    return out


def model_repair(paths: Paths, settings: AppSettings, request: RepairRequest) -> str:
    if not request.target:
        raise ValueError("repairing a model needs --id BASELINE")
    return man.unslot_baseline(paths, request.target, at=request.at, reason=request.reason)


# --- rollback guard cooldown (tasks.models.rollback; light: pydantic, the calendar) ----------

def guard_probe(paths: Paths, settings: AppSettings, session: str | None) -> list[FileState]:
    from tasks.models import rollback as rb

    return [probe("rollback-guard", rb.guard_path(paths), lambda: rb.read_guard_state(paths),
                  "written by the nightly run's rollback guard at its first rollback")]


def guard_repair(paths: Paths, settings: AppSettings, request: RepairRequest) -> str:
    from tasks.models import rollback as rb

    _refuse_intact(guard_probe(paths, settings, None), request, "the rollback guard file")
    return rb.rebuild_guard_state(paths, settings, at=request.at)


# --- trust in the blend's sources (tasks.plan.trust; light: pydantic, numpy, pandas) ----------

def trust_probe(paths: Paths, settings: AppSettings, session: str | None) -> list[FileState]:
    from tasks.plan import trust as tru

    return [probe("trust", tru.trust_path(paths), lambda: tru.read_state(paths),
                  "written by the nightly run once it counts a closed episode")]


def trust_repair(paths: Paths, settings: AppSettings, request: RepairRequest) -> str:
    from tasks.plan import trust as tru

    _refuse_intact(trust_probe(paths, settings, None), request, "the trust state")
    return tru.repair_state(paths, request.at)


register_state_spec(StateSpec(
    "budget", "remote LLM calls spent per session (data/state/llm_budget/<D>.json)",
    budget_probe, budget_repair, "--session D [--safe: count it spent]"))
register_state_spec(StateSpec(
    "escalation-record", "escalation calls per session (reports/escalations/<D>.json)",
    record_probe, record_repair, "--session D"))
register_state_spec(StateSpec(
    "quarantine", "kill-switch days, quarantine and cool-off (data/state/quarantine.json)",
    quarantine_probe, quarantine_repair, "[--session D: start of a safe quarantine] [--safe]"))
register_state_spec(StateSpec(
    "operator", "operator overrides: forced demo (data/state/operator.json)",
    operator_probe, operator_repair, "[--safe]"))
register_state_spec(StateSpec(
    "policy", "policy versions, pointer and history (data/state/policy/)",
    policy_probe, policy_repair, "[--version V]"))
register_state_spec(StateSpec(
    "registry", "model registry slots (models/registry/manifest.json)",
    registry_probe, registry_repair, "[--safe]"))
register_state_spec(StateSpec(
    "model", "manifest and regime cuts of the slotted baselines (models/<id>/)",
    model_probe, model_repair, "--id BASELINE"))
register_state_spec(StateSpec(
    "rollback-guard", "model rollback cooldown (models/registry/rollback_guard.json)",
    guard_probe, guard_repair, "[--safe]"))
register_state_spec(StateSpec(
    "trust", "posteriors of the blend's sources and the counted episodes (data/state/trust.json)",
    trust_probe, trust_repair, "[--safe: move an intact file aside too]"))

# --- the book, the kill switch and the session records (tasks.execution.ledger) --------------

from tasks.execution import ledger as _book  # noqa: E402  (light: pydantic, the calendar)

for _spec in _book.book_specs():
    register_state_spec(_spec)
