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

from dataclasses import dataclass
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


def promote(paths: Paths, baseline_id: str, slot: str, when: str, *, force: bool = False,
            reason: str | None = None, by: str | None = None) -> dict[str, Any]:
    """Put a baseline into a slot; the previous holder is kept in the history.

    The ``active`` slot takes a baseline whose skill verdict (``manifest["skill"]``, see
    :mod:`tasks.models.skill`) is not ``skilled`` only with ``force`` and a ``reason``; the
    override (who, when, why, the verdict) is recorded in the history entry.
    """
    if slot not in SLOTS:
        raise RegistryError(f"slot must be one of {SLOTS}, not {slot!r}")
    load_manifest = baseline_dir(paths, baseline_id) / "manifest.json"
    if not load_manifest.is_file():
        raise RegistryError(f"no baseline {baseline_id!r} to promote")
    entry: dict[str, Any] = {"slot": slot, "from": None, "to": baseline_id, "at": when}
    if slot == "active":
        verdict = skill_of(read_manifest_file(paths, baseline_id) or {})["verdict"]
        if verdict != SKILLED:
            if not force or not (reason or "").strip():
                raise SkillGateError(
                    f"baseline {baseline_id} has skill verdict {verdict!r} (no measured skill "
                    "at the plan horizon): not promoted to active; override with --force "
                    "--reason \"...\" (logged)")
            entry.update(forced=True, skill_verdict=verdict, reason=reason.strip(),
                         by=by or "unknown")
    reg = read_registry(paths)
    entry["from"] = reg.get(slot)
    reg["history"].append(entry)
    reg[slot] = baseline_id
    write_registry(paths, reg)
    return reg
