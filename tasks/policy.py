"""The trading policy in force: blend weights, gates, caps, do-not-trade list, reward mix, toggles.

The first version comes from ``policy:`` in ``config/app.yaml``. Later versions (written by
bounded escalation deltas) live under ``data/state/policy/``; ``current.json`` names the
version in force. A version id is ``pol-`` plus the first 12 hex digits of the sha256 of the
policy's canonical JSON, so the same policy always has the same id and every plan and trade
is stamped with it. ``history.jsonl`` records every change of the version in force (a new
version or a rollback); :func:`diff_versions` shows a git-style diff of two versions.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from tasks.io import atomic_write_json, exclusive_lock, to_json_bytes
from tasks.paths import Paths
from tasks.settings import AppSettings


def policy_dir(paths: Paths) -> Path:
    return paths.data / "state" / "policy"


def policy_lock(paths: Paths):
    """Exclusive lock for a read-modify-write of the version in force."""
    return exclusive_lock(policy_dir(paths) / ".lock")


def policy_version(policy: dict[str, Any]) -> str:
    """Content id of a policy."""
    import hashlib

    return "pol-" + hashlib.sha256(to_json_bytes(policy)).hexdigest()[:12]


def default_policy(settings: AppSettings) -> dict[str, Any]:
    return settings.policy.model_dump(mode="json")


def _pointer(paths: Paths) -> Path:
    return policy_dir(paths) / "current.json"


def current_version(paths: Paths, settings: AppSettings) -> str:
    """Id of the version in force."""
    return current_policy(paths, settings)[1]


def current_policy(paths: Paths, settings: AppSettings) -> tuple[dict[str, Any], str]:
    """(policy, version id) in force: the stored current version, else the configured default."""
    pointer = _pointer(paths)
    if pointer.is_file():
        version = json.loads(pointer.read_text())["version"]
        return load_version(paths, settings, version), version
    policy = default_policy(settings)
    return policy, policy_version(policy)


def load_version(paths: Paths, settings: AppSettings, version: str) -> dict[str, Any]:
    """The policy stored under ``version`` (the configured default needs no file)."""
    stored = policy_dir(paths) / f"{version}.json"
    if stored.is_file():
        return json.loads(stored.read_text())["policy"]
    default = default_policy(settings)
    if version == policy_version(default):
        return default
    raise FileNotFoundError(f"policy version {version} is not stored under {policy_dir(paths)} "
                            "(`hcp policy list` shows the versions there)")


def _append_history(paths: Paths, entry: dict[str, Any]) -> None:
    path = policy_dir(paths) / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def store_version(paths: Paths, policy: dict[str, Any], parent: str | None, reason: str,
                  when: str) -> str:
    """Store a version without making it current (idempotent: an existing id is kept as is)."""
    version = policy_version(policy)
    target = policy_dir(paths) / f"{version}.json"
    if not target.is_file():
        atomic_write_json(target, {"version": version, "parent": parent, "reason": reason,
                                   "created_at": when, "policy": policy})
    return version


def save_policy(paths: Paths, policy: dict[str, Any], parent: str | None, reason: str,
                when: str) -> str:
    """Store a policy version (idempotent) and make it current."""
    version = store_version(paths, policy, parent, reason, when)
    _set_current(paths, version, {"at": when, "event": "new_version", "version": version,
                                  "parent": parent, "reason": reason})
    return version


def _set_current(paths: Paths, version: str, entry: dict[str, Any]) -> None:
    pointer = _pointer(paths)
    if pointer.is_file() and json.loads(pointer.read_text())["version"] == version:
        return
    atomic_write_json(pointer, {"version": version})
    _append_history(paths, entry)


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
        meta = json.loads(path.read_text())
        rows[meta["version"]] = {k: meta.get(k) for k in ("version", "parent", "reason",
                                                          "created_at")}
    out = sorted(rows.values(), key=lambda r: (r["created_at"] or "", r["version"]))
    for row in out:
        row["current"] = row["version"] == current
    return out


def diff_policies(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> str:
    """Unified diff of two policies' canonical JSON ('' when equal)."""
    a = to_json_bytes(old).decode().splitlines(keepends=True)
    b = to_json_bytes(new).decode().splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=old_name, tofile=new_name, n=2))


def diff_versions(paths: Paths, settings: AppSettings, old: str | None = None,
                  new: str | None = None) -> str:
    """Diff of two versions; ``new`` defaults to the current one, ``old`` to its parent."""
    new = new or current_version(paths, settings)
    if old is None:
        meta = policy_dir(paths) / f"{new}.json"
        old = json.loads(meta.read_text()).get("parent") if meta.is_file() else None
        if old is None:
            return ""
    return diff_policies(load_version(paths, settings, old), load_version(paths, settings, new),
                         old, new)


def rollback(paths: Paths, settings: AppSettings, version: str, when: str, reason: str) -> str:
    """Make an earlier stored version (or the configured default) the one in force."""
    policy = load_version(paths, settings, version)
    if policy_version(policy) != version:
        raise ValueError(f"stored policy {version} does not hash to its id: the file was edited")
    with policy_lock(paths):
        store_version(paths, policy, None, "configured default (config/app.yaml)", when)
        _set_current(paths, version, {"at": when, "event": "rollback", "version": version,
                                      "reason": reason})
    return version


def history(paths: Paths) -> list[dict[str, Any]]:
    path = policy_dir(paths) / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def policy_settings(settings: AppSettings, policy: dict[str, Any]) -> AppSettings:
    """Settings whose risk limits are tightened by the policy (bucket caps, SANITY_JUDGE's
    per-name cap and stop multiples); the policy can never loosen them."""
    risk = settings.risk
    caps = {b: min(risk.cap(b), float(v)) for b, v in policy.get("bucket_caps", {}).items()}
    update: dict[str, Any] = {"bucket_caps": {**risk.bucket_caps, **caps}}
    live = policy.get("live_changes") or {}
    if live.get("max_position_pct") is not None:
        pct = float(live["max_position_pct"])
        update["per_name"] = {b: min(risk.name_cap(b), pct) for b in ("core", "penny", "fno")}
    stops = live.get("stop_multipliers") or {}
    if stops.get("atr") is not None:
        update["initial_stop_atr"] = min(risk.initial_stop_atr, float(stops["atr"]))
    if stops.get("trailing") is not None:
        update["trailing_stop_atr"] = min(risk.trailing_stop_atr, float(stops["trailing"]))
    new_risk = risk.model_copy(update=update)
    if new_risk == risk:
        return settings
    return settings.model_copy(update={"risk": new_risk})
