"""The remote LLM: one chat completion through the ``openai`` client, under the session budget.

The client gets the base URL and model from settings, the API key from ``OPENAI_API_KEY`` only,
an explicit short timeout and ``max_retries=0`` (hidden retries would spend the budget). One
attempt is reserved in the budget file before the request is sent. Every failure has a status
and no answer: timeout, connection_error, rate_limited (429), server_error (5xx), http_error,
refusal, truncated (finish_reason length), content_filter, empty, invalid_json, schema_invalid.
Error texts from the server are never stored (they can echo credentials): only the exception
class and the HTTP status.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from tasks.escalation import budget
from tasks.escalation.prompts import sha256_json, sha256_text
from tasks.escalation.schemas import parse_response, response_schema
from tasks.escalation.settings import API_KEY_ENV, RemoteSettings
from tasks.paths import Paths
from tasks.reasoner.base import Attempt


def request_kwargs(cfg: RemoteSettings, call_type: str, messages: list[dict[str, str]]
                   ) -> dict[str, Any]:
    """Arguments of ``chat.completions.create`` (no tools: the model can only answer JSON)."""
    schema = response_schema(call_type)
    kwargs: dict[str, Any] = {"model": cfg.model, "messages": messages}
    if cfg.response_format == "json_schema":
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": call_type.lower(), "schema": schema, "strict": True}}
        kwargs["max_completion_tokens"] = cfg.max_completion_tokens
    else:  # llama.cpp-style servers: schema-constrained json_object, max_tokens
        kwargs["response_format"] = {"type": "json_object", "schema": schema}
        kwargs["max_tokens"] = cfg.max_completion_tokens
    if cfg.temperature is not None:
        kwargs["temperature"] = cfg.temperature
    if cfg.seed is not None:
        kwargs["seed"] = cfg.seed
    return kwargs


def classify_error(exc: Exception) -> tuple[str, str]:
    """(status, detail) of a failed request; the detail never carries the server's text."""
    import openai

    code = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", name
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error", name
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited", f"{name} HTTP {code}"
    if isinstance(exc, openai.InternalServerError):
        return "server_error", f"{name} HTTP {code}"
    if isinstance(exc, openai.APIStatusError):
        return "http_error", f"{name} HTTP {code}"
    return "bad_response", name


def classify_completion(call_type: str, completion: Any) -> tuple[str, str, str | None,
                                                                   BaseModel | None]:
    """(status, validation, content, parsed answer) of a completed request."""
    try:
        choice = completion.choices[0]
        message = choice.message
    except (AttributeError, IndexError, TypeError):
        return "bad_response", "not run", None, None
    content = message.content
    if getattr(message, "refusal", None):
        return "refusal", "not run", message.refusal, None
    if choice.finish_reason == "length":
        return "truncated", "not run", content, None
    if choice.finish_reason == "content_filter":
        return "content_filter", "not run", content, None
    if not content:
        return "empty", "not run", content, None
    parsed, why = parse_response(call_type, content)
    if parsed is None:
        return ("invalid_json" if why.startswith("invalid_json") else "schema_invalid"), why, \
            content, None
    return "ok", "ok", content, parsed


def ask_remote(paths: Paths, cfg: RemoteSettings, limit: int, *, session: str, at: str,
               call_type: str, messages: list[dict[str, str]]
               ) -> tuple[Attempt, BaseModel | None]:
    """Reserve one budget attempt, send one request, classify the answer."""
    attempt = Attempt(backend=f"remote:{cfg.model}", status="", prompt_sha256=sha256_json(
        {"messages": messages, "response_schema": response_schema(call_type)}))
    key = os.environ.get(API_KEY_ENV)
    if not key:
        attempt.status, attempt.detail = "no_key", f"{API_KEY_ENV} is not set"
        return attempt, None
    res = budget.reserve(paths, session, limit, at=at, call_type=call_type, model=cfg.model)
    attempt.budget = {"used": res.used, "limit": res.limit}
    if not res.granted:
        attempt.status = "budget_exhausted"
        attempt.detail = f"{res.used}/{res.limit} remote attempts already spent for {session}"
        return attempt, None
    return _send(cfg, key, call_type, messages, attempt)


def _send(cfg: RemoteSettings, key: str, call_type: str, messages: list[dict[str, str]],
          attempt: Attempt) -> tuple[Attempt, BaseModel | None]:
    import openai

    client = openai.OpenAI(api_key=key, base_url=cfg.base_url, timeout=cfg.timeout_s,
                           max_retries=0)
    try:
        completion = client.chat.completions.create(**request_kwargs(cfg, call_type, messages))
    except Exception as exc:  # noqa: BLE001 - every failure is "no opinion", classified
        attempt.status, attempt.detail = classify_error(exc)
        return attempt, None
    finally:
        client.close()
    status, validation, content, parsed = classify_completion(call_type, completion)
    attempt.status, attempt.validation, attempt.content = status, validation, content
    attempt.response_sha256 = sha256_text(content)
    return attempt, parsed
