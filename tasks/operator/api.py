"""`hcp serve`: the operator's HTTP service (status API, dashboard, two guarded POSTs).

It reads the same state files and reports the flows write, at every request (no restart to
refresh). The POSTs need ``Authorization: Bearer <token>`` where the token is the value of
the environment variable named by ``operator.serve.token_env``; without it they answer 401.
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


class Health(BaseModel):
    status: str


class BudgetStatus(BaseModel):
    session: str | None = Field(description="Session the budget counts for.")
    used: int = Field(description="Remote calls (HTTP attempts) spent.")
    limit: int
    calls: list[dict[str, Any]] = Field(description="Last attempts and their outcomes.")


class RiskStatus(BaseModel):
    mode: dict[str, Any]
    net_liquidity: float
    day_pnl_pct: float | None
    drawdown: float | None
    vol_regime: str | None
    vol_z: float | None
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


def _token_guard(settings: AppSettings) -> Callable[..., None]:
    def guard(authorization: str | None = Header(default=None)) -> None:
        expected = os.environ.get(settings.operator.serve.token_env)
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not expected or not given or not hmac.compare_digest(given, expected):
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
    def force_demo(action: OperatorAction) -> dict[str, Any]:
        return status.force_demo(paths, settings, by=action.by, reason=action.reason)

    @app.post("/api/clear-quarantine", dependencies=[Depends(guard)])
    def clear_quarantine(action: OperatorAction) -> dict[str, Any]:
        try:
            return status.clear_quarantine(paths, settings, by=action.by, reason=action.reason)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/", response_class=HTMLResponse)
    def dashboard() -> str:
        from tasks.operator.dashboard import render_dashboard

        return render_dashboard(status.snapshot(paths, settings))

    return app
