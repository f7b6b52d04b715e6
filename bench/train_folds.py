"""Time the walk-forward training per fold against one plain XGBoost fit on the same rows.

The bars (the shared S&P 500 file, or with ``--demo`` the seeded synthetic market) are imported
into a temporary store and the training frame (features + labels) is built once. Then
``tasks.models.train.walk_forward`` runs unchanged for one horizon while timers wrapped around
the project's own functions split each fold into: random forest, XGBoost and CatBoost fits
(``StackedEnsemble.fit``), stacker + calibration (earlier out-of-sample rows gathered, payoff
maps, expectancy weights, stacker, regime calibrators), payoff head fit, ranker fit, and the
prediction of the test block; what is left (regime cut points, purge mask, row sampling, the
feature matrix) is ``other``. On exactly the rows ``train._sample`` drew for the fold, ONE
XGBoost classifier with the project's settings (``make_base_models(...)["xgb"]``) is fit as
the baseline, outside the fold's clock; the ratio is fold total / that fit.

    .venv/bin/python bench/train_folds.py [--data ../shared/data/sp500/ohlcv_daily.parquet]
        [--symbols 40] [--start 2008-01-01] [--end 2013-12-31] [--first-test-year 2011]
        [--horizon short]
    .venv/bin/python bench/train_folds.py --demo [--symbols 500] [--start 2000-01-03]
        [--end 2019-12-31]

Model sizes come from the settings in force (``config/app.yaml`` and ``HCP_*`` variables,
e.g. ``HCP_MODELS__XGB__N_ESTIMATORS=100``); they are printed first.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.data.calendar import sessions  # noqa: E402
from tasks.data.ingest import import_bars  # noqa: E402
from tasks.data.sources import DemoSource, ParquetSource  # noqa: E402
from tasks.data.store import load_bars, load_constituents  # noqa: E402
from tasks.features.build import feature_columns  # noqa: E402
from tasks.models import ensemble, train  # noqa: E402
from tasks.models.payoff import PayoffHead  # noqa: E402
from tasks.models.ranker import RankModel  # noqa: E402
from tasks.models.walkforward import make_folds  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.settings import AppSettings, load_settings  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sp500" / "ohlcv_daily.parquet"
PARTS = ("rf", "xgb", "cat", "stack+cal", "payoff", "ranker", "predict")
DEMO_SPAN = ("2000-01-03", "2019-12-31")
DEMO_SYMBOLS = 500
TARGET_S = 12 * 60          # target: a 500-symbol x 20-year panel, all horizons
SHARED_TARGET_S = 5 * 60    # target: the shared S&P 500 file (197 symbols x 20 years)
SHARED_SYMBOLS = 197


@dataclass
class FoldTiming:
    """Seconds of one fold, per component, and its baseline fit."""

    name: str = ""
    rows: int = 0
    parts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    start: float = 0.0
    end: float = 0.0
    paused: float = 0.0          # the baseline's own work, kept off the fold's clock
    baseline: float = float("nan")
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.end - self.start - self.paused

    @property
    def other(self) -> float:
        return self.total - sum(self.parts.values())

    @property
    def ratio(self) -> float:
        return self.total / self.baseline


class FoldProbe:
    """Timers around the functions ``walk_forward`` calls; the functions themselves run as
    shipped. Use :meth:`patched` as a context manager and pass :meth:`next_fold` as progress."""

    def __init__(self, names: list[str],
                 on_done: Callable[[FoldTiming], None] | None = None) -> None:
        self.names = names
        self.on_done = on_done
        self.folds: list[FoldTiming] = []
        self._sampled: pd.DataFrame | None = None
        self._make_base_models = ensemble.make_base_models

    @property
    def current(self) -> FoldTiming:
        return self.folds[-1]

    def next_fold(self, _message: str) -> None:
        i = len(self.folds)
        name = self.names[i] if i < len(self.names) else f"fold {i + 1}"
        self.folds.append(FoldTiming(name=name, start=time.perf_counter()))

    def _count(self, what: str) -> None:
        calls = self.current.calls
        calls[what] = calls.get(what, 0) + 1

    def _timed(self, part: str, fn: Callable) -> Callable:
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.current.parts[part] += time.perf_counter() - t0
                self._count(part)
        return run

    def _base_models(self, cfg, n_threads):
        models = self._make_base_models(cfg, n_threads)
        for name, model in models.items():
            model.fit = self._timed(name, model.fit)   # this instance only
        return models

    def _sample(self, fn: Callable) -> Callable:
        def run(frame, keep, sessions, settings, cap=None):
            rows = fn(frame, keep, sessions, settings, cap=cap)
            if cap is None or cap == settings.models.max_train_rows:   # the classifiers' draw
                self._sampled = rows
                self.current.rows = len(rows)
            return rows
        return run

    def _fit_base(self, fn: Callable) -> Callable:
        def run(frame, mask, name, sess, settings):
            out = fn(frame, mask, name, sess, settings)
            self._count("fit_base")
            t0 = time.perf_counter()
            self.current.baseline = self.baseline_fit(self._sampled, name, settings)
            self.current.paused += time.perf_counter() - t0
            self._sampled = None
            return out
        return run

    def baseline_fit(self, rows: pd.DataFrame, name: str, settings: AppSettings) -> float:
        """Seconds of one XGBoost fit, configured as the ensemble's, on ``rows``."""
        X = rows[feature_columns(settings)].to_numpy(dtype="float64", na_value=np.nan)
        y = rows[f"label_{name}"].to_numpy().astype(int)
        model = self._make_base_models(settings.models, settings.runtime.n_threads)["xgb"]
        t0 = time.perf_counter()
        model.fit(X, y)
        return time.perf_counter() - t0

    def _predict(self, fn: Callable) -> Callable:
        timed = self._timed("predict", fn)

        def run(*args, **kwargs):
            out = timed(*args, **kwargs)
            self.current.end = time.perf_counter()
            if self.on_done:
                self.on_done(self.current)
            return out
        return run

    def patched(self) -> ExitStack:
        stack = ExitStack()
        patches = [
            (ensemble, "make_base_models", self._base_models),
            (train, "_sample", self._sample(train._sample)),
            (train, "_fit_base", self._fit_base(train._fit_base)),
            (train, "_prior", self._timed("stack+cal", train._prior)),
            (train, "_fit_stack_and_calibrate",
             self._timed("stack+cal", train._fit_stack_and_calibrate)),
            (train, "_predict_block", self._predict(train._predict_block)),
            (PayoffHead, "fit", self._timed("payoff", PayoffHead.fit)),
            (RankModel, "fit", self._timed("ranker", RankModel.fit)),
        ]
        for owner, attr, new in patches:
            stack.enter_context(mock.patch.object(owner, attr, new))
        return stack

    def check(self, folds: list, base_models: list[str]) -> None:
        """Refuse figures that would be wrong if ``walk_forward`` stopped calling what the
        timers wrap (per fold: one base fit, each base model, payoff head and ranker once, one
        prediction)."""
        if [t.name for t in self.folds] != [f.name for f in folds]:
            raise RuntimeError(f"folds timed {[t.name for t in self.folds]}, run "
                               f"{[f.name for f in folds]}: the timers no longer match "
                               "tasks.models.train.walk_forward")
        for timing, fold in zip(self.folds, folds, strict=True):
            want = {"fit_base": 1, "predict": 1, "payoff": 1, "ranker": 1,
                    **dict.fromkeys(base_models, 1)}
            got = {k: timing.calls.get(k, 0) for k in want}
            if got != want or timing.end <= timing.start:
                raise RuntimeError(f"fold {fold.name}: calls {got}, expected {want}: the timers "
                                   "no longer match tasks.models.train.walk_forward")


