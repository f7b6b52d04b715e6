"""Errors the command line refuses before any flow (and Prefect) starts: the real ``hcp`` entry
point in a subprocess, on a tiny home (three demo symbols, 2020-01-02 .. 2020-09-30, no model,
no plan). Each refusal is one line on stderr, exit code 2, no traceback, within 3 seconds:
the command's own CPU time always, its wall time too unless other work saturates the machine
(then the wall time measures the neighbours, not the command).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.paths import Paths, resolve_user_path
from tasks.settings import load_settings

LIMIT_S = 3.0
HCP = Path(sys.executable).with_name("hcp")
ENTRY = [str(HCP)] if HCP.is_file() else [sys.executable, "-m", "flows.cli"]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A store of three demo symbols from 2020-01-02 to 2020-09-30; nothing else."""
    root = tmp_path_factory.mktemp("tiny_home")
    paths = Paths(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HCP_HOME", str(root))
        src = DemoSource(paths.demo, seed=3, n_symbols=3, n_sectors=2, start="2020-01-02",
                         end="2020-09-30", inject_bad_rows=False)
        import_bars(src, load_settings(), paths)
    return root


def hcp(home: Path, *args: str, cwd: Path | None = None, **env: str
        ) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``hcp ARGS`` with only ``HCP_HOME`` (and ``env``) among the HCP_ variables; the
    result, its wall time and its CPU time (user + system) in seconds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HCP_")}
    clean.update({"HCP_HOME": str(home), "COLUMNS": "80", **env})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tick = time.perf_counter()
    res = subprocess.run([*ENTRY, *args], capture_output=True, text=True, env=clean,
                         cwd=cwd or home, timeout=120)
    wall = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return res, wall, cpu


def saturated() -> bool:
    """Other work keeps every core busy (the last minute's load exceeds the cores)."""
    return os.getloadavg()[0] > (os.cpu_count() or 1)


def refused(home: Path, *args: str, **env: str) -> str:
    """Run a command that must be refused fast; return its one line (without ``error: ``)."""
    res, wall, cpu = hcp(home, *args, **env)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert cpu < LIMIT_S, f"{args}: {cpu:.2f} s of CPU"
    assert wall < LIMIT_S or saturated(), f"{args}: {wall:.2f} s"
    assert lines[0].startswith("error: ")
    return lines[0].removeprefix("error: ")


def test_daily_on_a_sunday_names_the_nearest_sessions(home):
    assert refused(home, "run", "daily", "--date", "2020-03-15") == (
        "2020-03-15 is not a NYSE session (Sunday); nearest sessions: 2020-03-13, 2020-03-16")


def test_daily_on_a_holiday_names_it(home):
    assert refused(home, "run", "daily", "--date", "2020-04-10") == (
        "2020-04-10 is not a NYSE session (holiday: Good Friday); nearest sessions: "
        "2020-04-09, 2020-04-13")


def test_daily_after_the_store_names_its_last_session(home):
    assert refused(home, "run", "daily", "--date", "2020-11-02") == (
        "2020-11-02 is after the store's last session 2020-09-30: import newer bars first "
        "(`hcp data import`)")


def test_nightly_on_a_saturday(home):
    assert refused(home, "run", "nightly", "--date", "2020-03-14") == (
        "2020-03-14 is not a NYSE session (Saturday); nearest sessions: 2020-03-13, 2020-03-16")


def test_intraday_on_a_sunday(home):
    assert refused(home, "run", "intraday", "--date", "2020-03-15") == (
        "2020-03-15 is not a NYSE session (Sunday); nearest sessions: 2020-03-13, 2020-03-16")


def test_replay_past_the_store(home):
    assert refused(home, "replay", "--start", "2020-09-01", "--end", "2020-10-30") == (
        "replay end 2020-10-30 is after the store's last session 2020-09-30: end the replay by "
        "2020-09-30 or import newer bars (`hcp data import`)")


def test_daily_without_an_active_model(home):
    assert refused(home, "run", "daily") == (
        "no active model: run `hcp train` (or `hcp promote --to active --id ID`)")


def test_replay_without_an_active_model(home):
    assert refused(home, "replay", "--start", "2020-09-01", "--end", "2020-09-30") == (
        "no active model: run `hcp train` (or `hcp promote --to active --id ID`)")


def test_replay_with_a_model_that_saw_the_span(home, tmp_path):
    other = tmp_path / "home"
    shutil.copytree(home, other)
    models = Paths(other).models
    (models / "registry").mkdir(parents=True)
    (models / "registry" / "manifest.json").write_text(json.dumps({"active": "b1"}))
    (models / "b1").mkdir()
    (models / "b1" / "manifest.json").write_text(json.dumps(
        {"id": "b1", "payoff": {}, "training_span": {"start": "2020-01-02", "end": "2020-09-30"}}))
    assert refused(other, "replay", "--start", "2020-09-01", "--end", "2020-09-30") == (
        "active baseline b1 was trained on bars up to 2020-09-30, not before the first replayed "
        "session 2020-09-01: train one with `hcp train --train-end <a date before 2020-09-01>` "
        "and promote it")


def test_intraday_without_a_plan_names_the_daily_run_to_make(home):
    assert refused(home, "run", "intraday", "--date", "2020-03-16") == (
        "no plan for session 2020-03-16: it executes the plan of 2020-03-13, which does not "
        "exist; run `hcp run daily --date 2020-03-13` first")


def test_misspelt_variable_is_refused_with_the_closest_name(home):
    line = refused(home, "run", "daily", HCP_LABLES__TAKE_PROFIT_ATR="3")
    assert line == ("unknown environment variable HCP_LABLES__TAKE_PROFIT_ATR (did you mean "
                    "HCP_LABELS__TAKE_PROFIT_ATR?): unset it or use HCP_<SECTION>__<FIELD> "
                    "(see `hcp config show`)")


def test_no_refusal_started_prefect(home):
    """Run last in this module: no Prefect server ever wrote its database under the home."""
    prefect = home / ".prefect"
    assert not prefect.exists() or not any(prefect.iterdir())


def test_relative_replay_path_resolves_against_hcp_home(home, tmp_path):
    folder = Path("reports") / "replay" / "2020-03-02_2020-03-06"
    (home / folder / "sandbox" / "data" / "state").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res, _, _ = hcp(home, "status", "--json", "--replay", str(folder), cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert '"mode": "demo"' in res.stdout and "Traceback" not in res.stderr
    assert "holds no replay state" in refused(home, "status", "--replay", "reports/replay/none")


def test_resolve_user_path(tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    (home / "a").mkdir(parents=True)
    (cwd / "b").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    assert resolve_user_path(Path("a"), home) == home / "a"        # under HCP_HOME
    assert resolve_user_path(Path("b"), home) == cwd / "b"         # only in the current folder
    assert resolve_user_path(Path("c"), home) == home / "c"        # neither: named under home
    assert resolve_user_path(cwd / "b", home) == cwd / "b"         # absolute: as is
