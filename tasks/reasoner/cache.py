"""Answers of the local reasoner cached per session and prompt hash.

``data/state/reasoner_cache/<D>.json`` maps a prompt's sha256 to the stored answer, so a re-run
of a session writes byte-identical outputs (conflict notes, post-mortem narrative) and asks
no model again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.io import atomic_write_json, exclusive_lock
from tasks.paths import Paths


def cache_path(paths: Paths, session: str) -> Path:
    return paths.data / "state" / "reasoner_cache" / f"{session}.json"


def cached(paths: Paths, session: str, key: str, produce: Callable[[], dict[str, Any]]
           ) -> dict[str, Any]:
    """The stored answer under ``key``, else ``produce()`` stored and returned."""
    path = cache_path(paths, session)
    with exclusive_lock(path.with_suffix(".lock")):
        data = json.loads(path.read_text()) if path.is_file() else {}
        if key in data:
            return data[key]
        value = produce()
        data[key] = value
        atomic_write_json(path, data)
        return value
