"""Settings of the shadow-against-active comparison and the model rollback guard (seed 004)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShadowSettings(_Section):
    """Shadow comparison and rollback guard."""
