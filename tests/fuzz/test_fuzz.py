"""Property-based fuzzing: whatever arrives, the parsers answer with events or errors of their
own, the YAML loader with agents or a ConfigError, the template renderer with text; none raises
anything else, none hangs.

The hostile inputs an adversarial probe used are kept as explicit examples (``@example``), so
they run on every draw.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agent.config.loader import load
from agent.config.templates import render_template
from agent.errors import ConfigError
from agent.live.protocol import LiveProtocolError, parse_server_message
from agent.telephony.twilio import TwilioMediaStream

START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": "MZ" + "1" * 32,
        "start": {
            "accountSid": "AC" + "1" * 32,
            "streamSid": "MZ" + "1" * 32,
            "callSid": "CA" + "1" * 32,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {},
        },
    }
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
# Messages shaped like Twilio's, with any values in them: more reach the parser's deep branches
# than random text would.
twilio_like = st.builds(
    lambda event, extra: json.dumps({"event": event, "streamSid": "MZ" + "1" * 32, **extra}),
    st.sampled_from(["media", "mark", "dtmf", "stop", "start", "connected", "clear", "x"]),
    st.dictionaries(
        st.sampled_from(["media", "mark", "dtmf", "stop", "start", "sequenceNumber"]),
        json_values,
        max_size=3,
    ),
)


@given(st.lists(st.text(max_size=200) | twilio_like, max_size=8))
@example(['{"event":"media","media":{"payload":"' + "A" * 5000 + '"}}'])
@example(['{"event":"dtmf","dtmf":{"digit":"\\ud800"}}'])
@example(["[" * 500 + "]" * 500])
def test_the_twilio_parser_never_raises(frames: list[str]) -> None:
    stream = TwilioMediaStream()
    stream.receive_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    stream.receive_text(START)
    for frame in frames:
        stream.receive_text(frame)


@given(st.binary(max_size=300))
def test_the_twilio_parser_takes_any_binary_frame(data: bytes) -> None:
    TwilioMediaStream().receive_bytes(data)


live_like = st.builds(
    lambda key, value: json.dumps({key: value}),
    st.sampled_from(
        [
            "serverContent",
            "toolCall",
            "toolCallCancellation",
            "goAway",
            "sessionResumptionUpdate",
            "usageMetadata",
            "setupComplete",
        ]
    ),
    json_values,
)


@given(st.text(max_size=300) | live_like | st.binary(max_size=300))
@example('{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"data":"%%%"}}]}}}')
@example('{"goAway":{"timeLeft":"-1e309s"}}')
def test_the_live_parser_never_raises(frame: str | bytes) -> None:
    events = parse_server_message(frame)
    assert events  # something, if only a LiveProtocolError
    assert all(event is not None for event in events)
    if isinstance(frame, bytes) and not frame.strip():
        assert isinstance(events[0], LiveProtocolError)


@given(
    st.text(max_size=300),
    st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5),
    st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)
@example("{{{customer.name}}}", {}, {"name": {"nested": [1, 2]}})
@example("{" * 1000, {}, None)
def test_the_template_renderer_never_raises(
    template: str, values: dict[str, str], customer: dict[str, object] | None
) -> None:
    assert isinstance(render_template(template, values, customer), str)


yaml_like = st.builds(
    lambda key, value: f"{key}: {value}\n",
    st.sampled_from(["name", "model", "voice", "tools", "vad", "system_prompt", "x", "&a", "*a"]),
    st.text(max_size=40),
)


@given(st.lists(yaml_like | st.text(max_size=80), max_size=10))
@example(["a: &a [x, x]\n", "b: &b [*a, *a]\n", "c: &c [*b, *b]\n", "d: [*c, *c, *c]\n"])
@example(["name: ok\n", "system_prompt: ${TWILIO_AUTH_TOKEN}\n"])
def test_the_agent_loader_answers_agents_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    # (A fresh folder per input: hypothesis runs many inputs in one test call.)
    folder = tmp_path_factory.mktemp("agents")
    (folder / "agent.yaml").write_text("".join(lines), encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(ConfigError):
        load(folder, env={})
