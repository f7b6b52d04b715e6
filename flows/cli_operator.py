"""Operator commands: alerts (list, send pending notifications)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasks.alerts import read_alerts
from tasks.operator.dashboard import money, pct, signed
from tasks.operator.notify import dispatch_pending
from tasks.paths import Paths, SandboxPaths, resolve_user_path
from tasks.settings import load_settings
from tasks.statefiles import escape_text

alerts_app = typer.Typer(help="Operator alerts and notifications.", invoke_without_command=True)
console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)


@alerts_app.callback()
def alerts_cmd(
    ctx: typer.Context,
    session: Annotated[str | None, typer.Option(help="Only this session (YYYY-MM-DD).")] = None,
    last: Annotated[int, typer.Option(help="Show the last N alerts.")] = 20,
    send: Annotated[bool, typer.Option(help="Send pending alerts to the configured channels.")] = False,
) -> None:
    """List recent alerts (data/state/alerts.jsonl); --send delivers pending notifications."""
    if ctx.invoked_subcommand is not None:
        return
    paths = Paths.from_env()
    rows = read_alerts(paths, session)[-last:]
    table = Table(title=f"alerts ({len(rows)} shown)")
    for col in ("at", "session", "level", "code", "text"):
        table.add_column(col)
    for a in rows:  # stored text is never trusted to be escaped: no forged line or colour
        table.add_row(*(_cell(a.get(k)) for k in ("at", "session", "level", "code", "text")))
    out.print(table)
    if send:
        cfg = load_settings().operator.notify
        res = dispatch_pending(paths, cfg)
        if not cfg.enabled:
            console.print("notifications are off (operator.notify.enabled: false)")
        elif not res.channels:
            console.print(f"no channel configured: set {cfg.webhook_url_env} and/or "
                          f"{cfg.telegram_token_env} + {cfg.telegram_chat_env}")
        out.print(f"sent {res.sent}; failed (will retry) {len(res.failed)}; given up {len(res.given_up)}")


def _cell(value: Any) -> str:
    """Stored (possibly operator-written) text for a terminal: control characters escaped,
    rich markup shown literally."""
    return escape(escape_text("" if value is None else str(value)))


def paths_for(replay: Path | None) -> Paths:
    """$HCP_HOME, or the state root of a replay folder (reports/replay/<S>_<E>)."""
    home = Paths.from_env()
    if replay is None:
        return home
    root = resolve_user_path(replay, home.home) / "sandbox"
    if not (root / "data" / "state").is_dir():
        console.print(f"[red]error:[/red] {escape(str(replay))} holds no replay state under "
                      f"{escape(str(home.home))} (run `hcp replay --start S --end E --with-intraday`)",
                      soft_wrap=True)
        raise typer.Exit(2)
    return SandboxPaths(home.home, root)


def serve_cmd(
    replay: Annotated[Path | None, typer.Option(help="Serve a replay's state (reports/replay/<S>_<E>).")
                      ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default operator.serve.host: loopback).")
                    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default operator.serve.port: 8051).")] = None,
) -> None:
    """Serve the status API (/api/*, OpenAPI at /docs) and the dashboard (/) over $HCP_HOME."""
    import uvicorn

    from tasks.operator.api import create_app, token_warning

    settings = load_settings()
    paths = paths_for(replay)
    cfg = settings.operator.serve
    host, port = host or cfg.host, port or cfg.port
    no_token = token_warning(settings)
    if no_token:
        console.print(f"[yellow]warning:[/yellow] {escape(no_token)}", soft_wrap=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/yellow] binding to {host}: the API is reachable beyond "
                      "this machine; the POST endpoints still need the operator token")
    out.print(f"operator API on http://{host}:{port}/ (OpenAPI: /docs, /openapi.json)")
    uvicorn.run(create_app(paths, settings), host=host, port=port, log_level="warning")


def session_line(s: dict[str, Any]) -> str:
    """Which session the picture shows, and a later plan kept apart from it."""
    view, day = s.get("view") or {}, s.get("session")
    if not day:
        line = "session: none yet (nothing executed or planned)"
    elif view.get("source") == "book":
        line = (f"session {day} (the book's): plan, health, vol regime, weights and empty book "
                f"of {day}")
    else:
        line = f"session {day} (no session executed yet: the latest planned session)"
    if day and not s.get("health_found"):
        line += f"; no health JSON for {day}"
    if view.get("next_plan"):
        n = view.get("next_plan_orders")
        line += f"; next plan: {view['next_plan']} (planned, not executed"
        line += f", {n} order{'' if n == 1 else 's'}" if n is not None else ""
        if view.get("later_plans", 0) > 1:
            line += f"; latest plan {view['latest_plan']}, {view['later_plans']} after {day}"
        line += ")"
    return line


def print_status(ex: dict[str, Any], s: dict[str, Any]) -> None:
    """The dashboard's picture as rich tables, all of one session (the book's)."""
    risk, budget, learn = s["risk"], s["budget"], s["learning"]
    ks = ex["kill_switch"]
    out.print(f"[bold]{escape(session_line(s))}[/bold]")
    top = Table(title="hybrid control plane", show_header=True)
    for col in ("mode", "net liquidity", "day P&L", "DD%", "vol regime", "LLM calls", "policy"):
        top.add_column(col)
    forced = risk["mode"]
    mode = ex["mode"] + (" (forced by operator)" if forced["forced_demo"] else "")
    vol = str(risk["vol_regime"] or "n/a")
    if risk.get("vol_z") is not None:
        vol += f" (z {signed(risk['vol_z'])})"
    top.add_row(mode, money(ex["net_liquidity"]), pct(ex.get("day_pnl_pct")),
                pct(risk["drawdown"]), vol, f"{budget['used']}/{budget['limit']}",
                learn["policy_version"])
    out.print(top)
    if forced["forced_demo"]:
        out.print(f"demo forced by {_cell(forced.get('forced_by'))}: "
                  f"{_cell(forced.get('forced_reason'))}")
    applied = learn.get("weights_used")
    out.print(f"blend weights used ({s.get('session') or 'n/a'}): "
              + escape(applied["text"] if applied else "n/a (not recorded for this session)"))
    eb = s.get("empty_book")
    if eb:
        out.print(f"[bold red]session {eb['session']}: {escape(eb['line'])}[/bold red]")
    out.print(f"last session {ex['last_session']}{' (running)' if ex['session_running'] else ''}; "
              f"kill switch: {'TRIPPED at ' + str(ks.get('at')) if ks.get('tripped') else 'armed'}; "
              f"quarantine for {ex['next_session']}: {ex['quarantine']['describe']}")
    buckets = Table(title="bucket usage")
    for col in ("bucket", "used", "cap"):
        buckets.add_column(col)
    for name, cap in risk["caps"]["bucket_caps"].items():
        buckets.add_row(name, pct(risk["exposure"]["by_bucket"].get(name, 0.0)), pct(cap))
    out.print(buckets)
    pos = Table(title=f"positions ({len(ex['positions'])})")
    for col in ("symbol", "qty", "price", "stop", "take_profit", "bucket", "cap used"):
        pos.add_column(col)
    used = {p["symbol"]: p["used_of_cap"] for p in risk["positions"]}
    for p in ex["positions"]:
        pos.add_row(p["symbol"], str(p["qty"]), f"{p['price']:.2f}",
                    "" if p["stop"] is None else f"{p['stop']:.2f}",
                    "" if p["take_profit"] is None else f"{p['take_profit']:.2f}", p["bucket"],
                    pct(used.get(p["symbol"]), 0))
    out.print(pos)
    out.print(f"feature toggles off: {', '.join(learn['disabled_features']) or 'none'}; reward mix "
              + ", ".join(f"{k} {v:.2f}" for k, v in learn["reward_coefficients"].items()))
    alerts = Table(title="recent alerts (newest first)")
    for col in ("at", "session", "level", "text"):
        alerts.add_column(col)
    for a in s["alerts"][:8]:
        alerts.add_row(_cell(a.get("at", "")), _cell(a.get("session", "")),
                       _cell(a.get("level", "")), _cell(a.get("text", "")))
    out.print(alerts)
