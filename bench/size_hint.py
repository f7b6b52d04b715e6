"""The learned size hint against a constant size and a volatility-targeting size, in one run.

Reads the closed episodes of a finished backtest (``reports/backtest/<S>_<E>/`` under
``--home``, default ``$HCP_HOME``), fits the hint walk-forward by year exactly as
``hcp hint fit`` does, and prints for each sizing rule on the same out-of-sample episodes:
Sharpe (annualised), deflated Sharpe, maximum drawdown and total return; the hint's Sharpe
and deflated Sharpe minus each baseline's and its drawdown as a ratio of theirs; then the
gate's verdict. Nothing is registered. ``--pessimism`` and
``--penalty-rate`` re-run the same episodes under another arm rule or reward (the reward's mix
otherwise comes from the policy in force under the home).

    .venv/bin/python bench/size_hint.py --backtest 2005-01-03_2010-12-31 [--home DIR]
        [--pessimism 1.0] [--penalty-rate 0.01]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.backtest.sizehint import backtest_root, episode_table, gate, starting_capital  # noqa: E402
from tasks.data.calendar import sessions as calendar_sessions  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.plan.sizehint import reward_of, walk_forward  # noqa: E402
from tasks.policy import current_policy  # noqa: E402
from tasks.settings import load_settings  # noqa: E402


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def diff(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a - b:+.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backtest", required=True, help="START_END under reports/backtest/")
    ap.add_argument("--home", default=os.environ.get("HCP_HOME", "."))
    ap.add_argument("--pessimism", type=float, default=None)
    ap.add_argument("--penalty-rate", type=float, default=None)
    args = ap.parse_args()
    home = Paths(Path(args.home))
    settings = load_settings()
    if args.pessimism is not None:
        settings = settings.model_copy(update={"size_hint": settings.size_hint.model_copy(
            update={"pessimism": args.pessimism})})
    folder = home.reports / "backtest" / args.backtest
    if not (folder / "sandbox").is_dir():
        print(f"error: no backtest at {folder}", file=sys.stderr)
        return 2
    policy, version = current_policy(home, settings)
    reward = reward_of(policy)
    rate = reward["penalty_rate"] if args.penalty_rate is None else args.penalty_rate
    tick = time.perf_counter()
    root = backtest_root(home, folder)
    table = episode_table(root, settings, reward["coefficients"], rate)
    if len(table) < 2:
        print(f"error: {len(table)} episodes with the hint's state in {folder}", file=sys.stderr)
        return 2
    wf = walk_forward(table, settings)
    days = calendar_sessions(settings.data.calendar, pd.Timestamp(table["entry_session"].min()),
                             pd.Timestamp(table["exit_date"].max()))
    g = gate(wf, days, starting_capital(root, settings), settings)
    took = time.perf_counter() - tick
    print(f"backtest {args.backtest}: {len(table)} episodes with state; reward "
          f"{reward['coefficients']} penalty_rate {rate:g} (policy {version}); arms "
          f"{list(settings.size_hint.arms)} pessimism {settings.size_hint.pessimism:g}")
    for y in wf.years:
        print(f"  {y['year']}: trained on {y['train_episodes']} episodes, tested on "
              f"{y['test_episodes']}, fitted={y['fitted']}, arms {y['arms']}")
    rules = g.get("rules") or {}
    print(f"out of sample: {g['episodes']} episodes over {g.get('sessions', 0)} sessions from "
          f"{g.get('from_')}; mean multiplier {g.get('mean_multiplier')}")
    print(f"{'rule':<11}{'Sharpe':>9}{'DSR':>9}{'max DD':>9}{'total':>9}")
    for name, f in rules.items():
        def fmt(x, pct=False):
            return "n/a" if x is None else (f"{x:.2%}" if pct else f"{x:.3f}")
        print(f"{name:<11}{fmt(f['sharpe']):>9}{fmt(f['dsr']):>9}"
              f"{fmt(f['max_drawdown'], True):>9}{fmt(f['total_return'], True):>9}")
    if rules:
        h = rules["hint"]
        for base in ("constant", "vol_target"):
            b = rules[base]
            print(f"hint vs {base}: Sharpe {diff(h['sharpe'], b['sharpe'])}, deflated Sharpe "
                  f"{diff(h['dsr'], b['dsr'])}, max drawdown "
                  f"{ratio(h['max_drawdown'], b['max_drawdown'])} of {base}'s")
    print(f"gate: {'PASSED' if g['passed'] else 'FAILED'} ({g['reason']}); {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
