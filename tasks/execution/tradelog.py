"""The immutable trade log: ``data/state/tradelog.jsonl``, one keyed, hash-chained JSON record a line.

Each record carries the runbook's fields (``timestamp, mode, symbol, direction, size_pre,
size_post_risk, entry_price, exit_price, reason_tags``) plus ``session, event, order_id, qty,
pnl, policy_version, model_id`` and the chain: ``seq`` (0-based line number), ``prev`` (the
previous record's hash, 64 zeros for the first), ``hash`` = sha256(prev + the record's
canonical JSON without ``hash`` and ``mac``) and ``mac`` = HMAC-SHA256 of the same bytes under
the log's key. Changing, removing or reordering any record breaks the chain at that line,
which :func:`verify` names; the MAC makes that hold against someone who recomputes the
hashes: a record written without the key (an appended forgery, a changed record with the
chain recomputed after it) fails its MAC. Removing records from the end leaves a shorter valid
chain: :func:`anchor` gives the head a session can record elsewhere and :func:`check_anchor`
finds such a cut.

The key (:func:`key_path`) lives outside ``data/state``: ``$HCP_TRADELOG_KEY_FILE`` for the
home's own log, else ``<root>/.keys/tradelog.key`` where ``<root>`` holds ``data/`` (the home,
or a replay's ``sandbox``: a replay and a test home each get their own key). It is a JSON file
(``format``, ``key``: 64 hex digits, ``created``, ``legacy_records``), mode 0600, made by
:meth:`TradeLog.open` only while the log holds no keyed record. A log with MACs whose key is
missing is refused (one line): a new key would make a rewritten log verify.

Logs written before the key: their records have no ``mac``. Opening such a log makes the key
with ``legacy_records`` = their number and appends a keyed ``recovery`` record
(``tradelog:keyed``), whose MAC covers the last legacy hash: the legacy prefix can no longer be
rewritten unnoticed. Every record from ``legacy_records`` on must carry a valid MAC.

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

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.io import atomic_write_bytes
from tasks.paths import Paths, SandboxPaths
from tasks.statefiles import escape_text, load_json_state, log_repair, parse_json_bytes

GENESIS = "0" * 64
KEY_ENV = "HCP_TRADELOG_KEY_FILE"
KEY_FORMAT = "hcp-tradelog-key/1"
KEY_REMEDY = ("restore the key file from its backup (the log's MACs were made with it; a new "
              "key is never made for a keyed log)")
FIELDS = ("timestamp", "session", "mode", "event", "order_id", "symbol", "direction", "size_pre",
          "size_post_risk", "entry_price", "exit_price", "qty", "pnl", "reason_tags",
          "policy_version", "model_id")
RESULT_EVENTS = ("fill", "exit", "unfilled")


class TradeLogError(RuntimeError):
    """The trade log cannot be trusted (a broken chain, a bad MAC, a keyed log without its key,
    records nobody adopted): nothing is appended until it is investigated."""


def tradelog_path(paths: Paths) -> Path:
    return paths.data / "state" / "tradelog.jsonl"


# --- the key --------------------------------------------------------------------------------

class TradeLogKey(BaseModel):
    """The key file: the HMAC key and from which record on the log is keyed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["hcp-tradelog-key/1"]
    key: str = Field(pattern=r"^[0-9a-f]{64}$")
    created: str
    legacy_records: int = Field(ge=0, description="Records the log held, without MACs, when "
                                                  "the key was made.")

    def mac(self, message: bytes) -> str:
        return hmac.new(bytes.fromhex(self.key), message, hashlib.sha256).hexdigest()


def key_path(paths: Paths) -> Path:
    """The key of ``paths``' log: ``$HCP_TRADELOG_KEY_FILE`` (not for a replay's sandbox),
    else ``<root>/.keys/tradelog.key`` with ``<root>`` the folder that holds ``data/``.
    A key inside ``data/state`` is refused: it would travel (and be restored) with the log."""
    env = os.environ.get(KEY_ENV)
    path = (Path(env).expanduser() if env and not isinstance(paths, SandboxPaths)
            else paths.data.parent / ".keys" / "tradelog.key")
    state = (paths.data / "state").resolve()
    if path.resolve().is_relative_to(state):
        raise TradeLogError(f"{path}: the trade log's key must not be inside {state} (it would be "
                            f"copied and restored with the log): set {KEY_ENV} elsewhere")
    return path


