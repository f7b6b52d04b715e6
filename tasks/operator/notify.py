"""Optional notifications: alerts from ``data/state/alerts.jsonl`` sent to a webhook and/or Telegram.

Off by default. Sending is decoupled from raising: flows append alerts, and
:func:`dispatch_pending` sends those not yet delivered, so a channel that is down loses nothing
(the alert is retried at the next dispatch, up to ``max_attempts`` times per channel).
Delivery state lives in ``data/state/notify_state.json``. Secrets come only from the
environment; error messages never contain a URL (a Telegram URL carries the bot token).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from tasks.alerts import alerts_path, read_alerts
from tasks.io import atomic_write_json
from tasks.operator.settings import NotifySettings
from tasks.paths import Paths

log = logging.getLogger("hcp.notify")

Sender = Callable[[dict[str, Any]], None]


@dataclass
class DispatchResult:
    """What one dispatch did: alerts sent, failed (kept for retry) and given up, per channel."""

    channels: list[str]
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)


def alert_id(alert: dict[str, Any]) -> str:
    """Stable id of an alert record."""
    return hashlib.sha256(json.dumps(alert, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _post(url: str, payload: dict[str, Any], timeout: float) -> None:
    try:
        resp = httpx.post(url, json=payload, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"{type(exc).__name__} (no response)") from None
    if resp.status_code >= 300:
        raise RuntimeError(f"HTTP {resp.status_code}")


def channels(cfg: NotifySettings, env: Mapping[str, str] | None = None) -> dict[str, Sender]:
    """The channels configured in the environment: ``webhook`` and/or ``telegram``."""
    env = os.environ if env is None else env
    out: dict[str, Sender] = {}
    if url := env.get(cfg.webhook_url_env):
        out["webhook"] = lambda alert: _post(url, alert, cfg.timeout_s)
    token, chat = env.get(cfg.telegram_token_env), env.get(cfg.telegram_chat_env)
    if token and chat:
        api = f"{cfg.telegram_api.rstrip('/')}/bot{token}/sendMessage"
        out["telegram"] = lambda alert: _post(
            api, {"chat_id": chat, "text": f"[{alert['level']}] {alert['session']}: {alert['text']}"},
            cfg.timeout_s)
    return out


def _state_path(paths: Paths):
    return paths.data / "state" / "notify_state.json"


def _load_state(paths: Paths) -> dict[str, Any]:
    path = _state_path(paths)
    if not path.is_file():
        return {"done": {}, "attempts": {}}
    return json.loads(path.read_text())


def dispatch_pending(paths: Paths, cfg: NotifySettings,
                     senders: dict[str, Sender] | None = None) -> DispatchResult:
    """Send every alert of a configured code not yet delivered on each channel."""
    senders = channels(cfg) if senders is None else senders
    result = DispatchResult(sorted(senders))
    if not cfg.enabled or not senders or not alerts_path(paths).is_file():
        return result
    state = _load_state(paths)
    for alert in read_alerts(paths):
        if alert.get("code") not in cfg.codes:
            continue
        aid = alert_id(alert)
        for name, send in senders.items():
            key = f"{aid}:{name}"
            if key in state["done"]:
                continue
            tries = state["attempts"].get(key, 0)
            if tries >= cfg.max_attempts:
                continue
            try:
                send(alert)
            except RuntimeError as exc:
                state["attempts"][key] = tries + 1
                gave_up = tries + 1 >= cfg.max_attempts
                (result.given_up if gave_up else result.failed).append(f"{name}:{alert['code']}")
                log.warning("notification %s of %s failed (%s)%s", name, alert["code"], exc,
                            "; giving up" if gave_up else "; will retry")
                continue
            state["done"][key] = alert["at"]
            result.sent += 1
    atomic_write_json(_state_path(paths), state)
    return result


def notify_pending(paths: Paths, settings: Any) -> DispatchResult:
    """What a flow calls at its end: send pending alerts if notifications are on (never raises)."""
    cfg = settings.operator.notify
    if not cfg.enabled:
        return DispatchResult([])
    try:
        return dispatch_pending(paths, cfg)
    except (OSError, ValueError) as exc:  # a broken state file must not fail a trading flow
        log.error("notification dispatch failed: %s", exc)
        return DispatchResult([], failed=["dispatch"])
