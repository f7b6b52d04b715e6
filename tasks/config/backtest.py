"""Settings of ``hcp backtest``: the walk-forward backtest through the live session decision."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BacktestSettings(_Section):
    """How a backtest runs the sessions."""