def key_for_log(log: Path, home: Paths) -> Path:
    """The key of a log file named on the command line: the home's own log uses
    :func:`key_path`; a log at ``<root>/data/state/tradelog.jsonl`` the key of ``<root>``."""
    log = Path(log).resolve()
    if log == tradelog_path(home).resolve():
        return key_path(home)
    if log.parent.name == "state" and log.parent.parent.name == "data":
        return key_path(SandboxPaths(home.home, log.parent.parent.parent))
    raise TradeLogError(f"{log}: not at <root>/data/state/tradelog.jsonl, so its key is not "
                        "known: name it with --key-file")


def load_key(path: Path) -> TradeLogKey | None:
    """The key (None when there is no key file). A key readable by others, or a file of the
    wrong shape, is refused in one line."""
    path = Path(path)
    if not path.exists():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise TradeLogError(f"{path}: the trade log's key is readable by others (mode "
                            f"{mode:04o}): chmod 600 {path}")
    return load_json_state(path, TradeLogKey, remedy=KEY_REMEDY)


def create_key(path: Path, legacy_records: int) -> TradeLogKey:
    """Make the key file (mode 0600, folder 0700) unless another process just did; returns
    the key in force."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = TradeLogKey(format=KEY_FORMAT, key=secrets.token_hex(32),
                      created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      legacy_records=legacy_records)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write((key.model_dump_json(indent=2) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # never replace a key made meanwhile
            os.link(name, path)
    finally:
        os.unlink(name)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    made = load_key(path)
    if made is None:
        raise TradeLogError(f"{path}: the trade log's key was not written")
    return made


def canonical(body: dict[str, Any]) -> str:
    """Canonical JSON of a record (sorted keys, no spaces, NaN refused)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _message(prev: str, body: dict[str, Any]) -> bytes:
    return (prev + canonical(body)).encode("utf-8")


