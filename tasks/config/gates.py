"""Settings of the promotion gates computed from a backtest (seed 000 Promotion Criteria and
Success Metrics, seed 004 release checklist)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateSettings(_Section):
    """Thresholds of the promotion gates."""
