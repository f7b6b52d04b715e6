"""The trading policy in force: blend weights, gates, caps, do-not-trade list, reward mix, toggles.

The first version comes from ``policy:`` in ``config/app.yaml``. Later versions (written by
bounded escalation deltas and by the nightly trust update of the blend weights,
:mod:`tasks.plan.trust`) live under ``data/state/policy/``; ``current.json`` names the
version in force. A version id is ``pol-`` plus the first 12 hex digits of the sha256 of the
policy's canonical JSON, so the same policy always has the same id and every plan and trade
is stamped with it. ``history.jsonl`` records every change of the version in force (a new
version or a rollback); :func:`diff_versions` shows a git-style diff of two versions.

Every state file here is read strictly: a version file must hash to its id (every load checks
it, not only a rollback), the pointer is required once the history has any entry and must name
the version the history's last change made current. A missing or edited version, a lost or
swapped pointer is a :class:`~tasks.statefiles.StateFileError` naming the file; the configured
default is never put in place of the escalated policy. ``hcp state repair policy`` rebuilds
the pointer from the history (:func:`repair_pointer`).

A policy is a :class:`Policy`: frozen, every field typed, no other field. A stored version is
validated strictly (a value of the wrong type, or a field a policy does not have, is refused
naming the file), and its JSON must be the policy's own (:meth:`Policy.to_json`), so the id of
a loaded policy is always the id it is stored under.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from tasks.io import atomic_write_json, exclusive_lock, to_json_bytes
from tasks.paths import Paths
from tasks.settings import AppSettings
from tasks.statefiles import StateFileError, append_jsonl, load_json_state, read_jsonl
from tasks.trading_settings import PolicyDefaults

VERSION_ID = r"^pol-[0-9a-f]{12}$"
REMEDY = ("repair it with `hcp state repair policy --by NAME --reason TEXT [--version V]` "
          "(moves damaged versions aside, points at the version the policy history made "
          "current, else at V)")


class Policy(PolicyDefaults):
    """One version of the trading policy: the fields of the configured first version
    (:class:`~tasks.trading_settings.PolicyDefaults`), frozen, every one typed, no other.

    :meth:`to_json` is its stored form and what its id hashes (:func:`policy_version`); a
    changed policy comes from :meth:`replace` (or ``model_copy(update=...)``, which goes
    through it), validated like a stored version."""

    @model_validator(mode="after")
    def _finite(self) -> Policy:
        bad = [k for k, v in _numbers(self.to_json()) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"policy values must be finite numbers: {', '.join(bad)}")
        return self

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Policy:
        """A policy from its JSON, strictly: no type coercion, no unknown field."""
        return cls.model_validate(dict(data), strict=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON of the policy (what a version file stores)."""
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> Policy:
        """A new policy with ``changes`` (field: JSON value or typed value), validated like a
        stored version (:class:`pydantic.ValidationError` when the result is not a policy)."""
        update = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
                  for k, v in changes.items()}
        return Policy.parse({**self.to_json(), **update})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False
                   ) -> Policy:
        """A copy; with ``update``, the validated :meth:`replace` (never an unchecked value)."""
        if update:
            return self.replace(**update)
        return super().model_copy(deep=deep)


def _numbers(value: Any, where: str = "") -> list[tuple[str, float]]:
    """(dotted key, number) of every number in a JSON value."""
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v, f"{where}.{k}" if where else k)]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _numbers(v, f"{where}.{i}")]
    if isinstance(value, float | int) and not isinstance(value, bool):
        return [(where, float(value))]
    return []


class PolicyPointer(BaseModel):
    """``current.json``: the version in force."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(pattern=VERSION_ID)


class PolicyVersionFile(BaseModel):
    """``pol-<id>.json``: one stored version (its policy must hash to ``version``)."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(pattern=VERSION_ID)
    parent: str | None
    reason: str
    created_at: str
    policy: dict[str, Any]
    _typed: Policy | None = PrivateAttr(None)

    @property
    def typed(self) -> Policy:
        """The stored policy as a :class:`Policy` (set by :func:`read_version_file`)."""
        if self._typed is None:
            self._typed = Policy.parse(self.policy)
        return self._typed


def policy_dir(paths: Paths) -> Path:
    return paths.data / "state" / "policy"


