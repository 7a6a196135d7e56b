"""Carrier simulator: places calls into the bridge the way Twilio does, from WAV files, offline.

A developer without a phone line (or without the internet) runs ``agent call order-status --out
heard.wav``; the integration tests do the same in-process. The simulator speaks the bridge's real
contract, following Twilio's Media Streams, TwiML and webhook-security documentation:

1. ``POST {url}/twilio/voice`` with Twilio's voice-webhook form fields, signed with
   ``X-Twilio-Signature`` when an auth token is configured;
2. read ``<Connect><Stream url=…><Parameter …/>`` from the TwiML it answers;
3. open that WebSocket and send ``connected``, ``start``, a continuous stream of 20 ms ``media``
   frames and finally ``stop``, while playing back what the bridge sends (``media``, ``mark``,
   ``clear``) exactly as Twilio's buffer would.

The simulated phone is the sans-I/O :class:`Phone`: it is driven by a *tick* every 20 ms of audio
time and by the server messages it is given, and returns the messages to send. Everything it decides
(when the caller speaks, when a mark is echoed, what the caller heard) is a function of ticks and
messages, never of the wall clock, so it is tested with literal messages and no event loop.
:func:`place_call` is the thin asyncio adapter around it: it paces ticks at ``20 ms / speed`` of
wall time against a fixed start (no drift) and pumps the WebSocket.

The caller's script, in audio time: wait until the line has been quiet for ``lead_ms`` (so a
greeting is heard out), say the first utterance, then wait for the reply to be heard (it started
playing, then nothing played for ``gap_ms``) before the next one; or, with ``barge_in_ms``, cut in
that long after the reply started. The reply to an utterance is the first audio played that arrived
after the utterance started and after any ``clear`` the bridge sent while the caller was talking:
what the agent was still saying, or flushed because the caller interrupted, does not answer it.

The bridge may also act on the call through Twilio's REST API (hang up, transfer): give
:func:`place_call` a running :class:`TwilioApiSimulator`, point the bridge's ``TWILIO_API_URL`` at
it, and a ``Status=completed`` or ``<Dial>`` update ends the simulated call the way Twilio would
(the stream gets its ``stop``), with the report saying so.
"""

from agent.sim.carrier.calls import (
    StreamInstruction,
    load_caller_audio,
    parse_next_twiml,
    parse_stream_twiml,
    place_call,
    voice_webhook_params,
)
from agent.sim.carrier.phone import (
    BUNDLED_CALLER_CLIPS,
    ENDED_BY_CALLER,
    ENDED_BY_MAX_DURATION,
    ENDED_BY_REST_CONFERENCE,
    ENDED_BY_REST_HANG_UP,
    ENDED_BY_REST_REDIRECT,
    ENDED_BY_REST_TRANSFER,
    ENDED_BY_SERVER,
    CallReport,
    CarrierOptions,
    Phone,
    UtteranceReport,
    new_sid,
)
from agent.sim.carrier.rest import (
    CallUpdate,
    TwilioApiSimulator,
)

__all__ = [
    "BUNDLED_CALLER_CLIPS",
    "ENDED_BY_CALLER",
    "ENDED_BY_MAX_DURATION",
    "ENDED_BY_REST_CONFERENCE",
    "ENDED_BY_REST_HANG_UP",
    "ENDED_BY_REST_REDIRECT",
    "ENDED_BY_REST_TRANSFER",
    "ENDED_BY_SERVER",
    "CallReport",
    "CallUpdate",
    "CarrierOptions",
    "Phone",
    "StreamInstruction",
    "TwilioApiSimulator",
    "UtteranceReport",
    "load_caller_audio",
    "new_sid",
    "parse_next_twiml",
    "parse_stream_twiml",
    "place_call",
    "voice_webhook_params",
]
