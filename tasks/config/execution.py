"""Settings of the intraday execution layer (section ``execution`` of ``config/app.yaml``).

The kill-switch loss and the quarantine rule are the runbook's hard limits: a configuration may
tighten them (a smaller daily loss, fewer kill days in a longer window, a longer quarantine),
never loosen them. The go-live stages only ever scale the risk caps down.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

HARD_KILL_SWITCH_LOSS = 0.025          # daily P&L <= -2.5% of start-of-day net liquidity
HARD_QUARANTINE = {"kill_days": 3, "window_sessions": 10, "quarantine_sessions": 7}
STAGES = ("none", "live_micro", "live_limited")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageSettings(_Section):
    """One go-live stage: multipliers (<= 1) of the bucket and per-name caps, shorts or not."""

    cap_scale: dict[Literal["core", "penny", "fno"], float] = Field(
        default_factory=lambda: {"core": 1.0, "penny": 1.0, "fno": 1.0},
        description="Multiplier of each bucket's capital cap and per-name cap (0 < x <= 1).")
    allow_short: bool = Field(False, description="Shorts allowed in this stage (and in risk).")

    @model_validator(mode="after")
    def _only_tighter(self) -> StageSettings:
        bad = {k: v for k, v in self.cap_scale.items() if not 0 < v <= 1}
        if bad:
            raise ValueError(f"go-live cap_scale must be in (0, 1] (a stage only tightens): {bad}")
        return self


def _default_stages() -> dict[str, StageSettings]:
    return {"live_micro": StageSettings(cap_scale={"core": 0.25, "penny": 0.25, "fno": 0.25}),
            "live_limited": StageSettings(cap_scale={"core": 1.0, "penny": 0.5, "fno": 0.5})}


class FillModelSettings(_Section):
    """The paper broker's fill model (see docs/execution.md)."""

    half_spread_bps: float = Field(2.0, ge=0, le=500, description="Half the bid-ask spread paid "
                                   "by a market order, in basis points.")
    impact_coef: float = Field(0.5, ge=0, le=10, description="Impact: slippage fraction = "
                               "half spread + impact_coef x bar range / open x participation^exp.")
    impact_exponent: float = Field(0.5, gt=0, le=1, description="Exponent of the participation "
                                   "(order size / bar volume) in the impact (0.5 = square root).")
    max_participation: float = Field(0.1, gt=0, le=1, description="Largest share of a bar's "
                                     "volume one order may take; the rest stays unfilled.")


class ExecutionSettings(_Section):
    """Modes, gates, go-live stages, kill switch, quarantine, failure modes and intraday bars."""

    mode: Literal["demo", "live"] = Field("demo", description="demo = paper broker (default); "
                                          "live needs every gate (see `hcp status`).")
    live_enabled: bool = Field(False, description="Config flag of the live gate (with env "
                               "REAL_EXECUTION_ENABLED=true, no quarantine and a broker adapter).")
    broker_adapter: str | None = Field(None, description="Name of the live broker adapter; none "
                                       "is shipped, so live cannot start.")
    go_live_stage: Literal["none", "live_micro", "live_limited"] = Field(
        "none", description="Go-live stage whose tightened caps apply (none = the risk caps).")
    stages: dict[Literal["live_micro", "live_limited"], StageSettings] = Field(
        default_factory=_default_stages, description="Cap multipliers per go-live stage "
        "(runbook: micro 25% of caps and no shorts; limited full core, penny and F&O at half).")
    kill_switch_daily_loss: float = Field(
        HARD_KILL_SWITCH_LOSS, gt=0, description="Kill switch when the day's P&L <= -this x "
        "start-of-day net liquidity (ceiling 0.025).")
    quarantine_kill_days: int = Field(3, ge=1, description="Kill-switch days that start a demo "
                                      "quarantine (ceiling 3) ...")
    quarantine_window_sessions: int = Field(10, le=250, description="... within this many "
                                            "sessions (floor 10) ...")
    quarantine_sessions: int = Field(7, le=250, description="... for this many sessions (floor 7).")
    data_stall_seconds: float = Field(900.0, gt=0, description="No new bar for this long: data "
                                      "stall (hold state, cancel new orders, keep stops).")
    bar_minutes: int = Field(5, ge=1, le=60, description="Minutes per simulated intraday bar.")
    bars_path: str | None = Field(None, description="Parquet of intraday bars (symbol, ts, open, "
                                  "high, low, close, volume); relative to HCP_HOME; none = simulate.")
    sim_seed: int = Field(20240601, ge=0, description="Seed of the simulated intraday paths.")
    sim_points_per_bar: int = Field(6, ge=2, le=60, description="Path points per simulated bar.")
    max_holding_sessions: int | None = Field(
        None, ge=1, le=250, description="Close a position at the close of its N-th session "
        "(none = the plan horizon, labels.horizons[fusion.plan_horizon]).")
    fill: FillModelSettings = Field(default_factory=FillModelSettings, description="Fill model.")

    @model_validator(mode="after")
    def _never_looser(self) -> ExecutionSettings:
        problems = []
        if self.kill_switch_daily_loss > HARD_KILL_SWITCH_LOSS:
            problems.append(f"execution.kill_switch_daily_loss={self.kill_switch_daily_loss} > "
                            f"{HARD_KILL_SWITCH_LOSS}")
        if self.quarantine_kill_days > HARD_QUARANTINE["kill_days"]:
            problems.append(f"execution.quarantine_kill_days={self.quarantine_kill_days} > 3")
        if self.quarantine_window_sessions < HARD_QUARANTINE["window_sessions"]:
            problems.append(f"execution.quarantine_window_sessions="
                            f"{self.quarantine_window_sessions} < 10")
        if self.quarantine_sessions < HARD_QUARANTINE["quarantine_sessions"]:
            problems.append(f"execution.quarantine_sessions={self.quarantine_sessions} < 7")
        if problems:
            raise ValueError("hard limits may only be tightened: " + "; ".join(problems))
        return self
