"""Logging set-up and the cost estimate: what reaches a log line, masked how, and what a call cost.

The processors are tested as plain functions on event dicts; ``configure_logging`` is tested end to
end through the ``log_capture`` fixture (tests/conftest.py), which logs into a buffer and restores
the suite's own set-up afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.errors import ConfigError
from agent.observability.logging import (
    REDACTED,
    add_log_sink,
    configure_logging,
    remove_log_sink,
    shape_access_log,
)
from agent.observability.pricing import DEFAULT_PRICES, ModelPrices, PriceTable
from agent.observability.privacy import (
    MaskCallerNumbers,
    RedactSecrets,
    add_secrets,
    mask_numbers_in_text,
    redact_secrets,
)
from agent.telephony.webhooks import StreamTokens

LogCapture = Callable[..., AbstractContextManager[StringIO]]

API_KEY = "AIzaSyD-test-key-0000000000000000000000"
STREAM_SECRET = b"stream-token-key-for-the-unit-tests"
CALL_SID = "CA" + "1" * 32


def redact(secrets: tuple[str, ...] = (), /, **event: Any) -> dict[str, Any]:
    return dict(RedactSecrets(secrets)(None, "info", event))


def lines(buffer: StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


@pytest.fixture
def unbound() -> Iterator[None]:
    """Context variables bound by a test do not leak into the next."""
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


# -- secrets ---------------------------------------------------------------------------------------


def test_a_configured_secret_is_masked_anywhere_in_an_event() -> None:
    event = redact(
        (API_KEY,),
        event="live.connect_failed",
        error=f"cannot connect to wss://host/ws?x={API_KEY}: refused",
        nested={"headers": [f"key {API_KEY}", 3]},
    )
    assert API_KEY not in json.dumps(event)
    assert event["error"] == "cannot connect to wss://host/ws?x=***: refused"
    assert event["nested"] == {"headers": ["key ***", 3]}


def test_a_secret_is_masked_url_encoded_and_json_escaped_too() -> None:
    secret = 'pa$$/word"with:odd&chars'
    event = redact(
        (secret,), url="postgresql://u@h/db?password=pa%24%24%2Fword%22with%3Aodd%26chars"
    )
    assert "pa%24%24" not in event["url"]
    escaped = json.dumps({"p": secret})
    assert "odd&chars" not in redact((secret,), raw=escaped)["raw"]


def test_secrets_added_after_construction_are_masked_from_then_on() -> None:
    redactor = RedactSecrets()
    assert redactor(None, "info", {"text": "value-from-the-env"})["text"] == "value-from-the-env"
    redactor.add("value-from-the-env", None, "")
    assert redactor(None, "info", {"text": "value-from-the-env"})["text"] == REDACTED


def test_short_values_are_not_secrets() -> None:
    redactor = RedactSecrets(["short", "1234567"])
    assert redactor.secrets == frozenset()
    assert redactor(None, "info", {"text": "a short 1234567"})["text"] == "a short 1234567"


def test_the_longest_secret_is_masked_whole() -> None:
    event = redact(("secret-value", "secret-value-longer"), text="x secret-value-longer y")
    assert event["text"] == "x *** y"


def test_secrets_in_a_message_are_masked_longest_first() -> None:
    """For text built before logging (agent file problems): every value, however short its
    neighbours, except values too short to mask without hiding innocent text."""
    message = "got 'tok-1234 and tok-12345' on v2"
    assert redact_secrets(message, ["tok-1234", "tok-12345", "v2"]) == "got '*** and ***' on v2"


@pytest.mark.parametrize(
    "key",
    ["token", "Token", "auth_token", "stream_token", "api_key", "x-goog-api-key", "password",
     "db_password", "client_secret", "Authorization"],
)  # fmt: skip
def test_a_secret_key_is_masked_whatever_its_value(key: str) -> None:
    assert redact(**{key: "anything at all"})[key] == REDACTED
    assert redact(nested={key: 12345})["nested"] == {key: REDACTED}


def test_keys_that_only_look_like_secret_keys_are_kept() -> None:
    usage = {"prompt_audio": 86, "response_audio": 187}
    event = redact(tokens=usage, token_count=3, reason="missing, expired or reused stream token")
    assert event["tokens"] == usage
    assert event["token_count"] == 3
    assert event["reason"] == "missing, expired or reused stream token"
    assert redact(token=None)["token"] is None


def _start_message(token: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "callSid": CALL_SID,
                "customParameters": {"agent": "support", "token": token},
            },
        },
        separators=(",", ":"),
    )


def test_a_stream_token_in_a_raw_start_excerpt_is_masked_even_when_cut_mid_token() -> None:
    token = StreamTokens(STREAM_SECRET).issue(CALL_SID, 1_700_000_000.0)
    message = _start_message(token)
    cut_at = message.index(token) + 20  # the excerpt ends inside the token
    for raw in (message, message[:cut_at], message[: message.index(token) + 3]):
        masked = redact(raw=raw)["raw"]
        assert token[:3] not in masked.split('"token":', 1)[1], masked
        assert '"token":"***' in masked


def test_a_stream_token_is_masked_by_its_shape_anywhere() -> None:
    token = StreamTokens(STREAM_SECRET).issue(CALL_SID, 1_700_000_000.0)
    event = redact(error=f"token {token} expired", url=f"/twilio/stream?t={token}")
    assert token not in json.dumps(event)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{'token': 'abc.def.ghi'}", "{'token': '***'}"),
        ('{"api_key": "k-123456789", "x": 1}', '{"api_key": "***", "x": 1}'),
        ("GET /ws?key=AIza0000&alt=json HTTP/1.1", "GET /ws?key=***&alt=json HTTP/1.1"),
        ("wss://h/x?access_token=abc123456", "wss://h/x?access_token=***"),
        ("> x-goog-api-key: some-api-key-value", "> x-goog-api-key: ***"),
        ("> Authorization: Token auth_tokens/abc", "> Authorization: ***"),
        ("sent Bearer ya29.a0Af-xyz_123== ok", "sent Bearer *** ok"),
        ("postgresql://agent:s3cret-pw@db:5432/calls", "postgresql://agent:***@db:5432/calls"),
        ("key AIza" + "x" * 35 + " used", "key *** used"),
        ("http://127.0.0.1:8080/twilio/voice", "http://127.0.0.1:8080/twilio/voice"),
    ],
)
def test_secrets_are_recognised_by_their_shape_in_text(text: str, expected: str) -> None:
    assert RedactSecrets().redact_text(text) == expected


def test_objects_are_rendered_then_masked() -> None:
    class Target:
        def __repr__(self) -> str:
            return f"Target(api_key_header='{API_KEY}')"

    event = redact(
        (API_KEY,), target=Target(), error=ValueError(f"bad {API_KEY}"), raw=API_KEY.encode()
    )
    assert API_KEY not in json.dumps(event)
    assert event["target"] == "Target(api_key_header='***')"


# -- caller numbers --------------------------------------------------------------------------------


def test_a_number_said_in_a_transcript_is_masked_in_its_log_line() -> None:
    masker = MaskCallerNumbers(enabled=True)
    event = masker(None, "info", {"heard_text": "I'll text you at 415-555-0100 today.", "n": 5})
    assert event == {"heard_text": "I'll text you at 415-5****100 today.", "n": 5}


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call +15555550100 now", "call +1555****100 now"),
        ("(415) 555-0100", "(415) *****100"),
        ("+44 20 7946 0958", "+44 2********958"),
        ("order 12345 on 2026-12-03 at 3 pm", "order 12345 on 2026-12-03 at 3 pm"),
        ("SID CA1234567890abcdef", "SID CA1234567890abcdef"),
    ],
)
def test_numbers_in_free_text_are_masked_and_little_else(text: str, masked: str) -> None:
    assert mask_numbers_in_text(text) == masked


def test_numbers_are_kept_unless_masking_is_on() -> None:
    event = {"to": "+15555550199", "from_number": "+15555550100"}
    assert MaskCallerNumbers(enabled=False)(None, "info", dict(event)) == event


def test_numbers_are_masked_by_key_at_any_depth_and_inside_json_text() -> None:
    masker = MaskCallerNumbers(enabled=True)
    event = masker(
        None,
        "info",
        {
            "to": "+15555550199",
            "From": "+15555550100",
            "params": {"caller_number": "+447700900123", "phone": "anonymous"},
            "raw": '{"from":"+15555550100","agent":"support"}',
            "call_sid": CALL_SID,
        },
    )
    assert event["to"] == "+1555****199"
    assert event["From"] == "+1555****100"
    assert event["params"] == {"caller_number": "+4477*****123", "phone": "anonymous"}
    assert event["raw"] == '{"from":"+1555****100","agent":"support"}'
    assert event["call_sid"] == CALL_SID


def test_the_transfer_destination_is_logged_and_masked_only_when_masking_is_on() -> None:
    """``call.transferred`` names where the caller went: in full, or masked like a caller's
    number with MASK_CALLER_NUMBERS."""
    line = {"event": "call.transferred", "transfer_to": "+15555550142"}
    assert MaskCallerNumbers(enabled=False)(None, "info", dict(line)) == line
    masked = MaskCallerNumbers(enabled=True)(None, "info", dict(line))
    assert masked["transfer_to"] == "+1555****142"


# -- aiohttp's access log --------------------------------------------------------------------------


def _access_fields(line: str, status: str = "101") -> dict[str, Any]:
    """What aiohttp's AccessLogger passes as ``extra`` with the default format plus ``%Tf``."""
    return {
        "first_request_line": line,
        "response_status": status,
        "response_size": "0",
        "remote_address": "127.0.0.1",
        "request_time_frac": "0.250000",
        "request_header": {"Referer": "-", "User-Agent": "TwilioProxy/1.1"},
    }


