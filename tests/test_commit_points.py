"""One commit point per step: a step killed anywhere is finished or redone by its re-run, its
outputs become visible together, its alerts are part of its commit, and the JSONL alert log
survives torn lines, foreign bytes and concurrent writers.

Intraday kills run the session in a child process killed by SIGKILL at a chosen call (or the
engine's ``HCP_FAULT_INJECT`` points); daily kills run the daily flow in a child process on a
temporary Prefect server, the whole process group killed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from tasks.alerts import alerts_path, raise_alert, read_alerts
from tasks.execution import ledger
from tasks.execution.runner import run_session
from tasks.execution.status import latest_session
from tasks.execution.tradelog import read_records
from tasks.paths import Paths
from tasks.settings import PROJECT_ROOT
from tests.conftest import SMALL_ENV
from tests.exec_helpers import PREV, SESSION, settings
from tests.state_helpers import NEXT, bars_file, child, hcp, home, one_line, read, session_bars, state

DAY, EXEC, AFTER = "2021-12-28", "2021-12-29", "2021-12-30"  # demo market sessions
EMPTY = {"HCP_GUARDRAILS__MIN_POSITION_CASH": "1000000000"}  # every BUY dropped: an alert


# --- intraday: the session's commit point ---------------------------------------------------

def _clean_and_crashed(tmp_path, **kw):
    clean = home(tmp_path / "clean", **kw)
    crashed = home(tmp_path / "crashed", **kw)
    return clean, crashed


def _picture(paths: Paths) -> dict:
    eq = pd.read_parquet(state(paths) / "equity.parquet")
    book = read(state(paths) / "portfolio.json")
    rec = read(state(paths) / "execution" / f"{SESSION}.json")
    return {"book": (round(book["net_liquidity"], 6), book["as_of_session"],
                     [(p["symbol"], p["qty"]) for p in book["positions"]]),
            "equity": eq[["session", "end_net_liquidity"]].round(6).values.tolist(),
            "status": rec["status"], "kill": read(state(paths) / "kill_switch.json")["tripped"],
            "alerts": sorted((a["code"], a["key"]) for a in read_alerts(paths)),
            "fills": sorted((r["order_id"], r["event"]) for r in read_records(paths)
                            if r["event"] in ("fill", "exit", "unfilled"))}


@pytest.mark.parametrize("point", ["commit_episodes", "commit_summary", "commit_equity",
                                   "commit_book", "commit_kill_switch", "commit_alerts"])
def test_a_kill_inside_the_commit_is_finished_by_the_rerun(tmp_path, point):
    """Killed between two writes of the commit: the record is not committed, the next session
    waits for it, and the re-run writes the same outputs as a clean run (alerts once)."""
    clean, crashed = _clean_and_crashed(tmp_path, h_qty=500, cash=50_000.0, tags="size:rl_missing")
    path = bars_file(tmp_path, SESSION, drop=0.06)  # the kill switch trips: alerts to commit
    assert child(clean, SESSION, path).returncode == 0
    assert child(crashed, SESSION, path, fault=f"{point}:1").returncode == 137
    assert read(state(crashed) / "execution" / f"{SESSION}.json")["status"] == "closing"
    with pytest.raises(ledger.SessionOrderError, match=f"session {SESSION} was started"):
        ledger.intraday_order(crashed, "XNYS", NEXT)
    assert child(crashed, SESSION, path).returncode == 0
    assert _picture(crashed) == _picture(clean)
    codes = [a["code"] for a in read_alerts(crashed)]
    assert codes.count("kill_switch") == 1 and "rl_missing" in codes


def test_a_kill_after_the_first_record_write_loses_no_start_of_day_write(tmp_path):
    """Killed right after execution/<D>.json first appears: the re-run still writes D's armed
    kill switch and records D's failure modes (they used to be skipped on a resume)."""
    paths = home(tmp_path / "home", tags="size:rl_missing")
    (state(paths) / "kill_switch.json").write_text(json.dumps(
        {"session": PREV, "tripped": False, "threshold": 0.025}))
    path = bars_file(tmp_path, SESSION)
    died = child(paths, SESSION, path, kill_at="tasks.execution.runner:save_kill_switch:1")
    assert died.returncode == -9
    assert (state(paths) / "execution" / f"{SESSION}.json").is_file()
    assert read(state(paths) / "kill_switch.json")["session"] == PREV
    assert child(paths, SESSION, path).returncode == 0
    assert read(state(paths) / "kill_switch.json") == {"session": SESSION, "tripped": False,
                                                       "threshold": 0.025}
    summary = read(state(paths) / "sessions" / f"{SESSION}.json")
    assert [f["mode"] for f in summary["failures"]] == ["rl_missing"]
    assert [a["code"] for a in read_alerts(paths, SESSION)] == ["rl_missing"]


