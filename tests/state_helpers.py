"""Helpers of the session-order and commit-point tests: hand-built homes, a child process that
runs one intraday session and can be killed (SIGKILL) at a chosen call, damaged state files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from typer.testing import CliRunner

from tasks.paths import Paths
from tasks.settings import PROJECT_ROOT
from tests.exec_helpers import PREV, SESSION, bars, plan_row, write_book, write_plan

NEXT = "2020-03-10"
THIRD = "2020-03-11"

CHILD = """
import importlib, os, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
import pandas as pd
from tasks.execution.runner import run_session
from tasks.paths import Paths
from tests.exec_helpers import settings

spec = os.environ.get("TEST_KILL_AT", "")
if spec:  # "module:attr[.attr]:n[:after]": SIGKILL at the n-th call (before it, or after it)
    mod, attr, n, *when = spec.split(":")
    owner = importlib.import_module(mod)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    orig, calls = getattr(owner, name), [0]

    def dying(*a, **k):
        calls[0] += 1
        if calls[0] == int(n) and not when:
            os.kill(os.getpid(), signal.SIGKILL)
        out = orig(*a, **k)
        if calls[0] == int(n) and when:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(owner, name, dying)
frame = pd.read_parquet({bars!r})
run_session(Paths(Path({home!r})), settings(), {session!r}, bars=frame)
"""


def child(paths: Paths, session: str, bars_path: Path, kill_at: str | None = None,
          fault: str | None = None) -> subprocess.CompletedProcess:
    """Run intraday ``session`` in a fresh process; ``kill_at``: SIGKILL it at a chosen call
    (see CHILD); ``fault``: the engine's HCP_FAULT_INJECT point."""
    env = {**os.environ, "HCP_HOME": str(paths.home)}
    env.pop("HCP_FAULT_INJECT", None)
    env.pop("TEST_KILL_AT", None)
    if kill_at:
        env["TEST_KILL_AT"] = kill_at
    if fault:
        env["HCP_FAULT_INJECT"] = fault
    code = CHILD.format(root=str(PROJECT_ROOT), bars=str(bars_path), home=str(paths.home),
                        session=session)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=180)


def session_bars(session: str, symbols: str = "ABC", drop: float = 0.0) -> pd.DataFrame:
    """Bars for the plan's names A, B, C and the held H (``drop``: H's fall over the day)."""
    h = 100.0 * (1 - drop)
    return bars(session, {s: [(50, 50.5, 49.5, 50.2), (50.2, 51, 50, 50.8)] for s in symbols}
                | {"H": [(100, 100, min(h, 99.0), h), (h, h, h, h)]}, volume=150.0)


def home(tmp: Path, plan_for: tuple[str, ...] = (PREV, SESSION, NEXT), tags: str = "test",
         h_qty: int = 100, cash: float = 90_000.0) -> Paths:
    """Cash and ``h_qty`` H at 100 as of PREV; plans buying A, B, C for the next sessions."""
    paths = Paths(tmp)
    write_book(paths, cash, [{"symbol": "H", "qty": h_qty, "price": 100.0, "entry_price": 100.0,
                                  "atr": 2.0, "stop": 80.0, "take_profit": 125.0,
                                  "extreme": 100.0, "stop_frac": 0.2, "episode_id": "e0"}])
    for day in plan_for:
        write_plan(paths, day, [plan_row(s, 12, 50.0, 1.0, tags=tags) for s in "ABC"])
    return paths


def bars_file(tmp: Path, session: str, **kw: Any) -> Path:
    path = tmp / f"bars_{session}.parquet"
    session_bars(session, **kw).to_parquet(path)
    return path


def state(paths: Paths) -> Path:
    return paths.data / "state"


def read(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


DAMAGE = ("truncated", "garbled", "emptied", "wrong_shape", "deleted")


def damage(path: Path, how: str) -> None:
    """Damage a state file the way a crash, a disk or a person would: ``how`` is one of
    :data:`DAMAGE`, ``{}`` (an emptied object) or ``[]`` (a value of the wrong type)."""
    path = Path(path)
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbled":
        path.write_bytes(b"\xff\xfe\x00garbage" + data[20:])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how in ("{}", "[]"):
        path.write_bytes(how.encode())
    elif how == "wrong_shape":
        path.write_text(json.dumps({"net_liquidity": "a lot", "session": 7, "tripped": "maybe",
                                    "positions": 3, "status": "sideways"}))
    elif how == "deleted":
        path.unlink()
    else:
        raise ValueError(how)


def hcp(paths: Paths, *args: str, env: dict[str, str] | None = None):
    """``hcp ARGS`` in-process against ``paths`` (refusals happen before any flow starts)."""
    from flows.cli import app

    return CliRunner().invoke(app, list(args), env={"HCP_HOME": str(paths.home),
                                                    "COLUMNS": "400", **(env or {})})


def one_line(res) -> str:
    """The single line a refused command printed (exit 2, no traceback)."""
    text = res.output.strip()
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


def hcp_daily(paths: Paths, date: str, *more: str):
    """``hcp run daily --date DATE`` with just enough of a store (its manifest) for the command
    line to reach the book check; the fake store is removed again afterwards."""
    import shutil

    paths.store.mkdir(parents=True, exist_ok=True)
    (paths.store / "manifest.json").write_text(json.dumps({"first_date": "2019-06-03",
                                                           "last_date": "2020-06-30"}))
    try:
        return hcp(paths, "run", "daily", "--date", date, *more)
    finally:
        shutil.rmtree(paths.store)
