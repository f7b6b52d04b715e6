"""The three backends: Ollama (production default), llama.cpp (in process or a local server),
and a deterministic jinja2 template (always there, never answers an escalation schema).

Every failure raises :class:`~tasks.reasoner.base.BackendFailed` with a status the chain
records (unavailable, timeout, http_error, truncated, declined) and moves past.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from tasks.config.escalation import LlamaCppSettings, OllamaSettings
from tasks.reasoner.base import BackendFailed, Messages

_LLAMA: dict[tuple[str, int, int, int], Any] = {}
_LLAMA_LOCK = threading.Lock()


def _finish(content: str, truncated: bool, json_mode: bool) -> str:
    """A JSON answer cut at the token limit is refused; a cut text is kept, marked with '…'."""
    if truncated and json_mode:
        raise BackendFailed("truncated", "stopped at the token limit")
    return content.rstrip() + " …" if truncated and content.strip() else content


def _close_models() -> None:
    """Free in-process models before the interpreter tears llama_cpp down."""
    with _LLAMA_LOCK:
        for model in _LLAMA.values():
            model.close()
        _LLAMA.clear()


class OllamaBackend:
    """``ollama.Client`` with an explicit timeout; JSON answers use the schema as ``format``."""

    kind = "ollama"

    def __init__(self, cfg: OllamaSettings):
        self.cfg = cfg
        self.name = f"ollama:{cfg.model}"

    def _chat(self, messages: Messages, fmt: dict[str, Any] | None) -> str:
        import httpx
        import ollama

        client = ollama.Client(host=self.cfg.host, timeout=self.cfg.timeout_s)
        try:
            resp = client.chat(model=self.cfg.model, messages=messages, format=fmt,
                               options=self.cfg.options.model_dump(), stream=False)
        except ConnectionError as exc:
            raise BackendFailed("unavailable", f"no Ollama server at {self.cfg.host}") from exc
        except httpx.TimeoutException as exc:
            raise BackendFailed("timeout", f"no answer within {self.cfg.timeout_s} s") from exc
        except ollama.ResponseError as exc:
            raise BackendFailed("http_error", f"HTTP {exc.status_code}") from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise BackendFailed("bad_response", type(exc).__name__) from exc
        finally:
            client.close()
        return _finish(resp.message.content or "", getattr(resp, "done_reason", None) == "length",
                       json_mode=fmt is not None)

    def chat_json(self, messages: Messages, schema: dict[str, Any]) -> str:
        return self._chat(messages, schema)

    def chat_text(self, messages: Messages) -> str:
        return self._chat(messages, None)


class LlamaCppBackend:
    """A GGUF file run in process by ``llama_cpp.Llama``, or an OpenAI-compatible local server
    (``llamacpp.server_url``) such as ``python -m llama_cpp.server``."""

    kind = "llamacpp"

    def __init__(self, cfg: LlamaCppSettings):
        self.cfg = cfg
        where = cfg.server_url or (cfg.gguf_path and cfg.gguf_path.rsplit("/", 1)[-1])
        self.name = f"llamacpp:{where or 'unconfigured'}"

    def _llama(self) -> Any:
        from pathlib import Path

        if not self.cfg.gguf_path:
            raise BackendFailed("unavailable", "no GGUF file configured (HCP_LOCAL_GGUF)")
        if not Path(self.cfg.gguf_path).is_file():
            raise BackendFailed("unavailable", f"GGUF file {self.cfg.gguf_path} not found")
        try:
            import llama_cpp
        except ImportError as exc:
            raise BackendFailed("unavailable", "llama-cpp-python is not installed") from exc
        key = (self.cfg.gguf_path, self.cfg.n_ctx, self.cfg.n_threads, self.cfg.seed)
        with _LLAMA_LOCK:
            if not _LLAMA:
                atexit.register(_close_models)
            if key not in _LLAMA:
                _LLAMA[key] = llama_cpp.Llama(model_path=self.cfg.gguf_path, n_ctx=self.cfg.n_ctx,
                                              n_threads=self.cfg.n_threads, seed=self.cfg.seed,
                                              verbose=False)
            return _LLAMA[key]

    def _complete(self, messages: Messages, response_format: dict[str, Any] | None) -> str:
        kwargs: dict[str, Any] = {"messages": messages, "temperature": 0.0,
                                  "max_tokens": self.cfg.max_tokens, "seed": self.cfg.seed}
        if response_format is not None:
            kwargs["response_format"] = response_format
        if self.cfg.server_url:
            return self._server(kwargs)
        llama = self._llama()
        with _LLAMA_LOCK:
            llama.reset()
            out = llama.create_chat_completion(**kwargs)
        choice = out["choices"][0]
        return _finish(choice["message"].get("content") or "",
                       choice.get("finish_reason") == "length", "response_format" in kwargs)

    def _server(self, kwargs: dict[str, Any]) -> str:
        import openai

        client = openai.OpenAI(api_key="local-server", base_url=self.cfg.server_url,
                               timeout=self.cfg.timeout_s, max_retries=0)
        try:
            out = client.chat.completions.create(model=self.cfg.server_model, **kwargs)
        except openai.APITimeoutError as exc:
            raise BackendFailed("timeout", f"no answer within {self.cfg.timeout_s} s") from exc
        except openai.APIConnectionError as exc:
            raise BackendFailed("unavailable", f"no server at {self.cfg.server_url}") from exc
        except openai.APIStatusError as exc:
            raise BackendFailed("http_error", f"HTTP {exc.status_code}") from exc
        finally:
            client.close()
        choice = out.choices[0]
        return _finish(choice.message.content or "", choice.finish_reason == "length",
                       "response_format" in kwargs)

    def chat_json(self, messages: Messages, schema: dict[str, Any]) -> str:
        return self._complete(messages, {"type": "json_object", "schema": schema})

    def chat_text(self, messages: Messages) -> str:
        return self._complete(messages, None)


class TemplateBackend:
    """Deterministic text from jinja2 templates over the computed facts; no model at all.

    It declines schema answers: an escalation must come from a model or not at all."""

    kind = "template"
    name = "template"

    def chat_json(self, messages: Messages, schema: dict[str, Any]) -> str:
        raise BackendFailed("declined", "the template writes text only; no escalation answer")

    def chat_text(self, messages: Messages) -> str:
        raise BackendFailed("declined", "the template renders facts, not prompts")


def make_backend(kind: str, cfg: Any) -> Any:
    """The backend of ``kind`` from the reasoner settings."""
    if kind == "ollama":
        return OllamaBackend(cfg.ollama)
    if kind == "llamacpp":
        return LlamaCppBackend(cfg.llamacpp)
    return TemplateBackend()