def record_hash(prev: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(_message(prev, body)).hexdigest()


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
    problem: str | None = None      # the log as a whole cannot be checked (its key is missing)
    keyed: int = 0                  # records whose MAC verified
    legacy: int = 0                 # records from before the key (no MAC, hash chain only)
    key_file: Path | None = None
    last_mac: str | None = None     # the MAC of the last good record (None: none keyed)
    unkeyed: bool = False           # records without MACs and no key: readable, but nothing is
    #                                 appended until an operator adopts them (adopt_legacy)

    def message(self, path: Path) -> str:
        if self.problem:
            return f"{path}: {self.problem}"
        if self.first_bad:
            b = self.first_bad
            return (f"{path}: record at line {b['line']} (seq {b.get('seq')}, order "
                    f"{b.get('order_id')}) is bad: {b['reason']}; the {b['line'] - 1} records "
                    "before it verify. Do not append: restore the log from a backup or "
                    "investigate the change (a bad tail, once investigated, is moved aside "
                    f"with `hcp tradelog verify --cut-from {b['line']} --by NAME --reason TEXT`).")
        if self.torn:
            return (f"{path}: {self.n_records} records verify, but the last line "
                    f"{self.torn.line} is torn ({self.torn.nbytes} bytes without a newline, "
                    "a crash during an append): `hcp tradelog verify --repair` (or the next "
                    "intraday run) moves it to a side file and notes that in the chain")
        text = f"{path}: {self.n_records} records, hash chain intact (head {self.last_hash[:16]})"
        if self.keyed:
            text += f"; {self.keyed} MACs verify with the key {self.key_file}"
        if self.unkeyed:
            return (f"{text}; but its {self.legacy} records carry no MAC (written before the log "
                    f"was keyed) and there is no key at {self.key_file}: once they are checked, "
                    "`hcp tradelog verify --adopt-legacy --by NAME --reason TEXT` makes the key "
                    "and anchors them (if this log had a key before, restore that key instead)")
        if self.legacy:
            text += f"; {self.legacy} legacy records before the key (no MAC, hash chain only)"
        return text


def _check(line_no: int, text: str, prev: str, key: TradeLogKey | None
           ) -> tuple[dict[str, Any] | None, str | None]:
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
    body = {k: v for k, v in rec.items() if k not in ("hash", "mac")}
    try:
        message = _message(prev, body)
    except ValueError as exc:  # NaN or another value canonical JSON refuses
        return rec, f"not canonical JSON ({exc})"
    if rec.get("hash") != hashlib.sha256(message).hexdigest():
        return rec, "hash does not match the record's content (the record was changed)"
    if key is None:
        return rec, None
    mac = rec.get("mac")
    if mac is None:
        if line_no - 1 >= key.legacy_records:
            return rec, (f"no MAC although the log is keyed from seq {key.legacy_records} on "
                         "(written or rewritten without the key)")
        return rec, None
    if not isinstance(mac, str) or not hmac.compare_digest(mac, key.mac(message)):
        return rec, "MAC does not match (the record was changed or written without the key)"
    return rec, None


@dataclass(frozen=True)
class _Verified:
    """A prefix of whole lines of a log that verified in this process, and the chain's state
    after it."""

    nbytes: int
    sha256: str
    records: tuple[dict[str, Any], ...]   # as parsed; callers get copies
    prev: str
    last_mac: str | None
    keyed: int


# The verified prefix of every log this process scanned, by (log, key). A log only grows by
# appends, so the next scan re-checks only the lines after the prefix, once the prefix's bytes
# are shown to be the same (their SHA-256): a changed, cut or reordered prefix fails that test
# and the whole chain is checked again. Without it a backtest re-verified its whole log several
# times a session, a cost growing with the square of its length.
_verified: dict[tuple[str, str | None], _Verified] = {}


def _cache_key(path: Path, key: TradeLogKey | None) -> tuple[str, str | None]:
    return str(path.resolve()), key.model_dump_json() if key is not None else None


def _known_prefix(data: bytes, end: int, cache_key: tuple[str, str | None]
                  ) -> tuple[_Verified | None, Any]:
    """The verified prefix of ``data`` (or None) and a SHA-256 of the bytes up to it, to be
    carried on to ``end``."""
    known = _verified.get(cache_key)
    digest = hashlib.sha256()
    if known is None or known.nbytes > end:
        return None, digest
    digest.update(memoryview(data)[:known.nbytes])
    if digest.hexdigest() != known.sha256:
        return None, hashlib.sha256()
    return known, digest


def scan(path: Path, key: TradeLogKey | None = None, key_file: Path | None = None
         ) -> tuple[VerifyResult, list[dict[str, Any]]]:
    """Check every record of the chain (and its MAC with ``key``); returns the result and the
    good records. Without a key, a record that carries a MAC stops the scan (``problem``):
    such a log cannot be checked, and is never taken as good. Lines this process already
    verified, byte for byte, are not checked again (:data:`_verified`); their records are
    returned as copies."""
    data = path.read_bytes() if path.is_file() else b""
    end = data.rfind(b"\n") + 1
    torn = None
    if end < len(data):
        tail = data[end:]
        torn = Torn(data.count(b"\n") + 1, end, len(tail), hashlib.sha256(tail).hexdigest())
    prev, last_mac, records, keyed = GENESIS, None, [], 0
    cache_key = _cache_key(path, key)
    start, first_line = 0, 1
    known, digest = _known_prefix(data, end, cache_key)
    if known is not None:
        records = [dict(r) for r in known.records]
        prev, last_mac, keyed = known.prev, known.last_mac, known.keyed
        start, first_line = known.nbytes, len(known.records) + 1
    fresh: list[dict[str, Any]] = []

    def result(ok: bool, bad: dict[str, Any] | None = None, problem: str | None = None
               ) -> VerifyResult:
        return VerifyResult(ok, len(records), prev, bad, torn, problem, keyed,
                            len(records) - keyed, key_file, last_mac,
                            key is None and problem is None and bad is None and bool(records))

    for i, raw in enumerate(data[start:end].splitlines(), start=first_line):
        rec, reason = _check(i, raw.decode("utf-8", errors="replace"), prev, key)
        if not reason and key is None and rec is not None and "mac" in rec:
            return result(False, problem=(
                f"record at line {i} (seq {rec.get('seq')}) carries a MAC but the key "
                f"{key_file} is missing; {KEY_REMEDY}")), records
        if reason:
            bad = {"line": i, "seq": (rec or {}).get("seq"), "order_id": (rec or {}).get("order_id"),
                   "reason": reason}
            return result(False, bad), records
        records.append(rec)
        fresh.append(dict(rec))
        prev = rec["hash"]
        if "mac" in rec:
            keyed, last_mac = keyed + 1, rec["mac"]
    if end:
        digest.update(memoryview(data)[start:end])
        _verified[cache_key] = _Verified(end, digest.hexdigest(),
                                         (known.records if known else ()) + tuple(fresh), prev,
                                         last_mac, keyed)
    if key is not None and len(records) < key.legacy_records:
        return result(False, problem=(
            f"{len(records)} records, but the log held {key.legacy_records} when its key "
            f"{key_file} was made: records were removed from its end; restore the log from a "
            "backup")), records
    return result(torn is None), records


def verify_file(path: Path, key_file: Path) -> VerifyResult:
    """Verify the whole chain of the log at ``path`` with the key at ``key_file`` (read only:
    no key is made)."""
    return scan(Path(path), load_key(key_file), Path(key_file))[0]


def verify(paths: Paths) -> VerifyResult:
    """Verify the whole chain of the home's log (read only)."""
    return verify_file(tradelog_path(paths), key_path(paths))


def read_records(paths: Paths, session: str | None = None) -> list[dict[str, Any]]:
    """The records of the chain (or one session's), oldest first; a torn last line is left out.
    A bad record, or a keyed log without its key, raises :class:`TradeLogError`."""
    path, key_file = tradelog_path(paths), key_path(paths)
    res, records = scan(path, load_key(key_file), key_file)
    if res.first_bad or res.problem:
        raise TradeLogError(res.message(path))
    return [r for r in records if session is None or r.get("session") == session]


def anchor(paths: Paths) -> dict[str, Any]:
    """The log's head for a record kept elsewhere (e.g. a session's committed execution
    state): ``{"records": n, "hash": last hash, "mac": last MAC or None}``. A later
    :func:`check_anchor` finds records removed from the end (which leaves a valid chain)."""
    res = verify(paths)
    if res.first_bad or res.problem:
        raise TradeLogError(res.message(tradelog_path(paths)))
    return {"records": res.n_records, "hash": res.last_hash, "mac": res.last_mac}


def check_anchor(records: list[dict[str, Any]], head: dict[str, Any]) -> str | None:
    """Why the verified ``records`` do not contain the head ``head`` (None: they do)."""
    n = head.get("records")
    if not isinstance(n, int) or n < 0:
        return f"anchor {head!r} is not of the shape {{records, hash, mac}}"
    if n == 0:
        return None
    if len(records) < n:
        return (f"the log has {len(records)} records, the anchor recorded {n}: records were "
                "removed from its end")
    rec = records[n - 1]
    if rec.get("hash") != head.get("hash") or rec.get("mac") != head.get("mac"):
        return f"record seq {n - 1} is not the one the anchor recorded (the log was rewritten)"
    return None


ANCHOR_FIELD = "tradelog_anchor"


def check_state_anchors(state: Path, records: list[dict[str, Any]]) -> list[str]:
    """Check the anchors the sessions' execution states (``<state>/execution/<D>.json``) carry
    in :data:`ANCHOR_FIELD`, if any; one line per anchor the log does not contain."""
    out = []
    for f in sorted((Path(state) / "execution").glob("*.json")):
        try:
            doc = parse_json_bytes(f, f.read_bytes(), "")
        except ValueError:
            continue  # not this check's business: the session's own reader reports it
        head = doc.get(ANCHOR_FIELD) if isinstance(doc, dict) else None
        if isinstance(head, dict):
            why = check_anchor(records, head)
            if why:
                out.append(f"{f.name}: {why}")
    return out


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
    """Appends to the chain; knows which (order, event) pairs are already logged (only
    records that verified, MAC included: a forged record is never taken as logged)."""

    def __init__(self, path: Path, records: list[dict[str, Any]], head: str,
                 key: TradeLogKey) -> None:
        self.path = path
        self.head = head
        self.key = key
        self.n = len(records)
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in records:
            self._index(rec)

    def _index(self, rec: dict[str, Any]) -> None:
        if rec.get("order_id"):
            self.events[(rec["order_id"], rec["event"])] = rec

    @classmethod
    def open(cls, paths: Paths, recovery: dict[str, Any] | None = None) -> tuple[TradeLog, Path | None]:
        """Open the home's log for appending (see :meth:`open_file`)."""
        return cls.open_file(tradelog_path(paths), key_path(paths), recovery)

    @classmethod
    def open_file(cls, path: Path, key_file: Path, recovery: dict[str, Any] | None = None
                  ) -> tuple[TradeLog, Path | None]:
        """Open for appending: a broken chain, a bad MAC, a keyed log without its key or records
        without MACs not yet adopted (:func:`adopt_legacy`) raise; the key is made here only
        while there is no record at all; a torn last line is moved aside and the move noted
        with a ``recovery`` record built from ``recovery`` (timestamp, session, mode)."""
        key = load_key(key_file)
        res, records = scan(path, key, key_file)
        if res.first_bad or res.problem or res.unkeyed:
            raise TradeLogError(res.message(path) + "; appending refused")
        if key is None:  # no log yet (or only a torn line): its first run makes the key
            key = create_key(key_file, legacy_records=0)
        log = cls(path, records, res.last_hash, key)
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
        """Chain, MAC, write and fsync one record; returns it with seq, prev, hash and mac."""
        body = {k: record.get(k) for k in FIELDS}
        body.update({k: v for k, v in record.items() if k not in FIELDS and k not in ("hash", "mac")})
        body.update(seq=self.n, prev=self.head)
        message = _message(self.head, body)
        body["hash"] = hashlib.sha256(message).hexdigest()
        body["mac"] = self.key.mac(message)
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


# --- operator repairs (each noted in the chain and in data/state/repairs.jsonl) -------------

def _note(log: TradeLog, at: str, tag: str, detail: dict[str, Any], by: str, reason: str
          ) -> dict[str, Any]:
    return log.append({"timestamp": at, "session": None, "mode": None, "event": "recovery",
                       "reason_tags": [tag], "detail": {**detail, "by": escape_text(by),
                                                        "reason": escape_text(reason)}})


def adopt_legacy(path: Path, key_file: Path, *, by: str, reason: str, at: str) -> dict[str, Any]:
    """An operator vouches for a log written before keys: the key is made with
    ``legacy_records`` = its records, a keyed ``recovery`` record (``tradelog:legacy_adopted``)
    anchors them, and the repair is logged. Refused when a key exists, the chain is broken or
    there is nothing to adopt."""
    if not by.strip() or not reason.strip():
        raise ValueError("adopting a trade log needs --by and --reason")
    path, key_file = Path(path), Path(key_file)
    if load_key(key_file) is not None:
        raise TradeLogError(f"{path}: already keyed ({key_file} exists): nothing to adopt")
    res, records = scan(path, None, key_file)
    if res.first_bad or res.problem:
        raise TradeLogError(res.message(path) + "; not adopted")
    if not records:
        raise TradeLogError(f"{path}: no records to adopt (the first intraday run makes the key)")
    create_key(key_file, legacy_records=len(records))
    log, _ = TradeLog.open_file(path, key_file, {"timestamp": at, "session": None, "mode": None})
    detail = {"legacy_records": len(records), "key_file": str(key_file)}
    marker = _note(log, at, "tradelog:legacy_adopted", detail, by, reason)
    log_repair(path.parent, file=path.name, action="legacy_adopted", by=by, reason=reason, at=at,
               detail={**detail, "head": marker["hash"]})
    return marker


def cut_from(path: Path, key_file: Path, line: int, *, by: str, reason: str, at: str) -> Path:
    """Move the first bad record (which must be line ``line``) and every line after it to a
    side file ``tradelog.cut-<line>-<sha12>.txt``, then note the cut with a keyed ``recovery``
    record (``tradelog:cut``) and in the repair log. For a bad tail (an appended forgery, a
    stray write); a bad record in the middle is better restored from a backup, as the good
    records after it go to the side file too. Refused without a bad record or the key."""
    if not by.strip() or not reason.strip():
        raise ValueError("cutting the trade log needs --by and --reason")
    path, key_file = Path(path), Path(key_file)
    key = load_key(key_file)
    if key is None:
        raise TradeLogError(f"{path}: no key at {key_file}: a cut is noted with a MAC, so it "
                            "needs the log's key")
    res, _ = scan(path, key, key_file)
    if res.problem:
        raise TradeLogError(res.message(path))
    if not res.first_bad:
        raise TradeLogError(f"{path}: every record verifies: nothing to cut")
    if line != res.first_bad["line"]:
        raise TradeLogError(f"{path}: the first bad record is at line {res.first_bad['line']}, "
                            f"not {line}: --cut-from must name it")
    data = path.read_bytes()
    offset = sum(len(x) for x in data.splitlines(keepends=True)[:line - 1])
    tail = data[offset:]
    digest = hashlib.sha256(tail).hexdigest()
    side = path.with_name(f"{path.stem}.cut-{line:06d}-{digest[:12]}.txt")
    atomic_write_bytes(side, tail)
    with open(path, "r+b") as fh:
        fh.truncate(offset)
        fh.flush()
        os.fsync(fh.fileno())
    log, _ = TradeLog.open_file(path, key_file)
    detail = {"side_file": side.name, "line": line, "nbytes": len(tail), "sha256": digest,
              "lines": tail.count(b"\n") + (not tail.endswith(b"\n")),
              "bad": res.first_bad["reason"]}
    marker = _note(log, at, "tradelog:cut", detail, by, reason)
    log_repair(path.parent, file=path.name, action="cut", by=by, reason=reason, at=at,
               detail={**detail, "head": marker["hash"]})
    return side
