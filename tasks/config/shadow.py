"""Settings of the shadow-against-active comparison and the model rollback guard (seed 004).

Seed 004 names the guard rails (win-rate delta with a minimum sample, PSI/KS limits, a
cooldown) without values for a daily model; the defaults below are this project's: a revert is
stronger than the health report's drift WARNING (PSI 0.2 on a feature), so its PSI limit is
above it, and the cooldown counts sessions (the nightly run is the guard's clock).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShadowSettings(_Section):
    """Shadow comparison and rollback guard."""

    enabled: bool = Field(
        True, description="Compare the shadow model with the active one and run the rollback "
        "guard at the end of every nightly run.")
    win_rate_delta: float = Field(
        0.05, ge=0, le=1, description="The active model trailing its predecessor's win rate "
        "(BUY names, plan horizon) by more than this reverts it to the predecessor.")
    min_samples: int = Field(
        50, ge=1, description="Closed outcomes each model needs before the win-rate rule may act.")
    psi_limit: float = Field(
        0.25, gt=0, description="PSI of the active model's recent calibrated P(win) against its "
        "reference above this reverts it.")
    ks_limit: float = Field(
        0.2, gt=0, le=1, description="Two-sample KS statistic of the active model's recent "
        "calibrated P(win) against its reference above this reverts it.")
    cooldown_sessions: int = Field(
        5, ge=0, description="Sessions after a rollback during which the guard does not act again.")
    drift_sessions: int = Field(
        20, ge=1, description="Sessions pooled on each side of the drift check: the active "
        "model's first sessions in the slot (reference) against its last ones (recent).")
