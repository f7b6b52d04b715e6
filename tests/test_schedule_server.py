"""Schedules on a real Prefect server: ``prefect server start`` on loopback, the project's
deployments from prefect.yaml, and a run that the server's scheduler creates and a process
worker completes.

Everything runs against a temporary PREFECT_HOME; the worker's runs use a temporary HCP_HOME
with a tiny demo bar store. Analytics are off and the scheduler loops every second, so the
module takes well under two minutes.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.paths import Paths
from tasks.settings import PROJECT_ROOT, load_settings
from tests.conftest import use_home

pytestmark = pytest.mark.slow

PREFECT = [sys.executable, "-m", "prefect"]
# what a broken scheduler writes to the server's log (SQLAlchemy 2.1 with Prefect 3.8)
SCHEDULER_ERRORS = ("InvalidRequestError", "Can't evaluate bulk DML")
CHECK_POOL = "schedule-check"
CHECK_DEPLOYMENT = "nightly-every-5s"


@dataclass(frozen=True)
class Server:
    api: str            # http://127.0.0.1:<port>/api
    home: Path          # its PREFECT_HOME (prefect.db lives there)
    log: Path           # its stdout and stderr
    env: dict[str, str]  # environment for CLI calls and workers against it

    def request(self, method: str, path: str, **kw: Any) -> Any:
        resp = httpx.request(method, self.api + path, timeout=10, **kw)
        resp.raise_for_status()
        return resp.json()

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {d["name"]: d for d in self.request("POST", "/deployments/filter", json={})}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def _stop(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process group started for ``proc``, then SIGKILL what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with suppress(ProcessLookupError):  # children (flow-run processes) may outlive the leader
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=grace)


def _base_env(prefect_home: Path, api: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HCP_"))}
    env.update(
        PREFECT_HOME=str(prefect_home), PREFECT_API_URL=api, DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false", HCP_PROJECT_DIR=str(PROJECT_ROOT),
        HCP_HOME=str(prefect_home / "hcp-home"),
    )
    return env


def prefect(server: Server, *args: str, timeout: float = 60) -> str:
    """One ``prefect`` CLI call from the project folder, stdin closed; its output."""
    try:
        proc = subprocess.run([*PREFECT, *args], cwd=PROJECT_ROOT, env=server.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`prefect {' '.join(args)}` did not finish within {timeout:.0f} s "
                    f"(waiting for input?):\n{exc.stdout}\n{exc.stderr}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`prefect {' '.join(args)}` exited {proc.returncode}:\n{out}"
    return out


def assert_server_clean(server: Server) -> None:
    """No scheduler error in the server's log, and no telemetry attempted."""
    text = server.log_text()
    for needle in SCHEDULER_ERRORS:
        assert needle not in text, f"the server's scheduler failed ({needle}):\n{text[-4000:]}"
    assert "send telemetry" not in text, f"the server tried to send telemetry:\n{text[-4000:]}"
    with closing(sqlite3.connect(server.home / "prefect.db", timeout=10)) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM configuration")]
    assert "TELEMETRY_SESSION" not in keys, "the server's telemetry service ran"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _base_env(home, api)
    server_env = {**env,
                  "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
                  "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
                  "PREFECT_SERVER_UI_ENABLED": "false"}
    server_env.pop("PREFECT_API_URL")
    log = home / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_ROOT, env=server_env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited {proc.returncode} before it was ready:\n"
                            f"{_tail(log)}")
            try:
                if httpx.get(api + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not healthy on {api} after 60 s:\n{_tail(log)}")
            time.sleep(0.3)
        yield Server(api=api, home=home, log=log, env=env)
    finally:
        _stop(proc)


def test_prefect_yaml_deploys_without_prompts(server):
    """The documented commands: the pool, then every deployment of prefect.yaml, stdin closed."""
    prefect(server, "work-pool", "create", "local", "--type", "process")
    out = prefect(server, "deploy", "--all", "--no-prompt")
    deps = server.deployments()
    assert {"daily-premarket", "nightly", "replay", "backtest", "train"} <= set(deps), out

    def crons(name: str) -> list[tuple[str, str, bool]]:
        return [(s["schedule"].get("cron"), s["schedule"].get("timezone"), s["active"])
                for s in deps[name]["schedules"]]

    assert crons("daily-premarket") == [("30 7 * * 1-5", "America/New_York", True)]
    assert crons("nightly") == [("30 18 * * 1-5", "America/New_York", True)]
    assert all(deps[n]["schedules"] == [] for n in ("replay", "backtest", "train"))
    assert all(deps[n]["work_pool_name"] == "local"
               for n in ("daily-premarket", "nightly", "replay", "backtest", "train"))
    # the scheduler fills in the upcoming runs of both crons (none for replay)
    ids = {deps[n]["id"]: n for n in ("daily-premarket", "nightly", "replay")}
    deadline = time.monotonic() + 30
    while True:
        runs = server.request("POST", "/flow_runs/filter", json={
            "flow_runs": {"deployment_id": {"any_": list(ids)}}})
        scheduled = {ids[r["deployment_id"]] for r in runs
                     if r["state_type"] == "SCHEDULED" and r["auto_scheduled"]}
        if {"daily-premarket", "nightly"} <= scheduled:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"after 30 s the scheduler had created upcoming runs only for "
                        f"{sorted(scheduled)}:\n{_tail(server.log)}")
        time.sleep(0.5)
    assert "replay" not in scheduled
    # forced prompts with stdin closed: a question (e.g. replay's schedule, were it not set
    # in prefect.yaml) would end in EOFError
    out = prefect(server, "deploy", "--all", "--prompt")
    assert "Would you like" not in out, f"prefect deploy asked a question:\n{out}"
    assert server.deployments()["replay"]["schedules"] == []
    assert_server_clean(server)


