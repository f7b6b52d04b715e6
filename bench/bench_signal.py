"""Signal-quality report of walk-forward out-of-sample predictions on the shared S&P 500 data.

In a temporary ``HCP_HOME``: import the bars, build the training frame for every 4th symbol
(about 50 names, all sectors) on 2004..2012 (never later: the real-data tests use the same
early window), run the walk-forward of both horizons with reduced models (out of sample from
``--first-test-year`` 2009; the first fold has no calibrated probability, so ``p_cal`` is
scored from 2010), then print, per horizon, the signal report of ``tasks.models.signal_report``:

* IC by year: mean daily rank IC of ``p_cal`` vs the forward return, Newey-West t (lag h - 1);
* decile returns: mean forward simple return per trade by cross-sectional decile;
* long-short: top-minus-bottom decile net of costs (4 x ``--cost-bps``), its NW t, the
  annualised Sharpe of the non-overlapping version, the top-decile turnover per rebalance;
* the headline summary for the scores ``rank_score`` (the ranking model's, what the plan ranks
  by), ``p_cal``, ``p_raw`` and ``exp_pnl``, all on the rows that have a ``p_cal`` (the same
  sessions and names);

then the permutation importance (drop in mean daily rank IC when a feature is shuffled across
the names of each session) of an ensemble fit like the last fold's (base models on the purged
rows before the last test year, no stacker or calibration) on that year, and the time taken by
every stage. ``--out DIR`` keeps the HTML fragment and the figures.

    .venv/bin/python bench/bench_signal.py [--data-dir ../shared/data/sp500] [--first-test-year 2009]
                                           [--cost-bps 5] [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.data.calendar import sessions  # noqa: E402
from tasks.data.ingest import import_bars  # noqa: E402
from tasks.data.sources import ParquetSource  # noqa: E402
from tasks.data.store import load_bars, load_constituents  # noqa: E402
from tasks.features.build import feature_columns  # noqa: E402
from tasks.models.ensemble import StackedEnsemble  # noqa: E402
from tasks.models.signal_report import (  # noqa: E402
    permutation_importance,
    signal_report_html,
    signal_summary,
    signal_tables,
    write_signal_figures,
)
from tasks.models.train import training_frame, walk_forward  # noqa: E402
from tasks.models.walkforward import purged_train_mask  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.settings import load_settings  # noqa: E402

START, END, LAST_END = "2004-01-01", "2012-12-31", pd.Timestamp("2012-12-31")
REDUCED = {"rf": {"n_estimators": 60}, "xgb": {"n_estimators": 80}, "cat": {"iterations": 80}}
SCORES = ("rank_score", "p_cal", "p_raw", "exp_pnl")
TIMES: list[tuple[str, float]] = []


@contextmanager
def stage(name: str):
    """Time a stage and print its wall time."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        TIMES.append((name, time.perf_counter() - t0))
        print(f"  {name:<40} {TIMES[-1][1]:8.2f} s", flush=True)


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def _print_tables(tables: dict[str, pd.DataFrame]) -> None:
    pct = {"mean_return", "mean_excess", "ls_gross_mean", "ls_net_mean", "ls_cost", "turnover"}
    for name, frame in tables.items():
        shown = frame.copy()
        for col in shown.columns:
            if col in pct:
                shown[col] = shown[col].map(lambda v: f"{100 * v:.2f}%" if np.isfinite(v) else "")
            elif col in ("trades", "top_names"):
                shown[col] = shown[col].map(lambda v: f"{v:.1f}")
        print(f"\n{name}:")
        print(shown.to_string(index=False, float_format=_fmt))


def _importance(frame: pd.DataFrame, sess: pd.DatetimeIndex, settings, horizon: str,
                repeats: int) -> pd.DataFrame:
    """Permutation importance on the last test year of an ensemble fit on the purged rows before it."""
    h = settings.labels.horizons[horizon]
    cols = feature_columns(settings)
    last_year = int(frame["date"].max().year)
    test_start, test_end = pd.Timestamp(f"{last_year}-01-01"), frame["date"].max()
    label = f"label_{horizon}"
    train = purged_train_mask(frame["date"], sess, test_start, test_end, h,
                              settings.models.embargo_sessions)
    train &= frame[label].notna().to_numpy()
    rows = frame.loc[train]
    with stage(f"importance: fit ensemble ({horizon}, {len(rows)} rows)"):
        model = StackedEnsemble(settings.models, settings.runtime.n_threads)
        model.fit(rows[cols].to_numpy(dtype="float64", na_value=np.nan), rows[label].to_numpy())
    test = frame.loc[(frame["date"] >= test_start) & frame[f"fwd_return_{horizon}"].notna()]

    def predict(X: pd.DataFrame) -> np.ndarray:
        return model.predict_proba(X.to_numpy(dtype="float64", na_value=np.nan))[:, 1]

    with stage(f"importance: {len(cols)} features x {repeats} ({len(test)} rows)"):
        imp = permutation_importance(predict, test[cols].reset_index(drop=True),
                                     test[f"fwd_return_{horizon}"].to_numpy(),
                                     test["date"].to_numpy(), n_repeats=repeats, seed=0)
    imp.attrs["test_year"] = last_year
    return imp