def test_a_stray_temporary_file_is_never_a_session(tmp_path):
    paths = home(tmp_path / "home")
    run_session(paths, settings(), SESSION, bars=session_bars(SESSION))
    for folder in ("sessions", "execution"):
        (state(paths) / folder / ".tmp-k1ll3d.json").write_bytes(b"")
    assert latest_session(paths) == SESSION  # ignored by name where a folder is listed
    run_session(paths, settings(), NEXT, bars=session_bars(NEXT))  # cleaned at the start
    assert not [p for p in (state(paths) / "sessions").iterdir() if p.name.startswith(".tmp-")]
    assert not [p for p in (state(paths) / "execution").iterdir() if p.name.startswith(".tmp-")]


# --- alerts: part of the commit, and a log that survives torn and foreign lines -------------

def bad_alert_lines(paths: Paths) -> list[int]:
    from tasks.alerts import bad_alert_lines as bad

    return bad(paths)


def _block_alerts(paths: Paths) -> None:
    """alerts.jsonl cannot be written (a directory in its place: root ignores file modes)."""
    alerts_path(paths).parent.mkdir(parents=True, exist_ok=True)
    if alerts_path(paths).is_file():
        alerts_path(paths).unlink()
    alerts_path(paths).mkdir()


def test_an_alert_that_could_not_be_written_is_raised_by_the_rerun(tmp_path):
    paths = home(tmp_path / "home", plan_for=(), h_qty=500, cash=50_000.0)
    frame = session_bars(SESSION, "", drop=0.06)
    _block_alerts(paths)
    with pytest.raises(OSError):
        run_session(paths, settings(), SESSION, bars=frame)
    assert read(state(paths) / "execution" / f"{SESSION}.json")["halted"] is True
    alerts_path(paths).rmdir()
    res = run_session(paths, settings(), SESSION, bars=frame)
    assert res.summary["kill_switch"] is True
    assert [a["code"] for a in read_alerts(paths)] == ["kill_switch"]


def test_a_torn_alert_line_never_swallows_the_next_alert(tmp_path):
    paths = home(tmp_path / "home", plan_for=(), h_qty=500, cash=50_000.0)
    raise_alert(paths, "data_stall", session=PREV, at=f"{PREV}T15:00:00Z")
    with open(alerts_path(paths), "ab") as fh:
        fh.write(b'{"at": "2020-03-06T15:05:00Z", "session": "2020-03-06", "co')  # torn
    run_session(paths, settings(), SESSION, bars=session_bars(SESSION, "", drop=0.06))
    codes = [a["code"] for a in read_alerts(paths)]
    assert codes == ["data_stall", "kill_switch"]
    assert bad_alert_lines(paths) == [2]
    assert read_alerts(paths, SESSION)[0]["level"] == "CRITICAL"


