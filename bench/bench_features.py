"""Benchmark bar import and the wide-panel feature build against a plain per-symbol pandas baseline."""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.data.calendar import sessions  # noqa: E402
from tasks.settings import AppSettings, load_settings  # noqa: E402

ANNUAL = np.sqrt(252.0)
TARGET_SECONDS = 60.0
TARGET_MB = 4096.0
TOLERANCE = 1e-6
RESULT_TAG = "@@RESULT "
STAGES = {
    "import": "import",
    "fast": "features (wide panel)",
    "baseline": "features (baseline)",
    "pipeline": "import + features, 1 process",
}


# ----------------------------------------------------------------------------- baseline
def _grid(bars: pd.DataFrame, calendar: str) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """Long bars, each symbol reindexed onto every session between its first and last bar."""
    cal = sessions(calendar, bars["date"].min(), bars["date"].max())
    cols = ["date", "adj_high", "adj_low", "adj_close", "adj_volume", "close", "volume"]
    parts = []
    for sym, g in bars.groupby("symbol", sort=True):
        days = cal[(cal >= g["date"].min()) & (cal <= g["date"].max())]
        part = g[cols].astype({"volume": "float64"}).set_index("date").reindex(days)
        part.insert(0, "symbol", str(sym))
        part["present"] = days.isin(g["date"])
        parts.append(part)
    d = pd.concat(parts).rename_axis("date").reset_index()
    d = d.rename(columns={"close": "raw_close", "volume": "raw_volume", "adj_high": "high",
                          "adj_low": "low", "adj_close": "close"})
    return d, cal


def _shift(d: pd.DataFrame, col: str, n: int) -> pd.Series:
    """Per-symbol shift by ``n`` rows (sessions)."""
    return d.groupby("symbol", sort=False)[col].shift(n)


def _roll(d: pd.DataFrame, col: str, window: int, min_periods: int, how: str) -> pd.Series:
    """Per-symbol rolling ``how`` (mean/std) aligned to ``d``'s index."""
    r = d.groupby("symbol", sort=False)[col].rolling(window, min_periods=min_periods)
    return getattr(r, how)().droplevel(0)


def _ewm(d: pd.DataFrame, col: str, **kw: Any) -> pd.Series:
    """Per-symbol exponentially weighted mean aligned to ``d``'s index."""
    return d.groupby("symbol", sort=False)[col].ewm(**kw).mean().droplevel(0)


def _per_date(d: pd.DataFrame, col: str, cal: pd.DatetimeIndex) -> pd.Series:
    """Same-day mean of ``col`` over symbols, on every calendar session."""
    return d.groupby("date")[col].mean().reindex(cal)


def _avg_corr(d: pd.DataFrame, cal: pd.DatetimeIndex, window: int, min_symbols: int = 5) -> pd.Series:
    """Mean off-diagonal np.corrcoef over symbols with a complete, non-constant window."""
    wide = d.pivot(index="date", columns="symbol", values="_r1").reindex(cal).to_numpy()
    out = np.full(len(cal), np.nan)
    for t in range(window - 1, len(cal)):
        block = wide[t - window + 1:t + 1]
        block = block[:, ~np.isnan(block).any(axis=0)]
        block = block[:, block.std(axis=0) > 0]
        n = block.shape[1]
        if n >= min_symbols:
            c = np.corrcoef(block, rowvar=False)
            out[t] = (c.sum() - np.trace(c)) / (n * (n - 1))
    return pd.Series(out, index=cal)


