"""``hcp``: the command line of the hybrid control plane. Outputs go under ``$HCP_HOME``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.cli_errors import friendly
from flows.cli_exec import register as register_execution
from flows.cli_operator import alerts_app, serve_cmd
from tasks.data.store import StoreError
from tasks.paths import Paths
from tasks.settings import config_path, load_settings

app = typer.Typer(help="Hybrid control plane: validated data, features, models, daily plan.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Import, inspect and query market data.", no_args_is_help=True)
config_app = typer.Typer(help="Show or check the settings tree.", no_args_is_help=True)
models_app = typer.Typer(help="List trained baselines and the registry slots.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(alerts_app, name="alerts")
hint_app = typer.Typer(help="The learned size hint: fit it on a backtest's episodes, show it.",
                       no_args_is_help=True)
app.add_typer(hint_app, name="hint")
app.command("serve")(serve_cmd)
run_app = typer.Typer(help="Run a flow for one session.", no_args_is_help=True)
app.add_typer(run_app, name="run")
console = Console(stderr=True)
out = Console()


class Source(StrEnum):
    demo = "demo"
    parquet = "parquet"
    csv = "csv"
    yfinance = "yfinance"


@contextmanager
def step_bar(what: str, unit: str = "steps") -> Iterator[Callable[[str, int, int | None], None]]:
    """Progress of work reported as (message, done, total) steps, on stderr: on a terminal a
    bar with elapsed time and ETA, otherwise (a log file, a pipe) plain lines
    (:class:`tasks.progress.LineProgress`). The ETA is :class:`tasks.progress.Eta`: the mean
    time of the completed steps times the steps left (rich's own estimate only looks at the
    last 30 s and stays blank when a step takes longer)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    from tasks.progress import Eta, LineProgress, clock_text

    if not console.is_terminal:
        yield LineProgress(what, console.file, unit)
        return

    class EtaColumn(ProgressColumn):
        def render(self, task) -> Text:
            eta = task.fields.get("eta")
            return Text(clock_text(eta.remaining() if eta else None), style="progress.remaining")

    eta = Eta()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("ETA"), EtaColumn(), console=console) as bar:
        task = bar.add_task(what, total=None, eta=eta)

        def update(msg: str, done: int, total: int | None) -> None:
            eta.update(done, total)
            bar.update(task, description=f"{what}: {msg}", completed=done, total=total)

        yield update


def _make_source(source: Source, path: Path | None, constituents: Path | None,
                 symbols: str | None, start: str | None, end: str | None):
    from tasks.data.sources import CsvSource, DemoSource, ParquetSource, YFinanceSource

    if source is Source.demo:
        d = load_settings().data.demo
        return DemoSource(Paths.from_env().demo, d.seed, d.n_symbols, d.n_sectors, d.start,
                          d.end, d.inject_bad_rows, d.reversal)
    if source is Source.yfinance:
        if not symbols:
            raise ValueError("--symbols is required with --source yfinance")
        return YFinanceSource(symbols.split(","), start or "2015-01-01", end or "2100-01-01")
    if path is None:
        raise ValueError(f"--path is required with --source {source.value}")
    cls = ParquetSource if source is Source.parquet else CsvSource
    return cls(path, constituents)


@data_app.command("import")
@friendly
def data_import(
    source: Annotated[Source, typer.Option(help="Where the bars come from.")] = Source.demo,
    path: Annotated[Path | None, typer.Option(help="File or folder (parquet/csv).")] = None,
    constituents: Annotated[Path | None, typer.Option(help="CSV: symbol,name,sector.")] = None,
    as_of: Annotated[str | None, typer.Option(help="Flag symbols stale against this date.")] = None,
    symbols: Annotated[str | None, typer.Option(help="yfinance: comma-separated.")] = None,
    start: Annotated[str | None, typer.Option(help="yfinance: first date.")] = None,
    end: Annotated[str | None, typer.Option(help="yfinance: last date.")] = None,
) -> None:
    """Validate bars and write the bar store; the quality report path is printed."""
    from tasks.data.ingest import import_bars

    settings, paths = load_settings(), Paths.from_env()
    src = _make_source(source, path, constituents, symbols, start, end)
    with step_bar(f"import from {source.value}") as progress:
        res = import_bars(src, settings, paths, pd.Timestamp(as_of) if as_of else None, progress)
    table = Table(title=f"import from {source.value}")
    for col in ("rule", "action", "count"):
        table.add_column(col)
    for (rule, action), n in res.findings.groupby(["rule", "action"]).size().items():
        table.add_row(rule, action, str(n))
    console.print(table)
    state = "written" if res.changed else "unchanged (same content)"
    out.print(f"rows in {res.rows_in}, kept {res.rows_kept} over {res.symbols_kept} symbols")
    out.print(f"store {res.store} {state}, content hash {res.content_hash[:16]}")
    out.print(f"quality report: {res.report}")


