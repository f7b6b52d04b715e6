"""The immutable trade log: ``data/state/tradelog.jsonl``, one hash-chained JSON record a line.

Each record carries the runbook's fields (``timestamp, mode, symbol, direction, size_pre,
size_post_risk, entry_price, exit_price, reason_tags``) plus ``session, event, order_id, qty,
pnl, policy_version, model_id`` and the chain: ``seq`` (0-based line number), ``prev`` (the
previous record's hash, 64 zeros for the first) and ``hash`` = sha256(prev + the record's
canonical JSON without ``hash``). Changing, removing or reordering any record breaks the chain
at that line, which :func:`verify` names.

Events: ``intent`` (written and fsynced before an order is sent), ``fill`` / ``exit`` (its
result, after), ``unfilled``, ``reject`` (refused before sending: clamp, kill switch, stall),
``cancel`` (a working entry withdrawn) and ``recovery`` (a repair noted in the chain).

A crash while appending can leave a torn last line (no newline). :func:`verify` reports it;
:meth:`TradeLog.open` (the intraday flow's start) and ``hcp tradelog verify --repair`` move
its bytes to a side file ``tradelog.torn-<line>-<sha12>.txt``, cut the log back to its last
complete record and append a ``recovery`` record naming the side file. A record is never
dropped silently or rewritten.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.io import atomic_write_bytes
from tasks.paths import Paths

GENESIS = "0" * 64
FIELDS = ("timestamp", "session", "mode", "event", "order_id", "symbol", "direction", "size_pre",
          "size_post_risk", "entry_price", "exit_price", "qty", "pnl", "reason_tags",
          "policy_version", "model_id")
RESULT_EVENTS = ("fill", "exit", "unfilled")


class TradeLogError(RuntimeError):
    """The trade log is damaged (broken chain): nothing is appended until it is investigated."""


def tradelog_path(paths: Paths) -> Path:
    return paths.data / "state" / "tradelog.jsonl"


def canonical(body: dict[str, Any]) -> str:
    """Canonical JSON of a record (sorted keys, no spaces, NaN refused)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def record_hash(prev: str, body: dict[str, Any]) -> str:
    return hashlib.sha256((prev + canonical(body)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Torn:
    """A last line without its newline (an append cut short by a crash)."""

    line: int
    offset: int
    nbytes: int
    sha256: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    n_records: int
    last_hash: str
    first_bad: dict[str, Any] | None = None
    torn: Torn | None = None

    def message(self, path: Path) -> str:
        if self.first_bad:
            b = self.first_bad
            return (f"{path}: record at line {b['line']} (seq {b.get('seq')}, order "
                    f"{b.get('order_id')}) is bad: {b['reason']}; the {b['line'] - 1} records "
                    "before it verify. Do not append: restore the log from a backup or "
                    "investigate the change.")
        if self.torn:
            return (f"{path}: {self.n_records} records verify, but the last line "
                    f"{self.torn.line} is torn ({self.torn.nbytes} bytes without a newline, "
                    "a crash during an append): `hcp tradelog verify --repair` (or the next "
                    "intraday run) moves it to a side file and notes that in the chain")
        return f"{path}: {self.n_records} records, hash chain intact (head {self.last_hash[:16]})"


def _check(line_no: int, text: str, prev: str) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) when the line is a valid next link, else (record or None, reason)."""
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg})"
    if not isinstance(rec, dict):
        return None, "not a JSON object"
    if rec.get("seq") != line_no - 1:
        return rec, f"seq {rec.get('seq')} where {line_no - 1} was expected (a record removed or moved)"
    if rec.get("prev") != prev:
        return rec, "prev does not match the previous record's hash (a record removed or moved)"
    body = {k: v for k, v in rec.items() if k != "hash"}
    if rec.get("hash") != record_hash(prev, body):
        return rec, "hash does not match the record's content (the record was changed)"
    return rec, None


def scan(path: Path) -> tuple[VerifyResult, list[dict[str, Any]]]:
    """Check every record of the chain; returns the result and the good records."""
    data = path.read_bytes() if path.is_file() else b""
    end = data.rfind(b"\n") + 1
    torn = None
    if end < len(data):
        tail = data[end:]
        torn = Torn(data.count(b"\n") + 1, end, len(tail), hashlib.sha256(tail).hexdigest())
    prev, records = GENESIS, []
    for i, raw in enumerate(data[:end].splitlines(), start=1):
        rec, reason = _check(i, raw.decode("utf-8", errors="replace"), prev)
        if reason:
            bad = {"line": i, "seq": (rec or {}).get("seq"), "order_id": (rec or {}).get("order_id"),
                   "reason": reason}
            return VerifyResult(False, len(records), prev, bad, torn), records
        records.append(rec)
        prev = rec["hash"]
    return VerifyResult(torn is None, len(records), prev, None, torn), records


def verify(paths: Paths) -> VerifyResult:
    """Verify the whole chain (read only)."""
    return scan(tradelog_path(paths))[0]


def read_records(paths: Paths, session: str | None = None) -> list[dict[str, Any]]:
    """The records of the chain (or one session's), oldest first; a torn last line is left out."""
    res, records = scan(tradelog_path(paths))
    if res.first_bad:
        raise TradeLogError(res.message(tradelog_path(paths)))
    return [r for r in records if session is None or r.get("session") == session]


def move_torn_aside(path: Path, torn: Torn) -> Path:
    """Copy the torn bytes to a side file (fsynced), then cut the log back to its last newline."""
    data = path.read_bytes()[torn.offset:]
    side = path.with_name(f"{path.stem}.torn-{torn.line:06d}-{torn.sha256[:12]}.txt")
    atomic_write_bytes(side, data)
    with open(path, "r+b") as fh:
        fh.truncate(torn.offset)
        fh.flush()
        os.fsync(fh.fileno())
    return side


class TradeLog:
    """Appends to the chain; knows which (order, event) pairs are already logged."""

    def __init__(self, path: Path, records: list[dict[str, Any]], head: str) -> None:
        self.path = path
        self.head = head
        self.n = len(records)
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in records:
            self._index(rec)

    def _index(self, rec: dict[str, Any]) -> None:
        if rec.get("order_id"):
            self.events[(rec["order_id"], rec["event"])] = rec

    @classmethod
    def open(cls, paths: Paths, recovery: dict[str, Any] | None = None) -> tuple[TradeLog, Path | None]:
        """Open for appending: a broken chain raises; a torn last line is moved aside and the
        move noted with a ``recovery`` record built from ``recovery`` (timestamp, session, mode)."""
        path = tradelog_path(paths)
        res, records = scan(path)
        if res.first_bad:
            raise TradeLogError(res.message(path) + "; appending refused")
        log = cls(path, records, res.last_hash)
        side = None
        if res.torn:
            side = move_torn_aside(path, res.torn)
            log.append({**(recovery or {}), "event": "recovery",
                        "reason_tags": ["tradelog:torn_line_moved"],
                        "detail": {"side_file": side.name, "line": res.torn.line,
                                   "nbytes": res.torn.nbytes, "sha256": res.torn.sha256}})
        return log, side

    def logged(self, order_id: str, event: str) -> dict[str, Any] | None:
        return self.events.get((order_id, event))

    def result_of(self, order_id: str) -> dict[str, Any] | None:
        for event in RESULT_EVENTS:
            if (order_id, event) in self.events:
                return self.events[(order_id, event)]
        return None

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Chain, write and fsync one record; returns it with seq, prev and hash."""
        body = {k: record.get(k) for k in FIELDS}
        body.update({k: v for k, v in record.items() if k not in FIELDS})
        body.update(seq=self.n, prev=self.head)
        body["hash"] = record_hash(self.head, body)
        line = (canonical(body) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        self.head, self.n = body["hash"], self.n + 1
        self._index(body)
        return body
