"""What a call session can do to the phone call itself, beyond its media stream.

A bidirectional media stream can play audio and close; hanging up, transferring and having the
carrier speak for us take the carrier's REST API (:class:`agent.telephony.rest.TwilioRest`). The
session depends on this protocol rather than on that client, so it can be run against a fake.
"""

from __future__ import annotations

from typing import Protocol


class CallControl(Protocol):
    """Updates to a live call, by its CallSid. Failures raise ``TelephonyError``."""

    async def hang_up(self, call_sid: str) -> bool:
        """End the call; False if it had already ended (either way it is over)."""
        ...

    async def transfer(self, call_sid: str, number: str, *, announce: str | None = None) -> None:
        """Move the call to ``number`` (E.164), saying ``announce`` to the caller first."""
        ...

    async def say_and_hang_up(self, call_sid: str, message: str) -> None:
        """Have the carrier say ``message`` to the caller, then end the call."""
        ...


class WarmTransfers(Protocol):
    """A warm transfer's two steps, which need the server (Twilio answers about the colleague's
    leg through a webhook, on any replica). Failures raise ``TelephonyError``."""

    async def call_colleague(
        self, call_sid: str, number: str, *, caller_id: str, summary: str, ring_timeout_s: int
    ) -> str:
        """Dial ``number`` from ``caller_id`` with ``summary`` to be said when they answer, for
        the call ``call_sid``; ``"answered"``, or how the colleague's leg ended unanswered
        (``busy``, ``no-answer``, ``failed``, ``canceled``)."""
        ...

    async def join(self, call_sid: str) -> None:
        """Move the caller into the conference where the colleague is waiting (this ends the
        media stream)."""
        ...
