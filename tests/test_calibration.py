"""Per-regime calibration: which method, how well, and refusal when a regime has none."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.models.calibration import (
    Isotonic,
    MissingCalibrator,
    apply_calibrators,
    fit_regime_calibrators,
)
from tasks.models.ensemble import logit
from tasks.models.metrics import ece_equal_mass
from tasks.settings import load_settings

CFG = load_settings().models


def _sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores that are overconfident: true P = sigmoid(0.5 * logit(p_raw) - 1)."""
    rng = np.random.default_rng(seed)
    p_raw = 1 / (1 + np.exp(-rng.normal(-1.0, 1.5, n)))
    p_true = 1 / (1 + np.exp(-(0.5 * logit(p_raw) - 1)))
    return p_raw, (rng.random(n) < p_true).astype(float)


def test_calibration_repairs_overconfident_scores_out_of_sample():
    p, y = _sample(40_000, 0)
    regime = np.array(["low_vol", "med_vol", "high_vol"] * (len(p) // 3) + ["low_vol"] * (len(p) % 3))
    cals = fit_regime_calibrators(p, y, regime, np.arange(len(p)), CFG)
    assert set(cals) == {"low_vol", "med_vol", "high_vol"}
    p2, y2 = _sample(40_000, 1)
    fresh = np.array(["med_vol"] * len(p2))
    calibrated = apply_calibrators(p2, fresh, cals)
    assert ece_equal_mass(y2, p2) > 0.05
    assert ece_equal_mass(y2, calibrated) < 0.01


def test_small_regime_uses_platt_and_tiny_regime_gets_none():
    p, y = _sample(CFG.isotonic_min_rows + CFG.min_calibration_rows + 100, 2)
    regime = np.array(["low_vol"] * (CFG.isotonic_min_rows - 1)
                      + ["high_vol"] * (len(p) - CFG.isotonic_min_rows + 1))
    regime[:10] = "med_vol"
    cals = fit_regime_calibrators(p, y, regime, np.arange(len(p)), CFG)
    assert cals["low_vol"].method == "platt"
    assert "med_vol" not in cals
    with pytest.raises(MissingCalibrator, match="med_vol"):
        apply_calibrators(p[:20], regime[:20], cals)
    lax = apply_calibrators(p[:20], regime[:20], cals, strict=False)
    assert np.isnan(lax[:10]).all() and np.isfinite(lax[10:]).all()


def test_binned_isotonic_has_no_extreme_steps_from_a_few_rows():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.2, 5000)
    y = (rng.random(5000) < 0.1).astype(float)
    p[-3:], y[-3:] = 0.35, 1.0  # three lucky wins at the top
    model = Isotonic().fit(p, y)
    assert model.predict(np.array([0.9]))[0] < 0.5
