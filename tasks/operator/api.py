"""`hcp serve`: the operator's HTTP service (status API, dashboard, two guarded POSTs).

It reads the same state files and reports the flows write, at every request (no restart to
refresh). The POSTs need ``Authorization: Bearer <token>`` where the token is the value of
the environment variable named by ``operator.serve.token_env``; without it they answer 401.
When that variable is not set at all, no token can match: both POSTs are closed (401 for
everyone) and `hcp serve` says so when it starts (:func:`token_warning`).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from tasks.operator import status
from tasks.paths import Paths
from tasks.settings import AppSettings, load_settings


class OperatorAction(BaseModel):
    """Who asks for an override and why; both are recorded."""

    by: str = Field(..., min_length=1, max_length=80, description="Operator name.")
    reason: str = Field(..., min_length=3, max_length=500, description="Why (recorded verbatim).")


class ForceDemoAction(OperatorAction):
    """A request to force demo mode (``by`` and ``reason`` are stored escaped)."""

    reason: str = Field(..., min_length=3, max_length=500,
                        description="Why (recorded; control characters are stored escaped).")
    request_id: str | None = Field(None, min_length=1, max_length=80,
                                   pattern=r"^[A-Za-z0-9._:-]+$",
                                   description="Names this request: a retry with the same id "
                                               "is recorded once (default: a new id).")


class ClearQuarantineAction(OperatorAction):
    """A request to clear a quarantine or cool-off on a session."""

    reason: str = Field(..., min_length=3, max_length=500,
                        description="Why (recorded; control characters are stored escaped).")
    session: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$",
                                description="Session the override applies to (default: the "
                                            "book's session).")


class Health(BaseModel):
    status: str


class BudgetStatus(BaseModel):
    session: str | None = Field(description="Session the budget counts for.")
    used: int = Field(description="Remote calls (HTTP attempts) spent.")
    limit: int
    calls: list[dict[str, Any]] = Field(description="Last attempts and their outcomes.")


class RiskStatus(BaseModel):
    session: str | None = Field(None, description="The session shown: the book's, else the "
                                                  "latest planned one.")
    session_source: str | None = Field(None, description="'book' or 'plan'.")
    next_plan: str | None = Field(None, description="First plan dated after the session "
                                                    "(planned, not executed yet).")
    latest_plan: str | None = None
    later_plans: int = 0
    mode: dict[str, Any]
    net_liquidity: float
    day_pnl_pct: float | None
    drawdown: float | None
    vol_regime: str | None = Field(description="Normal/High/Extreme from the session's "
                                               "market vol z.")
    vol_z: float | None = Field(description="The session's market vol z (its health JSON).")
    market_regime: str | None = None
    exposure: dict[str, Any]
    caps: dict[str, Any]
    positions: list[dict[str, Any]]
    kill_switch: dict[str, Any]
    quarantine: dict[str, Any]


class ModelStats(BaseModel):
    active: str | None
    shadow: str | None
    validation: dict[str, Any]
    live: dict[str, Any] | None
    calibration: dict[str, Any] | None


def operator_token(settings: AppSettings) -> str | None:
    """The operator token from the environment (None when unset or blank)."""
    return (os.environ.get(settings.operator.serve.token_env) or "").strip() or None


def token_warning(settings: AppSettings) -> str | None:
    """One line for the operator when no token is set (None when one is)."""
    if operator_token(settings):
        return None
    env = settings.operator.serve.token_env
    return (f"no operator token: ${env} is not set, so POST /api/force-demo and "
            f"/api/clear-quarantine refuse every request (401); set ${env} to enable them")


def _token_guard(settings: AppSettings) -> Callable[..., None]:
    def guard(authorization: str | None = Header(default=None)) -> None:
        expected = operator_token(settings)
        given = (authorization or "").removeprefix("Bearer ").strip()
        if expected is None:
            raise HTTPException(401, f"no operator token is configured on the server "
                                     f"(${settings.operator.serve.token_env} is not set): "
                                     "the POST endpoints are closed",
                                headers={"WWW-Authenticate": "Bearer"})
        # compared as bytes: a str compare_digest raises on non-ASCII text (a 500). The
        # server decodes header bytes as latin-1, so encoding back gives the bytes sent; a
        # token the client sent as UTF-8 then matches the UTF-8 bytes of the expected one
        # (the variable's own bytes: os.environ keeps undecodable ones as escapes).
        try:
            sent = given.encode("latin-1")
        except UnicodeEncodeError:  # not from the wire (a str built in-process)
            sent = given.encode("utf-8", "surrogatepass")
        if not sent or not hmac.compare_digest(sent, expected.encode("utf-8", "surrogateescape")):
            raise HTTPException(401, "a valid operator token is required "
                                     f"(Authorization: Bearer <${settings.operator.serve.token_env}>)",
                                headers={"WWW-Authenticate": "Bearer"})
    return guard


def create_app(paths: Paths | None = None, settings: AppSettings | None = None) -> FastAPI:
    """The service over one home folder (default: ``$HCP_HOME``)."""
    paths = paths or Paths.from_env()
    settings = settings or load_settings()
    app = FastAPI(title="Hybrid control plane — operator API", version="1")
    guard = _token_guard(settings)

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(status="ok")

    @app.get("/api/gpt5-status", response_model=BudgetStatus)
    def gpt5_status() -> BudgetStatus:
        return BudgetStatus(**status.budget_status(paths, settings))

    @app.get("/api/risk-status", response_model=RiskStatus)
    def risk_status() -> RiskStatus:
        return RiskStatus(**status.risk_status(paths, settings))

    @app.get("/api/model-stats", response_model=ModelStats)
    def model_stats() -> ModelStats:
        return ModelStats(**status.model_stats(paths))

    @app.post("/api/force-demo", dependencies=[Depends(guard)])
    def force_demo(action: ForceDemoAction) -> dict[str, Any]:
        # every request is recorded (one history entry and one alert each); a repeated
        # request_id is a retry of the same request and recorded once. A damaged operator
        # file already counts as a forced demo: 409 names it and its repair.
        try:
            return status.force_demo(paths, settings, by=action.by, reason=action.reason,
                                     request_id=action.request_id)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.post("/api/clear-quarantine", dependencies=[Depends(guard)])
    def clear_quarantine(action: ClearQuarantineAction) -> dict[str, Any]:
        try:
            return status.clear_quarantine(paths, settings, by=action.by, reason=action.reason,
                                           session=action.session)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/", response_class=HTMLResponse)
    def dashboard() -> str:
        from tasks.operator.dashboard import render_dashboard

        return render_dashboard(status.snapshot(paths, settings))

    return app
