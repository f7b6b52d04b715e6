"""The trading policy in force: blend weights, gates, do-not-trade list, reward mix, toggles.

The first version comes from ``policy:`` in ``config/app.yaml``. Later versions (written by
bounded escalation deltas) live under ``data/state/policy/``; ``current.json`` names the
version in force. A version id is ``pol-`` plus the first 12 hex digits of the sha256 of the
policy's canonical JSON, so the same policy always has the same id and every plan and trade
is stamped with it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tasks.io import atomic_write_json, to_json_bytes
from tasks.paths import Paths
from tasks.settings import AppSettings


def policy_dir(paths: Paths) -> Path:
    return paths.data / "state" / "policy"


def policy_version(policy: dict[str, Any]) -> str:
    """Content id of a policy."""
    return "pol-" + hashlib.sha256(to_json_bytes(policy)).hexdigest()[:12]


def default_policy(settings: AppSettings) -> dict[str, Any]:
    return settings.policy.model_dump(mode="json")


def current_policy(paths: Paths, settings: AppSettings) -> tuple[dict[str, Any], str]:
    """(policy, version id) in force: the stored current version, else the configured default."""
    pointer = policy_dir(paths) / "current.json"
    if pointer.is_file():
        version = json.loads(pointer.read_text())["version"]
        stored = policy_dir(paths) / f"{version}.json"
        if not stored.is_file():
            raise FileNotFoundError(f"policy version {version} named by {pointer} is missing")
        return json.loads(stored.read_text())["policy"], version
    policy = default_policy(settings)
    return policy, policy_version(policy)


def save_policy(paths: Paths, policy: dict[str, Any], parent: str | None, reason: str,
                when: str) -> str:
    """Store a policy version (idempotent) and make it current."""
    version = policy_version(policy)
    atomic_write_json(policy_dir(paths) / f"{version}.json",
                      {"version": version, "parent": parent, "reason": reason, "created_at": when,
                       "policy": policy})
    atomic_write_json(policy_dir(paths) / "current.json", {"version": version})
    return version
