"""Settings of the escalation layer: triggers and bounds, the remote LLM, the local reasoner.

Three sections of the settings tree: ``escalation`` (trigger thresholds from the runbook's
escalation matrix, the call budget and the bounds every delta is clipped to), ``remote`` (the
OpenAI-compatible endpoint) and ``reasoner`` (the local backends). The remote API key is never
a setting: it is read from ``OPENAI_API_KEY`` at call time only.

Besides the ``HCP_<SECTION>__<FIELD>`` scheme, these named variables override the file:
``HCP_REMOTE_BASE_URL``, ``HCP_REMOTE_MODEL``, ``HCP_LOCAL_BACKEND``, ``HCP_LOCAL_GGUF``,
``OLLAMA_HOST``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Backend = Literal["ollama", "llamacpp", "template"]
BACKENDS: tuple[Backend, ...] = ("ollama", "llamacpp", "template")
API_KEY_ENV = "OPENAI_API_KEY"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _named_env(data: Any, names: dict[str, str]) -> Any:
    """Overlay the named environment variables (field -> variable) on a section's raw input."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for field, var in names.items():
        if os.environ.get(var):
            out[field] = os.environ[var]
    return out


class EscalationBounds(_Section):
    """Every delta an LLM proposes is clipped to these; caps never exceed the hard limits."""

    blend_weight_delta: float = Field(
        0.10, ge=0, le=0.5, description="Largest |change| of one blend weight per call.")
    blend_weight_max_drift: float = Field(
        0.30, ge=0, le=1, description="Over any number of calls, a blend weight stays within "
        "this distance of its configured value (policy.blend_weights).")
    bucket_cap_delta: tuple[float, float] = Field(
        (-0.05, 0.02), description="Range of a bucket-cap change per call (fraction of net "
        "liquidity); the result is also kept in [bucket_cap_min, hard cap].")
    bucket_cap_min: float = Field(0.0, ge=0, le=0.9, description="Lowest cap a delta may reach.")
    max_do_not_trade_additions: int = Field(
        10, ge=0, le=100, description="Most symbols one answer may add to the do-not-trade list.")
    max_disabled_features: int = Field(
        3, ge=0, le=10, description="Most feature toggles one answer may switch off.")
    turnover_penalty_max: float = Field(
        0.05, ge=0, le=1, description="Largest turnover penalty rate accepted.")
    min_position_pct: float = Field(
        0.001, gt=0, le=0.015, description="Lowest per-name cap a SANITY_JUDGE answer may set "
        "(the highest is the hard per-name limit, 0.015).")
    min_stop_atr: float = Field(
        0.5, gt=0, le=1.2, description="Lowest stop multiple (ATR) an answer may set (the highest "
        "are the hard 1.8 initial / 1.2 trailing).")


class EscalationSettings(_Section):
    """Triggers (the runbook's escalation matrix) and the remote-call budget."""

    enabled: bool = Field(True, description="Evaluate triggers and escalate in the daily flow.")
    max_calls_per_session: int = Field(
        3, ge=0, le=3, description="Remote HTTP attempts per session (runbook ceiling 3).")
    risk_drawdown_5d: float = Field(0.08, gt=0, le=1, description="5-session drawdown above: risk.")
    risk_daily_loss: float = Field(0.025, gt=0, le=1, description="Daily loss above: risk.")
    regime_vol_z: float = Field(2.0, ge=0, description="|market vol z-score| above (and ...)")
    regime_corr: float = Field(0.4, description="... mean pairwise correlation below: regime.")
    decay_accuracy_drop: float = Field(
        0.07, gt=0, le=1, description="Realised hit rate this far below the baseline's "
        "validation hit rate: model decay.")
    decay_sharpe: float = Field(0.6, description="Sharpe of realised plan returns below: decay.")
    decay_min_orders: int = Field(
        30, ge=1, description="Realised orders needed before the accuracy test is evaluable.")
    decay_min_sessions: int = Field(
        10, ge=2, description="Plan sessions with realised returns needed for the Sharpe test.")
    event_put_call: float = Field(1.6, gt=0, description="Put/call OI ratio above: event heat.")
    kill_switch_loss: float = Field(0.025, gt=0, le=1, description="Daily loss above: kill switch.")
    text_max_chars: int = Field(
        200, ge=20, le=2000, description="Free text from data sources is truncated to this.")
    max_headlines: int = Field(5, ge=0, le=50, description="Headlines passed in one request.")
    bounds: EscalationBounds = Field(default_factory=EscalationBounds, description="Delta bounds.")


