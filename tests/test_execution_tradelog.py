"""The trade log detects tampering and torn lines, and state survives a killed process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from typer.testing import CliRunner

from tasks.execution.tradelog import TradeLog, TradeLogError, read_records, tradelog_path, verify
from tasks.paths import Paths
from tasks.settings import PROJECT_ROOT
from tests.exec_helpers import PREV, SESSION, bars, plan_row, write_book, write_plan


def _log(tmp_path, n: int = 5) -> Paths:
    paths = Paths(tmp_path)
    log, _ = TradeLog.open(paths)
    for i in range(n):
        log.append({"timestamp": f"t{i}", "session": SESSION, "mode": "demo", "event": "intent",
                    "order_id": f"o{i}", "symbol": "X", "direction": "BUY", "qty": 10 + i})
    return paths


def _lines(paths: Paths) -> list[str]:
    return tradelog_path(paths).read_text().splitlines(keepends=True)


def test_intact_chain_verifies(tmp_path):
    paths = _log(tmp_path)
    res = verify(paths)
    assert res.ok and res.n_records == 5 and res.first_bad is None
    assert [r["seq"] for r in read_records(paths)] == list(range(5))


def test_a_changed_record_is_named(tmp_path):
    paths = _log(tmp_path)
    lines = _lines(paths)
    rec = json.loads(lines[2])
    rec["qty"] = 1000
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    tradelog_path(paths).write_text("".join(lines))
    res = verify(paths)
    assert not res.ok and res.first_bad["line"] == 3 and res.first_bad["order_id"] == "o2"
    assert "changed" in res.first_bad["reason"]
    with pytest.raises(TradeLogError, match="appending refused"):
        TradeLog.open(paths)


def test_a_grown_log_rechecks_only_new_lines_and_a_changed_prefix_is_caught(tmp_path):
    """Scans remember the prefix they verified: after appends the result and the records equal
    a scan from scratch; a record changed inside the remembered prefix, with the chain after it
    recomputed and more records appended, is still found (the prefix's bytes are compared)."""
    from tasks.execution import tradelog as tl

    paths = _log(tmp_path, n=4)
    assert verify(paths).ok
    log, _ = TradeLog.open(paths)
    for i in range(4, 7):
        log.append({"timestamp": f"t{i}", "session": SESSION, "mode": "demo", "event": "intent",
                    "order_id": f"o{i}", "symbol": "X", "direction": "BUY", "qty": 10 + i})
    cached = verify(paths), read_records(paths)
    tl._verified.clear()
    assert (verify(paths), read_records(paths)) == cached
    assert cached[0].ok and cached[0].n_records == 7

    assert verify(paths).ok  # the whole log is the remembered prefix now
    lines = _lines(paths)
    rec = json.loads(lines[2])
    rec["qty"] = 1000
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    tradelog_path(paths).write_text("".join(lines) + lines[-1])
    res = verify(paths)
    assert not res.ok and res.first_bad["line"] == 3 and "changed" in res.first_bad["reason"]


def test_a_removed_record_is_named(tmp_path):
    paths = _log(tmp_path)
    lines = _lines(paths)
    tradelog_path(paths).write_text("".join(lines[:1] + lines[2:]))
    res = verify(paths)
    assert res.first_bad["line"] == 2 and "removed or moved" in res.first_bad["reason"]


def test_a_torn_last_line_is_reported_then_moved_aside_not_dropped(tmp_path):
    paths = _log(tmp_path)
    torn = b'{"event":"fill","order_id":"o4","qty'
    with open(tradelog_path(paths), "ab") as fh:
        fh.write(torn)
    res = verify(paths)
    assert not res.ok and res.first_bad is None and res.torn.line == 6
    assert "torn" in res.message(tradelog_path(paths))
    log, side = TradeLog.open(paths, {"timestamp": "t9", "session": SESSION, "mode": "demo"})
    assert side.read_bytes() == torn and side.parent == tradelog_path(paths).parent
    after = verify(paths)
    assert after.ok and after.n_records == 6
    last = read_records(paths)[-1]
    assert last["event"] == "recovery" and last["detail"]["side_file"] == side.name
    log.append({"event": "intent", "order_id": "o5"})
    assert verify(paths).ok


def test_cli_verify_exit_codes(tmp_path, monkeypatch):
    from flows.cli import app

    paths = _log(tmp_path)
    monkeypatch.setenv("HCP_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "300")
    ok = CliRunner().invoke(app, ["tradelog", "verify"])
    assert ok.exit_code == 0 and "hash chain intact" in ok.output
    lines = _lines(paths)
    tradelog_path(paths).write_text("".join(lines[:3] + [lines[3].replace('"qty":13', '"qty":31')]
                                            + lines[4:]))
    bad = CliRunner().invoke(app, ["tradelog", "verify"])
    assert bad.exit_code == 1 and "line 4" in bad.output.replace("\n", "")
    tradelog_path(paths).write_text("".join(lines) + '{"half')
    torn = CliRunner().invoke(app, ["tradelog", "verify"])
    assert torn.exit_code == 1 and "torn" in torn.output
    fixed = CliRunner().invoke(app, ["tradelog", "verify", "--repair"])
    assert fixed.exit_code == 0 and "moved to" in fixed.output


CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tasks.execution.runner import run_session
from tasks.paths import Paths
from tests.exec_helpers import SESSION, bars, settings
import pandas as pd
frame = pd.read_parquet({bars!r})
run_session(Paths(Path({home!r})), settings(fee=0.0005), SESSION, bars=frame)
"""


def _setup(home, tmp_path):
    paths = Paths(home)
    write_book(paths, 90_000.0, [{"symbol": "H", "qty": 100, "price": 100.0, "entry_price": 100.0,
                                  "atr": 2.0, "stop": 96.4, "take_profit": 105.0,
                                  "extreme": 100.0, "stop_frac": 0.036, "episode_id": "e0"}])
    write_plan(paths, PREV, [plan_row(s, 12, 50.0, 1.0) for s in ("A", "B", "C")])
    frame = bars(SESSION, {s: [(50, 50.5, 49.5, 50.2), (50.2, 51, 50, 50.8)] for s in "ABC"}
                 | {"H": [(100, 100, 99, 99.5), (99.5, 99.6, 96, 96.5)]}, volume=150.0)
    path = tmp_path / "bars.parquet"
    frame.to_parquet(path)
    return paths, frame, path


def _child(home, bars_path, fault: str | None) -> int:
    env = {**os.environ, "HCP_HOME": str(home)}
    env.pop("HCP_FAULT_INJECT", None)
    if fault:
        env["HCP_FAULT_INJECT"] = fault
    code = CHILD.format(root=str(PROJECT_ROOT), bars=str(bars_path), home=str(home))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120).returncode


def _final(paths: Paths) -> tuple:
    recs = read_records(paths)
    book = json.loads((paths.data / "state" / "portfolio.json").read_text())
    fills = [(r["order_id"], r["event"], r["qty"], round(r["fill_price"], 6)) for r in recs
             if r["event"] in ("fill", "exit", "unfilled")]
    return fills, round(book["net_liquidity"], 6), [(p["symbol"], p["qty"]) for p in book["positions"]]


@pytest.mark.parametrize("fault", ["after_intent:2", "after_send:3"])
def test_state_survives_a_killed_process(tmp_path, fault):
    """Kill the process between 'intent' and 'result', restart: every order has exactly one
    intent and one result, the broker executed it once, and the end state is the clean run's."""
    clean, _, bars_path = _setup(tmp_path / "clean", tmp_path)
    assert _child(clean.home, bars_path, None) == 0
    crashed, _, _ = _setup(tmp_path / "crashed", tmp_path)
    assert _child(crashed.home, bars_path, fault) == 137
    state = json.loads((crashed.data / "state" / "execution" / f"{SESSION}.json").read_text())
    assert state["sending"] is not None  # the order in flight was persisted before it was sent
    assert _child(crashed.home, bars_path, None) == 0  # restart
    assert verify(crashed).ok
    recs = read_records(crashed)
    counts = Counter((r["order_id"], "result" if r["event"] in ("fill", "exit", "unfilled")
                      else r["event"]) for r in recs if r["event"] != "cancel")
    intents = {o for (o, e) in counts if e == "intent"}
    assert intents and all(counts[(o, "intent")] == 1 and counts[(o, "result")] == 1
                           for o in intents), counts
    journal = (crashed.data / "state" / "paper_broker" / f"{SESSION}.jsonl").read_text()
    ids = Counter(json.loads(line)["order_id"] for line in journal.splitlines())
    assert set(ids) == intents and max(ids.values()) == 1
    assert _final(crashed) == _final(clean)
    summary = json.loads((crashed.data / "state" / "sessions" / f"{SESSION}.json").read_text())
    assert summary["reconciled"] and summary["reconciled"][0]["outcome"].startswith(
        "completed" if fault.startswith("after_send") else "re-sent")
