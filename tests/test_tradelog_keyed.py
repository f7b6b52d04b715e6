"""The trade log's chain is keyed: a record written without the key never verifies, and is
never taken by the engine as an order already logged."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.execution import tradelog as tl
from tasks.execution.runner import run_session
from tasks.execution.tradelog import (
    GENESIS,
    TradeLog,
    TradeLogError,
    canonical,
    key_path,
    read_records,
    tradelog_path,
    verify,
)
from tasks.paths import Paths, SandboxPaths
from tests.exec_helpers import SESSION, settings

REPLAY = Path("reports") / "replay" / "2020-03-06_2020-03-09"


def _log(home: Paths, n: int = 5) -> Paths:
    log, _ = TradeLog.open(home)
    for i in range(n):
        log.append({"timestamp": f"t{i}", "session": SESSION, "mode": "demo", "event": "intent",
                    "order_id": f"o{i}", "symbol": "X", "direction": "BUY", "qty": 10 + i})
    return home


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rechain(records: list[dict], start: int = 0) -> list[dict]:
    """What a forger without the key does: recompute seq, prev and hash from ``start`` on
    (the MACs are left as they were, or missing)."""
    prev = records[start - 1]["hash"] if start else GENESIS
    for i, rec in enumerate(records[start:], start=start):
        rec["seq"], rec["prev"] = i, prev
        body = {k: v for k, v in rec.items() if k not in ("hash", "mac")}
        rec["hash"] = hashlib.sha256((prev + canonical(body)).encode()).hexdigest()
        prev = rec["hash"]
    return records


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(canonical(r) + "\n" for r in records))


def test_a_clean_log_verifies_and_its_key_is_private_and_outside_the_state(tmp_path):
    home = _log(Paths(tmp_path))
    res = verify(home)
    assert res.ok and res.n_records == 5 and res.keyed == 5 and res.legacy == 0
    assert "hash chain intact" in res.message(tradelog_path(home))
    assert all(len(r["mac"]) == 64 for r in read_records(home))
    key = key_path(home)
    assert key == tmp_path / ".keys" / "tradelog.key" and key.is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) & 0o077 == 0
    assert not key.resolve().is_relative_to((home.data / "state").resolve())
    assert json.loads(key.read_text())["legacy_records"] == 0


def test_an_appended_forgery_with_a_recomputed_hash_is_detected(tmp_path):
    home = _log(Paths(tmp_path))
    path = tradelog_path(home)
    records = _lines(path)
    forged = {**records[-1], "event": "fill", "qty": 14, "fill_price": 1.0}
    forged.pop("mac")
    _write(path, _rechain([*records, forged], start=5))
    res = verify(home)
    assert not res.ok and res.first_bad["line"] == 6 and res.n_records == 5
    assert "no MAC although the log is keyed" in res.first_bad["reason"]
    with pytest.raises(TradeLogError, match="line 6"):
        read_records(home)
    with pytest.raises(TradeLogError, match="appending refused"):
        TradeLog.open(home)


def test_a_rewritten_middle_record_with_the_chain_recomputed_is_detected(tmp_path):
    home = _log(Paths(tmp_path))
    path = tradelog_path(home)
    records = _lines(path)
    records[2]["qty"] *= 10
    _write(path, _rechain(records))  # every hash and prev consistent again
    res = verify(home)
    assert not res.ok and res.first_bad["line"] == 3 and res.first_bad["order_id"] == "o2"
    assert "MAC does not match" in res.first_bad["reason"]


def test_a_keyed_log_without_its_key_is_refused_and_no_new_key_is_made(tmp_path):
    home = _log(Paths(tmp_path))
    key = key_path(home)
    key.unlink()
    res = verify(home)
    assert not res.ok and "is missing" in res.message(tradelog_path(home))
    with pytest.raises(TradeLogError, match="is missing.*appending refused"):
        TradeLog.open(home)
    assert not key.exists()  # a fresh key would make a rewritten log verify


def test_the_key_is_never_put_inside_the_state(tmp_path, monkeypatch):
    home = Paths(tmp_path)
    monkeypatch.setenv(tl.KEY_ENV, str(home.data / "state" / "k.key"))
    with pytest.raises(TradeLogError, match="must not be inside"):
        key_path(home)
    elsewhere = tmp_path / "keys" / "desk.key"
    monkeypatch.setenv(tl.KEY_ENV, str(elsewhere))
    _log(home, 1)
    assert elsewhere.is_file() and verify(home).ok
    box = SandboxPaths(home.home, tmp_path / "box")  # a replay keeps its own key
    assert key_path(box) == tmp_path / "box" / ".keys" / "tradelog.key"


def _legacy(home: Paths, n: int = 3) -> Path:
    """A log written before keys: hash chain only."""
    path = tradelog_path(home)
    path.parent.mkdir(parents=True)
    recs = [{"seq": 0, "event": "intent", "order_id": f"o{i}", "qty": i} for i in range(n)]
    _write(path, _rechain(recs))
    return path


def test_a_legacy_log_is_adopted_by_an_operator_then_anchored(tmp_path):
    home = Paths(tmp_path)
    path = _legacy(home)
    res = verify(home)
    assert res.ok and res.unkeyed and "--adopt-legacy" in res.message(path)
    assert len(read_records(home)) == 3  # still readable
    with pytest.raises(TradeLogError, match="adopt-legacy"):
        TradeLog.open(home)  # nothing is appended to records nobody vouched for
    assert not key_path(home).exists()
    marker = tl.adopt_legacy(path, key_path(home), by="ops", reason="pre-key log checked",
                             at="2020-03-09T12:00:00Z")
    assert marker["reason_tags"] == ["tradelog:legacy_adopted"]
    res = verify(home)
    assert res.ok and not res.unkeyed and (res.legacy, res.keyed) == (3, 1)
    repairs = _lines(home.data / "state" / "repairs.jsonl")
    assert repairs[-1]["action"] == "legacy_adopted" and repairs[-1]["by"] == "ops"
    # the legacy prefix is anchored: rewriting it (chain recomputed) breaks the first MAC
    records = _lines(path)
    records[1]["qty"] = 100
    _write(path, _rechain(records))
    assert verify(home).first_bad["line"] == 4
    # and stripping every MAC does not turn the log back into a legacy one
    _write(path, _rechain([{k: v for k, v in r.items() if k != "mac"} for r in _lines(path)]))
    assert "no MAC" in verify(home).first_bad["reason"]


def test_records_cut_from_the_end_are_found_by_an_anchor(tmp_path):
    home = _log(Paths(tmp_path))
    head = tl.anchor(home)
    assert head["records"] == 5 and head["mac"] == read_records(home)[-1]["mac"]
    state = home.data / "state" / "execution"
    state.mkdir(parents=True)
    (state / f"{SESSION}.json").write_text(json.dumps({tl.ANCHOR_FIELD: head}))
    assert tl.check_state_anchors(home.data / "state", read_records(home)) == []
    path = tradelog_path(home)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:3]))
    assert verify(home).ok  # a shorter chain is still a valid chain ...
    problems = tl.check_state_anchors(home.data / "state", read_records(home))
    assert problems and "removed from its end" in problems[0]  # ... the anchor is not in it


# --- the engine ----------------------------------------------------------------------------

def _results(paths: Paths) -> list[tuple]:
    return [(r["order_id"], r["event"], r["qty"], round(r["fill_price"], 6))
            for r in read_records(paths) if r["event"] in ("fill", "exit", "unfilled")]


def test_the_engine_never_takes_a_forged_record_as_already_logged(tmp_path):
    """A session killed after an order's intent; before the restart a forger appends that
    order's fill (copied from another log, MAC and all, the chain recomputed). The restart
    refuses the log instead of taking the order as done; once the forged tail is cut, the
    restart logs the real fill and ends where the clean run does."""
    from tests.test_execution_tradelog import _child, _setup

    clean, frame, bars_path = _setup(tmp_path / "clean", tmp_path)
    assert _child(clean.home, bars_path, None) == 0
    home, _, _ = _setup(tmp_path / "home", tmp_path)
    assert _child(home.home, bars_path, "after_intent:1") == 137
    path = tradelog_path(home)
    intent = _lines(path)[-1]
    assert intent["event"] == "intent"
    real = next(r for r in read_records(clean)
                if r["order_id"] == intent["order_id"] and r["event"] in ("fill", "exit"))
    _write(path, _rechain([*_lines(path), dict(real)], start=len(_lines(path))))
    n = len(_lines(path))
    with pytest.raises(TradeLogError, match=f"line {n} .*MAC does not match.*appending refused"):
        run_session(home, settings(fee=0.0005), SESSION, bars=frame)
    journal = home.data / "state" / "paper_broker" / f"{SESSION}.jsonl"
    assert not journal.exists() or intent["order_id"] not in journal.read_text()  # never sent
    side = tl.cut_from(path, key_path(home), n, by="ops", reason="forged fill",
                       at="2020-03-09T15:00:00Z")
    assert json.loads(side.read_text())["order_id"] == intent["order_id"]
    run_session(home, settings(fee=0.0005), SESSION, bars=frame)
    assert verify(home).ok and _results(home) == _results(clean)
    mine = [r for r in read_records(home) if r["order_id"] == intent["order_id"]
            and r["event"] == real["event"]]
    assert len(mine) == 1 and mine[0]["mac"] != real["mac"]


# --- hcp tradelog verify -------------------------------------------------------------------

def _cli(monkeypatch, home: Path, *args: str):
    from flows.cli import app

    monkeypatch.setenv("HCP_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "400")
    return CliRunner().invoke(app, ["tradelog", "verify", *args])


def test_verify_a_path_and_a_replay(tmp_path, monkeypatch):
    home = Paths(tmp_path)
    _log(home, 2)
    box = SandboxPaths(home.home, tmp_path / REPLAY / "sandbox")
    _log(box, 3)
    sandbox_key = tmp_path / REPLAY / "sandbox" / ".keys" / "tradelog.key"
    assert sandbox_key.is_file() and sandbox_key.read_bytes() != key_path(home).read_bytes()

    ok = _cli(monkeypatch, tmp_path, "--replay", str(REPLAY))
    assert ok.exit_code == 0 and "3 records" in ok.output and str(sandbox_key) in ok.output
    ok = _cli(monkeypatch, tmp_path, str(REPLAY / "sandbox" / "data" / "state" / "tradelog.jsonl"))
    assert ok.exit_code == 0 and "3 records" in ok.output
    ok = _cli(monkeypatch, tmp_path, "data/state/tradelog.jsonl")
    assert ok.exit_code == 0 and "2 records" in ok.output

    path = tradelog_path(box)
    records = _lines(path)
    records[1]["qty"] = 1000
    _write(path, _rechain(records))
    bad = _cli(monkeypatch, tmp_path, "--replay", str(REPLAY))
    assert bad.exit_code == 1 and "line 2" in bad.output and "MAC does not match" in bad.output
    # the home's log is not the replay's
    assert _cli(monkeypatch, tmp_path).exit_code == 0
    missing = _cli(monkeypatch, tmp_path, "nowhere/tradelog.jsonl")
    assert missing.exit_code == 2 and "no trade log" in missing.output
    both = _cli(monkeypatch, tmp_path, "data/state/tradelog.jsonl", "--replay", str(REPLAY))
    assert both.exit_code == 2


def test_verify_adopts_a_legacy_log_and_cuts_a_forged_tail(tmp_path, monkeypatch):
    home = Paths(tmp_path)
    path = _legacy(home)
    unkeyed = _cli(monkeypatch, tmp_path)
    assert unkeyed.exit_code == 1 and "--adopt-legacy" in unkeyed.output
    assert _cli(monkeypatch, tmp_path, "--adopt-legacy").exit_code == 2  # --by/--reason
    adopted = _cli(monkeypatch, tmp_path, "--adopt-legacy", "--by", "ops", "--reason", "checked")
    assert adopted.exit_code == 0 and "adopted" in adopted.output
    _write(path, _rechain([*_lines(path), {"event": "fill", "order_id": "o1", "qty": 5}], start=4))
    assert _cli(monkeypatch, tmp_path).exit_code == 1
    wrong = _cli(monkeypatch, tmp_path, "--cut-from", "3", "--by", "ops", "--reason", "forged")
    assert wrong.exit_code == 2 and "line 5" in wrong.output
    cut = _cli(monkeypatch, tmp_path, "--cut-from", "5", "--by", "ops", "--reason", "forged")
    assert cut.exit_code == 0 and "moved to" in cut.output
    assert verify(home).ok and read_records(home)[-1]["reason_tags"] == ["tradelog:cut"]
