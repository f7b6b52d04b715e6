"""Is the plan's expectancy worth anything? Predicted against realised, out of sample.

From the walk-forward's out-of-sample rows of the plan horizon (``exp_pnl`` predicted by the
model of the fold, ``realised_pnl`` = the barrier trade's realised P&L, see
``tasks/features/labels.barrier_pnl``):

- a reliability table per volatility regime (and all regimes): every session's names ranked
  into deciles of predicted net expectancy (the plan ranks names within a session, so the
  deciles are cross-sectional); per decile the mean predicted net, the realised net *relative
  to the session's average name* with its standard error (the prediction is relative to the
  session's average name by construction, so this is the like-for-like figure), and the
  absolute realised net (what the market added or took);
- the share of names with ``exp_pnl_net > 0`` on a typical session (median over sessions);
- the top-minus-bottom decile spread of realised net P&L.

Costs: fees both ways plus the paper broker's half spread both ways (impact is size-dependent
and left out here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.features.regimes import VOL_REGIMES

DECILES = 10
COLUMNS = ("date", "vol_regime", "exp_pnl", "realised_pnl")   # the columns read here


def _rows(oos: pd.DataFrame, horizon: str, cost: float) -> pd.DataFrame:
    need = {"exp_pnl", "realised_pnl"}
    if oos.empty or not need <= set(oos.columns):
        return pd.DataFrame()
    rows = oos.loc[(oos["horizon"] == horizon) & np.isfinite(oos["exp_pnl"])
                   & np.isfinite(oos["realised_pnl"]),
                   [c for c in COLUMNS if c in oos.columns]].copy()
    rows["pred_net"] = rows["exp_pnl"] - cost   # exp_pnl is relative to the session already
    rows["real_net"] = rows["realised_pnl"] - cost
    rows["real_rel"] = rows["realised_pnl"] - rows.groupby("date")["realised_pnl"].transform("mean")
    return rows


def reliability_table(oos: pd.DataFrame, horizon: str, cost: float) -> pd.DataFrame:
    """Deciles of predicted net expectancy against realised net P&L, per regime and 'all'."""
    rows = _rows(oos, horizon, cost)
    cols = ["regime", "decile", "n", "pred_net", "real_rel", "real_rel_se", "real_net"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    pct = rows.groupby("date")["pred_net"].rank(method="first", pct=True)
    rows["decile"] = np.ceil(pct * DECILES).clip(1, DECILES).astype(int)
    out = []
    regimes = rows["vol_regime"].astype("object")
    for regime in ("all", *VOL_REGIMES):
        part = rows if regime == "all" else rows.loc[regimes == regime]
        if len(part) < DECILES * 20:
            continue
        for d, g in part.groupby("decile"):
            out.append({"regime": regime, "decile": int(d), "n": len(g),
                        "pred_net": g["pred_net"].mean(), "real_rel": g["real_rel"].mean(),
                        "real_rel_se": g["real_rel"].std(ddof=1) / np.sqrt(len(g)),
                        "real_net": g["real_net"].mean()})
    return pd.DataFrame(out, columns=cols)


def expectancy_summary(oos: pd.DataFrame, horizon: str, cost: float,
                       table: pd.DataFrame | None = None) -> dict:
    """Share of names with positive predicted net expectancy on a typical session, and the
    top-minus-bottom decile spread of realised P&L relative to the session (all regimes);
    ``table``: the :func:`reliability_table` of the same arguments, when already computed."""
    rows = _rows(oos, horizon, cost)
    if rows.empty:
        return {"horizon": horizon, "rows": 0}
    share = (rows["pred_net"] > 0).groupby(rows["date"]).mean()
    if table is None:
        table = reliability_table(oos, horizon, cost)
    allr = table.loc[table["regime"] == "all"].set_index("decile")
    spread = (float(allr["real_rel"].iloc[-1] - allr["real_rel"].iloc[0]) if len(allr) else np.nan)
    corr = rows[["pred_net", "real_rel"]].corr(method="spearman").iloc[0, 1]
    return {"horizon": horizon, "rows": int(len(rows)), "sessions": int(rows["date"].nunique()),
            "cost_round_trip": cost,
            "share_positive_median": float(share.median()),
            "share_positive_mean": float(share.mean()),
            "top_decile_pred_net": float(allr["pred_net"].iloc[-1]) if len(allr) else np.nan,
            "top_decile_real_rel": float(allr["real_rel"].iloc[-1]) if len(allr) else np.nan,
            "bottom_decile_real_rel": float(allr["real_rel"].iloc[0]) if len(allr) else np.nan,
            "top_minus_bottom_rel": spread,
            "top_decile_real_net": float(allr["real_net"].iloc[-1]) if len(allr) else np.nan,
            "spearman_pred_real": float(corr) if np.isfinite(corr) else np.nan}


def reliability_png(table: pd.DataFrame, path: Path) -> Path | None:
    """Predicted against realised net P&L by decile, one line per regime."""
    if table.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lo = min(table["pred_net"].min(), table["real_rel"].min())
    hi = max(table["pred_net"].max(), table["real_rel"].max())
    ax.plot([lo * 100, hi * 100], [lo * 100, hi * 100], color="0.6", lw=1, ls="--",
            label="predicted = realised")
    for regime, g in table.groupby("regime", sort=False):
        ax.errorbar(g["pred_net"] * 100, g["real_rel"] * 100, yerr=g["real_rel_se"] * 100,
                    marker="o", ms=3, lw=1, capsize=2, label=str(regime))
    ax.axhline(0, color="0.3", lw=0.6)
    ax.axvline(0, color="0.3", lw=0.6)
    ax.set_xlabel("predicted net expectancy, % (session decile mean)")
    ax.set_ylabel("realised barrier P&L − session mean, %")
    ax.set_title("Expectancy reliability, out of sample")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
