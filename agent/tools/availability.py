"""Which of an agent's tools this deployment can run, so the model is never offered one it
cannot.

``transfer_call`` moves the call with a Twilio REST update (``<Dial>``): without REST
credentials it could only fail, and the caller would be hung up on mid-sentence. Such a tool is
left out of the function declarations the model sees (the agent's other tools are unchanged),
and ``agent check`` and the server's start-up say which tool and which setting is missing.
``end_call`` stays: without REST it closes the media stream, which hangs up too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

from agent.config.models import AgentConfig
from agent.config.tools import TransferCallTool

#: What the REST client needs (see ``Settings``): an account and the auth token or an API key.
REST_SETTINGS: Final = (
    "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET)"
)


@dataclass(frozen=True, slots=True)
class UnavailableTool:
    """A tool of the agent that this deployment cannot run."""

    name: str
    index: int
    """Its position in the agent's ``tools`` (the file's ``tools[index]``)."""
    missing: str
    """The setting that would make it work."""

    @property
    def message(self) -> str:
        return (
            f"tool {self.name!r} is not offered to the model: transfer_call needs Twilio's REST "
            f"API, and {self.missing} are not set"
        )


def rest_configured(env: Mapping[str, str]) -> bool:
    """Whether ``env`` (the bridge's variables) has Twilio REST credentials, as the server
    decides when it builds its REST client."""

    def given(name: str) -> bool:
        return bool((env.get(name) or "").strip())

    return given("TWILIO_ACCOUNT_SID") and (
        given("TWILIO_API_KEY_SID") or given("TWILIO_AUTH_TOKEN")
    )


def unavailable_tools(agent: AgentConfig, *, rest: bool) -> list[UnavailableTool]:
    """The tools of ``agent`` that cannot run here (``rest``: Twilio REST credentials are set)."""
    if rest:
        return []
    return [
        UnavailableTool(spec.name, index, REST_SETTINGS)
        for index, spec in enumerate(agent.tool_specs)
        if isinstance(spec.kind, TransferCallTool)
    ]


def without_tools(agent: AgentConfig, names: Collection[str]) -> AgentConfig:
    """``agent`` with the functions ``names`` left out of what the model is told it may call.

    Its ``tool_specs`` stay as they are (they key the toolbox shared by the agent's calls); a
    function the model was never offered is one it does not call.
    """
    if not names:
        return agent
    declarations = tuple(d for d in agent.tools.function_declarations if d.name not in names)
    return dataclasses.replace(
        agent, tools=dataclasses.replace(agent.tools, function_declarations=declarations)
    )