def _access_record(line: str) -> logging.LogRecord:
    record = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1, "msg", (), None)
    record.__dict__.update(_access_fields(line))
    return record


def test_an_access_log_line_becomes_a_server_access_event() -> None:
    record = _access_record("GET /twilio/stream HTTP/1.1")
    event = shape_access_log(None, "info", {"event": "127.0.0.1 [...] GET", "_record": record})
    assert event["event"] == "server.access"
    assert (event["method"], event["path"], event["status"], event["bytes"]) == (
        "GET",
        "/twilio/stream",
        101,
        0,
    )
    assert event["duration_ms"] == 250.0
    assert event["user_agent"] == "TwilioProxy/1.1"


def test_other_records_pass_through_the_access_log_shaper() -> None:
    record = logging.LogRecord("websockets.client", logging.INFO, __file__, 1, "m", (), None)
    event = {"event": "m", "_record": record}
    assert shape_access_log(None, "info", dict(event)) == event


# -- configure_logging, end to end -----------------------------------------------------------------


def test_structlog_and_stdlib_lines_are_json_with_the_call_context(
    log_capture: LogCapture, unbound: None
) -> None:
    with log_capture("info", "json") as buffer:
        structlog.contextvars.bind_contextvars(call_sid=CALL_SID, stream_sid="MZ1", agent="a")
        structlog.get_logger("agent.call").info("call.started", tracks=["inbound"])
        logging.getLogger("aiohttp.access").info(
            "line", extra=_access_fields("GET /twilio/stream HTTP/1.1")
        )
        logging.getLogger("websockets.client").warning("connection closed %s", "1011")
    started, access, closed = lines(buffer)
    for line in (started, access, closed):
        assert (line["call_sid"], line["stream_sid"], line["agent"]) == (CALL_SID, "MZ1", "a")
        assert line["timestamp"].endswith("Z")
    assert (started["event"], started["level"], started["logger"]) == (
        "call.started",
        "info",
        "agent.call",
    )
    assert started["tracks"] == ["inbound"]
    assert (access["event"], access["path"], access["status"]) == (
        "server.access",
        "/twilio/stream",
        101,
    )
    assert (closed["event"], closed["level"]) == ("connection closed 1011", "warning")
    # The fields a reader looks at first come first.
    leading = ["timestamp", "level", "event", "call_sid", "stream_sid", "agent", "logger"]
    assert list(started)[:7] == leading


