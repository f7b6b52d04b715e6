"""Import = read a source, validate, adjust, write the quality report and the bar store."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from tasks.data.adjust import adjust_bars
from tasks.data.sources import BarSource
from tasks.data.store import UNKNOWN_SECTOR, complete_constituents, content_hash, write_store
from tasks.data.validate import validate_bars
from tasks.io import atomic_write_json, frame_hash
from tasks.paths import Paths
from tasks.progress import StepCallback, Steps
from tasks.settings import AppSettings


class NothingUsable(RuntimeError):
    """Validation left no usable bar; the quality report says why."""

    def __init__(self, message: str, report: Path):
        super().__init__(message)
        self.report = report


@dataclass
class ImportResult:
    """Summary of one import."""

    store: Path
    report: Path
    changed: bool
    content_hash: str
    rows_in: int
    rows_kept: int
    symbols_kept: int
    findings: pd.DataFrame


def _sector_findings(cons: pd.DataFrame, had_constituents: bool) -> list[dict]:
    missing = cons.loc[cons["sector"] == UNKNOWN_SECTOR, "symbol"]
    why = "not in the constituents file" if had_constituents else "no constituents file given"
    return [{"symbol": s, "date": None, "rule": "unknown_sector", "action": "warning",
             "detail": f"sector unknown ({why}); sector features treat it as its own group"}
            for s in missing]


def write_quality_report(folder: Path, source: str, key: str, inputs: list[str],
                         rows_in: int, bars: pd.DataFrame, findings: pd.DataFrame) -> Path:
    """Write the JSON quality report (deterministic: same inputs, same bytes)."""
    counts = Counter(zip(findings["rule"], findings["action"], strict=True))
    report = {
        "source": source,
        "inputs": inputs,
        "rows_in": rows_in,
        "rows_kept": int(len(bars)),
        "symbols_kept": int(bars["symbol"].nunique()) if len(bars) else 0,
        "summary": [{"rule": r, "action": a, "count": n} for (r, a), n in sorted(counts.items())],
        "findings": findings.where(findings.notna(), None).to_dict(orient="records"),
    }
    return atomic_write_json(Path(folder) / f"import_{source}_{key[:12]}.json", report)


def with_exchange_tz(source: BarSource, settings: AppSettings) -> BarSource:
    """A file source that has no exchange zone yet gets the calendar's: its timezone-aware
    stamps in that zone then give their local session date (:func:`tasks.data.sources.session_dates`)."""
    if getattr(source, "exchange_tz", "") is not None:  # not a file source, or already set
        return source
    from tasks.data.calendar import _calendar

    return replace(source, exchange_tz=str(_calendar(settings.data.calendar).tz))


def _why_nothing(findings: pd.DataFrame) -> str:
    """The first rejected file's reason (an empty string when no file was rejected)."""
    rejected = findings.loc[findings["action"] == "file_rejected", "detail"]
    return f" (e.g. {rejected.iloc[0]})" if len(rejected) else ""


@dataclass
class Prepared:
    """Validated, adjusted bars of one source and every finding about them."""

    bars: pd.DataFrame
    constituents: pd.DataFrame
    findings: pd.DataFrame
    inputs: list[str]
    rows_in: int
    report: Path


def prepare_bars(source: BarSource, settings: AppSettings, paths: Paths,
                 as_of: pd.Timestamp | None = None, say: Steps | None = None) -> Prepared:
    """Read, validate and adjust; write the quality report; raise NothingUsable if nothing is."""
    say = say or Steps()
    say(f"reading {source.name}")
    loaded = with_exchange_tz(source, settings).load()
    say(f"validating {len(loaded.bars):,} rows")
    checked = validate_bars(loaded.bars, settings.data, as_of)
    findings = pd.concat([pd.DataFrame(loaded.findings, columns=checked.findings.columns,
                                       dtype=object), checked.findings],
                         ignore_index=True).astype("object")
    rows_in = int(len(loaded.bars))
    if checked.bars.empty:
        key = frame_hash(loaded.bars.astype("string")) if rows_in else "empty"
        report = write_quality_report(paths.quality, source.name, key, loaded.inputs,
                                      rows_in, checked.bars, findings)
        raise NothingUsable(f"no usable bars in {loaded.inputs}{_why_nothing(findings)}; "
                            f"see {report}", report)
    say("adjusting for splits and dividends")
    bars = adjust_bars(checked.bars)
    say("constituents and quality report")
    cons = complete_constituents(bars, loaded.constituents)
    sector = pd.DataFrame(_sector_findings(cons, loaded.constituents is not None),
                          columns=findings.columns, dtype=object)
    findings = pd.concat([findings, sector], ignore_index=True).astype("object")
    report = write_quality_report(paths.quality, source.name, content_hash(bars, cons),
                                  loaded.inputs, rows_in, bars, findings)
    return Prepared(bars, cons, findings, loaded.inputs, rows_in, report)


def import_bars(source: BarSource, settings: AppSettings, paths: Paths,
                as_of: pd.Timestamp | None = None,
                progress: StepCallback | None = None) -> ImportResult:
    """Validate and store what ``source`` delivers; raise :class:`NothingUsable` if nothing is.

    ``progress`` gets ``(message, done, total)`` for each of the five steps.
    """
    say = Steps(progress, total=5)
    prep = prepare_bars(source, settings, paths, as_of, say)
    say("writing the store")
    report = prep.report
    meta = {"source": source.name, "inputs": prep.inputs,
            "quality_report": str(report.relative_to(paths.home))
            if report.is_relative_to(paths.home) else str(report)}
    outcome = write_store(paths.store, prep.bars, prep.constituents, meta)
    say.finish("stored")
    return ImportResult(paths.store, report, outcome.changed, outcome.content_hash, prep.rows_in,
                        int(len(prep.bars)), int(prep.bars["symbol"].nunique()), prep.findings)
