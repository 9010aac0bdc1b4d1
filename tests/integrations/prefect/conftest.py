"""Prefect's settings, before prefect is imported: a home of the session's own (the ephemeral
server's database lives there), a patient server start on a loaded machine, no telemetry."""

from __future__ import annotations

import os
import tempfile

PREFECT_ENV = {
    "PREFECT_HOME": tempfile.mkdtemp(prefix="hystate-prefect-"),
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}
os.environ.update(PREFECT_ENV)
