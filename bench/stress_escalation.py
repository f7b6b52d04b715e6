"""Replay a real stress period with escalation on, and write one day's post-mortem.

Imports ``../shared/data/sp500``, trains a small baseline on bars before the period, starts
``python -m llama_cpp.server`` with SmolLM2-135M (the llm-test extra) and points the *remote*
endpoint at it (``HCP_REMOTE_BASE_URL``; the local reasoner uses the same server). Then, for
every session in [start, end], it runs the daily flow and the nightly flow, so the realised
records of earlier plans feed the model-decay trigger of later sessions. It prints the sessions
that escalated and copies the post-mortem (.md) and the escalation record (.json) of one of
them (the last with an applied change, else the last escalation) to ``--copy-to``.

    .venv/bin/python bench/stress_escalation.py --home /tmp/stress2008 \\
        --start 2008-09-02 --end 2008-10-24 --copy-to ../examples

A tiny model answers with schema-shaped nonsense: the record shows what the validators and
bounds clipped or rejected. Nothing here reaches the internet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "sp500"
FAST = {"HCP_MODELS__FIRST_TEST_YEAR": "2005", "HCP_MODELS__MAX_TRAIN_ROWS": "30000",
        "HCP_MODELS__RF__N_ESTIMATORS": "40", "HCP_MODELS__XGB__N_ESTIMATORS": "100",
        "HCP_MODELS__CAT__ITERATIONS": "80"}


def configure(home: Path, url: str) -> None:
    """Environment of the run: small models, the local server as 'remote' and as reasoner."""
    os.environ.update(FAST)
    os.environ.update({
        "HCP_HOME": str(home), "OPENAI_API_KEY": "sk-local-llama-server",
        "HCP_REMOTE_BASE_URL": url, "HCP_REMOTE_MODEL": "smollm2-135m-via-llama.cpp",
        "HCP_REMOTE__RESPONSE_FORMAT": "json_object", "HCP_REMOTE__TEMPERATURE": "0",
        "HCP_REMOTE__SEED": "7", "HCP_REMOTE__MAX_COMPLETION_TOKENS": "300",
        "HCP_REMOTE__TIMEOUT_S": "60", "HCP_LOCAL_BACKEND": "llamacpp",
        "HCP_REASONER__LLAMACPP__SERVER_URL": url, "HCP_REASONER__LLAMACPP__MAX_TOKENS": "200",
        "HCP_REASONER__MAX_CONFLICT_NOTES": "2", "OLLAMA_HOST": "http://127.0.0.1:9"})


def prepare(home: Path, train_end: str, data: Path) -> None:
    from tasks.data.ingest import import_bars
    from tasks.data.sources import ParquetSource
    from tasks.models.pipeline import run_training
    from tasks.models.registry import promote, read_registry
    from tasks.paths import Paths
    from tasks.settings import load_settings

    paths, settings = Paths(home), load_settings()
    import_bars(ParquetSource(data / "ohlcv_daily.parquet", data / "constituents.csv"),
                settings, paths)
    if read_registry(paths).get("active") is None:
        res = run_training(paths, settings, "2026-01-01T00:00:00+00:00", start="2001-01-01",
                           train_end=train_end, baseline_id="real-small-2008")
        if not res.promoted:  # e.g. the leakage guard's AUC limit, crossed in 2005-2008 data
            print(f"baseline {res.baseline_id} not promoted automatically (leakage flag: "
                  f"{res.leakage_suspect}); promoted explicitly for this replay", flush=True)
            promote(paths, res.baseline_id, "active", "2026-01-01T00:00:00+00:00")


def replay(home: Path, start: str, end: str) -> list[dict]:
    import pandas as pd

    from flows.daily import daily
    from flows.nightly import nightly
    from tasks.data.calendar import sessions

    rows = []
    for day in sessions("XNYS", pd.Timestamp(start), pd.Timestamp(end)):
        d = day.date().isoformat()
        tick = time.perf_counter()
        res = daily(as_of=d)
        nightly(date=d)
        health = json.loads(Path(res.outputs["health"]).read_text())
        calls = health.get("escalation", {}).get("calls", [])
        fired = [t["name"] for t in health.get("escalation", {}).get("triggers", []) if t["fired"]]
        rows.append({"date": d, "orders": res.n_orders, "fired": fired,
                     "calls": [(c["call_type"], c["status"]) for c in calls],
                     "seconds": round(time.perf_counter() - tick, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def pick(rows: list[dict]) -> str | None:
    applied = [r["date"] for r in rows if any(s == "applied" for _, s in r["calls"])]
    called = [r["date"] for r in rows if r["calls"]]
    return (applied or called or [None])[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--start", default="2008-09-02")
    ap.add_argument("--end", default="2008-10-24")
    ap.add_argument("--train-end", default="2008-08-29")
    ap.add_argument("--copy-to", type=Path)
    ap.add_argument("--data", type=Path, default=DATA, help="Folder of ohlcv_daily.parquet.")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from llama_server import gguf_path, llama_server, missing

    if missing() or not (args.data / "ohlcv_daily.parquet").is_file():
        sys.exit(f"cannot run: {missing() or f'no data at {args.data}'}")
    with llama_server(gguf_path()) as url:
        configure(args.home.resolve(), url)
        prepare(args.home.resolve(), args.train_end, args.data)
        rows = replay(args.home.resolve(), args.start, args.end)
    day = pick(rows)
    summary = args.home / "stress_summary.json"
    summary.write_text(json.dumps({"sessions": rows, "example_day": day}, indent=2))
    print(f"summary {summary}; example day {day}")
    if day and args.copy_to:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        for src in (args.home / "reports" / "postmortems" / f"{day}.md",
                    args.home / "reports" / "escalations" / f"{day}.json"):
            target = args.copy_to / f"{src.parent.name}_{src.name}"
            shutil.copyfile(src, target)
            print(f"copied {target}")


if __name__ == "__main__":
    main()