def test_debug_lines_need_log_level_debug_and_websockets_never_goes_below_info(
    log_capture: LogCapture,
) -> None:
    with log_capture("info", "json") as buffer:
        structlog.get_logger("agent.call").debug("live.event_ignored", kind="X")
        logging.getLogger("aiohttp.access").info(
            "x", extra={"first_request_line": "GET /healthz HTTP/1.1"}
        )
    assert buffer.getvalue() == ""
    with log_capture("debug", "json") as buffer:
        structlog.get_logger("agent.call").debug("live.event_ignored", kind="X")
        logging.getLogger("websockets.client").debug("> TEXT '{\"realtimeInput\"...' [812 bytes]")
        logging.getLogger("aiohttp.access").info(
            "x", extra={"first_request_line": "GET /healthz HTTP/1.1"}
        )
    assert [(line["event"], line["level"]) for line in lines(buffer)] == [
        ("live.event_ignored", "debug"),
        ("server.access", "debug"),
    ]


def test_exceptions_are_formatted_and_masked(log_capture: LogCapture) -> None:
    add_secrets("db-password-in-an-error")
    with log_capture("info", "json") as buffer:
        try:
            raise RuntimeError("cannot log in with db-password-in-an-error")
        except RuntimeError:
            structlog.get_logger("agent.app").exception("call.failed")
            logging.getLogger("aiohttp.server").exception("Error handling request")
    for line in lines(buffer):
        assert "Traceback" in line["exception"]
        assert "RuntimeError: cannot log in with ***" in line["exception"]


