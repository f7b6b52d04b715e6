"""Pure out-of-sample metrics: calibration, lift, rank IC and grouped metric tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.integrate import trapezoid
from sklearn.metrics import roc_auc_score

IC_KEYS = ("ic_mean", "ic_std", "icir", "ic_t_nw", "n_dates")
PROBABILITY_KEYS = ("n", "base_rate", "auc", "auc_se", "brier", "brier_base", "brier_skill",
                    "log_loss", "ece", "lift_at_10")
METRIC_KEYS = (*PROBABILITY_KEYS, "top_decile_hit", *IC_KEYS)
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


def _bin_points(bins: np.ndarray, p: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Mean p, mean label and count per bin, in increasing bin."""
    frame = pd.DataFrame({"bin": bins, "p": p, "y": y})
    grouped = frame.groupby("bin", sort=True)
    out = pd.DataFrame({"p_mean": grouped["p"].mean(), "y_mean": grouped["y"].mean(), "n": grouped.size()})
    return out.reset_index(drop=True)


def calibration_curve_points(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Equal-mass reliability points: mean p, mean label and count per bin, in increasing p."""
    ya, pa = _pairs(y, p)
    return _bin_points(_equal_mass_bins(pa, n_bins), pa, ya)


def ece_equal_mass(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over equal-mass bins: sum of (bin share) * |mean y - mean p|."""
    return _ece(calibration_curve_points(y, p, n_bins))


def _ece(pts: pd.DataFrame) -> float:
    """The expected calibration error of reliability points (NaN without a row)."""
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


def daily_top_hit(y: ArrayLike, p: ArrayLike, dates: ArrayLike, frac: float = 0.10) -> pd.Series:
    """Mean label of each date's top ``frac`` by p (at least one name; ties shared), indexed by
    date (rows with a NaN left out)."""
    frame = pd.DataFrame({"date": np.asarray(dates).ravel(), "y": _arr(y), "p": _arr(p)}).dropna()
    if frame.empty:
        return pd.Series(dtype=float)
    grouped = frame.groupby("date", sort=True)
    first = grouped["p"].rank(ascending=False, method="min")
    tied = grouped["p"].rank(ascending=False, method="max") - first + 1.0
    k = np.maximum(1.0, np.floor(grouped["p"].transform("size") * frac + 1e-9))
    weight = np.clip(k - first + 1.0, 0.0, tied) / tied  # share of a tie group that falls inside the top k
    parts = pd.DataFrame({"date": frame["date"], "w": weight, "wy": weight * frame["y"]})
    sums = parts.groupby("date", sort=True).sum()
    return sums["wy"] / sums["w"]


def top_decile_hit_rate(y: ArrayLike, p: ArrayLike, dates: ArrayLike, frac: float = 0.10) -> float:
    """Mean label of each date's top ``frac`` by p (at least one name; ties shared), averaged
    over dates."""
    hits = daily_top_hit(y, p, dates, frac)
    return float(hits.mean()) if len(hits) else NAN


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


def _auc_sorted(ys: np.ndarray, ps: np.ndarray) -> float:
    """:func:`_auc` of 0/1 labels ``ys`` and scores ``ps`` sorted ascending, without sorting
    again: the ROC curve of :func:`sklearn.metrics.roc_curve` (cumulative positives and
    negatives at each distinct score, from the highest down, collinear points dropped, from
    (0, 0)) and its trapezoidal area as :func:`sklearn.metrics.auc` takes it, step by step;
    labels other than 0/1 are scored by :func:`_auc` itself."""
    if not np.all((ys == 0.0) | (ys == 1.0)):
        return _auc(ys, ps)
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    tps = np.cumsum(np.add.reduceat(ys, starts)[::-1], dtype=np.float64)
    last = np.cumsum(np.diff(np.r_[starts, len(ps)])[::-1]) - 1   # each score's last row
    fps = 1 + last.astype(np.float64) - tps
    if tps[-1] <= 0 or fps[-1] <= 0:
        return NAN   # one class only
    if len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[keep], tps[keep]
    fpr = np.r_[0.0, fps] / fps[-1]
    tpr = np.r_[0.0, tps] / tps[-1]
    return float(trapezoid(tpr, fpr))


def _sorted_probability_metrics(y: np.ndarray, p: np.ndarray, order: np.ndarray,
                                only: frozenset[str] | None = None) -> dict[str, float]:
    """:func:`_probability_metrics` of (y, p) given ``order``, a stable argsort of p: AUC, lift
    and the ECE's bins depend only on the ranking of p and are read off the sorted values;
    means that depend on the order of the rows are taken in the rows' order."""
    want = frozenset(PROBABILITY_KEYS) if only is None else only
    n = len(y)
    ys, ps = y[order], p[order]
    out: dict[str, float] = {"n": n}
    base = float(y.mean())
    out["base_rate"] = base
    if want & {"auc", "auc_se"}:
        auc = _auc_sorted(ys, ps)
        n_pos = int(y.sum())
        out.update(auc=auc, auc_se=hanley_mcneil_se(auc, n_pos, n - n_pos))
    if want & {"brier", "brier_base", "brier_skill"}:
        brier = float(np.mean((p - y) ** 2))
        brier_base = base * (1.0 - base)
        out.update(brier=brier, brier_base=brier_base, brier_skill=1.0 - _ratio(brier, brier_base))
    if "log_loss" in want:
        out["log_loss"] = _log_loss(y, p)
    if "ece" in want:
        starts = np.r_[True, ps[1:] != ps[:-1]]
        first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))  # rank "min" - 1
        bins = np.empty(n, dtype=first.dtype)
        bins[order] = first * min(10, n) // n
        out["ece"] = _ece(_bin_points(bins, p, y))
    if "lift_at_10" in want:
        out["lift_at_10"] = lift_at(ys[::-1], ps[::-1], 0.10)
    return {k: (out.get(k, NAN) if k in want or k == "n" else NAN) for k in PROBABILITY_KEYS}


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


