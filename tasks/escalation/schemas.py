"""Request and response models of the three call types, with the runbook's exact field names.

Requests carry the runbook's JSON fields (filled from the pipeline's state; a field whose input
is absent is ``None``, never invented) plus the matrix's trigger fields. Responses are strict:
every field required, no extra field, no type coercion, no NaN: anything else is a schema
failure and the answer counts as "no opinion".
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CallType = Literal["REGIME_AUDITOR", "REWARD_ENGINEER", "SANITY_JUDGE"]
CALL_TYPES: tuple[CallType, ...] = ("REGIME_AUDITOR", "REWARD_ENGINEER", "SANITY_JUDGE")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --- requests -----------------------------------------------------------------------------

class RegimePortfolioState(_Request):
    net_liquidity: float
    daily_pnl: float | None = Field(None, description="Last session's P&L, fraction of NL.")
    volatility_zscore: float | None = Field(None, description="Market volatility z-score.")
    correlation_breakdown: float | None = Field(None, description="Mean pairwise correlation.")


class RegimeAuditorRequest(_Request):
    timestamp: str
    portfolio_state: RegimePortfolioState
    sector_dispersion: dict[str, float] = Field(
        description="Per sector: cross-sectional std of the 20-session log return.")
    bucket_usage: dict[str, float] = Field(description="Exposure per bucket, fraction of NL.")
    put_call_ratio: float | None = Field(None, description="Mean put/call OI ratio (event heat).")
    news_sentiment: float | None = Field(None, description="Mean news sentiment of the day.")
    macro_events: list[str] = Field(
        default_factory=list, description="Headlines from the data source (untrusted text, "
        "truncated).")


class TurnoverStats(_Request):
    daily_turnover: float | None = None
    weekly_turnover: float | None = None
    monthly_turnover: float | None = None


class RewardEngineerRequest(_Request):
    timestamp: str
    pnl_decomposition: dict[str, float] = Field(description="Last session's P&L by bucket.")
    turnover_stats: TurnoverStats
    feature_performance: dict[str, float] = Field(
        description="Rank IC of each feature with the realised outcome over the recent window.")
    max_drawdown_5d: float | None = None
    daily_pnl: float | None = None
    ensemble_accuracy: float | None = Field(None, description="Realised hit rate of plan orders.")
    sharpe_ratio: float | None = Field(None, description="Sharpe of realised plan returns.")


class TradeRow(_Request):
    symbol: str
    action: str
    size: float
    pnl: float | None = None


class SanityPortfolioState(_Request):
    net_liquidity: float
    daily_pnl: float


class SanityJudgeRequest(_Request):
    timestamp: str
    kill_switch_reason: str
    recent_trades: list[TradeRow]
    portfolio_state: SanityPortfolioState


# --- responses ----------------------------------------------------------------------------

class BlendWeightsDelta(_Strict):
    short: float
    mid: float
    rl: float


class BucketCapsDelta(_Strict):
    penny: float
    fno: float
    core: float


class RegimeAuditorResponse(_Strict):
    regime_label: Literal["trending", "ranging", "volatile"]
    blend_weights_delta: BlendWeightsDelta
    bucket_caps_delta: BucketCapsDelta
    do_not_trade_list: list[str]


class RewardCoefficients(_Strict):
    returns: float
    turnover: float
    drawdown: float


class TurnoverPenalties(_Strict):
    penalty_rate: float


class RewardEngineerResponse(_Strict):
    reward_coefficients: RewardCoefficients
    turnover_penalties: TurnoverPenalties
    disabled_features: list[str]


class StopMultipliers(_Strict):
    atr: float
    trailing: float


class LiveChanges(_Strict):
    max_position_pct: float
    stop_multipliers: StopMultipliers


class SanityJudgeResponse(_Strict):
    stay_demo: bool
    live_changes: LiveChanges


REQUESTS: dict[str, type[BaseModel]] = {
    "REGIME_AUDITOR": RegimeAuditorRequest, "REWARD_ENGINEER": RewardEngineerRequest,
    "SANITY_JUDGE": SanityJudgeRequest}
RESPONSES: dict[str, type[BaseModel]] = {
    "REGIME_AUDITOR": RegimeAuditorResponse, "REWARD_ENGINEER": RewardEngineerResponse,
    "SANITY_JUDGE": SanityJudgeResponse}


def response_schema(call_type: str) -> dict[str, Any]:
    """JSON schema of a response, references inlined, every object closed and fully required
    (what OpenAI's strict structured outputs and llama.cpp's grammar both accept)."""
    raw = RESPONSES[call_type].model_json_schema()
    defs = raw.pop("$defs", {})
    return _close(_inline(raw, defs))


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(copy.deepcopy(defs[node["$ref"].split("/")[-1]]), defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in ("title", "description")}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _close(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _close(v) for k, v in node.items()}
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
            node["required"] = list(node["properties"])
        return node
    if isinstance(node, list):
        return [_close(v) for v in node]
    return node


def parse_response(call_type: str, content: str) -> tuple[BaseModel | None, str]:
    """(validated response, '') or (None, why): 'invalid_json: ...' or 'schema: ...'."""
    import json

    from pydantic import ValidationError

    try:
        data = json.loads(content)
    except (json.JSONDecodeError, TypeError) as exc:
        return None, f"invalid_json: {str(exc)[:120]}"
    try:
        return RESPONSES[call_type].model_validate(data, strict=True), ""
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}"
                         for e in exc.errors()[:5])
        return None, f"schema: {errs}"
