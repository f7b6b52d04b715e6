"""``hcp policy``: list, show, diff and roll back the versions of the trading policy."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flows.cli_errors import friendly
from tasks.paths import Paths
from tasks.settings import load_settings

console = Console(stderr=True)
out = Console()


def _now() -> str:
    import pandas as pd

    return pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")


policy_app = typer.Typer(help="Versions of the trading policy: list, show, diff, rollback.",
                         no_args_is_help=True)


@policy_app.command("list")
@friendly
def policy_list() -> None:
    """Every policy version, oldest first; the one in force is marked with *."""
    from tasks.policy import list_versions

    table = Table(title="policy versions")
    for col in ("", "version", "created_at", "parent", "reason"):
        table.add_column(col)
    for row in list_versions(Paths.from_env(), load_settings()):
        table.add_row("*" if row["current"] else "", row["version"], row["created_at"] or "-",
                      row["parent"] or "-", row["reason"] or "")
    out.print(table)


@policy_app.command("show")
@friendly
def policy_show(version: Annotated[str | None, typer.Argument(help="Version id (default: "
                                                              "the one in force).")] = None
                ) -> None:
    """Print a policy version as JSON."""
    from tasks.policy import current_version, load_version

    paths, settings = Paths.from_env(), load_settings()
    version = version or current_version(paths, settings)
    out.print(f"# {version}")
    out.print(json.dumps(load_version(paths, settings, version).to_json(), indent=2,
                         sort_keys=True))


@policy_app.command("diff")
@friendly
def policy_diff(
    old: Annotated[str | None, typer.Argument(help="Older version (default: NEW's parent).")] = None,
    new: Annotated[str | None, typer.Argument(help="Newer version (default: in force).")] = None,
) -> None:
    """Git-style unified diff of two policy versions."""
    from tasks.policy import diff_versions

    text = diff_versions(Paths.from_env(), load_settings(), old, new)
    out.print(text.rstrip("\n") if text else "(no difference)", markup=False, highlight=False)


@policy_app.command("rollback")
@friendly
def policy_rollback(
    version: Annotated[str, typer.Argument(help="Version to put back in force.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the policy history).")] = "operator",
) -> None:
    """Make an earlier version the one in force; later plans and trades carry its id."""
    from tasks.policy import rollback

    done = rollback(Paths.from_env(), load_settings(), version, _now(), reason)
    console.print(f"policy in force: {done}")
    out.print(done)
