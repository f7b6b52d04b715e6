"""Execution commands of ``hcp``: run intraday, tradelog verify, status, quarantine clear."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console

from tasks.paths import Paths
from tasks.settings import load_settings

tradelog_app = typer.Typer(help="The hash-chained trade log.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Demo quarantine after kill-switch days.", no_args_is_help=True)
console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)


class Mode(StrEnum):
    demo = "demo"
    live = "live"


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """flows.cli.friendly, looked up at call time (flows.cli imports this module)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flows.cli import friendly

        return friendly(fn)(*args, **kwargs)

    return wrapper


def run_intraday(
    date: Annotated[str, typer.Option(help="Session YYYY-MM-DD (executes the plan of the "
                                           "session before).")],
    bars: Annotated[str | None, typer.Option(help="Parquet of intraday bars (symbol, ts, open, "
                                                  "high, low, close, volume); default: simulated "
                                                  "from the day's OHLC.")] = None,
    mode: Annotated[Mode | None, typer.Option(help="demo (paper) or live (every gate must "
                                                   "hold); default execution.mode.")] = None,
    without_plan: Annotated[bool, typer.Option("--without-plan",
                                               help="Run although the session before wrote no "
                                                    "plan: no new entries, open positions are "
                                                    "still managed.")] = False,
) -> None:
    """Paper-execute one session (a Prefect flow run); live exits 2 listing the failed gates;
    a session whose plan (the daily run of the session before) is missing exits 2."""
    from flows import preflight

    settings, paths = load_settings(), Paths.from_env()
    chosen = mode.value if mode else settings.execution.mode
    simulated = not (bars or settings.execution.bars_path)
    day = preflight.intraday_session(date, paths, settings, simulated)
    session = day.date().isoformat()
    if chosen == "live":
        from tasks.execution.gates import require_live

        require_live(paths, settings, session)
    if not without_plan:
        preflight.plan_to_execute(paths, settings, day)
    from flows.intraday import intraday  # Prefect: only once every check above holds

    res = intraday(session=session, bars=bars, mode=chosen)
    s = res.summary
    state = "unchanged (already executed with these inputs)" if res.cached else "done"
    out.print(f"session {res.session} ({res.mode}): {state}; day P&L {s['day_pnl']:,.2f} "
              f"({s['day_pnl_pct']:.2%}); {s['orders']} orders, {s['fills']} fills; "
              f"{s['positions_end']} positions; kill switch "
              f"{'TRIPPED at ' + str(s['kill_switch_at']) if s['kill_switch'] else 'armed'}")
    for name, path in res.outputs.items():
        out.print(f"  {name:10s} {path}")
    for f in s.get("failures", []):
        console.print(f"[yellow]{f['mode']}[/yellow]: {f['action']}")


@tradelog_app.command("verify")
@_friendly
def tradelog_verify(
    repair: Annotated[bool, typer.Option(help="Move a torn last line to a side file (noted in "
                                              "the chain) and verify again.")] = False,
) -> None:
    """Check the hash chain; exit 1 naming the first bad record (or a torn last line)."""
    from tasks.execution.tradelog import TradeLog, tradelog_path, verify

    paths = Paths.from_env()
    path = tradelog_path(paths)
    res = verify(paths)
    if repair and res.torn and not res.first_bad:
        now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        _, side = TradeLog.open(paths, recovery={"session": None, "mode": None, "timestamp": now})
        out.print(f"torn last line moved to {side}")
        res = verify(paths)
    if res.ok:
        out.print(res.message(path))
        return
    console.print(f"[red]FAILED[/red] {res.message(path)}")
    raise typer.Exit(1)


def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    replay: Annotated[Path | None, typer.Option(help="A replay's state (reports/replay/<S>_<E>; "
                                                     "relative to $HCP_HOME).")] = None,
) -> None:
    """Mode, book, day P&L, kill switch, quarantine, live gates, LLM budget, policy and alerts."""
    from flows.cli_operator import paths_for, print_status
    from tasks.execution.status import status
    from tasks.operator.status import snapshot

    paths, settings, now = paths_for(replay), load_settings(), pd.Timestamp.now()
    s = status(paths, settings, now)
    picture = snapshot(paths, settings, now.normalize())
    if as_json:
        extra = {k: picture[k] for k in ("budget", "learning", "models", "alerts", "empty_book")}
        out.print(json.dumps({**s, "risk": picture["risk"], **extra}, indent=2, default=str))
        return
    print_status(s, picture)
    for g in s["live_gates"]:
        out.print(f"live gate {'ok ' if g['ok'] else 'NO '} {g['gate']}: {g['detail']}")


@quarantine_app.command("clear")
@_friendly
def quarantine_clear(
    by: Annotated[str, typer.Option(help="Who overrides (logged).")],
    reason: Annotated[str, typer.Option(help="Why (logged; required).")],
    session: Annotated[str | None, typer.Option(help="Session the override applies to "
                                                     "(default: today).")] = None,
) -> None:
    """Operator override: clear a demo quarantine or kill-switch cool-off early (logged)."""
    from tasks.execution.quarantine import clear_quarantine

    at = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    new = clear_quarantine(Paths.from_env(), load_settings(), at=at, by=by, reason=reason,
                           source="operator", session=session)
    out.print(f"cleared: {new['history'][-1]['cleared']} by {by}: {reason}")


def register(app: typer.Typer, run_app: typer.Typer) -> None:
    """Add the execution commands to the ``hcp`` application."""
    run_app.command("intraday")(_friendly(run_intraday))
    app.command("status")(_friendly(status_cmd))
    app.add_typer(tradelog_app, name="tradelog")
    app.add_typer(quarantine_app, name="quarantine")
