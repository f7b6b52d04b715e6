"""Atomic writes and content hashes: a crash never leaves a half-written artifact."""

from __future__ import annotations

import fcntl
import filecmp
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


@contextmanager
def _temp_in(folder: Path, suffix: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp)`` on a temp file beside ``path``, fsync it, then rename it into place.

    When ``path`` already holds exactly these bytes it is left untouched (same mtime), so a
    re-run with the same inputs changes nothing on disk.
    """
    path = Path(path)
    with _temp_in(path.parent, path.suffix) as tmp:
        writer(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are read by analysts and tools
        if path.is_file() and filecmp.cmp(tmp, path, shallow=False):
            return path
        _fsync(tmp)
        os.replace(tmp, path)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def to_json_bytes(obj: Any) -> bytes:
    """Canonical, human-readable JSON (sorted keys, dates as ISO strings)."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, pd.Timestamp):
        return obj.date().isoformat() if obj == obj.normalize() else obj.isoformat()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Write canonical JSON atomically."""
    return atomic_write_bytes(path, to_json_bytes(obj))


def write_parquet_bytes_stable(df: pd.DataFrame, path: Path) -> None:
    """Write a frame to parquet without the pandas index and with no run-dependent metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd")


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> Path:
    """Write a frame to parquet atomically (same frame, same bytes)."""
    return atomic_write(path, lambda tmp: write_parquet_bytes_stable(df, tmp))


def replace_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder in a temp sibling, then swap it in place of ``target``.

    The swap is two renames (``target`` -> ``.old-<name>``, the new one -> ``target``) under
    the lock ``.<name>.lock`` beside it. A kill between them leaves no ``target`` and the
    previous folder in ``.old-<name>``: the next swap puts it back first, and readers undo it
    under the same lock (:func:`tasks.data.store.recover_store`). A failed second rename puts
    the previous folder back before the error goes on."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    old = target.with_name(f".old-{target.name}")
    try:
        build(tmp)
        with exclusive_lock(target.with_name(f".{target.name}.lock")):
            if not target.exists() and old.is_dir():  # a swap cut short: the previous one
                os.replace(old, target)
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.replace(target, old)
            fault_point("replace_dir")  # tests: a kill between the two renames
            try:
                os.replace(tmp, target)
            except BaseException:
                if old.is_dir() and not target.exists():
                    os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def frame_hash(df: pd.DataFrame) -> str:
    """sha256 of a frame's content (column names, dtypes and values; row order matters)."""
    h = hashlib.sha256()
    h.update(repr([(c, str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created with its folder); blocks until free."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


FAULT_ENV = "HCP_FAULT_INJECT"  # tests only: "<point>:<n>" exits the process at the n-th <point>
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Crash the process (like SIGKILL: no clean-up, no flush) at a named point when
    ``HCP_FAULT_INJECT`` is ``<name>:<n>`` and this is the n-th time the point is reached.
    The crash tests use it to stop a run between two writes of a commit."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec.startswith(name + ":"):
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(spec.split(":")[1]):
        os._exit(137)
