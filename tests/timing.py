"""The few waits in the suite that are on the real clock, scaled for slow machines.

Integration tests run on simulated time (see ``tests/integration/conftest.py``), where a timeout
costs nothing and means "this never happened". What remains on the real clock are waits for other
processes (a server started as a subprocess, a PostgreSQL server), for other threads, and the
per-test hang guard (pytest-timeout). On a machine slower or busier than CI, scale them all with
one factor, as python-websockets does for its own suite::

    AGENT_TEST_TIMEOUT_FACTOR=4 .venv/bin/pytest

A timeout here is a hang guard, never a measurement: no assertion depends on how fast it ran.
"""

from __future__ import annotations

import math
import os

FACTOR_ENV = "AGENT_TEST_TIMEOUT_FACTOR"


def timeout_factor() -> float:
    """The factor from ``AGENT_TEST_TIMEOUT_FACTOR`` (1 when unset)."""
    raw = os.environ.get(FACTOR_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        factor = math.nan
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"{FACTOR_ENV} must be a positive number, not {raw!r}")
    return factor


def scaled_timeout(seconds: float) -> float:
    """``seconds`` of real time, scaled by the factor."""
    return seconds * timeout_factor()