def planned_folds(frame: pd.DataFrame, sess: pd.DatetimeIndex, settings: AppSettings,
                  horizon: str) -> list:
    """The folds ``walk_forward`` runs for ``horizon`` on ``frame``."""
    return make_folds(sess, settings.models, settings.labels.horizons[horizon],
                      frame["date"].min(), frame["date"].max())


def time_walk_forward(frame: pd.DataFrame, sess: pd.DatetimeIndex, settings: AppSettings,
                      horizon: str, on_done: Callable[[FoldTiming], None] | None = None
                      ) -> tuple[pd.DataFrame, list[FoldTiming]]:
    """``walk_forward`` of one horizon with per-fold timings (its predictions unchanged);
    ``on_done`` gets each fold's timings as soon as its test block is predicted."""
    names = [f.name for f in planned_folds(frame, sess, settings, horizon)]
    probe = FoldProbe(names, on_done)
    with probe.patched():
        oos, folds = train.walk_forward(frame, sess, settings, horizon, progress=probe.next_fold)
    probe.check(folds, list(settings.models.base_models))
    return oos, probe.folds


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2   # KiB on Linux


def _source(args, tmp: Path):
    """The bar source and a description of the panel it holds."""
    if args.demo:
        n = args.symbols or DEMO_SYMBOLS
        start, end = args.start or DEMO_SPAN[0], args.end or DEMO_SPAN[1]
        src = DemoSource(tmp / "demo", seed=args.seed, n_symbols=n, n_sectors=min(10, n),
                         start=start, end=end, inject_bad_rows=False)
        return src, f"demo market (seed {args.seed}) of {n} symbols"
    cols = ["symbol", "date"]
    index = pd.read_parquet(args.data, columns=cols)
    names = sorted(index["symbol"].unique())
    if args.symbols:
        names = names[: args.symbols]
    filters = [("symbol", "in", names)]
    if args.start:
        filters.append(("date", ">=", pd.Timestamp(args.start)))
    if args.end:
        filters.append(("date", "<=", pd.Timestamp(args.end)))
    bars = pd.read_parquet(args.data, filters=filters)
    path = tmp / "bars.parquet"
    bars.to_parquet(path, index=False)
    constituents = args.constituents or args.data.parent / "constituents.csv"
    return (ParquetSource(path, constituents if constituents.is_file() else None),
            f"first {len(names)} symbols (sorted) of {args.data}")


