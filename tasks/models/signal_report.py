"""Signal quality of walk-forward out-of-sample predictions: does the model rank stocks?

Input: the out-of-sample frame written by ``hcp train`` (``val/<baseline>/oos_predictions.parquet``),
one row per (symbol, date, horizon) with at least ``symbol, date, horizon``, a score column
(``p_cal`` by default; NaN in the first fold, whose rows are therefore left out) and
``fwd_return`` (log return from the session's close to the horizon's close).

Everything here is cross-sectional: names are compared with the other names of the *same*
session, so market drift does not count as skill.

- :func:`ic_by_year` - mean daily rank IC (Spearman of score vs forward return across names,
  per session) per calendar year and overall, with Newey-West t-statistics;
- :func:`decile_returns` - mean forward simple return per cross-sectional decile, and the
  top-minus-bottom long-short spread net of costs with its mean, Newey-West t and the
  annualised Sharpe ratio of its non-overlapping version;
- :func:`top_decile_turnover` - how much of the top decile changes per rebalance (every h
  sessions);
- :func:`permutation_importance` - model-agnostic importance of a feature as the drop in mean
  daily rank IC when it is shuffled across the names of each session;
- :func:`signal_summary` - the headline figures as a plain dict for a manifest;
- :func:`signal_tables`, :func:`signal_report_html`, :func:`write_signal_figures` - tables,
  an HTML fragment and two PNG figures.

Overlap: a horizon of h sessions has forward returns that overlap on consecutive sessions, so
means over all sessions get Newey-West t-statistics with lag ``h - 1``, and the Sharpe ratio
is computed on every h-th session only (non-overlapping holding periods).

The daily rank IC, its summary and the Newey-West t are the project's own
(:mod:`tasks.models.metrics`); sessions with fewer than ``MIN_NAMES`` names have no IC.
"""

from __future__ import annotations

import base64
import html
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from tasks.models.metrics import MIN_NAMES, daily_rank_ic, newey_west_t, summarise_ic

HORIZON_SESSIONS = {"short": 5, "mid": 20}   # the default label horizons (config labels.horizons)
DECILES = 10
TRADING_DAYS = 252
NAN = float("nan")
# columns shown as percentages (2 decimals) in the HTML fragment; other floats get 4 decimals
PERCENT_COLUMNS = frozenset({"mean_return", "mean_excess", "ls_gross_mean", "ls_net_mean",
                             "ls_cost", "turnover"})
# counts that can be fractional (tie groups shared between deciles): 1 decimal in the HTML
COUNT_COLUMNS = frozenset({"trades", "top_names"})
IC_YEAR_COLUMNS = ["year", "sessions", "ic_mean", "ic_std", "icir", "ic_t_nw", "ic_se",
                   "ic_positive"]
DECILE_COLUMNS = ["decile", "trades", "mean_return", "mean_excess"]
FIGURE_DPI = 100


# --------------------------------------------------------------------------- helpers

def horizon_length(horizon: str, h: int | None = None) -> int:
    """Sessions of a horizon: ``h`` when given, else ``HORIZON_SESSIONS[horizon]``.

    Raises ``KeyError`` for an unknown horizon name without an explicit ``h``."""
    if h is not None:
        if int(h) < 1:
            raise ValueError(f"horizon length must be >= 1 session, got {h}")
        return int(h)
    if horizon not in HORIZON_SESSIONS:
        raise KeyError(f"unknown horizon {horizon!r}: pass h= (sessions) explicitly")
    return HORIZON_SESSIONS[horizon]


def _lag(nw_lag: int | None, h: int) -> int:
    """The Newey-West lag: ``nw_lag`` when given, else ``h - 1``."""
    return max(0, h - 1) if nw_lag is None else int(nw_lag)


