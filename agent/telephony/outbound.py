"""Outbound calls, without I/O: what an answering-machine verdict means for the agent, when a
call that was not answered is dialled again, and the plan every replica reads for a call.

Twilio's asynchronous answering-machine detection (``MachineDetection=DetectMessageEnd``,
``AsyncAmd=true``) runs the call's TwiML at once when the callee picks up (our media stream
starts) and POSTs its verdict, ``AnsweredBy``, to ``AsyncAmdStatusCallback`` later
(https://www.twilio.com/docs/voice/answering-machine-detection): ``human``, ``fax``,
``unknown``, or, with ``DetectMessageEnd``, ``machine_end_beep`` / ``machine_end_silence`` /
``machine_end_other`` once the machine's greeting has ended (``machine_start`` is what the
``Enable`` mode says instead, as soon as it hears a machine). :class:`AnswerGate` holds the
agent's first words until that verdict: the model never speaks into ringing, nor before the
verdict says a person is listening.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Final, Literal

#: ``AnsweredBy`` values meaning a person (or nobody can tell: the agent talks rather than
#: leave a person in silence).
HUMAN_VERDICTS: Final = frozenset({"human", "unknown"})
#: ``AnsweredBy`` values meaning a machine whose greeting has ended (its beep, if any, is past).
MACHINE_END_VERDICTS: Final = frozenset(
    {"machine_end_beep", "machine_end_silence", "machine_end_other"}
)
#: Every ``AnsweredBy`` value Twilio documents.
ANSWERED_BY: Final = HUMAN_VERDICTS | MACHINE_END_VERDICTS | {"machine_start", "fax"}
#: Final ``CallStatus`` values of a call nobody answered (Twilio's status callback).
NOT_ANSWERED: Final = frozenset({"busy", "no-answer", "failed", "canceled"})
#: Of those, the ones worth dialling again: the callee was there, just not free.
RETRIED: Final = frozenset({"busy", "no-answer"})

OnMachine = Literal["voicemail", "hang_up"]
#: What the session does once the verdict (or its absence) is known.
Decision = Literal["greet", "voicemail", "hang_up"]


@dataclass(slots=True)
class AnswerGate:
    """Holds an outbound call's greeting until the answering-machine verdict, bounded.

    Made when the media stream starts (the callee picked up) with ``now`` and ``wait_s``;
    :meth:`verdict` records Twilio's ``AnsweredBy``; :meth:`decision` says what to do, or None
    while the verdict is still awaited. With no verdict by :attr:`deadline` the call is taken
    as answered by a person (``unknown``): Twilio's own timeout (``MachineDetectionTimeout``)
    ends at ``unknown`` too, and a person left in silence hangs up.
    """

    opened_at: float
    wait_s: float
    on_machine: OnMachine = "hang_up"
    has_voicemail: bool = False
    answered_by: str | None = None

    @property
    def deadline(self) -> float:
        return self.opened_at + self.wait_s

    def verdict(self, answered_by: str) -> None:
        """Twilio's ``AnsweredBy``; the first one counts (Twilio sends one per call)."""
        if self.answered_by is None:
            self.answered_by = answered_by

    def decision(self, now: float) -> Decision | None:
        """``greet`` for a person, ``voicemail`` or ``hang_up`` for a machine (as the agent
        says; ``voicemail`` only once the machine's greeting has ended, and only with a
        message), ``hang_up`` for a fax; None while waiting."""
        verdict = self.answered_by
        if verdict is None:
            return "greet" if now >= self.deadline else None
        if verdict in MACHINE_END_VERDICTS:
            if self.on_machine == "voicemail" and self.has_voicemail:
                return "voicemail"
            return "hang_up"
        if verdict == "machine_start":
            # Only the Enable mode says this; the message cannot be left before the beep.
            return "hang_up" if self.on_machine == "hang_up" else None
        if verdict == "fax":
            return "hang_up"
        return "greet"


def retry_after(status: str, attempt: int, max_attempts: int, delay_s: float) -> float | None:
    """Seconds until the next attempt of a call that ended ``status`` on attempt ``attempt``
    (1-based), or None: answered calls, failures other than busy / no-answer (a wrong number
    stays wrong), and the last attempt are not dialled again."""
    if status not in RETRIED or attempt >= max_attempts:
        return None
    return delay_s


@dataclass(frozen=True, slots=True)
class OutboundPlan:
    """What every replica needs to know about an outbound call: kept in the shared state under
    its CallSid when the call is created, read by whichever replica Twilio's answer, status or
    AMD request lands on."""

    agent: str
    to_number: str  # the callee
    from_number: str  # the caller ID presented
    attempt: int = 1
    params: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OutboundPlan:
        data = json.loads(text)
        params = data.get("params") or {}
        return cls(
            agent=str(data["agent"]),
            to_number=str(data["to_number"]),
            from_number=str(data["from_number"]),
            attempt=int(data.get("attempt", 1)),
            params={str(k): str(v) for k, v in dict(params).items()},
        )

    def next_attempt(self) -> OutboundPlan:
        return OutboundPlan(
            self.agent, self.to_number, self.from_number, self.attempt + 1, dict(self.params)
        )


def plan_key(call_sid: str) -> str:
    """Where a call's :class:`OutboundPlan` is kept in the shared state."""
    return f"outbound/{call_sid}"


def verdict_key(call_sid: str) -> str:
    """Where a call's ``AnsweredBy`` is kept in the shared state."""
    return f"amd/{call_sid}"


def parse_params(pairs: Mapping[str, str] | list[str]) -> dict[str, str]:
    """``--param k=v`` pairs (or a JSON object's items) as a dict; ``ValueError`` for a pair
    without ``=`` or a name that is not a plain identifier (it becomes ``{param.<name>}``)."""
    items: list[tuple[str, str]] = []
    if isinstance(pairs, Mapping):
        items = [(str(k), str(v)) for k, v in pairs.items()]
    else:
        for pair in pairs:
            name, equals, value = pair.partition("=")
            if not equals:
                raise ValueError(f"a parameter is name=value, got {pair!r}")
            items.append((name.strip(), value))
    out: dict[str, str] = {}
    for name, value in items:
        if not name.isidentifier():
            raise ValueError(f"a parameter name is letters, digits and _, got {name!r}")
        out[name] = value
    return out
