"""``hcp state``: check the state files and repair a damaged one (logged).

``hcp state check`` lists every file of the table in :mod:`tasks.statespecs` as ok, missing
(not written yet, and nothing says it should be) or damaged, with the remedy; exit 2 when any
is damaged. ``hcp state repair NAME --by B --reason R`` rebuilds the file from the evidence the
project holds, or writes the safe state explicitly, and logs the repair
(``data/state/repairs.jsonl``). ``hcp state lift-demo`` lifts a forced demo deliberately.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flows.cli_errors import friendly
from tasks.paths import Paths
from tasks.settings import load_settings

console = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)

state_app = typer.Typer(help="State files under data/state (and the model registry): check "
                             "them, repair a damaged one (logged).", no_args_is_help=True)


def _now() -> str:
    import pandas as pd

    return pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(path: Path, home: Path) -> str:
    try:
        return str(Path(path).relative_to(home))
    except ValueError:
        return str(path)


def _session(text: str | None) -> str | None:
    if text is None:
        return None
    from flows.preflight import parse_day

    return parse_day(text, "session").date().isoformat()


@state_app.command("check")
@friendly
def state_check(
    session: Annotated[str | None, typer.Option(help="Only this session's per-session files "
                                                     "(YYYY-MM-DD).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every state file as ok / missing / damaged with the remedy; exit 2 when any is
    damaged."""
    import tasks.statespecs  # noqa: F401  (fills the table)
    from tasks.statefiles import DAMAGED, probe_states

    paths, settings = Paths.from_env(), load_settings()
    states = probe_states(paths, settings, None, _session(session))
    if as_json:
        out.print(json.dumps([{"kind": s.spec, "path": str(s.path), "state": s.state,
                               "detail": s.detail, "remedy": s.remedy} for s in states],
                             indent=2), markup=False)
    else:
        for s in states:
            line = f"{s.state:8s} {s.spec:18s} {_shown(s.path, paths.home)}"
            if s.detail:
                line += f": {s.detail}"
            if s.state == DAMAGED and s.remedy:
                line += f"; {s.remedy}"
            out.print(line, markup=False)
    damaged = [s for s in states if s.state == DAMAGED]
    if damaged:
        console.print(f"[red]{len(damaged)} damaged state file(s)[/red] of {len(states)}; "
                      "repair each with the command named on its line", soft_wrap=True)
        raise typer.Exit(2)
    if not as_json:
        out.print(f"{len(states)} state files checked: none damaged")


@state_app.command("repair")
@friendly
def state_repair(
    name: Annotated[str, typer.Argument(help="Kind of file: budget, escalation-record, "
                                             "quarantine, operator, policy, registry, model, "
                                             "portfolio, kill_switch (`hcp state check` names "
                                             "it).")],
    by: Annotated[str, typer.Option(help="Who repairs (logged).")],
    reason: Annotated[str, typer.Option(help="Why (logged).")],
    session: Annotated[str | None, typer.Option(help="Session of a per-session file (budget, "
                                                     "escalation-record); for quarantine the "
                                                     "start of a safe quarantine (default: the "
                                                     "book's session).")] = None,
    version: Annotated[str | None, typer.Option(help="policy: the intact version to put in "
                                                     "force.")] = None,
    baseline: Annotated[str | None, typer.Option("--id", help="model: the baseline to take "
                                                              "out of its slot.")] = None,
    safe: Annotated[bool, typer.Option(help="Write the safe state (budget spent, quarantine "
                                            "active, demo forced, registry slots empty) even "
                                            "where evidence could rebuild the file.")] = False,
) -> None:
    """Rebuild a damaged state file from the evidence the project holds, or write its safe
    state explicitly; the repair is logged in data/state/repairs.jsonl."""
    import tasks.statespecs  # noqa: F401  (fills the table)
    from tasks.statefiles import RepairRequest, run_repair

    paths, settings = Paths.from_env(), load_settings()
    request = RepairRequest(by=by, reason=reason, at=_now(), session=_session(session),
                            target=version or baseline, safe=safe)
    record = run_repair(paths, settings, name, request)
    out.print(f"repaired {name}: {escape(record['action'])} (logged in "
              f"{_shown(paths.data / 'state' / 'repairs.jsonl', paths.home)} by "
              f"{escape(record['by'])})")


@state_app.command("lift-demo")
@friendly
def state_lift_demo(
    by: Annotated[str, typer.Option(help="Who lifts the forced demo (logged).")],
    reason: Annotated[str, typer.Option(help="Why (logged).")],
) -> None:
    """Lift an operator's forced demo deliberately (recorded in data/state/operator.json's
    history and the repairs log); deleting the file does not lift it."""
    from tasks.execution.overrides import lift_demo

    new = lift_demo(Paths.from_env(), by=by, reason=reason, at=_now())
    last = new["history"][-1]
    out.print(f"forced demo lifted by {escape(last['by'])}: {escape(last['reason'])}")
