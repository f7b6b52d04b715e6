"""One barrier rule: the nightly marks of real plans classify exactly as the training labels do,
same-session touches included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flows.nightly import order_outcome
from tasks.data.adjust import adjust_bars
from tasks.data.demo import DemoSpec, generate_demo_market
from tasks.features.kernels import atr
from tasks.features.labels import build_labels
from tasks.features.panel import build_panel
from tasks.settings import load_settings

SETTINGS = load_settings()


def _path(highs, lows, closes) -> pd.DataFrame:
    path = pd.DataFrame({"adj_high": highs, "adj_low": lows, "adj_close": closes})
    path.attrs["entry_adj"] = 100.0
    return path


ORDER = pd.Series({"entry_price": 50.0, "take_profit": 55.0, "stop": 47.0})  # +10 %, -6 %


@pytest.mark.parametrize("same_bar, win", [("loss", False), ("win", True), ("drop", None)])
def test_both_barriers_in_one_session_follow_the_labels_rule(same_bar, win):
    out = order_outcome(ORDER, _path([101, 111], [99, 93], [100, 100]), same_bar)
    assert out["outcome"] == "both" and out["win"] is win
    assert out["ret"] == pytest.approx(-0.06)   # the stop's return: the conservative reading


def test_first_touch_and_timeout():
    assert order_outcome(ORDER, _path([104, 110.5], [99, 95], [103, 108]), "loss") == {
        "outcome": "tp", "win": True, "ret": pytest.approx(0.10)}
    assert order_outcome(ORDER, _path([104, 105], [93.9, 99], [96, 101]), "loss")["outcome"] == "sl"
    out = order_outcome(ORDER, _path([104, 105], [98, 99], [102, 103]), "loss")
    assert out == {"outcome": "timeout", "win": False, "ret": pytest.approx(0.03)}


@pytest.mark.parametrize("same_bar", ["loss", "drop"])
def test_nightly_marks_agree_with_the_labels_on_a_market(same_bar):
    spec = DemoSpec(seed=5, n_symbols=6, n_sectors=3, start="2021-01-04", end="2021-12-31",
                    inject_bad_rows=False)
    bars = adjust_bars(generate_demo_market(spec).bars.pipe(
        lambda b: b.assign(date=b["date"].astype("datetime64[ns]"))))
    settings = SETTINGS.model_copy(update={"labels": SETTINGS.labels.model_copy(
        update={"same_bar": same_bar})})
    name = settings.fusion.plan_horizon
    h = settings.labels.horizons[name]
    labels = build_labels(bars, settings).set_index(["symbol", "date"])
    p = build_panel(bars, None, settings.data.calendar)
    atr_abs = atr(p.high, p.low, p.close, settings.features.atr_window)
    tp, sl = settings.labels.take_profit_atr, settings.labels.stop_atr
    checked = 0
    seen = set()
    for sym in p.close.columns:
        hist = bars.loc[bars["symbol"] == sym].sort_values("date").reset_index(drop=True)
        for i in range(60, len(hist) - h):
            day = hist.at[i, "date"]
            entry, a = p.close.at[day, sym], atr_abs.at[day, sym]
            lab = labels.loc[(sym, day)]
            if not np.isfinite(a) or pd.isna(lab[f"outcome_{name}"]):
                continue
            order = pd.Series({"entry_price": entry, "take_profit": entry + tp * a,
                               "stop": entry - sl * a})
            path = hist.iloc[i + 1: i + 1 + h][["adj_high", "adj_low", "adj_close"]]
            path.attrs["entry_adj"] = entry
            got = order_outcome(order, path, same_bar)
            assert got["outcome"] == lab[f"outcome_{name}"], (sym, day)
            want = lab[f"label_{name}"]
            assert (got["win"] is None) if np.isnan(want) else (got["win"] == bool(want))
            checked += 1
            seen.add(got["outcome"])
    assert checked > 500 and {"tp", "sl", "timeout"} <= seen
