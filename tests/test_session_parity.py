"""The daily run and the replay decide a session through one function, byte for byte.

A session where an escalation fires (the regime trigger forced by config, the remote a local
fake OpenAI server answering a scripted regime audit, the local reasoner the template):

* ``hcp run daily`` for D in one home, then a replay of D in the same home: the replay reuses
  the recorded answer (no second request) and writes the same plan, audit, signals and health
  bytes under its own root;
* a replay of D in a second home that never ran D live asks the remote itself (one request,
  same scripted answer) and again writes the same bytes;
* the live home's files are byte-identical before and after the replay, except the replay's
  own folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from tasks.paths import Paths
from tests.conftest import use_home
from tests.llm_fakes import FakeServer, completion

DAY = "2021-12-30"
COMPARED = {
    "plan": "val/plans/{d}/trade_plan.csv",
    "audit": "val/plans/{d}/trade_plan_audit.parquet",
    "signals": "data/daily/{d}/signals_with_gates.parquet",
    "health": "reports/health/daily_health_{d}.json",
}


def regime_answer(symbols: list[str]) -> str:
    return json.dumps({"regime_label": "volatile",
                       "blend_weights_delta": {"short": 0.6, "mid": -0.05, "rl": -0.3},
                       "bucket_caps_delta": {"penny": -0.5, "fno": 0.3, "core": -0.02},
                       "do_not_trade_list": symbols})


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def fake():
    with FakeServer() as srv:
        yield srv


def escalating(mp: pytest.MonkeyPatch, paths: Paths, fake: FakeServer) -> None:
    use_home(mp, paths)
    mp.setenv("OPENAI_API_KEY", "sk-test-parity")
    mp.setenv("HCP_REMOTE_BASE_URL", fake.url + "/v1")
    mp.setenv("HCP_LOCAL_BACKEND", "template")
    mp.setenv("HCP_ESCALATION__REGIME_VOL_Z", "0")
    mp.setenv("HCP_ESCALATION__REGIME_CORR", "1")


def snapshot(home: Path, skip: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under ``home`` except those under the ``skip`` folders."""
    out = {}
    for path in sorted(home.rglob("*")):
        rel = path.relative_to(home).as_posix()
        if path.is_file() and not rel.startswith(skip):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def outputs(root: Path) -> dict[str, bytes]:
    return {k: (root / v.format(d=DAY)).read_bytes() for k, v in COMPARED.items()}


def first_symbols(home: Paths) -> list[str]:
    from tasks.data.store import load_constituents

    return sorted(load_constituents(home.store)["symbol"].astype(str))[:2]


def test_daily_and_replay_decide_a_session_byte_identically(trained_home, tmp_path, harness,
                                                            fake, monkeypatch):
    from flows.daily import daily
    from flows.replay import run_replay

    live = Paths(tmp_path / "live")
    shutil.copytree(trained_home.home, live.home)
    escalating(monkeypatch, live, fake)
    answer = regime_answer(first_symbols(live))
    fake.push(("json", completion(answer)))
    daily(as_of=DAY)
    assert len(fake.requests) == 1
    health = json.loads((live.home / COMPARED["health"].format(d=DAY)).read_text())
    calls = health["escalation"]["calls"]
    assert [c["status"] for c in calls] == ["applied"], calls
    assert health["policy_version"] == calls[0]["policy_after"] != calls[0]["policy_before"]
    live_out = outputs(live.home)

    before = snapshot(live.home, ("reports/replay/",))
    res = run_replay(DAY, DAY)
    assert len(fake.requests) == 1, "a session escalated live reuses its recorded answer"
    assert snapshot(live.home, ("reports/replay/",)) == before, "the replay wrote into the home"
    root = Path(res.state_root)
    assert root.is_relative_to(live.home / "reports" / "replay")
    replay_out = outputs(root)
    for name in COMPARED:
        assert replay_out[name] == live_out[name], f"{name} differs between daily and replay"

    # a home that never ran D live: the replay runs the escalation chain itself
    other = Paths(tmp_path / "other")
    shutil.copytree(trained_home.home, other.home)
    escalating(monkeypatch, other, fake)
    fake.push(("json", completion(answer)))
    res2 = run_replay(DAY, DAY)
    assert len(fake.requests) == 2, "the replay asked the remote once"
    other_out = outputs(Path(res2.state_root))
    for name in COMPARED:
        assert other_out[name] == live_out[name], f"{name} differs from the daily run's"
    record = json.loads((Path(res2.state_root) / "reports" / "escalations" / f"{DAY}.json")
                        .read_text())
    assert [c["call_type"] for c in record["calls"]] == ["REGIME_AUDITOR"]
    assert not (other.home / "reports" / "escalations").exists()