def _regime(level: pd.Series, atr: pd.Series, settings: AppSettings) -> pd.Series:
    """trending / ranging / volatile from the index level and the mean ATR%."""
    r = settings.regimes
    spread = (level.rolling(r.trend_fast).mean() / level.rolling(r.trend_slow).mean() - 1).abs()
    avg = atr.rolling(r.atr_average_window, min_periods=r.atr_average_window // 2).mean()
    label = pd.Series("ranging", index=level.index, dtype=object)
    label[spread > r.trend_spread] = "trending"
    label[atr > r.volatile_atr_mult * avg] = "volatile"
    return label.where(spread.notna() & avg.notna() & atr.notna())


def baseline_features(bars: pd.DataFrame, cons: pd.DataFrame, settings: AppSettings) -> pd.DataFrame:
    """The feature frame, computed on long rows with per-symbol groupby and per-date groupby."""
    f = settings.features
    d, cal = _grid(bars, settings.data.calendar)
    sector = cons.drop_duplicates("symbol").set_index("symbol")["sector"].astype(object)
    d["sector"] = d["symbol"].map(sector).fillna("Unknown")
    d["_logc"] = np.log(d["close"])
    for w in sorted(set(f.return_windows) | {1, 5, 20}):
        d[f"_r{w}"] = d["_logc"] - _shift(d, "_logc", w)
    for w in f.return_windows:
        d[f"ret_{w}"] = d[f"_r{w}"]
    vw = f.vol_window
    d[f"vol_{vw}"] = _roll(d, "_r1", vw, max(2, int(vw * 0.75)), "std") * ANNUAL
    prev = _shift(d, "close", 1)
    d["_tr"] = (np.fmax(d["high"], prev) - np.fmin(d["low"], prev)).where(
        d["high"].notna() & d["low"].notna())
    d["atr_pct"] = _roll(d, "_tr", f.atr_window, f.atr_window, "mean") / d["close"]
    diff = d["close"] - prev
    d["_gain"], d["_loss"] = diff.clip(lower=0), (-diff).clip(lower=0)
    n = f.rsi_window
    gain = _ewm(d, "_gain", alpha=1 / n, adjust=False, min_periods=n)
    total = gain + _ewm(d, "_loss", alpha=1 / n, adjust=False, min_periods=n)
    d[f"rsi_{n}"] = (100 * gain / total.where(total > 0)).fillna(50.0).where(gain.notna())
    ema_f = _ewm(d, "close", span=f.macd_fast, adjust=False, min_periods=f.macd_fast)
    ema_s = _ewm(d, "close", span=f.macd_slow, adjust=False, min_periods=f.macd_slow)
    d["macd"] = (ema_f - ema_s) / d["close"]
    d["macd_signal"] = _ewm(d, "macd", span=f.macd_signal, adjust=False, min_periods=f.macd_signal)
    d["macd_hist"] = d["macd"] - d["macd_signal"]
    for w in sorted(set(f.ma_windows) | {50}):
        d[f"_ma{w}"] = _roll(d, "close", w, w, "mean")
    for w in f.ma_windows:
        d[f"dist_ma_{w}"] = d["close"] / d[f"_ma{w}"] - 1
    vz, mp = f.volume_window, max(3, f.volume_window // 2)
    d["_lv"] = np.log1p(d["adj_volume"])
    std = _roll(d, "_lv", vz, mp, "std")
    d["volume_z"] = (d["_lv"] - _roll(d, "_lv", vz, mp, "mean")) / std.where(std > 0)
    d["range_pct"] = (d["high"] - d["low"]) / d["close"]
    d["_value"] = d["raw_close"] * d["raw_volume"]
    mean_value = _roll(d, "_value", vz, mp, "mean")
    d["log_dollar_volume"] = np.log(mean_value.where(d["_value"] > 0))
    by_date = d.groupby("date")
    d["rank_ret_5"] = by_date["_r5"].rank(pct=True)
    d["rank_ret_20"] = by_date["_r20"].rank(pct=True)
    d["rank_vol"] = by_date[f"vol_{vw}"].rank(pct=True)
    d["sector_rel_ret_20"] = d["_r20"] - d.groupby(["date", "sector"])["_r20"].transform("mean")
    idx = _per_date(d, "_r1", cal)
    log_level = idx.fillna(0.0).cumsum()
    mkt_vol = idx.rolling(vw, min_periods=vw // 2).std() * ANNUAL
    zw = f.zscore_window
    zroll = mkt_vol.rolling(zw, min_periods=max(20, zw // 4))
    zstd = zroll.std()
    valid = d["_ma50"].notna() & d["close"].notna()
    d["_valid"], d["_above"] = valid, (d["close"] > d["_ma50"]) & valid
    counts = d.groupby("date")[["_valid", "_above"]].sum().reindex(cal)
    mkt_atr = _per_date(d, "atr_pct", cal)
    market = {
        "mkt_ret_20": log_level - log_level.shift(20),
        "mkt_breadth_50": counts["_above"] / counts["_valid"].where(counts["_valid"] > 0),
        "mkt_vol_20": mkt_vol,
        "mkt_vol_z": (mkt_vol - zroll.mean()) / zstd.where(zstd > 0),
        "mkt_avg_corr": _avg_corr(d, cal, f.corr_window),
        "mkt_atr_pct": mkt_atr,
        "market_regime": _regime(np.exp(log_level), mkt_atr, settings),
    }
    for name, series in market.items():
        d[name] = series.reindex(d["date"]).to_numpy()
    d["n_history"] = d.groupby("symbol", sort=False)["present"].cumsum().astype("int64")
    keep = d["present"] & (d["n_history"] >= f.min_history)
    d["close_raw"] = d["raw_close"]
    return d.loc[keep, [c for c in d.columns if not c.startswith("_")]].reset_index(drop=True)


# ----------------------------------------------------------------------------- stages
def _timed(fn: Callable[[int], Any], repeats: int) -> tuple[list[float], Any]:
    """Run ``fn(i)`` ``repeats`` times; wall seconds of each run and the last result."""
    times, result = [], None
    for i in range(repeats):
        result = None  # free the previous run's output so it does not inflate this run's peak
        gc.collect()
        t0 = time.perf_counter()
        result = fn(i)
        times.append(time.perf_counter() - t0)
    return times, result


def run_stage(stage: str, data_dir: Path, work: Path, repeats: int) -> dict[str, Any]:
    """Run one stage in this (fresh) process; timings, row counts and peak RSS."""
    from tasks.data.ingest import import_bars
    from tasks.data.sources import ParquetSource
    from tasks.data.store import load_bars, load_constituents
    from tasks.features.build import build_features, feature_columns
    from tasks.paths import Paths

    warnings.simplefilter("ignore", RuntimeWarning)
    settings = load_settings()
    source = ParquetSource(data_dir / "ohlcv_daily.parquet", data_dir / "constituents.csv")
    store = Paths(work / "home").store
    out: dict[str, Any] = {"stage": stage}

    def do_import(i: int) -> Any:
        home = work / ("home" if i == 0 else f"home_{stage}_{i}")
        os.environ["HCP_HOME"] = str(home)
        return import_bars(source, settings, Paths(home))

    if stage == "import":
        times, res = _timed(do_import, repeats)
        out.update(rows=res.rows_in, rows_kept=res.rows_kept, symbols=res.symbols_kept)
    elif stage == "pipeline":
        def pipeline(i: int) -> tuple[Any, pd.DataFrame]:
            res = do_import(i + 1)
            return res, build_features(load_bars(res.store), load_constituents(res.store), settings)
        times, (res, feats) = _timed(pipeline, repeats)
        out.update(rows=res.rows_in, rows_out=len(feats))
    else:
        os.environ["HCP_HOME"] = str(work / "home")
        t0 = time.perf_counter()
        bars, cons = load_bars(store), load_constituents(store)
        out["load_s"] = time.perf_counter() - t0
        fn = build_features if stage == "fast" else baseline_features
        times, feats = _timed(lambda _i: fn(bars, cons, settings), repeats)
        out.update(rows=len(bars), rows_out=len(feats), columns=feature_columns(settings))
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out["times"] = times
    if stage in ("fast", "baseline"):
        feats.to_parquet(work / f"features_{stage}.parquet")
    return out


def spawn(stage: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run ``stage`` in a fresh interpreter so its peak memory is its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--work", str(work),
           "--data-dir", str(args.data_dir), "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"stage {stage!r} failed (exit {proc.returncode})")
    res = json.loads(lines[-1][len(RESULT_TAG):])
    res["median_s"] = statistics.median(res["times"])
    runs = ", ".join(f"{t:.2f}" for t in res["times"])
    extra = f"; bars loaded in {res['load_s']:.2f} s (untimed)" if "load_s" in res else ""
    print(f"  done: {STAGES[stage]:<30} median {res['median_s']:8.2f} s  runs [{runs}]  "
          f"peak {res['peak_mb']:7.0f} MB{extra}", flush=True)
    return res


# ----------------------------------------------------------------------------- report
def cross_check(work: Path, columns: list[str]) -> int:
    """Print max |baseline - fast| per feature column; return the number of mismatching checks."""
    fast = pd.read_parquet(work / "features_fast.parquet")
    base = pd.read_parquet(work / "features_baseline.parquet")
    for frame in (fast, base):
        frame["symbol"] = frame["symbol"].astype(str)
    both = fast.merge(base, on=["symbol", "date"], how="outer", suffixes=("_f", "_b"), indicator=True)
    only_f, only_b = (both["_merge"] == "left_only").sum(), (both["_merge"] == "right_only").sum()
    both = both[both["_merge"] == "both"]
    print(f"\nCross-check on {len(both):,} common (symbol, date) rows "
          f"(only in fast: {only_f}, only in baseline: {only_b}); flag: max abs diff > {TOLERANCE:g} "
          "or a value NaN in one and not the other")
    bad = int(only_f > 0) + int(only_b > 0)
    print(f"  {'column':<20} {'max abs diff':>13} {'NaN-pattern diffs':>18} {'non-NaN rows':>13}")
    for col in columns + ["close_raw", "n_history"]:
        a = both[f"{col}_f"].to_numpy(dtype="float64", na_value=np.nan)
        b = both[f"{col}_b"].to_numpy(dtype="float64", na_value=np.nan)
        nan_diff = int((np.isnan(a) != np.isnan(b)).sum())
        ok = ~np.isnan(a) & ~np.isnan(b)
        diff = float(np.abs(a[ok] - b[ok]).max()) if ok.any() else 0.0
        flag = "MISMATCH" if diff > TOLERANCE or nan_diff else "ok"
        bad += flag != "ok"
        print(f"  {col:<20} {diff:13.3e} {nan_diff:18d} {int(ok.sum()):13,d}  {flag}")
        if flag != "ok":
            _explain(both, col, (np.isnan(a) != np.isnan(b)) | (ok & (np.abs(a - b) > TOLERANCE)))
    labels = both["market_regime_f"].astype(object).fillna("<NA>") != both["market_regime_b"].fillna(
        "<NA>")
    bad += int(labels.any())
    print(f"  {'market_regime':<20} {'labels differ':>13} {int(labels.sum()):18d}  "
          f"{'MISMATCH' if labels.any() else 'ok'}")
    return bad


def _explain(both: pd.DataFrame, col: str, wrong: np.ndarray) -> None:
    """Print where a mismatching column differs: the worst symbols and a sample row."""
    rows = both.loc[wrong, ["symbol", "date", f"{col}_f", f"{col}_b"]]
    by_sym = rows.groupby("symbol")["date"].agg(["size", "min", "max"]).nlargest(3, "size")
    for sym, r in by_sym.iterrows():
        print(f"      {sym}: {r['size']} rows from {r['min'].date()} to {r['max'].date()}")
    first = rows.iloc[0]
    print(f"      e.g. {first['symbol']} {first['date'].date()}: fast={float(first[f'{col}_f']):.9g} "
          f"baseline={float(first[f'{col}_b']):.9g}")


def report(res: dict[str, dict[str, Any]], bad: int) -> None:
    """Print the stage table and the target verdicts."""
    fast = res["fast"]
    print(f"\n{'stage':<32} {'wall s (median)':>15} {'rows/s':>12} {'peak MB':>9} "
          f"{'time / fast':>12} {'peak / fast':>12}")
    for key, label in STAGES.items():
        r = res[key]
        ratio = (f"{r['median_s'] / fast['median_s']:11.1f}x {r['peak_mb'] / fast['peak_mb']:11.2f}x"
                 if key in ("fast", "baseline") else "")
        print(f"{label:<32} {r['median_s']:15.2f} {r['rows'] / r['median_s']:12,.0f} "
              f"{r['peak_mb']:9.0f} {ratio}")
    print("rows/s = vendor rows in (import, pipeline) or stored bars in (features) per wall second;"
          " peak = ru_maxrss of the stage's own process (interpreter + imports + data + work)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pipe = res["pipeline"]
    split = res["import"]["median_s"] + fast["median_s"]
    t_ok, m_ok = pipe["median_s"] <= TARGET_SECONDS, pipe["peak_mb"] <= TARGET_MB
    print(f"\nTargets (full import + features, 2-core machine; this machine: {cores} cores):")
    print(f"  wall <= {TARGET_SECONDS:.0f} s : {pipe['median_s']:.2f} s in one process "
          f"({split:.2f} s as separate stages)  {'PASS' if t_ok else 'FAIL'}")
    print(f"  peak <= {TARGET_MB / 1024:.0f} GB  : {pipe['peak_mb']:.0f} MB in one process  "
          f"{'PASS' if m_ok else 'FAIL'}")
    if cores != 2:
        print("  note: not a 2-core machine, so the verdict is indicative only")
    print(f"  baseline vs fast cross-check: {'PASS' if bad == 0 else f'FAIL ({bad} mismatching checks)'}")


def main() -> int:
    """Parse arguments; run one stage (child) or orchestrate all stages (parent)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sp500")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.data_dir = args.data_dir.resolve()
    if args.stage:
        res = run_stage(args.stage, args.data_dir, args.work, max(1, args.repeats))
        print(RESULT_TAG + json.dumps(res), flush=True)
        return 0
    needed = [args.data_dir / "ohlcv_daily.parquet", args.data_dir / "constituents.csv"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        print(f"bench_features: real data not found ({', '.join(missing)}); nothing to benchmark. "
              "Pass --data-dir to point at the sp500 folder.")
        return 0
    print(f"bench_features: data {args.data_dir}, repeats {args.repeats}, "
          f"python {sys.version.split()[0]}, pandas {pd.__version__}, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} (other work on the machine skews timings)")
    with tempfile.TemporaryDirectory(prefix="hcp_bench_") as tmp:
        work = Path(tmp)
        results = {stage: spawn(stage, args, work) for stage in STAGES}
        bad = cross_check(work, results["fast"]["columns"])
    report(results, bad)
    return 0


if __name__ == "__main__":
    sys.exit(main())
