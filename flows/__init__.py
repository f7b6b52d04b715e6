"""Prefect flows (wiring only) and the ``hcp`` command line.

Importing this package points Prefect at a local, offline set-up before Prefect is imported:
``PREFECT_HOME`` under ``$HCP_HOME/.prefect`` (the ephemeral server's database lives there),
telemetry off: ``DO_NOT_TRACK`` for the client and ``PREFECT_SERVER_ANALYTICS_ENABLED=false``
for the server, which ignores ``DO_NOT_TRACK`` (a ``prefect server start`` from the project
folder gets the same from prefect.toml). A user who sets ``PREFECT_API_URL`` (e.g. to a
``prefect server start`` UI) or any of these variables keeps their own value.
"""

from __future__ import annotations

import contextlib
import os

from tasks.paths import Paths


def configure_prefect_env() -> None:
    """Set offline Prefect defaults (only where the user has not set them)."""
    os.environ.setdefault("PREFECT_HOME", str(Paths.from_env().prefect_home))
    with contextlib.suppress(OSError):  # else Prefect warns that it cannot create it
        os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")


configure_prefect_env()