def policy_lock(paths: Paths):
    """Exclusive lock for a read-modify-write of the version in force."""
    return exclusive_lock(policy_dir(paths) / ".lock")


def _content_id(policy_json: Mapping[str, Any]) -> str:
    return "pol-" + hashlib.sha256(to_json_bytes(policy_json)).hexdigest()[:12]


def policy_version(policy: Policy) -> str:
    """Content id of a policy: ``pol-`` and 12 hex digits of the sha256 of its canonical JSON."""
    return _content_id(policy.to_json())


def default_policy(settings: AppSettings) -> Policy:
    """The configured first version (``policy:`` in config/app.yaml)."""
    return Policy.parse(settings.policy.model_dump(mode="json"))


def _pointer(paths: Paths) -> Path:
    return policy_dir(paths) / "current.json"


def current_version(paths: Paths, settings: AppSettings) -> str:
    """Id of the version in force."""
    return current_policy(paths, settings)[1]


def _history_path(paths: Paths) -> Path:
    return policy_dir(paths) / "history.jsonl"


def history_current(paths: Paths) -> str | None:
    """The version the policy history's last change made current (None without history);
    :class:`StateFileError` when a line of the history is not a record of a change."""
    path = _history_path(paths)
    read = read_jsonl(path)
    if read.bad_lines:
        raise StateFileError(path, f"line(s) {', '.join(map(str, read.bad_lines))} are not "
                                   "records", "restore it from a backup (the versions it names "
                                   "are the files pol-*.json beside it)")
    versions = [r.get("version") for r in read.records if isinstance(r.get("version"), str)]
    if len(versions) != len(read.records):
        raise StateFileError(path, "a record names no version", REMEDY)
    return versions[-1] if versions else None


def read_pointer(paths: Paths) -> str | None:
    """The id ``current.json`` names, strictly: required once the history has an entry, and
    equal to the version the history's last change made current."""
    pointer = _pointer(paths)
    made = history_current(paths)
    found = load_json_state(pointer, PolicyPointer, remedy=REMEDY, required=made is not None)
    if found is None:
        return None
    if made is not None and found.version != made:
        raise StateFileError(pointer, f"names {found.version} but the policy history's last "
                                      f"change made {made} current", REMEDY)
    return found.version


def current_policy(paths: Paths, settings: AppSettings) -> tuple[Policy, str]:
    """(policy, version id) in force: the stored current version; the configured default only
    while no version was ever made current (no pointer and no history)."""
    version = read_pointer(paths)
    if version is not None:
        return read_version(paths, version, from_pointer=True), version
    policy = default_policy(settings)
    return policy, policy_version(policy)


def version_path(paths: Paths, version: str) -> Path:
    return policy_dir(paths) / f"{version}.json"


def read_version_file(path: Path) -> PolicyVersionFile:
    """A stored version file, strictly: its id is its name, its policy is a :class:`Policy`
    (typed, no unknown field) stored in its own JSON, and hashes to the id."""
    found = load_json_state(path, PolicyVersionFile, remedy=REMEDY, required=True)
    if found is None:  # required: load_json_state raised already
        raise StateFileError(path, "missing", REMEDY)
    if path.stem != found.version:
        raise StateFileError(path, f"holds version {found.version}, not {path.stem}", REMEDY)
    try:
        typed = Policy.parse(found.policy)
    except ValidationError as exc:
        raise StateFileError(path, _policy_error(exc), REMEDY) from None
    actual = _content_id(found.policy)
    if actual != found.version:
        raise StateFileError(path, f"content hashes to {actual}, not its id {found.version} "
                                   "(the file was edited)", REMEDY)
    written = typed.to_json()
    if to_json_bytes(written) != to_json_bytes(found.policy):
        differ = sorted(k for k in {*written, *found.policy}
                        if to_json_bytes(written.get(k)) != to_json_bytes(found.policy.get(k)))
        raise StateFileError(path, "its policy is not stored as a policy writes itself "
                                   f"({', '.join(differ)} differ from their typed values)",
                             REMEDY)
    found._typed = typed
    return found


