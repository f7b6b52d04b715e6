"""Probabilistic and deflated Sharpe ratios and the probability of backtest overfitting
(CSCV): the published worked example, known cases, noise and planted skill, thin data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from tasks.backtest import stats as st

# The worked example of "The Deflated Sharpe Ratio" (Bailey & López de Prado, 2014): 100
# trials whose annualised Sharpe ratios have variance 1/2, the selected strategy's annualised
# Sharpe 2.5 over five years of daily returns (T = 1250, 250 sessions a year), skewness -3,
# kurtosis 10. Published: SR₀ = 0.1132 per session, DSR = 0.9004.
YEAR = 250


def test_published_deflated_sharpe_example():
    sr0 = st.expected_max_sharpe(100, 0.5 / YEAR)
    assert sr0 == pytest.approx(0.1132, abs=1e-3)
    dsr = st.psr_from_moments(2.5 / math.sqrt(YEAR), 1250, -3.0, 10.0, sr0)
    assert dsr == pytest.approx(0.9004, abs=2e-3)


def test_expected_max_sharpe_grows_with_trials_and_spread():
    assert st.expected_max_sharpe(1, 0.01) == 0.0          # nothing selected
    assert st.expected_max_sharpe(10, 0.0) == 0.0          # identical trials
    assert st.expected_max_sharpe(10, float("nan")) == 0.0
    seq = [st.expected_max_sharpe(n, 0.01) for n in (2, 10, 100, 1000)]
    assert all(a < b for a, b in zip(seq, seq[1:], strict=False))
    assert st.expected_max_sharpe(50, 0.04) == pytest.approx(2 * st.expected_max_sharpe(50, 0.01))


def test_psr_of_a_two_point_series():
    """Returns alternating +3 % / -1 %: skewness 0, kurtosis 1, so the variance term is 1 and
    PSR(0) = Φ(SR·√(T−1)) with SR = 0.01 / (0.02·√(T/(T−1)))."""
    r = np.tile([0.03, -0.01], 10)
    res = st.probabilistic_sharpe(r)
    assert res.skew == pytest.approx(0.0, abs=1e-12)
    assert res.kurtosis == pytest.approx(1.0)
    assert res.sharpe == pytest.approx(0.5 * math.sqrt(19 / 20))
    assert res.value == pytest.approx(norm.cdf(19 / (2 * math.sqrt(20))))
    assert res.value == pytest.approx(0.98318, abs=1e-4)


def test_psr_known_normal_case_and_benchmark():
    # normal moments: Φ(0.1·√100 / √(1 + 0.1²/2)) = Φ(0.997509)
    assert st.psr_from_moments(0.1, 101, 0.0, 3.0) == pytest.approx(0.84073, abs=1e-4)
    assert st.psr_from_moments(0.1, 101, 0.0, 3.0, benchmark=0.1) == pytest.approx(0.5)
    # negative skew and fat tails lower the confidence in the same Sharpe
    assert st.psr_from_moments(0.1, 101, -1.0, 8.0) < st.psr_from_moments(0.1, 101, 0.0, 3.0)
    # a variance term that is not positive has no PSR
    assert st.psr_from_moments(1.0, 100, 3.0, 3.0) is None
    assert st.psr_from_moments(0.1, 1, 0.0, 3.0) is None


def test_psr_from_returns_uses_their_sample_moments():
    r = np.random.default_rng(5).standard_t(5, 500) * 0.01 + 0.0008
    res = st.probabilistic_sharpe(pd.Series(r), benchmark=0.02)
    assert res.n == 500 and res.reason == ""
    assert res.value == pytest.approx(
        st.psr_from_moments(res.sharpe, 500, res.skew, res.kurtosis, 0.02))
    assert st.deflated_sharpe(r, 1, 0.3).value == pytest.approx(
        st.probabilistic_sharpe(r).value)                  # one trial: SR₀ = 0


def test_thin_and_flat_returns_have_no_psr():
    flat = st.probabilistic_sharpe(np.full(100, 0.001))
    assert flat.value is None and "zero variance" in flat.reason
    assert st.sharpe_ratio(np.zeros(10)) is None
    short = st.probabilistic_sharpe([0.01, 0.02])
    assert short.value is None and "at least 3" in short.reason
    assert st.probabilistic_sharpe([0.01, np.nan, 0.02, np.inf]).n == 2  # non-finite dropped


def test_pbo_of_pure_noise_is_about_one_half():
    """Over configurations without skill the in-sample best is a random draw out of sample:
    PBO ≈ 0.5 (averaged over fixed seeds; one matrix's PBO varies widely)."""
    values = []
    for seed in range(20):
        m = np.random.default_rng(seed).normal(0.0, 0.01, (480, 20))
        res = st.pbo_cscv(m, blocks=10)
        assert res.n_splits == math.comb(10, 5) and res.logits.shape == (252,)
        values.append(res.pbo)
    assert 0.35 <= float(np.mean(values)) <= 0.65


def test_pbo_is_low_with_planted_skill():
    rng = np.random.default_rng(1)
    m = rng.normal(0.0, 0.01, (800, 10))
    m[:, 4] += 0.003                                  # skill in every period
    res = st.pbo_cscv(pd.DataFrame(m))
    assert res.pbo is not None and res.pbo < 0.1
    assert res.n_splits == math.comb(16, 8) and res.n_configs == 10 and res.blocks == 16
    assert res.logits.mean() > 0
    d = res.to_dict()
    assert d["pbo"] == res.pbo and d["logit_mean"] == pytest.approx(res.logits.mean())


def test_pbo_edge_cases():
    rng = np.random.default_rng(2)
    one = st.pbo_cscv(rng.normal(size=(200, 1)))
    assert one.pbo is None and "at least 2" in one.reason and one.logits.size == 0
    assert st.pbo_cscv(pd.DataFrame()).pbo is None
    odd = st.pbo_cscv(rng.normal(size=(200, 3)), blocks=7)
    assert odd.pbo is None and "even" in odd.reason
    short = st.pbo_cscv(rng.normal(size=(20, 3)), blocks=16)
    assert short.pbo is None and "20 common sessions" in short.reason
    # flat configurations: no NaN, a figure in [0, 1]
    flat = np.zeros((64, 3))
    flat[:, 2] = 0.001
    res = st.pbo_cscv(flat, blocks=4)
    assert res.pbo is not None and 0.0 <= res.pbo <= 1.0 and np.isfinite(res.logits).all()
    # rows with a missing value are dropped, not propagated
    m = rng.normal(size=(100, 3))
    m[5, 1] = np.nan
    assert st.pbo_cscv(m, blocks=4).pbo is not None


def test_trial_sharpes_skip_flat_configurations():
    frame = pd.DataFrame({"a": [0.01, 0.02, 0.0, 0.01], "flat": [0.0] * 4})
    out = st.trial_sharpes(frame)
    assert list(out.index) == ["a"] and out["a"] == pytest.approx(st.sharpe_ratio(frame["a"]))