class OOSMeasures:
    """The metric tables of one out-of-sample frame and of any subset of its sessions, equal to
    :func:`metrics_table` on the subset's rows, with every per-session figure computed once.

    A daily rank IC, a date's top-decile hit rate or a date's mean depends on that date's rows
    only, so each is computed once over the whole frame (per horizon, regime, score and the
    columns a row must have) and a subset takes the figures of its dates; what pools rows
    across dates (AUC, Brier, log loss, ECE, lift) is measured on the subset's rows in the
    frame's order, as :func:`classification_metrics` does. A subset (``sessions``) maps each
    horizon kept to a boolean per date of :attr:`dates`; rows of the other horizons are left out.
    The skill gate reads its figures from here too (:func:`tasks.models.skill.skill_record`).
    """

    def __init__(self, oos: pd.DataFrame, horizon_lags: dict[str, int] | None = None):
        self.oos = oos
        self.columns = oos.columns
        self.lags = dict(horizon_lags or {})
        codes, uniques = pd.factorize(oos["date"], sort=True)
        self.date_code = codes                  # -1: a row without a date
        self.dates = pd.DatetimeIndex(uniques)  # sorted
        self._codes: dict[str, tuple[np.ndarray, list]] = {}
        self._floats: dict[str, np.ndarray] = {}
        self._notna: dict[str, np.ndarray] = {}
        self._rows: dict[tuple, np.ndarray] = {}
        self._daily: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._tables: dict[tuple, pd.DataFrame] = {}
        # figures other modules derive from this frame, kept by them under their own keys
        self.memo: dict[tuple, object] = {}

    # ---- columns and rows

    def codes(self, col: str) -> tuple[np.ndarray, list]:
        """Group codes of a column (-1: NaN) and its values in groupby order."""
        if col not in self._codes:
            codes, uniques = pd.factorize(self.oos[col], sort=True)
            self._codes[col] = (codes, list(uniques))
        return self._codes[col]

    def values(self, col: str) -> np.ndarray:
        """A column as floats."""
        if col not in self._floats:
            self._floats[col] = self.oos[col].to_numpy(dtype=float)
        return self._floats[col]

    def notna(self, col: str) -> np.ndarray:
        """Where a column has a value."""
        if col not in self._notna:
            self._notna[col] = self.oos[col].notna().to_numpy()
        return self._notna[col]

    def _code_of(self, col: str, value) -> int:
        found = [i for i, v in enumerate(self.codes(col)[1]) if v == value]
        return found[0] if found else -2

    def _all_rows(self, horizon: str, regime: str | None, need: tuple[str, ...]) -> np.ndarray:
        """Positions of the rows of a horizon (and regime) with a value in every column of
        ``need``, in the frame's order."""
        key = (horizon, regime, need)
        if key not in self._rows:
            mask = self.codes("horizon")[0] == self._code_of("horizon", horizon)
            if regime is not None:
                mask &= self.codes("vol_regime")[0] == self._code_of("vol_regime", regime)
            for col in need:
                mask &= self.notna(col)
            self._rows[key] = np.flatnonzero(mask)
        return self._rows[key]

    def _order(self, horizon: str, regime: str | None, need: tuple[str, ...], col: str
               ) -> np.ndarray:
        """A stable argsort by ``col`` of the rows of :meth:`_all_rows`."""
        key = ("order", horizon, regime, need, col)
        if key not in self._rows:
            pos = self._all_rows(horizon, regime, need)
            self._rows[key] = np.argsort(self.values(col)[pos], kind="stable")
        return self._rows[key]

    def _kept(self, pos: np.ndarray, dates: np.ndarray | None) -> np.ndarray:
        """The positions whose date is kept (all with ``dates`` None)."""
        if dates is None:
            return pos
        return pos[np.append(dates, False)[self.date_code[pos]]]

    def rows(self, horizon: str, need: tuple[str, ...] = (), sessions: dict | None = None,
             regime: str | None = None) -> np.ndarray:
        """Positions of a horizon's rows (of ``regime`` when given) with a value in every column
        of ``need``, whose date ``sessions`` keeps (every date when None)."""
        if sessions is not None and horizon not in sessions:
            return np.zeros(0, dtype=np.intp)
        pos = self._all_rows(horizon, regime, tuple(sorted(set(need))))
        return self._kept(pos, None if sessions is None else sessions[horizon])

    # ---- per-date figures

    def daily(self, kind: str, horizon: str, need: tuple[str, ...], cols: tuple[str, ...],
              sessions: dict | None = None, regime: str | None = None) -> np.ndarray:
        """Per-date figures of the rows of :meth:`rows`, in date order, for the kept dates:
        ``"ic"`` the daily rank IC of cols[0] against cols[1] (:func:`daily_rank_ic`, dates
        without one left out), ``"hit"`` the top-decile mean of cols[0] ranked by cols[1]
        (:func:`daily_top_hit`), ``"mean"`` the mean of cols[0]."""
        if sessions is not None and horizon not in sessions:
            return np.zeros(0)
        need = tuple(sorted(set(need)))
        key = (kind, horizon, regime, need, cols)
        if key not in self._daily:
            pos = self._all_rows(horizon, regime, need)
            dates = self.oos["date"].to_numpy()[pos]
            if kind == "ic":
                per = daily_rank_ic(self.values(cols[0])[pos], self.values(cols[1])[pos], dates)
            elif kind == "hit":
                per = daily_top_hit(self.values(cols[0])[pos], self.values(cols[1])[pos], dates)
            elif kind == "mean":
                per = pd.Series(self.values(cols[0])[pos]).groupby(dates, sort=True).mean()
            else:
                raise ValueError(f"unknown per-date figure {kind!r}")
            at = self.dates.get_indexer(pd.DatetimeIndex(per.index))
            vals, present = np.full(len(self.dates), NAN), np.zeros(len(self.dates), dtype=bool)
            vals[at], present[at] = per.to_numpy(dtype=float), True
            self._daily[key] = (vals, present)
        vals, present = self._daily[key]
        return vals[present if sessions is None else present & sessions[horizon]]

    # ---- metrics

    def metrics(self, horizon: str, p_col: str = "p_cal", sessions: dict | None = None,
                regime: str | None = None, need: tuple[str, ...] = (),
                only: frozenset[str] | None = None, lag: int | None = None) -> dict[str, float]:
        """:func:`classification_metrics` of the rows of :meth:`rows` (``only``: the keys
        measured besides ``n``, the others NaN; ``lag``: the Newey-West lag, else the
        horizon's in :attr:`lags`)."""
        need = ("label", p_col, *need)
        if sessions is not None and horizon not in sessions:
            return {**dict.fromkeys(METRIC_KEYS, NAN), "n": 0, "n_dates": 0}
        base = self._all_rows(horizon, regime, tuple(sorted(set(need))))
        order = self._order(horizon, regime, tuple(sorted(set(need))), p_col)
        if sessions is None:
            pos = base
        else:
            kept = np.append(sessions[horizon], False)[self.date_code[base]]
            pos = base[kept]
            order = (np.cumsum(kept) - 1)[order[kept[order]]]
        if len(pos) == 0:
            return {**dict.fromkeys(METRIC_KEYS, NAN), "n": 0, "n_dates": 0}
        y, p = self.values("label")[pos], self.values(p_col)[pos]
        out = _sorted_probability_metrics(y, p, order, only)
        if only is None or "top_decile_hit" in only:
            hits = self.daily("hit", horizon, need, ("label", p_col), sessions, regime)
            out["top_decile_hit"] = float(pd.Series(hits).mean()) if len(hits) else NAN
        if only is None or only & set(IC_KEYS):
            ic = self.daily("ic", horizon, need, (p_col, "fwd_return"), sessions, regime)
            out.update(summarise_ic(ic, self.lags.get(horizon, 0) if lag is None else lag))
        return {k: out.get(k, NAN) for k in METRIC_KEYS}

    def table(self, by: list[str] | None = None, p_col: str = "p_cal", *,
              sessions: dict | None = None, need: tuple[str, ...] = (),
              only: frozenset[str] | None = None,
              horizon_lags: dict[str, int] | None = None) -> pd.DataFrame:
        """:func:`metrics_table` of the rows with a value in every column of ``need`` whose date
        ``sessions`` keeps (``only``: the metrics measured, the others NaN; ``horizon_lags``:
        the Newey-West lags, else :attr:`lags`)."""
        lags = self.lags if horizon_lags is None else horizon_lags
        keys = _group_keys(by)
        cache_key = None
        if sessions is None:
            cache_key = (tuple(keys), p_col, tuple(sorted(set(need))), only,
                         tuple(sorted(lags.items())))
            if cache_key in self._tables:
                return self._tables[cache_key].copy()
        if set(keys) <= {"horizon", "vol_regime"}:
            groups = self._coded_groups(keys, need, sessions)
        elif sessions is None:
            groups = self._frame_groups(keys, need)
        else:
            raise ValueError(f"a subset of sessions is grouped by horizon and regime only, "
                             f"not {by}")
        rows = []
        for labels, regime, dates, pos in groups:
            horizon = labels["horizon"]
            if pos is not None:   # not a union of whole dates: measured directly
                found = classification_metrics(self.oos.iloc[pos], p_col, lags.get(horizon, 0))
                if only is not None:
                    found = {k: (v if k in only or k == "n" else NAN) for k, v in found.items()}
            else:
                found = self.metrics(horizon, p_col, dates, regime, need, only,
                                     lags.get(horizon, 0))
            rows.append({**labels, **found})
        table = pd.DataFrame(rows, columns=[*keys, *METRIC_KEYS])
        if cache_key is not None:
            self._tables[cache_key] = table.copy()
        return table

    def _coded_groups(self, keys: list[str], need: tuple[str, ...], sessions: dict | None):
        """(labels, regime, sessions, None) per (horizon[, regime]) group with a row, in
        groupby order."""
        h_values = self.codes("horizon")[1]
        with_regime = "vol_regime" in keys
        r_codes, r_values = self.codes("vol_regime") if with_regime else (None, [None])
        need = tuple(sorted(set(need)))
        present = set()
        for h, name in enumerate(h_values):
            if sessions is not None and name not in sessions:
                continue
            pos = self.rows(name, need, sessions)
            if not with_regime:
                if len(pos):
                    present.add((h, 0))
                continue
            found = np.bincount(r_codes[pos] + 1, minlength=len(r_values) + 1)[1:]
            present.update((h, int(r)) for r in np.flatnonzero(found))
        for h, r in sorted(present):
            labels = {"horizon": h_values[h]}
            if with_regime:
                labels["vol_regime"] = r_values[r]
            yield ({k: labels[k] for k in keys}, r_values[r] if with_regime else None,
                   sessions, None)

    def _frame_groups(self, keys: list[str], need: tuple[str, ...]):
        """(labels, regime, sessions of the group, None) per group of :func:`metrics_table`, or
        (labels, None, None, positions) for a group that is not every row of its dates."""
        frame = self.oos[[k for k in keys if k in self.columns]]
        if "year" in keys and "year" not in self.columns:
            frame = frame.assign(year=self.oos["date"].dt.year)
        frame = frame.set_axis(pd.RangeIndex(len(frame)))
        if need:
            mask = np.ones(len(frame), dtype=bool)
            for col in need:
                mask &= self.notna(col)
            frame = frame.loc[mask]
        for key, grp in frame.groupby(keys, sort=True, observed=True):
            labels = dict(zip(keys, key, strict=True))
            regime = labels.get("vol_regime")
            pos = grp.index.to_numpy()
            dates = np.zeros(len(self.dates) + 1, dtype=bool)
            dates[self.date_code[pos]] = True
            base = self._all_rows(labels["horizon"], regime, tuple(sorted(set(need))))
            if dates[-1] or int(dates[self.date_code[base]].sum()) != len(pos):
                yield labels, None, None, pos
            else:
                yield labels, regime, {labels["horizon"]: dates[:-1]}, None
