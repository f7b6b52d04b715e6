"""Benchmark the daily pre-market flow against an empty Prefect flow, and the replay throughput.

On the shared S&P 500 data set, in a temporary ``HCP_HOME``: import the bars, train a baseline
with reduced model settings (the benchmark times the daily pipeline, not training), then

* the ``daily`` flow (``force=True``, so every run recomputes) and an empty ``@flow``, alternated,
  on the same temporary Prefect server (server start-up not timed): median seconds and the
  ratio daily / empty (target <= 1.5); one more ``daily`` without force (the cached path);
* ``run_replay`` over 60 sessions from 2017-01-03 (``force=True``): sessions per second for the
  whole call, from ``ReplayResult.seconds_per_session`` and for the per-session loop alone
  (target >= 2 sessions/s);
* peak RSS of the process.

    .venv/bin/python bench/bench_daily.py [--data-dir ../shared/data/sp500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Reduced models: training only has to produce an active baseline for the daily flow to score.
FAST_MODELS = {
    "HCP_MODELS__FIRST_TEST_YEAR": "2014",
    "HCP_MODELS__MAX_TRAIN_ROWS": "30000",
    "HCP_MODELS__RF__N_ESTIMATORS": "40",
    "HCP_MODELS__XGB__N_ESTIMATORS": "100",
    "HCP_MODELS__CAT__ITERATIONS": "80",
}
TRAIN_START, TRAIN_END = "2010-01-01", "2016-12-30"
AS_OF = "2017-03-31"
REPLAY_START, REPLAY_SESSIONS = "2017-01-03", 60
TARGET_RATIO, TARGET_RATE = 1.5, 2.0


def _import_project() -> SimpleNamespace:
    """Import the project modules (after the environment is set); retry once on failure,
    since others may be editing flows/ and tasks/ while this runs."""
    names = {"import_bars": ("tasks.data.ingest", "import_bars"),
             "ParquetSource": ("tasks.data.sources", "ParquetSource"),
             "sessions": ("tasks.data.calendar", "sessions"),
             "run_training": ("tasks.models.pipeline", "run_training"),
             "promote": ("tasks.models.registry", "promote"),
             "Paths": ("tasks.paths", "Paths"),
             "load_settings": ("tasks.settings", "load_settings"),
             "daily": ("flows.daily", "daily"),
             "run_replay": ("flows.replay", "run_replay")}
    for attempt in (1, 2):
        try:
            return SimpleNamespace(**{k: getattr(importlib.import_module(m), a)
                                      for k, (m, a) in names.items()})
        except Exception as exc:  # noqa: BLE001 - a half-written file shows up as any error
            if attempt == 2:
                raise
            print(f"  project import failed ({type(exc).__name__}: {exc}); retrying once in 5 s",
                  flush=True)
            for mod in [m for m in sys.modules if m.split(".")[0] in ("tasks", "flows")]:
                del sys.modules[mod]
            time.sleep(5)
    raise AssertionError("unreachable")


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def _runs(times: list[float]) -> str:
    return "[" + ", ".join(f"{t:.2f}" for t in times) + "]"


def bench_flows(p: SimpleNamespace, repeats: int) -> dict:
    """Daily (force) vs an empty flow, alternated, on one temporary Prefect server."""
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    @flow(name="bench-empty")
    def empty() -> None:
        """Does nothing: the cost of a flow run itself (API calls, state changes, logging)."""

    out: dict = {"empty": [], "daily": []}
    print(f"\nDaily flow vs empty flow ({repeats} repeats each, alternated, one temporary Prefect "
          "server; its start-up is not timed)", flush=True)
    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        out["server_start_s"] = time.perf_counter() - t0
        print(f"  Prefect test server up in {out['server_start_s']:.1f} s (untimed)", flush=True)
        for i in range(repeats):
            t_empty, _ = _timed(empty)
            out["empty"].append(t_empty)
            t_daily, res = _timed(p.daily, as_of=AS_OF, force=True)
            out["daily"].append(t_daily)
            if res.cached:
                raise SystemExit("daily(force=True) returned a cached result")
            print(f"  repeat {i + 1}: empty {t_empty:6.2f} s   daily(force) {t_daily:6.2f} s  "
                  f"[{res.status}, {res.n_orders} orders]", flush=True)
        out["cached"], res = _timed(p.daily, as_of=AS_OF)
        out["cached_hit"] = res.cached
        print(f"  daily (no force, same inputs): {out['cached']:.2f} s, cached={res.cached}",
              flush=True)
    return out


def bench_replay(p: SimpleNamespace, settings) -> dict:
    """run_replay over REPLAY_SESSIONS sessions from REPLAY_START (force)."""
    days = p.sessions(settings.data.calendar, REPLAY_START, "2017-12-31")[:REPLAY_SESSIONS]
    start, end = days[0].date().isoformat(), days[-1].date().isoformat()
    print(f"\nReplay {start} .. {end} ({len(days)} sessions, force=True)", flush=True)
    ticks: list[float] = []

    def progress(i: int, n: int, msg: str) -> None:
        ticks.append(time.perf_counter())

    t0 = time.perf_counter()
    res = p.run_replay(start, end, force=True, progress=progress)
    wall = time.perf_counter() - t0
    counts = json.loads(Path(res.summary_path).read_text()).get("status_counts", {})
    loop = (ticks[-1] - ticks[0]) / (len(ticks) - 1) if len(ticks) > 1 else float("nan")
    print(f"  {res.sessions} sessions ({res.skipped} skipped as unchanged), status {counts}, "
          f"wall {wall:.2f} s", flush=True)
    return {"start": start, "end": end, "n": res.sessions, "skipped": res.skipped, "wall": wall,
            "per_session": res.seconds_per_session, "loop": loop,
            "before_loop": (ticks[0] - t0 - loop) if ticks else float("nan")}


def report(train_s: float, import_s: float, fl: dict, rp: dict) -> None:
    med_e, med_d = statistics.median(fl["empty"]), statistics.median(fl["daily"])
    ratio = med_d / med_e
    print("\n" + "=" * 96)
    print(f"Setup (not part of any ratio): import {import_s:.1f} s, training {train_s:.1f} s "
          "(reduced models), Prefect server start-up "
          f"{fl['server_start_s']:.1f} s")
    print(f"\n{'daily flow, as_of ' + AS_OF:<52} {'median s':>9}  runs")
    print(f"{'empty @flow':<52} {med_e:9.2f}  {_runs(fl['empty'])}")
    print(f"{'daily(force=True) - full recompute':<52} {med_d:9.2f}  {_runs(fl['daily'])}")
    print(f"{'daily() - same inputs, cached path':<52} {fl['cached']:9.2f}  "
          f"(1 run, cached={fl['cached_hit']})")
    print(f"ratio daily(force) / empty flow: {ratio:.2f}x  (target <= {TARGET_RATIO}: "
          f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'})")
    print(f"  difference of the medians: {med_d - med_e:.2f} s (Prefect flow runs end on a ~1 s "
          "heartbeat step, see bench/README.md: compare the individual runs)")

    n = rp["n"]
    rates = [
        ("whole run_replay call (wall, incl. one-off bars/features/scoring for the span)",
         rp["wall"] / n),
        ("ReplayResult.seconds_per_session (bars load + features + scoring for the span "
         "+ loop, / sessions)", rp["per_session"]),
        (f"per-session loop only ({n - 1} intervals between progress callbacks)", rp["loop"]),
    ]
    width = max(len(label) for label, _ in rates) + 2
    title = f"replay {rp['start']} .. {rp['end']}, {n} sessions, force=True"
    print(f"\n{title:<{width}} {'s/session':>9} {'sessions/s':>11}")
    for label, per in rates:
        rate = 1.0 / per
        print(f"  {label:<{width - 2}} {per:9.3f} {rate:11.2f}  "
              f"{'PASS' if rate >= TARGET_RATE else 'FAIL'} (>= {TARGET_RATE:g}/s)")
    print(f"  one-off work before the first session (settings, models, bars, features, scoring), "
          f"derived: {rp['before_loop']:.2f} s")
    print("  seconds_per_session excludes only settings/model loading and the summary write; "
          "the loop figure excludes all one-off work")

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"\npeak RSS (ru_maxrss of this process, whole run: import, training, flows, replay): "
          f"{own:.0f} MB; the Prefect test server runs in its own process, not counted")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cores} cores, load average now {os.getloadavg()[0]:.2f} "
          "(other work on the machine skews timings)")


def main() -> int:
    """Parse arguments and run the benchmark; exit 0 with a message when the data is absent."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sp500")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data_dir = (args.data_dir if args.data_dir.is_absolute() else Path.cwd() / args.data_dir)
    data_dir = data_dir.resolve()
    needed = [data_dir / "ohlcv_daily.parquet", data_dir / "constituents.csv"]
    missing = [str(f) for f in needed if not f.is_file()]
    if missing:
        print(f"bench_daily: real data not found ({', '.join(missing)}); nothing to benchmark. "
              "Pass --data-dir to point at the sp500 folder.")
        return 0
    repeats = max(1, args.repeats)

    with tempfile.TemporaryDirectory(prefix="hcp_bench_daily_", ignore_cleanup_errors=True) as tmp:
        # before any project module is imported: flows/__init__ points PREFECT_HOME at HCP_HOME
        home = Path(tmp) / "home"
        (home / ".prefect").mkdir(parents=True)
        os.environ["HCP_HOME"] = str(home)
        os.environ.update(FAST_MODELS)
        p = _import_project()
        import prefect

        settings, paths = p.load_settings(), p.Paths.from_env()
        m = settings.models
        print(f"bench_daily: data {data_dir}, repeats {repeats}, HCP_HOME {paths.home}, "
              f"python {sys.version.split()[0]}, prefect {prefect.__version__}")
        print(f"models reduced (first_test_year {m.first_test_year}, max_train_rows "
              f"{m.max_train_rows}, rf {m.rf.n_estimators} trees, xgb {m.xgb.n_estimators} "
              f"rounds, cat {m.cat.iterations} iterations): this benchmark times the daily "
              "pipeline, not training", flush=True)

        source = p.ParquetSource(needed[0], needed[1])
        import_s, imp = _timed(p.import_bars, source, settings, paths)
        print(f"  import: {imp.rows_kept:,} bars, {imp.symbols_kept} symbols in {import_s:.1f} s",
              flush=True)
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        train_s, tr = _timed(p.run_training, paths, settings, now, start=TRAIN_START,
                             train_end=TRAIN_END)
        print(f"  training {TRAIN_START} .. {TRAIN_END}: {tr.baseline_id} in {train_s:.1f} s, "
              f"promoted={tr.promoted}", flush=True)
        if not tr.promoted:
            print(f"  note: not promoted automatically (leakage suspect: {tr.leakage_suspect}); "
                  "promoting it to active so the daily flow can run", flush=True)
            p.promote(paths, tr.baseline_id, "active", now)

        fl = bench_flows(p, repeats)
        rp = bench_replay(p, settings)
        report(train_s, import_s, fl, rp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
