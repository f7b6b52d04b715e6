"""Operator commands: alerts (list, send pending notifications)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tasks.alerts import read_alerts
from tasks.operator.notify import dispatch_pending
from tasks.paths import Paths
from tasks.settings import load_settings

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
    for a in rows:
        table.add_row(a["at"], a["session"], a["level"], a["code"], a["text"])
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
