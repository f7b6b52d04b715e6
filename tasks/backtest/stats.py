"""Sharpe statistics that account for the length and shape of a track record and for how many
configurations were tried before it was picked.

* Probabilistic Sharpe ratio (Bailey & López de Prado, 2012): the probability that the true
  Sharpe ratio exceeds a benchmark SR*, given the observed per-period Sharpe ratio, the number
  of observations and the skewness and (non-excess) kurtosis of the returns::

      PSR(SR*) = Φ[(SR − SR*)·√(T − 1) / √(1 − γ₃·SR + (γ₄ − 1)/4·SR²)]

* Deflated Sharpe ratio (Bailey, Borwein, López de Prado & Zhu, 2014): PSR against the
  expected maximum Sharpe ratio of N trials with no skill whose Sharpe ratios vary with
  variance V::

      SR₀ = √V·[(1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e))],   DSR = PSR(SR₀)

  with γ the Euler–Mascheroni constant.

* Probability of backtest overfitting by combinatorially symmetric cross-validation (Bailey,
  Borwein, López de Prado & Zhu, 2017): the sessions × configurations matrix of returns is cut
  into S blocks; for every choice of S/2 blocks as the in-sample half, the configuration with
  the best in-sample Sharpe ratio is ranked among all configurations on the other half; with
  ω its relative rank, λ = ln(ω / (1 − ω)); PBO is the share of λ ≤ 0.

Every Sharpe ratio here is per period (not annualised). Functions never raise on thin data:
they return ``None`` for the figure together with the reason in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class SharpeTest:
    """A probabilistic Sharpe ratio with the figures it came from; ``value`` is ``None`` (and
    ``reason`` says why) when it cannot be computed."""

    value: float | None
    sharpe: float | None
    benchmark: float
    n: int
    skew: float | None = None
    kurtosis: float | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return {"value": self.value, "sharpe": self.sharpe, "benchmark": self.benchmark,
                "n": self.n, "skew": self.skew, "kurtosis": self.kurtosis,
                "reason": self.reason}


@dataclass(frozen=True)
class PboResult:
    """Probability of backtest overfitting with the logits of every split; ``pbo`` is ``None``
    (and ``reason`` says why) when it cannot be computed."""

    pbo: float | None
    logits: np.ndarray = field(default_factory=lambda: np.empty(0))
    n_splits: int = 0
    n_configs: int = 0
    blocks: int = 0
    reason: str = ""

    def to_dict(self) -> dict:
        lg = self.logits
        return {"pbo": self.pbo, "n_splits": self.n_splits, "n_configs": self.n_configs,
                "blocks": self.blocks, "reason": self.reason,
                "logit_mean": float(lg.mean()) if lg.size else None,
                "logit_median": float(np.median(lg)) if lg.size else None}


def _clean(returns) -> np.ndarray:
    arr = np.asarray(pd.Series(returns, dtype=float).to_numpy(), dtype=float)
    return arr[np.isfinite(arr)]


def sharpe_ratio(returns) -> float | None:
    """Per-period Sharpe ratio (mean over sample standard deviation); ``None`` with fewer than
    two finite returns or zero variance."""
    r = _clean(returns)
    if r.size < 2:
        return None
    sd = r.std(ddof=1)
    if not np.isfinite(sd) or sd <= 1e-10 * max(float(np.abs(r).max()), 1e-300):
        return None  # constant returns (up to rounding): no dispersion to scale by
    return float(r.mean() / sd)


def psr_from_moments(sharpe: float, n: int, skew: float, kurtosis: float,
                     benchmark: float = 0.0) -> float | None:
    """PSR(benchmark) from a per-period Sharpe ratio over ``n`` observations, the skewness and
    the non-excess kurtosis of the returns (3 for a normal distribution). ``None`` when
    ``n < 2`` or the variance term is not positive (moments inconsistent with the Sharpe)."""
    if n < 2 or not all(map(math.isfinite, (sharpe, skew, kurtosis, benchmark))):
        return None
    var_term = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe ** 2
    if var_term <= 0:
        return None
    z = (sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(var_term)
    return float(sps.norm.cdf(z))


def probabilistic_sharpe(returns, benchmark: float = 0.0) -> SharpeTest:
    """PSR(benchmark) of a series of per-period returns (skewness and non-excess kurtosis are
    the sample moments of the returns)."""
    r = _clean(returns)
    n = int(r.size)
    if n < 3:
        return SharpeTest(None, None, benchmark, n,
                          reason=f"{n} return(s): at least 3 are needed for a PSR")
    sr = sharpe_ratio(r)
    if sr is None:
        return SharpeTest(None, None, benchmark, n,
                          reason="returns have zero variance: the Sharpe ratio is undefined")
    skew = float(sps.skew(r))
    kurt = float(sps.kurtosis(r, fisher=False))
    value = psr_from_moments(sr, n, skew, kurt, benchmark)
    reason = "" if value is not None else (
        f"variance term of the Sharpe estimate is not positive (Sharpe {sr:.4f}, skew "
        f"{skew:.3f}, kurtosis {kurt:.3f})")
    return SharpeTest(value, sr, benchmark, n, skew, kurt, reason)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected maximum per-period Sharpe ratio of ``n_trials`` configurations without skill
    whose Sharpe ratios have variance ``sr_variance``; 0 for a single trial (nothing was
    selected) or a non-positive variance."""
    if n_trials < 2 or not math.isfinite(sr_variance) or sr_variance <= 0:
        return 0.0
    n = float(n_trials)
    z1 = sps.norm.ppf(1.0 - 1.0 / n)
    z2 = sps.norm.ppf(1.0 - 1.0 / (n * math.e))
    return float(math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe(returns, n_trials: int, sr_variance: float) -> SharpeTest:
    """DSR: PSR of ``returns`` against the expected maximum Sharpe ratio of ``n_trials``."""
    return probabilistic_sharpe(returns, expected_max_sharpe(n_trials, sr_variance))


def trial_sharpes(matrix: pd.DataFrame) -> pd.Series:
    """Per-period Sharpe ratio of every configuration (column); zero-variance columns drop."""
    out = {c: sharpe_ratio(matrix[c]) for c in matrix.columns}
    return pd.Series({c: v for c, v in out.items() if v is not None}, dtype=float)


def _half_sharpes(sums: np.ndarray, squares: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sharpe ratios from sums, sums of squares and counts (splits × configurations); a
    zero-variance configuration scores 0 for a zero mean, else ±inf by the sign of its mean."""
    mean = sums / counts
    var = (squares - counts * mean ** 2) / (counts - 1)
    sd = np.sqrt(np.clip(var, 0.0, None))
    tiny = sd <= 1e-12 * np.maximum(np.abs(mean), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = np.where(tiny, np.sign(mean) * np.inf, mean / np.where(tiny, 1.0, sd))
    return np.where(tiny & (mean == 0), 0.0, sr)


def pbo_cscv(matrix, blocks: int = 16) -> PboResult:
    """PBO of a sessions × configurations matrix of per-period returns by CSCV with ``blocks``
    contiguous blocks (even); the performance measure is the Sharpe ratio. Rows with a missing
    value are dropped. ``None`` with the reason for fewer than 2 configurations, an odd or too
    small block count, or fewer than 2 sessions per block."""
    frame = pd.DataFrame(matrix).astype(float)
    frame = frame.replace([np.inf, -np.inf], np.nan).dropna(how="any")
    t, n = frame.shape
    if n < 2:
        return PboResult(None, n_configs=n, blocks=blocks,
                         reason=f"{n} configuration(s) recorded: PBO needs at least 2 to rank")
    if blocks < 2 or blocks % 2:
        return PboResult(None, n_configs=n, blocks=blocks,
                         reason=f"block count must be even and at least 2, not {blocks}")
    if t < 2 * blocks:
        return PboResult(None, n_configs=n, blocks=blocks,
                         reason=f"{t} common sessions: {blocks} blocks need at least "
                                f"{2 * blocks}")
    values = frame.to_numpy()
    parts = np.array_split(np.arange(t), blocks)
    b_sum = np.stack([values[p].sum(axis=0) for p in parts])            # blocks × n
    b_sq = np.stack([(values[p] ** 2).sum(axis=0) for p in parts])
    b_cnt = np.array([len(p) for p in parts], dtype=float)
    combos = np.array(list(combinations(range(blocks), blocks // 2)))
    train = np.zeros((len(combos), blocks))
    train[np.arange(len(combos))[:, None], combos] = 1.0
    test = 1.0 - train
    sr_in = _half_sharpes(train @ b_sum, train @ b_sq, (train @ b_cnt)[:, None])
    sr_out = _half_sharpes(test @ b_sum, test @ b_sq, (test @ b_cnt)[:, None])
    best = np.argmax(sr_in, axis=1)
    ranks = sps.rankdata(sr_out, axis=1)                                # 1 = worst, ties averaged
    omega = ranks[np.arange(len(combos)), best] / (n + 1)
    logits = np.log(omega / (1.0 - omega))
    return PboResult(float(np.mean(logits <= 0)), logits, len(combos), n, blocks)
