"""Baselines on disk and the registry of active / shadow slots.

``models/<baseline_id>/``: ``ensemble_<horizon>.joblib``, ``calibrators_<horizon>.joblib``,
``payoff_<horizon>.joblib``, ``ranker_<horizon>.joblib``, ``regime_cuts.json`` and
``manifest.json`` (id, created_at, feature-schema hash, data hash, config hash, training span,
thresholds, metrics).
``models/registry/manifest.json`` holds ``{"active": id, "shadow": id, "history": [...]}``.

Both manifests and the cut points are read strictly (:mod:`tasks.models.manifests`): a damaged
file is a :class:`~tasks.statefiles.StateFileError` naming it, never a default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from tasks.features.regimes import VolRegimeCuts
from tasks.io import atomic_write, atomic_write_json
from tasks.models.manifests import (
    read_cuts_file,
    read_manifest_file,
    read_registry_file,
    registry_path,
    write_registry,
)
from tasks.models.skill import SKILLED, skill_of
from tasks.models.train import HorizonModel
from tasks.paths import Paths

SLOTS = ("active", "shadow")


class RegistryError(RuntimeError):
    """A baseline or slot does not exist, or a model does not fit the data."""


@dataclass
class Baseline:
    """A loaded baseline: per-horizon models, regime cut points and the manifest."""

    baseline_id: str
    manifest: dict[str, Any]
    models: dict[str, HorizonModel]
    cuts: VolRegimeCuts


def baseline_dir(paths: Paths, baseline_id: str) -> Path:
    return paths.models / baseline_id


def save_baseline(paths: Paths, baseline_id: str, models: dict[str, HorizonModel],
                  cuts: VolRegimeCuts, manifest: dict[str, Any]) -> Path:
    """Write the model files first and the manifest last (a manifest means a complete baseline)."""
    folder = baseline_dir(paths, baseline_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name, hm in models.items():
        atomic_write(folder / f"ensemble_{name}.joblib", lambda t, m=hm: joblib.dump(m.ensemble, t))
        atomic_write(folder / f"calibrators_{name}.joblib",
                     lambda t, m=hm: joblib.dump(m.calibrators, t))
        if hm.payoff is not None:
            atomic_write(folder / f"payoff_{name}.joblib",
                         lambda t, m=hm: joblib.dump(m.payoff, t))
        if hm.ranker is not None:
            atomic_write(folder / f"ranker_{name}.joblib",
                         lambda t, m=hm: joblib.dump(m.ranker, t))
    atomic_write_json(folder / "regime_cuts.json", cuts.to_dict())
    atomic_write_json(folder / "manifest.json", manifest)
    return folder


def load_baseline(paths: Paths, baseline_id: str) -> Baseline:
    """Load a baseline saved by :func:`save_baseline`."""
    folder = baseline_dir(paths, baseline_id)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        known = ", ".join(list_baselines(paths)) or "none"
        raise RegistryError(f"no baseline {baseline_id!r} under {paths.models} (known: {known})")
    manifest = read_manifest_file(paths, baseline_id, needs=("horizons",)) or {}
    cuts = VolRegimeCuts(**read_cuts_file(paths, baseline_id))
    models = {}
    for name, h in manifest["horizons"].items():
        head, ranker = folder / f"payoff_{name}.joblib", folder / f"ranker_{name}.joblib"
        models[name] = HorizonModel(name, h, joblib.load(folder / f"ensemble_{name}.joblib"),
                                    joblib.load(folder / f"calibrators_{name}.joblib"),
                                    joblib.load(head) if head.is_file() else None,
                                    joblib.load(ranker) if ranker.is_file() else None)
    return Baseline(baseline_id, manifest, models, cuts)


def list_baselines(paths: Paths) -> list[str]:
    """Ids of complete baselines (those with a manifest)."""
    if not paths.models.is_dir():
        return []
    return sorted(p.parent.name for p in paths.models.glob("*/manifest.json")
                  if p.parent.name != "registry")


def _registry_path(paths: Paths) -> Path:
    return registry_path(paths)


def read_registry(paths: Paths) -> dict[str, Any]:
    """The registry (empty slots when none exists yet; StateFileError when damaged)."""
    return read_registry_file(paths)


class SkillGateError(RegistryError):
    """A baseline without measured skill was asked into the active slot without an override."""


class GateError(RegistryError):
    """A baseline whose newest backtest gates fail, or that has none, was asked into the active
    slot without an override."""


BACKTEST_GATES = "gates.json"
OVERRIDE_HINT = 'override with --force --reason "..." (logged)'


@dataclass(frozen=True)
class GateCheck:
    """The newest backtest gates of a baseline: whether they pass, the failed gate names (or
    ``["backtest_gates_missing"]``), the file they came from and one line of explanation."""

    passed: bool
    failed: list[str]
    path: Path | None
    message: str


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _when(value: Any) -> datetime:
    """A ``computed_at`` as an aware datetime (the epoch when absent or malformed)."""
    try:
        out = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return out if out.tzinfo else out.replace(tzinfo=UTC)


def newest_backtest_gates(paths: Paths, baseline_id: str) -> tuple[Path | None, dict | None]:
    """The newest ``reports/backtest/*/gates.json`` whose ``baseline_id`` is this baseline (by
    ``computed_at``, then by file time); ``(None, None)`` when there is none. Unreadable files
    are skipped."""
    root = paths.reports / "backtest"
    found: list[tuple[datetime, float, Path, dict]] = []
    for path in root.glob(f"*/{BACKTEST_GATES}") if root.is_dir() else ():
        data = _read_json(path)
        if data is None or data.get("baseline_id") != baseline_id:
            continue
        found.append((_when(data.get("computed_at")), path.stat().st_mtime, path, data))
    if not found:
        return None, None
    _, _, path, data = max(found, key=lambda t: (t[0], t[1]))
    return path, data


