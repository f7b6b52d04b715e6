"""The kill switch's SANITY_JUDGE call: the intraday hook wired to the escalation service
(:func:`tasks.escalation.service.escalate`; execution sits above escalation in the layers).

The intraday engine calls :func:`sanity_judge_hook` when the kill switch trips. The request is
the runbook's SANITY_JUDGE fields filled by the engine; the answer goes through the same
budget, fallback chain, strict validation and bounds as every escalation (alerts for a remote
failure or an offline reasoner are raised there). The engine clears a quarantine only when the
returned ``response.stay_demo`` is False, which the bounds allow only from the remote model.
"""

from __future__ import annotations

from typing import Any

from tasks.escalation.schemas import SanityJudgeRequest
from tasks.escalation.service import escalate
from tasks.execution.killswitch import SanityJudgeCall, default_sanity_judge
from tasks.paths import Paths
from tasks.settings import AppSettings


def accepted_stay_demo(outcome_bounded: dict[str, Any] | None, response: Any) -> bool | None:
    """The answer's ``stay_demo`` unless the bounds rejected it (None: no opinion)."""
    if response is None:
        return None
    rejected = {r["field"] for r in (outcome_bounded or {}).get("rejected", [])}
    return None if "stay_demo" in rejected else getattr(response, "stay_demo", None)


def sanity_judge_hook(paths: Paths, settings: AppSettings, call: SanityJudgeCall) -> dict[str, Any]:
    """Escalate SANITY_JUDGE for the session; what the engine stores in the kill-switch state."""
    if not settings.escalation.enabled:
        return default_sanity_judge(paths, settings, call)
    outcome = escalate(paths, settings, session=call.session, at=call.at, call_type="SANITY_JUDGE",
                       request=SanityJudgeRequest(**call.request), triggers=call.triggers)
    stay = accepted_stay_demo(outcome.bounded, outcome.response)
    return {"call_type": "SANITY_JUDGE", "escalation": outcome.status,
            "answered_by": outcome.backend, "reused": outcome.reused,
            "policy_before": outcome.policy_before, "policy_after": outcome.policy_after,
            "response": None if stay is None else {"stay_demo": stay},
            "reason": f"SANITY_JUDGE ({outcome.backend}) answered stay_demo: {stay}"}
