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


def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Bind address (default operator.serve.host: loopback).")
                    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default operator.serve.port: 8051).")] = None,
) -> None:
    """Serve the status API (/api/*, OpenAPI at /docs) and the dashboard (/) over $HCP_HOME."""
    import uvicorn

    from tasks.operator.api import create_app

    settings = load_settings()
    cfg = settings.operator.serve
    host, port = host or cfg.host, port or cfg.port
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/yellow] binding to {host}: the API is reachable beyond "
                      "this machine; the POST endpoints still need the operator token")
    out.print(f"operator API on http://{host}:{port}/ (OpenAPI: /docs, /openapi.json)")
    uvicorn.run(create_app(Paths.from_env(), settings), host=host, port=port, log_level="warning")
