"""Fuzzing budget: a short run in the ordinary suite (and CI), a long one on demand.

``AGENT_FUZZ_EXAMPLES`` sets how many inputs each property gets (default 200: a few seconds for
the whole folder). The long run the README documents sets it to 100000 per property, which with
the properties here is over a million inputs. Deadlines are off: a slow machine makes an input
slower, not wrong; a hang is what pytest-timeout catches.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "agent",
    max_examples=int(os.environ.get("AGENT_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI") == "true",  # CI's verdict must not depend on the draw
)
settings.load_profile("agent")
