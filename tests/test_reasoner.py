"""The local reasoner's Ollama backend against a local server speaking Ollama's chat API
(recorded responses), the fallback chain and the answer cache."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tasks.alerts import read_alerts
from tasks.escalation.schemas import parse_response, response_schema
from tasks.escalation.service import escalate
from tasks.paths import Paths
from tasks.reasoner import jobs
from tasks.reasoner.chain import answer_json, write_text
from tasks.settings import load_settings
from tests.llm_fakes import FakeServer, completion, ollama_chat
from tests.test_escalation_remote import GOOD, request

MESSAGES = [{"role": "system", "content": "fixed"}, {"role": "user", "content": "data"}]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ollama():
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def cfg(monkeypatch, ollama, tmp_path):
    monkeypatch.setenv("HCP_HOME", str(tmp_path))
    monkeypatch.setenv("OLLAMA_HOST", ollama.url)
    monkeypatch.setenv("HCP_REASONER__OLLAMA__TIMEOUT_S", "0.5")
    monkeypatch.delenv("HCP_LOCAL_BACKEND", raising=False)
    monkeypatch.delenv("HCP_LOCAL_GGUF", raising=False)
    return load_settings()


def parse(content: str):
    return parse_response("REGIME_AUDITOR", content)


def test_ollama_answers_the_schema_with_format_options_and_no_tools(cfg, ollama):
    ollama.push(("json", ollama_chat(json.dumps(GOOD))))
    res = answer_json(cfg.reasoner, MESSAGES, response_schema("REGIME_AUDITOR"), parse)
    assert res.backend == "ollama:qwen2.5:14b-instruct" and res.parsed is not None
    sent = ollama.requests[0]
    assert sent["model"] == "qwen2.5:14b-instruct" and sent["stream"] is False
    assert sent["format"] == response_schema("REGIME_AUDITOR") and not sent.get("tools")
    assert {k: sent["options"][k] for k in ("num_ctx", "num_gpu", "num_thread", "num_batch")} == \
        {"num_ctx": 8192, "num_gpu": 35, "num_thread": 8, "num_batch": 512}
    assert res.attempts[0].status == "ok" and res.attempts[0].response_sha256


def test_a_hanging_ollama_times_out_and_the_chain_moves_on(cfg, ollama):
    ollama.push(("hang", 5))
    tick = time.perf_counter()
    res = answer_json(cfg.reasoner, MESSAGES, response_schema("REGIME_AUDITOR"), parse)
    assert time.perf_counter() - tick < 3
    assert res.parsed is None and res.backend is None
    assert [(a.backend.split(":")[0], a.status) for a in res.attempts] == [
        ("ollama", "timeout"), ("llamacpp", "unavailable"), ("template", "declined")]


@pytest.mark.parametrize("answer", ["{not json", json.dumps({**GOOD, "regime_label": "panic"})])
def test_an_invalid_local_answer_is_no_opinion(cfg, ollama, answer):
    ollama.push(("json", ollama_chat(answer)))
    res = answer_json(cfg.reasoner, MESSAGES, response_schema("REGIME_AUDITOR"), parse)
    assert res.parsed is None
    assert res.attempts[0].status in ("invalid_json", "schema_invalid")


def test_truncated_local_answer_is_refused(cfg, ollama):
    ollama.push(("json", ollama_chat(json.dumps(GOOD), done_reason="length")))
    res = answer_json(cfg.reasoner, MESSAGES, response_schema("REGIME_AUDITOR"), parse)
    assert res.parsed is None and res.attempts[0].status == "truncated"


def test_unreachable_backends_fall_back_to_the_template(monkeypatch, tmp_path):
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HCP_LOCAL_GGUF", str(tmp_path / "missing.gguf"))
    res = write_text(load_settings().reasoner, MESSAGES, lambda: "from the template")
    assert res.text == "from the template" and res.by_template
    assert [a.status for a in res.attempts] == ["unavailable", "unavailable", "ok"]
    paths = Paths(tmp_path)
    note = jobs._text_job(paths, load_settings(), "2011-08-08", "conflict", jobs.CONFLICT_SYSTEM,
                          {"symbol": "AAA", "action": "BUY", "regime": "low_vol", "score": 0.7,
                           "edge_short": 0.9, "edge_mid": 0.2, "spread": 0.2,
                           "base_models": {"rf": 0.1, "xgb": 0.3}, "gap_flag": True,
                           "spread_flag": True}, jobs.CONFLICT_TEMPLATE)
    assert note["backend"] == "template" and "spread 0.200" in note["text"]
    assert [a["code"] for a in read_alerts(paths)] == ["reasoner_offline"]


def test_backend_order_follows_the_configured_first_choice(monkeypatch):
    for first, order in [("ollama", ["ollama", "llamacpp", "template"]),
                         ("llamacpp", ["llamacpp", "ollama", "template"]),
                         ("template", ["template"])]:
        monkeypatch.setenv("HCP_LOCAL_BACKEND", first)
        assert load_settings().reasoner.order() == order


def test_escalate_falls_back_to_ollama_when_the_remote_fails(cfg, ollama, monkeypatch, tmp_path):
    with FakeServer() as remote:
        remote.push(("status", 503))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-x")
        monkeypatch.setenv("HCP_REMOTE_BASE_URL", remote.url + "/v1")
        ollama.push(("json", ollama_chat(json.dumps(GOOD))))
        out = escalate(Paths(tmp_path), load_settings(), session="2011-08-08",
                       at="2011-08-08T20:00:00Z", call_type="REGIME_AUDITOR", request=request(),
                       triggers={}, universe={"AAA"})
    assert out.status == "applied" and out.backend == "ollama:qwen2.5:14b-instruct"
    assert [a["status"] for a in out.attempts] == ["server_error", "ok"]
    assert ollama.requests[0]["messages"] == remote.requests[0]["messages"]


def test_text_answers_are_cached_per_session_and_prompt(cfg, ollama, tmp_path):
    ollama.push(("json", ollama_chat("  A short   note.\n")))
    paths, tpl = Paths(tmp_path), jobs.CONFLICT_TEMPLATE
    facts = {"symbol": "AAA", "action": "BUY", "regime": "low_vol", "score": 0.7,
             "edge_short": 0.9, "edge_mid": 0.2, "spread": 0.05, "base_models": {"rf": 0.1},
             "gap_flag": True, "spread_flag": False}
    first = jobs._text_job(paths, cfg, "2011-08-08", "conflict", jobs.CONFLICT_SYSTEM, facts, tpl)
    again = jobs._text_job(paths, cfg, "2011-08-08", "conflict", jobs.CONFLICT_SYSTEM, facts, tpl)
    assert first == again and first["text"] == "A short note."
    assert first["backend"].startswith("ollama") and len(ollama.requests) == 1
    other = jobs._text_job(paths, cfg, "2011-08-09", "conflict", jobs.CONFLICT_SYSTEM, facts, tpl)
    assert len(ollama.requests) == 2 and other["backend"] == "template"  # 500: template
    assert other["text"].startswith("AAA BUY: the horizons disagree (edge short 0.900 vs mid")


def test_remote_json_object_mode_for_local_servers(monkeypatch, tmp_path):
    from tasks.escalation.remote import request_kwargs

    monkeypatch.setenv("HCP_REMOTE__RESPONSE_FORMAT", "json_object")
    kw = request_kwargs(load_settings().remote, "SANITY_JUDGE", MESSAGES)
    assert kw["response_format"] == {"type": "json_object",
                                     "schema": response_schema("SANITY_JUDGE")}
    assert kw["max_tokens"] == 4000 and "max_completion_tokens" not in kw
    assert completion("x")["choices"][0]["message"]["content"] == "x"
