"""Pure out-of-sample metrics: calibration, lift, rank IC and grouped metric tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

IC_KEYS = ("ic_mean", "ic_std", "icir", "ic_t_nw", "n_dates")
METRIC_KEYS = ("n", "base_rate", "auc", "auc_se", "brier", "brier_base", "brier_skill", "log_loss", "ece",
               "lift_at_10", "top_decile_hit", *IC_KEYS)
LOG_EPS = 1e-6
MIN_NAMES = 5
NAN = float("nan")


def _arr(x: ArrayLike) -> np.ndarray:
    """Flatten an array-like into a float vector."""
    return np.asarray(x, dtype=float).ravel()


def _pairs(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities with any pair containing NaN dropped."""
    ya, pa = _arr(y), _arr(p)
    keep = ~(np.isnan(ya) | np.isnan(pa))
    return ya[keep], pa[keep]


def _ratio(a: float, b: float) -> float:
    """a / b, or NaN when b is zero or not finite."""
    return float(a / b) if np.isfinite(b) and b != 0 else NAN


def _top_k(n: int, frac: float) -> int:
    """Size of the top ``frac`` of ``n`` items, at least one."""
    return max(1, int(np.floor(n * frac + 1e-9)))


def _equal_mass_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bin per element from its rank in p; tied values share the bin of their lowest rank."""
    n = len(p)
    if n == 0:
        return np.zeros(0, dtype=int)
    first_rank = pd.Series(p).rank(method="min").to_numpy(dtype=int) - 1
    return first_rank * min(n_bins, n) // n


def _expected_top_hits(y: np.ndarray, p: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Label sum of the top k by p for each k, with a tie group cut at k counted at its mean label."""
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    is_start = np.r_[True, ps[1:] != ps[:-1]]
    starts = np.flatnonzero(is_start)
    sizes = np.diff(np.r_[starts, len(ps)])
    hits = np.add.reduceat(ys, starts)
    before = np.r_[0.0, np.cumsum(hits)[:-1]]
    g = (np.cumsum(is_start) - 1)[ks - 1]
    return before[g] + (ks - starts[g]) * hits[g] / sizes[g]


