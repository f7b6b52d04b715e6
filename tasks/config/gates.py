"""Settings of the promotion gates computed from a backtest (seed 000 Promotion Criteria and
Success Metrics, seed 004 release checklist)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateSettings(_Section):
    """Thresholds of the promotion gates."""

    risk_gate_sessions: int = Field(
        10, ge=1, le=250,
        description="All risk gates (no kill switch, no quarantine, health not ERROR) must have "
                    "held for this many consecutive sessions at the end of the backtest "
                    "(seed 000: 10).")
    min_sharpe: float = Field(
        0.8, ge=-10, le=10,
        description="Annualised Sharpe ratio must be above this for promotion (seed 000: 0.8).")
    min_sharpe_out_of_sample: float = Field(
        0.9, ge=-10, le=10,
        description="Annualised Sharpe ratio must be above this when the backtest is out of "
                    "sample (seed 000 Success Metrics: 0.9).")
    max_drawdown: float = Field(
        0.08, gt=0, le=1,
        description="Maximum drawdown (fraction of equity) must be below this (seed 000: 8 %).")
    max_kill_switch_days: int = Field(
        0, ge=0, le=250,
        description="Sessions with the kill switch active allowed in the backtest (seed 000: "
                    "none).")
    max_escalations_per_day: float = Field(
        1.0, gt=0, le=100,
        description="Average escalations per session must be below this (seed 000: < 1).")
    min_hit_rate: float = Field(
        0.52, ge=0, le=1,
        description="Share of closed liquid-name episodes with a positive P&L must be above "
                    "this (seed 000 Success Metrics: 52 %).")
    liquid_buckets: tuple[str, ...] = Field(
        ("core",), min_length=1,
        description="Capital buckets counted as liquid names for the hit rate.")
    min_trades: int = Field(
        20, ge=1, le=100_000,
        description="Fewest closed liquid-name episodes for the hit rate to be judged (fewer: "
                    "the gate fails as not computable).")
    min_sessions: int = Field(
        60, ge=3, le=100_000,
        description="Fewest sessions of daily returns for the Sharpe-based statistics "
                    "(PSR, DSR, PBO) to be judged (fewer: those gates fail as not computable).")
    psr_benchmark: float = Field(
        0.0, ge=-1, le=1,
        description="Benchmark Sharpe ratio SR* of the probabilistic Sharpe ratio, per session "
                    "(not annualised).")
    min_psr: float = Field(
        0.95, gt=0, lt=1,
        description="Probabilistic Sharpe ratio PSR(SR*) must be at least this.")
    min_dsr: float = Field(
        0.95, gt=0, lt=1,
        description="Deflated Sharpe ratio (PSR against the expected maximum Sharpe of the "
                    "recorded trials) must be at least this.")
    max_pbo: float = Field(
        0.5, gt=0, le=1,
        description="Probability of backtest overfitting (CSCV over the recorded trials) must "
                    "be at most this (seed 000: low); not computable with fewer than 2 trials, "
                    "which fails the gate.")
    pbo_blocks: int = Field(
        16, ge=2, le=24,
        description="Even number of blocks the sessions are split into for the PBO.")

    @field_validator("pbo_blocks")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"must be even, not {v}")
        return v
