"""The fallback chain: the configured backend first, then the next, the template last.

Every attempt is recorded (backend, status, prompt and response hashes); the backend that
answered is named in every output. A backend that is unreachable, times out, or answers
something that fails validation hands over to the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from tasks.config.escalation import ReasonerSettings
from tasks.reasoner.backends import make_backend
from tasks.reasoner.base import Attempt, BackendFailed, Messages
from tasks.reasoner.text import sha256_json, sha256_text

Parser = Callable[[str], tuple[BaseModel | None, str]]


@dataclass
class JsonResult:
    parsed: BaseModel | None
    backend: str | None
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class TextResult:
    text: str
    backend: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def by_template(self) -> bool:
        return self.backend == "template"


def answer_json(cfg: ReasonerSettings, messages: Messages, schema: dict[str, Any],
                parse: Parser) -> JsonResult:
    """The first valid schema answer down the chain (None when every backend failed)."""
    attempts = []
    prompt = sha256_json({"messages": messages, "schema": schema})
    for kind in cfg.order():
        backend = make_backend(kind, cfg)
        att = Attempt(backend=backend.name, status="", prompt_sha256=prompt)
        attempts.append(att)
        try:
            content = backend.chat_json(messages, schema)
        except BackendFailed as exc:
            att.status, att.detail = exc.status, exc.detail
            continue
        att.content, att.response_sha256 = content, sha256_text(content)
        parsed, why = parse(content)
        if parsed is None:
            att.status = "invalid_json" if why.startswith("invalid_json") else "schema_invalid"
            att.validation = why
            continue
        att.status, att.validation = "ok", "ok"
        return JsonResult(parsed, backend.name, attempts)
    return JsonResult(None, None, attempts)


def write_text(cfg: ReasonerSettings, messages: Messages, template: Callable[[], str]
               ) -> TextResult:
    """Free text from the first backend that answers; the template renders when none does."""
    attempts = []
    prompt = sha256_json({"messages": messages})
    for kind in cfg.order():
        backend = make_backend(kind, cfg)
        att = Attempt(backend=backend.name, status="", prompt_sha256=prompt)
        attempts.append(att)
        if kind == "template":
            text = template()
            att.status, att.response_sha256 = "ok", sha256_text(text)
            return TextResult(text, backend.name, attempts)
        try:
            text = " ".join(backend.chat_text(messages).split())
        except BackendFailed as exc:
            att.status, att.detail = exc.status, exc.detail
            continue
        if not text:
            att.status = "empty"
            continue
        text = text[: cfg.narrative_max_chars]
        att.status, att.response_sha256 = "ok", sha256_text(text)
        return TextResult(text, backend.name, attempts)
    text = template()  # a configuration without the template still gets a text
    return TextResult(text, "template", attempts)


def offline_alert(paths: Any, day: str, at: str, attempts: list[Attempt]) -> None:
    """The runbook's alert when every local model was tried and none was reachable."""
    from tasks.alerts import raise_alert

    models = [a for a in attempts if a.backend != "template"]
    if models and all(a.status in ("unavailable", "timeout") for a in models):
        raise_alert(paths, "reasoner_offline", session=day, at=at,
                    data={"tried": [f"{a.backend}: {a.status}" for a in models]})