def _policy_error(exc: ValidationError) -> str:
    """One line: where the stored policy is not a policy, and why."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in ("policy", *err.get("loc", ())))
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"not a policy at {where}: {err.get('msg', 'invalid')}{more}"


def read_version(paths: Paths, version: str, *, from_pointer: bool = False) -> Policy:
    """The policy stored under ``version``, hash-checked (:class:`StateFileError` when it is
    damaged, or missing although the pointer names it)."""
    path = version_path(paths, version)
    if not path.is_file() and from_pointer:
        raise StateFileError(path, "missing although the policy pointer names it", REMEDY)
    return read_version_file(path).typed


def load_version(paths: Paths, settings: AppSettings, version: str) -> Policy:
    """The policy stored under ``version`` (the configured default needs no file); every load
    checks the content hash against the id (:class:`StateFileError` when it does not match)."""
    if version_path(paths, version).is_file():
        return read_version(paths, version)
    default = default_policy(settings)
    if version == policy_version(default):
        return default
    raise FileNotFoundError(f"policy version {version} is not stored under {policy_dir(paths)} "
                            "(`hcp policy list` shows the versions there)")


def _append_history(paths: Paths, entry: dict[str, Any]) -> None:
    append_jsonl(_history_path(paths), entry)


def store_version(paths: Paths, policy: Policy, parent: str | None, reason: str,
                  when: str) -> str:
    """Store a version without making it current (idempotent: an existing id is kept as is)."""
    version = policy_version(policy)
    target = policy_dir(paths) / f"{version}.json"
    if not target.is_file():
        atomic_write_json(target, {"version": version, "parent": parent, "reason": reason,
                                   "created_at": when, "policy": policy.to_json()})
    return version


def save_policy(paths: Paths, policy: Policy, parent: str | None, reason: str,
                when: str, effective: str | None = None) -> str:
    """Store a policy version (idempotent) and make it current; ``effective``: the session
    whose plan it first applies to (an escalation's session), recorded in the history."""
    version = store_version(paths, policy, parent, reason, when)
    entry = {"at": when, "event": "new_version", "version": version, "parent": parent,
             "reason": reason}
    if effective is not None:
        entry["effective"] = effective
    _set_current(paths, version, entry)
    return version


def make_current(paths: Paths, version: str, *, when: str, event: str, reason: str,
                 effective: str | None = None) -> str:
    """Make a stored version the one in force (recorded in the history; no-op when it is)."""
    entry = {"at": when, "event": event, "version": version, "reason": reason}
    if effective is not None:
        entry["effective"] = effective
    with policy_lock(paths):
        _set_current(paths, version, entry)
    return version


def effective_session(entry: dict[str, Any]) -> tuple[str, bool]:
    """(date, inclusive) from which a history entry's version is in force: an entry with an
    ``effective`` session applies from that session's plan on (after its escalations); one
    without applies from the first session after the date it was recorded."""
    if entry.get("effective"):
        return str(entry["effective"]), True
    return str(entry.get("at", ""))[:10], False


def _set_current(paths: Paths, version: str, entry: dict[str, Any]) -> None:
    """Record the change in the history, then point at it (a crash between the two leaves a
    pointer the check names as behind its history, never a silent revert)."""
    if read_pointer(paths) == version:
        return
    read_version_file(version_path(paths, version))  # never point at a damaged version
    _append_history(paths, entry)
    atomic_write_json(_pointer(paths), {"version": version})


def list_versions(paths: Paths, settings: AppSettings) -> list[dict[str, Any]]:
    """Every stored version (and the configured default), oldest first, with the current one
    flagged."""
    current = current_version(paths, settings)
    default = default_policy(settings)
    rows = {policy_version(default): {"version": policy_version(default), "parent": None,
                                      "reason": "configured default (config/app.yaml)",
                                      "created_at": ""}}
    folder = policy_dir(paths)
    for path in sorted(folder.glob("pol-*.json")) if folder.is_dir() else []:
        meta = read_version_file(path).model_dump(mode="json")
        rows[meta["version"]] = {k: meta.get(k) for k in ("version", "parent", "reason",
                                                          "created_at")}
    out = sorted(rows.values(), key=lambda r: (r["created_at"] or "", r["version"]))
    for row in out:
        row["current"] = row["version"] == current
    return out


def diff_policies(old: Policy, new: Policy, old_name: str, new_name: str) -> str:
    """Unified diff of two policies' canonical JSON ('' when equal)."""
    a = to_json_bytes(old.to_json()).decode().splitlines(keepends=True)
    b = to_json_bytes(new.to_json()).decode().splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=old_name, tofile=new_name, n=2))