def _figure(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _failed_gate_text(gate: dict[str, Any]) -> str:
    name = str(gate.get("name", "?"))
    note = " ".join(str(gate.get("note") or "").split())
    if gate.get("value") is None:
        return f"{name} not computable ({note.removeprefix('not computable: ') or 'no value'})"
    text = f"{name} {_figure(gate['value'])} (needs {gate.get('op', '?')} " \
           f"{_figure(gate.get('threshold'))})"
    if note and "too few" in note:
        text += f" [{note}]"
    return text


def check_backtest_gates(paths: Paths, baseline_id: str) -> GateCheck:
    """Judge a baseline by its newest backtest gates (plain JSON, written by the backtest)."""
    path, data = newest_backtest_gates(paths, baseline_id)
    if data is None:
        return GateCheck(False, ["backtest_gates_missing"], None,
                         f"no backtest gates for baseline {baseline_id}: run `hcp backtest "
                         "--start S --end E` first")
    gates = [g for g in data.get("gates") or [] if isinstance(g, dict)]
    failed = [g for g in gates if g.get("passed") is not True]
    if failed or data.get("passed") is not True or not gates:
        where = path.relative_to(paths.home) if path.is_relative_to(paths.home) else path
        figures = "; ".join(_failed_gate_text(g) for g in failed) or "no gate passed"
        return GateCheck(False, [str(g.get("name", "?")) for g in failed] or ["gates"], path,
                         f"baseline {baseline_id} fails its backtest gates ({where}, computed "
                         f"{data.get('computed_at', '?')}): {figures}")
    return GateCheck(True, [], path, f"baseline {baseline_id} passes its backtest gates ({path})")


def backtest_gate_refusal(paths: Paths, baseline_id: str) -> str | None:
    """``None`` when the baseline's newest backtest gates pass, else why not in one line."""
    check = check_backtest_gates(paths, baseline_id)
    return None if check.passed else check.message


def promote(paths: Paths, baseline_id: str, slot: str, when: str, *, force: bool = False,
            reason: str | None = None, by: str | None = None) -> dict[str, Any]:
    """Put a baseline into a slot; the previous holder is kept in the history.

    The ``active`` slot takes a baseline only when its skill verdict (``manifest["skill"]``, see
    :mod:`tasks.models.skill`) is ``skilled`` and its newest backtest gates
    (``reports/backtest/*/gates.json``) pass; otherwise only with ``force`` and a ``reason``.
    The one override covers both: who, when, why, the verdict and the failed gate names are
    recorded in the history entry. The skill gate is judged first (:class:`SkillGateError`),
    then the backtest gates (:class:`GateError`). The ``shadow`` slot never trades and takes
    any baseline.
    """
    if slot not in SLOTS:
        raise RegistryError(f"slot must be one of {SLOTS}, not {slot!r}")
    load_manifest = baseline_dir(paths, baseline_id) / "manifest.json"
    if not load_manifest.is_file():
        raise RegistryError(f"no baseline {baseline_id!r} to promote")
    entry: dict[str, Any] = {"slot": slot, "from": None, "to": baseline_id, "at": when}
    if slot == "active":
        overridden: dict[str, Any] = {}
        verdict = skill_of(read_manifest_file(paths, baseline_id) or {})["verdict"]
        if verdict != SKILLED:
            overridden["skill_verdict"] = verdict
        gates = check_backtest_gates(paths, baseline_id)
        if not gates.passed:
            overridden["failed_gates"] = gates.failed
        if overridden and (not force or not (reason or "").strip()):
            if "skill_verdict" in overridden:
                raise SkillGateError(
                    f"baseline {baseline_id} has skill verdict {verdict!r} (no measured skill "
                    f"at the plan horizon): not promoted to active; {OVERRIDE_HINT}")
            raise GateError(f"{gates.message}; not promoted to active; {OVERRIDE_HINT}")
        if overridden:
            entry.update(forced=True, **overridden, reason=reason.strip(), by=by or "unknown")
    reg = read_registry(paths)
    entry["from"] = reg.get(slot)
    reg["history"].append(entry)
    reg[slot] = baseline_id
    write_registry(paths, reg)
    return reg
