"""Benchmark the intraday engine: latency per order and sessions per second.

1. Latency per order (target < 100 ms, the runbook's order-generation budget), p50 / p99 over
   ``--orders`` entries against a book of 7 positions, side by side:

   * ``clamp_order`` alone (the baseline: the hard clamps of one order);
   * order generation: the engine's per-bar entry step for one order (clamp book of the bar,
     clamp, child order, paper fill, booking), with the state saves and trade-log appends
     stubbed out;
   * the full path: the same with the durable writes (session state saved and fsynced before
     the order, ``intent`` and result appended and fsynced to the trade log, the paper
     broker's journal fsynced).

2. Intraday replay throughput: ``run_session`` over ``--sessions`` consecutive sessions of
   simulated bars from real daily bars (../shared/data/sp500; the seeded demo market where that
   folder is absent), each executing a synthetic plan of 8 entries (top 20-session return,
   0.5% of net liquidity each, stops from ATR(14)); baseline in the same run: generating the
   same sessions' simulated bars alone.

    .venv/bin/python bench/bench_intraday.py [--orders 2000] [--sessions 60]
"""

from __future__ import annotations

import argparse
import copy
import os
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
TARGET_MS = 100.0


def _pct(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1e3, q))


def _book_state(settings, session: str):
    from tasks.execution.state import Holding, SessionState, Working

    sectors = ["Tech", "Energy", "Financials", "Health Care", "Utilities", "Materials", "Tech"]
    holdings = {f"H{k}": Holding(f"H{k}", 20 + 5 * k, 40.0 + k, sector=sectors[k], entry_price=40.0,
                                 atr=1.0, stop=38.2, take_profit=42.5, extreme=40.0)
                for k in range(7)}
    st = SessionState(session, "demo", "bench", 100_000.0, 100_000.0 - sum(
        h.qty * h.mark for h in holdings.values()), holdings=holdings)
    st.working = [Working(f"{session}|plan|X|BUY", "X", "BUY", 30, "entry", 0.015, ["entry"], 1.0,
                          "core", "Tech")]
    return st


class _MemoryBroker:
    """The paper fill model without its journal (for the order-generation figure)."""

    name = "memory"

    def __init__(self, settings) -> None:
        self.fm, self.fee = settings.execution.fill, settings.guardrails.fee_pct

    def submit(self, order, bar):
        from tasks.execution.broker import simulate_fill

        return simulate_fill(order, bar, self.fm, self.fee)

    def lookup(self, order_id):
        return None


class _MemoryLog:
    """A trade log that keeps nothing (for the order-generation figure)."""

    def logged(self, order_id, event):
        return None

    def result_of(self, order_id):
        return None

    def append(self, record):
        return record


def bench_orders(n: int, tmp: Path) -> dict[str, list[float]]:
    from tasks.execution.broker import Bar, PaperBroker
    from tasks.execution.engine import Engine, Setup
    from tasks.execution.tradelog import TradeLog
    from tasks.paths import Paths
    from tasks.risk.clamps import Order, clamp_order
    from tasks.settings import load_settings

    settings, session = load_settings(), "2020-03-09"
    paths = Paths(tmp / "orders")
    template = _book_state(settings, session)
    bar = {"X": Bar("X", "2020-03-09T13:35:00Z", 40.0, 40.3, 39.8, 40.1, 50_000.0)}
    out: dict[str, list[float]] = {"clamp_order alone": [], "order generation (no I/O)": [],
                                   "full path (fsynced state, log, journal)": []}
    durable_log = TradeLog.open(paths)[0]  # one log for all orders, as in a session
    probe = Engine(Setup(paths, settings, settings.risk, None, _MemoryLog(), [], 5, ""),
                   copy.deepcopy(template))
    book = probe.clamp_book()
    for _ in range(n):
        t0 = time.perf_counter()
        clamp_order(Order("X", "BUY", 30, 40.0, "core", "Tech"), book, settings.risk,
                    settings.guardrails)
        out["clamp_order alone"].append(time.perf_counter() - t0)
    for k in range(n):
        for label, durable in (("order generation (no I/O)", False),
                               ("full path (fsynced state, log, journal)", True)):
            st = copy.deepcopy(template)
            st.working[0].parent_id = f"{session}|plan|X{k}|BUY"
            broker = (PaperBroker(paths.data / "state" / "paper_broker" / f"{k}.jsonl",
                                  settings.execution.fill, settings.guardrails.fee_pct)
                      if durable else _MemoryBroker(settings))
            log = durable_log if durable else _MemoryLog()
            eng = Engine(Setup(paths, settings, settings.risk, broker, log, [], 5, ""), st)
            if not durable:
                eng.save = lambda: None
            t0 = time.perf_counter()
            eng._entries(0, "2020-03-09T13:30:00Z", bar, eng.clamp_book())
            out[label].append(time.perf_counter() - t0)
            assert st.counters["fills"] == 1
    return out