class RemoteSettings(_Section):
    """The remote LLM (any OpenAI-compatible endpoint). No key here: ``OPENAI_API_KEY`` only."""

    model: str = Field("gpt-5", min_length=1, description="Model name (env HCP_REMOTE_MODEL).")
    base_url: str = Field(
        "https://api.openai.com/v1", description="Endpoint (env HCP_REMOTE_BASE_URL).")
    timeout_s: float = Field(20.0, gt=0, le=300, description="Per-request timeout, seconds.")
    max_completion_tokens: int = Field(
        4000, ge=16, le=100_000, description="Token limit of one answer (reasoning included).")
    response_format: Literal["json_schema", "json_object"] = Field(
        "json_schema", description="'json_schema' (OpenAI structured outputs) or 'json_object' "
        "with the schema attached (llama.cpp's server).")
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sent only when set (gpt-5 accepts only its default).")
    seed: int | None = Field(None, description="Sent only when set.")

    @model_validator(mode="before")
    @classmethod
    def _env(cls, data: Any) -> Any:
        return _named_env(data, {"base_url": "HCP_REMOTE_BASE_URL", "model": "HCP_REMOTE_MODEL"})


class OllamaOptions(_Section):
    """Model options; defaults are the runbook's RTX 4080 (16 GB) profile for Qwen2.5-14B Q4."""

    num_ctx: int = Field(8192, ge=256, le=131072, description="Context length (tokens).")
    num_gpu: int = Field(35, ge=0, le=1000, description="Layers offloaded to the GPU.")
    num_thread: int = Field(8, ge=1, le=256, description="CPU threads.")
    num_batch: int = Field(512, ge=1, le=8192, description="Prompt batch size.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    seed: int = Field(7, description="Sampling seed.")


class OllamaSettings(_Section):
    host: str = Field("http://127.0.0.1:11434", description="Ollama server (env OLLAMA_HOST).")
    model: str = Field("qwen2.5:14b-instruct", description="Model tag.")
    timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Per-request timeout (the client has none by default).")
    options: OllamaOptions = Field(default_factory=OllamaOptions, description="Model options.")

    @model_validator(mode="before")
    @classmethod
    def _env(cls, data: Any) -> Any:
        return _named_env(data, {"host": "OLLAMA_HOST"})


class LlamaCppSettings(_Section):
    gguf_path: str | None = Field(
        None, description="GGUF file run in process (env HCP_LOCAL_GGUF).")
    server_url: str | None = Field(
        None, description="An OpenAI-compatible local server (e.g. `python -m llama_cpp.server`) "
        "used instead of the in-process model, e.g. http://127.0.0.1:8080/v1.")
    server_model: str = Field("local", description="Model name sent to that server.")
    n_ctx: int = Field(4096, ge=256, le=131072, description="Context length (in process).")
    n_threads: int = Field(2, ge=1, le=256, description="CPU threads (in process).")
    max_tokens: int = Field(512, ge=16, le=8192, description="Token limit of one answer.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="Server request timeout.")
    seed: int = Field(7, description="Sampling seed (temperature is 0).")

    @model_validator(mode="before")
    @classmethod
    def _env(cls, data: Any) -> Any:
        return _named_env(data, {"gguf_path": "HCP_LOCAL_GGUF"})


class ReasonerSettings(_Section):
    """The local reasoner: first choice of backend, then automatic fallback down the chain."""

    backend: Backend = Field(
        "ollama", description="First backend tried (env HCP_LOCAL_BACKEND); unreachable ones "
        "fall back to the next of ollama -> llamacpp -> template.")
    ollama: OllamaSettings = Field(default_factory=OllamaSettings, description="Ollama backend.")
    llamacpp: LlamaCppSettings = Field(default_factory=LlamaCppSettings, description="llama.cpp.")
    narrative_max_chars: int = Field(
        2000, ge=100, le=20000, description="A narrative longer than this is truncated.")
    conflict_edge_gap: float = Field(
        0.5, gt=0, le=1, description="|edge_short - edge_mid| at or above: horizons disagree.")
    conflict_base_spread: float = Field(
        0.15, gt=0, le=1, description="Spread of the base models' raw P(win) at or above: "
        "base models disagree.")
    max_conflict_notes: int = Field(10, ge=0, le=100, description="Notes written per session.")

    @model_validator(mode="before")
    @classmethod
    def _env(cls, data: Any) -> Any:
        return _named_env(data, {"backend": "HCP_LOCAL_BACKEND"})

    def order(self) -> list[Backend]:
        """Backends in the order tried: the configured one first, the template always last."""
        rest = [b for b in BACKENDS if b not in (self.backend, "template")]
        return [self.backend] if self.backend == "template" else [self.backend, *rest, "template"]