@data_app.command("info")
@friendly
def data_info() -> None:
    """Summarise the bar store (DuckDB over the parquet partitions)."""
    from tasks.data.store import query, read_manifest

    store = Paths.from_env().store
    manifest = read_manifest(store)
    if manifest is None:
        raise StoreError(f"no bar store at {store}: run `hcp data import` first")
    by_year = query(store, "SELECT year, count(*) AS rows, count(DISTINCT symbol) AS symbols "
                           "FROM bars GROUP BY year ORDER BY year")
    out.print(json.dumps({k: manifest[k] for k in ("source", "rows", "symbols", "first_date",
                                                    "last_date", "content_hash")}, indent=2))
    out.print(by_year.to_string(index=False))


@data_app.command("query")
@friendly
def data_query(sql: Annotated[str, typer.Argument(help="SQL over views `bars`, `constituents`.")]
               ) -> None:
    """Run SQL with DuckDB over the store."""
    from tasks.data.store import query

    out.print(query(Paths.from_env().store, sql).to_string(index=False))


@app.command("features")
@friendly
def features_cmd(
    as_of: Annotated[str, typer.Option(help="Session date YYYY-MM-DD.")],
    out_path: Annotated[Path, typer.Option("--out", help="Output parquet file.")],
) -> None:
    """Write one row per symbol for session AS_OF, computed from bars <= AS_OF only."""
    from tasks.data.store import load_bars, load_constituents
    from tasks.features.snapshot import snapshot
    from tasks.io import atomic_write_parquet

    settings, paths = load_settings(), Paths.from_env()
    day = pd.Timestamp(as_of)
    with console.status(f"features for {day.date()} ..."):
        bars = load_bars(paths.store, end=day)
        snap = snapshot(bars, load_constituents(paths.store), settings, day)
    atomic_write_parquet(out_path, snap.features)
    out.print(f"{len(snap.features)} symbols x {snap.features.shape[1]} columns -> {out_path}")


def _daily(date: str, force: bool, catch_up: tuple[str, str] | None = None) -> None:
    from flows import preflight

    settings, paths = load_settings(), Paths.from_env()
    day = preflight.daily_session(date, paths, settings)
    preflight.daily_order(paths, settings, day, catch_up=catch_up is not None)
    preflight.active_model(paths)
    from flows.daily import daily  # Prefect: only once the session and the model are known good
    from tasks.health.checks import empty_book_line

    res = daily(as_of=day.date().isoformat(), force=force,
                catch_up_by=catch_up[0] if catch_up else None,
                catch_up_reason=catch_up[1] if catch_up else None)
    state = "unchanged (same inputs; nothing recomputed)" if res.cached else res.status
    out.print(f"session {res.as_of}: {state}; {res.n_orders} orders")
    for name in ("plan", "audit", "signals", "health", "report", "latest_plan"):
        if name in res.outputs:
            out.print(f"  {name:12s} {res.outputs[name]}")
    for err in res.errors:
        console.print(f"[red]ERROR[/red] {err}")
    shown = (res.empty_book or {}).get("message")
    for warn in res.warnings:
        if warn != shown:  # the empty book gets its own line below
            console.print(f"[yellow]WARNING[/yellow] {warn}")
    if res.empty_book:
        out.print(f"[bold red]{escape(empty_book_line(res.empty_book))}[/bold red]")
    if res.status == "ERROR":
        console.print("[red]stop trading:[/red] the plan was written without orders")
        raise typer.Exit(3)


