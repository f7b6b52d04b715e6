"""Settings of the decision layer: fusion, guardrails, hard risk limits, health and the daily run.

Hard limits (``risk``) are ceilings taken from the runbook: a configuration may tighten them,
never loosen them. A looser value fails with :class:`~tasks.settings.ConfigError` naming the key.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

BUCKETS = ("core", "penny", "fno")
VOL_REGIMES = ("low_vol", "med_vol", "high_vol")

# the runbook's hard limits: fractions of net liquidity, and ATR multiples
HARD_BUCKET_CAPS = {"core": 0.90, "penny": 0.02, "fno": 0.05}
HARD_PER_NAME = {"core": 0.015, "penny": 0.004, "fno": 0.007}
HARD_CONCENTRATION = {"top5_max": 0.50, "single_ticker_max": 0.25, "single_sector_max": 0.40}
HARD_STOPS = {"initial_stop_atr": 1.8, "trailing_stop_atr": 1.2, "take_profit_atr": 2.5}
# fusion inputs a policy may switch off: the RL size hint and the inputs of the four penalties
TOGGLEABLE_FEATURES = ("rl_size_hint", "news_sentiment", "vol_z", "liquidity", "corr_mkt")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BucketRules(_Section):
    penny_max_price: float = Field(
        5.0, gt=0, le=1000, description="A symbol whose last raw close is below this is 'penny'.")
    penny_min_adv_usd: float = Field(
        200_000.0, ge=0, description="A penny symbol with a lower 20-session average dollar "
        "volume is not traded at all (runbook: min ADV 200k).")
    fno_symbols: list[str] = Field(
        [], description="Symbols traded as futures & options (delta-equivalent exposure).")


class RiskSettings(_Section):
    """Hard clamps shared by the daily plan and the intraday flow (fractions of net liquidity)."""

    bucket_caps: dict[Literal["core", "penny", "fno"], float] = Field(
        default_factory=lambda: dict(HARD_BUCKET_CAPS),
        description="Capital per bucket as a fraction of net liquidity (ceilings 0.90/0.02/0.05).")
    per_name: dict[Literal["core", "penny", "fno"], float] = Field(
        default_factory=lambda: dict(HARD_PER_NAME),
        description="Largest position per name by bucket (ceilings 0.015/0.004/0.007, F&O "
        "delta-equivalent).")
    top5_max: float = Field(0.50, gt=0, description="Five largest positions together (ceiling 0.50).")
    single_ticker_max: float = Field(0.25, gt=0, description="One ticker (ceiling 0.25).")
    single_sector_max: float = Field(0.40, gt=0, description="One sector (ceiling 0.40).")
    sip_profit_share: float = Field(
        0.01, ge=0, le=1, description="Share of a positive day's profit moved to the SIP bucket "
        "at the end of the day.")
    do_not_trade: list[str] = Field([], description="Symbols never traded (exits still allowed).")
    initial_stop_atr: float = Field(1.8, gt=0, description="Initial stop, ATR multiples (ceiling 1.8).")
    trailing_stop_atr: float = Field(1.2, gt=0, description="Trailing stop, ATR multiples (ceiling 1.2).")
    take_profit_atr: float = Field(2.5, gt=0, description="Take-profit, ATR multiples (ceiling 2.5).")
    allow_short: bool = Field(
        False, description="SELL signals open shorts; when false they only exit held longs.")
    buckets: BucketRules = Field(default_factory=BucketRules, description="Symbol -> bucket rules.")

    @model_validator(mode="after")
    def _never_looser(self) -> RiskSettings:
        problems = []
        values = {**{f"bucket_caps.{k}": v for k, v in self.bucket_caps.items()},
                  **{f"per_name.{k}": v for k, v in self.per_name.items()}}
        for key, value in values.items():
            if not (value > 0 and math.isfinite(value)):
                problems.append(f"risk.{key}={value} must be a positive number")
        for key, hard in HARD_BUCKET_CAPS.items():
            if self.bucket_caps.get(key, hard) > hard:
                problems.append(f"risk.bucket_caps.{key}={self.bucket_caps[key]} > {hard}")
        for key, hard in HARD_PER_NAME.items():
            if self.per_name.get(key, hard) > hard:
                problems.append(f"risk.per_name.{key}={self.per_name[key]} > {hard}")
        for key, hard in {**HARD_CONCENTRATION, **HARD_STOPS}.items():
            if getattr(self, key) > hard:
                problems.append(f"risk.{key}={getattr(self, key)} > {hard}")
        if problems:
            raise ValueError("hard limits may only be tightened: " + "; ".join(problems))
        return self

    def cap(self, bucket: str) -> float:
        """Bucket capital cap (missing key = the hard value)."""
        return self.bucket_caps.get(bucket, HARD_BUCKET_CAPS[bucket])

    def name_cap(self, bucket: str) -> float:
        """Per-name cap of a bucket (missing key = the hard value)."""
        return self.per_name.get(bucket, HARD_PER_NAME[bucket])


class GuardrailSettings(_Section):
    """The sizing chain (README "Sizing"): every amount scales with net liquidity."""

    account_cash: float = Field(
        100_000.0, gt=0, description="Net liquidity the plan is sized against when no portfolio "
        "state exists yet (the per-name cap of 1.5% needs an account that can hold one share).")
    per_trade_target_pct: float = Field(
        0.015, gt=0, le=1, description="Most cash for one new position, as a fraction of net "
        "liquidity (1.5% = the core per-name cap: $1,500 on $100,000).")
    max_positions: int | None = Field(
        None, ge=1, le=500, description="Most open positions at once; null = derived: the core "
        "bucket cap / the core per-name cap, rounded up (0.90 / 0.015 = 60), and never more "
        "than net liquidity x core cap / min_position_cash.")
    max_per_ticker: int = Field(2, ge=1, le=10, description="Most open lots per ticker.")
    fee_pct: float = Field(0.0005, ge=0, lt=0.05, description="Cost per side as a fraction.")
    lot_size: int = Field(1, ge=1, description="Quantities are floored to a multiple of this.")
    min_position_cash: float = Field(
        100.0, ge=0, description="Orders below this are dropped (never inflated to reach it).")
    kelly_fraction: float = Field(0.25, gt=0, le=1, description="Fraction of full Kelly.")
    kelly_regime_scale: dict[Literal["trending", "ranging", "volatile"], float] = Field(
        default_factory=lambda: {"trending": 1.0, "ranging": 0.75, "volatile": 0.5},
        description="Kelly multiplier by market regime.")
    rl_missing_size_factor: float = Field(
        0.5, gt=0, le=1, description="Size multiplier when the RL size hint is missing.")
    book_risk: bool = Field(
        True, description="Scale new entries down so the book's one-day 99% value at risk (from "
        "the recent return covariance) stays within book_var99_max.")
    book_var99_max: float = Field(
        0.025, gt=0, le=0.2, description="Largest one-day 99% VaR of the book, as a fraction of net "
        "liquidity (default: the kill switch's 2.5%: a 1-in-100 day under recent volatility "
        "reaches the kill switch).")
    corr_window: int = Field(60, ge=10, le=500, description="Sessions of returns for the book's "
                             "covariance (and the reported effective K).")

    def positions_limit(self, risk: RiskSettings, net_liquidity: float) -> int:
        """Most open positions: configured, or derived from the core caps and the account."""
        if self.max_positions is not None:
            return self.max_positions
        ratio = risk.cap("core") / risk.name_cap("core")
        if not math.isfinite(ratio) or not math.isfinite(net_liquidity):
            return 0  # a broken cap fails closed: no new position
        derived = max(1, math.ceil(ratio - 1e-9))   # a partial last position still fits
        if self.min_position_cash > 0:
            derived = min(derived, int(net_liquidity * risk.cap("core") // self.min_position_cash))
        return max(0, derived)


class FusionSettings(_Section):
    edge_mode: Literal["percentile", "base_rate_odds"] = Field(
        "percentile", description="How a calibrated P(win) becomes a 0..1 edge: its percentile "
        "among the day's scored symbols, or sigmoid(logit p - logit base rate of its regime).")
    edge_source: Literal["rank_score", "p_cal"] = Field(
        "rank_score", description="What a horizon's edge ranks: the ranking model's score "
        "(trained to order names within a session; falls back to p_cal for a baseline without "
        "one) or the calibrated P(win).")
    zero_unskilled_horizons: bool = Field(
        True, description="A horizon whose ranking had no out-of-sample skill at training time "
        "(rank IC Newey-West t below models.skill.min_ic_t) is blended at weight 0; the audit "
        "and the health report say so.")
    buy_threshold: float = Field(0.67, gt=0.5, lt=1, description="score >= this: BUY.")
    sell_threshold: float = Field(0.33, gt=0, lt=0.5, description="score <= this: SELL.")
    plan_horizon: str = Field("short", description="Horizon whose P(win) prices the trade.")
    expectancy_gate: bool = Field(
        True, description="A BUY needs the lower bound of its net expected P&L above 0.")
    expectancy_z: float = Field(
        1.0, ge=0, le=5, description="Standard errors (the ensemble's dispersion of P(win), carried "
        "through the expectancy) subtracted from exp_pnl_net for the BUY rule.")
    vol_spike_z: float = Field(2.0, description="Symbol vol z-score above this: vol-spike penalty.")
    vol_spike_penalty: float = Field(0.15, ge=0, le=1, description="Vol-spike penalty.")
    news_negative: float = Field(-0.3, description="News sentiment below this: negative-news penalty.")
    news_penalty: float = Field(0.10, ge=0, le=1, description="Negative-news penalty.")
    low_liquidity: float = Field(0.5, description="Liquidity score below this: low-liquidity penalty.")
    liquidity_penalty: float = Field(0.05, ge=0, le=1, description="Low-liquidity penalty.")
    liquidity_full_adv_usd: float = Field(
        20e6, gt=0, description="20-session average dollar volume that scores liquidity 1.0.")
    corr_breakdown: float = Field(
        0.4, description="The symbol's correlation with the market below this: penalty.")
    corr_penalty: float = Field(0.08, ge=0, le=1, description="Correlation-breakdown penalty.")


class _PartialSection(_Section):
    """A section whose unset entries (None) are left out of its JSON, so that it reads and
    writes the same partial mapping (``{}`` when nothing is set)."""

    @model_serializer(mode="wrap")
    def _set_entries_only(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class StopMultipliers(_PartialSection):
    """SANITY_JUDGE stop multiples in force (ATR multiples; unset: the configured stops)."""

    atr: float | None = Field(
        None, gt=0, le=HARD_STOPS["initial_stop_atr"],
        description="Initial stop, ATR multiples (never above risk.initial_stop_atr).")
    trailing: float | None = Field(
        None, gt=0, le=HARD_STOPS["trailing_stop_atr"],
        description="Trailing stop, ATR multiples (never above risk.trailing_stop_atr).")


class LiveChanges(_PartialSection):
    """SANITY_JUDGE changes in force; each only tightens the risk settings."""

    max_position_pct: float | None = Field(
        None, gt=0, le=max(HARD_PER_NAME.values()),
        description="Largest position per name in every bucket, as a fraction of net liquidity "
        "(unset: risk.per_name).")
    stop_multipliers: StopMultipliers | None = Field(
        None, description="Stop multiples in force (unset: the configured stops).")


class PolicyDefaults(_Section):
    """The first policy version; escalations write later versions as state."""

    blend_weights: dict[Literal["short", "mid", "rl"], float] = Field(
        default_factory=lambda: {"short": 0.4, "mid": 0.3, "rl": 0.3},
        description="Fusion weights of the short/mid edges and sigmoid(RL size hint).")
    gates: dict[Literal["low_vol", "med_vol", "high_vol"], float] = Field(
        default_factory=lambda: {"low_vol": 0.60, "med_vol": 0.62, "high_vol": 0.65},
        description="Per-regime gate on the predictors' edge.")
    do_not_trade: list[str] = Field([], description="Policy-level do-not-trade list.")
    reward_coefficients: dict[str, float] = Field(
        default_factory=lambda: {"returns": 0.6, "turnover": 0.2, "drawdown": 0.2},
        description="Reward mix (changed by REWARD_ENGINEER answers).")
    disabled_features: list[str] = Field(
        [], description=f"Fusion inputs switched off (any of {', '.join(TOGGLEABLE_FEATURES)}).")
    bucket_caps: dict[Literal["core", "penny", "fno"], float] = Field(
        default_factory=lambda: dict(HARD_BUCKET_CAPS),
        description="Bucket capital caps of the policy; the clamps use the tighter of these and "
        "risk.bucket_caps (never above the hard limits).")
    turnover_penalties: dict[str, float] = Field(
        default_factory=lambda: {"penalty_rate": 0.01},
        description="Turnover penalty of the reward (changed by REWARD_ENGINEER answers).")
    stay_demo: bool | None = Field(
        None, description="The last SANITY_JUDGE verdict (None: none given yet).")
    live_changes: LiveChanges = Field(
        default_factory=LiveChanges, description="SANITY_JUDGE changes in force: max_position_pct (a "
        "per-name cap) and stop_multipliers {atr, trailing}; tighter than the hard limits only.")

    @model_validator(mode="after")
    def _weights(self) -> PolicyDefaults:
        if any(w < 0 for w in self.blend_weights.values()) or sum(self.blend_weights.values()) <= 0:
            raise ValueError("policy.blend_weights must be >= 0 with a positive sum")
        above = {k: v for k, v in self.bucket_caps.items() if v > HARD_BUCKET_CAPS[k]}
        if above:
            raise ValueError(f"policy.bucket_caps above the hard limits: {above}")
        unknown = sorted(set(self.disabled_features) - set(TOGGLEABLE_FEATURES))
        if unknown:
            raise ValueError(f"policy.disabled_features {unknown} are not toggleable; known: "
                             f"{list(TOGGLEABLE_FEATURES)}")
        return self


class HealthSettings(_Section):
    min_signals: int = Field(10, ge=1, description="Fewer scored symbols: ERROR (stop trading).")
    max_nan_share: float = Field(0.5, gt=0, le=1, description="A feature more NaN than this: ERROR.")
    coverage_band: tuple[float, float] = Field(
        (0.15, 0.35), description="Share of scored symbols with a gated BUY/SELL signal.")
    psi_max: float = Field(0.2, gt=0, description="PSI above this on a key feature: WARNING.")
    psi_features: list[str] = Field(
        ["ret_20", "vol_20", "atr_pct", "volume_z", "rsi_14"],
        description="Key features compared with the training distribution.")
    psi_sessions: int = Field(
        20, ge=1, le=500, description="Recent sessions (as-of included) pooled for PSI.")
    top5_max: float = Field(0.5, gt=0, le=1, description="Top-5 exposure / net liquidity: WARNING.")
    regime_share_max: float = Field(0.6, gt=0, le=1, description="One regime's share: WARNING.")
    brier_margin: float = Field(
        0.02, ge=0, description="Recent Brier above the baseline's validation Brier + this: WARNING.")
    ece_margin: float = Field(
        0.03, ge=0, description="Recent ECE above the baseline's validation ECE + this: WARNING.")
    quality_window_sessions: int = Field(
        60, ge=5, le=1000, description="Sessions of realised outcomes for the quality metrics.")


class DailySettings(_Section):
    history_sessions: int = Field(
        600, ge=300, le=20000, description="Sessions of bars loaded before the as-of date (enough "
        "for the longest feature window plus the quality window and the label horizons).")
    context_path: str | None = Field(
        None, description="Parquet/CSV of optional market context (date, symbol, rl_size_hint, "
        "news_sentiment, put_call_ratio); relative paths are under HCP_HOME.")
