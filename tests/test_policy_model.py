"""The policy is a typed, frozen model: stored versions are validated strictly (wrong types and
unknown fields are refused naming the file), ids of stored versions are unchanged, and a policy
round-trips through its stored JSON."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.escalation.bounds import bound
from tasks.escalation.schemas import SanityJudgeResponse
from tasks.io import atomic_write_json, to_json_bytes
from tasks.paths import Paths
from tasks.plan.build import SessionInputs
from tasks.policy import (
    Policy,
    current_policy,
    default_policy,
    diff_policies,
    list_versions,
    load_version,
    make_current,
    policy_dir,
    policy_settings,
    policy_version,
    read_version,
    rollback,
    save_policy,
    store_version,
)
from tasks.risk.clamps import Book
from tasks.settings import load_settings
from tasks.statefiles import StateFileError

SETTINGS = load_settings()

# the JSON of the configured first version as the policy was stored before it was typed
DEFAULT_JSON = {
    "blend_weights": {"short": 0.4, "mid": 0.3, "rl": 0.3},
    "gates": {"low_vol": 0.6, "med_vol": 0.62, "high_vol": 0.65},
    "do_not_trade": [],
    "reward_coefficients": {"returns": 0.6, "turnover": 0.2, "drawdown": 0.2},
    "disabled_features": [],
    "bucket_caps": {"core": 0.9, "penny": 0.02, "fno": 0.05},
    "turnover_penalties": {"penalty_rate": 0.01},
    "stay_demo": None,
    "live_changes": {},
}
DEFAULT_ID = "pol-fad8e53d44bc"

# an escalated version as the untyped code wrote it: every field changed
ESCALATED_JSON = {
    **DEFAULT_JSON,
    "blend_weights": {"short": 0.5, "mid": 0.2, "rl": 0.3},
    "do_not_trade": ["AAA", "BBB"],
    "reward_coefficients": {"returns": 0.5, "turnover": 0.25, "drawdown": 0.25},
    "disabled_features": ["news_sentiment", "vol_z"],
    "bucket_caps": {"core": 0.85, "penny": 0.015, "fno": 0.05},
    "turnover_penalties": {"penalty_rate": 0.02},
    "stay_demo": True,
    "live_changes": {"max_position_pct": 0.01, "stop_multipliers": {"atr": 1.5, "trailing": 1.0}},
}


def old_id(policy_json: dict) -> str:
    """The id formula of the untyped code."""
    return "pol-" + hashlib.sha256(to_json_bytes(policy_json)).hexdigest()[:12]


def write_version(paths: Paths, policy_json: dict, version: str | None = None) -> str:
    """A version file as the untyped code wrote it (the id hashes the JSON given)."""
    version = version or old_id(policy_json)
    atomic_write_json(policy_dir(paths) / f"{version}.json", {
        "version": version, "parent": None, "reason": "written by hand",
        "created_at": "2020-01-02T21:00:00Z", "policy": policy_json})
    return version


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths(tmp_path)


# --------------------------------------------------------------------------- ids unchanged

def test_the_default_policy_keeps_its_id():
    policy = default_policy(SETTINGS)
    assert isinstance(policy, Policy)
    assert old_id(DEFAULT_JSON) == DEFAULT_ID
    assert policy_version(Policy()) == DEFAULT_ID
    assert policy_version(policy) == old_id(SETTINGS.policy.model_dump(mode="json"))
    assert to_json_bytes(Policy().to_json()) == to_json_bytes(DEFAULT_JSON)


@pytest.mark.parametrize("policy_json", [
    ESCALATED_JSON,
    {**DEFAULT_JSON, "live_changes": {"max_position_pct": 0.005}},   # a partial live change
    {**DEFAULT_JSON, "live_changes": {"stop_multipliers": {"atr": 1.2}}},
    {**DEFAULT_JSON, "stay_demo": False},
], ids=["escalated", "per-name cap only", "one stop only", "demo cleared"])
def test_a_version_stored_before_the_model_keeps_its_id(paths, policy_json):
    version = write_version(paths, policy_json)
    stored = (policy_dir(paths) / f"{version}.json").read_bytes()
    policy = read_version(paths, version)
    assert isinstance(policy, Policy) and policy.to_json() == policy_json
    assert policy_version(policy) == version
    # storing it again is a no-op: same id, same bytes
    assert store_version(paths, policy, None, "again", "t") == version
    assert (policy_dir(paths) / f"{version}.json").read_bytes() == stored
    make_current(paths, version, when="2020-01-03T00:00:00Z", event="point_in_time",
                 reason="test")
    assert current_policy(paths, SETTINGS) == (policy, version)
    assert [r["version"] for r in list_versions(paths, SETTINGS)] == [DEFAULT_ID, version]


def test_saving_writes_the_json_the_untyped_code_wrote(paths):
    policy = Policy.parse(ESCALATED_JSON)
    version = save_policy(paths, policy, DEFAULT_ID, "test", "2020-01-02T21:00:00Z")
    assert version == old_id(ESCALATED_JSON)
    meta = json.loads((policy_dir(paths) / f"{version}.json").read_text())
    assert meta["policy"] == ESCALATED_JSON
    assert to_json_bytes(meta["policy"]) == to_json_bytes(ESCALATED_JSON)


# --------------------------------------------------------------------------- types enforced

@pytest.mark.parametrize(("change", "where"), [
    ({"blend_weights": {"short": "0.5", "mid": 0.2, "rl": 0.3}}, "policy.blend_weights.short"),
    ({"stay_demo": "yes"}, "policy.stay_demo"),
    ({"do_not_trade": "AAA"}, "policy.do_not_trade"),
    ({"gates": {"low_vol": True, "med_vol": 0.62, "high_vol": 0.65}}, "policy.gates.low_vol"),
    ({"live_changes": {"max_position_pct": "0.01"}}, "policy.live_changes.max_position_pct"),
    ({"bucket_caps": {"core": 0.9, "penny": 0.02, "fno": 0.05, "crypto": 0.1}},
     "policy.bucket_caps"),
    ({"colour": "red"}, "policy.colour"),
    ({"live_changes": {"max_position_pct": 0.01, "leverage": 3}}, "policy.live_changes.leverage"),
], ids=["string weight", "string flag", "string list", "bool gate", "string live change",
        "unknown bucket", "unknown field", "unknown live change"])
def test_a_stored_version_of_the_wrong_type_is_refused_naming_the_file(paths, change, where):
    version = write_version(paths, {**DEFAULT_JSON, **change})  # the id matches the content
    path = policy_dir(paths) / f"{version}.json"
    with pytest.raises(StateFileError) as exc:
        read_version(paths, version)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: not a policy at {where}")
    with pytest.raises(StateFileError, match="not a policy"):
        load_version(paths, SETTINGS, version)
    with pytest.raises(StateFileError, match="not a policy"):
        make_current(paths, version, when="t", event="point_in_time", reason="test")


def test_a_value_stored_unlike_the_policy_writes_it_is_refused(paths):
    """An int where the policy writes a float: its id would not be the policy's own."""
    version = write_version(paths, {**DEFAULT_JSON, "bucket_caps": {"core": 0, "penny": 0.02,
                                                                    "fno": 0.05}})
    with pytest.raises(StateFileError, match="not stored as a policy writes itself "
                                             r"\(bucket_caps differ"):
        read_version(paths, version)


