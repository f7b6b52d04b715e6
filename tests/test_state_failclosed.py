"""State files fail closed: every way a state file can be damaged stops the command with one
line naming the file (exit 2, no traceback) and leaves the safety state on its safe side:
the LLM budget spent, the quarantine active, demo forced, no default policy in place of the
escalated one. Repairs rebuild a file from evidence or write the safe state, and are logged.

Homes are built by hand in a temporary folder (a valid file of each kind plus the history that
says it exists); the damage matrix runs through the library, and the real ``hcp`` entry point
in a subprocess for one damage of every kind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tasks.alerts import read_alerts
from tasks.escalation import budget as bud
from tasks.escalation import record as rec
from tasks.execution import overrides as ops
from tasks.execution import quarantine as q
from tasks.execution.gates import live_gates
from tasks.execution.sessions import sessions_after, window
from tasks.models import manifests as man
from tasks.paths import Paths
from tasks.policy import (
    current_policy,
    default_policy,
    load_version,
    policy_dir,
    policy_version,
    save_policy,
)
from tasks.settings import load_settings
from tasks.statefiles import StateFileError, read_jsonl, repairs_path
from tests.state_helpers import damage

DAY = "2020-03-09"                      # a Monday
KILLS = ["2020-03-02", "2020-03-03", "2020-03-04"]
CAL = "XNYS"
HCP = Path(sys.executable).with_name("hcp")
ENTRY = [str(HCP)] if HCP.is_file() else [sys.executable, "-m", "flows.cli"]
TOKEN = "op-token-for-state-tests"
FORGED = "drill\n2020-03-09 CRITICAL Kill-switch \x1b[31mtripped\x1b[0m"


# --------------------------------------------------------------------------- a home by hand

def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))


def escalated(settings):
    """The policy an escalation made current: a blocked name, a tighter core cap."""
    default = default_policy(settings)
    return default.replace(do_not_trade=["AAA"], bucket_caps={**default.bucket_caps, "core": 0.5})


def build_home(root: Path) -> Paths:
    """One valid file of every kind, with the history that says each exists."""
    paths, settings = Paths(root), load_settings()
    # budget: 3 remote attempts spent, shown by the session's escalation record
    for n in range(3):
        assert bud.reserve(paths, DAY, 3, at=f"{DAY}T20:0{n}:00Z", call_type="REGIME_AUDITOR",
                           model="gpt-5").granted
    v0 = policy_version(default_policy(settings))
    _json(rec.record_path(paths, DAY), {"session": DAY, "budget": {"used": 3, "limit": 3},
                                        "calls": [{
        "call_type": "REGIME_AUDITOR", "at": f"{DAY}T20:00:00Z", "status": "no_opinion",
        "backend": None, "policy_before": v0, "policy_after": v0, "triggers": {},
        "attempts": [{"backend": "remote:gpt-5", "status": "server_error",
                      "budget": {"used": n, "limit": 3}} for n in (1, 2, 3)]}]})
    # quarantine: three kill-switch days (the session records show them)
    state = q.empty_state()
    for day in KILLS:
        state, _ = q.record_kill_day(state, day, window(CAL, day, 10), q.Rules(), f"{day}T19:00Z")
        _json(paths.data / "state" / "sessions" / f"{day}.json", {"session": day,
                                                                  "kill_switch": True})
    q.save_state(paths, state)
    # operator: a forced demo (alerted)
    ops.force_demo(paths, by="ops", reason="drill", at=f"{DAY}T08:00:00Z")
    # policy: an escalated version in force
    save_policy(paths, escalated(settings), v0, "REGIME_AUDITOR escalation", f"{DAY}T21:00:00Z")
    # models: an active baseline's manifest and cut points
    _json(man.registry_path(paths), {"active": "b1", "shadow": None, "history": [
        {"slot": "active", "from": None, "to": "b1", "at": "2020-01-01T00:00:00Z"}]})
    _json(man.manifest_path(paths, "b1"), {
        "id": "b1", "created_at": "2020-01-01T00:00:00Z", "feature_schema_hash": "abc",
        "training_span": {"start": "2017-01-03", "end": "2019-12-31"},
        "horizons": {"short": 5, "mid": 20}, "thresholds": {"stop_atr": 1.8}, "payoff": {},
        "metrics": {"overall": [{"horizon": "short", "auc": 0.52}]}})
    _json(man.cuts_path(paths, "b1"), {"feature": "atr_pct", "low_med": 0.01, "med_high": 0.03,
                                       "fit_start": "2017-01-03", "fit_end": "2019-12-31",
                                       "n_obs": 1000})
    return paths


@pytest.fixture
def home(tmp_path, monkeypatch) -> Paths:
    monkeypatch.setenv("HCP_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    return build_home(tmp_path)


def version_file(paths: Paths) -> Path:
    return policy_dir(paths) / f"{policy_version(escalated(load_settings()))}.json"


#: kind -> the file damaged
FILES = {
    "budget": lambda p: bud.budget_path(p, DAY),
    "escalation-record": lambda p: rec.record_path(p, DAY),
    "quarantine": q.quarantine_path,
    "operator": ops.operator_path,
    "policy-pointer": lambda p: policy_dir(p) / "current.json",
    "policy-version": version_file,
    "registry": man.registry_path,
    "model-manifest": lambda p: man.manifest_path(p, "b1"),
    "regime-cuts": lambda p: man.cuts_path(p, "b1"),
}


DAMAGES = ["truncated", "garbled", "emptied", "{}", "[]", "deleted"]
# Deleting these two is not damage: without a registry there is no active model (the daily
# command refuses: no plan), and a session's escalation record may legitimately be absent
# while its budget counts an attempt (a process killed between the two writes); the budget
# file stays the count, so nothing is reset (test_deleting_evidence_resets_nothing).
NOT_DAMAGE = {("registry", "deleted"), ("escalation-record", "deleted")}
CASES = [(k, d) for k in FILES for d in DAMAGES if (k, d) not in NOT_DAMAGE]


def assert_one_line(exc: BaseException, path: Path) -> None:
    msg = str(exc)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    assert "hcp state repair" in msg or "restore it" in msg or "retrain" in msg, msg


def assert_safe(paths: Paths) -> None:
    """Whatever was damaged, nothing reads as less safe than the truth."""
    settings = load_settings()
    assert not bud.reserve(paths, DAY, 3, at="t", call_type="X", model="m").granted
    assert bud.read_budget(paths, DAY, 3)["used"] >= 3
    assert q.status(q.load_state(paths), "2020-03-10", sessions_after(CAL)).active
    assert ops.operator_overrides(paths)["forced_demo"] is True
    try:
        gates = {g.name: g.ok for g in live_gates(paths, settings, "2020-03-10",
                                                  {"REAL_EXECUTION_ENABLED": "true"})}
    except (ValueError, AttributeError):  # tasks.models.skill reads a damaged registry raw
        gates = None
    if gates is not None:
        assert not gates["no active quarantine"] and not gates["demo not forced by an operator"]
    try:
        policy, _ = current_policy(paths, settings)
    except StateFileError:
        return  # refused: no policy at all rather than the default
    assert policy.do_not_trade == ["AAA"] and policy.bucket_caps["core"] == 0.5


# --------------------------------------------------------------------------- the matrix

@pytest.mark.parametrize(("kind", "how"), CASES)
def test_damaged_state_stops_with_one_line_and_reads_safe(home, kind, how):
    from flows import preflight

    assert_safe(home)  # the intact home is already safe: budget spent, quarantine, forced demo
    path = FILES[kind](home)
    damage(path, how)
    with pytest.raises(StateFileError) as err:
        preflight.state_files(home, load_settings(), preflight.INTRADAY_STATE, DAY)
    assert_one_line(err.value, path)
    assert_safe(home)


@pytest.mark.parametrize(("kind", "how"), sorted(NOT_DAMAGE))
def test_deleting_evidence_resets_nothing(home, kind, how):
    damage(FILES[kind](home), how)
    assert_safe(home)


# one damage of every kind through the real command line: `hcp run intraday` checks every
# state file its flow reads before Prefect starts (explicit bars: no bar store needed)
CLI_CASES = [("budget", "{}"), ("escalation-record", "truncated"), ("quarantine", "deleted"),
             ("operator", "[]"), ("policy-pointer", "deleted"),
             ("policy-version", "garbled"), ("registry", "[]"),
             ("model-manifest", "emptied"), ("regime-cuts", "{}")]


def hcp(paths: Paths, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HCP_")}
    clean.update({"HCP_HOME": str(paths.home), "COLUMNS": "200", **env})
    return subprocess.run([*ENTRY, *args], capture_output=True, text=True, env=clean,
                          cwd=paths.home, timeout=120)


@pytest.mark.parametrize(("kind", "how"), CLI_CASES)
def test_the_command_stops_with_one_line_naming_the_file(home, kind, how):
    path = FILES[kind](home)
    damage(path, how)
    res = hcp(home, "run", "intraday", "--date", DAY, "--bars", str(home.home / "bars.parquet"))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(f"error: {path}"), lines[0]
    assert not (home.home / ".prefect").exists() or not any((home.home / ".prefect").iterdir())


def test_state_check_lists_every_file_and_exits_2(home):
    ok = hcp(home, "state", "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "none damaged" in ok.stdout
    for kind in ("budget", "escalation-record", "quarantine", "operator", "policy", "registry",
                 "model"):
        assert f"ok       {kind}" in ok.stdout
    damage(q.quarantine_path(home), "{}")
    damage(ops.operator_path(home), "deleted")
    bad = hcp(home, "state", "check")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "damaged  quarantine         data/state/quarantine.json: wrong shape" in bad.stdout
    assert ("damaged  operator           data/state/operator.json: missing although its "
            "history says it exists; repair it with `hcp state repair operator") in bad.stdout
    assert "2 damaged state file(s)" in bad.stderr


# --------------------------------------------------------------------------- budget

def test_the_budget_cannot_be_reset_by_deleting_it_or_a_negative_count(home):
    path = bud.budget_path(home, DAY)
    for content in (None, b'{"session": "2020-03-09", "limit": 3, "used": -5, "attempts": []}',
                    b'{"session": "2020-03-09", "limit": 3, "used": 0, "attempts": []}', b"{}"):
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(content)
        for _ in range(2):
            res = bud.reserve(home, DAY, 3, at="t", call_type="REGIME_AUDITOR", model="gpt-5")
            assert not res.granted and res.damaged and res.damaged.startswith(str(path))
        assert bud.read_budget(home, DAY, 3)["used"] == 3
        assert not path.exists() if content is None else path.read_bytes() == content
    alerts = [a for a in read_alerts(home, DAY) if a["key"] == "budget_file_damaged"]
    assert len(alerts) == 1 and "counted as spent" in alerts[0]["text"]
    # the repair rebuilds the count from the session's escalation record: still spent
    import tasks.statespecs  # noqa: F401
    from tasks.statefiles import RepairRequest, run_repair

    logged = run_repair(home, load_settings(), "budget",
                        RepairRequest(by="ops", reason="file lost", at="t", session=DAY))
    assert "rebuilt from the escalation record (3 attempts)" in logged["action"]
    assert bud.read_budget(home, DAY, 3)["used"] == 3 and "damaged" not in \
        bud.read_budget(home, DAY, 3)
    assert read_jsonl(repairs_path(home.data / "state")).records[-1]["file"] == "budget"


def test_a_budget_without_evidence_is_repaired_spent(tmp_path):
    paths = Paths(tmp_path)
    bud.budget_path(paths, DAY).parent.mkdir(parents=True)
    bud.budget_path(paths, DAY).write_bytes(b'{"used": 1')
    out = bud.repair_budget(paths, DAY, 3, at="t")
    assert out["used"] == 3 and not bud.reserve(paths, DAY, 3, at="t", call_type="X",
                                                model="m").granted


def test_a_damaged_budget_sends_nothing_and_the_local_reasoner_answers(tmp_path, monkeypatch):
    from tasks.escalation.service import escalate
    from tests.llm_fakes import FakeServer
    from tests.test_escalation_remote import request

    with FakeServer() as server:
        monkeypatch.setenv("HCP_HOME", str(tmp_path))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
        monkeypatch.setenv("HCP_REMOTE_BASE_URL", server.url + "/v1")
        monkeypatch.setenv("HCP_LOCAL_BACKEND", "template")
        paths, settings = Paths(tmp_path), load_settings()
        day = "2008-10-10"
        bud.budget_path(paths, day).parent.mkdir(parents=True)
        bud.budget_path(paths, day).write_bytes(b'{"session": "2008-10-10", "limit": 3, '
                                                b'"used": -5, "attempts": []}')
        out = escalate(paths, settings, session=day, at=f"{day}T20:00:00Z",
                       call_type="REGIME_AUDITOR", request=request(), triggers={},
                       universe={"AAA"})
        assert server.requests == []
        assert out.attempts[0]["status"] == "budget_exhausted"
        assert len(out.attempts) > 1  # the local chain was asked (the template: no opinion)
        codes = [a["code"] for a in read_alerts(paths, day)]
        assert "remote_unavailable" in codes
        damaged = [a for a in read_alerts(paths, day) if a["key"] == "budget_file_damaged"]
        assert len(damaged) == 1 and "damaged, counted as spent" in damaged[0]["text"]
        assert rec.read_record(paths, day)["budget"]["used"] == 3  # counted spent, not -5


# --------------------------------------------------------------------------- quarantine

def test_quarantine_deleted_while_execution_records_show_kill_days(home):
    settings = load_settings()
    q.quarantine_path(home).unlink()
    with pytest.raises(StateFileError, match="missing although its history says it exists"):
        q.read_state(home)
    status = q.status(q.load_state(home), "2020-03-10", sessions_after(CAL))
    assert status.active and status.kind == "damaged_state"
    with pytest.raises(StateFileError):
        q.clear_quarantine(home, settings, at="t", by="ops", reason="nope", source="operator",
                           session="2020-03-05")
    res = hcp(home, "state", "repair", "quarantine", "--by", "ops", "--reason", "file lost")
    assert res.returncode == 0, res.stderr
    assert "rebuilt from 3 kill-switch day(s)" in res.stdout
    state = q.read_state(home)
    assert state["kill_days"] == KILLS and state["quarantine"]["start"] == KILLS[-1]
    assert q.status(state, "2020-03-05", sessions_after(CAL)).kind == "quarantine"


def test_a_kill_day_missing_from_the_file_is_damage(home):
    state = q.read_state(home)
    state["kill_days"] = KILLS[:2]
    q.quarantine_path(home).write_text(json.dumps(state))
    with pytest.raises(StateFileError, match=r"lacks the kill-switch day\(s\) 2020-03-04"):
        q.read_state(home)


def test_clear_quarantine_names_its_session(home, monkeypatch):
    from tests.exec_helpers import write_book

    settings = load_settings()
    res = hcp(home, "quarantine", "clear", "--by", "ops", "--reason", "verified data error",
              "--session", "2020-03-05")
    assert res.returncode == 0, res.stderr
    assert "cleared on 2020-03-05: ['quarantine', 'cooloff'] by ops" in res.stdout
    state = q.read_state(home)
    assert state["history"][-1]["session"] == "2020-03-05"
    assert not q.status(state, "2020-03-05", sessions_after(CAL)).active
    # the API takes the session in the body; without one it is the book's session
    q.quarantine_path(home).unlink()
    build = q.empty_state()
    for day in KILLS:
        build, _ = q.record_kill_day(build, day, window(CAL, day, 10), q.Rules(), "t")
    q.save_state(home, build)
    write_book(home, 100_000.0, [], as_of=KILLS[-1])
    from fastapi.testclient import TestClient

    from tasks.operator.api import create_app

    monkeypatch.setenv("HCP_OPERATOR_TOKEN", TOKEN)
    client = TestClient(create_app(home, settings))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = client.post("/api/clear-quarantine", headers=auth,
                      json={"by": "ops", "reason": "xyz", "session": "03/05/2020"})
    assert bad.status_code == 422
    ok = client.post("/api/clear-quarantine", headers=auth,
                     json={"by": "ops", "reason": "verified\x1b[2J"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["session"] == KILLS[-1] and ok.json()["reason"] == "verified\\x1b[2J"


# --------------------------------------------------------------------------- operator

def test_operator_file_emptied_or_wrong_shape_counts_as_forced(home):
    for content in (b"{}", b"[]", b'{"forced_demo": false, "history": []}'):
        ops.operator_path(home).write_bytes(content)
        forced = ops.operator_overrides(home)
        assert forced["forced_demo"] is True and forced["damaged"].startswith(
            str(ops.operator_path(home)))
        with pytest.raises(StateFileError):
            ops.force_demo(home, by="ops", reason="again", at="t")
    res = hcp(home, "state", "repair", "operator", "--by", "ops", "--reason", "damaged file")
    assert res.returncode == 0, res.stderr
    assert ops.read_overrides(home)["forced_demo"] is True
    lifted = hcp(home, "state", "lift-demo", "--by", "ops", "--reason", "drill over")
    assert lifted.returncode == 0 and "forced demo lifted by ops" in lifted.stdout
    assert ops.read_overrides(home)["forced_demo"] is False
    ops.operator_path(home).unlink()  # deleting it does not lift it again later
    assert ops.operator_overrides(home)["forced_demo"] is True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_100_concurrent_force_demo_posts_are_all_recorded(tmp_path, monkeypatch):
    import uvicorn

    from tasks.operator.api import create_app

    monkeypatch.setenv("HCP_OPERATOR_TOKEN", TOKEN)
    paths, settings = Paths(tmp_path), load_settings()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(paths, settings), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    codes: list[int] = []

    def post(i: int) -> None:
        r = httpx.post(base + "/api/force-demo", headers=auth, timeout=60,
                       json={"by": f"op{i}", "reason": f"drill number {i}"})
        codes.append(r.status_code)

    try:
        threads = [threading.Thread(target=post, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # a retried request (same request id) is recorded once
        for _ in range(2):
            r = httpx.post(base + "/api/force-demo", headers=auth, timeout=60,
                           json={"by": "ops", "reason": "retried", "request_id": "req-1"})
            assert r.status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)
    assert codes == [200] * 100
    history = ops.read_overrides(paths)["history"]
    assert len(history) == 101 and len({h["request_id"] for h in history}) == 101
    assert {h["by"] for h in history[:100]} == {f"op{i}" for i in range(100)}
    alerts = [a for a in read_alerts(paths) if a["code"] == "forced_demo"]
    assert len(alerts) == 101  # one alert per request


def test_operator_text_is_escaped_in_status_alerts_and_the_log(home, caplog):
    ops.force_demo(home, by="mallory\x1b[2J", reason=FORGED, at=f"{DAY}T09:00:00Z")
    # an alert an older version stored raw is printed escaped too
    with open(home.data / "state" / "alerts.jsonl", "a") as fh:
        fh.write(json.dumps({"at": f"{DAY}T09:30:00Z", "session": DAY, "code": "legacy",
                             "level": "WARN", "key": "", "data": {},
                             "text": "old\n2020-03-09 CRITICAL Kill-switch \x1b[31mraw"}) + "\n")
    saved = json.loads(ops.operator_path(home).read_text())
    assert "\n" not in saved["reason"] and "\x1b" not in saved["reason"] + saved["by"]
    for args in (("status",), ("alerts",)):
        res = hcp(home, *args)
        assert res.returncode == 0, res.stderr
        text = res.stdout + res.stderr
        assert "\x1b" not in text
        assert not any(line.lstrip().startswith("2020-03-09 CRITICAL") for line in
                       text.splitlines()), text
        assert "drill\\n2020-03-09 CRITICAL Kill-switch \\x1b[31mtripped" in text
        assert "old\\n2020-03-09 CRITICAL Kill-switch \\x1b[31mraw" in text
    assert all("\n" not in r.getMessage() and "\x1b" not in r.getMessage()
               for r in caplog.records)


# --------------------------------------------------------------------------- policy

def test_an_altered_policy_version_is_refused(home):
    settings = load_settings()
    path = version_file(home)
    meta = json.loads(path.read_text())
    meta["policy"]["do_not_trade"] = []
    path.write_text(json.dumps(meta))
    with pytest.raises(StateFileError, match="hashes to pol-.*not its id .*the file was edited"):
        current_policy(home, settings)
    with pytest.raises(StateFileError):
        load_version(home, settings, meta["version"])
    res = hcp(home, "policy", "show")
    assert res.returncode == 2 and res.stderr.startswith(f"error: {path}: content hashes to")


def test_the_pointer_deleted_or_swapped_after_an_escalation_is_refused(home):
    settings = load_settings()
    pointer = policy_dir(home) / "current.json"
    v1 = policy_version(escalated(settings))
    pointer.unlink()
    with pytest.raises(StateFileError, match="missing although its history says it exists"):
        current_policy(home, settings)
    # swapped to the configured default (a valid file, a silent revert)
    pointer.write_text(json.dumps({"version": policy_version(default_policy(settings))}))
    with pytest.raises(StateFileError, match=f"but the policy history's last change made {v1}"):
        current_policy(home, settings)
    res = hcp(home, "state", "repair", "policy", "--by", "ops", "--reason", "pointer lost")
    assert res.returncode == 0 and f"pointer set to {v1}" in res.stdout
    policy, version = current_policy(home, settings)
    assert version == v1 and policy.do_not_trade == ["AAA"]


# --------------------------------------------------------------------------- models

def test_registry_manifest_and_cuts_of_the_wrong_shape_name_their_file(home):
    from tasks.models.registry import load_baseline, read_registry

    man.cuts_path(home, "b1").write_text(json.dumps({
        "feature": "atr_pct", "low_med": 0.05, "med_high": 0.01, "fit_start": "a",
        "fit_end": "b", "n_obs": 3}))
    with pytest.raises(StateFileError, match="low_med 0.05 is above med_high 0.01"):
        load_baseline(home, "b1")
    man.manifest_path(home, "b1").write_text(json.dumps({"id": "b1", "horizons": []}))
    with pytest.raises(StateFileError, match="manifest.json: wrong shape at horizons"):
        load_baseline(home, "b1")
    man.registry_path(home).write_text("[]")
    with pytest.raises(StateFileError, match="registry/manifest.json: wrong shape at top level"):
        read_registry(home)
    res = hcp(home, "state", "repair", "registry", "--by", "ops", "--reason", "bad shape")
    assert res.returncode == 0 and read_registry(home)["active"] is None
