"""`hcp train` in process against the same training on a Dask LocalCluster, in one run.

The bars (the shared S&P 500 file, or ``--demo`` the seeded synthetic market) are imported
into one temporary home; then the whole training (features, walk-forward of every horizon,
final models, fold models, reports: :func:`tasks.models.pipeline.run_training`) runs twice:

1. **in process**: ``runtime.task_runner: threads``, every fit on ``--threads`` threads
   (default ``runtime.n_threads``), one after the other;
2. **Dask**: the ``train`` flow (:mod:`flows.train`) on a ``LocalCluster`` of ``--workers``
   processes x 1 thread, each fit on 1 thread, under a temporary Prefect server.

It prints each wall time, the ratio, the time of the base fits per (horizon, block) and per
part measured in the in-process run (the cost of one fold), the peak RSS of this process, and
checks that both runs wrote the same out-of-sample predictions to the last bit only when the
fits used the same thread count (``--threads 1``; XGBoost's sums can differ in the last bit
between thread counts). ``docs/scale-out.md`` projects these figures to N workers.

    .venv/bin/python bench/train_dask.py [--data ../shared/data/sp500/ohlcv_daily.parquet]
        [--symbols N] [--start YYYY-MM-DD] [--end YYYY-MM-DD] [--workers 2] [--threads 2]
    .venv/bin/python bench/train_dask.py --demo [--symbols 500] [--start 2000-01-03] [--end 2019-12-31]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.data.ingest import import_bars  # noqa: E402
from tasks.models import pipeline, train  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.settings import load_settings  # noqa: E402

SHARED_TARGET_S = 5 * 60
NOW = "2026-01-01T00:00:00+00:00"


def _folds_bench():
    spec = importlib.util.spec_from_file_location("train_folds", ROOT / "bench" / "train_folds.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_folds"] = mod      # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _timed_parts(times: dict) -> mock._patch:
    """Time every base fit of the in-process run by (horizon, part)."""
    real = train.fit_part

    def run(frame, mask, name, sessions, settings, part, samples=None):
        t0 = time.perf_counter()
        try:
            return real(frame, mask, name, sessions, settings, part, samples)
        finally:
            times[(name, part)].append(time.perf_counter() - t0)
    return mock.patch.object(train, "fit_part", run)


def _phases(t0: float, steps: list[tuple[float, str]], t_end: float) -> list[tuple[str, float]]:
    """Seconds of each phase of ``run_training`` from its progress messages: the training
    frame, the walk-forward (every fold and final model of every horizon), the fold models
    with their point-in-time manifests, and the metrics and reports."""
    marks = [(t, m) for t, m in steps]
    out: dict[str, float] = defaultdict(float)
    for i, (t, msg) in enumerate(marks):
        nxt = marks[i + 1][0] if i + 1 < len(marks) else t_end
        if msg.startswith("features"):
            key = "bars, features and labels (the frame)"
        elif ": fold " in msg or msg.endswith("final model"):
            key = "walk-forward: folds and final models"
        elif msg.startswith("fold models"):
            key = "fold models and their point-in-time manifests"
        elif msg.startswith(("metrics", "presumed")):
            key = "metrics, skill, validation report, model card"
        else:
            key = "other"
        out[key] += nxt - t
    first = marks[0][0] if marks else t_end
    out["bars, features and labels (the frame)"] += first - t0
    return list(out.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _folds_bench().add_source_args(ap)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-dask", action="store_true", help="the in-process run only")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads per fit in process (default runtime.n_threads)")
    args = ap.parse_args(argv)
    if not args.demo and not args.data.is_file():
        print(f"data file not found at {args.data}; nothing to benchmark (--demo needs none)")
        return 0
    try:
        import prefect_dask  # noqa: F401
    except ImportError:
        print('prefect-dask is not installed (pip install -e ".[dask]"); nothing to benchmark')
        return 0
    from prefect.testing.utilities import prefect_test_harness

    from flows import train as train_flow

    base = load_settings()
    threads = args.threads or base.runtime.n_threads
    with tempfile.TemporaryDirectory(prefix="hcp_bench_dask_") as tmp:
        paths = Paths(Path(tmp) / "home")
        os.environ["HCP_HOME"] = str(paths.home)
        src, what = _folds_bench()._source(args, Path(tmp))
        t0 = time.perf_counter()
        import_bars(src, base, paths)
        print(f"training on {what}: bars imported in {time.perf_counter() - t0:.1f} s")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}", flush=True)

        times: dict = defaultdict(list)
        steps: list[tuple[float, str]] = []
        seq_settings = load_settings(runtime={"n_threads": threads})
        t0 = time.perf_counter()
        with _timed_parts(times):
            seq = pipeline.run_training(
                paths, seq_settings, NOW, baseline_id="in-process",
                progress=lambda msg, done, total: steps.append((time.perf_counter(), msg)))
        t_seq = time.perf_counter() - t0
        print(f"\n1. in process ({threads} threads a fit): {t_seq:.1f} s "
              f"({t_seq / 60:.2f} min)", flush=True)
        for name, secs in _phases(t0, steps, time.perf_counter()):
            print(f"   {name:<48}{secs:8.1f} s")
        if args.skip_dask:
            return 0

        os.environ.update({"HCP_RUNTIME__TASK_RUNNER": "dask", "HCP_RUNTIME__N_THREADS": "1",
                           "HCP_RUNTIME__DASK_WORKERS": str(args.workers),
                           "HCP_RUNTIME__DASK_THREADS_PER_WORKER": "1"})
        with prefect_test_harness(server_startup_timeout=120):
            t0 = time.perf_counter()
            dist = train_flow.run_distributed(load_settings(), None, None, "dask")
            t_dask = time.perf_counter() - t0
        print(f"2. Dask LocalCluster ({args.workers} processes x 1 thread, 1 thread a fit): "
              f"{t_dask:.1f} s ({t_dask / 60:.2f} min), cluster start included", flush=True)
        print(f"ratio in process / Dask: {t_seq / t_dask:.2f}x")

        blocks = defaultdict(float)
        parts = defaultdict(float)
        for (name, part), ts in times.items():
            parts[part] += sum(ts)
            blocks[name] += sum(ts)
        n_blocks = {name: len(ts) for (name, part), ts in times.items() if part == "ranker"}
        fits = sum(parts.values())
        total_blocks = sum(n_blocks.values())
        print(f"\nbase fits in process: {fits:.1f} s of {t_seq:.1f} s "
              f"({fits / t_seq:.0%}); the rest (frame, stacker, calibration, prediction, "
              "reports) stays serial")
        print(f"cost of one block (fold or final model, all parts): "
              f"{fits / total_blocks:.2f} s over {total_blocks} blocks "
              + ", ".join(f"{n} {k}" for n, k in n_blocks.items()))
        per = [sum(ts) for (_, part), ts in times.items()]
        print("by part (s per block): " + ", ".join(
            f"{p} {parts[p] / total_blocks:.2f}" for p in sorted(parts)))
        med = statistics.median(t for ts in times.values() for t in ts)
        print(f"median single fit {med:.2f} s; longest {max(max(ts) for ts in times.values()):.2f} s"
              f" ({len(per)} horizon x part series)")
        a = pd.read_parquet(seq.oos_path)
        b = pd.read_parquet(dist.oos_path)
        same = a.drop(columns="fold").equals(b.drop(columns="fold"))
        print(f"out-of-sample predictions identical: {same}"
              + ("" if threads == 1 else f" (not expected: {threads} threads in process vs 1)"))
        shared = not args.demo and seq.oos_path and a["symbol"].nunique() >= 190
        if shared:
            verdict = "PASS" if t_seq <= SHARED_TARGET_S else "FAIL"
            print(f"target <= {SHARED_TARGET_S // 60} min for the shared data in process: "
                  f"{verdict} ({t_seq / 60:.2f} min)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak RSS of this process (ru_maxrss) {rss:.2f} GB (Dask workers not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
