"""Tools this deployment cannot run are not offered to the model (issue 15, point 4)."""

from __future__ import annotations

from agent.config.models import AgentConfig, AgentFile
from agent.config.tools import EndCallTool, ToolSpec, TransferCallTool
from agent.tools.availability import rest_configured, unavailable_tools, without_tools


def _agent() -> AgentConfig:
    return AgentFile(
        system_prompt="Hi.",
        tools=(),
    ).agent_config("shop")


def test_transfer_needs_twilio_rest_credentials() -> None:
    assert not rest_configured({})
    assert not rest_configured({"TWILIO_ACCOUNT_SID": "AC1"})
    assert rest_configured({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t"})
    assert rest_configured({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_API_KEY_SID": "SK1"})


def test_without_rest_transfer_is_left_out_of_the_declarations_and_end_call_stays() -> None:
    specs = (
        ToolSpec(name="bye", description="Hang up.", kind=EndCallTool()),
        ToolSpec(name="human", description="A person.", kind=TransferCallTool("+15555550142")),
    )
    import dataclasses

    from agent.config.models import FunctionDeclaration, ToolsConfig

    agent = dataclasses.replace(
        _agent(),
        tool_specs=specs,
        tools=ToolsConfig(
            function_declarations=tuple(
                FunctionDeclaration(name=s.name, description=s.description) for s in specs
            )
        ),
    )
    (unavailable,) = unavailable_tools(agent, rest=False)
    assert (unavailable.name, unavailable.index) == ("human", 1)
    assert unavailable.message == (
        "tool 'human' is not offered to the model: transfer_call needs Twilio's REST API, and "
        "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and "
        "TWILIO_API_KEY_SECRET) are not set"
    )
    assert unavailable_tools(agent, rest=True) == []
    offered = without_tools(agent, {"human"})
    assert [d.name for d in offered.tools.function_declarations] == ["bye"]
    assert offered.tool_specs == agent.tool_specs  # the toolbox is unchanged
    assert without_tools(agent, set()) is agent