def test_secrets_added_after_configuration_and_caller_numbers_are_masked(
    log_capture: LogCapture,
) -> None:
    with log_capture("info", "json", mask_numbers=True) as buffer:
        log = structlog.get_logger("agent.app")
        log.info("call.webhook", to="+15555550199", note="agent-env-value-42")
        add_secrets("agent-env-value-42")
        log.info("agents.reloaded", note="agent-env-value-42")
    webhook, reloaded = lines(buffer)
    assert webhook["to"] == "+1555****199"
    assert webhook["note"] == "agent-env-value-42"  # not a secret yet when it was logged
    assert reloaded["note"] == REDACTED


def test_console_lines_on_request(log_capture: LogCapture) -> None:
    with log_capture("info", "console") as buffer:
        structlog.get_logger("agent.call").info("call.ended", reason="caller hung up", token="t")
    text = buffer.getvalue()
    assert "call.ended" in text
    assert "reason='caller hung up'" in text
    assert "token=***" in text
    assert not text.startswith("{")


def test_reconfiguring_replaces_the_output_but_keeps_sinks(log_capture: LogCapture) -> None:
    sink = StringIO()
    with log_capture("info", "json") as first:
        handler = add_log_sink(sink)
        try:
            second = StringIO()
            configure_logging("info", "json", stream=second)
            structlog.get_logger("agent.app").info("server.started")
        finally:
            remove_log_sink(handler)
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["server.started"]
    assert [line["event"] for line in lines(sink)] == ["server.started"]