def calibration_curve_points(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Equal-mass reliability points: mean p, mean label and count per bin, in increasing p."""
    ya, pa = _pairs(y, p)
    frame = pd.DataFrame({"bin": _equal_mass_bins(pa, n_bins), "p": pa, "y": ya})
    grouped = frame.groupby("bin", sort=True)
    out = pd.DataFrame({"p_mean": grouped["p"].mean(), "y_mean": grouped["y"].mean(), "n": grouped.size()})
    return out.reset_index(drop=True)


def ece_equal_mass(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over equal-mass bins: sum of (bin share) * |mean y - mean p|."""
    pts = calibration_curve_points(y, p, n_bins)
    total = pts["n"].sum()
    if total == 0:
        return NAN
    return float((pts["n"] / total * (pts["y_mean"] - pts["p_mean"]).abs()).sum())


def lift_at(y: ArrayLike, p: ArrayLike, frac: float = 0.10) -> float:
    """Base rate in the top ``frac`` by p (a tie group at the cut counts at its mean) over the base rate."""
    ya, pa = _pairs(y, p)
    if len(ya) == 0:
        return NAN
    k = _top_k(len(ya), frac)
    return _ratio(_expected_top_hits(ya, pa, np.array([k]))[0] / k, ya.mean())


def lift_curve_points(y: ArrayLike, p: ArrayLike, n_points: int = 20) -> pd.DataFrame:
    """Cumulative lift when selecting the top fraction by p, at ``n_points`` evenly spaced fractions."""
    ya, pa = _pairs(y, p)
    if len(ya) == 0:
        return pd.DataFrame({"frac": [], "n_selected": [], "lift": []})
    fracs = np.arange(1, n_points + 1) / n_points
    ks = np.array([_top_k(len(ya), f) for f in fracs])
    base = ya.mean()
    lift = _expected_top_hits(ya, pa, ks) / ks / base if base > 0 else np.full(len(ks), NAN)
    return pd.DataFrame({"frac": fracs, "n_selected": ks, "lift": lift})


def newey_west_t(x: ArrayLike, lag: int = 0) -> float:
    """t-stat of the mean with a Bartlett-kernel Newey-West standard error; lag 0 gives the classic t."""
    xa = _arr(x)
    xa = xa[np.isfinite(xa)]
    t = len(xa)
    if t < 2:
        return NAN
    e = xa - xa.mean()
    lrv = float(e @ e)
    for k in range(1, min(lag, t - 1) + 1):
        lrv += 2.0 * (1.0 - k / (lag + 1.0)) * float(e[k:] @ e[:-k])
    lrv /= t - 1  # small-sample scaling so that lag 0 matches mean / (std(ddof=1) / sqrt(T))
    return float(xa.mean() / np.sqrt(lrv / t)) if lrv > 0 else NAN


def daily_rank_ic(p: ArrayLike, fwd: ArrayLike, dates: ArrayLike, min_names: int = MIN_NAMES) -> pd.Series:
    """Spearman correlation of p and fwd per date (dates with >= ``min_names`` names), indexed by date."""
    frame = pd.DataFrame({"date": np.asarray(dates).ravel(), "p": _arr(p), "f": _arr(fwd)}).dropna()
    frame = frame.loc[frame.groupby("date")["p"].transform("size") >= min_names]
    grouped = frame.groupby("date", sort=True)
    rx, ry = grouped["p"].rank(), grouped["f"].rank()
    parts = pd.DataFrame({"date": frame["date"], "n": 1.0, "x": rx, "y": ry,
                          "xx": rx * rx, "yy": ry * ry, "xy": rx * ry})
    s = parts.groupby("date", sort=True).sum()
    cov = s["xy"] - s["x"] * s["y"] / s["n"]
    den = (s["xx"] - s["x"] ** 2 / s["n"]) * (s["yy"] - s["y"] ** 2 / s["n"])
    ic = cov / np.sqrt(den.where(den > 1e-9))
    return ic.dropna().rename("ic")


def summarise_ic(ic: ArrayLike, nw_lag: int = 0) -> dict[str, float]:
    """Mean, std, ICIR (mean/std, not annualised), Newey-West t-stat and count of a daily IC series."""
    xa = _arr(ic)
    xa = xa[np.isfinite(xa)]
    mean = float(xa.mean()) if len(xa) else NAN
    std = float(xa.std(ddof=1)) if len(xa) > 1 else NAN
    return {"ic_mean": mean, "ic_std": std, "icir": _ratio(mean, std),
            "ic_t_nw": newey_west_t(xa, nw_lag), "n_dates": len(xa)}


def rank_ic(p: ArrayLike, fwd: ArrayLike, dates: ArrayLike, nw_lag: int = 0,
            min_names: int = MIN_NAMES) -> dict[str, float]:
    """Summary of the per-date Spearman IC between p and forward returns."""
    return summarise_ic(daily_rank_ic(p, fwd, dates, min_names).to_numpy(), nw_lag)


def top_decile_hit_rate(y: ArrayLike, p: ArrayLike, dates: ArrayLike, frac: float = 0.10) -> float:
    """Mean label of each date's top ``frac`` by p (at least one name; ties shared), averaged over dates."""
    frame = pd.DataFrame({"date": np.asarray(dates).ravel(), "y": _arr(y), "p": _arr(p)}).dropna()
    if frame.empty:
        return NAN
    grouped = frame.groupby("date", sort=True)
    first = grouped["p"].rank(ascending=False, method="min")
    tied = grouped["p"].rank(ascending=False, method="max") - first + 1.0
    k = np.maximum(1.0, np.floor(grouped["p"].transform("size") * frac + 1e-9))
    weight = np.clip(k - first + 1.0, 0.0, tied) / tied  # share of a tie group that falls inside the top k
    parts = pd.DataFrame({"date": frame["date"], "w": weight, "wy": weight * frame["y"]})
    sums = parts.groupby("date", sort=True).sum()
    return float((sums["wy"] / sums["w"]).mean())


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley-McNeil (1982) standard error of an AUC from the numbers of positives and negatives."""
    if n_pos < 1 or n_neg < 1 or not np.isfinite(auc):
        return NAN
    q1, q2 = auc / (2.0 - auc), 2.0 * auc**2 / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present."""
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else NAN


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Binary cross-entropy with p clipped to [LOG_EPS, 1 - LOG_EPS]."""
    pc = np.clip(p, LOG_EPS, 1.0 - LOG_EPS)
    return float(-np.mean(y * np.log(pc) + (1.0 - y) * np.log(1.0 - pc)))


def _probability_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Discrimination, scoring-rule and calibration metrics of p against binary labels."""
    base = float(y.mean())
    auc = _auc(y, p)
    n_pos = int(y.sum())
    brier = float(np.mean((p - y) ** 2))
    brier_base = base * (1.0 - base)
    auc_se = hanley_mcneil_se(auc, n_pos, len(y) - n_pos)
    return {"n": len(y), "base_rate": base, "auc": auc, "auc_se": auc_se,
            "brier": brier, "brier_base": brier_base, "brier_skill": 1.0 - _ratio(brier, brier_base),
            "log_loss": _log_loss(y, p), "ece": ece_equal_mass(y, p), "lift_at_10": lift_at(y, p, 0.10)}


def classification_metrics(df: pd.DataFrame, p_col: str = "p_cal", nw_lag: int = 0) -> dict[str, float]:
    """All metrics of ``df[p_col]`` on rows with a label and a probability (keys: METRIC_KEYS)."""
    d = df.loc[df["label"].notna() & df[p_col].notna()]
    if d.empty:
        return {**dict.fromkeys(METRIC_KEYS, NAN), "n": 0, "n_dates": 0}
    y, p = d["label"].to_numpy(dtype=float), d[p_col].to_numpy(dtype=float)
    out = _probability_metrics(y, p)
    out["top_decile_hit"] = top_decile_hit_rate(y, p, d["date"])
    out.update(rank_ic(p, d["fwd_return"], d["date"], nw_lag=nw_lag))
    return {k: out[k] for k in METRIC_KEYS}


def _group_keys(by: list[str] | None) -> list[str]:
    """Grouping columns: horizon first, then ``by`` without duplicates."""
    return ["horizon", *[c for c in dict.fromkeys(by or []) if c != "horizon"]]


def metrics_table(oos: pd.DataFrame, by: list[str] | None = None, p_col: str = "p_cal",
                  horizon_lags: dict[str, int] | None = None) -> pd.DataFrame:
    """One row of METRIC_KEYS per (horizon, *by) group; "year" is derived from date when not a column."""
    keys = _group_keys(by)
    frame = oos
    if "year" in keys and "year" not in oos.columns:
        frame = oos.assign(year=oos["date"].dt.year)
    lags = horizon_lags or {}
    rows = []
    for key, grp in frame.groupby(keys, sort=True, observed=True):
        labels = dict(zip(keys, key, strict=True))
        rows.append({**labels, **classification_metrics(grp, p_col, lags.get(labels["horizon"], 0))})
    return pd.DataFrame(rows, columns=[*keys, *METRIC_KEYS])
