"""Text that goes to a language model and its fingerprints, shared by the escalation calls and
the local reasoner's jobs: untrusted text scrubbed to one line, data fenced between markers
that the instructions name, sha256 of prompts and answers, and a session's as-of time."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

OPEN, CLOSE = "<<<DATA", "DATA>>>"
_MARKERS = re.compile(r"<<<|>>>|DATA>>>|<<<DATA")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def scrub(text: str, limit: int) -> str:
    """One line of untrusted text: control characters and data markers removed, truncated."""
    clean = _MARKERS.sub(" ", _CONTROL.sub(" ", str(text)))
    clean = " ".join(clean.split())
    return clean if len(clean) <= limit else clean[: max(0, limit - 1)] + "…"


def _scrub_all(obj: Any, limit: int) -> Any:
    if isinstance(obj, str):
        return scrub(obj, limit)
    if isinstance(obj, dict):
        return {k: _scrub_all(v, limit) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub_all(v, limit) for v in obj]
    return obj


def data_block(payload: dict[str, Any], limit: int) -> str:
    body = json.dumps(_scrub_all(payload, limit), sort_keys=True, ensure_ascii=False,
                      default=str)
    return f"{OPEN}\n{body}\n{CLOSE}"


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False,
                                     default=str).encode()).hexdigest()


def sha256_text(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def session_timestamp(day: str) -> str:
    """The session's close (16:00 New York) in UTC: the as-of time of its requests and alerts."""
    import pandas as pd

    ts = pd.Timestamp(f"{day} 16:00", tz="America/New_York").tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
