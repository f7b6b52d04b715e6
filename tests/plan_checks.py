"""Invariants every trade plan keeps (shared by the flow and real-data replay tests)."""

from __future__ import annotations

import pandas as pd

from tasks.plan.build import PLAN_COLUMNS

SEED_COLUMNS = ["ticker", "regime", "prob_win_cal", "entry_price", "qty", "position_cash",
                "exp_pnl", "exp_pnl_net", "etth_days", "epnl_time"]


def assert_plan_sane(plan: pd.DataFrame, nl: float) -> None:
    """The invariants every plan keeps."""
    assert list(plan.columns) == PLAN_COLUMNS and PLAN_COLUMNS[:10] == SEED_COLUMNS
    if plan.empty:   # an empty book (explained in the health JSON) keeps the header
        return
    assert (plan["qty"] >= 0).all() and plan["qty"].dtype.kind == "i"
    buys = plan.loc[plan["action"] == "BUY"]
    assert (buys["stop"] < buys["entry_price"]).all()
    assert (buys["entry_price"] < buys["take_profit"]).all()
    assert plan["reason_tags"].notna().all() and (plan["reason_tags"].str.len() > 0).all()
    per_name = {"core": 0.015, "penny": 0.004, "fno": 0.007}
    # the per-name cap bounds what an order adds; an exit sells the whole holding, whose value
    # may have grown past the cap since it was bought (clamp_order passes exits unchanged)
    caps = buys["bucket"].map(per_name).astype("float64") * nl
    assert (buys["position_cash"] <= caps + 1e-6).all(), "per-name clamp breached"
    assert plan["epnl_time"].is_monotonic_decreasing
    sectors = plan.groupby("sector")["position_cash"].sum() / nl
    assert (sectors <= 0.40 + 1e-9).all(), "sector clamp breached"
    assert plan["position_cash"].nlargest(5).sum() / nl <= 0.50 + 1e-9, "top-5 clamp breached"
    buckets = plan.groupby("bucket")["position_cash"].sum() / nl
    assert (buckets <= buckets.index.map({"core": 0.90, "penny": 0.02, "fno": 0.05})
            + 1e-9).all(), "bucket clamp breached"
    assert len(plan) <= 60 and plan["ticker"].is_unique   # the derived positions limit