@run_app.command("daily")
@friendly
def run_daily(
    date: Annotated[str, typer.Option(help="latest | previous-session | YYYY-MM-DD")] = "latest",
    force: Annotated[bool, typer.Option(help="Recompute even when nothing changed.")] = False,
    catch_up: Annotated[bool, typer.Option("--catch-up",
                                           help="Mark the sessions missing between the book and "
                                                "this one skipped (book carried over unchanged; "
                                                "needs --by and --reason; logged).")] = False,
    by: Annotated[str | None, typer.Option(help="Who catches up (logged).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (logged).")] = None,
) -> None:
    """The pre-market pipeline for one session (a Prefect flow run); exit 3 on a health ERROR;
    exit 2 when the book is not the session's (an unfinished intraday session, missing
    sessions, a past session whose record is not kept)."""
    from flows import preflight

    _daily(date, force, preflight.operator_note(by, reason, "--catch-up") if catch_up else None)


@run_app.command("nightly")
@friendly
def run_nightly(
    date: Annotated[str, typer.Option(help="today | latest | YYYY-MM-DD")] = "latest",
) -> None:
    """Realised outcomes of earlier plans (reports/nightly/<D>.json) and the session's
    post-mortem (reports/postmortems/<D>.md and .html)."""
    from flows import preflight

    day = preflight.nightly_session(date, Paths.from_env(), load_settings())
    from flows.nightly import nightly  # Prefect: only once the session is known good

    path = nightly(date=day.date().isoformat())
    summary = json.loads(Path(path).read_text())
    hit = summary.get("hit_rate")
    out.print(f"nightly {summary['date']}: {summary['orders']} realised orders"
              + (f", hit rate {hit:.1%} vs expected {summary['expected_hit_rate']:.1%}"
                 if hit is not None else "") + f" -> {path}")
    if summary.get("trust"):
        out.print(escape(summary["trust"]["line"]))
    out.print(f"post-mortem {Path(path).parents[1] / 'postmortems' / (summary['date'] + '.md')}")


@app.command("replay")
@friendly
def replay_cmd(
    start: Annotated[str, typer.Option(help="First session YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last session YYYY-MM-DD.")],
    force: Annotated[bool, typer.Option(help="Recompute sessions already done.")] = False,
    with_intraday: Annotated[bool, typer.Option(help="plan -> intraday -> nightly for every "
                                                     "session, in the replay's own state root; "
                                                     "writes an equity curve.")] = False,
) -> None:
    """Replay the live decision point in time for every session in [START, END], under the
    replay's own root (reports/replay/<START>_<END>/sandbox): the live home is only read."""
    from flows import preflight

    paths = Paths.from_env()
    first, _ = preflight.replay_span(start, end, paths, load_settings())
    preflight.replay_model(paths, first)
    import flows.replay as rp  # Prefect: only once the span and the model are known good
    from flows.replay import replay

    with step_bar("replay", unit="sessions") as update:
        update("features and scores for the span", 0, None)

        def progress(i: int, n: int, msg: str) -> None:
            update(msg, i, n)

        rp.progress_hook = progress
        try:
            res = replay(start=start, end=end, force=force, with_intraday=with_intraday)
        finally:
            rp.progress_hook = None
    out.print(f"replayed {res.sessions} sessions {res.start}..{res.end} ({res.skipped} unchanged), "
              f"{res.seconds_per_session:.2f} s/session")
    out.print(f"summary {res.summary_path}; per-session table {res.table_path}")
    empty = rp.empty_book_summary(json.loads(Path(res.summary_path).read_text()))
    out.print(f"[bold red]{escape(empty)}[/bold red]" if empty
              else "empty book: none (every session with a BUY signal has a BUY order)")
    out.print(f"plans, reports and state of the replay under {res.state_root}")
    if res.equity_path:
        out.print(f"equity curve {res.equity_path} (+ .png)")