def main() -> int:
    """Run the benchmark; exit 0 with a message when the data set is absent."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sp500")
    ap.add_argument("--first-test-year", type=int, default=2009)
    ap.add_argument("--symbol-step", type=int, default=4, help="every n-th symbol (default 4)")
    ap.add_argument("--cost-bps", type=float, default=5.0, help="per side per leg (default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="permutation repeats (0: skip)")
    ap.add_argument("--out", type=Path, default=None, help="keep the HTML fragment and PNGs here")
    args = ap.parse_args()
    if not (args.data_dir / "ohlcv_daily.parquet").is_file():
        print(f"shared data set not found at {args.data_dir}; nothing to benchmark")
        return 0
    if not 2006 <= args.first_test_year <= 2011:
        ap.error("--first-test-year must be in 2006..2011 (data 2004..2012, three training years)")
    settings = load_settings(models={"first_test_year": args.first_test_year, **REDUCED})
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hcp_bench_signal_") as tmp:
        paths = Paths(Path(tmp))
        with stage("import"):
            import_bars(ParquetSource(args.data_dir / "ohlcv_daily.parquet",
                                      args.data_dir / "constituents.csv"), settings, paths)
        with stage("features + labels"):
            cons = load_constituents(paths.store)
            symbols = sorted(cons["symbol"])[::args.symbol_step]
            bars = load_bars(paths.store, start=START, end=END, symbols=symbols)
            assert bars["date"].max() <= LAST_END
            frame = training_frame(bars, cons, settings)
            sess = sessions(settings.data.calendar, bars["date"].min(), bars["date"].max())
        parts = []
        for name in settings.labels.horizons:
            with stage(f"walk-forward {name}"):
                oos, folds = walk_forward(frame, sess, settings, name)
            parts.append(oos)
        oos = pd.concat(parts, ignore_index=True)
        print(f"    {len(symbols)} symbols, {bars['date'].min():%Y-%m-%d}..{bars['date'].max():%Y-%m-%d}, "
              f"{len(oos)} OOS rows, {oos['p_cal'].notna().sum()} with p_cal", flush=True)
        t_wf = time.perf_counter() - t_all

        out_dir = args.out or Path(tmp) / "report"
        lags = {k: h - 1 for k, h in settings.labels.horizons.items()}
        tables, figures, summaries = {}, {}, []
        calibrated = oos.loc[oos["p_cal"].notna()]  # every score on the same rows
        with stage("signal report (tables, summaries)"):
            for name in settings.labels.horizons:
                tables.update(signal_tables(calibrated, name, lags[name], args.cost_bps,
                                            score="rank_score"))
                for score in SCORES:
                    summaries.append(signal_summary(calibrated, name, lags[name], args.cost_bps,
                                                    score=score))
        with stage("signal report (figures, HTML)"):
            for name in settings.labels.horizons:
                figures.update(write_signal_figures(calibrated, name, out_dir, score="rank_score"))
            html = signal_report_html(tables, figures)
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "signal_report.html").write_text(html)
        imp = (_importance(frame, sess, settings, settings.fusion.plan_horizon, args.repeats)
               if args.repeats > 0 else None)
        total = time.perf_counter() - t_all
        _report(tables, summaries, imp, html, figures, out_dir if args.out else None)
    print(f"\nimport + walk-forward: {t_wf:.1f} s; whole benchmark {total:.1f} s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB")
    return 0


def _report(tables, summaries, imp, html, figures, kept) -> None:
    print("\nSignal report (out of sample; the ranking model's rank_score unless stated; "
          "survivorship-biased "
          "universe; fold 1 has no p_cal):")
    _print_tables(tables)
    cols = ["horizon", "score", "sessions", "ic_mean", "ic_t_nw", "icir", "ls_net_mean", "ls_t_nw",
            "ls_sharpe", "top_decile_turnover"]
    summary = pd.DataFrame(summaries)[cols]
    summary["ls_net_mean"] = summary["ls_net_mean"].map(lambda v: f"{100 * v:.2f}%")
    print("\nHeadline per score (signal_summary):")
    print(summary.to_string(index=False, float_format=_fmt))
    if imp is not None:
        print(f"\nPermutation importance, {imp.attrs['test_year']} (drop in mean daily rank IC, "
              f"base {imp['ic_base'].iloc[0]:.4f}; market-wide features are 0 by construction):")
        print(imp.drop(columns=["ic_base"]).to_string(index=False, float_format=_fmt))
    where = f"kept in {kept}" if kept else "temporary"
    print(f"\nHTML fragment {len(html) / 1024:.0f} KiB with {len(figures)} figures ({where})")


if __name__ == "__main__":
    sys.exit(main())