def _rows(oos: pd.DataFrame, horizon: str, score: str) -> pd.DataFrame:
    """Rows of ``horizon`` with a finite score and forward return: columns symbol, date, s, fwd."""
    need = {"date", "horizon", score, "fwd_return"}
    if oos.empty or not need <= set(oos.columns):
        missing = sorted(need - set(oos.columns))
        if missing and not oos.empty:
            raise KeyError(f"out-of-sample frame lacks column(s) {missing}")
        return pd.DataFrame({"symbol": pd.Series(dtype=object),
                             "date": pd.Series(dtype="datetime64[ns]"),
                             "s": pd.Series(dtype=float), "fwd": pd.Series(dtype=float)})
    part = oos.loc[oos["horizon"] == horizon]
    out = pd.DataFrame({
        "symbol": part["symbol"].to_numpy() if "symbol" in part.columns else np.arange(len(part)),
        "date": pd.to_datetime(part["date"]).to_numpy(),
        "s": pd.to_numeric(part[score], errors="coerce").to_numpy(dtype=float),
        "fwd": pd.to_numeric(part["fwd_return"], errors="coerce").to_numpy(dtype=float),
    })
    keep = np.isfinite(out["s"].to_numpy()) & np.isfinite(out["fwd"].to_numpy())
    return out.loc[keep].sort_values(["date", "symbol"], kind="mergesort").reset_index(drop=True)


