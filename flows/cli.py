"""``hcp``: the command line of the hybrid control plane. Outputs go under ``$HCP_HOME``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from tasks.data.sources import SourceError
from tasks.data.store import StoreError
from tasks.paths import Paths
from tasks.settings import ConfigError, config_path, load_settings

app = typer.Typer(help="Hybrid control plane: validated data, features, models, daily plan.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Import, inspect and query market data.", no_args_is_help=True)
config_app = typer.Typer(help="Show or check the settings tree.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
console = Console(stderr=True)
out = Console()


class Source(StrEnum):
    demo = "demo"
    parquet = "parquet"
    csv = "csv"
    yfinance = "yfinance"


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known errors into one clear line and exit code 2 instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from tasks.data.ingest import NothingUsable

        try:
            return fn(*args, **kwargs)
        except NothingUsable as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        except (ConfigError, StoreError, SourceError, ValueError, FileNotFoundError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc

    return wrapper


def _make_source(source: Source, path: Path | None, constituents: Path | None,
                 symbols: str | None, start: str | None, end: str | None):
    from tasks.data.sources import CsvSource, DemoSource, ParquetSource, YFinanceSource

    if source is Source.demo:
        d = load_settings().data.demo
        return DemoSource(Paths.from_env().demo, d.seed, d.n_symbols, d.n_sectors, d.start,
                          d.end, d.inject_bad_rows)
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
    with console.status(f"importing from {source.value}: read, validate, adjust, store ..."):
        res = import_bars(src, settings, paths, pd.Timestamp(as_of) if as_of else None)
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


@app.command("daily")
@friendly
def daily_cmd(
    as_of: Annotated[str, typer.Option(help="latest | previous-session | YYYY-MM-DD")] = "latest",
) -> None:
    """Run the pre-market daily flow (a Prefect flow run) for one session."""
    from flows.daily import daily

    res = daily(as_of=as_of)
    out.print(f"daily {res.as_of}: {res.n_symbols} symbols; features {res.features_path}; "
              f"summary {res.summary_path}")


@app.command("demo")
@friendly
def demo_cmd() -> None:
    """Build the demo market, import it and run the daily flow on its last session."""
    data_import(source=Source.demo, path=None, constituents=None, as_of=None, symbols=None,
                start=None, end=None)
    daily_cmd(as_of="latest")


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
    """Validate a settings file (default: the one in force); exit 2 with the reason if invalid."""
    load_settings(path)
    out.print(f"ok: {path or config_path()}")


def main() -> None:
    """Entry point of the ``hcp`` console script."""
    app(prog_name="hcp")


if __name__ == "__main__":
    sys.exit(main())
