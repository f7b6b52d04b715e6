"""Benchmark the full walk-forward training on the shared S&P 500 data set.

Stages: import, features + labels, walk-forward per horizon (yearly refits), final models,
metrics; wall time and peak memory (RSS sampled every 0.1 s) per stage. In the same run the
same walk-forward with a single XGBoost model gives the baseline ratio. Prints out-of-sample
AUC, rank IC and ECE per horizon and volatility regime.

    .venv/bin/python bench/bench_models.py [--data-dir ../shared/data/sp500] [--first-test-year 2005]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks.data.calendar import sessions  # noqa: E402
from tasks.data.ingest import import_bars  # noqa: E402
from tasks.data.sources import ParquetSource  # noqa: E402
from tasks.data.store import load_bars, load_constituents  # noqa: E402
from tasks.features.regimes import fit_vol_regime_cuts  # noqa: E402
from tasks.models.metrics import metrics_table  # noqa: E402
from tasks.models.train import fit_final, training_frame, walk_forward  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.settings import load_settings  # noqa: E402

TARGET_S, TARGET_GB = 15 * 60, 8.0
ROWS: list[tuple[str, float, float]] = []


def _rss_gb() -> float:
    """Resident set size of this process in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


@contextmanager
def stage(name: str):
    """Time a stage and sample its peak RSS."""
    peak = [_rss_gb()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], _rss_gb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        wall = time.perf_counter() - t0
        ROWS.append((name, wall, max(peak[0], _rss_gb())))
        print(f"  {name:<34} {wall:8.1f} s  peak {ROWS[-1][2]:5.2f} GB", flush=True)


def _walk(frame, sess, settings, label: str) -> pd.DataFrame:
    parts = []
    for name in settings.labels.horizons:
        with stage(f"{label}: walk-forward {name}"):
            oos, folds = walk_forward(frame, sess, settings, name)
        parts.append(oos)
        print(f"    {len(folds)} folds, {len(oos)} OOS rows", flush=True)
    return pd.concat(parts, ignore_index=True)


def main() -> int:
    """Run the benchmark; exit 0 with a message when the data set is absent."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sp500")
    ap.add_argument("--first-test-year", type=int, default=2005)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    if not (args.data_dir / "ohlcv_daily.parquet").is_file():
        print(f"shared data set not found at {args.data_dir}; nothing to benchmark")
        return 0
    settings = load_settings(models={"first_test_year": args.first_test_year})
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hcp_bench_models_") as tmp:
        paths = Paths(Path(tmp))
        with stage("import"):
            import_bars(ParquetSource(args.data_dir / "ohlcv_daily.parquet",
                                      args.data_dir / "constituents.csv"), settings, paths)
        with stage("features + labels"):
            bars = load_bars(paths.store)
            frame = training_frame(bars, load_constituents(paths.store), settings)
            sess = sessions(settings.data.calendar, bars["date"].min(), bars["date"].max())
        oos = _walk(frame, sess, settings, "ensemble")
        with stage("ensemble: final models"):
            cuts = fit_vol_regime_cuts(frame, settings.regimes, end=bars["date"].max())
            for name in settings.labels.horizons:
                fit_final(frame, sess, oos[oos["horizon"] == name], settings, name, cuts)
        total = time.perf_counter() - t_all
        lags = {k: h - 1 for k, h in settings.labels.horizons.items()}
        with stage("metrics"):
            overall = metrics_table(oos, horizon_lags=lags)
            regime = metrics_table(oos, by=["vol_regime"], horizon_lags=lags)
        base_time = None
        if not args.skip_baseline:
            xgb_only = load_settings(models={"first_test_year": args.first_test_year,
                                             "base_models": ["xgb"]})
            t0 = time.perf_counter()
            base = _walk(frame, sess, xgb_only, "single XGBoost")
            base_time = time.perf_counter() - t0
            base_overall = metrics_table(base, horizon_lags=lags)
    _report(overall, regime, total, base_time, base_overall if base_time else None)
    return 0


def _report(overall, regime, total, base_time, base_overall) -> None:
    cols = ["horizon", "n", "auc", "auc_se", "ic_mean", "ic_t_nw", "icir", "ece", "brier_skill",
            "lift_at_10"]
    print("\nOut-of-sample (calibrated P(win); survivorship-biased universe):")
    print(overall[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nPer volatility regime:")
    print(regime[["vol_regime"] + cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    peak = max(r[2] for r in ROWS)
    ens = sum(r[1] for r in ROWS if r[0].startswith("ensemble: walk"))
    print(f"\nimport -> final models: {total:.1f} s (target <= {TARGET_S} s: "
          f"{'PASS' if total <= TARGET_S else 'FAIL'}), peak {peak:.2f} GB "
          f"(target <= {TARGET_GB} GB: {'PASS' if peak <= TARGET_GB else 'FAIL'})")
    if base_time:
        print(f"walk-forward, ensemble {ens:.1f} s vs single XGBoost {base_time:.1f} s: "
              f"ratio {ens / base_time:.2f}x")
        print(base_overall[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    sys.exit(main())
