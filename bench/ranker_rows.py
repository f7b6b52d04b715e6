"""The ranking model's training rows: its out-of-sample rank IC on early years by row cap and seed.

The bars (the shared S&P 500 file, or ``--demo`` the seeded synthetic market) up to the end of
``--last-test-year`` (default 2012: choices are made on early years only, never on the last
years of the data) are imported into a temporary home and the training frame is built once.
Then, for every horizon, every cap of ``--caps`` and every seed of ``--seeds``, the ranker
alone is fitted on each walk-forward fold whose test year is at most ``--last-test-year``
(the purged rows, the session stride and the seeded sample of ``hcp train``: only the cap and
the seed change) and scores its test year. Printed per run: the mean daily rank IC of the
ranking score against the forward return with its Newey-West t (lag h - 1), the mean per year
and the fit time per fold; per cap: the mean and the spread over the seeds and the time; per
other cap: the paired difference of its seed-averaged daily IC against the first cap's with
its Newey-West t. A difference inside the seed spread is noise.

    .venv/bin/python bench/ranker_rows.py [--data ../shared/data/sp500/ohlcv_daily.parquet]
        [--caps 60000,120000] [--seeds 42,7,2024] [--last-test-year 2012] [--horizons short,mid]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.data.calendar import sessions as calendar_sessions  # noqa: E402
from tasks.data.ingest import import_bars  # noqa: E402
from tasks.data.store import load_bars, load_constituents  # noqa: E402
from tasks.features.build import feature_columns  # noqa: E402
from tasks.models.metrics import daily_rank_ic, newey_west_t  # noqa: E402
from tasks.models.ranker import RankModel  # noqa: E402
from tasks.models.train import _sample, horizon_folds, train_mask, training_frame  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.settings import load_settings  # noqa: E402


def _folds_bench():
    spec = importlib.util.spec_from_file_location("train_folds", ROOT / "bench" / "train_folds.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_folds"] = mod
    spec.loader.exec_module(mod)
    return mod


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def run_ranker(frame: pd.DataFrame, sess: pd.DatetimeIndex, settings, name: str, folds,
               cap: int, seed: int, pairs: tuple[str, int] | None = None
               ) -> tuple[pd.Series, float]:
    """Daily rank IC of the ranker (cap rows, seed, ``pairs``: pair method and pairs per
    name, default the settings') over the folds' test years, and the mean fit time per fold."""
    cols = feature_columns(settings)
    cfg = settings.models.model_copy(update={"random_state": seed})
    if pairs is not None:
        cfg = cfg.model_copy(update={"ranker": cfg.ranker.model_copy(
            update={"pair_method": pairs[0], "pairs_per_sample": pairs[1]})})
    run_settings = settings.model_copy(update={"models": cfg})
    threads = settings.runtime.n_threads
    ics, fit_s = [], []
    for fold in folds:
        keep = (train_mask(frame, sess, settings, name, fold)
                & frame[f"label_{name}"].notna().to_numpy())
        rows = _sample(frame, keep, sess, run_settings, cap=cap)
        t0 = time.perf_counter()
        model = RankModel().fit(rows[cols].to_numpy(dtype="float32", na_value=np.nan),
                                rows[f"fwd_return_{name}"].to_numpy(dtype="float64"),
                                rows["date"].to_numpy(), cfg, threads)
        fit_s.append(time.perf_counter() - t0)
        test = frame.loc[(frame["date"] >= fold.test_start) & (frame["date"] <= fold.test_end)]
        score = model.score(test[cols].to_numpy(dtype="float32", na_value=np.nan))
        ics.append(daily_rank_ic(score, test[f"fwd_return_{name}"].to_numpy(),
                                 test["date"].to_numpy()))
    return pd.concat(ics).sort_index(), float(np.mean(fit_s))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    folds_bench = _folds_bench()
    folds_bench.add_source_args(ap, end=False)
    ap.add_argument("--caps", default="60000,120000")
    ap.add_argument("--seeds", default="42,7,2024")
    ap.add_argument("--last-test-year", type=int, default=2012)
    ap.add_argument("--horizons", default=None, help="default: every horizon of labels.horizons")
    ap.add_argument("--pairs", default=None,
                    help="compare pair settings instead of caps, e.g. mean:1,mean:8,topk:32 "
                         "(at the first cap of --caps)")
    args = ap.parse_args(argv)
    if not args.demo and not args.data.is_file():
        print(f"data file not found at {args.data}; nothing to benchmark (--demo needs none)")
        return 0
    caps, seeds = _ints(args.caps), _ints(args.seeds)
    args.end = f"{args.last_test_year}-12-31"
    settings = load_settings()
    names = (args.horizons.split(",") if args.horizons else list(settings.labels.horizons))
    with tempfile.TemporaryDirectory(prefix="hcp_bench_ranker_") as tmp:
        paths = Paths(Path(tmp) / "home")
        src, what = folds_bench._source(args, Path(tmp))
        import_bars(src, settings, paths)
        bars = load_bars(paths.store)
        frame = training_frame(bars, load_constituents(paths.store), settings)
        sess = calendar_sessions(settings.data.calendar, bars["date"].min(), bars["date"].max())
    print(f"{what}, bars to {args.end}: {len(frame)} frame rows; caps {caps}, seeds {seeds}",
          flush=True)
    for name in names:
        h = settings.labels.horizons[name]
        folds = [f for f in horizon_folds(frame, sess, settings, name)
                 if f.test_start.year <= args.last_test_year]
        if not folds:
            print(f"{name}: no walk-forward fold tests a year up to {args.last_test_year}")
            continue
        print(f"\n{name} (h={h}): {len(folds)} folds, test years "
              f"{folds[0].test_start.year}-{folds[-1].test_start.year}")
        averaged: dict = {}
        fit_time: dict = {}
        arms = ([(caps[0], (m, int(k))) for m, k in (x.split(":") for x in args.pairs.split(","))]
                if args.pairs else [(cap, None) for cap in caps])
        for cap, pairs in arms:
            key = f"{pairs[0]}:{pairs[1]}" if pairs else f"cap {cap}"
            means, runs, secs = [], [], []
            for seed in seeds:
                ic, fit_s = run_ranker(frame, sess, settings, name, folds, cap, seed, pairs)
                by_year = ic.groupby(pd.DatetimeIndex(ic.index).year).mean()
                means.append(float(ic.mean()))
                runs.append(ic)
                secs.append(fit_s)
                print(f"  {key!s:>12} seed {seed:>5}: IC {ic.mean():+.4f} "
                      f"t {newey_west_t(ic.to_numpy(), h - 1):+.2f}  {fit_s:5.2f} s a fit  "
                      + " ".join(f"{y}:{v:+.3f}" for y, v in by_year.items()), flush=True)
            averaged[key] = pd.concat(runs, axis=1).mean(axis=1)
            fit_time[key] = float(np.mean(secs))
            spread = statistics.pstdev(means) if len(means) > 1 else float("nan")
            print(f"  {key!s:>12} mean over {len(seeds)} seeds: IC {np.mean(means):+.4f} "
                  f"(seed spread {spread:.4f}), {np.mean(secs):.2f} s a fit")
        keys = list(averaged)
        for key in keys[1:]:
            diff = (averaged[key] - averaged[keys[0]]).dropna()
            print(f"  {key} - {keys[0]}: {diff.mean():+.4f} per day, Newey-West t "
                  f"{newey_west_t(diff.to_numpy(), h - 1):+.2f}; fit time "
                  f"{fit_time[key] / fit_time[keys[0]]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
