"""The CLI's error handling, shared by every command module: known errors become one line on
stderr and an exit code instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from tasks.data.sources import SourceError
from tasks.data.store import StoreError
from tasks.settings import ConfigError

console = Console(stderr=True)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known errors into one clear line and exit code 2 instead of a traceback (never
    wrapped at the console width: a log or a pipe gets the line whole)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):  # click's Exit is a RuntimeError: let it through as is
            raise
        except (ConfigError, StoreError, SourceError, ValueError, FileNotFoundError,
                RuntimeError) as exc:
            # an import that kept nothing exits 1; its module is only loaded by an import (and
            # costs a quarter of a second, which the fast refusals before a flow do not pay)
            ingest = sys.modules.get("tasks.data.ingest")
            code = 1 if ingest is not None and isinstance(exc, ingest.NothingUsable) else 2
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(code) from exc

    return wrapper