@app.command("backtest")
@friendly
def backtest_cmd(
    start: Annotated[str, typer.Option(help="First session YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last session YYYY-MM-DD.")],
    with_intraday: Annotated[bool, typer.Option(
        help="Execute every plan with the paper broker on the next session and run the nightly "
             "flow (the P&L, trades and gates come from it); --no-with-intraday decides the "
             "sessions only.")] = True,
    fresh: Annotated[bool, typer.Option(help="Start afresh instead of resuming an interrupted "
                                             "backtest of the same span.")] = False,
) -> None:
    """Walk-forward backtest of the active baseline over [START, END]: every session scored by
    the fold model trained before it, decided as live, paper-executed, marked by the nightly
    run; summary, tearsheet and promotion gates under reports/backtest/<START>_<END>/."""
    from flows import preflight

    paths = Paths.from_env()
    first, _ = preflight.replay_span(start, end, paths, load_settings())
    preflight.backtest_model(paths, first)
    import flows.backtest as bt  # Prefect: only once the span and the model are known good
    from flows.backtest import backtest, headline_lines

    with step_bar("backtest", unit="sessions") as update:
        update("features and fold scores for the span", 0, None)

        def progress(i: int, n: int, msg: str) -> None:
            update(msg, i, n)

        bt.progress_hook = progress
        settings = load_settings()
        run = backtest
        if settings.runtime.task_runner == "dask":  # scoring blocks spread over Dask workers
            from flows.train import dask_task_runner

            run = backtest.with_options(task_runner=dask_task_runner(settings))
        try:
            res = run(start=start, end=end, with_intraday=with_intraday, fresh=fresh)
        finally:
            bt.progress_hook = None
    out.print(f"backtest {res.start}..{res.end}: {res.sessions} sessions"
              + (" (resumed)" if res.resumed else "") + f" in {res.seconds:.0f} s")
    for line in headline_lines(res.summary):
        out.print(escape(line))
    failed = [g["name"] for g in res.gates.get("gates", []) if not g.get("passed")]
    out.print("[bold green]promotion gates: PASSED[/bold green]" if res.gates.get("passed")
              else f"[bold red]promotion gates: FAILED ({escape(', '.join(failed))})[/bold red]")
    out.print(f"tearsheet {res.folder / 'tearsheet.html'}; summary {res.folder / 'summary.json'}"
              f"; gates {res.folder / 'gates.json'}")


@app.command("demo")
@friendly
def demo_cmd() -> None:
    """Import the demo market, train a baseline if needed, run the daily flow for its last session."""
    from tasks.models.registry import load_baseline, read_registry

    data_import(source=Source.demo, path=None, constituents=None, as_of=None, symbols=None,
                start=None, end=None)
    paths = Paths.from_env()
    active = read_registry(paths).get("active")
    if active is None or "payoff" not in load_baseline(paths, active).manifest:
        res = _train(None, None, None)
        if not res.promoted and read_registry(paths).get("active") is None \
                and not res.leakage_suspect:
            _promote(paths, Slot.active, res.baseline_id, force=True, reason=DEMO_REASON,
                     by="hcp demo")
    else:
        out.print(f"active baseline {active} already trained (hcp train to retrain)")
    _say_active_skill(paths)
    _daily("latest", force=False)


DEMO_REASON = "demo market: run the pipeline end to end"


def _say_active_skill(paths: Paths) -> None:
    """Print the active model's skill verdict; a model without measured skill is never hidden."""
    from tasks.models.skill import SKILLED, active_skill, headline

    bid, rec = active_skill(paths)
    if bid is None:
        return
    if rec["verdict"] == SKILLED:
        out.print(f"active baseline {bid}: {headline(rec)}")
    else:
        console.print(f"[yellow]WARNING[/yellow] active baseline {bid} has no measured skill: "
                      f"{headline(rec, promoted_note='')} Its plans are for demonstration only.")


class Slot(StrEnum):
    active = "active"
    shadow = "shadow"


class ScoreSource(StrEnum):
    parquet = "parquet"
    csv = "csv"