def test_foreign_bytes_in_the_alert_log_never_block_a_run(tmp_path, caplog):
    paths = home(tmp_path / "home", plan_for=(), h_qty=500, cash=50_000.0)
    alerts_path(paths).parent.mkdir(parents=True, exist_ok=True)
    alerts_path(paths).write_bytes(b"\xff\xfe\xfa not utf-8\n\x80\x81\n")
    res = run_session(paths, settings(), SESSION, bars=session_bars(SESSION, "", drop=0.06))
    assert res.summary["kill_switch"] is True
    assert [a["code"] for a in read_alerts(paths)] == ["kill_switch"]
    assert bad_alert_lines(paths) == [1, 2]
    assert "2 line(s) are not alert records" in caplog.text
    listed = hcp(paths, "alerts")
    assert listed.exit_code == 0 and "Kill-switch armed" in listed.output


WRITER = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tasks.alerts import raise_alert
from tasks.paths import Paths
paths = Paths(Path({home!r}))
for i in range(25):
    raise_alert(paths, "data_stall", session="S", at="T", key=f"{{sys.argv[1]}}-{{i}}")
    raise_alert(paths, "kill_switch", session="S", at="T", level="CRITICAL")
"""


def test_concurrent_alert_writers_are_serialised(tmp_path):
    paths = Paths(tmp_path / "home")
    code = WRITER.format(root=str(PROJECT_ROOT), home=str(paths.home))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], cwd=PROJECT_ROOT)
             for n in range(6)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    rows = read_alerts(paths)
    assert bad_alert_lines(paths) == []
    assert sum(a["code"] == "data_stall" for a in rows) == 150
    assert sum(a["code"] == "kill_switch" for a in rows) == 1


# --- the daily run: its outputs and alerts commit with its run record ------------------------

def _daily_child(paths: Paths, day: str, env: dict[str, str], kill_at: str | None = None,
                 fault: str | None = None) -> int:
    """The daily flow for ``day`` in a child process (its own temporary Prefect server); the
    child's whole process group is killed when it returns."""
    code = f"""
import importlib, os, signal, sys
sys.path.insert(0, {str(PROJECT_ROOT)!r})
spec = os.environ.get("TEST_KILL_AT", "")
if spec:  # "module:attr:n": SIGKILL right after the n-th call
    mod, attr, n = spec.split(":")
    owner = importlib.import_module(mod)
    orig, calls = getattr(owner, attr), [0]
    def dying(*a, **k):
        out = orig(*a, **k)
        calls[0] += 1
        if calls[0] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(owner, attr, dying)
from prefect.testing.utilities import prefect_test_harness
from flows.daily import daily
with prefect_test_harness(server_startup_timeout=120):
    daily(as_of={day!r})
"""
    full = {**os.environ, **SMALL_ENV, "HCP_HOME": str(paths.home), **env}
    full.pop("HCP_FAULT_INJECT", None)
    if kill_at:
        full["TEST_KILL_AT"] = kill_at
    if fault:
        full["HCP_FAULT_INJECT"] = fault
    log = paths.home.parent / f"daily_child_{time.monotonic_ns()}.log"
    with open(log, "wb") as err:  # a file, not a pipe: the server child may outlive the child
        proc = subprocess.Popen([sys.executable, "-c", code], env=full, cwd=PROJECT_ROOT,
                                start_new_session=True, stdout=err, stderr=err)
        try:
            proc.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its temporary server, if left behind
    if proc.returncode not in (0, -9, 137):
        raise AssertionError(log.read_text(errors="replace")[-3000:])
    return proc.returncode


@pytest.fixture
def demo(trained_copy) -> Paths:
    return trained_copy


def test_daily_alerts_are_raised_by_the_rerun_after_a_kill_after_the_record(demo, monkeypatch):
    assert _daily_child(demo, DAY, EMPTY, kill_at="tasks.plan.runs:write_record:1") == -9
    record = read(demo.runs / f"daily_{DAY}.json")
    assert record["empty_book"] and not read_alerts(demo, DAY)
    listed = [s["code"] for s in record.get("alerts", [])] or ["rl_missing", "empty_book"]
    assert "empty_book" in listed
    for k, v in EMPTY.items():
        monkeypatch.setenv(k, v)
    from flows.daily import daily

    with prefect_test_harness(server_startup_timeout=120):
        again = daily(as_of=DAY)
        assert again.cached  # "unchanged" ...
        assert [a["code"] for a in read_alerts(demo, DAY)] == listed  # ... and raised
        _block_alerts(demo)  # a state folder that cannot be written: the run fails late
        with pytest.raises(OSError):
            daily(as_of=DAY, force=True)
        alerts_path(demo).rmdir()
        alerts_path(demo).write_text("")
        assert daily(as_of=DAY).cached
    assert [a["code"] for a in read_alerts(demo, DAY)] == listed


