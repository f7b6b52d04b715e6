"""Notifications: sent to a local recording endpoint, retried after a failure, secrets kept out."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.alerts import raise_alert
from tasks.operator.notify import channels, dispatch_pending
from tasks.operator.settings import NotifySettings
from tasks.paths import Paths

TOKEN = "123456:SECRET-bot-token"


class Recorder(BaseHTTPRequestHandler):
    """Records every POST; answers 500 while ``fail`` is set."""

    requests: list[tuple[str, dict]] = []
    fail = False

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        self.send_response(500 if type(self).fail else 200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endpoint():
    Recorder.requests, Recorder.fail = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _env(base: str) -> dict[str, str]:
    return {"HCP_NOTIFY_WEBHOOK_URL": f"{base}/hook", "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_CHAT_ID": "42"}


def test_alerts_reach_webhook_and_telegram_once(tmp_path, endpoint) -> None:
    paths = Paths(tmp_path)
    cfg = NotifySettings(enabled=True, telegram_api=endpoint)
    raise_alert(paths, "kill_switch", session="2008-10-15", at="2008-10-15T15:30:00Z",
                level="CRITICAL", data={"daily_pnl": -0.027})
    raise_alert(paths, "data_stall", session="2008-10-15", at="2008-10-15T15:31:00Z")  # not sent
    res = dispatch_pending(paths, cfg, channels(cfg, _env(endpoint)))
    assert res.sent == 2 and res.channels == ["telegram", "webhook"]
    by_path = dict(Recorder.requests)
    assert by_path["/hook"]["code"] == "kill_switch" and by_path["/hook"]["data"]["daily_pnl"] == -0.027
    assert by_path[f"/bot{TOKEN}/sendMessage"] == {
        "chat_id": "42", "text": "[CRITICAL] 2008-10-15: Kill-switch armed—flattened; Demo tomorrow "
                                 "unless override"}
    again = dispatch_pending(paths, cfg, channels(cfg, _env(endpoint)))
    assert again.sent == 0 and len(Recorder.requests) == 2


def test_failed_channel_is_retried_then_given_up_and_token_never_written(tmp_path, endpoint,
                                                                           caplog) -> None:
    paths = Paths(tmp_path)
    cfg = NotifySettings(enabled=True, telegram_api=endpoint, max_attempts=2)
    raise_alert(paths, "health_error", session="S", at="T", level="ERROR", data={"errors": "x"})
    Recorder.fail = True
    first = dispatch_pending(paths, cfg, channels(cfg, _env(endpoint)))
    assert first.sent == 0 and sorted(first.failed) == ["telegram:health_error", "webhook:health_error"]
    Recorder.fail = False
    second = dispatch_pending(paths, cfg, channels(cfg, {"TELEGRAM_BOT_TOKEN": TOKEN,
                                                         "TELEGRAM_CHAT_ID": "42"}))
    assert second.sent == 1  # telegram delivered on retry
    Recorder.fail = True
    third = dispatch_pending(paths, cfg, channels(cfg, _env(endpoint)))
    assert third.given_up == ["webhook:health_error"]
    written = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert TOKEN not in written and TOKEN not in caplog.text


def test_disabled_or_unconfigured_sends_nothing(tmp_path, endpoint) -> None:
    paths = Paths(tmp_path)
    raise_alert(paths, "kill_switch", session="S", at="T")
    assert dispatch_pending(paths, NotifySettings(), channels(NotifySettings(), _env(endpoint))).sent == 0
    assert channels(NotifySettings(enabled=True), {}) == {}
    assert Recorder.requests == []
