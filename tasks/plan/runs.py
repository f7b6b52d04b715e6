"""Run identity, the per-session lock and the run record that makes re-runs free.

A daily run is keyed by (session, store content hash, active and shadow model ids, settings
hash, policy version, context/book/episodes fingerprints). The record
``reports/runs/daily_<D>.json`` stores the key and the sha256 of every output; a re-run with the
same key whose outputs are all still there with those hashes does nothing. Two runs for the
same session cannot interleave: each holds an exclusive lock file while it works.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.io import atomic_write_json, file_hash, to_json_bytes
from tasks.paths import Paths


class RunLocked(RuntimeError):
    """Another run for the same session is in progress."""


def run_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(to_json_bytes(parts)).hexdigest()[:32]


def code_fingerprint() -> str:
    """sha256 over the project's flow and task sources: new code means a new run key."""
    from tasks.settings import PROJECT_ROOT

    h = hashlib.sha256()
    for folder in ("flows", "tasks"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            h.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def record_path(paths: Paths, day: str) -> Path:
    return paths.runs / f"daily_{day}.json"


def cached_record(paths: Paths, day: str, key: str) -> dict[str, Any] | None:
    """The stored record when it has this key and every output still has its recorded hash."""
    path = record_path(paths, day)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("run_key") != key:
        return None
    for name, digest in record.get("outputs", {}).items():
        if name.startswith("latest_"):  # later sessions refresh the latest copies
            continue
        target = Path(record["paths"][name])
        if not target.is_file() or file_hash(target) != digest:
            return None
    return record


def write_record(paths: Paths, day: str, record: dict[str, Any]) -> Path:
    return atomic_write_json(record_path(paths, day), record)


@contextmanager
def session_lock(paths: Paths, day: str) -> Iterator[Path]:
    """Exclusive, non-blocking lock for one session; raises RunLocked when held elsewhere."""
    folder = paths.data / "runs" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"daily_{day}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunLocked(f"another run for {day} is in progress (pid {holder}); "
                            "wait for it to finish") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)


def make_record(key: str, parts: dict[str, Any], health: dict[str, Any], n_orders: int,
                written: dict[str, Path]) -> dict[str, Any]:
    """The run record: key, outcome, coverage and the sha256 of every output."""
    return {"run_key": key,
            "key_parts": {k: v for k, v in parts.items() if k != "all_settings"},
            "status": health["summary"]["status"], "errors": health["summary"]["errors"],
            "warnings": health["summary"]["warnings"], "n_orders": n_orders,
            "empty_book": health.get("empty_book"),
            "coverage_pct": health["metrics"]["coverage"]["coverage_pct"],
            "gross_exposure": health["metrics"]["exposure"]["gross"],
            "paths": {k: str(v) for k, v in written.items()},
            "outputs": {k: file_hash(p) for k, p in sorted(written.items())}}
