"""Settings of the operator surface: the status service and optional notifications.

Secrets (the operator token, webhook URL, Telegram bot token) are never settings: they are
read from the environment variables named here, so no config file or log holds them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotifySettings(_Section):
    enabled: bool = Field(False, description="Send alerts to the configured channels (off by default).")
    codes: list[str] = Field(
        ["kill_switch", "quarantine_activated", "quarantine_cleared", "escalation",
         "escalation_no_change", "budget_exhausted", "remote_unavailable", "health_error",
         "forced_demo", "empty_book"],
        description="Alert codes that are sent (see tasks/alerts.py).")
    webhook_url_env: str = Field(
        "HCP_NOTIFY_WEBHOOK_URL", description="Env var holding a webhook URL (JSON POST of the alert).")
    telegram_token_env: str = Field("TELEGRAM_BOT_TOKEN", description="Env var holding the bot token.")
    telegram_chat_env: str = Field("TELEGRAM_CHAT_ID", description="Env var holding the chat id.")
    telegram_api: str = Field("https://api.telegram.org", description="Telegram Bot API base URL.")
    timeout_s: float = Field(5.0, gt=0, le=60, description="Per-request timeout.")
    max_attempts: int = Field(
        3, ge=1, le=20, description="Tries per alert and channel, over successive dispatches.")


class ServeSettings(_Section):
    host: str = Field("127.0.0.1", description="Bind address of `hcp serve` (loopback by default).")
    port: int = Field(8051, ge=1, le=65535, description="Port of `hcp serve`.")
    token_env: str = Field(
        "HCP_OPERATOR_TOKEN", description="Env var holding the token the POST endpoints require.")


class OperatorSettings(_Section):
    notify: NotifySettings = Field(default_factory=NotifySettings, description="Notifications.")
    serve: ServeSettings = Field(default_factory=ServeSettings, description="Status service.")