def test_a_daily_run_killed_while_writing_its_outputs_commits_nothing(demo, monkeypatch):
    assert _daily_child(demo, DAY, {}) == 0
    plan = demo.val / "plans" / DAY / "trade_plan.csv"
    first = plan.read_bytes()
    stray = plan.parent / ".tmp-left.csv"
    stray.write_bytes(b"")
    os.utime(stray, (time.time() - 3600,) * 2)
    # a re-run with other inputs (another plan) killed after the new plan, before its audit,
    # health and latest copies
    assert _daily_child(demo, DAY, EMPTY, fault="daily_outputs:2") == 137
    assert plan.read_bytes() != first and not stray.exists()
    line = one_line(hcp(demo, "run", "intraday", "--date", EXEC))
    assert line == (f"error: session {EXEC} executes the plan of {DAY}, but the daily run for "
                    f"{DAY} was interrupted while writing its outputs (reports/runs/daily_{DAY}"
                    f".json says 'writing'): re-run `hcp run daily --date {DAY}`")
    with pytest.raises(ledger.SessionOrderError, match="interrupted while writing"):
        run_session(demo, settings(), EXEC)
    for k, v in EMPTY.items():
        monkeypatch.setenv(k, v)
    from flows.daily import daily

    with prefect_test_harness(server_startup_timeout=120):
        res = daily(as_of=DAY)
        assert not res.cached
        assert ledger.plan_commit_problem(demo, DAY) is None
        plan.write_text(plan.read_text() + "\n")  # a foreign write after the commit
        assert "is not the plan its run record" in ledger.plan_commit_problem(demo, DAY)


def test_a_stray_session_file_no_longer_crashes_the_daily_risk_triggers(demo):
    from flows.daily import daily

    with prefect_test_harness(server_startup_timeout=120):
        daily(as_of=DAY)
        run_session(demo, settings(), EXEC)
        stray = state(demo) / "sessions" / ".tmp-k1ll3d.json"
        stray.write_bytes(b"")
        os.utime(stray, (time.time() - 3600,) * 2)
        res = daily(as_of=EXEC)
    assert res.status in ("OK", "WARNING") and not stray.exists()
    health = read(Path(res.outputs["health"]))
    assert health["book"]["as_of_session"] == EXEC


def test_folder_readers_never_take_a_temporary_file_for_a_session(tmp_path):
    """A stray ``.tmp-*.json`` (a write cut by a kill) sorts before the dated files; no reader
    that lists a folder of session files takes it for one."""
    import json

    from tasks.escalation.inputs import latest_nightly, session_records
    from tasks.operator.status import file_upto, latest_file
    from tasks.paths import Paths, state_dir

    paths = Paths(tmp_path)
    sessions, nightly = state_dir(paths) / "sessions", paths.reports / "nightly"
    for folder in (sessions, nightly):
        folder.mkdir(parents=True)
        (folder / "2024-01-02.json").write_text(json.dumps({"session": "2024-01-02"}))
        (folder / ".tmp-zz9.json").write_bytes(b"")          # 0 bytes, as a kill leaves it
    assert [r["session"] for r in session_records(paths, "2024-12-31", 5)] == ["2024-01-02"]
    assert latest_nightly(paths, "2024-12-31") == nightly / "2024-01-02.json"
    (nightly / ".tmp-2024-12-30.json").write_bytes(b"")
    assert latest_file(nightly, "*.json") == nightly / "2024-01-02.json"
    assert file_upto(nightly, "*.json", "2024-12-31") == nightly / "2024-01-02.json"
