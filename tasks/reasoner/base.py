"""What every reasoner backend offers, and the record of one attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class BackendFailed(Exception):
    """A backend could not answer; ``status`` says how (unavailable, timeout, truncated, ...)."""

    def __init__(self, status: str, detail: str = ""):
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status = status
        self.detail = detail


@dataclass
class Attempt:
    """One try of one backend: what was sent (hash), what came back (hash) and the verdict."""

    backend: str
    status: str
    detail: str = ""
    prompt_sha256: str | None = None
    response_sha256: str | None = None
    validation: str = "not run"
    budget: dict[str, int] | None = None
    content: str | None = field(default=None, repr=False)  # kept in memory, never written

    def record(self) -> dict[str, Any]:
        return {"backend": self.backend, "status": self.status, "detail": self.detail,
                "prompt_sha256": self.prompt_sha256, "response_sha256": self.response_sha256,
                "validation": self.validation, "budget": self.budget}


Messages = list[dict[str, str]]


class Backend(Protocol):
    """A local model (or the template) behind one interface."""

    kind: str   # ollama | llamacpp | template
    name: str   # kind plus model, as recorded in every output

    def chat_json(self, messages: Messages, schema: dict[str, Any]) -> str:
        """Raw content of a schema-constrained answer; raises :class:`BackendFailed`."""
        ...

    def chat_text(self, messages: Messages) -> str:
        """Raw content of a free-text answer; raises :class:`BackendFailed`."""
        ...