def _settings_line(settings: AppSettings) -> list[str]:
    m = settings.models

    def kv(section) -> str:
        return " ".join(f"{k}={v}" for k, v in section.model_dump().items())

    half = max(50, m.xgb.n_estimators // 2)
    return [f"  base models {', '.join(m.base_models)}; runtime.n_threads={settings.runtime.n_threads}",
            f"  rf:  {kv(m.rf)}",
            f"  xgb: {kv(m.xgb)}",
            f"  cat: {kv(m.cat)}",
            f"  payoff head: 2 XGBoost models, ranker: XGBRanker, each n_estimators={half}; "
            f"ranker: {kv(m.ranker)}",
            f"  row_stride={m.row_stride} max_train_rows={m.max_train_rows} window={m.window} "
            f"refit_months={m.refit_months} min_train_years={m.min_train_years} "
            f"first_test_year={m.first_test_year} embargo_sessions={m.embargo_sessions}"]


def _header() -> str:
    return (f"  {'fold':<23}{'rows':>8}" + "".join(f"{p:>10}" for p in PARTS)
            + f"{'other':>8}{'fold':>9}{'1 xgb':>8}{'ratio':>8}")


def _row(t: FoldTiming) -> str:
    return (f"  {t.name:<23}{t.rows:>8}" + "".join(f"{t.parts[p]:>10.2f}" for p in PARTS)
            + f"{t.other:>8.2f}{t.total:>9.2f}{t.baseline:>8.2f}{t.ratio:>7.1f}x")


def _total(timings: list[FoldTiming]) -> str:
    tot = {p: sum(t.parts[p] for t in timings) for p in PARTS}
    total = sum(t.total for t in timings)
    base = sum(t.baseline for t in timings)
    return (f"  {'total':<23}{sum(t.rows for t in timings):>8}"
            + "".join(f"{tot[p]:>10.2f}" for p in PARTS)
            + f"{sum(t.other for t in timings):>8.2f}{total:>9.2f}{base:>8.2f}"
            f"{total / base:>7.1f}x")


def add_source_args(ap: argparse.ArgumentParser, end: bool = True) -> None:
    """The options of :func:`_source` (the bench scripts that train share them)."""
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--constituents", type=Path, default=None,
                    help="default: constituents.csv beside --data")
    ap.add_argument("--symbols", type=int, default=None,
                    help="the first N symbols, sorted (default all; with --demo 500)")
    ap.add_argument("--start", default=None, help="first bar date (with --demo 2000-01-03)")
    if end:
        ap.add_argument("--end", default=None, help="last bar date (with --demo 2019-12-31)")
    ap.add_argument("--demo", action="store_true", help="the seeded synthetic market instead")
    ap.add_argument("--seed", type=int, default=7, help="seed of the demo market")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 with a message when the data file is absent."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_args(ap)
    ap.add_argument("--first-test-year", type=int, default=None,
                    help="default: models.first_test_year in force")
    ap.add_argument("--horizon", default=None, help="default: fusion.plan_horizon")
    args = ap.parse_args(argv)
    if not args.demo and not args.data.is_file():
        print(f"data file not found at {args.data}; nothing to benchmark (--demo needs none)")
        return 0
    overrides = {} if args.first_test_year is None else {
        "models": {"first_test_year": args.first_test_year}}
    settings = load_settings(**overrides)
    horizon = args.horizon or settings.fusion.plan_horizon
    if horizon not in settings.labels.horizons:
        ap.error(f"--horizon must be one of {sorted(settings.labels.horizons)}")
    h = settings.labels.horizons[horizon]

    with tempfile.TemporaryDirectory(prefix="hcp_bench_folds_") as tmp:
        paths = Paths(Path(tmp) / "home")
        t0 = time.perf_counter()
        src, what = _source(args, Path(tmp))
        import_bars(src, settings, paths)
        bars = load_bars(paths.store)
        t_bars = time.perf_counter() - t0
        if bars.empty:
            print("no bars in the chosen span; nothing to benchmark")
            return 0
        t0 = time.perf_counter()
        frame = train.training_frame(bars, load_constituents(paths.store), settings)
        t_frame = time.perf_counter() - t0
    first, last = bars["date"].min(), bars["date"].max()
    sess = sessions(settings.data.calendar, first, last)
    years = (last - first).days / 365.25
    n_sym = bars["symbol"].nunique()
    del bars

    print(f"walk-forward training time per fold: {what}, bars {first.date()}..{last.date()} "
          f"({n_sym} symbols x {years:.1f} years), horizon {horizon} ({h} sessions)")
    print("settings in force:")
    print("\n".join(_settings_line(settings)))
    print(f"  machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"  bars (read, import into a temporary store)   {t_bars:8.2f} s")
    print(f"  training frame (features + labels, once)     {t_frame:8.2f} s  "
          f"{len(frame)} rows x {len(feature_columns(settings))} features", flush=True)

    n_folds = len(planned_folds(frame, sess, settings, horizon))
    if not n_folds:
        print(f"no walk-forward fold fits in {first.date()}..{last.date()} (need "
              f"{settings.models.min_train_years} years before a test year)")
        return 0
    print(f"\nper fold, seconds ({n_folds} folds; '1 xgb' = one plain XGBoost fit on the "
          "fold's training rows, outside the fold's clock; ratio = fold / 1 xgb)")
    print(_header(), flush=True)
    oos, timings = time_walk_forward(frame, sess, settings, horizon,
                                     on_done=lambda t: print(_row(t), flush=True))
    print(_total(timings))

    wf = sum(t.total for t in timings)
    ratios = [t.ratio for t in timings]
    print(f"\nwalk-forward {horizon}: {wf:.2f} s for {len(timings)} folds "
          f"({len(oos)} out-of-sample rows), "
          f"{wf / len(timings):.2f} s a fold; median fold / 1 xgb ratio {statistics.median(ratios):.1f}x "
          f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x)")
    print(f"peak RSS (ru_maxrss) {_peak_rss_gb():.2f} GB")

    per_h = {n: len(make_folds(sess, settings.models, hh, frame["date"].min(), frame["date"].max()))
             for n, hh in settings.labels.horizons.items()}
    n_all = sum(per_h.values())
    wf_all = wf / len(timings) * n_all
    final = timings[-1].total * len(per_h)
    est = t_frame + wf_all + final
    counts = ", ".join(f"{n} {k}" for n, k in per_h.items())
    print(f"extrapolated to all folds x all horizons ({n_all} folds: {counts}): walk-forward "
          f"~{wf_all:.1f} s + training frame {t_frame:.1f} s + final models ~{final:.1f} s "
          f"(one last-fold fit per horizon) = ~{est:.1f} s ({est / 60:.1f} min)")
    full = n_sym >= DEMO_SYMBOLS and years >= 19.5
    verdict = ("PASS" if est <= TARGET_S else "FAIL") if full else (
        f"not comparable: this panel is {n_sym} symbols x {years:.1f} years")
    print(f"target <= {TARGET_S // 60} min for a {DEMO_SYMBOLS}-symbol x 20-year panel: {verdict}")
    if not args.demo:
        shared = n_sym >= SHARED_SYMBOLS and years >= 19.5
        verdict = ("PASS" if est <= SHARED_TARGET_S else "FAIL") if shared else (
            f"not comparable: this panel is {n_sym} symbols x {years:.1f} years")
        print(f"target <= {SHARED_TARGET_S // 60} min for the shared data "
              f"({SHARED_SYMBOLS} symbols x 20 years): {verdict} (estimate; "
              "bench/train_dask.py times the whole `hcp train`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
