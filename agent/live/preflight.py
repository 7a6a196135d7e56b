"""The Live preflight: open a Live session with the server's key for each model its agents use,
close it, and say what failed, so a bad ``GEMINI_API_KEY`` or a misspelt model shows on
``/readyz`` (and in ``agent doctor``) before a caller hears the apology.

:class:`PreflightSchedule` is the sans-I/O part: it takes ``now`` and the probes' results and says
when the next check is due and what ``/readyz`` should report. :func:`probe` is the one await (one
connection per model). The server's adapter (``agent.server.preflight``) loops over both.

A probe sends the agent's own ``setup`` (system instruction, tools, voice), so a setup the service
rejects is caught as well as the key and the model; it asks for no turn, so no tokens are spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.config.models import AgentConfig
from agent.errors import LiveConnectError
from agent.live.connection import LiveConnection
from agent.live.failures import FIXES, is_permanent
from agent.live.targets import LiveEndpoint

#: While a check fails, the next comes this soon (or at the interval, if that is shorter), so a
#: fixed key is seen within half a minute rather than at the next five-minute check.
RETRY_S = 30.0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One model's check: ``kind`` is None when a session opened, else the failure's kind."""

    model: str
    agent: str
    kind: str | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.kind is None

    @property
    def permanent(self) -> bool:
        """A refusal (bad key, unknown model, no permission): every call would fail the same."""
        return self.kind is not None and is_permanent(self.kind)

    @property
    def fix(self) -> str:
        return FIXES.get(self.kind or "", "")

    def describe(self) -> str:
        """One line for ``/readyz`` and the log: what failed, why, and what to change."""
        if self.ok:
            return f"model {self.model} (agent {self.agent}): ok"
        return (
            f"Live API {self.kind}: model {self.model} (agent {self.agent}): {self.error}; "
            f"fix: {self.fix}"
        )


def models_to_probe(agents: Iterable[AgentConfig]) -> list[AgentConfig]:
    """One agent per distinct (model, API version) the agents use, in a stable order: the
    service decides per model and version, so checking each agent would only repeat a probe."""
    chosen: dict[tuple[str, str], AgentConfig] = {}
    for agent in sorted(agents, key=lambda a: a.name):
        chosen.setdefault((agent.model, agent.api_version), agent)
    return list(chosen.values())


class PreflightSchedule:
    """When the next check is due, and what the last one found (pure: the adapter passes ``now``).

    A check is due at once; after one that passed the next comes ``interval_s`` later, after one
    that failed :data:`RETRY_S` later (at most ``interval_s``).
    """

    def __init__(self, interval_s: float, *, retry_s: float = RETRY_S) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s!r}")
        self.interval_s = interval_s
        self.retry_s = min(retry_s, interval_s)
        self._due_at: float | None = None  # None: now
        self.results: tuple[ProbeResult, ...] = ()
        self.checked_at: float | None = None
        self.checks = 0

    def due(self, now: float) -> bool:
        return self._due_at is None or now >= self._due_at

    def next_deadline(self, now: float) -> float:
        """When the next check is due (``now`` if it is already)."""
        return now if self._due_at is None else max(now, self._due_at)

    def checked(self, now: float, results: Sequence[ProbeResult]) -> tuple[bool, bool]:
        """A check ended at ``now`` with ``results``. Returns (failing now, failing before), for
        the adapter to log a change once rather than every check."""
        before = self.failing
        self.results = tuple(results)
        self.checked_at = now
        self.checks += 1
        self._due_at = now + (self.retry_s if self.failing else self.interval_s)
        return self.failing, before

    @property
    def failing(self) -> bool:
        return any(not result.ok for result in self.results)

    @property
    def problems(self) -> list[str]:
        """What makes this instance unready: refusals only. A timeout or a 1011 is the Live API's
        passing trouble, shared by every replica: taking them all out of the balancer at once
        would turn a partial outage into a total one (calls retry those anyway)."""
        return [result.describe() for result in self.results if result.permanent]

    def status(self) -> dict[str, object]:
        """For ``/readyz``: ``ok``, ``failing`` or ``pending`` (no check yet), and each
        failure."""
        state = "pending" if self.checked_at is None else "failing" if self.failing else "ok"
        return {
            "status": state,
            "failures": [result.describe() for result in self.results if not result.ok],
        }


async def probe(target: LiveEndpoint, agent: AgentConfig, *, timeout_s: float) -> ProbeResult:
    """Open a Live session for ``agent``'s model with ``target``'s credentials, then close it."""
    try:
        connection = await LiveConnection.open(target, agent, timeout_s=timeout_s)
    except LiveConnectError as exc:  # LiveRefusedError too: its kind says it is permanent
        return ProbeResult(agent.model, agent.name, exc.kind, str(exc))
    await connection.close()
    return ProbeResult(agent.model, agent.name)
