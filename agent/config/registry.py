"""Which agent answers which number: the registry of loaded agents.

Every agent has a unique name and may list the E.164 numbers it answers; the default agent
answers the rest (and calls whose ``To`` is missing or not a phone number). A registry is
immutable: a reload builds a new one, so a call keeps the ``AgentConfig`` it started with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from agent.config.models import AgentConfig
from agent.errors import ConfigError
from agent.numbers import normalise_number


class AgentRegistry:
    """Every loaded agent, by name and by the numbers they answer. Immutable: a reload builds a
    new registry, so a call holds on to the AgentConfig it started with."""

    def __init__(
        self,
        agents: Sequence[AgentConfig],
        *,
        default: str | None = None,
        sources: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        path: str | None = None,
        lines: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """``default`` names the default agent; None: the only agent, or the first by name.
        Raises ConfigError for no agents, a repeated name or number, or an unknown default."""
        if not agents:
            raise ConfigError("there must be at least one agent")
        by_name: dict[str, AgentConfig] = {}
        numbers: dict[str, AgentConfig] = {}
        for agent in sorted(agents, key=lambda a: a.name):
            if agent.name in by_name:
                raise ConfigError(f"agent name {agent.name!r} is used twice", key="name")
            by_name[agent.name] = agent
            for number in agent.phone_numbers:
                if number in numbers:
                    raise ConfigError(
                        f"{number} is answered by both {numbers[number].name!r} and {agent.name!r}",
                        key="phone_numbers",
                    )
                numbers[number] = agent
        if default is not None and default not in by_name:
            raise ConfigError(f"the default agent {default!r} is not loaded", key="default")
        self._agents = MappingProxyType(by_name)
        self._numbers = MappingProxyType(numbers)
        self._default = by_name[default] if default is not None else next(iter(by_name.values()))
        self._default_chosen = default is not None
        self._sources = MappingProxyType(dict(sources or {}))
        self._secrets = frozenset(s for s in secrets if s)
        self._lines = MappingProxyType(dict(lines or {}))
        self.path = path
        """Where the agents were loaded from, for messages (None if built in code)."""

    @classmethod
    def of(cls, *agents: AgentConfig, default: str | None = None) -> AgentRegistry:
        """A registry of agents built in code (tests, ``create_app(agent=...)``)."""
        return cls(agents, default=default)

    @property
    def agents(self) -> Mapping[str, AgentConfig]:
        """Every agent by name, sorted by name."""
        return self._agents

    @property
    def default(self) -> AgentConfig:
        """The agent for numbers no agent lists."""
        return self._default

    @property
    def default_is_explicit(self) -> bool:
        """True if an agent file said ``default: true`` (else the rule chose it)."""
        return self._default_chosen

    @property
    def numbers(self) -> Mapping[str, AgentConfig]:
        """Every configured E.164 number and the agent answering it."""
        return self._numbers

    def for_number(self, to: str | None) -> AgentConfig:
        """The agent answering ``to`` (the voice webhook's ``To``, in any usual notation); the
        default agent for an unlisted, missing or unreadable number."""
        number = normalise_number(to)
        if number is None:
            return self._default
        return self._numbers.get(number, self._default)

    def by_name(self, name: str | None) -> AgentConfig | None:
        """The agent called ``name``, or None."""
        return self._agents.get(name) if name else None

    def source(self, name: str) -> str | None:
        """The file agent ``name`` came from (None if built in code)."""
        return self._sources.get(name)

    def line(self, name: str, key: str) -> int | None:
        """The line of ``key`` (``tools[2].sql.query``; the nearest enclosing key it has) in
        agent ``name``'s file, for checks after loading (None if built in code)."""
        lines = self._lines.get(name, {})
        while key:
            if key in lines:
                return lines[key]
            key = key.rpartition(".")[0]
        return lines.get("")

    def secrets(self) -> frozenset[str]:
        """Every value substituted from ``${VAR}``: for log redaction, never for logging."""
        return self._secrets

    def __repr__(self) -> str:  # no secrets, no prompts: just what is loaded
        return f"AgentRegistry(agents={list(self._agents)}, default={self._default.name!r})"
