"""Settings of the learned size hint, the fusion's third input (``tasks/plan/sizehint.py``,
``tasks/backtest/sizehint.py``).

The hint is a contextual bandit over a few size multipliers. Its reward model is a Bayesian
ridge regression of an episode's reward per unit of size on the state the plan saw; an arm
away from the logged size (1.0) is taken only when its expected gain beats ``pessimism``
standard errors of the prediction (a conservative improvement on the policy that produced the
episodes). It is used only when it passes its gate against a constant size and a
volatility-targeting size on the same out-of-sample episodes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SizeHintSettings(_Section):
    """The learned size hint: arms, reward model, walk-forward and gate."""

    enabled: bool = Field(
        True, description="Use a registered size hint that passed its gate (false: every plan "
        "runs in the runbook's 'RL missing' mode).")
    require_gate: bool = Field(
        True, description="Use only a hint that passed its gate (false: use the current hint "
        "even if it failed, for a research backtest of the hint against the RL-missing mode; "
        "the health and the plan's tags still name it).")
    arms: tuple[float, ...] = Field(
        (0.5, 1.0, 1.5), description="Size multipliers the bandit chooses from; must contain "
        "1.0 (the size the episodes were traded at).")
    ridge_alpha: float = Field(
        10.0, gt=0, le=1e6, description="Ridge penalty of the reward model on standardised "
        "state features (the prior precision of its coefficients, in episodes).")
    pessimism: float = Field(
        1.0, ge=0, le=10, description="Standard errors of the predicted reward an arm away "
        "from 1.0 must clear, per unit of size moved.")
    min_train_episodes: int = Field(
        200, ge=20, le=1_000_000, description="Closed episodes a walk-forward step needs "
        "before it may choose anything but 1.0.")
    test_years: int = Field(
        1, ge=1, le=5, description="Calendar years per walk-forward test block.")
    trials: int = Field(
        3, ge=1, le=1000, description="Sizing rules compared (hint, constant, volatility "
        "target): the N of the deflated Sharpe ratio.")
    min_dsr: float = Field(
        0.0, ge=0, le=1, description="Smallest deflated Sharpe ratio the hint needs on top of "
        "beating both baselines.")

    @field_validator("arms")
    @classmethod
    def _arms(cls, arms: tuple[float, ...]) -> tuple[float, ...]:
        if 1.0 not in arms:
            raise ValueError("size_hint.arms must contain 1.0 (the logged size)")
        if any(not 0 < a <= 3 for a in arms):
            raise ValueError("size_hint.arms must lie in (0, 3]")
        return tuple(sorted(set(arms)))
