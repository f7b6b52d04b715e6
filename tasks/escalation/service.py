"""``escalate``: one call type for one session, through the fallback chain, into a policy version.

remote LLM (budgeted) -> the local reasoner with the same schema -> no change and an alert.
A valid answer is bounded (:mod:`tasks.escalation.bounds`) and, when that changes anything,
stored as a new policy version made current; the plan of the session and every later one use
it, and the hard clamps check it again. A session that already has an answer for the call
type reuses it: no request is sent and the policy is not touched again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.alerts import raise_alert
from tasks.escalation import record as rec
from tasks.escalation.bounds import bound
from tasks.escalation.budget import read_budget
from tasks.escalation.prompts import build_messages, sha256_json
from tasks.escalation.remote import ask_remote
from tasks.escalation.schemas import RESPONSES, parse_response, response_schema
from tasks.paths import Paths
from tasks.policy import (
    Policy,
    current_policy,
    diff_policies,
    policy_lock,
    save_policy,
    store_version,
)
from tasks.reasoner.base import Attempt
from tasks.reasoner.chain import answer_json, offline_alert
from tasks.settings import AppSettings

log = logging.getLogger("hcp.escalation")


@dataclass
class EscalationOutcome:
    """What one escalation decided.

    ``status``: applied (a new policy version), no_change (a valid answer that changed nothing
    once bounded), no_opinion (no backend gave a valid answer: nothing applied, alert raised).
    ``response`` is the validated answer (None = no opinion); ``bounded`` holds the applied
    deltas and what was clipped or rejected; ``changes`` the policy fields replaced.
    """

    session: str
    call_type: str
    status: str
    backend: str | None
    response: BaseModel | None
    changes: dict[str, Any]
    bounded: dict[str, Any]
    policy_before: str
    policy_after: str
    reused: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)


def escalate(paths: Paths, settings: AppSettings, *, session: str, at: str, call_type: str,
             request: BaseModel, triggers: dict[str, Any],
             universe: set[str] | None = None) -> EscalationOutcome:
    """Escalate ``call_type`` for ``session`` (see the module docstring).

    ``universe``: symbols a do-not-trade addition may name (default: the store's constituents).
    """
    with rec.session_lock(paths, session):
        stored = rec.stored_call(rec.read_record(paths, session), call_type)
        if stored is not None:
            log.info("%s %s: stored answer reused, no call", session, call_type)
            return _outcome(session, stored, reused=True)
        messages = build_messages(call_type, request, settings)
        attempts, parsed, backend = _ask(paths, settings, session, at, call_type, messages)
        entry = {"call_type": call_type, "at": at, "triggers": triggers,
                 "request_sha256": sha256_json(request.model_dump(mode="json")),
                 "attempts": [a.record() for a in attempts], "backend": backend,
                 "response": parsed.model_dump(mode="json") if parsed is not None else None}
        with policy_lock(paths):  # bound against, and change, the version in force now
            policy, before = current_policy(paths, settings)
            entry["policy_before"] = before
            entry.update(_apply(paths, settings, session, at, call_type, parsed, policy, before,
                                backend, universe))
        before = entry["policy_before"]
        limit = settings.escalation.max_calls_per_session
        budget = {k: v for k, v in read_budget(paths, session, limit).items()
                  if k in ("used", "limit")}
        rec.add_call(paths, session, entry, budget)
        log.info("%s %s: %s by %s, policy %s -> %s", session, call_type, entry["status"],
                 backend, before, entry["policy_after"])
        return _outcome(session, entry, reused=False)


def recorded_path(paths: Paths, session: str) -> Path:
    """Answers recorded elsewhere for ``session`` (a backtest copies the live home's record
    here): asked before any backend, so a session escalated live reuses its live answer."""
    return paths.reports / "escalations" / "recorded" / f"{session}.json"


def _recorded(paths: Paths, session: str, call_type: str
              ) -> tuple[list, BaseModel | None, str | None] | None:
    """The recorded answer of ``call_type`` for ``session`` (None when there is none): bounded
    again against the policy in force here, with the backend that gave it live."""
    path = recorded_path(paths, session)
    if not path.is_file():
        return None
    stored = rec.stored_call(json.loads(path.read_text()), call_type)
    if stored is None or stored.get("response") is None:
        return None
    parsed, why = parse_response(call_type, json.dumps(stored["response"]))
    if parsed is None:
        return None
    backend = str(stored.get("backend") or "unknown")
    attempt = Attempt(backend=f"recorded:{backend}", status="ok",
                      detail=f"the answer recorded for {session} ({path.name})",
                      validation="ok")
    return [attempt], parsed, backend


def _ask(paths: Paths, settings: AppSettings, session: str, at: str, call_type: str,
         messages: list[dict[str, str]]) -> tuple[list, BaseModel | None, str | None]:
    """A recorded answer (a backtest of a session escalated live), else the remote first, then
    the local chain; alerts for every hand-over."""
    recorded = _recorded(paths, session, call_type)
    if recorded is not None:
        return recorded
    limit = settings.escalation.max_calls_per_session
    remote, parsed = ask_remote(paths, settings.remote, limit, session=session, at=at,
                                call_type=call_type, messages=messages)
    label = "GPT-5" if settings.remote.model == "gpt-5" else settings.remote.model
    data = {"call_type": call_type, "status": remote.status, "remote": label}
    if remote.budget and remote.status != "budget_exhausted":
        raise_alert(paths, "escalation", session=session, at=at, level="INFO", key=call_type,
                    data={**data, **remote.budget})
    if remote.status == "budget_exhausted":
        raise_alert(paths, "budget_exhausted", session=session, at=at, level="WARN",
                    key=call_type, data={**data, **(remote.budget or {})})
    if parsed is not None:
        return [remote], parsed, remote.backend
    raise_alert(paths, "remote_unavailable", session=session, at=at, level="WARN",
                key=call_type, data=data)
    local = answer_json(settings.reasoner, messages, response_schema(call_type),
                        partial(parse_response, call_type))
    offline_alert(paths, session, at, local.attempts)
    return [remote, *local.attempts], local.parsed, local.backend


def _apply(paths: Paths, settings: AppSettings, session: str, at: str, call_type: str,
           parsed: BaseModel | None, policy: Policy, before: str, backend: str | None,
           universe: set[str] | None) -> dict[str, Any]:
    """Bound the answer and store the resulting policy version (fields of the record entry)."""
    if parsed is None:
        raise_alert(paths, "escalation_no_change", session=session, at=at, level="ERROR",
                    key=call_type, data={"call_type": call_type})
        return {"status": "no_opinion", "bounded": None, "changes": {}, "policy_after": before,
                "policy_diff": ""}
    bounded = bound(call_type, parsed, policy, settings, universe or _universe(paths),
                    remote=bool(backend and backend.startswith("remote:")))
    try:
        new = bounded.apply(policy)
    except ValueError as exc:  # the bounds should make this impossible; refuse, never guess
        bounded.reject("policy", None, f"bounded policy failed validation: {str(exc)[:200]}")
        bounded.changes, new = {}, policy
    if new == policy:
        return {"status": "no_change", "bounded": bounded.as_dict(), "changes": {},
                "policy_after": before, "policy_diff": ""}
    store_version(paths, policy, None, "policy in force before the first escalation", at)
    after = save_policy(paths, new, before, f"{call_type} escalation of {session} ({backend})",
                        at, effective=session)
    return {"status": "applied", "bounded": bounded.as_dict(), "changes": bounded.changes,
            "policy_after": after, "policy_diff": diff_policies(policy, new, before, after)}


def _universe(paths: Paths) -> set[str]:
    from tasks.data.store import StoreError, load_constituents

    try:
        return set(load_constituents(paths.store)["symbol"].astype(str))
    except (StoreError, FileNotFoundError, KeyError):
        return set()


def _outcome(session: str, entry: dict[str, Any], reused: bool) -> EscalationOutcome:
    answer = entry.get("response")
    model = RESPONSES[entry["call_type"]].model_validate(answer) if answer is not None else None
    bounded = entry.get("bounded") or {}
    return EscalationOutcome(session, entry["call_type"], entry["status"], entry["backend"],
                             model, entry.get("changes", {}), bounded, entry["policy_before"],
                             entry["policy_after"], reused, entry["attempts"])