def test_a_policy_is_validated_and_frozen():
    policy = Policy()
    with pytest.raises(ValidationError):
        policy.blend_weights = {"short": 1.0}  # type: ignore[misc]
    with pytest.raises(ValidationError, match="above the hard limits"):
        policy.replace(bucket_caps={"core": 0.95, "penny": 0.02, "fno": 0.05})
    with pytest.raises(ValidationError, match="not toggleable"):
        policy.replace(disabled_features=["macd"])
    with pytest.raises(ValidationError, match="finite"):
        policy.replace(gates={"low_vol": float("nan"), "med_vol": 0.6, "high_vol": 0.6})
    with pytest.raises(ValidationError):
        policy.replace(live_changes={"max_position_pct": 0.5})  # above every per-name cap
    with pytest.raises(ValidationError):
        Policy.parse({**DEFAULT_JSON, "unknown": 1})
    with pytest.raises(ValidationError):  # model_copy(update=...) validates too
        policy.model_copy(update={"stay_demo": "no"})
    copied = policy.model_copy(update={"live_changes": {"max_position_pct": 0.004}})
    assert copied.live_changes.max_position_pct == 0.004 and policy.model_copy() == policy
    with pytest.raises(TypeError, match="must be a Policy"):
        SessionInputs(as_of=pd.Timestamp("2020-06-30"), features=pd.DataFrame(),
                      scores=pd.DataFrame(), payoff={}, thresholds={}, model_id="m",
                      policy=dict(DEFAULT_JSON), policy_version=DEFAULT_ID, book=Book(1.0))


# --------------------------------------------------------------------------- round trip

def test_round_trip_through_the_stored_json(paths):
    policy = Policy.parse(ESCALATED_JSON)
    assert Policy.parse(policy.to_json()) == policy
    assert Policy.parse(json.loads(to_json_bytes(policy.to_json()))) == policy
    version = save_policy(paths, policy, None, "test", "2020-01-02T21:00:00Z")
    assert load_version(paths, SETTINGS, version) == policy
    assert load_version(paths, SETTINGS, DEFAULT_ID) == default_policy(SETTINGS)
    assert rollback(paths, SETTINGS, DEFAULT_ID, "2020-01-03T00:00:00Z", "test") == DEFAULT_ID
    assert current_policy(paths, SETTINGS) == (default_policy(SETTINGS), DEFAULT_ID)
    diff = diff_policies(Policy(), policy, DEFAULT_ID, version)
    assert '-    "short": 0.4\n' in diff and '+    "short": 0.5\n' in diff


def test_typed_reads_give_what_the_dict_reads_gave():
    policy = Policy.parse(ESCALATED_JSON)
    assert policy.live_changes.max_position_pct == 0.01
    assert policy.live_changes.stop_multipliers is not None
    assert policy.live_changes.stop_multipliers.trailing == 1.0
    risk = policy_settings(SETTINGS, policy).risk
    assert risk.cap("core") == 0.85 and risk.cap("penny") == 0.015
    assert risk.name_cap("core") == 0.01 and risk.name_cap("penny") == 0.004
    assert risk.initial_stop_atr == 1.5 and risk.trailing_stop_atr == 1.0
    assert policy_settings(SETTINGS, Policy()) == SETTINGS
    assert policy_settings(SETTINGS, None) is SETTINGS


def test_an_escalation_gives_the_policy_json_the_untyped_code_gave():
    resp = SanityJudgeResponse.model_validate({
        "stay_demo": True, "live_changes": {"max_position_pct": 0.004,
                                            "stop_multipliers": {"atr": 1.4, "trailing": 0.9}}})
    out = bound("SANITY_JUDGE", resp, Policy(), SETTINGS, set())
    new = out.apply(Policy())
    assert isinstance(new, Policy)
    assert new.to_json() == {**DEFAULT_JSON, **out.changes}
    assert policy_version(new) == old_id({**DEFAULT_JSON, **out.changes})
    assert out.apply(new) == new and policy_version(out.apply(new)) == policy_version(new)
