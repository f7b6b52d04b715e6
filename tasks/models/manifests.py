"""The model files read as state, strictly and cheaply (pydantic only: no model code).

- ``models/registry/manifest.json``: ``{"active", "shadow", "history"}`` (:class:`RegistryFile`);
- ``models/<id>/manifest.json``: a baseline's manifest (:class:`ModelManifest`: the keys the
  code reads are checked, the rest - metrics, calibrators, walk-forward folds - kept as is);
- ``models/<id>/regime_cuts.json``: its volatility-regime cut points (:class:`RegimeCutsFile`).

A damaged file is a :class:`~tasks.statefiles.StateFileError` naming it and its repair, never a
default: :mod:`tasks.models.registry` loads through these readers, and the command line checks
them before a flow starts (:mod:`flows.preflight`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from tasks.paths import Paths
from tasks.statefiles import StateFileError, load_json_state

REGISTRY_REMEDY = ("repair it with `hcp state repair registry --by NAME --reason TEXT` (writes "
                   "empty slots; then `hcp promote --to active --id ID`)")


def model_remedy(baseline_id: str) -> str:
    return (f"retrain (`hcp train`) and promote, or take baseline {baseline_id} out of its slot "
            f"with `hcp state repair model --id {baseline_id} --by NAME --reason TEXT`")


class RegistryEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    slot: Literal["active", "shadow"]
    at: str
    to: str | None


class RegistryFile(BaseModel):
    """``active`` is required (an emptied file is damaged, not "no model"); ``shadow`` and
    ``history`` may be absent."""

    model_config = ConfigDict(extra="forbid")
    active: str | None
    shadow: str | None = None
    history: list[RegistryEntry] = Field(default_factory=list)


class TrainingSpan(BaseModel):
    model_config = ConfigDict(extra="allow")
    start: str
    end: str


class Metrics(BaseModel):
    model_config = ConfigDict(extra="allow")
    overall: list[dict[str, Any]]


class ModelManifest(BaseModel):
    """The keys of a baseline's manifest the code reads, each of its type where present (``id``
    always; the loaders that need one of the others say so when it is absent); extra keys
    (metrics, calibrators, folds) are kept as written."""

    model_config = ConfigDict(extra="allow")
    id: str
    created_at: str | None = None
    feature_schema_hash: str | None = None
    training_span: TrainingSpan | None = None
    horizons: dict[str, int] | None = Field(None, min_length=1)
    thresholds: dict[str, Any] | None = None
    metrics: Metrics | None = None
    payoff: dict[str, Any] | None = None
    skill: dict[str, Any] | None = None


class RegimeCutsFile(BaseModel):
    """The fields of :class:`tasks.features.regimes.VolRegimeCuts`."""

    model_config = ConfigDict(extra="forbid")
    feature: str = Field(min_length=1)
    low_med: float
    med_high: float
    fit_start: str
    fit_end: str
    n_obs: NonNegativeInt

    @model_validator(mode="after")
    def _ordered(self) -> RegimeCutsFile:
        if not (math.isfinite(self.low_med) and math.isfinite(self.med_high)):
            raise ValueError("cut points must be finite")
        if self.low_med > self.med_high:
            raise ValueError(f"low_med {self.low_med} is above med_high {self.med_high}")
        return self


def registry_path(paths: Paths) -> Path:
    return paths.models / "registry" / "manifest.json"


def read_registry_file(paths: Paths) -> dict[str, Any]:
    """The registry (empty slots when none exists yet); StateFileError when damaged."""
    found = load_json_state(registry_path(paths), RegistryFile, remedy=REGISTRY_REMEDY)
    if found is None:
        return {"active": None, "shadow": None, "history": []}
    return found.model_dump()  # every slot and the history, extra entry keys kept


def manifest_path(paths: Paths, baseline_id: str) -> Path:
    return paths.models / baseline_id / "manifest.json"


def cuts_path(paths: Paths, baseline_id: str) -> Path:
    return paths.models / baseline_id / "regime_cuts.json"


def read_manifest_file(paths: Paths, baseline_id: str, *, required: bool = True,
                       needs: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A baseline's manifest as written (checked keys, extra keys kept); ``needs``: keys the
    caller cannot do without."""
    path = manifest_path(paths, baseline_id)
    found = load_json_state(path, ModelManifest, remedy=model_remedy(baseline_id),
                            required=required)
    if found is None:
        return None
    if found.id != baseline_id:
        raise StateFileError(path, f"is the manifest of baseline {found.id}",
                             model_remedy(baseline_id))
    lacking = [k for k in needs if getattr(found, k, None) is None]
    if lacking:
        raise StateFileError(path, f"has no {', '.join(lacking)}", model_remedy(baseline_id))
    return found.model_dump(exclude_unset=True)  # python mode: NaN metrics stay NaN


def read_cuts_file(paths: Paths, baseline_id: str) -> dict[str, Any]:
    """A baseline's regime cut points (required: a manifest means a complete baseline)."""
    found = load_json_state(cuts_path(paths, baseline_id), RegimeCutsFile,
                            remedy=model_remedy(baseline_id), required=True)
    if found is None:  # required: load_json_state raised already
        raise StateFileError(cuts_path(paths, baseline_id), "missing", model_remedy(baseline_id))
    return found.model_dump()


def write_registry(paths: Paths, registry: dict[str, Any]) -> Path:
    """Write the registry (validated first: never what the reader would refuse)."""
    from tasks.io import atomic_write_json

    RegistryFile.model_validate(registry)
    return atomic_write_json(registry_path(paths), registry)


def repair_registry(paths: Paths, *, at: str) -> str:
    """Write the safe registry explicitly: both slots empty (no plan until a baseline is
    promoted again); the lost history is replaced by the repair's entries."""
    write_registry(paths, {"active": None, "shadow": None, "history": [
        {"slot": s, "from": None, "to": None, "at": at, "repair": True} for s in ("active", "shadow")]})
    return "slots emptied: promote a baseline with `hcp promote --to active --id ID`"


def unslot_baseline(paths: Paths, baseline_id: str, *, at: str, reason: str) -> str:
    """Take a baseline whose files are damaged out of every registry slot (logged in the
    registry's history); its folder is left as it is for inspection."""
    registry = read_registry_file(paths)
    slots = [s for s in ("active", "shadow") if registry.get(s) == baseline_id]
    if not slots:
        return f"baseline {baseline_id} holds no slot: nothing uses it"
    for slot in slots:
        registry[slot] = None
        registry["history"].append({"slot": slot, "from": baseline_id, "to": None, "at": at,
                                    "repair": True, "reason": reason})
    write_registry(paths, registry)
    return f"baseline {baseline_id} taken out of the {' and '.join(slots)} slot(s)"
