"""The far end of an outbound call: a simulated person, answering machine, busy line or phone
nobody picks up, answering the calls the bridge creates through the simulator's ``Calls.json``.

Twilio's side of an outbound call, as far as the bridge sees it
(https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource,
https://www.twilio.com/docs/voice/answering-machine-detection):

* ``StatusCallback`` requests as the call progresses: ``initiated``, ``ringing``, then the
  final status (``completed``, ``busy``, ``no-answer``), each signed like a webhook;
* when the callee picks up, Twilio requests the call's ``Url`` and runs the TwiML it answers
  (our ``<Connect><Stream>``): the media stream starts at answer, before any verdict;
* with ``AsyncAmd=true``, ``AnsweredBy`` goes to ``AsyncAmdStatusCallback`` once detection
  ends: ``human`` soon after a short greeting; with ``DetectMessageEnd``, ``machine_end_beep``
  once a machine's greeting and its beep have played.

A machine here says its greeting (caller audio), beeps (a 1 kHz tone), then records: what the
bridge sends from then on is in the call report's ``heard``, from the beep's end (the report's
first utterance's ``end_ms``) onward.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import aiohttp
import numpy as np

from agent.audio.codec import pcm16_to_ulaw
from agent.sim.carrier.calls import open_stream, parse_stream_twiml, run_stream
from agent.sim.carrier.phone import (
    FRAME_MS,
    SAMPLE_RATE,
    CallReport,
    CarrierOptions,
    Phone,
    new_sid,
)
from agent.sim.carrier.rest import CallCreate, TwilioApiSimulator, read_update_twiml
from agent.telephony.webhooks import compute_signature

CalleeKind = Literal["human", "machine", "busy", "no-answer"]

#: The machine's beep: a 1 kHz tone, half a second (what an answering machine sounds like).
BEEP_HZ: Final = 1000.0
BEEP_MS: Final = 500


def beep(ms: int = BEEP_MS, hz: float = BEEP_HZ) -> bytes:
    """PCM16 8 kHz: an answering machine's beep."""
    t = np.arange(SAMPLE_RATE * ms // 1000) / SAMPLE_RATE
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


@dataclass(frozen=True, slots=True)
class Callee:
    """Who (or what) answers a number.

    ``utterances`` (PCM16 8 kHz): a person's words, each after the agent's reply; a
    machine's greeting (the first is played, then the beep). ``ring_ms``: ringing before
    pick-up. ``amd_ms``: for a person, the verdict comes this long after pick-up; for a
    machine, this long after its beep ends. ``recording_ms``: a machine records this long
    after its beep, then hangs up; a person stays ``linger_ms`` after the last reply.
    """

    kind: CalleeKind = "human"
    utterances: tuple[bytes, ...] = ()
    ring_ms: int = 2000
    amd_ms: int = 1500
    recording_ms: int = 12_000
    linger_ms: int = 2000


@dataclass(slots=True)
class DialledCall:
    """One call the bridge created, as the simulated far end saw it."""

    create: CallCreate
    callee: Callee
    #: Every ``CallStatus`` sent to the ``StatusCallback``, in order.
    statuses: list[str] = field(default_factory=list)
    answered_by: str | None = None
    #: Audio time (ms from pick-up) the verdict was sent at.
    verdict_ms: int | None = None
    report: CallReport | None = None
    #: For a create with inline ``Twiml`` (a warm transfer's leg): what Twilio said to the
    #: callee once they answered, and the conference they were then put in.
    said: tuple[str, ...] = ()
    conference: str | None = None
    problems: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def call_sid(self) -> str:
        return self.create.call_sid


class SimulatedCallees:
    """Answers the calls created on ``rest``: each ``To`` number by its :class:`Callee`
    (``default`` for any other), signing every request with ``auth_token`` as Twilio would."""

    def __init__(
        self,
        rest: TwilioApiSimulator,
        callees: Mapping[str, Callee],
        *,
        auth_token: str | None = None,
        speed: float = 1.0,
        default: Callee | None = None,
    ) -> None:
        self._rest = rest
        self._callees = dict(callees)
        self._default = default or Callee()
        self._auth_token = auth_token
        self._speed = speed
        self.calls: list[DialledCall] = []
        self._changed = asyncio.Event()
        rest.answerer = self.answer

    def by_sid(self, call_sid: str) -> DialledCall:
        for call in self.calls:
            if call.call_sid == call_sid:
                return call
        raise KeyError(call_sid)

    async def ended(self, count: int) -> Sequence[DialledCall]:
        """Until ``count`` calls have been created and each has ended; the first ``count``."""
        while len(self.calls) < count or not all(c.done.is_set() for c in self.calls[:count]):
            self._changed.clear()
            await self._changed.wait()
        return self.calls[:count]

    async def answer(self, create: CallCreate) -> None:
        """The far end of one created call, from ``initiated`` to its final status."""
        to = create.get("To") or ""
        call = DialledCall(create, self._callees.get(to, self._default))
        self.calls.append(call)
        self._changed.set()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                await self._run(http, call)
        finally:
            call.done.set()
            self._changed.set()

    async def _run(self, http: aiohttp.ClientSession, call: DialledCall) -> None:
        callee, create = call.callee, call.create
        await self._status(http, call, "initiated")
        await self._status(http, call, "ringing")
        if callee.kind == "busy":
            await self._status(http, call, "busy")
            return
        if callee.kind == "no-answer":
            timeout_s = int(create.get("Timeout") or "60")
            await asyncio.sleep(timeout_s / self._speed)
            await self._status(http, call, "no-answer")
            return
        await asyncio.sleep(callee.ring_ms / 1000 / self._speed)
        await self._status(http, call, "in-progress")
        url = create.get("Url")
        inline = create.get("Twiml")
        if url is None and inline is not None:
            # A warm transfer's colleague: hears the <Say>, then waits in the conference.
            try:
                document = read_update_twiml(inline)
            except ValueError as exc:
                call.problems.append(f"the create's Twiml is not TwiML: {exc}")
                return
            call.said, call.conference = document.said, document.conference
            await self._status(http, call, "completed")
            return
        if url is None:
            call.problems.append("a create with neither Url nor Twiml")
            return
        twiml = await self._post(http, call, url, self._call_params(call, "in-progress"))
        if twiml is None:
            return
        stream = parse_stream_twiml(twiml, url)
        call.problems.extend(stream.problems)
        if callee.kind == "machine":
            greeting = callee.utterances[0] if callee.utterances else b""
            script = [pcm16_to_ulaw(greeting + beep())]
            options = CarrierOptions(
                url=url, speed=self._speed, lead_ms=0, gap_ms=1000, linger_ms=callee.recording_ms
            )
            # The verdict: once the greeting and its beep have played, and amd_ms more.
            verdict_ms = len(greeting + beep()) // 2 * 1000 // SAMPLE_RATE + callee.amd_ms
            answered_by = "machine_end_beep"
        else:
            script = [pcm16_to_ulaw(pcm) for pcm in callee.utterances]
            options = CarrierOptions(
                url=url, speed=self._speed, lead_ms=200, linger_ms=callee.linger_ms
            )
            verdict_ms, answered_by = callee.amd_ms, "human"
        phone = Phone(
            options,
            script,
            call_sid=call.call_sid,
            account_sid=self._rest.account_sid,
            stream_sid=new_sid("MZ"),
        )
        self._rest.attach(phone)
        ws = await open_stream(http, stream.url, self._auth_token)
        started = asyncio.get_running_loop().time()
        verdict = asyncio.get_running_loop().create_task(
            self._verdict(http, call, phone, answered_by, verdict_ms, started)
        )
        try:
            await run_stream(
                ws, phone, stream.parameters, self._speed, rest=self._rest, started=started
            )
        finally:
            verdict.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await verdict
            await ws.close()
            self._rest.detach(call.call_sid)
        call.report = phone.report()
        await self._status(http, call, "completed")

    async def _verdict(
        self,
        http: aiohttp.ClientSession,
        call: DialledCall,
        phone: Phone,
        answered_by: str,
        at_ms: int,
        started: float,
    ) -> None:
        """Send ``AnsweredBy`` once ``at_ms`` of audio has passed since pick-up (``started``,
        the clock the phone's ticks are paced against)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, started + at_ms / 1000 / self._speed - loop.time()))
        if phone.finished:
            return
        amd_url = call.create.get("AsyncAmdStatusCallback")
        call.answered_by, call.verdict_ms = answered_by, phone.ticks * FRAME_MS
        if amd_url is None:
            call.problems.append("AsyncAmd without AsyncAmdStatusCallback (Twilio warning 21262)")
            return
        params = {
            "AccountSid": self._rest.account_sid,
            "CallSid": call.call_sid,
            "AnsweredBy": answered_by,
            "MachineDetectionDuration": str(at_ms),
        }
        await self._post(http, call, amd_url, params)

    def _call_params(self, call: DialledCall, status: str) -> dict[str, str]:
        create = call.create
        return {
            "AccountSid": self._rest.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call.call_sid,
            "CallStatus": status,
            "Direction": "outbound-api",
            "From": create.get("From") or "",
            "To": create.get("To") or "",
            "Called": create.get("To") or "",
            "Caller": create.get("From") or "",
        }

    async def _status(self, http: aiohttp.ClientSession, call: DialledCall, status: str) -> None:
        """The ``StatusCallback`` request for ``status`` (``in-progress`` is the ``answered``
        event), if the create asked for that event."""
        call.statuses.append(status)
        url = call.create.get("StatusCallback")
        events = call.create.params.get("StatusCallbackEvent", ())
        event = {"in-progress": "answered"}.get(status, status)
        final = status in ("completed", "busy", "no-answer", "failed", "canceled")
        # Twilio always sends the final status; the others only when asked for.
        if url is None or not (final or (isinstance(events, tuple) and event in events)):
            return
        params = self._call_params(call, status) | {"CallbackSource": "call-progress-events"}
        await self._post(http, call, url, params)

    async def _post(
        self, http: aiohttp.ClientSession, call: DialledCall, url: str, params: dict[str, str]
    ) -> str | None:
        headers = {}
        if self._auth_token is not None:
            headers["X-Twilio-Signature"] = compute_signature(self._auth_token, url, params)
        try:
            async with http.post(url, data=params, headers=headers) as response:
                body, status = await response.text(), response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            call.problems.append(f"{url} could not be reached: {exc!r}")
            return None
        if not 200 <= status < 300:
            call.problems.append(f"{url} answered {status}: {body[:200]}")
            return None
        return body
