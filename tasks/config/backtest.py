"""Settings of ``hcp backtest``: the walk-forward backtest through the live session decision."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BacktestSettings(_Section):
    """How a backtest runs the sessions."""

    local_backend: Literal["ollama", "llamacpp", "template"] | None = Field(
        None, description="First local reasoner backend in a backtest (escalation fallback, "
        "conflict notes, post-mortems); None: the configured one (reasoner.backend). "
        "'template' is the fastest and deterministic.")
    universe_caveat: bool = Field(
        True, description="Print the survivorship caveat when the store's universe is today's "
        "constituents applied to the past (any source but the demo market).")