def _tiny_home(paths: Paths, mp: pytest.MonkeyPatch) -> None:
    """The smallest home the nightly flow completes on: a 4-symbol demo bar store."""
    use_home(mp, paths)
    import_bars(DemoSource(paths.demo, seed=11, n_symbols=4, n_sectors=2, start="2021-01-04",
                           end="2021-08-31"), load_settings(), paths)


def _check_deployment_file(folder: Path) -> Path:
    """prefect.yaml with only the nightly deployment, renamed, on its own pool, every 5 s,
    for the store's last session (its pull step and entrypoint as in the project's file)."""
    doc = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    nightly = next(d for d in doc["deployments"] if d["name"] == "nightly")
    quick = {**nightly, "name": CHECK_DEPLOYMENT, "parameters": {"date": "latest"},
             "schedules": [{"interval": 5, "active": True}], "work_pool": {"name": CHECK_POOL}}
    path = folder / "prefect.yaml"
    path.write_text(yaml.safe_dump({**doc, "deployments": [quick]}, sort_keys=False))
    return path


def _wait_for_pool(server: Server, worker: subprocess.Popen, worker_log: Path,
                   timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{server.api}/work_pools/{CHECK_POOL}", timeout=5).status_code != 200:
        if worker.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the worker did not create work pool {CHECK_POOL!r} within {timeout:.0f} s "
                        f"(exit code {worker.returncode}):\n{_tail(worker_log)}")
        time.sleep(0.3)


def _wait_for_completed_run(server: Server, deployment_id: str, worker: subprocess.Popen,
                            worker_log: Path, timeout: float = 75
                            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first Completed run of the deployment, and all its runs at that moment."""
    deadline = time.monotonic() + timeout
    while True:
        runs = server.request("POST", "/flow_runs/filter", json={
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}}})
        done = [r for r in runs if r["state_type"] == "COMPLETED"]
        if done:
            return done[0], runs
        failed = [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")]
        if failed or worker.poll() is not None or time.monotonic() > deadline:
            why = ("a scheduled run failed" if failed else
                   f"the worker exited {worker.returncode}" if worker.poll() is not None else
                   f"no run of {CHECK_DEPLOYMENT} Completed within {timeout:.0f} s")
            states = sorted({r["state_type"] for r in runs})
            pytest.fail(f"{why}; the scheduler had created {len(runs)} runs (states {states})\n"
                        f"--- worker log:\n{_tail(worker_log)}\n--- server log:\n{_tail(server.log)}")
        time.sleep(1)


def test_scheduler_creates_a_run_that_a_worker_completes(server, tmp_path, monkeypatch):
    """The nightly deployment of prefect.yaml (its pull step included) every 5 s on its own
    pool: the scheduler creates the runs, a ``process`` worker runs one to Completed."""
    paths = Paths(tmp_path / "home")
    worker_log = tmp_path / "worker.log"
    worker_env = {**server.env, "HCP_HOME": str(paths.home), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    # the worker creates its pool and starts up while the home and the deployment are made
    with worker_log.open("w") as out:
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", CHECK_POOL, "--type", "process", "--limit", "1"],
            cwd=tmp_path, env=worker_env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _tiny_home(paths, monkeypatch)
        prefect_file = _check_deployment_file(tmp_path)
        _wait_for_pool(server, worker, worker_log)
        prefect(server, "deploy", "--all", "--no-prompt", "--prefect-file", str(prefect_file))
        dep = server.deployments()[CHECK_DEPLOYMENT]
        assert [s["schedule"].get("interval") for s in dep["schedules"]] == [5.0]
        run, runs = _wait_for_completed_run(server, dep["id"], worker, worker_log)
    finally:
        _stop(worker)

    # every run, the completed one included, came from the schedule: the test starts none
    for r in runs:
        assert r["auto_scheduled"] is True and (r["created_by"] or {}).get("type") == "SCHEDULE", r
    assert run["parameters"] == {"date": "latest"}
    assert (paths.reports / "nightly" / "2021-08-31.json").is_file(), \
        f"the completed run wrote no nightly summary under {paths.home}"
    assert_server_clean(server)
