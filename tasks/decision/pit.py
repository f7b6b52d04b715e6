"""The policy in force at a past session, and a replay's root set to it (point in time).

A replay decides session D under the policy the live home had when D's plan began, never under
today's. :func:`policy_at` reads it from what the live home recorded, most specific first:

1. D's escalation record: the version its first daily call started from;
2. D's daily run record: the version its plan was made with (no daily call changed it);
3. the policy history: the last change in force at D (an escalation's version from its
   session on, any other change from the first session after the day it was recorded);
4. the configured default (``policy:`` in config/app.yaml) when the history has no earlier
   change.

:func:`adopt` makes that version current in the replay's own root (copied, hash-checked) and
copies D's live escalation record there, so a session escalated live reuses its recorded
answers instead of asking again, and ends on the policy it ended on live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tasks.escalation.daily import DAILY_CALLS
from tasks.escalation.record import read_record, record_path
from tasks.io import atomic_write_json
from tasks.paths import Paths
from tasks.plan import runs
from tasks.policy import (
    Policy,
    default_policy,
    effective_session,
    history,
    load_version,
    make_current,
    policy_version,
    read_pointer,
    store_version,
)
from tasks.settings import AppSettings


@dataclass(frozen=True)
class PolicyAt:
    """The policy a session's plan started from, and where that was read."""

    policy: Policy
    version: str
    source: str


def policy_at(home: Paths, settings: AppSettings, day: str) -> PolicyAt:
    """The policy the live ``home`` had in force when session ``day``'s plan began."""
    calls = [c for c in read_record(home, day)["calls"] if c["call_type"] in DAILY_CALLS]
    if calls:
        version = calls[0]["policy_before"]
        return PolicyAt(load_version(home, settings, version), version,
                        f"escalation record of {day}")
    run = runs.record_path(home, day)
    if run.is_file():
        version = json.loads(run.read_text()).get("key_parts", {}).get("policy")
        if version:
            return PolicyAt(load_version(home, settings, version), version,
                            f"daily run record of {day}")
    in_force = None
    for entry in history(home):
        when, inclusive = effective_session(entry)
        if when < day or (inclusive and when == day):
            in_force = entry
    if in_force is not None:
        return PolicyAt(load_version(home, settings, in_force["version"]), in_force["version"],
                        f"policy history ({in_force.get('event')} recorded {in_force.get('at')})")
    policy = default_policy(settings)
    return PolicyAt(policy, policy_version(policy), "configured default (no earlier change)")


def adopt(root: Paths, settings: AppSettings, day: str, pit: PolicyAt,
          live: Paths | None = None) -> None:
    """Make ``pit`` the version in force under ``root`` for session ``day``; with ``live``,
    copy the live escalation record of ``day`` (and the versions it names) into ``root``
    when ``root`` has none, so its recorded answers are reused."""
    when = f"{day}T00:00:00Z"  # the session's date: a root's history is the same bytes each time
    if live is not None and not record_path(root, day).is_file():
        record = read_record(live, day)
        if record["calls"]:
            for call in record["calls"]:
                for v in (call.get("policy_before"), call.get("policy_after")):
                    if v:
                        store_version(root, load_version(live, settings, v), None,
                                      f"copied from the live home ({call['call_type']} of {day})",
                                      when)
            atomic_write_json(record_path(root, day), record)
    store_version(root, pit.policy, None, f"in force at {day}: {pit.source}", when)
    if read_pointer(root) != pit.version:
        make_current(root, pit.version, when=when, event="point_in_time", effective=day,
                     reason=f"policy in force at {day}: {pit.source}")
