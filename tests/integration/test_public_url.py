"""A wrong PUBLIC_URL behind a tunnel, as the bridge now explains it: the 403's log line names
the URL the signature was checked against and the headers seen, and a loopback PUBLIC_URL
answering a tunnelled request is warned about once."""

from __future__ import annotations

import aiohttp
from structlog.testing import capture_logs

from agent.telephony.webhooks import compute_signature

from .conftest import BridgeFactory

AUTH_TOKEN = "f" * 32
TUNNEL = "https://abc123.ngrok.app"
FORM = {"CallSid": "CA" + "5" * 32, "From": "+15555550100", "To": "+15555550199"}


async def test_a_webhook_signed_for_the_tunnel_url_is_refused_and_the_log_says_which_url(
    start_bridge: BridgeFactory,
) -> None:
    # PUBLIC_URL left at its loopback default; Twilio signed the tunnel's URL it requested.
    bridge = await start_bridge(twilio_auth_token=AUTH_TOKEN)
    signature = compute_signature(AUTH_TOKEN, f"{TUNNEL}/twilio/voice", FORM)
    headers = {
        "X-Twilio-Signature": signature,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "abc123.ngrok.app",
    }
    with capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{bridge.url}/twilio/voice", data=FORM, headers=headers) as resp,
        ):
            assert resp.status == 403
    (line,) = [entry for entry in logs if entry["event"] == "twilio.signature_rejected"]
    assert line["checked_url"] == f"{bridge.url}/twilio/voice"
    assert line["x_forwarded_host"] == "abc123.ngrok.app"
    assert line["x_forwarded_proto"] == "https"
    assert line["host"] == bridge.url.removeprefix("http://")
    assert line["hint"].endswith(f"set PUBLIC_URL={TUNNEL}")
    assert line["has_signature"] is True
    assert signature not in str(line)
    assert AUTH_TOKEN not in str(line)


async def test_a_loopback_public_url_answering_a_tunnelled_request_is_warned_about_once(
    start_bridge: BridgeFactory,
) -> None:
    bridge = await start_bridge()  # no token: the TwiML would send Twilio to ws://127.0.0.1
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "abc123.ngrok.app"}
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            for n in range(2):
                form = FORM | {"CallSid": "CA" + str(n) * 32}
                async with http.post(
                    f"{bridge.url}/twilio/voice", data=form, headers=headers
                ) as resp:
                    assert resp.status == 200
                    assert f"ws://127.0.0.1:{bridge.settings.port}/twilio/stream" in (
                        await resp.text()
                    )
    warnings = [entry for entry in logs if entry["event"] == "server.public_url_loopback"]
    assert len(warnings) == 1
    assert warnings[0]["message"].endswith(
        "Twilio cannot reach 127.0.0.1. Set PUBLIC_URL to the URL Twilio uses, "
        f"e.g. PUBLIC_URL={TUNNEL}"
    )
    assert "X-Forwarded-Host abc123.ngrok.app" in warnings[0]["message"]
