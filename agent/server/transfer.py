"""Warm transfers: dial a colleague for a call in progress, say the model's summary to them,
then join them and the caller in a Twilio Conference.

Why a Conference: a call's media stream cannot carry a second party, and Twilio's documented
way to bring two calls together is ``<Dial><Conference>``
(https://www.twilio.com/docs/voice/twiml/conference). ``<Dial>`` with ``url`` (a whisper to the
dialled party) would ring the colleague only once the caller has left our stream, so the agent
could not come back to the caller when nobody answers; here the caller stays on the stream, on
hold, until the colleague has answered.

The colleague's leg is a ``Calls.json`` create with inline TwiML: ``<Say>`` the summary, then
``<Dial><Conference>`` a room named after the caller's CallSid. Its ``StatusCallback`` (with
``?for=<caller's CallSid>``, signed by Twilio with the rest of the URL) says answered or not;
the outcome goes through the shared state like an answering-machine verdict, since it may
reach any replica.
"""

from __future__ import annotations

import asyncio
from typing import Final
from urllib.parse import quote

import structlog
from aiohttp import web

from agent.errors import SharedStateError, TelephonyError
from agent.server.state import BACKGROUND, CALL_CLOCK, OUTBOUND, SETTINGS, SHARED
from agent.telephony.rest import TwilioRest, warm_transfer_params

log = structlog.get_logger("agent.app")

WARM_STATUS_PATH: Final = "/twilio/warm-status"
# The colleague's leg is given this long beyond its ring timeout to report, then taken as
# unanswered: the caller is not left on hold forever because a callback was lost.
_OUTCOME_SLACK_S: Final = 15.0
_POLL_S: Final = 0.5


def transfer_key(call_sid: str) -> str:
    return f"warm/{call_sid}"


def conference_room(call_sid: str) -> str:
    """The conference a warm transfer of ``call_sid`` meets in."""
    return f"transfer-{call_sid}"


class ServerWarmTransfers:
    """:class:`agent.call.control.WarmTransfers` over Twilio's REST API and this server's
    ``/twilio/warm-status`` webhook."""

    def __init__(self, app: web.Application, twilio: TwilioRest) -> None:
        self._app = app
        self._twilio = twilio

    async def call_colleague(
        self, call_sid: str, number: str, *, caller_id: str, summary: str, ring_timeout_s: int
    ) -> str:
        app = self._app
        callback = f"{app[SETTINGS].public_url}{WARM_STATUS_PATH}?for={quote(call_sid)}"
        try:
            form = warm_transfer_params(
                to=number,
                from_=caller_id,
                summary=summary,
                room=conference_room(call_sid),
                status_callback=callback,
                ring_timeout_s=ring_timeout_s,
            )
        except ValueError as exc:
            raise TelephonyError(f"cannot dial for a warm transfer: {exc}") from exc
        leg = await self._twilio.create_call(form)
        log.info("call.warm_transfer_dialled", colleague_call_sid=leg, transfer_to=number)
        deadline = app[CALL_CLOCK].now() + ring_timeout_s + _OUTCOME_SLACK_S
        try:
            while app[CALL_CLOCK].now() < deadline:
                outcome = await self._outcome(call_sid)
                if outcome is not None:
                    return outcome
        except asyncio.CancelledError:
            # The caller hung up while on hold: the colleague must not pick up to an empty room.
            app[BACKGROUND].spawn(self._cancel_leg(leg))
            raise
        # No word from Twilio: taken as unanswered, and the leg ended so it cannot be later.
        app[BACKGROUND].spawn(self._cancel_leg(leg))
        return "no-answer"

    async def _cancel_leg(self, leg: str) -> None:
        try:
            await self._twilio.hang_up(leg)
        except TelephonyError as exc:
            log.warning("call.warm_transfer_cancel_failed", colleague_call_sid=leg, error=str(exc))

    async def _outcome(self, call_sid: str) -> str | None:
        outbound = self._app[OUTBOUND]
        local = outbound.transfers.get(call_sid)
        if local is not None:
            return local
        try:
            shared = await self._app[SHARED].peek_answer(transfer_key(call_sid))
        except SharedStateError:
            shared = None
        if shared is not None:
            return shared
        arrived = outbound.arrivals.setdefault(transfer_key(call_sid), asyncio.Event())
        try:
            async with asyncio.timeout(self._app[CALL_CLOCK].wall(_POLL_S)):
                await arrived.wait()
        except TimeoutError:
            pass
        return outbound.transfers.get(call_sid)

    async def join(self, call_sid: str) -> None:
        outbound = self._app[OUTBOUND]
        outbound.transfers.pop(call_sid, None)
        outbound.arrivals.pop(transfer_key(call_sid), None)
        await self._twilio.join_conference(call_sid, conference_room(call_sid))
