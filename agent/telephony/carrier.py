"""What a call session needs of a carrier's media stream, whichever carrier it is.

:class:`~agent.call.session.CallSession` reads the caller's audio, marks, keys and hang-up as
domain events and writes audio, marks and ``clear`` as text frames. Twilio's Media Streams
(:mod:`agent.telephony.twilio`) and the browser softphone (:mod:`agent.telephony.browser`) each
implement this with their own sans-I/O core; the events are the same classes for both, so the
session never learns which carrier it is talking to.
"""

from __future__ import annotations

from typing import Protocol

from agent.telephony.twilio import ProtocolError, TwilioEvent

__all__ = ["CarrierEvent", "CarrierStream"]

#: Every event a carrier's stream yields (the classes live in :mod:`agent.telephony.twilio`).
CarrierEvent = TwilioEvent


class CarrierStream(Protocol):
    """One media stream's protocol, server side: parse what the carrier sends, build what we
    send. Wire input never raises (it becomes a :class:`ProtocolError`); the builders raise
    :class:`~agent.errors.TelephonyError` before the stream has started."""

    def receive_text(self, text: str) -> CarrierEvent:
        """One TEXT frame as an event."""
        ...

    def receive_bytes(self, data: bytes) -> ProtocolError:
        """One BINARY frame (which neither carrier sends) as a protocol error."""
        ...

    def media(self, ulaw: bytes) -> str:
        """A frame carrying ``ulaw`` (8 kHz mu-law) to the caller."""
        ...

    def mark(self, name: str) -> str:
        """A frame the carrier echoes as ``MarkPlayed(name)`` once what came before it played."""
        ...

    def clear(self) -> str:
        """A frame that drops the caller's buffered audio (a barge-in); pending marks echo."""
        ...