@pytest.mark.parametrize(
    ("level", "fmt", "key"), [("loud", "json", "LOG_LEVEL"), ("info", "xml", "LOG_FORMAT")]
)
def test_a_bad_level_or_format_is_a_config_error(level: str, fmt: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        configure_logging(level, fmt, stream=StringIO())
    assert caught.value.key == key


# -- what a call cost ------------------------------------------------------------------------------

USAGE = {"prompt_text": 1_000, "prompt_audio": 200_000, "response_audio": 50_000}


def test_the_default_model_is_priced_by_modality_and_direction() -> None:
    estimate = PriceTable().estimate("gemini-2.5-flash-native-audio-preview-12-2025", USAGE)
    # 1k text in at $0.50/M, 200k audio in at $3/M, 50k audio out at $12/M.
    assert estimate.usd == pytest.approx(0.0005 + 0.6 + 0.6)
    assert estimate.priced_as == "gemini-2.5-flash-native-audio"
    assert estimate.unpriced_tokens == 0
    assert estimate.summary_fields() == {
        "cost_usd": 1.2005,
        "cost_priced_as": "gemini-2.5-flash-native-audio",
        "cost_unpriced_tokens": 0,
    }


def test_models_match_exactly_then_by_longest_prefix_then_the_wildcard() -> None:
    cheap = ModelPrices(prompt={"AUDIO": 1.0}, response={"AUDIO": 1.0})
    table = PriceTable({"gemini": cheap, "gemini-live": cheap, "*": cheap})
    assert table.lookup("models/gemini-live-2.5-flash")[0] == "gemini-live"  # type: ignore[index]
    assert table.lookup("projects/p/locations/l/publishers/google/models/gemini-x")[0] == "gemini"  # type: ignore[index]
    assert table.lookup("other-model")[0] == "*"  # type: ignore[index]
    assert PriceTable({"gemini": cheap}).lookup("other-model") is None


def test_an_unknown_model_or_modality_says_what_it_could_not_price() -> None:
    assert PriceTable().estimate("my-model", USAGE).summary_fields() == {
        "cost_usd": None,
        "cost_priced_as": None,
        "cost_unpriced_tokens": 251_000,
    }
    estimate = PriceTable().estimate("gemini-2.0-flash-live-001", {"response_document": 10})
    assert (estimate.usd, estimate.unpriced_tokens) == (0.0, 10)


def test_a_price_table_from_inline_json_adds_to_the_defaults() -> None:
    table = PriceTable.from_spec('{"my-model": {"prompt": {"audio": 1}, "response": {"AUDIO": 2}}}')
    assert (
        table.estimate("my-model", {"prompt_audio": 1_000_000, "response_audio": 500_000}).usd
        == 2.0
    )
    assert set(DEFAULT_PRICES) < set(table.prices)
    alone = PriceTable.from_spec('{"my-model": {"prompt": {}}}', defaults=False)
    assert set(alone.prices) == {"my-model"}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_price_table_from_a_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"prices{suffix}"
    prices = {"gemini-2.5-flash-native-audio": {"prompt": {"AUDIO": 1.5}, "response": {"AUDIO": 6}}}
    path.write_text(json.dumps(prices))  # JSON is YAML too
    table = PriceTable.from_spec(str(path))
    assert (
        table.estimate("gemini-2.5-flash-native-audio-x", {"response_audio": 1_000_000}).usd == 6.0
    )
    assert PriceTable.from_spec("  ").prices == PriceTable().prices


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{not json", "cannot read the price table"),
        ("/no/such/prices.yaml", "cannot read the price table"),
        ("[1, 2]", "cannot read the price table"),
        ('{"m": {"prompt": {"AUDIO": -1}}}', "m.prompt.AUDIO: must be a number >= 0"),
        ('{"m": {"prompt": {"AUDIO": true}}}', "m.prompt.AUDIO: must be a number >= 0"),
        ('{"m": {"input": {}}}', "m: must have only 'prompt' and 'response'"),
        ('{"m": {"prompt": [1]}}', "m.prompt: must map modalities"),
        ('{"m": 3}', "m: must have only"),
    ],
)
def test_a_bad_price_table_is_a_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match="PRICE_TABLE") as caught:
        PriceTable.from_spec(spec)
    assert message in str(caught.value)


# -- the suite's secret scan (tests/conftest.py) ---------------------------------------------------

LEAKY_TESTS = """
import logging

import structlog
from structlog.testing import capture_logs

AUTH_TOKEN = "constant-auth-token-0123456789"


def test_logs_a_registered_secret(register_secret):
    secret = register_secret("registered-secret-value-42")
    structlog.get_logger("agent.app").info("oops", detail="the value is " + secret)


def test_logs_a_constant_through_the_standard_library():
    logging.getLogger("aiohttp.server").warning("token was %s", AUTH_TOKEN)


def test_capture_logs_still_works():
    with capture_logs() as logs:
        structlog.get_logger("agent.call").info("call.started")
    assert logs == [{"event": "call.started", "log_level": "info"}]


def test_a_masked_secret_is_no_leak(register_secret):
    structlog.get_logger("agent.app").info("fine", token=register_secret("masked-by-key-0000"))
"""


def test_the_suite_fails_when_a_known_secret_reaches_a_log_line(tmp_path: Path) -> None:
    conftest = Path(__file__).parents[2] / "conftest.py"
    (tmp_path / "conftest.py").write_text(conftest.read_text())
    (tmp_path / "timing.py").write_text((conftest.parent / "timing.py").read_text())  # it imports
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(LEAKY_TESTS))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n"
    )
    session_log = tmp_path / "session.jsonl"  # kept here, not in the system's temporary folder
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "AGENT_TEST_LOG_FILE": str(session_log)},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "4 passed" in output
    assert "secrets in log output" in output
    assert "registered by test_leaky.py::test_logs_a_registered_secret (regi...)" in output
    assert "test_leaky.AUTH_TOKEN (cons...) appears 1 time(s): line 2 (token was <secret>" in output
    assert "constant-auth-token-0123456789" not in output  # the report does not leak it again
    assert "masked-by-key" not in output
    assert f"(all log lines of the session: {session_log})" in output
    assert len(session_log.read_text().splitlines()) == 3  # capture_logs kept its line