def _user() -> str:
    """Who runs the command (for the registry's override log)."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment
        return "unknown"


def _now() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")


@app.command("train")
@friendly
def train_cmd(
    start: Annotated[str | None, typer.Option(help="First bar used (default: store start).")] = None,
    train_end: Annotated[str | None, typer.Option(help="Last bar used anywhere (default: store end).")
                         ] = None,
    baseline: Annotated[str | None, typer.Option(help="Baseline id (default derived).")] = None,
) -> None:
    """Walk-forward train the ensemble, calibrate per regime, write reports; promote if no model
    is active and the baseline has measured skill (the output says why not otherwise)."""
    _train(start, train_end, baseline)


def _train(start: str | None, train_end: str | None, baseline: str | None):
    """Train, print the metrics, the skill verdict and whether (and why not) it was promoted."""
    from tasks.models.pipeline import run_training
    from tasks.models.skill import SKILLED, headline

    settings, paths = load_settings(), Paths.from_env()
    with step_bar("train") as progress:
        if settings.runtime.task_runner == "dask":
            from flows import train as tf

            tf.progress_hook = progress
            try:
                res = tf.run_distributed(settings, start, train_end, baseline)
            finally:
                tf.progress_hook = None
        else:
            res = run_training(paths, settings, _now(), start, train_end, baseline,
                               progress=progress)
    cols = ["horizon", "n", "auc", "brier_skill", "ece", "ic_mean", "ic_t_nw", "icir",
            "lift_at_10"]
    out.print(res.overall[[c for c in cols if c in res.overall]].to_string(index=False))
    if res.leakage_suspect:
        console.print(f"[red]presumed leakage[/red] (OOS AUC too high) for {res.leakage_suspect}: "
                      "not promoted; inspect the features before using this baseline")
    out.print(f"baseline {res.baseline_id}: models {res.model_dir}; OOS {res.oos_path}; "
              f"report {res.report_dir}" + ("; promoted to active" if res.promoted else ""))
    if res.skill:
        skilled = res.skill.get("verdict") == SKILLED
        (out if skilled else console).print(
            ("skill: " if skilled else "[yellow]skill:[/yellow] ") + headline(res.skill, ""))
    if not res.promoted:
        out.print(f"not promoted to active: {res.promotion}")
    return res


@app.command("score")
@friendly
def score_cmd(
    baseline: Annotated[str, typer.Option(help="Baseline id to score with.")],
    source: Annotated[ScoreSource, typer.Option(help="Input format.")],
    path: Annotated[Path, typer.Option(help="File or folder of bars.")],
    start: Annotated[str, typer.Option(help="First scored session.")],
    end: Annotated[str, typer.Option(help="Last scored session.")],
    out_path: Annotated[Path, typer.Option("--out", help="Output parquet.")],
    constituents: Annotated[Path | None, typer.Option(help="CSV: symbol,name,sector.")] = None,
) -> None:
    """Score any data set (history before START feeds features only)."""
    from tasks.data.ingest import prepare_bars
    from tasks.data.sources import CsvSource, ParquetSource
    from tasks.io import atomic_write_parquet
    from tasks.models.registry import load_baseline
    from tasks.models.scoring import score_features
    from tasks.models.train import training_frame

    settings, paths = load_settings(), Paths.from_env()
    model = load_baseline(paths, baseline)
    cls = ParquetSource if source is ScoreSource.parquet else CsvSource
    with console.status("validating, building features, scoring ..."):
        prep = prepare_bars(cls(path, constituents), settings, paths)
        frame = training_frame(prep.bars, prep.constituents, settings)
        frame = frame.loc[(frame["date"] >= pd.Timestamp(start)) & (frame["date"] <= pd.Timestamp(end))]
        if frame.empty:
            raise ValueError(f"no scorable rows between {start} and {end}")
        scored = score_features(model, frame, settings)
    atomic_write_parquet(out_path, scored)
    out.print(f"{len(scored)} rows ({scored['symbol'].nunique()} symbols) -> {out_path}; "
              f"quality report {prep.report}")


@app.command("promote")
@friendly
def promote_cmd(
    to: Annotated[Slot, typer.Option("--to", help="Registry slot.")],
    baseline_id: Annotated[str, typer.Option("--id", help="Baseline id.")],
    force: Annotated[bool, typer.Option(help="Put a baseline without measured skill or whose "
                                             "backtest gates fail (or are missing) into the "
                                             "active slot (needs --reason; logged).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why the skill gate and the backtest gates "
                                                    "are overridden (with --force).")] = None,
    by: Annotated[str | None, typer.Option(help="Who overrides (default: the OS user).")] = None,
) -> None:
    """Put a baseline into the active or shadow slot (active: skilled and its newest backtest
    gates pass, or --force --reason)."""
    _promote(Paths.from_env(), to, baseline_id, force=force, reason=reason, by=by)


def _promote(paths: Paths, to: Slot, baseline_id: str, *, force: bool = False,
             reason: str | None = None, by: str | None = None) -> None:
    """Promote; a refused skill or backtest gate is one line and exit 2; a forced override is
    printed."""
    from rich.markup import escape

    from tasks.models.registry import GateError, SkillGateError, promote

    try:
        reg = promote(paths, baseline_id, to.value, _now(), force=force, reason=reason,
                      by=by or _user())
    except (SkillGateError, GateError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    last = reg["history"][-1]
    if last.get("forced"):
        what = []
        if "skill_verdict" in last:
            what.append(f"[yellow]skill gate overridden[/yellow] (verdict {last['skill_verdict']})")
        if last.get("failed_gates"):
            what.append("[yellow]backtest gates overridden[/yellow] (failed: "
                        f"{escape(', '.join(map(str, last['failed_gates'])))})")
        console.print(f"{'; '.join(what)}: baseline {baseline_id} promoted to active by "
                      f"{escape(last['by'])} at {last['at']}: {escape(last['reason'])} "
                      "(logged in the registry history)", soft_wrap=True)
    out.print(f"active: {reg['active']}  shadow: {reg['shadow']}")


@models_app.command("list")
@friendly
def models_list() -> None:
    """List baselines with their span, schema hash and slot."""
    from tasks.models.manifests import read_manifest_file
    from tasks.models.registry import list_baselines, read_registry

    paths = Paths.from_env()
    reg = read_registry(paths)
    table = Table(title="baselines")
    for col in ("id", "slot", "created_at", "training span", "schema"):
        table.add_column(col)
    for bid in list_baselines(paths):
        m = read_manifest_file(paths, bid, needs=("training_span", "created_at",
                                                  "feature_schema_hash"))
        slot = ",".join(s for s in ("active", "shadow") if reg.get(s) == bid) or "-"
        span = f"{m['training_span']['start']}..{m['training_span']['end']}"
        table.add_row(bid, slot, m["created_at"], span, m["feature_schema_hash"])
    out.print(table)


@hint_app.command("fit")
@friendly
def hint_fit(
    backtest: Annotated[str, typer.Option(
        help="The backtest to learn from: START_END as under reports/backtest/ (e.g. "
             "2005-01-03_2010-12-31), or a path to such a folder.")],
) -> None:
    """Fit the size hint walk-forward on a backtest's closed episodes, judge it against a
    constant and a volatility-targeting size, and register it. Plans use it only if it passed."""
    from datetime import UTC, datetime

    from tasks.backtest.sizehint import gate_lines, learn

    paths = Paths.from_env()
    folder = Path(backtest) if "/" in backtest else paths.reports / "backtest" / backtest
    if not (folder / "sandbox").is_dir():
        known = sorted(p.name for p in (paths.reports / "backtest").glob("*_*") if p.is_dir()) \
            if (paths.reports / "backtest").is_dir() else []
        raise FileNotFoundError(f"no backtest at {folder} (known: {', '.join(known) or 'none'}; "
                                "run `hcp backtest --start S --end E` first)")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = learn(paths, folder, load_settings(), now,
                     say=lambda m: console.print(escape(m), soft_wrap=True))
    for line in gate_lines(manifest):
        out.print(escape(line), soft_wrap=True)


@hint_app.command("show")
@friendly
def hint_show() -> None:
    """The current size hint, its gate and whether plans use it."""
    from tasks.plan.sizehint import hint_status

    status = hint_status(Paths.from_env(), load_settings())
    out.print(escape(f"{status.case}: {status.reason}"), soft_wrap=True)
    for name, f in ((status.gate or {}).get("rules") or {}).items():
        out.print(escape(f"  {name:<10} deflated Sharpe {f.get('dsr')}  max drawdown "
                         f"{f.get('max_drawdown')}"), soft_wrap=True)


@config_app.command("show")
@friendly
def config_show() -> None:
    """Print the settings in force (YAML file + HCP_* environment) as JSON."""
    settings = load_settings()
    out.print(f"# {config_path()}")
    out.print(json.dumps(settings.model_dump(mode="json"), indent=2))


@config_app.command("check")
@friendly
def config_check(path: Annotated[Path | None, typer.Argument(help="YAML file.")] = None) -> None:
    """Validate a settings file (default: the one in force); exit 2 with the reason if invalid.

    The file in force must hold every section of the shipped config/app.yaml; another file
    may be partial (an overlay): it is checked and the sections it leaves to the code
    defaults are named."""
    from tasks.settings import partial_sections

    load_settings(path)
    shown = path or config_path()
    left = partial_sections(path)
    note = (f" (partial: {', '.join(left)} from the code defaults; refused as the file in force)"
            if left else "")
    out.print(f"ok: {shown}{note}")


register_execution(app, run_app)
from flows.cli_policy import policy_app  # noqa: E402  (it uses the helpers above)
from flows.cli_state import state_app  # noqa: E402

app.add_typer(policy_app, name="policy")
app.add_typer(state_app, name="state")


def main() -> None:
    """Entry point of the ``hcp`` console script."""
    app(prog_name="hcp")


if __name__ == "__main__":
    sys.exit(main())
