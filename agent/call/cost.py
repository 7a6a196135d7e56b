"""The cost guard: a call's token use against its agent's limits, and the goodbye's deadline.

Cost used to be reported only once the call was over. With ``max_call_tokens`` or
``max_call_cost_usd`` set, the session hands the guard the call's running token totals at each
``usageMetadata`` (a few times a turn, never per frame); when a limit is reached the model is told
to say goodbye (``cost_limit_message``), and once that turn has played the call ends with the
reason ``cost limit``. The goodbye is the model's own turn, not a recording: it is said in the
agent's voice and language, and costs one short turn more (about 5 s of audio: some 125 response
tokens at the emulator's rough 25 a second). A model that does not finish within
``cost_limit_goodbye_s`` is cut off then.

Pure and synchronous, like :class:`~agent.call.timers.CallTimers`: the session reports usage
and when it asked for the goodbye, and reads :attr:`CostGuard.deadline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from agent.config.models import CallPolicy
from agent.observability.pricing import PriceTable


@dataclass(frozen=True, slots=True)
class CostLimitReached:
    """The call's ``tokens`` (or its estimated ``cost_usd``) reached the agent's limit."""

    limit: Literal["tokens", "cost"]
    tokens: int
    cost_usd: float | None


class CostGuard:
    """One call's token and cost limits (both None: the guard never fires)."""

    def __init__(self, policy: CallPolicy, model: str, prices: PriceTable) -> None:
        self._max_tokens = policy.max_tokens
        self._max_cost_usd = policy.max_cost_usd
        self._goodbye_s = policy.cost_limit_goodbye_s
        self._model = model
        self._prices = prices
        self.reached: CostLimitReached | None = None
        self._deadline: float | None = None

    @property
    def unpriced(self) -> bool:
        """A cost limit is set but the price table has no price for the model: only a token
        limit can end the call."""
        return self._max_cost_usd is not None and self._prices.lookup(self._model) is None

    def usage(self, totals: Mapping[str, int]) -> CostLimitReached | None:
        """The call's usage so far (``prompt_audio``, ``response_audio``... as in
        ``CallStats.usage``); the limit it reached, the first time one is reached, else None."""
        if self.reached is not None or (self._max_tokens is None and self._max_cost_usd is None):
            return None
        tokens = sum(totals.values())
        if self._max_tokens is not None and tokens >= self._max_tokens:
            self.reached = CostLimitReached("tokens", tokens, self._cost(totals))
        elif self._max_cost_usd is not None:
            cost = self._cost(totals)
            if cost is not None and cost >= self._max_cost_usd:
                self.reached = CostLimitReached("cost", tokens, cost)
        return self.reached

    def goodbye_requested(self, now: float) -> None:
        """The model was asked to say goodbye at ``now``: it has ``cost_limit_goodbye_s``."""
        if self._deadline is None:
            self._deadline = now + self._goodbye_s

    @property
    def deadline(self) -> float | None:
        """When the goodbye is overdue (None: none was asked for, or it was already overdue)."""
        return self._deadline

    def overdue(self, now: float) -> bool:
        """True once, when ``now`` is past the goodbye's deadline: end the call now."""
        if self._deadline is None or now < self._deadline:
            return False
        self._deadline = None
        return True

    def _cost(self, totals: Mapping[str, int]) -> float | None:
        usd = self._prices.estimate(self._model, totals).usd
        return None if usd is None else round(usd, 6)