def _decile_weights(rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Sessions of ``rows`` with at least DECILES names, and each row's weight in deciles 1..10.

    A session of n names is cut into ten equal slices of rank positions, decile k covering
    ((k - 1) n / 10, k n / 10]. A name occupies the positions of its tie group, (number of
    names scoring below it, that plus the group's size], and its weight in decile k is the
    share of those positions inside the decile. With distinct scores and n a multiple of
    ten the weights are 0 or 1 (plain deciles); a tie group straddling a cut is shared
    between the deciles by its size (the convention of ``metrics.top_decile_hit_rate``)
    instead of being split in an arbitrary order. Every decile weighs n / 10 names in every
    session, so a calibrated score with many ties (isotonic steps) still has a top and a
    bottom decile each session.
    """
    if rows.empty:
        return rows, np.zeros((0, DECILES))
    rows = rows.loc[rows.groupby("date", sort=True)["s"].transform("size") >= DECILES]
    rows = rows.reset_index(drop=True)
    if rows.empty:
        return rows, np.zeros((0, DECILES))
    grouped = rows.groupby("date", sort=True)["s"]
    n = grouped.transform("size").to_numpy(dtype=float)[:, None]
    below = grouped.rank(method="min").to_numpy(dtype=float)[:, None] - 1.0
    upto = grouped.rank(method="max").to_numpy(dtype=float)[:, None]
    k = np.arange(1, DECILES + 1, dtype=float)[None, :]
    lo, hi = (k - 1.0) * n / DECILES, k * n / DECILES
    overlap = np.minimum(upto, hi) - np.maximum(below, lo)
    weights = np.where(overlap > 1e-9, overlap, 0.0) / (upto - below)
    return rows, weights


def _sample_every(index: pd.Index, h: int) -> pd.Index:
    """Every h-th element of a sorted index, starting with the first (non-overlapping periods)."""
    return index.sort_values()[::h]


def _sharpe(x: pd.Series, h: int) -> float:
    """Annualised Sharpe ratio of h-session returns: mean / std (ddof 1) * sqrt(252 / h)."""
    xa = x.to_numpy(dtype=float)
    xa = xa[np.isfinite(xa)]
    if len(xa) < 2:
        return NAN
    sd = float(xa.std(ddof=1))
    return float(xa.mean() / sd * np.sqrt(TRADING_DAYS / h)) if sd > 0 else NAN


# --------------------------------------------------------------------------- rank IC

def ic_by_year(oos: pd.DataFrame, horizon: str, score: str = "p_cal", nw_lag: int | None = None,
               *, h: int | None = None) -> pd.DataFrame:
    """Mean daily rank IC of ``score`` against ``fwd_return`` per calendar year, and overall.

    For every session, the Spearman correlation of the score with the forward log return
    across the names of that session (:func:`tasks.models.metrics.daily_rank_ic`, sessions
    with at least ``MIN_NAMES`` names); then per year (and once over all sessions, row
    ``year == "all"``) :func:`tasks.models.metrics.summarise_ic` with Newey-West lag
    ``nw_lag`` (default ``h - 1``: forward returns of consecutive sessions overlap).

    Columns: ``year`` (text: "2010", ..., "all"), ``sessions`` (sessions with an IC),
    ``ic_mean``, ``ic_std``, ``icir`` (mean / std, per session, not annualised), ``ic_t_nw``,
    ``ic_se`` (the Newey-West standard error of the mean, ``|ic_mean / ic_t_nw|``) and
    ``ic_positive`` (share of sessions with a positive IC). Empty frame when no session has
    an IC.
    """
    return _ic_table(_rows(oos, horizon, score), _lag(nw_lag, horizon_length(horizon, h)))


def _ic_table(rows: pd.DataFrame, lag: int) -> pd.DataFrame:
    """:func:`ic_by_year` of the rows of :func:`_rows`."""
    ic = daily_rank_ic(rows["s"], rows["fwd"], rows["date"]) if len(rows) else pd.Series(dtype=float)
    if ic.empty:
        return pd.DataFrame(columns=IC_YEAR_COLUMNS)
    ic.index = pd.DatetimeIndex(ic.index)
    parts = [(str(year), grp) for year, grp in ic.groupby(ic.index.year, sort=True)]
    out = []
    for label, series in [*parts, ("all", ic)]:
        s = summarise_ic(series.to_numpy(), lag)
        t = s["ic_t_nw"]
        se = abs(s["ic_mean"] / t) if np.isfinite(t) and t != 0 else NAN
        out.append({"year": label, "sessions": int(s["n_dates"]), "ic_mean": s["ic_mean"],
                    "ic_std": s["ic_std"], "icir": s["icir"], "ic_t_nw": t, "ic_se": se,
                    "ic_positive": float((series > 0).mean())})
    return pd.DataFrame(out, columns=IC_YEAR_COLUMNS)


# --------------------------------------------------------------------------- deciles

def decile_returns(oos: pd.DataFrame, horizon: str, score: str = "p_cal", cost_bps: float = 5.0,
                   *, h: int | None = None, nw_lag: int | None = None) -> dict[str, Any]:
    """Forward returns per cross-sectional decile of ``score`` and the top-minus-bottom spread.

    Each session's names (sessions with at least 10 names) are ranked by the score into
    deciles 1 (lowest) .. 10 (highest), each a tenth of the session's names; a tie group cut
    by a decile boundary is shared between the deciles by weight (see ``_decile_weights``).
    A trade's return is the forward *simple* return ``expm1(fwd_return)`` over the horizon.

    Cost convention: ``cost_bps`` is paid per side per leg, in basis points of each leg's
    notional. The long-short spread is long the top decile and short the bottom decile,
    equal-weighted, one unit of notional per leg; a round trip opens and closes both legs,
    i.e. four sides, so the spread pays ``4 * cost_bps / 1e4`` per holding period. Every
    period is charged the full round trip (a full rebalance of both legs, whatever the
    measured turnover of :func:`top_decile_turnover`).

    Returns a dict:

    - ``"deciles"``: DataFrame, one row per decile: ``trades`` (name-sessions in the decile,
      fractional where a tie group is shared), ``mean_return`` (mean simple return per
      trade, pooled over all name-sessions of the decile) and ``mean_excess`` (the same minus
      the session's equal-weighted mean return of all its names: the cross-sectional part);
    - ``"spread"``: Series indexed by session, the net top-minus-bottom return of the
      position opened at that session's close (overlapping across sessions);
    - ``"long_short"``: dict with ``sessions``, ``ls_gross_mean``, ``ls_cost``
      (= 4 * cost_bps / 1e4), ``ls_net_mean``, ``ls_t_nw`` (Newey-West t of the net mean
      over all sessions, lag ``nw_lag``, default ``h - 1``), ``ls_sharpe`` (annualised Sharpe
      of the net spread sampled every h-th session, starting with the first, so holding
      periods do not overlap: mean / std (ddof 1) * sqrt(252 / h)) and ``periods`` (the
      number of those non-overlapping periods).
    """
    hh = horizon_length(horizon, h)
    rows, w = _decile_weights(_rows(oos, horizon, score))
    return _decile_table(rows, w, hh, _lag(nw_lag, hh), cost_bps)


def _decile_table(rows: pd.DataFrame, w: np.ndarray, hh: int, lag: int, cost_bps: float
                  ) -> dict[str, Any]:
    """:func:`decile_returns` of the rows and weights of :func:`_decile_weights`."""
    cost = 4.0 * float(cost_bps) / 1e4
    empty_ls = {"sessions": 0, "ls_gross_mean": NAN, "ls_cost": cost, "ls_net_mean": NAN,
                "ls_t_nw": NAN, "ls_sharpe": NAN, "periods": 0}
    if rows.empty:
        return {"deciles": pd.DataFrame(columns=DECILE_COLUMNS),
                "spread": pd.Series(dtype=float, name="ls_net"), "long_short": empty_ls}
    ret = np.expm1(rows["fwd"].to_numpy(dtype=float))
    excess = ret - pd.Series(ret).groupby(rows["date"].to_numpy()).transform("mean").to_numpy()
    trades = w.sum(axis=0)
    deciles = pd.DataFrame({"decile": np.arange(1, DECILES + 1), "trades": trades,
                            "mean_return": (ret @ w) / trades,
                            "mean_excess": (excess @ w) / trades})

    legs = pd.DataFrame({"date": rows["date"].to_numpy(), "w_top": w[:, -1],
                         "r_top": w[:, -1] * ret, "w_bot": w[:, 0], "r_bot": w[:, 0] * ret})
    sums = legs.groupby("date", sort=True).sum()
    gross = (sums["r_top"] / sums["w_top"] - sums["r_bot"] / sums["w_bot"]).rename("ls_gross")
    net = (gross - cost).rename("ls_net")
    sampled = net.loc[_sample_every(net.index, hh)]
    ls = {"sessions": int(len(net)), "ls_gross_mean": float(gross.mean()), "ls_cost": cost,
          "ls_net_mean": float(net.mean()), "ls_t_nw": newey_west_t(net.to_numpy(), lag),
          "ls_sharpe": _sharpe(sampled, hh), "periods": int(len(sampled))}
    return {"deciles": deciles, "spread": net, "long_short": ls}


def top_decile_turnover(oos: pd.DataFrame, horizon: str, score: str = "p_cal",
                        *, h: int | None = None) -> dict[str, Any]:
    """Turnover of the top decile per rebalance, rebalancing every h sessions.

    The sessions with at least 10 names are sampled every h-th one, starting with the first
    (t0, t0 + h, t0 + 2h, ...). At each sampled session after the first, the turnover is the
    share of that session's top decile (decile 10 as in :func:`decile_returns`) that was not
    in the top decile of the previous sampled session: sum over names of
    max(0, w_t - w_prev) / sum of w_t, where w is a name's weight in the top decile (1 or 0,
    fractional only for a tie group shared at the cut), i.e. |top_t \\ top_prev| / |top_t|
    for plain sets. A constant ranking has turnover 0, a top decile replaced entirely has 1.

    Returns a dict: ``turnover`` (the mean over rebalances, NaN with fewer than two sampled
    sessions), ``turnover_median``, ``rebalances`` (the number of rebalances measured) and
    ``top_names`` (mean size of the top decile at the sampled sessions).
    """
    hh = horizon_length(horizon, h)
    rows, w = _decile_weights(_rows(oos, horizon, score))
    return _turnover(rows, w, hh)


def _turnover(rows: pd.DataFrame, w: np.ndarray, hh: int) -> dict[str, Any]:
    """:func:`top_decile_turnover` of the rows and weights of :func:`_decile_weights`."""
    out: dict[str, Any] = {"turnover": NAN, "turnover_median": NAN, "rebalances": 0,
                           "top_names": NAN}
    if rows.empty:
        return out
    dates = _sample_every(pd.Index(rows["date"].unique()), hh)
    top = pd.Series(w[:, -1], index=pd.MultiIndex.from_arrays([rows["date"], rows["symbol"]]))
    wide = top.loc[top.index.get_level_values(0).isin(dates)].unstack(fill_value=0.0)
    wide = wide.reindex(dates, fill_value=0.0).to_numpy(dtype=float)  # sampled session x name
    size = wide.sum(axis=1)
    out["top_names"] = float(size.mean())
    if len(wide) < 2:
        return out
    entered = np.clip(wide[1:] - wide[:-1], 0.0, None).sum(axis=1)
    shares = entered / size[1:]
    out.update(turnover=float(shares.mean()), turnover_median=float(np.median(shares)),
               rebalances=int(len(shares)))
    return out


# --------------------------------------------------------------------------- importance

def _mean_ic(pred: ArrayLike, y_fwd: np.ndarray, dates: np.ndarray) -> float:
    """Mean daily rank IC of predictions against forward returns (NaN when no session has one)."""
    ic = daily_rank_ic(np.asarray(pred, dtype=float).ravel(), y_fwd, dates)
    return float(ic.mean()) if len(ic) else NAN


def permutation_importance(predict: Callable[[pd.DataFrame], np.ndarray], X_test: pd.DataFrame,
                           y_fwd: ArrayLike, dates: ArrayLike, n_repeats: int = 3, seed: int = 0,
                           features: list[str] | None = None) -> pd.DataFrame:
    """Cross-sectional permutation importance of features for ranking forward returns.

    ``predict(X) -> array`` is any fitted model's scoring function (e.g. the fold's model,
    wrapped to take a DataFrame with the columns of ``X_test``); ``y_fwd`` the forward returns
    and ``dates`` the session of each row of ``X_test``. The baseline is the mean daily rank
    IC of ``predict(X_test)`` against ``y_fwd``; a feature's importance is the baseline minus
    the mean daily rank IC after that column is shuffled *among the names of each session*
    (the feature's time-series information is kept, its cross-sectional ordering destroyed),
    averaged over ``n_repeats`` shuffles. Positive: the model's ranking relies on the feature.

    Shuffles come from ``numpy.random.default_rng([seed, crc32(feature name)])``, so a
    feature's result does not depend on which other features are listed or their order.
    ``features`` defaults to every column of ``X_test``. A column holding one value per
    session (a market-wide feature) is unchanged by the shuffle: its importance is exactly 0
    and ``predict`` is not called for it.

    Returns a DataFrame sorted by ``importance_mean`` (descending; ties by feature name):
    ``feature``, ``importance_mean``, ``importance_std`` (population std over repeats, as
    scikit-learn's), ``ic_base``, ``ic_permuted`` (mean over repeats), ``repeats``.
    """
    if n_repeats < 1:
        raise ValueError("n_repeats must be >= 1")
    y = np.asarray(y_fwd, dtype=float).ravel()
    d = np.asarray(dates).ravel()
    if not len(y) == len(d) == len(X_test):
        raise ValueError(f"X_test ({len(X_test)}), y_fwd ({len(y)}) and dates ({len(d)}) "
                         "must have the same length")
    cols = list(X_test.columns) if features is None else list(features)
    unknown = [c for c in cols if c not in X_test.columns]
    if unknown:
        raise KeyError(f"features not in X_test: {unknown}")
    base = _mean_ic(predict(X_test), y, d)
    codes = pd.factorize(d)[0]
    grouped_order = np.argsort(codes, kind="stable")  # positions grouped by session
    n = len(codes)
    rows = []
    for col in cols:
        rng = np.random.default_rng([int(seed), zlib.crc32(str(col).encode())])
        values = X_test[col].to_numpy()
        scores = np.empty(n_repeats)
        for r in range(n_repeats):
            # positions grouped by session in the same session order, random within a session
            shuffled_order = np.lexsort((rng.random(n), codes))
            shuffled = values.copy()
            shuffled[grouped_order] = values[shuffled_order]
            if pd.Series(shuffled).equals(pd.Series(values)):
                scores[r] = base  # e.g. a market-wide column, one value per session
                continue
            Xp = X_test.copy(deep=False)
            Xp[col] = shuffled
            scores[r] = _mean_ic(predict(Xp), y, d)
        drops = base - scores
        rows.append({"feature": col, "importance_mean": float(np.mean(drops)),
                     "importance_std": float(np.std(drops)), "ic_base": base,
                     "ic_permuted": float(np.mean(scores)), "repeats": int(n_repeats)})
    out = pd.DataFrame(rows, columns=["feature", "importance_mean", "importance_std", "ic_base",
                                      "ic_permuted", "repeats"])
    out = out.sort_values("feature", kind="mergesort")
    out = out.sort_values("importance_mean", ascending=False, kind="mergesort", na_position="last")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- summary, tables

def signal_parts(oos: pd.DataFrame, horizon: str, score: str = "p_cal", cost_bps: float = 5.0,
                 *, h: int | None = None, nw_lag: int | None = None) -> dict[str, Any]:
    """What :func:`signal_summary`, :func:`signal_tables` and :func:`write_signal_figures` are
    made of, each computed once from one selection and ranking of the rows: ``"h"``, ``"lag"``,
    ``"cost_bps"``, ``"years"`` (:func:`ic_by_year`), ``"deciles"`` (:func:`decile_returns`)
    and ``"turnover"`` (:func:`top_decile_turnover`)."""
    hh = horizon_length(horizon, h)
    lag = _lag(nw_lag, hh)
    rows = _rows(oos, horizon, score)
    weighted, w = _decile_weights(rows)
    return {"h": hh, "lag": lag, "cost_bps": cost_bps, "years": _ic_table(rows, lag),
            "deciles": _decile_table(weighted, w, hh, lag, cost_bps),
            "turnover": _turnover(weighted, w, hh)}


def signal_summary(oos: pd.DataFrame, horizon: str, nw_lag: int | None = None,
                   cost_bps: float = 5.0, *, score: str = "p_cal",
                   h: int | None = None, parts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Headline signal figures of one horizon for a manifest (plain floats/ints; NaN where a
    figure cannot be measured - convert to None before writing strict JSON).

    Keys: ``horizon``, ``h``, ``score``, ``nw_lag``, ``cost_bps``, ``sessions`` (with an IC),
    ``ic_mean``, ``ic_t_nw``, ``icir``, ``ic_positive``, ``ls_gross_mean``, ``ls_net_mean``,
    ``ls_t_nw``, ``ls_sharpe`` (see :func:`decile_returns`), ``top_decile_turnover``,
    ``top10_mean_return`` / ``bottom10_mean_return`` (decile means per trade).
    ``parts``: :func:`signal_parts` of the same arguments, when already computed.
    """
    if parts is None:
        parts = signal_parts(oos, horizon, score, cost_bps, h=h, nw_lag=nw_lag)
    hh, lag = parts["h"], parts["lag"]
    years = parts["years"]
    allrow = years.loc[years["year"] == "all"]
    dec = parts["deciles"]
    ls, table = dec["long_short"], dec["deciles"].set_index("decile")
    turn = parts["turnover"]

    def first(col: str) -> float:
        return float(allrow[col].iloc[0]) if len(allrow) else NAN

    def dmean(k: int) -> float:
        return float(table.at[k, "mean_return"]) if k in table.index else NAN

    return {"horizon": horizon, "h": hh, "score": score, "nw_lag": lag, "cost_bps": float(cost_bps),
            "sessions": int(allrow["sessions"].iloc[0]) if len(allrow) else 0,
            "ic_mean": first("ic_mean"), "ic_t_nw": first("ic_t_nw"), "icir": first("icir"),
            "ic_positive": first("ic_positive"),
            "ls_gross_mean": ls["ls_gross_mean"], "ls_net_mean": ls["ls_net_mean"],
            "ls_t_nw": ls["ls_t_nw"], "ls_sharpe": ls["ls_sharpe"],
            "top_decile_turnover": turn["turnover"],
            "top10_mean_return": dmean(DECILES), "bottom10_mean_return": dmean(1)}


def signal_tables(oos: pd.DataFrame, horizon: str, nw_lag: int | None = None,
                  cost_bps: float = 5.0, *, score: str = "p_cal",
                  h: int | None = None, parts: dict[str, Any] | None = None
                  ) -> dict[str, pd.DataFrame]:
    """The report's tables of one horizon, keyed for :func:`signal_report_html`:
    ``"IC by year (<horizon>)"``, ``"Decile returns (<horizon>)"`` and
    ``"Long-short and turnover (<horizon>)"`` (one row: the long-short dict of
    :func:`decile_returns` plus the top-decile turnover). ``parts``: :func:`signal_parts` of
    the same arguments, when already computed."""
    if parts is None:
        parts = signal_parts(oos, horizon, score, cost_bps, h=h, nw_lag=nw_lag)
    hh = parts["h"]
    dec, turn = parts["deciles"], parts["turnover"]
    ls = pd.DataFrame([{"h": hh, "cost_bps": float(cost_bps), **dec["long_short"],
                        "turnover": turn["turnover"], "rebalances": turn["rebalances"],
                        "top_names": turn["top_names"]}])
    return {f"IC by year ({horizon})": parts["years"],
            f"Decile returns ({horizon})": dec["deciles"],
            f"Long-short and turnover ({horizon})": ls}


# --------------------------------------------------------------------------- HTML, figures

def _percent(v: Any) -> str:
    """A fraction as a percentage with 2 decimals ('' for NaN)."""
    return "" if v is None or not np.isfinite(float(v)) else f"{100.0 * float(v):.2f}%"


def _number(v: Any) -> str:
    """A float with 4 decimals, an int as is ('' for NaN)."""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.4f}"
    return str(v)


def _count(v: Any) -> str:
    """A possibly fractional count with 1 decimal ('' for NaN)."""
    return "" if v is None or not np.isfinite(float(v)) else f"{float(v):.1f}"


def _table_html(frame: pd.DataFrame) -> str:
    """One table, escaped; PERCENT_COLUMNS as percentages (2 decimals), COUNT_COLUMNS with 1
    decimal, other floats with 4."""
    def pick(col: Any) -> Callable[[Any], str]:
        if str(col) in PERCENT_COLUMNS:
            return _percent
        return _count if str(col) in COUNT_COLUMNS else _number

    formatters = {c: pick(c) for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}
    return frame.to_html(escape=True, index=False, formatters=formatters, na_rep="",
                         border=0, classes="signal-table")


def signal_report_html(tables: Mapping[str, pd.DataFrame], figures: Mapping[str, Path]) -> str:
    """An HTML fragment (a ``<section>``, no ``<html>``/``<head>``) for embedding in a report.

    Each table becomes an escaped heading and ``DataFrame.to_html(escape=True)`` (cell text
    is escaped); columns in ``PERCENT_COLUMNS`` are written as percentages with 2 decimals,
    ``COUNT_COLUMNS`` (fractional counts) with 1 decimal, other floats with 4. Each figure
    (a PNG path; a missing path or None is skipped) is embedded as a base64
    ``data:image/png`` URI in a ``<figure>`` with its escaped name as caption and alt text.
    Same inputs give the same string.
    """
    parts = ['<section class="signal-report">']
    for name, frame in tables.items():
        parts.append(f"<h3>{html.escape(str(name))}</h3>")
        parts.append(_table_html(frame))
    for name, path in figures.items():
        if path is None or not Path(path).is_file():
            continue
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        label = html.escape(str(name), quote=True)
        parts.append(f'<figure><img alt="{label}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{label}</figcaption></figure>")
    parts.append("</section>")
    return "\n".join(parts) + "\n"


def _new_figure(size: tuple[float, float]):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    """Write a figure as PNG with reproducible bytes (no Software metadata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return path


def write_signal_figures(oos: pd.DataFrame, horizon: str, folder: Path, *,
                         score: str = "p_cal", h: int | None = None,
                         parts: dict[str, Any] | None = None) -> dict[str, Path]:
    """Two PNGs of one horizon in ``folder`` (created), Agg backend, reproducible bytes:

    - ``"IC by year (<horizon>)"`` -> ``signal_ic_by_year_<horizon>.png``: mean daily rank IC
      per year (and "all", darker) with +/- 2 Newey-West standard errors (``ic_se``, i.e.
      ``|ic_mean / ic_t_nw|``, lag h - 1);
    - ``"Decile returns (<horizon>)"`` -> ``signal_deciles_<horizon>.png``: mean forward
      simple return per trade by score decile, in %.

    A figure with nothing to draw is not written (and not in the dict). ``parts``:
    :func:`signal_parts` of the same rows, score and h (lag h - 1), when already computed.
    """
    folder = Path(folder)
    out: dict[str, Path] = {}
    years = parts["years"] if parts is not None else ic_by_year(oos, horizon, score, h=h)
    if len(years):
        fig = _new_figure((6.4, 3.6))
        ax = fig.add_subplot()
        x = np.arange(len(years))
        colors = ["0.25" if y == "all" else "tab:blue" for y in years["year"]]
        err = 2.0 * years["ic_se"].to_numpy(dtype=float)
        ax.bar(x, years["ic_mean"].to_numpy(dtype=float), color=colors,
               yerr=np.where(np.isfinite(err), err, 0.0), capsize=3, ecolor="0.4")
        ax.axhline(0.0, color="0.3", lw=0.6)
        ax.set_xticks(x, list(years["year"]))
        ax.set_ylabel("mean daily rank IC")
        ax.set_title(f"Rank IC by year, {horizon} ({score}), bars: \u00b12 NW s.e.")
        fig.tight_layout()
        out[f"IC by year ({horizon})"] = _save(fig, folder / f"signal_ic_by_year_{horizon}.png")
    deciles = (parts["deciles"] if parts is not None
               else decile_returns(oos, horizon, score, h=h))["deciles"]
    if deciles["trades"].sum() > 0:
        fig = _new_figure((6.4, 3.6))
        ax = fig.add_subplot()
        vals = deciles["mean_return"].to_numpy(dtype=float) * 100.0
        ax.bar(deciles["decile"].to_numpy(), np.nan_to_num(vals), color="tab:green")
        ax.axhline(0.0, color="0.3", lw=0.6)
        ax.set_xticks(range(1, DECILES + 1))
        ax.set_xlabel(f"{score} decile within the session (10 = highest)")
        ax.set_ylabel("mean forward return per trade, %")
        ax.set_title(f"Forward return by decile, {horizon}")
        fig.tight_layout()
        out[f"Decile returns ({horizon})"] = _save(fig, folder / f"signal_deciles_{horizon}.png")
    return out


__all__ = ["COUNT_COLUMNS", "DECILES", "HORIZON_SESSIONS", "MIN_NAMES", "PERCENT_COLUMNS", "decile_returns",
           "horizon_length", "ic_by_year", "permutation_importance", "signal_parts",
           "signal_report_html", "signal_summary", "signal_tables", "top_decile_turnover",
           "write_signal_figures"]
