"""Execution commands of ``hcp``: run intraday, tradelog verify, status, quarantine clear."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape

from flows.cli_errors import friendly
from tasks.paths import Paths
from tasks.settings import load_settings

tradelog_app = typer.Typer(help="The hash-chained trade log.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Demo quarantine after kill-switch days.", no_args_is_help=True)
console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)


class Mode(StrEnum):
    demo = "demo"
    live = "live"


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
    abandon: Annotated[bool, typer.Option("--abandon",
                                          help="Close this unfinished session as it stands: no "
                                               "new order, working orders cancelled, the book "
                                               "committed (needs --by and --reason; logged).")
                       ] = False,
    catch_up: Annotated[bool, typer.Option("--catch-up",
                                           help="Mark the sessions missing between the book and "
                                                "this one skipped (book carried over unchanged; "
                                                "needs --by and --reason; logged), then run "
                                                "it.")] = False,
    by: Annotated[str | None, typer.Option(help="Who abandons or catches up (logged).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (logged).")] = None,
) -> None:
    """Paper-execute one session (a Prefect flow run); live exits 2 listing the failed gates;
    a session whose plan (the daily run of the session before) is missing exits 2, and so does
    a session out of order (an unfinished earlier session, a later book, missing sessions)."""
    from flows import preflight

    settings, paths = load_settings(), Paths.from_env()
    chosen = mode.value if mode else settings.execution.mode
    simulated = not (bars or settings.execution.bars_path)
    if abandon:
        day = preflight.parse_day(date, "date")
        preflight.require_session(settings.data.calendar, day)
        who, why = preflight.operator_note(by, reason, "--abandon")
        from tasks.execution.recovery import abandon_session

        now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
        out.print(escape(abandon_session(paths, settings, day.date().isoformat(), by=who,
                                         reason=why, at=now)), soft_wrap=True)
        return
    note = preflight.operator_note(by, reason, "--catch-up") if catch_up else None
    day = preflight.intraday_session(date, paths, settings, simulated)
    session = day.date().isoformat()
    if chosen == "live":
        from tasks.execution.gates import require_live

        require_live(paths, settings, session)
    order = preflight.intraday_order(paths, settings, day, catch_up=catch_up)
    if not without_plan and order.action != "committed":
        preflight.plan_to_execute(paths, settings, day)
    from flows.intraday import intraday  # Prefect: only once every check above holds

    res = intraday(session=session, bars=bars, mode=chosen,
                   catch_up_by=note[0] if note else None,
                   catch_up_reason=note[1] if note else None)
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
@friendly
def tradelog_verify(
    path: Annotated[Path | None, typer.Argument(
        help="A trade log file, or a folder holding tradelog.jsonl or data/state/tradelog.jsonl "
             "(relative to $HCP_HOME); default: $HCP_HOME's log.")] = None,
    replay: Annotated[Path | None, typer.Option(
        help="Check a replay's own log and key (reports/replay/<S>_<E>; relative to "
             "$HCP_HOME).")] = None,
    key_file: Annotated[Path | None, typer.Option(
        help="The key to check with (default: the log's own, see docs/operations.md).")] = None,
    repair: Annotated[bool, typer.Option(help="Move a torn last line to a side file (noted in "
                                              "the chain) and verify again.")] = False,
    adopt_legacy: Annotated[bool, typer.Option(
        "--adopt-legacy", help="A log written before keys: make its key and anchor its records "
                               "(logged; needs --by and --reason).")] = False,
    cut_from: Annotated[int | None, typer.Option(
        help="Move the first bad record (this line) and every line after it to a side file, "
             "noted in the chain (logged; needs --by and --reason).")] = None,
    by: Annotated[str | None, typer.Option(help="Who repairs (logged).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (logged).")] = None,
) -> None:
    """Check the hash chain and the MACs; exit 1 naming the first bad record (or a torn last
    line, a keyed log whose key is missing, records not keyed yet, an anchor the log lacks),
    2 when there is no such log."""
    from tasks.execution import tradelog as tl
    from tasks.execution.tradelog import (
        TradeLog,
        check_state_anchors,
        key_for_log,
        key_path,
        load_key,
        scan,
        tradelog_path,
    )
    from tasks.paths import resolve_user_path

    home = Paths.from_env()
    if path is not None and replay is not None:
        raise ValueError("give a log path or --replay, not both")
    if replay is not None:
        from flows.cli_operator import paths_for

        box = paths_for(replay)
        log, key = tradelog_path(box), key_path(box)
    elif path is not None:
        log = resolve_user_path(path, home.home)
        if log.is_dir():
            inside = [log / "tradelog.jsonl", log / "data" / "state" / "tradelog.jsonl"]
            log = next((f for f in inside if f.is_file()), inside[0])
        if not log.is_file():
            raise FileNotFoundError(f"no trade log at {log}")
        key = key_for_log(log, home)
    else:
        log, key = tradelog_path(home), key_path(home)
    key = resolve_user_path(key_file, home.home) if key_file is not None else key
    now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    if adopt_legacy or cut_from is not None:
        if adopt_legacy and cut_from is not None:
            raise ValueError("--adopt-legacy and --cut-from are separate repairs: one at a time")
        if not (by or "").strip() or not (reason or "").strip():
            raise ValueError("a trade log repair needs --by and --reason (both logged)")
        if adopt_legacy:
            tl.adopt_legacy(log, key, by=by, reason=reason, at=now)
            out.print(f"adopted: the records before the key are anchored; key {key}")
        else:
            side = tl.cut_from(log, key, cut_from, by=by, reason=reason, at=now)
            out.print(f"line {cut_from} and after moved to {side} (noted in the chain)")
    res, records = scan(log, load_key(key), key)
    if repair and res.torn and not res.first_bad and not res.problem:
        _, side = TradeLog.open_file(log, key, recovery={"session": None, "mode": None,
                                                         "timestamp": now})
        out.print(f"torn last line moved to {side}")
        res, records = scan(log, load_key(key), key)
    anchors = check_state_anchors(log.parent, records) if log.name == "tradelog.jsonl" else []
    if res.ok and not res.unkeyed and not anchors:
        out.print(res.message(log))
        return
    text = res.message(log) if not res.ok or res.unkeyed else f"{log}: {anchors[0]}"
    more = f" (+{len(anchors) - 1} more anchors)" if len(anchors) > 1 else ""
    console.print(f"[red]FAILED[/red] {escape(text)}{more}", soft_wrap=True)
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
@friendly
def quarantine_clear(
    by: Annotated[str, typer.Option(help="Who overrides (logged).")],
    reason: Annotated[str, typer.Option(help="Why (logged; required).")],
    session: Annotated[str | None, typer.Option(help="Session the override applies to, "
                                                     "YYYY-MM-DD (default: the book's session, "
                                                     "else today).")] = None,
) -> None:
    """Operator override: clear a demo quarantine or kill-switch cool-off early (logged)."""
    from rich.markup import escape

    from flows.preflight import parse_day
    from tasks.operator.status import clear_quarantine

    day = parse_day(session, "session").date().isoformat() if session else None
    at = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    done = clear_quarantine(Paths.from_env(), load_settings(), at=at, by=by, reason=reason,
                            session=day)
    last = done["history"][-1]
    out.print(f"cleared on {done['session']}: {last['cleared']} by {escape(last['by'])}: "
              f"{escape(last['reason'])}")


def register(app: typer.Typer, run_app: typer.Typer) -> None:
    """Add the execution commands to the ``hcp`` application."""
    run_app.command("intraday")(friendly(run_intraday))
    app.command("status")(friendly(status_cmd))
    app.add_typer(tradelog_app, name="tradelog")
    app.add_typer(quarantine_app, name="quarantine")
