"""The runbook's failure modes as the intraday session sees them: detection, action, alert.

- **data stall**: no new bar for ``execution.data_stall_seconds`` (the whole feed, or one
  symbol with a working entry) -> hold state, cancel new (entry) orders, keep stops working;
  alert ``data_stall``.
- **local reasoner offline**: the flow's reasoner probe says offline, or the SANITY_JUDGE
  outcome came from no reasoner -> freeze feature toggles (the session keeps the policy version
  it started with); alert ``reasoner_offline``.
- **RL model missing**: the plan's ``size:rl_missing`` tags -> predictors only, sizes halved
  (done by the daily plan, not halved again); alert ``rl_missing``.
- **remote LLM failure**: the SANITY_JUDGE hook raised, or its outcome used a local fallback
  -> local fallback, the attempt is kept in the kill-switch state; alert ``remote_unavailable``.

Each detector is a pure function returning a :class:`Failure` (or None); the engine records it in
the session state and raises its alert once per session and key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Failure:
    mode: str
    action: str
    alert: str
    key: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def record(self, at: str) -> dict[str, Any]:
        return {**asdict(self), "at": at}


def data_stall(gap_seconds: float, limit: float, at: str, scope: str) -> Failure | None:
    """A gap between bars longer than the limit (scope: 'feed' or a symbol)."""
    if gap_seconds <= limit:
        return None
    return Failure("data_stall", "hold state, cancel new orders, keep stops", "data_stall",
                   key=f"{scope}:{at}", data={"scope": scope, "gap_seconds": gap_seconds,
                                              "limit_seconds": limit})


def feed_ended(last_bar: str | None) -> Failure:
    """The feed ended before the session's close (its last bar: ``last_bar``, None: no bar)."""
    return Failure("data_stall", "hold state, cancel new orders, keep stops", "data_stall",
                   key=f"feed_end:{last_bar}", data={"scope": "feed_end", "last_bar": last_bar})


def rl_missing(plan: pd.DataFrame) -> Failure | None:
    """The plan was sized without an RL hint (its rows carry size:rl_missing)."""
    if plan is None or plan.empty or "reason_tags" not in plan:
        return None
    hit = plan["reason_tags"].fillna("").str.contains("size:rl_missing", regex=False)
    if not hit.any():
        return None
    return Failure("rl_missing", "predictors only, position sizes halved (in the plan)",
                   "rl_missing", data={"rows": int(hit.sum())})


def reasoner_offline(online: bool | None, source: str) -> Failure | None:
    """The local reasoner is known to be offline (None = not checked: no failure)."""
    if online is not False:
        return None
    return Failure("reasoner_offline", "template texts, freeze feature toggles; the plan keeps "
                   "its deterministic fusion (predictors, plus the RL hint only where one exists)",
                   "reasoner_offline", key=source, data={"source": source})


def from_judge_outcome(result: dict[str, Any] | None, error: str | None) -> list[Failure]:
    """Failures shown by the SANITY_JUDGE call: the hook raised, or fell back / found nothing."""
    out = []
    backend = str((result or {}).get("backend") or "")
    status = str((result or {}).get("status") or "")
    if error or backend in ("local", "template", "none") or status in ("remote_failed", "fallback"):
        out.append(Failure("remote_failure", "local reasoner fallback; attempt logged",
                           "remote_unavailable", key="SANITY_JUDGE",
                           data={"call_type": "SANITY_JUDGE", "error": error, "status": status,
                                 "backend": backend or None}))
    if backend in ("template", "none") or status == "no_backend":
        out.append(Failure("reasoner_offline", "template texts, freeze feature toggles; the plan "
                           "keeps its deterministic fusion (predictors, plus the RL hint only "
                           "where one exists)",
                           "reasoner_offline", key="SANITY_JUDGE", data={"backend": backend}))
    return out