def diff_versions(paths: Paths, settings: AppSettings, old: str | None = None,
                  new: str | None = None) -> str:
    """Diff of two versions; ``new`` defaults to the current one, ``old`` to its parent."""
    new = new or current_version(paths, settings)
    if old is None:
        meta = version_path(paths, new)
        old = read_version_file(meta).parent if meta.is_file() else None
        if old is None:
            return ""
    return diff_policies(load_version(paths, settings, old), load_version(paths, settings, new),
                         old, new)


def rollback(paths: Paths, settings: AppSettings, version: str, when: str, reason: str) -> str:
    """Make an earlier stored version (or the configured default) the one in force."""
    policy = load_version(paths, settings, version)  # hash-checked
    with policy_lock(paths):
        store_version(paths, policy, None, "configured default (config/app.yaml)", when)
        _set_current(paths, version, {"at": when, "event": "rollback", "version": version,
                                      "reason": reason})
    return version


def history(paths: Paths) -> list[dict[str, Any]]:
    history_current(paths)  # a damaged line is named, not skipped
    return read_jsonl(_history_path(paths)).records


def damaged_versions(paths: Paths) -> list[tuple[Path, StateFileError]]:
    """Stored version files that do not pass :func:`read_version_file`."""
    out = []
    folder = policy_dir(paths)
    for path in sorted(folder.glob("pol-*.json")) if folder.is_dir() else []:
        try:
            read_version_file(path)
        except StateFileError as exc:
            out.append((path, exc))
    return out


def repair_pointer(paths: Paths, settings: AppSettings, *, at: str, reason: str,
                   version: str | None = None) -> tuple[str, str]:
    """Move damaged version files aside (``policy/damaged/``) and point at ``version`` (an
    intact stored version), else at the version the history's last change made current when
    that one is intact. Returns (version in force, what was done). Refuses (ValueError) when
    neither names an intact version: the operator then chooses one with ``--version``."""
    with policy_lock(paths):
        moved = []
        for path, _exc in damaged_versions(paths):
            aside = policy_dir(paths) / "damaged" / f"{path.name}.{at.replace(':', '')}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            path.replace(aside)
            moved.append(path.name)
        made = history_current(paths)
        target = version or made
        if target is None:
            raise ValueError("the policy history names no version: pass --version V (an intact "
                             "stored version, `hcp policy list`)")
        path = version_path(paths, target)
        if not path.is_file():
            default = default_policy(settings)
            if target != policy_version(default):
                raise ValueError(f"policy version {target} is not stored intact under "
                                 f"{policy_dir(paths)} (moved aside: {', '.join(moved) or 'none'})"
                                 ": pass --version V naming an intact stored version")
            store_version(paths, default, None, "configured default (config/app.yaml)", at)
        read_version_file(path)
        if target != made:
            _append_history(paths, {"at": at, "event": "repair", "version": target,
                                    "reason": reason})
        atomic_write_json(_pointer(paths), {"version": target})
    how = f"pointer set to {target}" + (f"; moved aside: {', '.join(moved)}" if moved else "")
    return target, how


def policy_settings(settings: AppSettings, policy: Policy | None) -> AppSettings:
    """Settings whose risk limits are tightened by the policy (bucket caps, SANITY_JUDGE's
    per-name cap and stop multiples); the policy can never loosen them (None: no policy)."""
    if policy is None:
        return settings
    risk = settings.risk
    caps = {b: min(risk.cap(b), float(v)) for b, v in policy.bucket_caps.items()}
    update: dict[str, Any] = {"bucket_caps": {**risk.bucket_caps, **caps}}
    live = policy.live_changes
    if live.max_position_pct is not None:
        pct = float(live.max_position_pct)
        update["per_name"] = {b: min(risk.name_cap(b), pct) for b in ("core", "penny", "fno")}
    stops = live.stop_multipliers
    if stops is not None and stops.atr is not None:
        update["initial_stop_atr"] = min(risk.initial_stop_atr, float(stops.atr))
    if stops is not None and stops.trailing is not None:
        update["trailing_stop_atr"] = min(risk.trailing_stop_atr, float(stops.trailing))
    new_risk = risk.model_copy(update=update)
    if new_risk == risk:
        return settings
    return settings.model_copy(update={"risk": new_risk})