def _market(data_dir: Path, tmp: Path):
    """(paths, settings) of a home with a bar store: the real sample, else the demo market."""
    from tasks.data.ingest import import_bars
    from tasks.data.sources import DemoSource, ParquetSource
    from tasks.paths import Paths
    from tasks.settings import load_settings

    paths, settings = Paths(tmp / "market"), load_settings()
    real = data_dir / "ohlcv_daily.parquet"
    if real.is_file():
        raw = pd.read_parquet(real, filters=[("date", ">=", pd.Timestamp("2016-06-01")),
                                             ("date", "<=", pd.Timestamp("2017-12-31"))])
        sub = tmp / "bars.parquet"
        raw.to_parquet(sub)
        import_bars(ParquetSource(sub, data_dir / "constituents.csv"), settings, paths)
        return paths, settings, f"real bars {real} (2016-06..2017-12)"
    import_bars(DemoSource(paths.demo, 7, 60, 10, "2016-01-04", "2017-12-29", False), settings,
                paths)
    return paths, settings, "demo market (seed 7, 60 symbols)"


def _plans(paths, bars: pd.DataFrame, days: list[pd.Timestamp]) -> None:
    """A synthetic plan per session: top 8 by 20-session return, 0.5% of NL each."""
    from tasks.plan.build import PLAN_COLUMNS

    wide = bars.pivot(index="date", columns="symbol", values="close")
    tr = (bars.assign(tr=bars["high"] - bars["low"]).pivot(index="date", columns="symbol",
                                                           values="tr").rolling(14).mean())
    mom = wide / wide.shift(20) - 1
    for day in days:
        picks = mom.loc[day].dropna().nlargest(8).index
        rows = []
        for rank, sym in enumerate(picks):
            px, atr = float(wide.loc[day, sym]), float(tr.loc[day, sym])
            qty = int(500 // px)
            if qty < 1 or not np.isfinite(atr):
                continue
            rows.append({"ticker": sym, "regime": "med_vol", "prob_win_cal": 0.2,
                         "entry_price": px, "qty": qty, "position_cash": qty * px,
                         "exp_pnl": 0.01, "exp_pnl_net": 0.01, "etth_days": 5.0,
                         "epnl_time": 0.01 - rank * 1e-4, "action": "BUY", "score": 0.8,
                         "stop": px - 1.8 * atr, "take_profit": px + 2.5 * atr, "bucket": "core",
                         "sector": "x", "reason_tags": "bench", "policy_version": "pol-bench",
                         "model_id": "bench"})
        folder = paths.val / "plans" / day.date().isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=PLAN_COLUMNS).to_csv(folder / "trade_plan.csv", index=False)


def bench_sessions(n: int, data_dir: Path, tmp: Path) -> dict:
    from tasks.data.store import load_bars
    from tasks.execution.bars import simulate_session
    from tasks.execution.runner import run_session

    paths, settings, source = _market(data_dir, tmp)
    bars = load_bars(paths.store)
    days = sorted(bars["date"].unique())[-(n + 1):]
    _plans(paths, bars, days[:-1])
    cfg = settings.execution
    t0 = time.perf_counter()
    for day in days[1:]:
        daily = bars.loc[bars["date"] == day].head(16)
        simulate_session(daily, day.date().isoformat(), settings.data.calendar, cfg.bar_minutes,
                         cfg.sim_points_per_bar, cfg.sim_seed)
    sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    fills = 0
    for day in days[1:]:
        res = run_session(paths, settings, day.date().isoformat(),
                          daily=bars.loc[bars["date"] == day])
        fills += res.summary["fills"]
    full = time.perf_counter() - t0
    return {"source": source, "n": len(days) - 1, "sim": sim, "full": full, "fills": fills}


def report(orders: dict[str, list[float]], sess: dict) -> None:
    base = statistics.median(orders["clamp_order alone"])
    print("\n" + "=" * 92)
    title = f"latency per order ({len(orders['clamp_order alone'])} orders)"
    print(f"{title:<46}"
          f"{'p50 ms':>9} {'p99 ms':>9} {'x clamp p50':>12}  target < {TARGET_MS:g} ms")
    for label, times in orders.items():
        p50, p99 = _pct(times, 50), _pct(times, 99)
        print(f"  {label:<44}{p50:9.3f} {p99:9.3f} {statistics.median(times) / base:12.1f}  "
              f"{'PASS' if p99 < TARGET_MS else 'FAIL'}")
    n = sess["n"]
    print(f"\nintraday replay, {n} sessions of simulated 5-minute bars ({sess['source']}), "
          f"{sess['fills']} fills")
    print(f"  {'bar simulation alone (16 symbols a session)':<52} {sess['sim']:7.2f} s  "
          f"{n / sess['sim']:8.1f} sessions/s")
    print(f"  {'run_session (plan, bars, engine, trade log, outputs)':<52} {sess['full']:7.2f} s  "
          f"{n / sess['full']:8.1f} sessions/s   ratio {sess['full'] / sess['sim']:.1f}x")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cores} cores, load average now {os.getloadavg()[0]:.2f} (other work on the "
          "machine skews timings; fsync times depend on the disk)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=60)
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sp500")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hcp_bench_intraday_") as tmp:
        os.environ["HCP_HOME"] = str(Path(tmp) / "home")
        print(f"bench_intraday: {args.orders} orders, {args.sessions} sessions, tmp {tmp}",
              flush=True)
        orders = bench_orders(args.orders, Path(tmp))
        sess = bench_sessions(args.sessions, args.data_dir.resolve(), Path(tmp))
        report(orders, sess)
    return 0


if __name__ == "__main__":
    sys.exit(main())
